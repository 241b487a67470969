//! `cairn`: serves a Cairn member over etcd's v3 gRPC API. Takes etcd's
//! flags (and `ETCD_*` environment variables) with etcd's defaults.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cairn::config::{parse_duration, AutoCompaction, BackupSchedule, DEFAULT_MAX_REQUEST_BYTES};
use cairn::tls::{TlsInfo, TlsSettings, TlsVersion};
use cairn::{ClusterState, Config, Node};
use clap::{CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;

mod inert;

/// mimalloc instead of the system allocator: a member allocates and frees
/// small buffers on every request from many threads, where glibc's malloc
/// spent a fifth of the leader's CPU under load.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "cairn",
    version,
    about = "An etcd-compatible key-value store",
    // A flag given twice takes its last value, as Go's flag package does.
    args_override_self = true
)]
struct Flags {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    name: String,
    /// Path to the data directory (default: ${name}.cairn).
    #[arg(long, env = "ETCD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// List of URLs to listen on for client traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    listen_client_urls: String,
    /// List of URLs to listen on for the metrics and health endpoints
    /// only (kubeadm: http://127.0.0.1:2381).
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", default_value = "")]
    listen_metrics_urls: String,
    /// List of this member's client URLs to advertise to the cluster.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379"
    )]
    advertise_client_urls: String,
    /// List of URLs to listen on for peer traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    listen_peer_urls: String,
    /// List of this member's peer URLs to advertise to the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380"
    )]
    initial_advertise_peer_urls: String,
    /// Initial cluster configuration for bootstrapping (name=url,...).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", default_value = "new")]
    initial_cluster_state: String,
    /// Initial cluster token for the cluster during bootstrap.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    initial_cluster_token: String,
    /// Force to create a new one member cluster: this member, with its
    /// committed data, alone (quorum-loss recovery).
    #[arg(long, env = "ETCD_FORCE_NEW_CLUSTER", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    force_new_cluster: bool,
    /// Raise alarms when backend size exceeds the given quota (0 defaults
    /// to 2 GiB).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    quota_backend_bytes: u64,
    /// Free space kept on the data dir's disk: below it, this member
    /// raises NOSPACE (writes that add data are refused on every member)
    /// and clears it once twice as much is free again.
    #[arg(long, env = "CAIRN_DISK_RESERVE_BYTES", default_value_t = cairn::config::DEFAULT_DISK_RESERVE_BYTES)]
    disk_reserve_bytes: u64,
    /// Write a backup of this member's store every so often (e.g. 1h;
    /// 0: never).
    #[arg(long, env = "CAIRN_SNAPSHOT_INTERVAL", default_value = "0")]
    snapshot_interval: String,
    /// Where scheduled backups go (default: <data-dir>/backups).
    #[arg(long, env = "CAIRN_SNAPSHOT_DIR")]
    snapshot_dir: Option<PathBuf>,
    /// How many scheduled backups to keep (the newest).
    #[arg(long, env = "CAIRN_SNAPSHOT_RETENTION", default_value_t = 5)]
    snapshot_retention: usize,
    /// Interpret 'auto-compaction-retention' one of: periodic|revision.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_MODE", default_value = "periodic")]
    auto_compaction_mode: String,
    /// Auto compaction retention for mvcc key value store. 0 means
    /// disable auto compaction.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    auto_compaction_retention: String,
    /// Duration of time between cluster corruption check passes (0: off).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        default_value = "0"
    )]
    experimental_corrupt_check_time: String,
    /// Check the data against the other members' before serving.
    #[arg(long, env = "ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    experimental_initial_corrupt_check: bool,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    election_timeout: u64,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    snapshot_count: u64,
    /// Entries kept behind a snapshot for slow followers to catch up from.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES",
        default_value_t = 5000
    )]
    experimental_snapshot_catchup_entries: u64,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// Maximum concurrent streams that each client can open at a time.
    #[arg(long, env = "ETCD_MAX_CONCURRENT_STREAMS", default_value_t = u32::MAX)]
    max_concurrent_streams: u32,
    /// Specify auth token type and options: 'simple' or
    /// 'jwt,pub-key=PATH,priv-key=PATH,sign-method=ALG[,ttl=DURATION]'.
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple")]
    auth_token: String,
    /// The lifetime in seconds of a simple token.
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = 300)]
    auth_token_ttl: u64,
    /// The cost of bcrypt password hashes (4 to 31).
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = 10)]
    bcrypt_cost: u32,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    max_txn_ops: usize,
    /// Duration of periodic watch progress notifications (Go duration,
    /// e.g. 10m, 5s, 500ms).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m"
    )]
    experimental_watch_progress_notify_interval: String,
    /// How often the server pings an idle client connection (HTTP/2
    /// PING) to find one whose other end is gone; 0: never. (etcd's
    /// default is 2h; Cairn's 30s closes half-open connections sooner.)
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_INTERVAL", default_value = "30s")]
    grpc_keepalive_interval: String,
    /// How long a ping may go unanswered before the connection is closed.
    #[arg(long, env = "ETCD_GRPC_KEEPALIVE_TIMEOUT", default_value = "20s")]
    grpc_keepalive_timeout: String,
    /// On SIGTERM, how long requests in flight and open streams get
    /// before the member closes every connection and exits (e.g. 3s).
    #[arg(long, env = "CAIRN_SHUTDOWN_GRACE", default_value = "3s")]
    shutdown_grace: String,
    /// How far a lease's remaining TTL may drift before the leader
    /// checkpoints it through Raft (bounds what a leader change adds).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL",
        default_value = "5s"
    )]
    experimental_lease_checkpoint_interval: String,
    /// Accepted for etcd compatibility; Cairn always checkpoints leases.
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_ENABLE_LEASE_CHECKPOINT",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    experimental_enable_lease_checkpoint: bool,
    /// Log level: debug, info, warn, error, panic, or fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// etcd 3.4's switch for debug logs (as --log-level debug).
    #[arg(long, env = "ETCD_DEBUG", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", hide = true)]
    debug: bool,
    /// The kv store's engine: fjall (default) or sled. A data dir keeps
    /// the engine it was created with; starting it with the other is
    /// refused.
    #[arg(long, env = "CAIRN_BACKEND", default_value = "fjall")]
    backend: String,
    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE")]
    cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA cert file (client
    /// certificates become required).
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    trusted_ca_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    client_cert_auth: bool,
    /// Path to the client certificate revocation list file.
    #[arg(long, env = "ETCD_CLIENT_CRL_FILE")]
    client_crl_file: Option<PathBuf>,
    /// Allowed TLS hostname for client certificate authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_ALLOWED_HOSTNAME")]
    client_cert_allowed_hostname: Option<String>,
    /// Allowed CN for client certificates (config file only:
    /// `client-transport-security.allowed-cn`).
    #[arg(skip)]
    client_cert_allowed_cn: Option<String>,
    /// Client TLS using generated certificates.
    #[arg(long, env = "ETCD_AUTO_TLS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    auto_tls: bool,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    peer_key_file: Option<PathBuf>,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    peer_client_cert_auth: bool,
    /// Path to the peer certificate revocation list file.
    #[arg(long, env = "ETCD_PEER_CRL_FILE")]
    peer_crl_file: Option<PathBuf>,
    /// Peer TLS using self-generated certificates.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    peer_auto_tls: bool,
    /// Allowed CN for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN")]
    peer_cert_allowed_cn: Option<String>,
    /// Allowed TLS hostname for inter peer authentication.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_HOSTNAME")]
    peer_cert_allowed_hostname: Option<String>,
    /// Comma-separated list of supported TLS 1.2 cipher suites between
    /// client/server and peers (empty: every suite supported).
    #[arg(long, env = "ETCD_CIPHER_SUITES", default_value = "")]
    cipher_suites: String,
    /// Minimum TLS version supported: TLS1.2 or TLS1.3.
    #[arg(long, env = "ETCD_TLS_MIN_VERSION")]
    tls_min_version: Option<String>,
    /// Maximum TLS version supported: TLS1.2 or TLS1.3 (default: the
    /// newest).
    #[arg(long, env = "ETCD_TLS_MAX_VERSION")]
    tls_max_version: Option<String>,
    /// Path to a YAML configuration file with etcd's keys. When given,
    /// other flags and environment variables are ignored (as in etcd).
    #[arg(long, env = "ETCD_CONFIG_FILE")]
    config_file: Option<PathBuf>,
}

