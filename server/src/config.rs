//! A member's configuration, with etcd's defaults and meanings.

use std::path::PathBuf;

use cairn_kv::BackendKind;

use crate::tls::{TlsInfo, TlsSettings};

/// `--initial-cluster-state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClusterState {
    /// Bootstrap a new cluster from `initial_cluster`.
    #[default]
    New,
    /// Join a running cluster this member was added to (MemberAdd).
    Existing,
}

/// Auto-compaction, as etcd's `--auto-compaction-mode` and
/// `--auto-compaction-retention` say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Keep about this much time of history.
    Periodic(std::time::Duration),
    /// Keep this many revisions of history.
    Revision(i64),
}

impl AutoCompaction {
    /// From the two flags' values; `Ok(None)`: off. A periodic retention
    /// without a unit is in hours, as etcd reads it.
    pub fn parse(mode: &str, retention: &str) -> Result<Option<AutoCompaction>, String> {
        let retention = retention.trim();
        match mode {
            "periodic" => {
                if let Ok(hours) = retention.parse::<u64>() {
                    return Ok((hours > 0).then(|| {
                        AutoCompaction::Periodic(std::time::Duration::from_secs(hours * 3600))
                    }));
                }
                if matches!(retention, "" | "0s") {
                    return Ok(None);
                }
                parse_duration(retention)
                    .map(|d| Some(AutoCompaction::Periodic(d)))
                    .map_err(|e| format!("--auto-compaction-retention: {e}"))
            }
            "revision" => match retention.parse::<i64>() {
                Ok(0) => Ok(None),
                Ok(n) if n > 0 => Ok(Some(AutoCompaction::Revision(n))),
                _ => Err(format!(
                    "--auto-compaction-retention: {retention:?} is not a number of revisions"
                )),
            },
            other => Err(format!(
                "invalid auto compaction mode {other:?}: valid values are \"periodic\", \"revision\""
            )),
        }
    }
}

/// Scheduled backups: a backup file of the member's store every `every`,
/// into `dir` (default `<data-dir>/backups`), the newest `keep` kept.
#[derive(Clone, Debug)]
pub struct BackupSchedule {
    /// How often; `None`: never.
    pub every: Option<std::time::Duration>,
    /// Where the files go; `None`: `<data-dir>/backups`.
    pub dir: Option<PathBuf>,
    /// How many files are kept.
    pub keep: usize,
}

impl Default for BackupSchedule {
    fn default() -> Self {
        BackupSchedule {
            every: None,
            dir: None,
            keep: 5,
        }
    }
}

