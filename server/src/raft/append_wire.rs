//! The append stream over a plain TCP connection to the peer port.
//!
//! Replication's append stream ([`super::append_stream`]) carries one
//! request and one answer per batch of entries, back to back, for as long
//! as a follower keeps up. Over HTTP/2 each message passes through the
//! connection's own task on both sides (framing, flow control, a wake-up
//! per hop); here the task that produces a message writes it to the
//! socket itself and the reader takes it straight from the socket.
//!
//! The peer port serves both: a connection whose first byte is that of
//! [`PREFACE`] is an append stream, anything else goes to the gRPC server
//! (an HTTP/2 client always opens with `PRI * HTTP/2.0`).
//!
//! # Wire format
//!
//! - Leader → follower, once: [`PREFACE`] (15 bytes), the leader's cluster
//!   id (u64, big-endian), one reserved zero byte: 24 bytes, the length of
//!   HTTP/2's preface, so a member that speaks only gRPC reads all of it,
//!   finds no HTTP/2 preface and closes the connection.
//! - Follower → leader, once: [`PREFACE`] and a status byte: `0` accepted;
//!   `1` refused (another cluster), followed by one frame with the reason,
//!   and the connection closes. A leader that reads anything else takes
//!   it that the follower does not speak this protocol, and uses the gRPC
//!   stream instead (for a minute, then it asks again); a connection that
//!   closes during the hello is a follower not reached, as any other.
//! - Then frames: a u32 big-endian length and that many bytes, at most
//!   [`MAX_PEER_MESSAGE`]. The leader sends postcard-encoded
//!   `AppendEntriesRequest`s; the follower answers each, in order, with the
//!   same postcard answer the gRPC stream carries.
//! - Either side ends the stream by closing its half of the connection;
//!   an undecodable request makes the follower close after the answers to
//!   the requests before it. A leader that sees the connection end with
//!   requests unanswered reports the follower unreachable and openraft
//!   opens a new stream.
//!
//! Length: about 450 lines of code and 240 of tests; the framing, both
//! sides of the connection and the hello that picks the link are one
//! protocol, read together.

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use cairn_proto::cairnpb::RaftMessage;
use futures::{Stream, StreamExt};
use openraft::base::BoxStream;
use openraft::errors::{RPCError, Unreachable};
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::append_stream::{self, Inbound};
use super::{TypeConfig, MAX_PEER_MESSAGE};
use crate::accept::Conn;
use crate::tls::ServerTls;

/// What a leader's append connection opens with.
pub const PREFACE: &[u8; 15] = b"CAIRN-APPEND/1\n";

const HELLO_LEN: usize = 24;
const ACCEPTED: u8 = 0;
const REFUSED: u8 = 1;

/// How long a new connection may take to say what it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes one frame.
async fn write_frame<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n as usize <= MAX_PEER_MESSAGE)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a frame of {} bytes is over the limit", payload.len()),
            )
        })?;
    // Header and payload in one vectored write, without copying the
    // payload.
    let header = len.to_be_bytes();
    let mut frame = Buf::chain(&header[..], payload);
    w.write_all_buf(&mut frame).await
}

/// Reads frames off a connection's read half. [`FrameReader::next`] is
/// cancel safe: what was read of a frame stays in the buffer.
pub(super) struct FrameReader<R> {
    rd: R,
    buf: BytesMut,
}

impl<R: tokio::io::AsyncRead + Unpin + Send> FrameReader<R> {
    pub(super) fn new(rd: R) -> Self {
        Self {
            rd,
            buf: BytesMut::with_capacity(8 << 10),
        }
    }

    /// The next frame; `None` once the connection ended at a frame
    /// boundary. An end inside a frame, or a frame over the limit, is an
    /// error.
    pub(super) async fn next(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if len > MAX_PEER_MESSAGE {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a frame of {len} bytes is over the limit"),
                    ));
                }
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    return Ok(Some(self.buf.split_to(len).freeze()));
                }
                self.buf.reserve(4 + len - self.buf.len());
            } else {
                self.buf.reserve(4);
            }
            // `read_buf` is cancel safe: nothing is read if it is dropped.
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a frame",
                ));
            }
        }
    }
}

