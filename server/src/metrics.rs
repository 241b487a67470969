//! Prometheus metrics under etcd's names, so that etcd's Grafana
//! dashboards and the etcd-mixin alerts work unchanged.
//!
//! Two kinds. Counters and histograms of events on hot paths (fsyncs,
//! backend commits, gRPC calls, bytes) are updated where the event
//! happens, through handles resolved once: an atomic add, never a lock
//! or a label lookup per event. Gauges of state (leadership, sizes, key
//! and watcher counts, Raft progress) are read from the member when
//! `/metrics` is scraped ([`Metrics::render`] with a [`Snapshot`]), and
//! cost nothing in between.
//!
//! Owns: the registry and every metric's name, help and buckets.
//! May not: decide anything from a metric.

/// Whether hot-path updates are compiled in (the `metrics` feature, on
/// by default; a build without it measures what they cost). Each update
/// site tests this constant, so the compiler drops it when off.
pub const ON: bool = cfg!(feature = "metrics");

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// etcd's buckets for disk latencies (`etcd_disk_*_duration_seconds`):
/// 1 ms to about 8 s, doubling.
fn disk_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 2.0, 14).unwrap_or_default()
}

/// etcd's buckets for peer round trips: 0.1 ms to about 1.6 s, doubling.
fn rtt_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0001, 2.0, 15).unwrap_or_default()
}

