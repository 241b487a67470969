//! A lean gRPC client for unary KV calls, straight over HTTP/2 (the `h2`
//! crate).
//!
//! The load generator shares the machine's cores with the servers it
//! measures, so every microsecond of CPU it spends per request is taken
//! from them, and the same for Cairn and for etcd. tonic's `Channel`
//! puts a buffer task, a per-request timeout, origin rewriting and
//! hyper's client (which spawns a task per request body) between a call
//! and the socket; this client keeps only what a unary call needs: one
//! HEADERS frame, one DATA frame with the length-prefixed message, and
//! the answer's DATA and trailers. No compression, no TLS (the loads
//! never ask for either); streaming calls (watch, lease keep-alive) still
//! go through tonic.
//!
//! What goes on the wire is what any gRPC client sends: `POST` to
//! `/<package>.<Service>/<Method>`, `content-type: application/grpc`,
//! `te: trailers`. The answer's `grpc-status` (in the trailers, or in
//! the headers of a trailers-only answer) becomes a [`tonic::Status`].

use std::future::poll_fn;

use anyhow::{Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use cairn_proto::etcdserverpb::{
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use h2::client::SendRequest;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Uri};
use tonic::{Code, Status};

/// HTTP/2 windows the client announces: the same as tonic's client (by
/// way of hyper's defaults), so a server sees the same flow control
/// whichever client drives it.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONN_WINDOW: u32 = 5 * 1024 * 1024;

/// Longest answer accepted; a list load reads thousands of keys.
const MAX_MESSAGE: usize = 1 << 30;

/// One HTTP/2 connection; clones share it, each call its own stream.
#[derive(Clone)]
pub struct Conn {
    send: SendRequest<Bytes>,
    authority: Authority,
    scheme: Scheme,
}

/// HTTP/2 over `io`, its connection driven by a task of its own.
async fn handshake<T>(h2: &h2::client::Builder, io: T, addr: &str) -> Result<SendRequest<Bytes>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2
        .handshake::<_, Bytes>(io)
        .await
        .with_context(|| format!("HTTP/2 handshake with {addr}"))?;
    tokio::spawn(async move {
        // Ends when the server closes the connection or every handle is
        // dropped; calls in flight then fail with the cause.
        let _ = connection.await;
    });
    Ok(send)
}

impl Conn {
    /// Connects to `endpoint` (`host:port`, `http://host:port` or, with
    /// `tls`, `https://host:port`).
    pub async fn connect(endpoint: &str, tls: Option<&tokio_rustls::TlsConnector>) -> Result<Conn> {
        let addr = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"))
            .unwrap_or(endpoint);
        let addr = addr.trim_end_matches('/');
        let authority: Authority = addr
            .parse()
            .with_context(|| format!("endpoint {endpoint:?}"))?;
        let tcp = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .with_context(|| format!("connect to {addr}: timed out"))?
        .with_context(|| format!("connect to {addr}"))?;
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        let mut h2 = h2::client::Builder::new();
        h2.initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW);
        let send = match tls {
            Some(tls) => {
                let stream = crate::tls::connect(tls, authority.host(), tcp).await?;
                handshake(&h2, stream, addr).await?
            }
            None => handshake(&h2, tcp, addr).await?,
        };
        let scheme = if tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        Ok(Conn {
            send,
            authority,
            scheme,
        })
    }

    /// A KV client over this connection.
    pub fn kv(&self) -> Kv {
        Kv { conn: self.clone() }
    }

    /// One unary call of `path` with `req`.
    async fn unary<Q, R>(&mut self, path: &'static str, req: &Q) -> Result<R, Status>
    where
        Q: prost::Message,
        R: prost::Message + Default,
    {
        let len = req.encoded_len();
        let mut body = BytesMut::with_capacity(5 + len);
        body.put_u8(0);
        body.put_u32(u32::try_from(len).map_err(|_| Status::internal("request too large"))?);
        req.encode(&mut body)
            .map_err(|e| Status::internal(format!("encode: {e}")))?;

        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::from_static(path))
            .build()
            .map_err(|e| Status::internal(format!("uri: {e}")))?;
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));

        poll_fn(|cx| self.send.poll_ready(cx))
            .await
            .map_err(transport)?;
        let (answer, mut stream) = self.send.send_request(request, false).map_err(transport)?;
        stream.send_data(body.freeze(), true).map_err(transport)?;

        let (parts, mut body) = answer.await.map_err(transport)?.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(Status::unknown(format!("HTTP status {}", parts.status)));
        }
        if let Some(status) = grpc_status(&parts.headers) {
            // A trailers-only answer: no message follows.
            return Err(match status {
                Ok(()) => Status::internal("answer without a message"),
                Err(s) => s,
            });
        }
        // Most answers arrive in one DATA frame; gather only when not.
        let mut first: Option<Bytes> = None;
        let mut more = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(transport)?;
            let _ = body.flow_control().release_capacity(chunk.len());
            match &first {
                None if more.is_empty() => first = Some(chunk),
                _ => {
                    if let Some(f) = first.take() {
                        more.extend_from_slice(&f);
                    }
                    more.extend_from_slice(&chunk);
                    if more.len() > MAX_MESSAGE + 5 {
                        return Err(Status::resource_exhausted("answer too large"));
                    }
                }
            }
        }
        let trailers = body.trailers().await.map_err(transport)?;
        match trailers.as_ref().and_then(grpc_status) {
            Some(Ok(())) => {}
            Some(Err(s)) => return Err(s),
            None => return Err(Status::internal("answer without grpc-status")),
        }
        let mut data = first.unwrap_or_else(|| more.freeze());
        decode(&mut data)
    }
}

