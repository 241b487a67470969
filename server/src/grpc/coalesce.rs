//! Gathering the answers of a client connection's calls into one socket
//! write, decided from the calls themselves.
//!
//! One commit answers many writes at once: the apply wakes every call it
//! completed, several of them on the same HTTP/2 connection. Each call's
//! task then hands its answer to the connection, which wakes the
//! connection's task, and tokio runs a task woken that way right after the
//! one that woke it. Left alone, the connection would write each answer to
//! the socket as soon as it gets it, one `writev` per answer, while the
//! next answer for the same socket is already waiting to run.
//!
//! Here every call carries a waker of its own that counts, per connection,
//! the calls that have been woken and not yet polled ([`Gate`]). The
//! connection's socket ([`Coalesced`]) keeps what it is given while that
//! count is above zero, and the call that brings it to zero wakes the
//! connection, which writes everything together. A lone call never waits:
//! it is polled (the count drops to zero) before its answer is written.
//! Whatever the count, the connection writes once it holds
//! [`MAX_HELD_BYTES`], or at its first turn after holding for
//! [`MAX_HOLD`] (it gets one at every answer handed to it, and a woken
//! call is polled soon: the hold cannot outlast the woken calls' turns).
//!
//! Both halves meet through tonic's connection info: [`Coalesced`] puts
//! its [`Gate`] there, and [`GateLayer`] finds it in each request.
//!
//! The socket's inbound bytes pass through an [`AuthorityFilter`] on their
//! way to HTTP/2, so that etcd's clients' `:authority` values are accepted.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Wake, Waker};

use super::authority::AuthorityFilter;
use super::metadata::CertName;
use crate::accept::Conn;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The longest a connection holds its output waiting for woken calls.
pub const MAX_HOLD: Duration = Duration::from_micros(500);

/// The most a connection holds before it writes regardless.
pub const MAX_HELD_BYTES: usize = 64 << 10;

/// Per connection: how many of its calls are woken and not yet polled,
/// and the connection's task while it holds its output for them.
#[derive(Debug, Default)]
pub struct Gate {
    woken: AtomicIsize,
    held: AtomicWaker,
}

impl Gate {
    fn woken(&self) -> bool {
        self.woken.load(Ordering::Acquire) > 0
    }

    fn acquire(&self) {
        self.woken.fetch_add(1, Ordering::AcqRel);
    }

    fn release(&self) {
        if self.woken.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.held.wake();
        }
    }
}

/// A client connection's socket: what is written while some of the
/// connection's calls are woken and not yet polled is kept and written
/// with what follows.
pub struct Coalesced {
    io: Conn,
    gate: Arc<Gate>,
    buf: BytesMut,
    /// When the bytes in `buf` began to be held.
    since: Option<Instant>,
    /// The client's bytes on their way in (see `super::authority`).
    inbound: AuthorityFilter,
    /// Filtered bytes not yet read by HTTP/2.
    filtered: BytesMut,
    /// Where a read from the socket lands before the filter.
    scratch: Box<[u8]>,
    /// The verified client certificate's common name, if any.
    cert_name: Option<CertName>,
    /// Counts the bytes written and read (`etcd_network_client_grpc_*`).
    counters: Option<(prometheus::IntCounter, prometheus::IntCounter)>,
}

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

impl Coalesced {
    /// Wraps an accepted connection.
    pub fn new(io: Conn) -> Self {
        let cert_name = io.client_common_name().map(|n| CertName(n.into()));
        Self {
            cert_name,
            io,
            gate: Arc::default(),
            buf: BytesMut::new(),
            since: None,
            inbound: AuthorityFilter::default(),
            filtered: BytesMut::new(),
            scratch: vec![0u8; READ_CHUNK].into_boxed_slice(),
            counters: None,
        }
    }

    /// Counts the bytes written in `sent` and read in `received`.
    pub fn counted(
        mut self,
        sent: prometheus::IntCounter,
        received: prometheus::IntCounter,
    ) -> Self {
        self.counters = Some((sent, received));
        self
    }

    fn count_sent(&self, n: usize) {
        if let (true, Some((sent, _))) = (crate::metrics::ON, &self.counters) {
            sent.inc_by(n as u64);
        }
    }

    /// Whether to keep what is written now rather than send it.
    fn hold(&mut self) -> bool {
        if !self.gate.woken() || self.buf.len() >= MAX_HELD_BYTES {
            return false;
        }
        let now = Instant::now();
        now.duration_since(*self.since.get_or_insert(now)) < MAX_HOLD
    }

    /// Writes out everything held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.buf.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.buf.advance(n);
        }
        self.since = None;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Coalesced {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = this.read_filtered(cx, buf);
        if let (true, Some((_, received))) = (crate::metrics::ON, &this.counters) {
            received.inc_by((buf.filled().len() - before) as u64);
        }
        r
    }
}

