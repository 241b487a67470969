//! Requests a member sends to the leader on a client's behalf: writes,
//! read indexes for linearizable reads, and membership changes. A client
//! may talk to any member; the member forwards inside the cluster.

use cairn_proto::cairnpb;
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

use crate::raft::{Command, CommandResponse, Member};

/// A membership change as the leader carries it out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Adds a member (as a learner first; a voter is promoted once caught up).
    Add {
        id: u64,
        member: Member,
    },
    Remove {
        id: u64,
    },
    Promote {
        id: u64,
    },
    /// Replaces a member's peer URLs.
    UpdatePeerUrls {
        id: u64,
        peer_urls: Vec<String>,
    },
    /// A member publishes its name and client URLs (etcd's publish at start).
    Publish {
        id: u64,
        name: String,
        client_urls: Vec<String>,
    },
}

/// A request forwarded to the leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardRequest {
    Write(Command),
    /// The leader's read index, after confirming its leadership.
    ReadIndex,
    Membership(MembershipChange),
    /// The cluster id and members, for a member joining a running cluster.
    ClusterInfo,
    /// A keep-alive of a lease (only the leader renews).
    LeaseRenew(i64),
    /// A lease's remaining time (only the leader knows it).
    LeaseTimeToLive {
        id: i64,
        keys: bool,
    },
}

/// A gRPC status as it crosses the peer network.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireStatus {
    pub code: i32,
    pub message: String,
}

impl From<&Status> for WireStatus {
    fn from(s: &Status) -> Self {
        Self {
            code: s.code() as i32,
            message: s.message().to_string(),
        }
    }
}

impl From<WireStatus> for Status {
    fn from(w: WireStatus) -> Self {
        Status::new(Code::from_i32(w.code), w.message)
    }
}

/// The leader's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardResponse {
    Write(CommandResponse),
    ReadIndex(u64),
    Membership,
    ClusterInfo {
        cluster_id: u64,
        members: Vec<(u64, Member)>,
        /// Log index of the membership the list comes from.
        membership_index: u64,
    },
    /// The TTL a renewed lease has now; 0 if there is no such lease.
    LeaseRenewed(i64),
    LeaseTimeToLive(crate::lease::WireTimeToLive),
    /// The receiver is not the leader (nothing was proposed); ask again.
    NotLeader,
    Error(WireStatus),
}

/// Serves forwarded requests (the member's side of `Peer.Forward`).
#[tonic::async_trait]
pub trait ForwardHandler: Send + Sync + 'static {
    async fn handle(&self, req: ForwardRequest) -> ForwardResponse;

    /// Serves forwarded kv writes (puts, deletes, txns; see
    /// [`crate::propose::batchable`]) proposed together as one entry: one
    /// answer per write, in order.
    async fn handle_writes(&self, cmds: Vec<Command>) -> Vec<ForwardResponse>;
}

/// Unwraps an apply result into the response or etcd's status.
pub fn apply_result(
    r: cairnpb::CommandResponse,
) -> Result<cairnpb::command_response::Result, Status> {
    match r.result {
        Some(cairnpb::command_response::Result::Error(e)) => {
            Err(crate::status::from_apply_error(&e))
        }
        Some(other) => Ok(other),
        None => Err(Status::internal("empty apply result")),
    }
}
