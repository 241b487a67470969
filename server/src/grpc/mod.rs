//! Serving a [`Node`] to clients over etcd's gRPC API.
//!
//! A translation layer and nothing more: each service turns an etcd
//! request into a call on the in-process [`crate::Client`] (the one seam
//! embedding programs use too) and a typed [`crate::Error`] into etcd's
//! status ([`crate::status`]). Watch streams are served from the watch
//! hub ([`crate::watch`]) by one task per stream.
//!
//! - [`kv`], [`lease`], [`cluster`], [`maintenance`], [`watch`],
//!   [`auth`], [`lock`], [`election`]: etcd's services; `watch_stream`:
//!   one watch stream's task; `queue`: the keys queued by creation that
//!   locks and elections are made of; `range_stream`: a range in
//!   chunks (etcd 3.7's `KV.RangeStream`); [`large_range`]: a Range
//!   answer too large to hold, encoded while it is sent.
//! - [`refusals`]: every refused call logged with the client's address.
//! - `metadata`: the `hasleader` request metadata; [`authority`]: any
//!   `:authority` a client sends accepted, as etcd does.
//! - [`coalesce`]: the answers one commit wakes on a connection written
//!   together; [`oversize`]: etcd's answer to a request over the size
//!   limit; [`observe`]: each call counted for `/metrics`.
//!
//! The port also answers HTTP/1.1 and non-gRPC HTTP/2 requests with
//! [`crate::http`]'s endpoints, as etcd's does.

pub mod auth;
pub mod authority;
pub mod cluster;
pub mod coalesce;
pub mod election;
pub mod kv;
pub mod large_range;
pub mod lease;
pub mod lock;
pub mod maintenance;
mod metadata;
pub mod observe;
pub mod oversize;
mod queue;
mod range_stream;
pub mod refusals;
pub mod watch;
pub(crate) mod watch_stream;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use self::auth::AuthService;
use self::cluster::ClusterService;
use self::coalesce::{Coalesced, GateLayer};
use self::kv::KvService;
use self::lease::LeaseService;
use self::maintenance::MaintenanceService;
use self::observe::ObserveLayer;
use self::watch::WatchService;
use crate::config::Config;
use crate::node::{resolve, Node, StartError};
use crate::tls::ServerTls;

/// A bound client port: its listener, and its TLS when the URL is
/// `https://`.
pub struct ClientListener {
    pub(crate) listener: TcpListener,
    pub(crate) tls: Option<Arc<ServerTls>>,
}

/// Binds every `--listen-client-urls` address and loads the client port's
/// TLS; called before the member starts, so that a bad address or
/// certificate fails the start before anything is written. With
/// `--auto-tls` the self-signed certificate is made under the data dir
/// (`fixtures/client`) for the listen URLs' hosts.
pub async fn bind_clients(config: &Config) -> Result<Vec<ClientListener>, StartError> {
    bind(config, &config.listen_client_urls, "listen-client-urls").await
}

/// Binds every `--listen-metrics-urls` address (`https://` ones with the
/// client port's TLS, as etcd does).
pub async fn bind_metrics(config: &Config) -> Result<Vec<ClientListener>, StartError> {
    bind(config, &config.listen_metrics_urls, "listen-metrics-urls").await
}

async fn bind(
    config: &Config,
    urls: &[String],
    flag: &str,
) -> Result<Vec<ClientListener>, StartError> {
    let mut tls = None;
    let mut out = Vec::new();
    for url in urls {
        let addr = resolve(url).await?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| StartError::Config(format!("{flag} {url}: cannot bind: {e}")))?;
        let port_tls = if url.starts_with("https://") {
            if tls.is_none() {
                let hosts: Vec<&str> = config
                    .listen_client_urls
                    .iter()
                    .map(|u| crate::config::host_of(u))
                    .collect();
                let info = config
                    .client_tls
                    .resolve_auto(&config.data_dir.join("fixtures").join("client"), &hosts)
                    .map_err(StartError::Config)?;
                let server =
                    ServerTls::new(&info, &config.tls, "client").map_err(StartError::Config)?;
                tls = Some(Arc::new(server));
            }
            tls.clone()
        } else {
            if !config.client_tls.is_empty() {
                tracing::warn!(
                    client_url = %url,
                    "scheme is HTTP while key and cert files are present; ignoring key and cert files"
                );
            }
            None
        };
        out.push(ClientListener {
            listener,
            tls: port_tls,
        });
    }
    Ok(out)
}

