//! A Range answer too large to hold, encoded while it is sent.
//!
//! gRPC frames a message with its length first, so a unary answer is
//! normally encoded whole before its first byte leaves. For a
//! `LargeRange` the length is known from the first pass (the client's
//! `large_range`), and the message is written field by field in the
//! order prost writes it — header, keys, `more`, `count` — a batch of
//! keys at a time, by a blocking task that reads the next batch only as
//! the connection takes the previous ones (`ENCODERS` such tasks at
//! most, so that slow readers cannot take every blocking thread). Clients receive the same bytes
//! a whole answer would have been.
//!
//! The KV service answers such a range with an empty message carrying
//! the `LargeRange` in its extensions; [`LargeRanges`], wrapped around
//! the service, puts the streamed body in place of tonic's. An error
//! after the first byte (the range compacted away, a failed read) ends
//! the body with that error's status in the trailers, as gRPC ends any
//! failed call.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use prost::encoding;
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::Status;

use crate::client::{kv_len, LargeRange};
use crate::error::Error;

/// Bytes gathered before they are handed to the connection.
const CHUNK: usize = 256 << 10;

/// Chunks waiting for the connection.
const QUEUED: usize = 2;

/// A [`LargeRange`] riding in a response's extensions (which must be
/// cloneable; the first to take it wins).
#[derive(Clone)]
pub(crate) struct Pending(Arc<Mutex<Option<LargeRange>>>);

impl Pending {
    pub(crate) fn new(r: LargeRange) -> Self {
        Self(Arc::new(Mutex::new(Some(r))))
    }

    fn take(&self) -> Option<LargeRange> {
        self.0.lock().ok().and_then(|mut g| g.take())
    }
}

/// A service whose `Pending` answers are sent as they are encoded.
#[derive(Clone)]
pub struct LargeRanges<S>(pub S);

impl<S: NamedService> NamedService for LargeRanges<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower_service::Service<http::Request<B>> for LargeRanges<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Unpin,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Swapped<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        Swapped(self.0.call(req))
    }
}

/// An answer whose body is replaced by the streamed one when it carries
/// a `Pending` range.
pub struct Swapped<F>(F);

impl<F, E> std::future::Future for Swapped<F>
where
    F: std::future::Future<Output = Result<http::Response<Body>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut resp = std::task::ready!(Pin::new(&mut self.0).poll(cx))?;
        if let Some(large) = resp
            .extensions_mut()
            .remove::<Pending>()
            .and_then(|p| p.take())
        {
            *resp.body_mut() = Body::new(stream(large));
        }
        Poll::Ready(Ok(resp))
    }
}

/// Large answers being encoded at once, each on a blocking thread it
/// keeps while its client takes the chunks: so that clients that read
/// slowly (or not at all) can hold at most this many of the threads the
/// member's store reads run on; further large answers wait their turn.
const ENCODERS: usize = 16;

static TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(ENCODERS);

/// The gRPC body of `large`: its message, then the trailers.
fn stream(mut large: LargeRange) -> Streamed {
    let (tx, rx) = mpsc::channel(QUEUED);
    tokio::spawn(async move {
        let Ok(turn) = TURNS.acquire().await else {
            return;
        };
        let encoded = tokio::task::spawn_blocking(move || encode(&mut large, &tx)).await;
        drop(turn);
        if let Err(e) = encoded {
            tracing::error!(error = %e, "encoding a large range answer");
        }
    });
    Streamed(rx)
}

/// Sends `large`'s message and trailers to `tx`. Blocks on the store and
/// on the connection.
fn encode(large: &mut LargeRange, tx: &mpsc::Sender<Frame<Bytes>>) {
    let status = match write(large, tx) {
        Ok(()) => Status::ok(""),
        Err(Sent::Gone) => return,
        Err(Sent::Failed(status)) => status,
    };
    let mut trailers = http::HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
    }
    let _ = tx.blocking_send(Frame::trailers(trailers));
}

/// Why a body stopped before its end.
enum Sent {
    /// The client went away.
    Gone,
    /// The answer failed with this status.
    Failed(Status),
}

impl From<cairn_kv::Error> for Sent {
    fn from(e: cairn_kv::Error) -> Self {
        Sent::Failed(Error::from(e).into())
    }
}

/// Writes `large`'s gRPC message to `tx`.
fn write(large: &mut LargeRange, tx: &mpsc::Sender<Frame<Bytes>>) -> Result<(), Sent> {
    let mut head = BytesMut::new();
    encoding::message::encode(1, &large.header, &mut head);
    let mut tail = BytesMut::new();
    if large.more {
        encoding::bool::encode(3, &large.more, &mut tail);
    }
    if large.count != 0 {
        encoding::int64::encode(4, &large.count, &mut tail);
    }
    let len = head.len() + large.kvs_len + tail.len();
    let Ok(len32) = u32::try_from(len) else {
        return Err(Sent::Failed(Status::resource_exhausted(format!(
            "etcdserver: range answer of {len} bytes is over gRPC's 4 GiB message limit; use a limit"
        ))));
    };
    let mut buf = BytesMut::with_capacity(CHUNK + 4096);
    // Not compressed, then the length.
    buf.put_u8(0);
    buf.put_u32(len32);
    buf.extend_from_slice(&head);
    let mut left = large.kvs_len;
    loop {
        let batch = large.next_batch()?;
        if batch.is_empty() {
            break;
        }
        for kv in &batch {
            let n = kv_len(kv);
            if n > left {
                return Err(changed());
            }
            left -= n;
            encoding::message::encode(2, kv, &mut buf);
        }
        if buf.len() >= CHUNK {
            send(tx, buf.split().freeze())?;
        }
    }
    if left != 0 {
        return Err(changed());
    }
    buf.extend_from_slice(&tail);
    send(tx, buf.freeze())
}

fn send(tx: &mpsc::Sender<Frame<Bytes>>, b: Bytes) -> Result<(), Sent> {
    tx.blocking_send(Frame::data(b)).map_err(|_| Sent::Gone)
}

/// The second pass read other bytes than the first: never expected
/// (records do not change), and the message must not overrun its length.
fn changed() -> Sent {
    Sent::Failed(Status::internal(
        "etcdserver: range answer changed while it was sent",
    ))
}

/// The body the blocking task feeds.
struct Streamed(mpsc::Receiver<Frame<Bytes>>);

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}