/// etcd's configuration file keys.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    name: Option<String>,
    data_dir: Option<PathBuf>,
    listen_client_urls: Option<String>,
    listen_metrics_urls: Option<String>,
    advertise_client_urls: Option<String>,
    listen_peer_urls: Option<String>,
    initial_advertise_peer_urls: Option<String>,
    initial_cluster: Option<String>,
    initial_cluster_state: Option<String>,
    initial_cluster_token: Option<String>,
    force_new_cluster: Option<bool>,
    quota_backend_bytes: Option<u64>,
    disk_reserve_bytes: Option<u64>,
    snapshot_interval: Option<String>,
    snapshot_dir: Option<PathBuf>,
    snapshot_retention: Option<usize>,
    auto_compaction_mode: Option<String>,
    experimental_corrupt_check_time: Option<String>,
    experimental_initial_corrupt_check: Option<bool>,
    /// A number (hours or revisions) or a duration, as etcd's YAML has it.
    #[serde(deserialize_with = "scalar_as_string")]
    auto_compaction_retention: Option<String>,
    heartbeat_interval: Option<u64>,
    election_timeout: Option<u64>,
    snapshot_count: Option<u64>,
    experimental_snapshot_catchup_entries: Option<u64>,
    max_request_bytes: Option<usize>,
    max_txn_ops: Option<usize>,
    max_concurrent_streams: Option<u32>,
    auth_token: Option<String>,
    auth_token_ttl: Option<u64>,
    bcrypt_cost: Option<u32>,
    experimental_watch_progress_notify_interval: Option<String>,
    grpc_keepalive_interval: Option<String>,
    grpc_keepalive_timeout: Option<String>,
    shutdown_grace: Option<String>,
    experimental_lease_checkpoint_interval: Option<String>,
    experimental_enable_lease_checkpoint: Option<bool>,
    log_level: Option<String>,
    debug: Option<bool>,
    backend: Option<String>,
    client_transport_security: Option<SecurityFile>,
    peer_transport_security: Option<SecurityFile>,
    cipher_suites: Option<Vec<String>>,
    tls_min_version: Option<String>,
    tls_max_version: Option<String>,
}

