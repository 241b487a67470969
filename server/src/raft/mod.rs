//! Raft wiring: openraft's type configuration, the adapters that put
//! Cairn's storage engines under it, and the peer transport. Nothing here
//! knows of watches, leases' deadlines or gRPC clients: what the state
//! machine applies goes out through [`apply::ApplyObserver`], and what
//! other members forward is served by a [`forward::ForwardHandler`] the
//! node provides.
//!
//! - [`log_store`]: `RaftLogStorage` over `cairn-raft-log`.
//! - [`state_machine`]: `RaftStateMachine` over `cairn-kv`.
//! - [`apply`]: the observer the state machine tells what it applied.
//! - [`network`]: the peer RPCs over gRPC; replication runs as a pipeline
//!   over one stream per follower (`append_stream`), on a plain TCP
//!   connection to the peer port where the follower speaks it
//!   (`append_wire`), heartbeats over a long-lived stream of their own
//!   (`heartbeat`), forwarded requests in batches over one stream per
//!   member ([`forward_stream`]).
//! - [`forward`]: the messages forwarded to the leader, typed.

mod append_stream;
pub(crate) mod append_wire;
pub mod apply;
#[cfg(test)]
mod decode_fuzz;
pub mod forward;
pub mod forward_stream;
mod heartbeat;
pub mod log_store;
pub mod network;
pub mod snapshot;
pub mod state_machine;

use std::fmt;
use std::io::Cursor;

use cairn_proto::cairnpb;
use prost::Message;
use serde::{Deserialize, Serialize};

/// A member as Raft knows it: its name and URLs (etcd's `Member`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its name (empty until it publishes it).
    pub name: String,
    /// Where its peers reach it.
    pub peer_urls: Vec<String>,
    /// Where clients reach it (empty until it publishes them).
    pub client_urls: Vec<String>,
    /// Added as a learner (etcd's `--learner`): stays one until promoted.
    /// A member added as a voter is a Raft learner only until it catches
    /// up, then the leader promotes it.
    pub learner: bool,
}

/// A command in the Raft log: a protobuf [`cairnpb::Command`], carried as
/// its encoded bytes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Command(pub cairnpb::Command);

/// What applying a command answered: a protobuf
/// [`cairnpb::CommandResponse`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommandResponse(pub cairnpb::CommandResponse);

/// Largest peer message accepted (entries batches, snapshot chunks).
pub const MAX_PEER_MESSAGE: usize = 64 << 20;

/// Most bytes of writes proposed as one entry (a write larger than this
/// goes alone).
pub const MAX_ENTRY_BYTES: usize = 512 * 1024;

/// Most writes proposed as one entry.
pub const MAX_ENTRY_WRITES: usize = 256;

/// Whether `cmd` may go into a [`cairnpb::CommandBatch`]: a put, delete
/// or txn.
pub fn batchable(cmd: &cairnpb::Command) -> bool {
    use cairnpb::command::Op;
    matches!(cmd.op, Some(Op::Put(_) | Op::DeleteRange(_) | Op::Txn(_)))
}

macro_rules! protobuf_serde {
    ($t:ident, $inner:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0.encode_to_vec())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw: Vec<u8> = serde_bytes_vec(d)?;
                <$inner>::decode(Cursor::new(raw))
                    .map($t)
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

fn serde_bytes_vec<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = a.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_bytes(V)
}

protobuf_serde!(Command, cairnpb::Command);
protobuf_serde!(CommandResponse, cairnpb::CommandResponse);

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use cairnpb::command::Op;
        match &self.0.op {
            Some(Op::Put(p)) => write!(f, "put {:?}", p.key),
            Some(Op::DeleteRange(d)) => write!(f, "delete {:?}..{:?}", d.key, d.range_end),
            Some(Op::Txn(t)) => write!(f, "txn ({} compares)", t.compare.len()),
            Some(Op::Compact(c)) => write!(f, "compact {}", c.revision),
            Some(Op::LeaseGrant(g)) => write!(f, "lease grant {:x} ttl {}", g.id, g.ttl),
            Some(Op::LeaseRevoke(r)) => write!(f, "lease revoke {:x}", r.id),
            Some(Op::LeaseCheckpoint(c)) => {
                write!(f, "lease checkpoint ({} leases)", c.checkpoints.len())
            }
            Some(Op::Batch(b)) => write!(f, "batch of {} writes", b.commands.len()),
            Some(Op::Auth(_)) => f.write_str("auth change"),
            Some(Op::Alarm(a)) => write!(f, "alarm {} {} of {:x}", a.action, a.alarm, a.member_id),
            None => f.write_str("empty"),
        }
    }
}

openraft::declare_raft_types!(
    /// Cairn's openraft configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = Member,
        // etcd's Raft: one leader per term, so a log id is (term, index).
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

/// Shorthands for openraft types under [`TypeConfig`].
/// A log position: (term, index).
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A vote: term, candidate, committed.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A log entry.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A membership and the log id it was stored at.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// What a snapshot covers.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// The Raft node of a member.
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachine>;

/// postcard encoding of a serde value, for what Cairn stores or sends.
pub(crate) fn encode<T: Serialize>(v: &T) -> std::io::Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(std::io::Error::other)
}

/// Decodes [`encode`]'s output.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> std::io::Result<T> {
    postcard::from_bytes(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
