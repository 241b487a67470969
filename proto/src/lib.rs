//! etcd's v3 API as Rust types, with tonic server and client stubs.
//!
//! The package layout follows etcd's protobuf packages so that gRPC paths
//! (`/etcdserverpb.KV/Range`, …) and message names match etcd byte for byte:
//!
//! - [`mvccpb`]: `KeyValue` and watch `Event`.
//! - [`authpb`]: users, roles and permissions.
//! - [`etcdserverpb`]: every request/response and the `KV`, `Watch`, `Lease`,
//!   `Cluster`, `Maintenance` and `Auth` services.
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

pub use prost;
pub use tonic;