/// etcd's `client-transport-security` and `peer-transport-security`.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct SecurityFile {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_cert_auth: Option<bool>,
    trusted_ca_file: Option<PathBuf>,
    auto_tls: Option<bool>,
    crl_file: Option<PathBuf>,
    allowed_cn: Option<String>,
    allowed_hostname: Option<String>,
}

fn urls(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect()
}

/// The flags and the inert etcd flags (see [`inert`]) of a command line.
fn parse_from<I, T>(args: I) -> Result<(Flags, Vec<inert::Given>), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let m = inert::register(Flags::command()).try_get_matches_from(args)?;
    Ok((Flags::from_arg_matches(&m)?, inert::given(&m)))
}

fn load_file(path: &PathBuf) -> Result<(Flags, Vec<inert::Given>), String> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    from_yaml(&raw).map_err(|e| format!("invalid config file {}: {e}", path.display()))
}

/// The flags a configuration file's text sets.
/// A YAML scalar, number or string, as its text.
fn scalar_as_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Int(i64),
        Float(f64),
        Text(String),
    }
    Ok(Option::<Scalar>::deserialize(d)?.map(|s| match s {
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Text(t) => t,
    }))
}

fn from_yaml(raw: &str) -> Result<(Flags, Vec<inert::Given>), String> {
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(raw).map_err(|e| e.to_string())?;
    let given = match &mut doc {
        serde_yaml_ng::Value::Mapping(m) => inert::take_from_yaml(m),
        _ => Vec::new(),
    };
    let f: FileConfig = serde_yaml_ng::from_value(doc).map_err(|e| e.to_string())?;
    let d = Flags::parse_from(["cairn"]);
    let c = f.client_transport_security.unwrap_or_default();
    let p = f.peer_transport_security.unwrap_or_default();
    let flags = Flags {
        cert_file: c.cert_file,
        key_file: c.key_file,
        trusted_ca_file: c.trusted_ca_file,
        client_cert_auth: c.client_cert_auth.unwrap_or(d.client_cert_auth),
        client_crl_file: c.crl_file,
        client_cert_allowed_hostname: c.allowed_hostname,
        client_cert_allowed_cn: c.allowed_cn,
        auto_tls: c.auto_tls.unwrap_or(d.auto_tls),
        peer_cert_file: p.cert_file,
        peer_key_file: p.key_file,
        peer_trusted_ca_file: p.trusted_ca_file,
        peer_client_cert_auth: p.client_cert_auth.unwrap_or(d.peer_client_cert_auth),
        peer_crl_file: p.crl_file,
        peer_auto_tls: p.auto_tls.unwrap_or(d.peer_auto_tls),
        peer_cert_allowed_cn: p.allowed_cn,
        peer_cert_allowed_hostname: p.allowed_hostname,
        cipher_suites: f
            .cipher_suites
            .map(|v| v.join(","))
            .unwrap_or(d.cipher_suites),
        tls_min_version: f.tls_min_version,
        tls_max_version: f.tls_max_version,
        name: f.name.unwrap_or(d.name),
        data_dir: f.data_dir.or(d.data_dir),
        listen_client_urls: f.listen_client_urls.unwrap_or(d.listen_client_urls),
        listen_metrics_urls: f.listen_metrics_urls.unwrap_or(d.listen_metrics_urls),
        advertise_client_urls: f.advertise_client_urls.unwrap_or(d.advertise_client_urls),
        listen_peer_urls: f.listen_peer_urls.unwrap_or(d.listen_peer_urls),
        initial_advertise_peer_urls: f
            .initial_advertise_peer_urls
            .unwrap_or(d.initial_advertise_peer_urls),
        initial_cluster: f.initial_cluster.or(d.initial_cluster),
        initial_cluster_state: f.initial_cluster_state.unwrap_or(d.initial_cluster_state),
        initial_cluster_token: f.initial_cluster_token.unwrap_or(d.initial_cluster_token),
        force_new_cluster: f.force_new_cluster.unwrap_or(d.force_new_cluster),
        quota_backend_bytes: f.quota_backend_bytes.unwrap_or(d.quota_backend_bytes),
        disk_reserve_bytes: f.disk_reserve_bytes.unwrap_or(d.disk_reserve_bytes),
        snapshot_interval: f.snapshot_interval.unwrap_or(d.snapshot_interval),
        snapshot_dir: f.snapshot_dir.or(d.snapshot_dir),
        snapshot_retention: f.snapshot_retention.unwrap_or(d.snapshot_retention),
        auto_compaction_mode: f.auto_compaction_mode.unwrap_or(d.auto_compaction_mode),
        experimental_corrupt_check_time: f
            .experimental_corrupt_check_time
            .unwrap_or(d.experimental_corrupt_check_time),
        experimental_initial_corrupt_check: f
            .experimental_initial_corrupt_check
            .unwrap_or(d.experimental_initial_corrupt_check),
        auto_compaction_retention: f
            .auto_compaction_retention
            .unwrap_or(d.auto_compaction_retention),
        heartbeat_interval: f.heartbeat_interval.unwrap_or(d.heartbeat_interval),
        election_timeout: f.election_timeout.unwrap_or(d.election_timeout),
        snapshot_count: f.snapshot_count.unwrap_or(d.snapshot_count),
        experimental_snapshot_catchup_entries: f
            .experimental_snapshot_catchup_entries
            .unwrap_or(d.experimental_snapshot_catchup_entries),
        max_request_bytes: f.max_request_bytes.unwrap_or(d.max_request_bytes),
        max_txn_ops: f.max_txn_ops.unwrap_or(d.max_txn_ops),
        max_concurrent_streams: f.max_concurrent_streams.unwrap_or(d.max_concurrent_streams),
        auth_token: f.auth_token.unwrap_or(d.auth_token),
        auth_token_ttl: f.auth_token_ttl.unwrap_or(d.auth_token_ttl),
        bcrypt_cost: f.bcrypt_cost.unwrap_or(d.bcrypt_cost),
        experimental_watch_progress_notify_interval: f
            .experimental_watch_progress_notify_interval
            .unwrap_or(d.experimental_watch_progress_notify_interval),
        grpc_keepalive_interval: f
            .grpc_keepalive_interval
            .unwrap_or(d.grpc_keepalive_interval),
        grpc_keepalive_timeout: f.grpc_keepalive_timeout.unwrap_or(d.grpc_keepalive_timeout),
        shutdown_grace: f.shutdown_grace.unwrap_or(d.shutdown_grace),
        experimental_lease_checkpoint_interval: f
            .experimental_lease_checkpoint_interval
            .unwrap_or(d.experimental_lease_checkpoint_interval),
        experimental_enable_lease_checkpoint: f
            .experimental_enable_lease_checkpoint
            .unwrap_or(d.experimental_enable_lease_checkpoint),
        log_level: f.log_level.unwrap_or(d.log_level),
        debug: f.debug.unwrap_or(d.debug),
        backend: f.backend.unwrap_or(d.backend),
        config_file: None,
    };
    Ok((flags, given))
}

