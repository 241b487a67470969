//! Each gRPC call counted under go-grpc-prometheus's names, as etcd
//! serves them: `grpc_server_started_total` when it starts,
//! `grpc_server_handled_total` with its status code when it ends, and
//! `grpc_server_handling_seconds` for unary calls. The code is read
//! where gRPC puts it: in the response headers of an answer that is only
//! a status, else in the trailers at the end of the body; a stream the
//! client drops before its end counts as `Canceled`.
//!
//! A request to a path that is not a gRPC method (the HTTP endpoints)
//! passes untouched.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame};

use crate::metrics::{MethodMetrics, Metrics};

/// gRPC's `Canceled`.
const CANCELED: i32 = 1;
/// gRPC's `Unknown`, for a status that does not parse.
const UNKNOWN: i32 = 2;

/// Wraps the client port's services with [`Observe`].
#[derive(Clone)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
}

impl ObserveLayer {
    /// Counting in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower_layer::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Observe<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Unpin,
{
    type Response = http::Response<Observed<R>>;
    type Error = S::Error;
    type Future = ObservedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = self.metrics.method(req.uri().path()).cloned();
        if let (true, Some(m)) = (crate::metrics::ON, &method) {
            m.started.inc();
        }
        ObservedFuture {
            inner: self.inner.call(req),
            call: method.map(|m| Call {
                method: m,
                start: Instant::now(),
            }),
        }
    }
}

/// A call being counted.
struct Call {
    method: Arc<MethodMetrics>,
    start: Instant,
}

impl Call {
    fn finish(self, code: i32) {
        self.method.finished(code, self.start.elapsed());
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status").map(|v| {
        v.to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(UNKNOWN)
    })
}

/// The answer to a call, counted when its status is known.
pub struct ObservedFuture<F> {
    inner: F,
    call: Option<Call>,
}

impl<F, R, E> std::future::Future for ObservedFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<R>, E>> + Unpin,
{
    type Output = Result<http::Response<Observed<R>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let r = ready!(Pin::new(&mut self.inner).poll(cx));
        let call = self.call.take();
        Poll::Ready(match r {
            Ok(resp) => {
                let call = match (call, grpc_status(resp.headers())) {
                    // Only a status: the call ends here.
                    (Some(c), Some(code)) => {
                        c.finish(code);
                        None
                    }
                    (c, _) => c,
                };
                Ok(resp.map(|inner| Observed { inner, call }))
            }
            Err(e) => {
                if let Some(c) = call {
                    c.finish(UNKNOWN);
                }
                Err(e)
            }
        })
    }
}

/// A response body whose trailers end its call's count.
pub struct Observed<R> {
    inner: R,
    call: Option<Call>,
}

impl<R> Body for Observed<R>
where
    R: Body + Unpin,
{
    type Data = R::Data;
    type Error = R::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let r = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &r {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    if let Some(c) = self.call.take() {
                        c.finish(code);
                    }
                }
            }
            Some(Err(_)) => {
                if let Some(c) = self.call.take() {
                    c.finish(UNKNOWN);
                }
            }
            None => {
                // Ended without a status: an HTTP/2 stream closed early.
                if let Some(c) = self.call.take() {
                    c.finish(CANCELED);
                }
            }
        }
        Poll::Ready(r)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<R> Drop for Observed<R> {
    fn drop(&mut self) {
        // Dropped before its status was sent: the client went away.
        if let Some(c) = self.call.take() {
            c.finish(CANCELED);
        }
    }
}
