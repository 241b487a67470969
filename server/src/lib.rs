//! Cairn: an etcd-compatible key-value store, embeddable as a library.
//!
//! Modules:
//! - [`raft`]: openraft's type configuration and the adapters over Cairn's
//!   storage engines ([`cairn_kv`], [`cairn_raft_log`]).
//!
//! Under construction: the etcd gRPC services and the `cairn` binary.

pub mod convert;
pub mod raft;
pub mod status;

pub use cairn_kv as kv;
pub use cairn_proto as proto;
pub use cairn_raft_log as raft_log;