fn to_config(f: &Flags) -> Result<Config, String> {
    let initial_advertise_peer_urls = urls(&f.initial_advertise_peer_urls);
    let initial_cluster = match &f.initial_cluster {
        Some(s) => Config::parse_initial_cluster(s)?,
        // etcd's default: this member alone, at its advertised peer URLs.
        None => vec![(f.name.clone(), initial_advertise_peer_urls.clone())],
    };
    let initial_cluster_state = match f.initial_cluster_state.as_str() {
        "new" => ClusterState::New,
        "existing" => ClusterState::Existing,
        other => {
            return Err(format!(
                "invalid value {other:?} for --initial-cluster-state: valid values are \"new\", \"existing\""
            ))
        }
    };
    Ok(Config {
        name: f.name.clone(),
        data_dir: f
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.cairn", f.name))),
        listen_client_urls: urls(&f.listen_client_urls),
        listen_metrics_urls: urls(&f.listen_metrics_urls),
        advertise_client_urls: urls(&f.advertise_client_urls),
        listen_peer_urls: urls(&f.listen_peer_urls),
        initial_advertise_peer_urls,
        initial_cluster,
        initial_cluster_state,
        initial_cluster_token: f.initial_cluster_token.clone(),
        force_new_cluster: f.force_new_cluster,
        quota_backend_bytes: f.quota_backend_bytes,
        disk_reserve_bytes: f.disk_reserve_bytes,
        initial_corrupt_check: f.experimental_initial_corrupt_check,
        corrupt_check_every: optional_duration(
            &f.experimental_corrupt_check_time,
            "--experimental-corrupt-check-time",
        )?,
        auto_compaction: AutoCompaction::parse(
            &f.auto_compaction_mode,
            &f.auto_compaction_retention,
        )?,
        backups: BackupSchedule {
            every: optional_duration(&f.snapshot_interval, "--snapshot-interval")?,
            dir: f.snapshot_dir.clone(),
            keep: f.snapshot_retention,
        },
        heartbeat_interval: f.heartbeat_interval,
        election_timeout: f.election_timeout,
        snapshot_count: f.snapshot_count,
        snapshot_catchup_entries: f.experimental_snapshot_catchup_entries,
        max_request_bytes: f.max_request_bytes,
        max_txn_ops: f.max_txn_ops,
        max_concurrent_streams: f.max_concurrent_streams,
        auth_token: f.auth_token.clone(),
        auth_token_ttl: Duration::from_secs(f.auth_token_ttl),
        bcrypt_cost: f.bcrypt_cost,
        watch_progress_notify_interval: parse_duration(
            &f.experimental_watch_progress_notify_interval,
        )
        .map_err(|e| format!("--experimental-watch-progress-notify-interval: {e}"))?,
        grpc_keepalive_interval: optional_duration(
            &f.grpc_keepalive_interval,
            "--grpc-keepalive-interval",
        )?,
        grpc_keepalive_timeout: parse_duration(&f.grpc_keepalive_timeout)
            .map_err(|e| format!("--grpc-keepalive-timeout: {e}"))?,
        shutdown_grace: parse_duration(&f.shutdown_grace)
            .map_err(|e| format!("--shutdown-grace: {e}"))?,
        lease_checkpoint_interval: parse_duration(&f.experimental_lease_checkpoint_interval)
            .map_err(|e| format!("--experimental-lease-checkpoint-interval: {e}"))?,
        backend: f.backend.parse().map_err(|e| format!("--backend: {e}"))?,
        client_tls: TlsInfo {
            cert_file: f.cert_file.clone(),
            key_file: f.key_file.clone(),
            trusted_ca_file: f.trusted_ca_file.clone(),
            client_cert_auth: f.client_cert_auth,
            crl_file: f.client_crl_file.clone(),
            auto_tls: f.auto_tls,
            allowed_cn: f.client_cert_allowed_cn.clone().filter(|s| !s.is_empty()),
            allowed_hostname: f
                .client_cert_allowed_hostname
                .clone()
                .filter(|s| !s.is_empty()),
        },
        peer_tls: TlsInfo {
            cert_file: f.peer_cert_file.clone(),
            key_file: f.peer_key_file.clone(),
            trusted_ca_file: f.peer_trusted_ca_file.clone(),
            client_cert_auth: f.peer_client_cert_auth,
            crl_file: f.peer_crl_file.clone(),
            auto_tls: f.peer_auto_tls,
            allowed_cn: f.peer_cert_allowed_cn.clone().filter(|s| !s.is_empty()),
            allowed_hostname: f
                .peer_cert_allowed_hostname
                .clone()
                .filter(|s| !s.is_empty()),
        },
        tls: TlsSettings {
            cipher_suites: urls(&f.cipher_suites),
            min_version: tls_version(&f.tls_min_version, "--tls-min-version")?,
            max_version: tls_version(&f.tls_max_version, "--tls-max-version")?,
        },
    })
}