impl Coalesced {
    fn read_filtered(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self;
        loop {
            if !this.filtered.is_empty() {
                let n = this.filtered.len().min(buf.remaining());
                buf.put_slice(&this.filtered.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.inbound.is_off() {
                if !this.scratch.is_empty() {
                    // Not needed any more on this connection.
                    this.scratch = Box::default();
                }
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // End of stream.
                return Poll::Ready(Ok(()));
            }
            // A header block still being gathered leaves nothing to hand
            // on yet: read again.
            this.inbound.feed(read.filled(), &mut this.filtered);
        }
    }
}

impl AsyncWrite for Coalesced {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buf.is_empty() && !this.hold() {
            let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
            this.count_sent(n);
            return Poll::Ready(Ok(n));
        }
        // Kept for the flush (which always follows), up to a limit.
        if this.buf.len() >= MAX_HELD_BYTES {
            ready!(this.poll_drain(cx))?;
        }
        let mut n = 0;
        for b in bufs {
            this.buf.extend_from_slice(b);
            n += b.len();
        }
        this.count_sent(n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.buf.is_empty() && this.hold() {
            this.gate.held.register(cx.waker());
            // Checked again after registering: the last woken call may
            // have been polled in between, and its wake found no one.
            if this.hold() {
                return Poll::Pending;
            }
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What tonic puts in each request of a [`Coalesced`] connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The TCP connection's addresses.
    pub tcp: TcpConnectInfo,
    /// The connection's output gate.
    pub gate: Arc<Gate>,
    /// The common name of the client certificate the port verified.
    pub cert_name: Option<CertName>,
}

impl Connected for Coalesced {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo {
            tcp: self.io.connect_info(),
            gate: Arc::clone(&self.gate),
            cert_name: self.cert_name.clone(),
        }
    }
}

/// Counts each call's wake-ups on its connection's [`Gate`].
#[derive(Clone, Debug, Default)]
pub struct GateLayer;

impl<S> tower_layer::Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> GateService<S> {
        GateService { inner }
    }
}

/// A service whose calls count their wake-ups on their connection's gate.
#[derive(Clone, Debug)]
pub struct GateService<S> {
    inner: S,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for GateService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Unpin,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let mut remote = None;
        let call = match req.extensions_mut().remove::<ConnInfo>() {
            Some(info) => {
                remote = info.tcp.remote_addr();
                // Where tonic's `remote_addr` looks for it.
                req.extensions_mut().insert(info.tcp);
                if let Some(name) = info.cert_name {
                    req.extensions_mut().insert(name);
                }
                let call = Arc::new(Call {
                    state: AtomicU8::new(IDLE),
                    gate: info.gate,
                    task: AtomicWaker::new(),
                });
                let waker = Waker::from(Arc::clone(&call));
                Some((call, waker))
            }
            None => None,
        };
        Tracked {
            inner: self.inner.call(req),
            call,
            remote,
        }
    }
}

const IDLE: u8 = 0;
const WOKEN: u8 = 1;
const DONE: u8 = 2;

/// One call's wake-up state, counted on its connection's gate while woken.
struct Call {
    state: AtomicU8,
    gate: Arc<Gate>,
    /// The task polling the call.
    task: AtomicWaker,
}

impl Call {
    /// The call is being polled (or is gone): no longer woken.
    fn settle(&self, to: u8) {
        if self.state.swap(to, Ordering::AcqRel) == WOKEN {
            self.gate.release();
        }
    }
}

impl Wake for Call {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.load(Ordering::Acquire) == IDLE {
            // Counted before the state says so: the gate may be one high
            // for a moment, never one low.
            self.gate.acquire();
            if self
                .state
                .compare_exchange(IDLE, WOKEN, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                self.gate.release();
            }
        }
        self.task.wake();
    }
}

/// A call's future, polled with the call's own waker.
///
/// Its answer, if given before the call produced anything (status in the
/// headers), also goes through `super::refusals::early_answer`: this
/// wrapper is every call's one, and a layer of its own measured 2% more
/// server CPU per put.
pub struct Tracked<F> {
    inner: F,
    call: Option<(Arc<Call>, Waker)>,
    /// The client's address, for the log of a refusal.
    remote: Option<std::net::SocketAddr>,
}

impl<F, R, E> Future for Tracked<F>
where
    F: Future<Output = Result<http::Response<R>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let mut out = match &this.call {
            None => ready!(Pin::new(&mut this.inner).poll(cx)),
            Some((call, waker)) => {
                call.task.register(cx.waker());
                call.settle(IDLE);
                let out = ready!(Pin::new(&mut this.inner).poll(&mut Context::from_waker(waker)));
                call.settle(DONE);
                out
            }
        };
        if let Ok(resp) = &mut out {
            // Answers that went on carry their status in trailers: one
            // lookup for them.
            if resp.headers().contains_key("grpc-status") {
                super::refusals::early_answer(resp.headers_mut(), this.remote);
            }
        }
        Poll::Ready(out)
    }
}