/// Decodes one length-prefixed, uncompressed message that fills `data`.
fn decode<R: prost::Message + Default>(data: &mut Bytes) -> Result<R, Status> {
    if data.len() < 5 {
        return Err(Status::internal("answer shorter than its prefix"));
    }
    if data.get_u8() != 0 {
        return Err(Status::internal("compressed answer (none was asked for)"));
    }
    let len = data.get_u32() as usize;
    if len != data.len() {
        return Err(Status::internal(format!(
            "answer of {} bytes after a prefix of {len}",
            data.len()
        )));
    }
    R::decode(data).map_err(|e| Status::internal(format!("decode: {e}")))
}

/// The outcome `headers` carry, if they carry `grpc-status`: `Ok` for
/// code 0, else the status with its percent-decoded `grpc-message`.
fn grpc_status(headers: &http::HeaderMap) -> Option<Result<(), Status>> {
    let code = Code::from_bytes(headers.get("grpc-status")?.as_bytes());
    if code == Code::Ok {
        return Some(Ok(()));
    }
    let message = headers
        .get("grpc-message")
        .map(|m| percent_decode(m.as_bytes()))
        .unwrap_or_default();
    Some(Err(Status::new(code, message)))
}

/// Undoes gRPC's `%XX` escaping of `grpc-message`; a malformed escape is
/// kept as it stands.
fn percent_decode(raw: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn transport(e: h2::Error) -> Status {
    Status::unavailable(format!("transport: {e}"))
}

/// The KV calls the loads make.
#[derive(Clone)]
pub struct Kv {
    conn: Conn,
}

impl Kv {
    pub async fn put(&mut self, req: PutRequest) -> Result<PutResponse, Status> {
        self.conn.unary("/etcdserverpb.KV/Put", &req).await
    }

    pub async fn range(&mut self, req: RangeRequest) -> Result<RangeResponse, Status> {
        self.conn.unary("/etcdserverpb.KV/Range", &req).await
    }

    pub async fn txn(&mut self, req: TxnRequest) -> Result<TxnResponse, Status> {
        self.conn.unary("/etcdserverpb.KV/Txn", &req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::etcdserverpb::ResponseHeader;
    use prost::Message;

    fn framed(msg: &impl Message) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(0);
        b.put_u32(msg.encoded_len() as u32);
        msg.encode(&mut b).expect("encode into BytesMut");
        b.freeze()
    }

    #[test]
    fn decodes_a_framed_message() {
        let sent = PutResponse {
            header: Some(ResponseHeader {
                revision: 42,
                ..Default::default()
            }),
            prev_kv: None,
        };
        let got: PutResponse = decode(&mut framed(&sent)).expect("decode");
        assert_eq!(got, sent);
    }

    #[test]
    fn rejects_bad_frames() {
        let sent = framed(&PutResponse {
            header: Some(ResponseHeader {
                revision: 7,
                ..Default::default()
            }),
            prev_kv: None,
        });
        // Cut short, compressed flag, trailing byte.
        let mut short = sent.slice(..sent.len() - 1);
        assert!(decode::<PutResponse>(&mut short).is_err());
        let mut compressed = BytesMut::from(&sent[..]);
        compressed[0] = 1;
        assert!(decode::<PutResponse>(&mut compressed.freeze()).is_err());
        let mut long = BytesMut::from(&sent[..]);
        long.put_u8(0);
        assert!(decode::<PutResponse>(&mut long.freeze()).is_err());
        assert!(decode::<PutResponse>(&mut Bytes::from_static(&[0, 0])).is_err());
    }

    #[test]
    fn reads_grpc_status() {
        let mut h = http::HeaderMap::new();
        assert!(grpc_status(&h).is_none());
        h.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(matches!(grpc_status(&h), Some(Ok(()))));
        h.insert("grpc-status", HeaderValue::from_static("11"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("etcdserver: mvcc: required revision is a future revision%21"),
        );
        let Some(Err(s)) = grpc_status(&h) else {
            panic!("code 11 is an error");
        };
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision is a future revision!"
        );
        assert_eq!(percent_decode(b"50%"), "50%");
        assert_eq!(percent_decode(b"%zz%41"), "%zzA");
    }
}
