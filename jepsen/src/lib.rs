//! Fault-injection testing of real Cairn clusters, the way Jepsen does it.
//!
//! - [`net`]: a network namespace per member behind a bridge, and the
//!   firewall rules that cut it.
//! - [`delay`]: added latency, packets held in a netfilter queue.
//! - [`cluster`]: real `cairn` processes in those namespaces; kill,
//!   restart, pause, resume, find the leader.
//! - [`client`]: an etcd v3 client with a timeout per operation.
//! - [`workload`]: the register and watch workloads.
//! - [`nemesis`]: faults at random intervals, healed at the end.
//! - [`history`]: the record of a run (invocations, completions, faults).
//! - [`checker`]: linearizability of registers, and watch guarantees.
//! - [`report`]: summary table, JSON, latency plot.
//! - [`run`]: one run from start to verdict.

pub mod checker;
pub mod client;
pub mod cluster;
pub mod delay;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod report;
pub mod run;
pub mod workload;

/// Finds `name` on PATH (or in /usr/sbin, /sbin, /usr/bin).
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin"])
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}