impl<F> Drop for Tracked<F> {
    fn drop(&mut self) {
        if let Some((call, _)) = &self.call {
            call.settle(DONE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn pair() -> (Coalesced, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (Coalesced::new(Conn::Plain(b.unwrap().0)), a.unwrap())
    }

    fn noop_call(gate: &Arc<Gate>) -> Arc<Call> {
        Arc::new(Call {
            state: AtomicU8::new(IDLE),
            gate: Arc::clone(gate),
            task: AtomicWaker::new(),
        })
    }

    #[test]
    fn a_wake_counts_once_until_polled_and_never_after_done() {
        let gate = Arc::new(Gate::default());
        let call = noop_call(&gate);
        let w = Waker::from(Arc::clone(&call));
        w.wake_by_ref();
        w.wake_by_ref();
        assert_eq!(gate.woken.load(Ordering::Acquire), 1);
        call.settle(IDLE);
        assert_eq!(gate.woken.load(Ordering::Acquire), 0);
        w.wake_by_ref();
        call.settle(DONE);
        assert_eq!(gate.woken.load(Ordering::Acquire), 0);
        // A late wake of a finished call is not counted.
        w.wake_by_ref();
        assert_eq!(gate.woken.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_woken_call_dropped_before_its_poll_releases_the_connection() {
        let gate = Arc::new(Gate::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let call = noop_call(&gate);
        let waker = Waker::from(Arc::clone(&call));
        let mut t = Tracked {
            inner: futures::FutureExt::map(rx, |r| r.map(http::Response::new)),
            call: Some((call, waker)),
            remote: None,
        };
        assert!(futures::FutureExt::now_or_never(&mut t).is_none());
        let held = Arc::new(Flag::default());
        gate.held.register(&Waker::from(Arc::clone(&held)));
        tx.send(()).unwrap();
        assert_eq!(gate.woken.load(Ordering::Acquire), 1);
        drop(t);
        assert_eq!(gate.woken.load(Ordering::Acquire), 0);
        assert!(
            held.0.load(Ordering::Acquire),
            "the held connection was woken"
        );
    }

    #[tokio::test]
    async fn a_call_polled_to_its_end_is_counted_no_more() {
        let gate = Arc::new(Gate::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let call = noop_call(&gate);
        let waker = Waker::from(Arc::clone(&call));
        let mut t = Tracked {
            inner: futures::FutureExt::map(rx, |r| r.map(http::Response::new)),
            call: Some((Arc::clone(&call), waker.clone())),
            remote: None,
        };
        assert!(futures::FutureExt::now_or_never(&mut t).is_none());
        tx.send(7).unwrap();
        assert_eq!(gate.woken.load(Ordering::Acquire), 1);
        assert_eq!(t.await.unwrap().into_body(), 7);
        assert_eq!(gate.woken.load(Ordering::Acquire), 0);
        waker.wake_by_ref();
        assert_eq!(gate.woken.load(Ordering::Acquire), 0);
        assert_eq!(call.state.load(Ordering::Acquire), DONE);
    }

    #[derive(Default)]
    struct Flag(std::sync::atomic::AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
    }

    #[tokio::test]
    async fn writes_pass_straight_through_when_no_call_is_woken() {
        let (mut c, mut peer) = pair().await;
        c.write_all(b"abc").await.unwrap();
        c.flush().await.unwrap();
        assert!(c.buf.is_empty());
        assert_eq!(received(&mut peer, 3).await, b"abc");
    }

    async fn received(peer: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        peer.read_exact(&mut got).await.unwrap();
        got
    }

    fn flush_now(c: &mut Coalesced) -> Option<io::Result<()>> {
        futures::FutureExt::now_or_never(std::future::poll_fn(|cx| {
            Pin::new(&mut *c).poll_flush(cx)
        }))
    }

    #[tokio::test]
    async fn output_is_held_while_a_call_is_woken_and_sent_when_it_is_polled() {
        let (mut c, mut peer) = pair().await;
        let call = noop_call(&c.gate);
        let w = Waker::from(Arc::clone(&call));
        w.wake_by_ref();
        c.write_all(b"one").await.unwrap();
        assert!(flush_now(&mut c).is_none(), "the flush waits for the call");
        assert_eq!(&c.buf[..], b"one");
        let gate = Arc::clone(&c.gate);
        let flush = tokio::spawn(async move {
            c.write_all(b"two").await.unwrap();
            c.flush().await.unwrap();
            c
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        // Polling the call releases the connection, which writes both.
        call.settle(IDLE);
        assert_eq!(gate.woken.load(Ordering::Acquire), 0);
        let c = flush.await.unwrap();
        assert!(c.buf.is_empty());
        assert_eq!(received(&mut peer, 6).await, b"onetwo");
    }

    #[tokio::test]
    async fn a_hold_ends_after_max_hold_even_if_the_call_never_runs() {
        let (mut c, mut peer) = pair().await;
        let call = noop_call(&c.gate);
        Waker::from(Arc::clone(&call)).wake_by_ref();
        c.write_all(b"x").await.unwrap();
        assert!(flush_now(&mut c).is_none());
        tokio::time::sleep(MAX_HOLD * 2).await;
        c.write_all(b"y").await.unwrap();
        // Not released, but held long enough.
        c.flush().await.unwrap();
        assert!(c.buf.is_empty());
        assert_eq!(received(&mut peer, 2).await, b"xy");
        drop(call);
    }
}
