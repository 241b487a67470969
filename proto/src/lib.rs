//! etcd's v3 API as Rust types, with tonic server and client stubs.
//!
//! The package layout follows etcd's protobuf packages so that gRPC paths
//! (`/etcdserverpb.KV/Range`, …) and message names match etcd byte for byte:
//!
//! - [`mvccpb`]: `KeyValue` and watch `Event`.
//! - [`authpb`]: users, roles and permissions.
//! - [`etcdserverpb`]: every request/response and the `KV`, `Watch`, `Lease`,
//!   `Cluster`, `Maintenance` and `Auth` services.
//! - [`v3lockpb`], [`v3electionpb`]: etcd's `Lock` and `Election`
//!   services (named locks and elections over leases).
//! - [`cairnpb`]: Cairn's own messages: the commands written to the Raft
//!   log and the peer-to-peer service between members.
//!
//! `bytes` fields are generated as [`prost::bytes::Bytes`], so keys and
//! values move between the network and the store without copies.

#![deny(missing_docs)]
#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

// The generated packages carry the .proto files' comments as docs where
// the protos have them; etcd's leave many fields undocumented.

/// etcd's `mvccpb` package: key-value records and watch events.
#[allow(missing_docs)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's `authpb` package: auth records.
#[allow(missing_docs)]
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// etcd's `etcdserverpb` package: the client-facing gRPC API.
#[allow(missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// etcd's `v3lockpb` package: the lock service.
#[allow(missing_docs)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}

/// etcd's `v3electionpb` package: the election service.
#[allow(missing_docs)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}

/// Cairn's own package: Raft log commands and the peer service.
#[allow(missing_docs)]
pub mod cairnpb {
    tonic::include_proto!("cairnpb");
}

pub use prost;
pub use tonic;
