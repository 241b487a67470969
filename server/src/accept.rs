//! Accepting connections on a listening port: the TLS handshake when the
//! port's URL is `https://`, and what the accept loop does when the
//! process runs out of file descriptors.
//!
//! One task accepts; each accepted connection gets its own task, which
//! runs the handshake (bounded by [`HANDSHAKE_TIMEOUT`]) and then hands
//! the connection on, so a client that stalls its handshake holds up no
//! one. A plain connection must send its first bytes within the same
//! time, or it is closed: a connection that never speaks would otherwise
//! hold a descriptor for ever (HTTP/2's keepalive pings, which close
//! half-open connections later on, start only after the preface). A refused handshake is logged with the client's
//! address. An accept that fails for want of descriptors (`EMFILE`,
//! `ENFILE`) or memory is logged once per episode and retried with a
//! growing pause (up to a second) instead of at once, which would spin a
//! core; the episode ends at the next connection accepted. Every
//! accepted connection has TCP keepalive on, so one whose other end
//! vanished is closed within about a minute.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::tls::{ServerTls, HANDSHAKE_TIMEOUT};

/// An accepted connection: plain TCP, or TLS over it.
pub enum Conn {
    /// A connection to an `http://` port.
    Plain(TcpStream),
    /// A connection to an `https://` port, handshake done.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }

    /// The common name of the certificate the client presented and the
    /// port verified, if any.
    pub fn client_common_name(&self) -> Option<String> {
        match self {
            Conn::Plain(_) => None,
            Conn::Tls(s) => {
                let certs = s.get_ref().1.peer_certificates()?;
                crate::tls::common_name(certs.first()?)
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, data),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp().connect_info()
    }
}

/// TCP keepalive on every accepted connection: probes after 30 s of
/// silence, every 10 s, and the connection is closed after 3 unanswered
/// (about a minute for a half-open connection).
fn keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3)
}

/// A shortage that goes on is logged again this often.
const RELOG_AFTER: Duration = Duration::from_secs(60);

/// A shortage is over once accepts went this long without one.
const SHORTAGE_OVER_AFTER: Duration = Duration::from_secs(5);

/// The longest pause between accepts while descriptors are short.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Whether an accept error means the process or system is out of a
/// resource (rather than one connection failing).
fn out_of_resources(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(e),
        Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
    )
}

/// Accepts connections on `listener` until `stop` turns true, each (after
/// its TLS handshake when `tls` is given) handed to `handle` on a task of
/// its own. `port` names the port in the log.
pub fn spawn<F, Fut>(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    port: &'static str,
    mut stop: tokio::sync::watch::Receiver<bool>,
    handle: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(Conn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        let mut backoff = Duration::ZERO;
        // The current shortage, if any: when it was last seen, and when
        // it was last logged.
        let mut short: Option<(Instant, Instant)> = None;
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            let (tcp, addr) = match accepted {
                Ok(a) => a,
                Err(e) if out_of_resources(&e) => {
                    let now = Instant::now();
                    let logged = match short {
                        Some((_, logged)) if now.duration_since(logged) < RELOG_AFTER => logged,
                        _ => {
                            tracing::error!(
                                port,
                                error = %e,
                                "cannot accept connections: out of file descriptors or memory; \
                                 pausing between accepts"
                            );
                            now
                        }
                    };
                    short = Some((now, logged));
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_BACKOFF);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    continue;
                }
                Err(e) => {
                    // One connection's failure (reset before it was
                    // accepted, and the like).
                    tracing::debug!(port, error = %e, "accept failed");
                    continue;
                }
            };
            if let Some((seen, _)) = short {
                // Over once accepts have gone on without a shortage for a
                // while (one freed descriptor is not the end of it).
                if seen.elapsed() >= SHORTAGE_OVER_AFTER {
                    tracing::info!(port, "accepting connections again");
                    short = None;
                    backoff = Duration::ZERO;
                }
            }
            // Nagle off: a message written as two segments would wait for
            // the other side's delayed ACK (40 ms).
            let _ = tcp.set_nodelay(true);
            // A peer that vanished (power loss, a cut cable) never closes
            // its connection: TCP keepalive finds it and closes ours,
            // whatever protocol the connection speaks.
            let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive());
            let handle = Arc::clone(&handle);
            let tls = tls.clone();
            tokio::spawn(async move {
                let conn = match tls {
                    None => {
                        if !speaks(&tcp).await {
                            tracing::debug!(port, remote = %addr, "closed a connection that sent nothing");
                            return;
                        }
                        Conn::Plain(tcp)
                    }
                    Some(tls) => match tls.accept(tcp).await {
                        Ok(s) => Conn::Tls(Box::new(s)),
                        Err(e) => {
                            refused(port, addr, &e);
                            return;
                        }
                    },
                };
                handle(conn).await;
            });
        }
    })
}

/// Whether a plain connection sends its first bytes within
/// [`HANDSHAKE_TIMEOUT`] (every client of these ports speaks first: an
/// HTTP/2 preface, or an append stream's hello). One that does not is
/// closed instead of holding a descriptor for ever.
async fn speaks(tcp: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await,
        Ok(Ok(1))
    )
}

fn refused(port: &'static str, addr: SocketAddr, e: &io::Error) {
    tracing::warn!(port, remote = %addr, error = %e, "rejected connection: TLS handshake failed");
}