/// The configuration of one member. [`Config::default`] is etcd's default:
/// a single member named `default`, data in `default.cairn`, clients on
/// `localhost:2379`, peers on `localhost:2380`.
#[derive(Clone, Debug)]
pub struct Config {
    /// This member's name (`--name`).
    pub name: String,
    /// Where the member keeps its data (`--data-dir`).
    pub data_dir: PathBuf,
    /// Where the binary serves clients (the library does not listen).
    pub listen_client_urls: Vec<String>,
    /// `--listen-metrics-urls`: extra ports serving only `/metrics` and
    /// the health probes (kubeadm's 2381).
    pub listen_metrics_urls: Vec<String>,
    /// Client URLs published to the cluster.
    pub advertise_client_urls: Vec<String>,
    /// Where the peer service listens; empty for an embedded single
    /// member that will never have peers.
    pub listen_peer_urls: Vec<String>,
    /// Peer URLs this member is known by.
    pub initial_advertise_peer_urls: Vec<String>,
    /// `name → peer URLs` of every initial member.
    pub initial_cluster: Vec<(String, Vec<String>)>,
    /// Bootstrap a new cluster or join a running one.
    pub initial_cluster_state: ClusterState,
    /// Mixed into member and cluster ids, so two clusters started from
    /// the same URLs differ.
    pub initial_cluster_token: String,
    /// `--force-new-cluster`: start as a one-member cluster of this member
    /// alone, with everything it had committed (quorum-loss recovery).
    pub force_new_cluster: bool,
    /// `--quota-backend-bytes`: above this store size, NOSPACE is raised
    /// and writes that add data are refused (0: 2 GiB, etcd's default).
    pub quota_backend_bytes: u64,
    /// `--disk-reserve-bytes`: free space kept on the data dir's disk;
    /// below it NOSPACE is raised, at twice it cleared again.
    pub disk_reserve_bytes: u64,
    /// Scheduled backups (`--snapshot-interval`, `--snapshot-dir`,
    /// `--snapshot-retention`).
    pub backups: BackupSchedule,
    /// `--auto-compaction-mode` and `--auto-compaction-retention`; `None`:
    /// off (a retention of 0).
    pub auto_compaction: Option<AutoCompaction>,
    /// `--experimental-corrupt-check-time`: how often the leader compares
    /// members' hashes; `None`: never.
    pub corrupt_check_every: Option<std::time::Duration>,
    /// `--experimental-initial-corrupt-check`: compare this member's data
    /// with the others' before serving, and refuse to start if it differs.
    pub initial_corrupt_check: bool,
    /// Milliseconds.
    pub heartbeat_interval: u64,
    /// Milliseconds.
    pub election_timeout: u64,
    /// Applied log entries between two snapshots (as etcd counts them;
    /// an entry may carry several writes that reached the leader
    /// together).
    pub snapshot_count: u64,
    /// Entries kept in the log behind a snapshot, so a follower that lags
    /// by fewer catches up from the log rather than a snapshot (etcd's
    /// `--experimental-snapshot-catchup-entries`).
    pub snapshot_catchup_entries: u64,
    /// Largest client request (`--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Most operations in each branch of a txn (`--max-txn-ops`).
    pub max_txn_ops: usize,
    /// How often an idle watcher with `progress_notify` gets a progress
    /// notification (etcd's `--experimental-watch-progress-notify-interval`).
    pub watch_progress_notify_interval: std::time::Duration,
    /// `--grpc-keepalive-interval`: how often an idle client connection
    /// is pinged (`None`: never).
    pub grpc_keepalive_interval: Option<std::time::Duration>,
    /// `--grpc-keepalive-timeout`: how long a ping may go unanswered
    /// before the connection is closed.
    pub grpc_keepalive_timeout: std::time::Duration,
    /// `--shutdown-grace`: on a stop, how long requests in flight and
    /// open streams get before every connection is closed.
    pub shutdown_grace: std::time::Duration,
    /// How far a lease's remaining TTL may drift from its last Raft
    /// checkpoint before the leader records it again (etcd's
    /// `--experimental-lease-checkpoint-interval`; etcd's default is 5m and
    /// off unless enabled, Cairn's is 5s and always on). Bounds what a
    /// leader change can add to an un-renewed lease.
    pub lease_checkpoint_interval: std::time::Duration,
    /// The kv store's engine (`--backend`); a data dir keeps the one it
    /// was created with.
    pub backend: BackendKind,
    /// TLS on the client port (`--cert-file`, `--key-file`,
    /// `--trusted-ca-file`, `--client-cert-auth`, `--client-crl-file`,
    /// `--auto-tls`); used by `https://` client URLs.
    pub client_tls: TlsInfo,
    /// TLS on the peer port and to peers (the `--peer-*` twins, with
    /// `--peer-cert-allowed-cn` and `--peer-cert-allowed-hostname`); used
    /// by `https://` peer URLs.
    pub peer_tls: TlsInfo,
    /// Cipher suites and versions of both ports.
    pub tls: TlsSettings,
    /// HTTP/2 streams one client connection may have open at once
    /// (`--max-concurrent-streams`; etcd's default: no bound).
    pub max_concurrent_streams: u32,
    /// `--auth-token`: `simple`, or `jwt,pub-key=…,priv-key=…,sign-method=…`.
    pub auth_token: String,
    /// `--auth-token-ttl`: how long a simple token is good for.
    pub auth_token_ttl: std::time::Duration,
    /// `--bcrypt-cost`: the cost of password hashes.
    pub bcrypt_cost: u32,
}

