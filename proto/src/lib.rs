//! etcd's v3 API as Rust types, with tonic server and client stubs.
//!
//! The package layout follows etcd's protobuf packages so that gRPC paths
//! (`/etcdserverpb.KV/Range`, …) and message names match etcd byte for byte:
//!
//! - [`mvccpb`]: `KeyValue` and watch `Event`.
//! - [`authpb`]: users, roles and permissions.
//! - [`etcdserverpb`]: every request/response and the `KV`, `Watch`, `Lease`,
//!   `Cluster`, `Maintenance` and `Auth` services.
//! - [`cairnpb`]: Cairn's own messages: the commands written to the Raft
//!   log and the peer-to-peer service between members.
//!
//! `bytes` fields are generated as [`prost::bytes::Bytes`], so keys and
//! values move between the network and the store without copies.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

/// etcd's `mvccpb` package: key-value records and watch events.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd's `authpb` package: auth records.
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// etcd's `etcdserverpb` package: the client-facing gRPC API.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// Cairn's own package: Raft log commands and the peer service.
pub mod cairnpb {
    tonic::include_proto!("cairnpb");
}

pub use prost;
pub use tonic;