/// gRPC's status codes, in order of their numbers, as go-grpc-prometheus
/// names them in `grpc_code`.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// Every method served on the client port: (service, method, type).
const METHODS: &[(&str, &str, &str)] = &[
    ("etcdserverpb.KV", "Range", "unary"),
    ("etcdserverpb.KV", "Put", "unary"),
    ("etcdserverpb.KV", "DeleteRange", "unary"),
    ("etcdserverpb.KV", "Txn", "unary"),
    ("etcdserverpb.KV", "Compact", "unary"),
    ("etcdserverpb.KV", "RangeStream", "server_stream"),
    ("etcdserverpb.Watch", "Watch", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseGrant", "unary"),
    ("etcdserverpb.Lease", "LeaseRevoke", "unary"),
    ("etcdserverpb.Lease", "LeaseKeepAlive", "bidi_stream"),
    ("etcdserverpb.Lease", "LeaseTimeToLive", "unary"),
    ("etcdserverpb.Lease", "LeaseLeases", "unary"),
    ("etcdserverpb.Cluster", "MemberAdd", "unary"),
    ("etcdserverpb.Cluster", "MemberRemove", "unary"),
    ("etcdserverpb.Cluster", "MemberUpdate", "unary"),
    ("etcdserverpb.Cluster", "MemberList", "unary"),
    ("etcdserverpb.Cluster", "MemberPromote", "unary"),
    ("etcdserverpb.Maintenance", "Alarm", "unary"),
    ("etcdserverpb.Maintenance", "Status", "unary"),
    ("etcdserverpb.Maintenance", "Defragment", "unary"),
    ("etcdserverpb.Maintenance", "Hash", "unary"),
    ("etcdserverpb.Maintenance", "HashKV", "unary"),
    ("etcdserverpb.Maintenance", "Snapshot", "server_stream"),
    ("etcdserverpb.Maintenance", "MoveLeader", "unary"),
    ("etcdserverpb.Maintenance", "Downgrade", "unary"),
    ("etcdserverpb.Auth", "AuthEnable", "unary"),
    ("etcdserverpb.Auth", "AuthDisable", "unary"),
    ("etcdserverpb.Auth", "AuthStatus", "unary"),
    ("etcdserverpb.Auth", "Authenticate", "unary"),
    ("etcdserverpb.Auth", "UserAdd", "unary"),
    ("etcdserverpb.Auth", "UserGet", "unary"),
    ("etcdserverpb.Auth", "UserList", "unary"),
    ("etcdserverpb.Auth", "UserDelete", "unary"),
    ("etcdserverpb.Auth", "UserChangePassword", "unary"),
    ("etcdserverpb.Auth", "UserGrantRole", "unary"),
    ("etcdserverpb.Auth", "UserRevokeRole", "unary"),
    ("etcdserverpb.Auth", "RoleAdd", "unary"),
    ("etcdserverpb.Auth", "RoleGet", "unary"),
    ("etcdserverpb.Auth", "RoleList", "unary"),
    ("etcdserverpb.Auth", "RoleDelete", "unary"),
    ("etcdserverpb.Auth", "RoleGrantPermission", "unary"),
    ("etcdserverpb.Auth", "RoleRevokePermission", "unary"),
    ("v3lockpb.Lock", "Lock", "unary"),
    ("v3lockpb.Lock", "Unlock", "unary"),
    ("v3electionpb.Election", "Campaign", "unary"),
    ("v3electionpb.Election", "Proclaim", "unary"),
    ("v3electionpb.Election", "Leader", "unary"),
    ("v3electionpb.Election", "Observe", "server_stream"),
    ("v3electionpb.Election", "Resign", "unary"),
    ("grpc.health.v1.Health", "Check", "unary"),
    ("grpc.health.v1.Health", "Watch", "server_stream"),
];

/// One gRPC method's series, resolved once.
pub struct MethodMetrics {
    /// `grpc_server_started_total`.
    pub started: IntCounter,
    /// `grpc_server_handled_total`, by status code number.
    pub handled: Vec<IntCounter>,
    /// `grpc_server_handling_seconds` (unary calls only, as
    /// go-grpc-prometheus measures).
    pub handling: Option<Histogram>,
}

impl MethodMetrics {
    /// Counts a call finished with gRPC status `code`.
    pub fn finished(&self, code: i32, took: Duration) {
        if !ON {
            return;
        }
        let i = usize::try_from(code).unwrap_or(2).min(GRPC_CODES.len() - 1);
        self.handled[i].inc();
        if let Some(h) = &self.handling {
            h.observe(took.as_secs_f64());
        }
    }
}

/// One peer's series, resolved when the peer is added.
#[derive(Clone)]
pub struct PeerMetrics {
    /// `etcd_network_peer_sent_bytes_total{To}`.
    pub sent_bytes: IntCounter,
    /// `etcd_network_peer_received_bytes_total{From}`.
    pub received_bytes: IntCounter,
    /// `etcd_network_peer_sent_failures_total{To}`.
    pub sent_failures: IntCounter,
    /// `etcd_network_peer_round_trip_time_seconds{To}`.
    pub round_trip: Histogram,
}

/// What the member is, read when `/metrics` is scraped.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Whether the member knows a leader.
    pub has_leader: bool,
    /// Whether it is the leader.
    pub is_leader: bool,
    /// Raft's committed index.
    pub committed: u64,
    /// Raft's applied index.
    pub applied: u64,
    /// Proposals this member made that have not been applied yet.
    pub pending: i64,
    /// `--quota-backend-bytes` in effect.
    pub quota_bytes: u64,
    /// The store's size on disk.
    pub db_size: u64,
    /// The store's size less what compaction freed and defragment has
    /// not yet given back (fjall reports one size: the same).
    pub db_size_in_use: u64,
    /// Keys in the store.
    pub keys: u64,
    /// The store revision.
    pub revision: i64,
    /// The compacted revision.
    pub compacted: i64,
}