/// The leader side's read half, and the task writing its requests (it
/// ends when the answers are no longer wanted).
struct LeaderInbound {
    frames: FrameReader<OwnedReadHalf>,
    writer: tokio::task::JoinHandle<()>,
    /// Counts the answers' bytes (`etcd_network_peer_received_bytes_total`).
    received: Option<prometheus::IntCounter>,
}

impl Drop for LeaderInbound {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

impl Inbound for LeaderInbound {
    async fn next_message(&mut self) -> Result<Option<Bytes>, Unreachable<TypeConfig>> {
        let m = self.frames.next().await.map_err(|e| Unreachable::new(&e))?;
        if let (true, Some(c), Some(m)) = (crate::metrics::ON, &self.received, &m) {
            c.inc_by(4 + m.len() as u64);
        }
        Ok(m)
    }
}

/// An accepted append connection used one request at a time (the
/// heartbeat pipe): the caller writes a request and reads its answer
/// itself, no task in between.
pub(super) struct Connection {
    frames: FrameReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Connection {
    pub(super) fn new(conn: TcpStream) -> Self {
        let (rd, wr) = conn.into_split();
        Self {
            frames: FrameReader::new(rd),
            wr,
        }
    }

    /// Sends one request and reads the next answer.
    pub(super) async fn exchange(
        &mut self,
        request: &[u8],
    ) -> Result<Bytes, Unreachable<TypeConfig>> {
        write_frame(&mut self.wr, request)
            .await
            .map_err(|e| Unreachable::new(&e))?;
        match self.frames.next().await {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => Err(Unreachable::from_string("append connection closed")),
            Err(e) => Err(Unreachable::new(&e)),
        }
    }

    /// Whether the connection can no longer carry a request: the follower
    /// closed it (restarted, gave up on it), or sent something no request
    /// asked for.
    pub(super) fn is_closed(&self) -> bool {
        if !self.frames.buf.is_empty() {
            return true;
        }
        // Nothing to read is the only state in which it can go on.
        let mut probe = [0u8; 1];
        match self.frames.rd.try_read(&mut probe) {
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
            Ok(_) => true,
        }
    }
}

/// How an append connection to a follower turned out.
pub(super) enum Opened {
    /// The follower accepted the stream.
    Stream(TcpStream),
    /// The follower does not speak this protocol (gRPC only).
    NotSpoken,
}

/// Opens an append connection to the follower at `addr` (`host:port`).
/// Fails if the follower cannot be reached or refuses the stream.
pub(super) async fn connect(addr: &str, cluster_id: u64) -> Result<Opened, RPCError<TypeConfig>> {
    let unreachable = |e: io::Error| RPCError::Unreachable(Unreachable::new(&e));
    let mut s = TcpStream::connect(addr).await.map_err(unreachable)?;
    s.set_nodelay(true).map_err(unreachable)?;
    let mut hello = Vec::with_capacity(HELLO_LEN);
    hello.extend_from_slice(PREFACE);
    hello.extend_from_slice(&cluster_id.to_be_bytes());
    hello.push(0);
    s.write_all(&hello).await.map_err(unreachable)?;
    // Only bytes that are not the preface say the follower does not speak
    // this (an HTTP/2 server opens with its SETTINGS frame); a connection
    // that ends first (the follower died, was restarted) is a failure to
    // reach it, to be retried as such.
    let mut echo = [0u8; PREFACE.len() + 1];
    let mut got = 0;
    while got < echo.len() {
        let n = s.read(&mut echo[got..]).await.map_err(unreachable)?;
        if n == 0 {
            return Err(RPCError::Unreachable(Unreachable::from_string(
                "append connection closed during the hello",
            )));
        }
        got += n;
        let upto = got.min(PREFACE.len());
        if echo[..upto] != PREFACE[..upto] {
            return Ok(Opened::NotSpoken);
        }
    }
    match echo[PREFACE.len()] {
        ACCEPTED => Ok(Opened::Stream(s)),
        REFUSED => {
            let mut frames = FrameReader::new(&mut s);
            let reason = match frames.next().await {
                Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
                _ => "append stream refused".to_string(),
            };
            Err(RPCError::Unreachable(Unreachable::from_string(reason)))
        }
        _ => Ok(Opened::NotSpoken),
    }
}

/// Runs openraft's append stream over an accepted connection: `input`'s
/// requests written as they come, the answers read in order, each
/// expected within `timeout` of its request (see
/// [`append_stream::answers`]).
pub(super) fn stream<S>(
    conn: TcpStream,
    input: S,
    timeout: Duration,
    peer: Option<crate::metrics::PeerMetrics>,
) -> BoxStream<'static, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    let (rd, mut wr) = conn.into_split();
    let (outbound, outstanding) = append_stream::requests(input);
    let sent = peer.as_ref().map(|p| p.sent_bytes.clone());
    let writer = tokio::spawn(async move {
        let mut outbound = std::pin::pin!(outbound);
        while let Some(m) = outbound.next().await {
            if let Err(e) = write_frame(&mut wr, &m.payload).await {
                tracing::debug!(error = %e, "append connection: write failed");
                return;
            }
            if let (true, Some(c)) = (crate::metrics::ON, &sent) {
                c.inc_by(4 + m.payload.len() as u64);
            }
        }
        // No more requests: close our half; the follower ends too.
        let _ = wr.shutdown().await;
    });
    let inbound = LeaderInbound {
        frames: FrameReader::new(rd),
        writer,
        received: peer.map(|p| p.received_bytes),
    };
    Box::pin(append_stream::answers(inbound, outstanding, timeout))
}

/// What the follower side needs to serve append connections.
#[derive(Clone)]
pub struct FollowerSide {
    pub cluster_id: u64,
    pub raft: super::Raft,
    /// When an append from a current leader last arrived.
    pub leader_contact: Arc<Mutex<Option<Instant>>>,
    /// Turns true when the member stops; open streams end then.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

/// Reads a leader's hello and answers it. `Ok(true)`: the stream may
/// go on.
async fn accept_hello(s: &mut TcpStream, cluster_id: u64) -> io::Result<bool> {
    let mut hello = [0u8; HELLO_LEN];
    tokio::time::timeout(HELLO_TIMEOUT, s.read_exact(&mut hello))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no hello"))??;
    if &hello[..PREFACE.len()] != PREFACE {
        return Ok(false);
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&hello[PREFACE.len()..PREFACE.len() + 8]);
    let theirs = u64::from_be_bytes(id);
    let mut answer = PREFACE.to_vec();
    if theirs != cluster_id {
        let reason = format!(
            "append stream from cluster {theirs:x}, this member belongs to cluster {cluster_id:x}"
        );
        answer.push(REFUSED);
        s.write_all(&answer).await?;
        write_frame(s, reason.as_bytes()).await?;
        return Ok(false);
    }
    answer.push(ACCEPTED);
    s.write_all(&answer).await?;
    Ok(true)
}

/// Serves one append connection (its first byte already seen to be the
/// preface's) until the leader closes it, an answer cannot be written, or
/// the member stops.
async fn serve_connection(mut s: TcpStream, side: FollowerSide) {
    match accept_hello(&mut s, side.cluster_id).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::debug!(error = %e, "append connection: bad hello");
            return;
        }
    }
    let (rd, mut wr) = s.into_split();
    let requests = futures::stream::unfold(Some(FrameReader::new(rd)), |state| async move {
        let mut frames = state?;
        match frames.next().await {
            Ok(Some(payload)) => Some((Ok(RaftMessage { payload }), Some(frames))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    });
    let contact = Arc::clone(&side.leader_contact);
    let answers = append_stream::serve(&side.raft, Box::pin(requests), move || {
        if let Ok(mut t) = contact.lock() {
            *t = Some(Instant::now());
        }
    });
    let mut stop = side.stop.clone();
    let mut answers = std::pin::pin!(answers.take_until(async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
    while let Some(a) = answers.next().await {
        let m = match a {
            Ok(m) => m,
            Err(status) => {
                tracing::warn!(error = %status.message(), "append connection: ending");
                return;
            }
        };
        if let Err(e) = write_frame(&mut wr, &m.payload).await {
            tracing::debug!(error = %e, "append connection: write failed");
            return;
        }
    }
}

/// Accepts connections on the peer port: plain append connections are
/// served here (by `serve`), every other one (gRPC, and every connection
/// of an `https://` port once its handshake is done) is passed on to the
/// gRPC server through the returned stream. Accepting stops once `stop`
/// turns true.
pub(crate) fn split_incoming<F, Fut>(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    serve: F,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (
    impl Stream<Item = io::Result<Conn>> + Send + 'static,
    tokio::task::JoinHandle<()>,
)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Conn>>(64);
    let serve = Arc::new(serve);
    let task = crate::accept::spawn(listener, tls, "peer", stop, move |conn| {
        let tx = tx.clone();
        let serve = Arc::clone(&serve);
        async move {
            let s = match conn {
                Conn::Plain(s) => s,
                tls @ Conn::Tls(_) => {
                    let _ = tx.send(Ok(tls)).await;
                    return;
                }
            };
            let mut first = [0u8; 1];
            let append = matches!(
                tokio::time::timeout(HELLO_TIMEOUT, s.peek(&mut first)).await,
                Ok(Ok(1)) if first[0] == PREFACE[0]
            );
            if append {
                serve(s).await;
            } else {
                let _ = tx.send(Ok(Conn::Plain(s))).await;
            }
        }
    });
    (tokio_stream::wrappers::ReceiverStream::new(rx), task)
}

/// [`split_incoming`] serving append connections for `side`.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    side: FollowerSide,
) -> (
    impl Stream<Item = io::Result<Conn>> + Send + 'static,
    tokio::task::JoinHandle<()>,
) {
    let stop = side.stop.clone();
    split_incoming(
        listener,
        tls,
        move |s| serve_connection(s, side.clone()),
        stop,
    )
}

/// The `host:port` of a peer URL that the append connection can use
/// (plain `http` with a port), if any.
pub(super) fn socket_addr(url: &str) -> Option<String> {
    let uri: tonic::codegen::http::Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let authority = uri.authority()?;
    authority.port_u16()?;
    Some(authority.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn frames_split_across_reads_and_cancelled_reads_lose_nothing() {
        let (a, b) = pair().await;
        let (_ra, mut wa) = a.into_split();
        let (rb, _wb) = b.into_split();
        let mut frames = FrameReader::new(rb);
        let payload = vec![7u8; 100_000];
        let mut wire = (payload.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&payload);
        wire.extend_from_slice(&3u32.to_be_bytes());
        wire.extend_from_slice(b"abc");
        // Dribble the bytes in, and cancel reads while a frame is half in.
        let writer = tokio::spawn(async move {
            for chunk in wire.chunks(777) {
                wa.write_all(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            wa.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        loop {
            tokio::select! {
                r = frames.next() => match r.unwrap() {
                    Some(f) => got.push(f),
                    None => break,
                },
                _ = tokio::time::sleep(Duration::from_micros(300)) => {}
            }
        }
        writer.await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0][..], &payload[..]);
        assert_eq!(&got[1][..], b"abc");
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_or_cut_short_is_an_error() {
        let (mut a, b) = pair().await;
        let mut frames = FrameReader::new(b);
        a.write_all(&((MAX_PEER_MESSAGE as u32) + 1).to_be_bytes())
            .await
            .unwrap();
        let e = frames.next().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        let (mut a, b) = pair().await;
        let mut frames = FrameReader::new(b);
        a.write_all(&10u32.to_be_bytes()).await.unwrap();
        a.write_all(b"short").await.unwrap();
        drop(a);
        let e = frames.next().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A peer port with a gRPC server (health) behind `split_incoming`,
    /// whose append connections echo every frame back after the hello.
    async fn peer_port(cluster_id: u64) -> (String, tokio::sync::watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let (incoming, _task) = split_incoming(
            listener,
            None,
            move |mut s: TcpStream| async move {
                if !accept_hello(&mut s, cluster_id).await.unwrap_or(false) {
                    return;
                }
                let (rd, mut wr) = s.into_split();
                let mut frames = FrameReader::new(rd);
                while let Ok(Some(f)) = frames.next().await {
                    if write_frame(&mut wr, &f).await.is_err() {
                        return;
                    }
                }
            },
            stop.clone(),
        );
        let (_reporter, health) = tonic_health::server::health_reporter();
        let mut stop_srv = stop.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop_srv.wait_for(|s| *s).await;
                })
                .await;
        });
        (addr, stop_tx)
    }

    async fn grpc_health(addr: &str) -> bool {
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::HealthCheckRequest;
        let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("an endpoint")
            .connect()
            .await
        else {
            return false;
        };
        let mut c = HealthClient::new(channel);
        c.check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok()
    }

    #[tokio::test]
    async fn the_peer_port_serves_grpc_and_append_connections_side_by_side() {
        let (addr, _stop) = peer_port(0xc1).await;
        assert!(grpc_health(&addr).await, "gRPC on the peer port");
        let Opened::Stream(s) = connect(&addr, 0xc1).await.unwrap() else {
            panic!("append connection not accepted");
        };
        let (rd, mut wr) = s.into_split();
        let req = AppendEntriesRequest::<TypeConfig> {
            vote: super::super::Vote::new(1, 1),
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        };
        let bytes = super::super::encode(&req).unwrap();
        write_frame(&mut wr, &bytes).await.unwrap();
        let mut frames = FrameReader::new(rd);
        assert_eq!(frames.next().await.unwrap().unwrap(), Bytes::from(bytes));
        // gRPC still works with the append connection open.
        assert!(grpc_health(&addr).await);
    }

    #[tokio::test]
    async fn a_heartbeat_connection_exchanges_in_turn_and_sees_the_follower_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            assert!(accept_hello(&mut s, 0xc1).await.unwrap());
            let (rd, mut wr) = s.into_split();
            let mut frames = FrameReader::new(rd);
            for _ in 0..2 {
                let f = frames.next().await.unwrap().unwrap();
                write_frame(&mut wr, &f).await.unwrap();
            }
            let _ = close_rx.await;
        });
        let Opened::Stream(s) = connect(&addr, 0xc1).await.unwrap() else {
            panic!("not accepted");
        };
        let mut conn = Connection::new(s);
        assert!(!conn.is_closed());
        assert_eq!(&conn.exchange(b"one").await.unwrap()[..], b"one");
        assert_eq!(&conn.exchange(b"two").await.unwrap()[..], b"two");
        assert!(!conn.is_closed());
        drop(close_tx);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !conn.is_closed() {
            assert!(Instant::now() < deadline, "close not seen");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(conn.exchange(b"three").await.is_err());
    }

    #[tokio::test]
    async fn another_clusters_append_connection_is_refused_with_the_reason() {
        let (addr, _stop) = peer_port(0xc1).await;
        match connect(&addr, 0xc2).await {
            Err(RPCError::Unreachable(e)) => {
                let text = e.to_string();
                assert!(text.contains("from cluster c2"), "{text}");
                assert!(text.contains("belongs to cluster c1"), "{text}");
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("accepted an append stream from another cluster"),
        }
    }

    #[tokio::test]
    async fn a_grpc_only_member_is_seen_not_to_speak_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let (_reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(incoming),
        );
        let opened = tokio::time::timeout(Duration::from_secs(5), connect(&addr, 0xc1))
            .await
            .expect("a gRPC-only server answers the hello at once");
        assert!(matches!(opened, Ok(Opened::NotSpoken)));
    }

    #[tokio::test]
    async fn a_connection_that_ends_during_the_hello_is_a_failure_not_a_grpc_only_member() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            // Reads the hello and closes; then closes one at once.
            let (mut s, _) = listener.accept().await.unwrap();
            let mut hello = [0u8; HELLO_LEN];
            s.read_exact(&mut hello).await.unwrap();
            drop(s);
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        });
        for _ in 0..2 {
            match connect(&addr, 0xc1).await {
                Err(RPCError::Unreachable(_)) => {}
                Err(e) => panic!("wrong error: {e}"),
                Ok(Opened::NotSpoken) => panic!("taken for a gRPC-only member"),
                Ok(Opened::Stream(_)) => panic!("accepted"),
            }
        }
    }

    #[test]
    fn socket_addresses_of_peer_urls() {
        assert_eq!(
            socket_addr("http://127.0.0.1:2380").as_deref(),
            Some("127.0.0.1:2380")
        );
        assert_eq!(
            socket_addr("http://[::1]:2380/").as_deref(),
            Some("[::1]:2380")
        );
        assert_eq!(socket_addr("https://127.0.0.1:2380"), None);
        assert_eq!(socket_addr("http://node1"), None);
        assert_eq!(socket_addr("not a url"), None);
    }
}
