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
//! core; the episode ends at the next connection accepted.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

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
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            let (tcp, addr) = match accepted {
                Ok(a) => a,
                Err(e) if out_of_resources(&e) => {
                    if backoff.is_zero() {
                        tracing::error!(
                            port,
                            error = %e,
                            "cannot accept connections: out of file descriptors or memory; \
                             pausing accepts until one succeeds"
                        );
                    }
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
            if !backoff.is_zero() {
                tracing::info!(port, "accepting connections again");
                backoff = Duration::ZERO;
            }
            // Nagle off: a message written as two segments would wait for
            // the other side's delayed ACK (40 ms).
            let _ = tcp.set_nodelay(true);
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
