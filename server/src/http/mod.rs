//! HTTP on the client port (beside gRPC, as etcd serves both) and on
//! `--listen-metrics-urls`: the probes kubeadm and Kubernetes use
//! (`/health`, `/livez`, `/readyz`), `/version`, and `/metrics`
//! (Prometheus's text format). A request these do not know gets 404; a
//! malformed one gets 400 from the HTTP server; neither touches a gRPC
//! stream on the same connection.
//!
//! - [`health`]: the checks behind the three probes, with etcd's answers.
//! - [`gateway`]: etcd's JSON gateway (`/v3/...`), client port only.

pub mod gateway;
pub mod health;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::grpc::ClientListener;
use crate::Node;

/// Serves the endpoints alone (HTTP/1.1 and HTTP/2) on `listeners` (the
/// `--listen-metrics-urls` ports) until `stop` turns true; the task ends
/// when every listener and connection has.
pub fn serve(
    node: Node,
    listeners: Vec<ClientListener>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let app = router(node);
    tokio::spawn(async move {
        let mut accepts = Vec::new();
        for ClientListener { listener, tls } in listeners {
            let app = app.clone();
            let conn_stop = stop.clone();
            accepts.push(crate::accept::spawn(
                listener,
                tls,
                "metrics",
                stop.clone(),
                move |conn| {
                    let app = app.clone();
                    let mut stop = conn_stop.clone();
                    async move {
                        let service = hyper_util::service::TowerToHyperService::new(app);
                        let builder = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        );
                        let served = builder.serve_connection_with_upgrades(
                            hyper_util::rt::TokioIo::new(conn),
                            service,
                        );
                        tokio::select! {
                            r = served => {
                                if let Err(e) = r {
                                    tracing::debug!(error = %e, "metrics connection");
                                }
                            }
                            // A probe's connection is short; at a stop
                            // it is cut rather than waited for.
                            _ = stop.wait_for(|s| *s) => {}
                        }
                    }
                },
            ));
        }
        for a in accepts {
            let _ = a.await;
        }
    })
}

/// The endpoints, over `node`.
pub fn router(node: Node) -> Router {
    Router::new()
        .route("/health", get(health::health).fallback(get_only))
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/version", get(version).fallback(get_only))
        .route("/metrics", get(metrics))
        .with_state(node)
}

/// The type Go gives a text answer.
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// An error as Go's `http.Error` writes it, and so etcd: plain text,
/// no sniffing, the message and a line end.
fn plain_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, TEXT_PLAIN),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        format!("{message}\n"),
    )
        .into_response()
}

/// etcd's answer to a method other than GET on `/health` and `/version`.
async fn get_only() -> Response {
    let mut r = plain_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
    r
}

/// What answers a path no service or endpoint has: gRPC's
/// `Unimplemented` to a gRPC call, 404 to anything else.
pub async fn not_found(req: axum::extract::Request) -> Response {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented("")
            .into_http::<axum::body::Body>()
            .into_response();
    }
    plain_error(StatusCode::NOT_FOUND, "404 page not found")
}

/// etcd's `/version`: the server's version and the cluster's.
async fn version() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!(
            "{{\"etcdserver\":\"{}\",\"etcdcluster\":\"{}\"}}",
            crate::client::ETCD_VERSION,
            crate::client::ETCD_CLUSTER_VERSION
        ),
    )
        .into_response()
}

/// Every metric, the member's state read now.
async fn metrics(State(node): State<Node>) -> Response {
    let snapshot = node.metrics_snapshot();
    let text = node.metrics().render(&snapshot);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