/// A member's metrics.
pub struct Metrics {
    registry: Registry,
    /// `etcd_disk_wal_fsync_duration_seconds`.
    pub wal_fsync: Histogram,
    /// `etcd_disk_backend_commit_duration_seconds`.
    pub backend_commit: Histogram,
    /// `etcd_server_leader_changes_seen_total`.
    pub leader_changes: IntCounter,
    /// `etcd_server_proposals_failed_total`.
    pub proposals_failed: IntCounter,
    /// `etcd_network_client_grpc_sent_bytes_total`.
    pub client_sent_bytes: IntCounter,
    /// `etcd_network_client_grpc_received_bytes_total`.
    pub client_received_bytes: IntCounter,
    /// `etcd_debugging_mvcc_watcher_total`, kept by the watch streams.
    pub watchers: IntGauge,
    methods: HashMap<String, Arc<MethodMetrics>>,
    peer_sent_bytes: IntCounterVec,
    peer_received_bytes: IntCounterVec,
    peer_sent_failures: IntCounterVec,
    peer_round_trip: HistogramVec,
    has_leader: IntGauge,
    is_leader: IntGauge,
    proposals_committed: IntGauge,
    proposals_applied: IntGauge,
    proposals_pending: IntGauge,
    quota_bytes: IntGauge,
    db_size: IntGauge,
    db_size_in_use: IntGauge,
    keys: IntGauge,
    current_revision: IntGauge,
    compact_revision: IntGauge,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Names and labels are this file's constants: a failure here is a
    // bug in it, found by its tests, not something a request can cause.
    match r {
        Ok(v) => v,
        Err(e) => panic!("metric definition: {e}"),
    }
}