/// etcd's default `--auth-token-ttl`.
pub const DEFAULT_AUTH_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// etcd's default `--bcrypt-cost`.
pub const DEFAULT_BCRYPT_COST: u32 = 10;

/// Default `--disk-reserve-bytes`: room for a memtable flush and the Raft
/// log's next segments when writes are refused.
pub const DEFAULT_DISK_RESERVE_BYTES: u64 = 128 << 20;

/// etcd's default `--max-request-bytes`.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1_572_864;
/// The gRPC receive limit over `--max-request-bytes` (etcd's).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

impl Default for Config {
    fn default() -> Self {
        Self {
            name: "default".into(),
            data_dir: PathBuf::from("default.cairn"),
            listen_client_urls: vec!["http://localhost:2379".into()],
            listen_metrics_urls: Vec::new(),
            advertise_client_urls: vec!["http://localhost:2379".into()],
            listen_peer_urls: vec!["http://localhost:2380".into()],
            initial_advertise_peer_urls: vec!["http://localhost:2380".into()],
            initial_cluster: vec![("default".into(), vec!["http://localhost:2380".into()])],
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "etcd-cluster".into(),
            force_new_cluster: false,
            quota_backend_bytes: 0,
            disk_reserve_bytes: DEFAULT_DISK_RESERVE_BYTES,
            backups: BackupSchedule::default(),
            auto_compaction: None,
            corrupt_check_every: None,
            initial_corrupt_check: false,
            heartbeat_interval: 100,
            election_timeout: 1000,
            snapshot_count: 100_000,
            snapshot_catchup_entries: 5000,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: 128,
            watch_progress_notify_interval: std::time::Duration::from_secs(600),
            grpc_keepalive_interval: Some(std::time::Duration::from_secs(30)),
            grpc_keepalive_timeout: std::time::Duration::from_secs(20),
            shutdown_grace: std::time::Duration::from_secs(3),
            lease_checkpoint_interval: std::time::Duration::from_secs(5),
            backend: BackendKind::default(),
            client_tls: TlsInfo::default(),
            peer_tls: TlsInfo::default(),
            tls: TlsSettings::default(),
            max_concurrent_streams: u32::MAX,
            auth_token: "simple".into(),
            auth_token_ttl: DEFAULT_AUTH_TOKEN_TTL,
            bcrypt_cost: DEFAULT_BCRYPT_COST,
        }
    }
}

