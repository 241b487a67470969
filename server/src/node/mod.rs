//! A Cairn member: storage, Raft, the peer service, and the operations the
//! in-process [`crate::Client`] (and through it the gRPC services) are
//! built on. One file per duty:
//!
//! - `start`: opening the data dir, bringing up storage, Raft and the
//!   peer service, bootstrapping or joining ([`Node::start`]);
//!   `identity`: the member and cluster ids and the identity file.
//! - `route`: who leads, and the one routine that runs a request on the
//!   leader, here or forwarded.
//! - `write`: the durable-write path (every command goes through it);
//!   `propose`: concurrent writes proposed together as one entry.
//! - `read`: linearizable reads (read index, then wait for the apply).
//! - `membership`: members, etcd's member changes and the duties that
//!   follow the membership.
//! - `lease`: the lease calls and the leader's lease duty.
//! - `forwarded`: serving what other members forward to the leader.
//! - `shutdown`: stopping, with leadership handed over first.
//!
//! Nothing here speaks gRPC to clients or spells an etcd message: errors
//! are [`crate::Error`]s.
//!
//! # Data directory
//!
//! ```text
//! <data-dir>/member/cluster   identity: cluster id, member id, name (JSON)
//! <data-dir>/member/wal/      the Raft log (cairn-raft-log)
//! <data-dir>/member/kv/       the MVCC store (cairn-kv over fjall or sled)
//! <data-dir>/member/snap/     a snapshot being received from the leader
//! ```
//!
//! The identity file is written (durably, by rename) only once the member
//! has bootstrapped or joined, so a failed first start leaves nothing that
//! a second start would trust. A data dir that is not empty but has no
//! identity file is refused, never overwritten.

mod backups;
mod compactor;
mod corruption;
mod forwarded;
pub mod identity;
mod leadership;
mod lease;
mod membership;
mod propose;
mod read;
mod recover;
mod route;
mod shutdown;
mod space;
mod start;
mod token_key;
mod write;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_kv::Store;
use cairn_proto::etcdserverpb as pb;
use openraft::rt::WatchReceiver;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, GRPC_OVERHEAD_BYTES};
use crate::error::Error;
use crate::lease::{IdGen, Lessor};
use crate::raft::log_store::LogStore;
use crate::raft::network::Peers;
use crate::raft::Raft;
use crate::watch::EventSender;
use propose::Proposer;

pub use identity::member_id;
pub use membership::MemberInfo;
pub(crate) use start::resolve;
pub use start::StartError;
pub use write::apply_result;

/// How long a client request may wait for a leader or for its commit.
fn request_timeout(cfg: &Config) -> Duration {
    // etcd: 5 s plus twice the election timeout.
    Duration::from_millis(5000 + 2 * cfg.election_timeout)
}

/// A running member. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The last log index when this process started (see `read_index`).
    startup_last_log: u64,
    pub id: u64,
    pub cluster_id: u64,
    pub config: Config,
    pub raft: Raft,
    pub store: Arc<Store>,
    /// Applied events, for watches.
    pub events: EventSender,
    pub log: LogStore,
    pub peers: Peers,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    /// Set once another member showed a newer membership without us.
    removed: AtomicBool,
    shutting_down: AtomicBool,
    /// When an AppendEntries from a current leader last arrived.
    leader_contact: Arc<Mutex<Option<Instant>>>,
    /// True once this member's name and client URLs are in the membership.
    ready: watch::Sender<bool>,
    /// Lease deadlines (the leader's).
    pub(crate) lessor: Arc<Lessor>,
    /// Ids for leases granted without one.
    pub(crate) lease_ids: IdGen,
    /// Proposes this member's clients' kv writes while it leads.
    proposer: Proposer,
    /// Users, roles and tokens, as applied so far.
    pub(crate) auth: Arc<crate::auth::Auth>,
    /// The cluster's raised alarms (shared with the state machine).
    pub(crate) alarms: Arc<crate::alarm::Alarms>,
    /// This member's space quota.
    pub(crate) quota: crate::alarm::Quota,
    /// Free space on the data dir's disk.
    pub(crate) disk: crate::alarm::DiskRoom,
    /// This member's metrics.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

/// Raft state as etcd's Status reports it.
#[derive(Clone, Debug, Default)]
pub struct RaftStatus {
    /// The leader this member is in touch with; 0 if none.
    pub leader: u64,
    /// The current term.
    pub term: u64,
    /// The last log index.
    pub raft_index: u64,
    /// The last applied index.
    pub applied_index: u64,
    /// Whether this member is not a voter.
    pub is_learner: bool,
}

