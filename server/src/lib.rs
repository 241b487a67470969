//! Cairn: an etcd-compatible key-value store, replicated with Raft, as a
//! library and a server.
//!
//! A program embeds a member with [`Node::start`] and talks to it through
//! the typed in-process [`Client`] — etcd's semantics, errors as
//! [`Error`]s, without gRPC. The `cairn` binary serves the same node over
//! etcd's v3 gRPC API, through the same client.
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
//! Modules, bottom up (each uses only those above it):
//! - [`durable`]: small files written so a crash leaves the old or the
//!   new; [`background`]: copies of the whole store kept from crowding
//!   requests (a lower-priority thread);
//!   [`tls`]: TLS for both ports (rustls), etcd's TLS flags.
//! - [`config`]: a member's configuration, etcd's flags' meanings;
//!   [`metrics`]: Prometheus metrics under etcd's names.
//! - [`error`]: the typed [`Error`]; [`status`]: etcd's gRPC code and
//!   message for each (the one place that spells them); [`convert`]:
//!   etcd's wire messages to and from the kv store's types.
//! - [`accept`]: accepting connections (handshakes, descriptor
//!   shortages); [`auth`]: users, roles, permissions and tokens;
//!   [`alarm`]: the NOSPACE and CORRUPT alarms.
//! - [`backup`]: the backup file (`etcdctl snapshot save`, restores);
//!   [`migrate`]: etcd's backend files to and from kv images; [`pipe`]:
//!   an image handed between two threads.
//! - [`raft`]: openraft's type configuration, the adapters over Cairn's
//!   storage engines ([`cairn_kv`], [`cairn_raft_log`]), the apply
//!   observer, and the peer transport.
//! - [`watch`]: the hub applied events are published on; [`lease`]: the
//!   lessor, which keeps lease deadlines.
//! - [`node`]: a member — start-up, leader routing, writes, reads,
//!   membership, leases, shutdown.
//! - [`client`]: the in-process client, the one seam the API goes through.
//! - [`grpc`]: etcd's gRPC services, translating to and from the client;
//!   [`http`]: the health probes, `/version` and `/metrics`.

#![deny(missing_docs)]

pub mod accept;
pub mod alarm;
pub mod auth;
pub mod background;
pub mod backup;
pub mod client;
pub mod config;
pub mod convert;
pub mod durable;
pub mod error;
pub mod grpc;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod migrate;
pub mod node;
pub mod pipe;
pub mod raft;
pub mod status;
pub mod tls;
pub mod watch;

pub use cairn_kv as kv;
pub use cairn_proto as proto;
pub use cairn_raft_log as raft_log;
pub use client::Client;
pub use config::{ClusterState, Config};
pub use error::Error;
pub use node::{Node, StartError};
