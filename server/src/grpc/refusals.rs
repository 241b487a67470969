//! Every refused request logged once, with the client's address: a call
//! answered `PERMISSION_DENIED`, `UNAUTHENTICATED`, or etcd's
//! `user name is empty` / `authentication failed` (`INVALID_ARGUMENT`).
//! Looks only at answers carrying their status in the response headers
//! (every call refused before it produced anything).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tonic::codegen::http;
use tonic::transport::server::TcpConnectInfo;

use crate::status::msg;

/// Logs refused calls (see the module).
#[derive(Clone, Debug, Default)]
pub struct RefusalLogLayer;

impl<S> tower_layer::Layer<S> for RefusalLogLayer {
    type Service = RefusalLog<S>;

    fn layer(&self, inner: S) -> RefusalLog<S> {
        RefusalLog { inner }
    }
}

/// See [`RefusalLogLayer`].
#[derive(Clone, Debug)]
pub struct RefusalLog<S> {
    inner: S,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for RefusalLog<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Logged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let remote = req
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(|i| i.remote_addr());
        let method = req.uri().path().to_string();
        Logged {
            inner: self.inner.call(req),
            remote,
            method,
        }
    }
}

/// A call's answer, logged if it is a refusal.
pub struct Logged<F> {
    inner: F,
    remote: Option<SocketAddr>,
    method: String,
}

impl<F, R, E> Future for Logged<F>
where
    F: Future<Output = Result<http::Response<R>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let out = ready!(Pin::new(&mut self.inner).poll(cx));
        if let Ok(resp) = &out {
            if let Some(status) = tonic::Status::from_header_map(resp.headers()) {
                if is_refusal(&status) {
                    tracing::warn!(
                        remote = %self.remote.map_or_else(|| "?".to_string(), |a| a.to_string()),
                        method = %self.method,
                        error = %status.message(),
                        "request refused"
                    );
                }
            }
        }
        Poll::Ready(out)
    }
}

fn is_refusal(s: &tonic::Status) -> bool {
    match s.code() {
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => true,
        tonic::Code::InvalidArgument => {
            s.message() == msg::USER_EMPTY || s.message() == msg::AUTH_FAILED
        }
        _ => false,
    }
}
