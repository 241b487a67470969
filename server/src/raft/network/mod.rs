//! The peer network: openraft's RPCs over gRPC (`cairnpb.Peer`), except
//! the append streams of replication, which go over plain TCP connections
//! to the same peer port where the follower speaks that
//! (`append_wire`; over gRPC otherwise).
//!
//! Each openraft message is postcard-encoded into a `RaftMessage`. Every
//! call carries the sender's cluster id in the `cairn-cluster-id` metadata
//! and a member refuses calls from another cluster, so two clusters that
//! share addresses never mix logs.
//!
//! Snapshots travel as a client stream: a header (vote and snapshot meta),
//! then the image in chunks as the leader exports it from its store,
//! written by the receiver to a temporary file under its snapshot
//! directory and installed once complete. Neither side holds the whole
//! image in memory.
//!
//! Files: [`peers`] (the channels to other members, and forwarding
//! requests to the leader), [`connection`] (openraft's connection to one
//! follower: appends, votes, heartbeats, snapshots), [`service`] (the
//! `cairnpb.Peer` service a member serves).

pub mod connection;
pub mod peers;
pub mod service;

use serde::{Deserialize, Serialize};

use super::{SnapshotMeta, Vote};

pub use self::connection::PeerConnection;
pub use self::peers::Peers;
pub use self::service::PeerService;
pub use super::MAX_PEER_MESSAGE;

/// Metadata key carrying the sender's cluster id.
pub const CLUSTER_ID_HEADER: &str = "cairn-cluster-id";

/// Size of one snapshot chunk on the wire.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// The first message of a snapshot stream.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotHeader {
    vote: Vote,
    meta: SnapshotMeta,
}
