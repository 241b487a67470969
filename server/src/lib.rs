//! Cairn: an etcd-compatible key-value store, replicated with Raft, as a
//! library and a server.
//!
//! A program embeds a member with [`Node::start`] and talks to it through
//! the typed in-process [`Client`] — etcd's KV/Txn semantics and errors,
//! without gRPC. The `cairn` binary serves the same node over etcd's v3
//! gRPC API.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let node = cairn::Node::start(cairn::Config::embedded(dir.path().join("data"))).await?;
//! let client = node.client();
//! client.put_kv("greeting", "hello").await?;
//! assert_eq!(client.get("greeting").await?, Some(b"hello".to_vec()));
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Modules:
//! - [`node`]: a member — storage, Raft, peers, membership.
//! - [`client`]: the in-process client.
//! - [`api`]: etcd's gRPC services over a node ([`watch`] and [`lease`]
//!   have their own modules).
//! - [`raft`]: openraft's type configuration and the adapters over Cairn's
//!   storage engines ([`cairn_kv`], [`cairn_raft_log`]), and the peer network.
//! - [`server`]: serving a node to clients over gRPC; [`coalesce`]: the
//!   client connections' answers of one commit written together.

pub mod api;
pub mod client;
pub mod coalesce;
pub mod config;
pub mod convert;
pub mod forward;
pub mod lease;
pub mod node;
pub mod propose;
pub mod raft;
pub mod server;
pub mod status;
pub mod watch;

pub use cairn_kv as kv;
pub use cairn_proto as proto;
pub use cairn_raft_log as raft_log;
pub use client::Client;
pub use config::{ClusterState, Config};
pub use node::{Node, StartError};
