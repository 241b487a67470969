//! Cairn: an etcd-compatible key-value store, embeddable as a library.
//!
//! Not built yet: the Raft wiring, the etcd gRPC services and the `cairn`
//! binary land on top of the storage engines [`cairn_kv`] and
//! [`cairn_raft_log`], which are complete.

pub use cairn_kv as kv;
pub use cairn_proto as proto;
pub use cairn_raft_log as raft_log;