impl Metrics {
    /// Every metric registered, every gRPC method's series made (as
    /// go-grpc-prometheus does, so dashboards see zeros, not gaps).
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| must(registry.register(c));
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = must(Histogram::with_opts(
                HistogramOpts::new(name, help).buckets(buckets),
            ));
            reg(Box::new(h.clone()));
            h
        };
        let counter = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            reg(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = must(IntGauge::new(name, help));
            reg(Box::new(g.clone()));
            g
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            reg(Box::new(c.clone()));
            c
        };

        let started = counter_vec(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            &["grpc_type", "grpc_service", "grpc_method"],
        );
        let handled = counter_vec(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        );
        let handling = must(HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["grpc_type", "grpc_service", "grpc_method"],
        ));
        reg(Box::new(handling.clone()));
        let mut methods = HashMap::new();
        for (service, method, kind) in METHODS {
            let m = MethodMetrics {
                started: started.with_label_values(&[kind, service, method]),
                handled: GRPC_CODES
                    .iter()
                    .map(|code| handled.with_label_values(&[kind, service, method, code]))
                    .collect(),
                handling: (*kind == "unary")
                    .then(|| handling.with_label_values(&[kind, service, method])),
            };
            methods.insert(format!("/{service}/{method}"), Arc::new(m));
        }

        let peer_round_trip = must(HistogramVec::new(
            HistogramOpts::new(
                "etcd_network_peer_round_trip_time_seconds",
                "Round-Trip-Time histogram between peers",
            )
            .buckets(rtt_buckets()),
            &["To"],
        ));
        reg(Box::new(peer_round_trip.clone()));

        let me = Metrics {
            wal_fsync: hist(
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL.",
                disk_buckets(),
            ),
            backend_commit: hist(
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of commit called by backend.",
                disk_buckets(),
            ),
            leader_changes: counter(
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            ),
            proposals_failed: counter(
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            ),
            client_sent_bytes: counter(
                "etcd_network_client_grpc_sent_bytes_total",
                "The total number of bytes sent to grpc clients.",
            ),
            client_received_bytes: counter(
                "etcd_network_client_grpc_received_bytes_total",
                "The total number of bytes received from grpc clients.",
            ),
            methods,
            peer_sent_bytes: counter_vec(
                "etcd_network_peer_sent_bytes_total",
                "The total number of bytes sent to peers.",
                &["To"],
            ),
            peer_received_bytes: counter_vec(
                "etcd_network_peer_received_bytes_total",
                "The total number of bytes received from peers.",
                &["From"],
            ),
            peer_sent_failures: counter_vec(
                "etcd_network_peer_sent_failures_total",
                "The total number of send failures from peers.",
                &["To"],
            ),
            peer_round_trip,
            has_leader: gauge(
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            is_leader: gauge(
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            ),
            proposals_committed: gauge(
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            ),
            proposals_applied: gauge(
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            ),
            proposals_pending: gauge(
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            quota_bytes: gauge(
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes.",
            ),
            db_size: gauge(
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            ),
            db_size_in_use: gauge(
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            ),
            keys: gauge("etcd_debugging_mvcc_keys_total", "Total number of keys."),
            watchers: gauge(
                "etcd_debugging_mvcc_watcher_total",
                "Total number of watchers.",
            ),
            current_revision: gauge(
                "etcd_debugging_mvcc_current_revision",
                "The revision of the store.",
            ),
            compact_revision: gauge(
                "etcd_debugging_mvcc_compact_revision",
                "The revision of the last compaction in store.",
            ),
            registry,
        };
        // The process's memory, CPU and descriptors
        // (`process_resident_memory_bytes`, …), read from /proc.
        #[cfg(target_os = "linux")]
        {
            let p = prometheus::process_collector::ProcessCollector::for_self();
            if let Err(e) = me.registry.register(Box::new(p)) {
                tracing::warn!(error = %e, "process metrics unavailable");
            }
        }
        me
    }

    /// The series of the gRPC method at `path` (`/etcdserverpb.KV/Range`).
    pub fn method(&self, path: &str) -> Option<&Arc<MethodMetrics>> {
        self.methods.get(path)
    }

    /// The series of the peer `to` (its member id in hex, as etcd labels
    /// them); resolve once per peer and keep.
    pub fn peer(&self, to: &str) -> PeerMetrics {
        PeerMetrics {
            sent_bytes: self.peer_sent_bytes.with_label_values(&[to]),
            received_bytes: self.peer_received_bytes.with_label_values(&[to]),
            sent_failures: self.peer_sent_failures.with_label_values(&[to]),
            round_trip: self.peer_round_trip.with_label_values(&[to]),
        }
    }

    /// Sets the gauges from `s` and renders every metric in Prometheus's
    /// text format.
    pub fn render(&self, s: &Snapshot) -> String {
        let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.has_leader.set(i64::from(s.has_leader));
        self.is_leader.set(i64::from(s.is_leader));
        self.proposals_committed.set(i(s.committed));
        self.proposals_applied.set(i(s.applied));
        self.proposals_pending.set(s.pending);
        self.quota_bytes.set(i(s.quota_bytes));
        self.db_size.set(i(s.db_size));
        self.db_size_in_use.set(i(s.db_size_in_use));
        self.keys.set(i(s.keys));
        self.current_revision.set(s.revision);
        self.compact_revision.set(s.compacted.max(0));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders_under_etcds_name() {
        let m = Metrics::new();
        m.wal_fsync.observe(0.002);
        m.method("/etcdserverpb.KV/Range")
            .expect("range")
            .finished(0, Duration::from_millis(3));
        m.method("/etcdserverpb.KV/Put")
            .expect("put")
            .finished(8, Duration::from_millis(1));
        m.peer("8e9e05c52164694d").round_trip.observe(0.0004);
        let text = m.render(&Snapshot {
            has_leader: true,
            quota_bytes: 2 << 30,
            keys: 7,
            ..Snapshot::default()
        });
        for want in [
            "etcd_server_has_leader 1",
            "etcd_server_quota_backend_bytes 2147483648",
            "etcd_debugging_mvcc_keys_total 7",
            "etcd_disk_wal_fsync_duration_seconds_bucket{le=\"0.002\"} 1",
            "etcd_disk_backend_commit_duration_seconds_count 0",
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Range\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1",
            "grpc_server_handled_total{grpc_code=\"ResourceExhausted\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"} 1",
            "grpc_server_started_total{grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"} 0",
            "etcd_network_peer_round_trip_time_seconds_bucket{To=\"8e9e05c52164694d\",le=\"0.0004\"} 1",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(m.method("/nope/Nope").is_none());
    }
}
