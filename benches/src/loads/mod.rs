//! The loads, one per file. Each builds its clients, runs them through
//! [`crate::runner`] (or its own loop where the shape is not
//! closed-loop requests) and returns a [`Report`].

use anyhow::Result;
use clap::Subcommand;

use crate::options::Common;
use crate::report::Report;

pub mod big_range;
pub mod k8s;
pub mod lease;
pub mod put;
pub mod range;
pub mod revoke;
pub mod snapshot;
pub mod txn;
pub mod watch;
pub mod windows;

/// A load and its own flags.
#[derive(Subcommand, Clone, Debug)]
pub enum Load {
    /// Single-key puts.
    Put,
    /// Reads: single keys from the key space, or whole prefix lists.
    Range(range::Args),
    /// Transactions of puts (no compares).
    TxnPut(txn::Args),
    /// Put-to-event delay seen by many watchers of one key.
    WatchLatency(watch::Args),
    /// Keep-alive round trips, one lease per client.
    LeaseKeepalive,
    /// A mix shaped like kube-apiserver's traffic.
    K8s(k8s::Args),
    /// Put latency before and while a lease with many keys is revoked.
    LeaseRevoke(revoke::Args),
    /// Put latency and server memory before and while a snapshot is
    /// streamed (`etcdctl snapshot save`).
    SnapshotSave(snapshot::Args),
    /// Server memory while one very large prefix is read whole.
    BigRange(big_range::Args),
}

impl Load {
    pub fn name(&self) -> &'static str {
        match self {
            Load::Put => "put",
            Load::Range(_) => "range",
            Load::TxnPut(_) => "txn-put",
            Load::WatchLatency(_) => "watch-latency",
            Load::LeaseKeepalive => "lease-keepalive",
            Load::K8s(_) => "k8s",
            Load::LeaseRevoke(_) => "lease-revoke",
            Load::SnapshotSave(_) => "snapshot-save",
            Load::BigRange(_) => "big-range",
        }
    }

    /// Runs the load against `c.endpoints`.
    pub async fn run(&self, c: &Common) -> Result<Report> {
        c.validate()?;
        match self {
            Load::Put => put::run(c).await,
            Load::Range(a) => range::run(c, a).await,
            Load::TxnPut(a) => txn::run(c, a).await,
            Load::WatchLatency(a) => watch::run(c, a).await,
            Load::LeaseKeepalive => lease::run(c).await,
            Load::K8s(a) => k8s::run(c, a).await,
            Load::LeaseRevoke(a) => revoke::run(c, a).await,
            Load::SnapshotSave(a) => snapshot::run(c, a).await,
            Load::BigRange(a) => big_range::run(c, a).await,
        }
    }
}
