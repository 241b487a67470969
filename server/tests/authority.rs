//! Any `:authority` is accepted, as etcd accepts it: etcdctl 3.4 given
//! scheme'd endpoints (it sends the URL itself), clientv3 3.5.0's
//! `#initially=[…]`, none at all; every RPC answers as with a plain
//! `host:port`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use cairn::proto::etcdserverpb::{RangeRequest, RangeResponse};
use common::*;
use prost::Message;

/// etcdctl's per-endpoint commands with a scheme'd endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_with_scheme_endpoints() {
    let c = Cluster::start(1, &[]).await;
    let url = c.members[0].client_url.clone();
    ctl(&url, &["put", "k", "v"]);
    for args in [
        &["endpoint", "status", "-w", "json"][..],
        &["endpoint", "hashkv", "-w", "json"],
        &["get", "k"],
        &["member", "list"],
    ] {
        let (ok, out, err) = etcdctl(&url, args);
        assert!(ok, "etcdctl {args:?} against {url}: {out}{err}");
        assert!(!err.contains("PROTOCOL_ERROR"), "{err}");
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// One Range call over a hand-made HTTP/2 connection whose request names
/// `authority` (`None`: no `:authority` field). Returns the response's
/// `grpc-status` and message.
fn range_with_authority(addr: &str, authority: Option<&[u8]>) -> (String, Option<RangeResponse>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    let mut fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/etcdserverpb.KV/Range"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ];
    if let Some(a) = authority {
        fields.insert(3, (b":authority", a));
    }
    let block = loona_hpack::Encoder::new().encode(fields);
    out.extend(frame(0x1, 0x4, 1, &block));
    let msg = RangeRequest {
        key: b"k".to_vec().into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    out.extend(frame(0x0, 0x1, 1, &body));
    s.write_all(&out).expect("send");

    let mut dec = loona_hpack::Decoder::new();
    let mut status = String::new();
    let mut answer = None;
    let mut data = Vec::new();
    loop {
        let mut head = [0u8; 9];
        if s.read_exact(&mut head).is_err() {
            break;
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).expect("payload");
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
        match head[3] {
            0x4 if head[4] & 0x1 == 0 => s.write_all(&frame(0x4, 0x1, 0, &[])).expect("ack"),
            0x1 if stream == 1 => {
                for (n, v) in dec.decode(&payload).expect("response headers") {
                    if n == b"grpc-status" {
                        status = String::from_utf8_lossy(&v).into_owned();
                    }
                }
                if head[4] & 0x1 != 0 {
                    break;
                }
            }
            0x0 if stream == 1 => data.extend_from_slice(&payload),
            0x3 if stream == 1 => {
                status = format!("reset {:?}", payload);
                break;
            }
            0x7 => break,
            _ => {}
        }
    }
    if data.len() >= 5 {
        answer = RangeResponse::decode(&data[5..]).ok();
    }
    (status, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_authority_form_is_served() {
    let c = Cluster::start(1, &[]).await;
    let url = c.members[0].client_url.clone();
    ctl(&url, &["put", "k", "v"]);
    let addr = url.trim_start_matches("http://").to_string();
    let forms: Vec<Option<Vec<u8>>> = vec![
        Some(addr.clone().into_bytes()),
        Some(url.clone().into_bytes()),
        Some(format!("#initially=[{url}]").into_bytes()),
        None,
    ];
    for form in forms {
        let addr = addr.clone();
        let f = form.clone();
        let (status, answer) =
            tokio::task::spawn_blocking(move || range_with_authority(&addr, f.as_deref()))
                .await
                .expect("join");
        let shown = form.map(|f| String::from_utf8_lossy(&f).into_owned());
        assert_eq!(status, "0", "authority {shown:?}");
        let kvs = answer.expect("a RangeResponse").kvs;
        assert_eq!(kvs.len(), 1, "authority {shown:?}");
        assert_eq!(&kvs[0].value[..], b"v");
    }
}