impl Config {
    /// An embedded single member with data in `data_dir` and no network
    /// listeners.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen_client_urls: Vec::new(),
            listen_metrics_urls: Vec::new(),
            listen_peer_urls: Vec::new(),
            ..Self::default()
        }
    }

    /// Parses etcd's `--initial-cluster` form: `a=http://h:1,b=http://h:2`
    /// (a name may appear more than once to give several URLs).
    pub fn parse_initial_cluster(s: &str) -> Result<Vec<(String, Vec<String>)>, String> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, url) = part
                .split_once('=')
                .ok_or_else(|| format!("--initial-cluster: {part:?} is not name=url"))?;
            check_url(url).map_err(|e| format!("--initial-cluster: {e}"))?;
            match out.iter_mut().find(|(n, _)| n == name) {
                Some((_, urls)) => urls.push(url.to_string()),
                None => out.push((name.to_string(), vec![url.to_string()])),
            }
        }
        Ok(out)
    }

    /// Checks the configuration the way etcd does before starting.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_interval == 0 {
            return Err("--heartbeat-interval must be > 0".into());
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(format!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout, self.heartbeat_interval
            ));
        }
        if self.election_timeout > 50_000 {
            return Err(format!(
                "--election-timeout[{}ms] is too long, and should be set less than 50 seconds",
                self.election_timeout
            ));
        }
        if self.max_txn_ops == 0 {
            return Err("--max-txn-ops must be > 0".into());
        }
        if self.max_concurrent_streams == 0 {
            return Err("--max-concurrent-streams must be > 0".into());
        }
        if self.max_request_bytes == 0 {
            return Err("--max-request-bytes must be > 0".into());
        }
        for u in self
            .listen_client_urls
            .iter()
            .chain(&self.advertise_client_urls)
            .chain(&self.listen_peer_urls)
            .chain(&self.initial_advertise_peer_urls)
        {
            check_url(u)?;
        }
        self.validate_tls()?;
        if self.initial_cluster_state == ClusterState::New || !self.initial_cluster.is_empty() {
            let mine = self
                .initial_cluster
                .iter()
                .find(|(n, _)| n == &self.name)
                .ok_or_else(|| {
                    format!(
                        "couldn't find local name {:?} in the initial cluster configuration",
                        self.name
                    )
                })?;
            let mut a = mine.1.clone();
            let mut b = self.initial_advertise_peer_urls.clone();
            a.sort();
            b.sort();
            if a != b {
                return Err(format!(
                    "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={} \
                     (the two must list the same URLs)",
                    self.name,
                    mine.1.join(","),
                    self.initial_advertise_peer_urls.join(",")
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// TLS settings that cannot work, refused as etcd refuses them; TLS
    /// files given for `http://` URLs are only warned about (etcd's rule).
    fn validate_tls(&self) -> Result<(), String> {
        self.tls.validate()?;
        for u in &self.listen_client_urls {
            if u.starts_with("https://") && self.client_tls.is_empty() {
                return Err(format!(
                    "TLS key/cert (--cert-file, --key-file) must be provided for client url {u} with HTTPS scheme"
                ));
            }
        }
        let peer_urls = self
            .listen_peer_urls
            .iter()
            .chain(&self.initial_advertise_peer_urls)
            .chain(self.initial_cluster.iter().flat_map(|(_, u)| u));
        for u in peer_urls {
            if u.starts_with("https://") && self.peer_tls.is_empty() {
                return Err(format!(
                    "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url {u} with HTTPS scheme"
                ));
            }
        }
        for (info, flag) in [
            (&self.client_tls, "--client-cert-auth"),
            (&self.peer_tls, "--peer-client-cert-auth"),
        ] {
            if info.client_cert_auth && info.trusted_ca_file.is_none() && !info.auto_tls {
                return Err(format!(
                    "{flag} needs a trusted CA file to check certificates against"
                ));
            }
        }
        if self.peer_tls.allowed_cn.is_some() && self.peer_tls.allowed_hostname.is_some() {
            return Err(format!(
                "AllowedCN and AllowedHostname are mutually exclusive (cn={:?}, hostname={:?})",
                self.peer_tls.allowed_cn.as_deref().unwrap_or_default(),
                self.peer_tls
                    .allowed_hostname
                    .as_deref()
                    .unwrap_or_default()
            ));
        }
        Ok(())
    }
}

/// Parses a Go duration as etcd's flags take them: `1h2m3s`, `500ms`,
/// `1.5s` (a unit is required; the result must be positive).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        let (num, tail) = rest.split_at(num_len);
        let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let secs = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        total += n * secs;
        rest = tail;
    }
    if total <= 0.0 {
        return Err(format!("duration must be positive: {s:?}"));
    }
    std::time::Duration::try_from_secs_f64(total)
        .map_err(|_| format!("duration out of range: {s:?}"))
}

/// Accepts `http://host:port` and `https://host:port`.
pub fn check_url(u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| format!("URL scheme must be http or https: {u:?}"))?;
    let hostport = rest.trim_end_matches('/');
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| format!("URL address does not have the form \"host:port\": {u}"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!(
            "URL address does not have the form \"host:port\": {u}"
        ));
    }
    Ok(())
}

/// The host of a URL checked by [`check_url`] (an IPv6 address without
/// its brackets).
pub fn host_of(u: &str) -> &str {
    let hp = host_port(u);
    let host = hp.rsplit_once(':').map_or(hp, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The `host:port` of a URL checked by [`check_url`].
pub fn host_port(u: &str) -> &str {
    u.strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .unwrap_or(u)
        .trim_end_matches('/')
}