/// Serves etcd's KV, Watch, Lease, Cluster, Maintenance and Health services on
/// `listeners` until `shutdown` completes.
pub async fn serve(
    node: Node,
    listeners: Vec<ClientListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut accepts = Vec::new();
    for ClientListener { listener, tls } in listeners {
        let (health_reporter, health) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let mut routes = tonic::service::Routes::builder();
        routes
            .add_service(health)
            .add_service(KvService::server(&node))
            .add_service(ClusterService::server(&node))
            .add_service(MaintenanceService::server(&node))
            .add_service(WatchService::server(&node))
            .add_service(LeaseService::server(&node))
            .add_service(AuthService::server(&node))
            .add_service(lock::LockService::server(&node))
            .add_service(election::ElectionService::server(&node));
        let routes = tonic::service::Routes::from(
            routes
                .routes()
                .into_axum_router()
                .merge(crate::http::router(node.clone()))
                .merge(crate::http::gateway::router(node.clone()))
                .fallback(crate::http::not_found),
        );
        let router = tonic::transport::Server::builder()
            // A client whose end is gone (a cut cable, a host lost)
            // leaves a half-open connection: pings find it and close it.
            .http2_keepalive_interval(node.config().grpc_keepalive_interval)
            .http2_keepalive_timeout(Some(node.config().grpc_keepalive_timeout))
            .max_concurrent_streams(node.config().max_concurrent_streams)
            // The probes, /version and /metrics over HTTP/1.1 too.
            .accept_http1(true)
            // With `Coalesced` below: the answers that one commit wakes
            // on a connection go out in one write (see [`coalesce`]).
            .layer(GateLayer)
            // (It also makes an oversize answer etcd's and logs refusals,
            // see `refusals`.)
            .layer(ObserveLayer::new(Arc::clone(node.metrics())))
            .add_routes(routes);
        let (conn_tx, conn_rx) = tokio::sync::mpsc::channel::<std::io::Result<Coalesced>>(64);
        let sent = node.metrics().client_sent_bytes.clone();
        let received = node.metrics().client_received_bytes.clone();
        accepts.push(crate::accept::spawn(
            listener,
            tls,
            "client",
            stop_rx.clone(),
            move |conn| {
                let conn_tx = conn_tx.clone();
                let (sent, received) = (sent.clone(), received.clone());
                async move {
                    let conn = Coalesced::new(conn).counted(sent, received);
                    let _ = conn_tx.send(Ok(conn)).await;
                }
            },
        ));
        let incoming = tokio_stream::wrappers::ReceiverStream::new(conn_rx);
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await
        }));
    }
    shutdown.await;
    // Every connection is told to go away (HTTP/2 GOAWAY) and its calls
    // in flight get `--shutdown-grace` to end; streams a client keeps
    // open (watches, keep-alives) would hold the server forever, so what
    // is left then is cut.
    let deadline = tokio::time::Instant::now() + node.config().shutdown_grace;
    let _ = stop_tx.send(true);
    for a in accepts {
        let _ = a.await;
    }
    let mut cut = 0;
    for mut t in tasks {
        match tokio::time::timeout_at(deadline, &mut t).await {
            Ok(Ok(r)) => r?,
            Ok(Err(e)) => tracing::error!(error = %e, "client server task"),
            Err(_) => {
                t.abort();
                cut += 1;
            }
        }
    }
    if cut > 0 {
        tracing::info!(
            grace = ?node.config().shutdown_grace,
            "closed client connections still open after the grace period"
        );
    }
    Ok(())
}
