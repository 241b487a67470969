//! The messages a member sends the leader on a client's behalf, over the
//! peer network: writes, read indexes for linearizable reads, membership
//! changes, lease renewals and time-to-live questions. A client may talk
//! to any member; the member forwards inside the cluster. The member's
//! side that serves them implements [`ForwardHandler`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::raft::{Command, CommandResponse, Member};

/// A membership change as the leader carries it out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Adds a member (as a learner first; a voter is promoted once caught up).
    Add {
        /// The new member's id.
        id: u64,
        /// Its URLs and whether it stays a learner.
        member: Member,
    },
    /// Removes a member.
    Remove {
        /// The member's id.
        id: u64,
    },
    /// Makes a learner a voter.
    Promote {
        /// The learner's id.
        id: u64,
    },
    /// Replaces a member's peer URLs.
    UpdatePeerUrls {
        /// The member's id.
        id: u64,
        /// Its new peer URLs.
        peer_urls: Vec<String>,
    },
    /// A member publishes its name and client URLs (etcd's publish at start).
    Publish {
        /// The member's id.
        id: u64,
        /// Its name.
        name: String,
        /// Its client URLs.
        client_urls: Vec<String>,
    },
}

/// A request forwarded to the leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// A command to replicate.
    Write(Command),
    /// The leader's read index, after confirming its leadership.
    ReadIndex,
    /// A membership change.
    Membership(MembershipChange),
    /// The cluster id and members, for a member joining a running cluster.
    ClusterInfo,
    /// A keep-alive of a lease (only the leader renews).
    LeaseRenew(i64),
    /// A lease's remaining time (only the leader knows it).
    LeaseTimeToLive {
        /// The lease.
        id: i64,
        /// Whether to list its keys.
        keys: bool,
    },
    /// The receiver's HashKV up to `revision`, or up to its current
    /// revision if that is lower (any member answers; members' hashes are
    /// compared to find a corrupt one).
    HashKv {
        /// Hash the history up to this revision.
        revision: i64,
    },
}

/// A lease's time to live as the leader answers it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimeToLive {
    /// The lease.
    pub id: i64,
    /// Seconds left; −1 if there is no such lease.
    pub ttl: i64,
    /// The TTL it was granted with.
    pub granted_ttl: i64,
    /// Its keys, when asked for.
    pub keys: Vec<Vec<u8>>,
}

/// The leader's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardResponse {
    /// What applying a forwarded write answered.
    Write(CommandResponse),
    /// The leader's read index.
    ReadIndex(u64),
    /// The membership change is committed.
    Membership,
    /// The cluster as the leader sees it.
    ClusterInfo {
        /// The cluster's id.
        cluster_id: u64,
        /// Every member.
        members: Vec<(u64, Member)>,
        /// Log index of the membership the list comes from.
        membership_index: u64,
    },
    /// The TTL a renewed lease has now; 0 if there is no such lease.
    LeaseRenewed(i64),
    /// A lease's time to live.
    LeaseTimeToLive(TimeToLive),
    /// The receiver's HashKV.
    HashKv {
        /// The hash.
        hash: u32,
        /// The receiver's compaction revision.
        compact_revision: i64,
        /// The revision hashed up to.
        revision: i64,
    },
    /// The receiver is not the leader (nothing was proposed); ask again.
    NotLeader,
    /// The request failed on the leader.
    Error(Error),
}

/// Why a forwarded request got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardError {
    /// It never reached the peer (no connection, or the pipe closed
    /// before it was sent): safe to send again.
    NotSent(String),
    /// It went out and the answer was lost: it may have been carried out.
    Lost(String),
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardError::NotSent(why) => write!(f, "not sent to the leader: {why}"),
            ForwardError::Lost(why) => write!(f, "forwarded request lost: {why}"),
        }
    }
}

/// Serves forwarded requests (the member's side of `Peer.Forward`).
#[tonic::async_trait]
pub trait ForwardHandler: Send + Sync + 'static {
    /// Serves one request.
    async fn handle(&self, req: ForwardRequest) -> ForwardResponse;

    /// Serves forwarded kv writes (puts, deletes, txns; see
    /// [`crate::raft::batchable`]) proposed together as one entry: one
    /// answer per write, in order.
    async fn handle_writes(&self, cmds: Vec<Command>) -> Vec<ForwardResponse>;
}
