//! Serving a [`Node`] to clients over etcd's gRPC API.
//!
//! A translation layer and nothing more: each service turns an etcd
//! request into a call on the in-process [`crate::Client`] (the one seam
//! embedding programs use too) and a typed [`crate::Error`] into etcd's
//! status ([`crate::status`]). Watch streams are served from the watch
//! hub ([`crate::watch`]) by one task per stream.
//!
//! - [`kv`], [`lease`], [`cluster`], [`maintenance`], [`watch`]: etcd's
//!   services; `watch_stream`: one watch stream's task.
//! - `metadata`: the `hasleader` request metadata; [`authority`]: any
//!   `:authority` a client sends accepted, as etcd does.
//! - [`coalesce`]: the answers one commit wakes on a connection written
//!   together.

pub mod authority;
pub mod cluster;
pub mod coalesce;
pub mod kv;
pub mod lease;
pub mod maintenance;
mod metadata;
pub mod watch;
mod watch_stream;

use std::future::Future;

use futures::StreamExt;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use self::cluster::ClusterService;
use self::coalesce::{Coalesced, GateLayer};
use self::kv::KvService;
use self::lease::LeaseService;
use self::maintenance::MaintenanceService;
use self::watch::WatchService;
use crate::node::{resolve, Node, StartError};

/// Binds every `--listen-client-urls` address (before serving, so a bad
/// address fails the start) and returns the listeners.
pub async fn bind_clients(node: &Node) -> Result<Vec<TcpListener>, StartError> {
    let mut out = Vec::new();
    for url in &node.config().listen_client_urls {
        let addr = resolve(url).await?;
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            StartError::Config(format!("listen-client-urls {url}: cannot bind: {e}"))
        })?;
        out.push(listener);
    }
    Ok(out)
}

/// Serves etcd's KV, Watch, Lease, Cluster, Maintenance and Health services on
/// `listeners` until `shutdown` completes.
pub async fn serve(
    node: Node,
    listeners: Vec<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for listener in listeners {
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            // With `Coalesced` below: the answers that one commit wakes
            // on a connection go out in one write (see [`coalesce`]).
            .layer(GateLayer)
            .add_service(health)
            .add_service(KvService::server(&node))
            .add_service(ClusterService::server(&node))
            .add_service(MaintenanceService::server(&node))
            .add_service(WatchService::server(&node))
            .add_service(LeaseService::server(&node));
        let mut rx = stop_rx.clone();
        // The builder's tcp_nodelay applies only to listeners it binds
        // itself; without it a response written as two segments waits for
        // the client's delayed ACK (40 ms).
        let incoming = TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .map(|conn| conn.map(Coalesced::new));
        tasks.push(tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
        }));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    for t in tasks {
        match t.await {
            Ok(r) => r?,
            Err(e) => tracing::error!(error = %e, "client server task"),
        }
    }
    Ok(())
}
