//! The etcd 3.4 and 3.5 flags that `cairn` takes without acting on them,
//! so that a command line or config file written for etcd starts Cairn
//! unchanged. Each one given is logged once at start with what Cairn does
//! instead. A few values that would make Cairn do something other than
//! the operator asked (bootstrap by discovery, run as a v2 proxy) are
//! refused instead.

use clap::{Arg, ArgAction, ArgMatches, Command};

/// One etcd flag Cairn accepts without effect.
struct Inert {
    /// The flag's name, without dashes (also its config file key).
    name: &'static str,
    /// What Cairn does instead.
    why: &'static str,
}

const fn inert(name: &'static str, why: &'static str) -> Inert {
    Inert { name, why }
}

const NO_V2: &str = "Cairn serves etcd's v3 API only (no v2 API, store or proxy)";
const OWN_STORAGE: &str =
    "Cairn's Raft log and store manage their own files, batching and retention";
const NO_PROXY: &str = "Cairn has no v2 proxy mode";
const LOGS: &str = "Cairn logs to stderr; --log-level sets how much";

/// Every flag accepted without effect, with the reason logged.
const INERT: &[Inert] = &[
    // Member.
    inert(
        "wal-dir",
        "Cairn keeps its Raft log in <data-dir>/member/wal",
    ),
    inert("max-snapshots", OWN_STORAGE),
    inert("max-wals", OWN_STORAGE),
    inert("backend-batch-interval", OWN_STORAGE),
    inert("backend-batch-limit", OWN_STORAGE),
    inert("backend-bbolt-freelist-type", OWN_STORAGE),
    inert("experimental-backend-bbolt-freelist-type", OWN_STORAGE),
    inert("experimental-compaction-batch-limit", OWN_STORAGE),
    inert("experimental-compaction-sleep-interval", OWN_STORAGE),
    inert(
        "experimental-bootstrap-defrag-threshold-megabytes",
        OWN_STORAGE,
    ),
    inert("experimental-memory-mlock", OWN_STORAGE),
    inert(
        "unsafe-no-fsync",
        "Cairn always syncs its Raft log before it acknowledges a write",
    ),
    inert(
        "experimental-txn-mode-write-with-shared-buffer",
        "Cairn's transactions have no such mode",
    ),
    inert(
        "experimental-stop-grpc-service-on-defrag",
        "Cairn's defragment is online: clients are served meanwhile",
    ),
    inert(
        "grpc-keepalive-min-time",
        "Cairn answers client pings at any rate",
    ),
    inert("socket-reuse-port", "Cairn's listeners use the defaults"),
    inert("socket-reuse-address", "Cairn's listeners use the defaults"),
    inert(
        "raft-read-timeout",
        "Cairn's peer connections are kept alive by HTTP/2 pings",
    ),
    inert(
        "raft-write-timeout",
        "Cairn's peer connections are kept alive by HTTP/2 pings",
    ),
    inert(
        "listen-client-http-urls",
        "Cairn serves HTTP on the client and metrics URLs",
    ),
    inert(
        "enable-grpc-gateway",
        "Cairn always serves its JSON gateway on the client URLs",
    ),
    // Clustering.
    inert(
        "strict-reconfig-check",
        "Cairn's checks on membership changes are fixed",
    ),
    inert("pre-vote", "Cairn's Raft elections have no pre-vote phase"),
    inert(
        "initial-election-tick-advance",
        "Cairn's elections are timed by --heartbeat-interval and --election-timeout only",
    ),
    inert(
        "experimental-max-learners",
        "Cairn does not bound the number of learners",
    ),
    inert(
        "experimental-wait-cluster-ready-timeout",
        "Cairn serves once this member has published itself",
    ),
    inert(
        "experimental-downgrade-check-time",
        "Cairn has no downgrade protocol",
    ),
    inert("enable-v2", NO_V2),
    inert("experimental-enable-v2v3", NO_V2),
    inert("v2-deprecation", NO_V2),
    inert(
        "experimental-compact-hash-check-enabled",
        "Cairn compares members' hashes with --experimental-corrupt-check-time",
    ),
    inert(
        "experimental-compact-hash-check-time",
        "Cairn compares members' hashes with --experimental-corrupt-check-time",
    ),
    inert(
        "experimental-enable-lease-checkpoint-persist",
        "Cairn always persists lease checkpoints",
    ),
    inert(
        "experimental-warning-apply-duration",
        "Cairn does not log slow applies",
    ),
    inert(
        "experimental-warning-unary-request-duration",
        "Cairn does not log slow requests",
    ),
    inert(
        "experimental-peer-skip-client-san-verification",
        "Cairn does not match a peer's client certificate against its address",
    ),
    // Security.
    inert(
        "client-cert-file",
        "Cairn does not dial its own client port",
    ),
    inert("client-key-file", "Cairn does not dial its own client port"),
    inert(
        "peer-client-cert-file",
        "a member presents --peer-cert-file when it dials its peers",
    ),
    inert(
        "peer-client-key-file",
        "a member presents --peer-cert-file when it dials its peers",
    ),
    inert(
        "self-signed-cert-validity",
        "automatic TLS certificates are valid for one year",
    ),
    inert("cors", "Cairn's HTTP endpoints set no cross-origin headers"),
    inert(
        "host-whitelist",
        "Cairn's HTTP endpoints do not check the Host header",
    ),
    // Profiling, monitoring and logs.
    inert("enable-pprof", "Cairn has no profiling endpoint"),
    inert(
        "metrics",
        "Cairn's /metrics always has the gRPC histograms ('extensive')",
    ),
    inert("logger", LOGS),
    inert("log-outputs", LOGS),
    inert("log-package-levels", LOGS),
    inert("enable-log-rotation", LOGS),
    inert("log-rotation-config-json", LOGS),
    inert(
        "experimental-enable-distributed-tracing",
        "Cairn has no tracing export",
    ),
    inert(
        "experimental-distributed-tracing-address",
        "Cairn has no tracing export",
    ),
    inert(
        "experimental-distributed-tracing-service-name",
        "Cairn has no tracing export",
    ),
    inert(
        "experimental-distributed-tracing-instance-id",
        "Cairn has no tracing export",
    ),
    inert(
        "experimental-distributed-tracing-sampling-rate",
        "Cairn has no tracing export",
    ),
    // The v2 proxy and discovery, when off or empty.
    inert("proxy", NO_PROXY),
    inert("proxy-failure-wait", NO_PROXY),
    inert("proxy-refresh-interval", NO_PROXY),
    inert("proxy-dial-timeout", NO_PROXY),
    inert("proxy-write-timeout", NO_PROXY),
    inert("proxy-read-timeout", NO_PROXY),
    inert("discovery", "Cairn bootstraps from --initial-cluster"),
    inert("discovery-srv", "Cairn bootstraps from --initial-cluster"),
    inert(
        "discovery-srv-name",
        "Cairn bootstraps from --initial-cluster",
    ),
    inert(
        "discovery-fallback",
        "Cairn bootstraps from --initial-cluster",
    ),
    inert("discovery-proxy", "Cairn bootstraps from --initial-cluster"),
];