/// A duration flag where 0 means off.
fn optional_duration(v: &str, flag: &str) -> Result<Option<Duration>, String> {
    match v.trim() {
        "" | "0" | "0s" => Ok(None),
        d => parse_duration(d)
            .map(Some)
            .map_err(|e| format!("{flag}: {e}")),
    }
}

fn tls_version(v: &Option<String>, flag: &str) -> Result<Option<TlsVersion>, String> {
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|e| format!("{flag}: {e}")),
    }
}

fn log_filter(level: &str) -> Result<&'static str, String> {
    Ok(match level {
        "debug" => "debug,h2=info,hyper=info,tower=info,openraft=info",
        "info" => "info,openraft=warn",
        "warn" => "warn",
        "error" | "panic" | "fatal" => "error",
        other => {
            return Err(format!(
                "invalid --log-level {other:?}: valid values are debug, info, warn, error, panic, fatal"
            ))
        }
    })
}

fn main() -> ExitCode {
    // No transparent huge pages for this process: with THP on, the first
    // touch of fresh heap memory faults in and zeroes 2 MiB at a time, and
    // an apply that allocates a few MiB at once (a lease revoke of 10,000
    // keys) spent most of its time in the kernel zeroing pages while the
    // writes behind it waited. Also keeps RSS to what is used.
    let thp = rustix::thread::disable_transparent_huge_pages(true);
    // Everything this process creates (data dir, files, certificates) is
    // its owner's alone: directories 0700, files 0600.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let (flags, inert_flags) = match parse_from(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(e) => e.exit(),
    };
    let (flags, inert_flags) = match &flags.config_file {
        Some(p) => match load_file(p) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("cairn: {e}");
                return ExitCode::from(1);
            }
        },
        None => (flags, inert_flags),
    };
    if let Err(e) = inert::check(&inert_flags) {
        eprintln!("cairn: {e}");
        return ExitCode::from(1);
    }
    let level = if flags.debug {
        "debug"
    } else {
        flags.log_level.as_str()
    };
    let filter = match log_filter(level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::from(1);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    inert::log(&inert_flags);
    if let Err(e) = thp {
        tracing::warn!("cannot turn transparent huge pages off for this process: {e}");
    }
    let config = match to_config(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    config.validate()?;
    let listeners = cairn::grpc::bind_clients(&config)
        .await
        .map_err(|e| e.to_string())?;
    let metrics_listeners = cairn::grpc::bind_metrics(&config)
        .await
        .map_err(|e| e.to_string())?;
    let node = Node::start(config).await.map_err(|e| e.to_string())?;
    // Probes answer from the start (not ready until the member is).
    let (metrics_stop, stopped) = tokio::sync::watch::channel(false);
    let metrics = cairn::http::serve(node.clone(), metrics_listeners, stopped);
    tokio::select! {
        _ = node.wait_ready() => {}
        _ = signal() => {
            let _ = metrics_stop.send(true);
            let _ = metrics.await;
            node.shutdown().await;
            return Ok(());
        }
    }
    // etcd's own words for these two moments: scripts and test harnesses
    // written for etcd (its e2e suite among them) wait for them.
    tracing::info!(
        "enabled capabilities for version {}",
        cairn::client::ETCD_CLUSTER_VERSION
    );
    tracing::info!(
        name = %node.config().name,
        "published local member to cluster through raft"
    );
    tracing::info!(
        client_urls = %node.config().listen_client_urls.join(","),
        "ready; serving client requests"
    );
    let watcher = node.clone();
    let stop = async move {
        let removed = async {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if watcher.is_removed() {
                    tracing::warn!("this member was removed from the cluster; stopping");
                    return;
                }
            }
        };
        tokio::select! {
            _ = signal() => tracing::info!("received a stop signal; shutting down"),
            _ = removed => {}
        }
    };
    let served = cairn::grpc::serve(node.clone(), listeners, stop).await;
    let _ = metrics_stop.send(true);
    let _ = metrics.await;
    node.shutdown().await;
    served.map_err(|e| e.to_string())
}