impl Node {
    /// This member's id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster_id
    }

    /// The member's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A typed in-process client (no gRPC).
    pub fn client(&self) -> crate::Client {
        crate::Client::new(self.clone())
    }

    /// Waits until the cluster has a leader, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, Error> {
        match self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "leader")
            .await
        {
            Ok(m) => Ok(m.current_leader.unwrap_or(0)),
            Err(_) => Err(Error::NoLeader),
        }
    }

    /// Stops the member: hands leadership to another voter if it leads,
    /// stops Raft and the peer service, and flushes the store.
    pub async fn shutdown(&self) {
        self.inner.shutdown().await;
    }

    /// Waits until this member has published its name and client URLs to
    /// the cluster (which needs a quorum), as etcd does before it serves
    /// clients.
    pub async fn wait_ready(&self) {
        let mut rx = self.inner.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// True once this member has been removed from the cluster.
    pub fn is_removed(&self) -> bool {
        self.inner.is_removed()
    }

    /// Fails with [`Error::NoLeader`] unless a leader is known.
    pub fn require_leader(&self) -> Result<(), Error> {
        self.inner.require_leader()
    }

    /// The gRPC receive limit for client requests.
    pub fn max_recv_bytes(&self) -> usize {
        self.inner.max_recv_bytes()
    }

    /// This member's metrics.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.inner.metrics
    }

    /// The member's state for `/metrics`, read now.
    pub fn metrics_snapshot(&self) -> crate::metrics::Snapshot {
        let inner = &self.inner;
        let m = inner.raft.metrics().borrow_watched().clone();
        let leader = inner.leader();
        let size = inner.quota.size();
        crate::metrics::Snapshot {
            has_leader: leader.is_some(),
            is_leader: leader == Some(inner.id),
            committed: m.local_committed.map_or(0, |l| l.index),
            applied: m.last_applied.map_or(0, |l| l.index),
            pending: inner.proposer.pending() as i64,
            quota_bytes: inner.quota.bytes,
            db_size: size,
            db_size_in_use: size,
            keys: inner.store.key_count() as u64,
            revision: inner.store.current_revision(),
            compacted: inner.store.compacted_revision(),
        }
    }
}

impl Inner {
    fn push_task(&self, t: JoinHandle<()>) {
        if let Ok(mut v) = self.tasks.lock() {
            v.push(t);
        }
    }

    pub fn timeout(&self) -> Duration {
        request_timeout(&self.config)
    }

    /// The gRPC receive limit for client requests.
    pub fn max_recv_bytes(&self) -> usize {
        self.config.max_request_bytes + GRPC_OVERHEAD_BYTES
    }
    pub fn raft_status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let is_voter = self.voters().contains(&self.id);
        RaftStatus {
            leader: self.leader().unwrap_or(0),
            term: m.current_term,
            raft_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            is_learner: !is_voter,
        }
    }

    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.id,
            revision,
            raft_term: self.raft.metrics().borrow_watched().current_term,
        }
    }

    fn spawn_background(self: &Arc<Self>) {
        let t = tokio::spawn(Arc::clone(self).run_lessor(self.stop.subscribe()));
        self.push_task(t);
        let t = tokio::spawn(Arc::clone(self).sample_size(self.stop.subscribe()));
        self.push_task(t);
        let t = tokio::spawn(Arc::clone(self).follow_leadership(self.stop.subscribe()));
        self.push_task(t);
        let t = tokio::spawn(Arc::clone(self).ensure_token_key(self.stop.subscribe()));
        self.push_task(t);
        if self.disk.reserve > 0 {
            let t = tokio::spawn(Arc::clone(self).watch_disk(self.stop.subscribe()));
            self.push_task(t);
        }
        if let Some(every) = self.config.corrupt_check_every {
            let t = tokio::spawn(Arc::clone(self).run_corrupt_check(every, self.stop.subscribe()));
            self.push_task(t);
        }
        if let Some(mode) = self.config.auto_compaction {
            let t = tokio::spawn(Arc::clone(self).run_auto_compaction(mode, self.stop.subscribe()));
            self.push_task(t);
        }
        if let Some(every) = self.config.backups.every {
            let t = tokio::spawn(Arc::clone(self).run_backups(every, self.stop.subscribe()));
            self.push_task(t);
        }
        self.spawn_membership_tasks();
    }
}