/// The environment variable etcd reads for flag `name`.
fn env_name(name: &str) -> String {
    format!("ETCD_{}", name.replace('-', "_").to_uppercase())
}

/// `cmd` with every inert flag added: hidden from `--help`, any value, a
/// bare flag meaning "true", and etcd's environment variable.
pub fn register(cmd: Command) -> Command {
    INERT.iter().fold(cmd, |cmd, f| {
        cmd.arg(
            Arg::new(f.name)
                .long(f.name)
                // Once per process, a few dozen short names.
                .env(&*Box::leak(env_name(f.name).into_boxed_str()))
                .num_args(0..=1)
                .default_missing_value("true")
                .action(ArgAction::Set)
                .hide(true),
        )
    })
}

/// An inert flag as given: its name and value.
pub type Given = (&'static str, String);

/// The inert flags set on the command line or in the environment.
pub fn given(m: &ArgMatches) -> Vec<Given> {
    INERT
        .iter()
        .filter_map(|f| m.get_one::<String>(f.name).map(|v| (f.name, v.clone())))
        .collect()
}

/// Takes an etcd config file's inert keys out of `map`, leaving the keys
/// Cairn acts on.
pub fn take_from_yaml(map: &mut serde_yaml_ng::Mapping) -> Vec<Given> {
    let mut out = Vec::new();
    for f in INERT {
        if let Some(v) = map.remove(f.name) {
            let text = match v {
                serde_yaml_ng::Value::Null => String::new(),
                serde_yaml_ng::Value::Bool(b) => b.to_string(),
                serde_yaml_ng::Value::Number(n) => n.to_string(),
                serde_yaml_ng::Value::String(s) => s,
                other => serde_yaml_ng::to_string(&other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            };
            out.push((f.name, text));
        }
    }
    out
}

/// Refuses the values that would have etcd do something Cairn cannot:
/// bootstrap through a discovery service, or run as a proxy.
pub fn check(given: &[Given]) -> Result<(), String> {
    for (name, value) in given {
        let v = value.trim();
        let refused = match *name {
            "discovery" | "discovery-srv" => !v.is_empty(),
            "proxy" => !v.is_empty() && v != "off",
            _ => false,
        };
        if refused {
            let why = INERT.iter().find(|f| f.name == *name).map_or("", |f| f.why);
            return Err(format!("--{name}={v} is not supported: {why}"));
        }
    }
    Ok(())
}

/// Logs each inert flag given, once, with what Cairn does instead.
pub fn log(given: &[Given]) {
    for (name, value) in given {
        if let Some(f) = INERT.iter().find(|f| f.name == *name) {
            tracing::warn!("--{name}={value} has no effect: {}", f.why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inert_flag_is_distinct() {
        let mut names: Vec<_> = INERT.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "an inert flag is listed twice");
    }

    #[test]
    fn discovery_and_proxy_are_refused_only_when_asked_for() {
        assert!(check(&[("discovery", String::new()), ("proxy", "off".into())]).is_ok());
        let e = check(&[("discovery", "https://discovery.etcd.io/x".into())]).unwrap_err();
        assert!(e.contains("--initial-cluster"), "{e}");
        assert!(check(&[("proxy", "on".into())]).is_err());
        assert!(check(&[("discovery-srv", "example.com".into())]).is_err());
        assert!(check(&[("enable-v2", "true".into())]).is_ok());
    }
}