async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With no flags, a single member named "default" on localhost's
    /// 2379/2380 with data in `default.cairn` and etcd's defaults.
    #[test]
    fn no_flags_means_etcds_defaults() {
        let c = to_config(&Flags::parse_from(["cairn"])).expect("config");
        assert_eq!(c.name, "default");
        assert_eq!(c.data_dir, PathBuf::from("default.cairn"));
        assert_eq!(c.listen_client_urls, ["http://localhost:2379"]);
        assert_eq!(c.advertise_client_urls, ["http://localhost:2379"]);
        assert_eq!(c.listen_peer_urls, ["http://localhost:2380"]);
        assert_eq!(c.initial_advertise_peer_urls, ["http://localhost:2380"]);
        assert_eq!(
            c.initial_cluster,
            [(
                "default".to_string(),
                vec!["http://localhost:2380".to_string()]
            )]
        );
        assert_eq!(c.initial_cluster_state, ClusterState::New);
        assert_eq!(c.initial_cluster_token, "etcd-cluster");
        assert_eq!((c.heartbeat_interval, c.election_timeout), (100, 1000));
        assert_eq!(c.snapshot_count, 100_000);
        assert_eq!(c.max_request_bytes, 1536 * 1024);
        assert_eq!(c.max_txn_ops, 128);
        assert_eq!(c.max_concurrent_streams, u32::MAX);
        assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(600));
        assert_eq!(c.lease_checkpoint_interval, Duration::from_secs(5));
        assert_eq!(c.snapshot_catchup_entries, 5000);
        // A name alone moves the data dir, as in etcd.
        let c = to_config(&Flags::parse_from(["cairn", "--name", "m1"])).expect("config");
        assert_eq!(c.data_dir, PathBuf::from("m1.cairn"));
    }

    /// kubeadm's static pod flags for etcd, Go's `--flag=true` booleans
    /// included, are taken as they are (docs/operations.md).
    #[test]
    fn kubeadms_etcd_flags_are_taken() {
        let f = Flags::try_parse_from([
            "cairn",
            "--name=cp1",
            "--data-dir=/var/lib/etcd",
            "--listen-client-urls=https://127.0.0.1:2379,https://10.0.0.1:2379",
            "--advertise-client-urls=https://10.0.0.1:2379",
            "--listen-peer-urls=https://10.0.0.1:2380",
            "--initial-advertise-peer-urls=https://10.0.0.1:2380",
            "--initial-cluster=cp1=https://10.0.0.1:2380",
            "--listen-metrics-urls=http://127.0.0.1:2381",
            "--cert-file=/etc/kubernetes/pki/etcd/server.crt",
            "--key-file=/etc/kubernetes/pki/etcd/server.key",
            "--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
            "--client-cert-auth=true",
            "--peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt",
            "--peer-key-file=/etc/kubernetes/pki/etcd/peer.key",
            "--peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
            "--peer-client-cert-auth=true",
            "--snapshot-count=10000",
            "--experimental-initial-corrupt-check=true",
            "--experimental-watch-progress-notify-interval=5s",
        ])
        .expect("kubeadm's flags");
        let c = to_config(&f).expect("config");
        assert_eq!(c.listen_metrics_urls, ["http://127.0.0.1:2381"]);
        assert!(c.initial_corrupt_check);
        assert_eq!(c.snapshot_count, 10_000);
        assert_eq!(c.watch_progress_notify_interval, Duration::from_secs(5));
        // Go's booleans: bare, =true, =false.
        for (arg, want) in [
            ("--force-new-cluster", true),
            ("--force-new-cluster=true", true),
            ("--force-new-cluster=false", false),
        ] {
            let f = Flags::try_parse_from(["cairn", arg]).expect(arg);
            assert_eq!(f.force_new_cluster, want, "{arg}");
        }
    }

    /// etcd's flags that Cairn does not act on are taken (bare, =value,
    /// or as config file keys) and reported; those that would have Cairn
    /// do something else are refused.
    #[test]
    fn etcds_other_flags_are_taken_and_reported() {
        let (f, given) = parse_from([
            "cairn",
            "--name=m1",
            "--enable-v2",
            "--strict-reconfig-check=false",
            "--logger=zap",
            "--log-outputs=stderr",
            "--wal-dir",
            "/var/lib/etcd/wal",
            "--pre-vote=true",
            "--enable-pprof",
            "--discovery=",
            "--proxy=off",
        ])
        .expect("etcd's flags");
        assert_eq!(f.name, "m1");
        let names: Vec<_> = given.iter().map(|(n, _)| *n).collect();
        for n in [
            "enable-v2",
            "strict-reconfig-check",
            "wal-dir",
            "pre-vote",
            "proxy",
        ] {
            assert!(names.contains(&n), "{n} not reported: {names:?}");
        }
        assert!(given.contains(&("enable-v2", "true".to_string())));
        assert!(given.contains(&("strict-reconfig-check", "false".to_string())));
        assert!(inert::check(&given).is_ok());
        let (_, given) = parse_from(["cairn", "--proxy", "on"]).expect("flags");
        assert!(inert::check(&given).is_err());
        // A flag given twice takes its last value (etcd's e2e harness
        // repeats --client-cert-auth).
        let (f, _) = parse_from([
            "cairn",
            "--client-cert-auth",
            "--name=a",
            "--client-cert-auth",
            "--name=b",
            "--enable-v2",
            "--enable-v2=false",
        ])
        .expect("repeated flags");
        assert!(f.client_cert_auth);
        assert_eq!(f.name, "b");
        // A flag no etcd has is still an error.
        assert!(parse_from(["cairn", "--no-such-flag"]).is_err());

        let (f, given) = from_yaml(
            "name: m2\nenable-v2: true\nstrict-reconfig-check: true\nlogger: zap\n\
             log-outputs: [stderr]\ndebug: true\nenable-pprof: false\n\
             client-transport-security:\n  allowed-hostname: client.example\n",
        )
        .expect("etcd's config file");
        assert_eq!(f.name, "m2");
        assert!(f.debug);
        assert_eq!(given.len(), 5, "{given:?}");
        assert!(
            given.contains(&("log-outputs", "- stderr".to_string())),
            "{given:?}"
        );
        let c = to_config(&f).expect("config");
        assert_eq!(
            c.client_tls.allowed_hostname.as_deref(),
            Some("client.example")
        );
        assert!(from_yaml("discovery: https://discovery.etcd.io/x\n")
            .map(|(_, g)| inert::check(&g).is_err())
            .expect("yaml"));
        // Keys no etcd has are still refused.
        assert!(from_yaml("no-such-key: 1\n").is_err());
    }

    #[test]
    fn the_client_port_takes_an_allowed_host_name() {
        let (f, _) =
            parse_from(["cairn", "--client-cert-allowed-hostname=client.example"]).expect("flags");
        let c = to_config(&f).expect("config");
        assert_eq!(
            c.client_tls.allowed_hostname.as_deref(),
            Some("client.example")
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// A configuration file of any text, or of etcd's keys with any
        /// values, is taken or refused with a message; never a panic.
        #[test]
        fn any_config_file_is_taken_or_refused(
            raw in ".{0,200}",
            entries in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "name", "data-dir", "listen-client-urls", "initial-cluster",
                        "initial-cluster-state", "heartbeat-interval", "election-timeout",
                        "max-request-bytes", "max-concurrent-streams", "cipher-suites",
                        "tls-min-version", "experimental-watch-progress-notify-interval",
                        "client-transport-security", "peer-transport-security", "backend",
                        "enable-v2", "proxy", "discovery", "wal-dir",
                    ]),
                    proptest::prop_oneof!["[ -~]{0,24}", "[0-9]{1,30}(ns|ms|s|m|h)"],
                ),
                0..6,
            ),
        ) {
            if let Ok((f, given)) = from_yaml(&raw) {
                let _ = to_config(&f);
                let _ = inert::check(&given);
            }
            let doc: String = entries.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
            if let Ok((f, _)) = from_yaml(&doc) {
                if let Ok(c) = to_config(&f) {
                    let _ = c.validate();
                }
            }
        }
    }

    /// etcd's auto-compaction flags and config keys: a bare periodic
    /// retention is hours; the YAML value may be a number.
    #[test]
    fn auto_compaction_as_etcd_reads_it() {
        let parse = |args: &[&str]| {
            let mut all = vec!["cairn"];
            all.extend_from_slice(args);
            to_config(&Flags::parse_from(all)).map(|c| c.auto_compaction)
        };
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(
            parse(&["--auto-compaction-retention", "2"]),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(7200))))
        );
        assert_eq!(
            parse(&["--auto-compaction-retention", "30m"]),
            Ok(Some(AutoCompaction::Periodic(Duration::from_secs(1800))))
        );
        assert_eq!(
            parse(&[
                "--auto-compaction-mode",
                "revision",
                "--auto-compaction-retention",
                "1000"
            ]),
            Ok(Some(AutoCompaction::Revision(1000)))
        );
        assert!(parse(&[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "1h"
        ])
        .is_err());
        assert!(parse(&[
            "--auto-compaction-mode",
            "daily",
            "--auto-compaction-retention",
            "1"
        ])
        .is_err());
        let (f, _) = from_yaml("auto-compaction-mode: revision\nauto-compaction-retention: 500\n")
            .expect("yaml");
        assert_eq!(
            to_config(&f).map(|c| c.auto_compaction),
            Ok(Some(AutoCompaction::Revision(500)))
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
        // Too long for a Duration: refused, not a panic.
        assert!(parse_duration("99999999999999999999999h").is_err());
    }
}
