//! `KV.RangeStream` (etcd 3.7) against a real member: a client that
//! merges the chunks gets what a `Range` at the stream's revision
//! answers (with a limit, keys only, writes going on meanwhile); chunks
//! before the last carry keys only; a sort order is refused; a
//! compacted revision is refused with etcd's error.

mod common;

use cairn::proto::etcdserverpb::kv_client::KvClient;
use cairn::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn::proto::etcdserverpb::request_op::Request as Op;
use cairn::proto::etcdserverpb::{
    CompactionRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest,
};
use common::{put, Cluster};
use tonic::transport::Channel;

/// The chunks of a stream merged, and how many there were.
async fn merged(kv: &mut KvClient<Channel>, req: RangeRequest) -> (RangeResponse, usize) {
    let mut stream = kv.range_stream(req).await.expect("stream").into_inner();
    let mut out = RangeResponse::default();
    let mut chunks = 0;
    while let Some(c) = stream.message().await.expect("chunk") {
        let r = c.range_response.expect("a range response in each chunk");
        chunks += 1;
        assert!(out.header.is_none(), "a chunk after the last");
        out.kvs.extend(r.kvs);
        if r.header.is_some() {
            out.header = r.header;
            out.count = r.count;
            out.more = r.more;
        } else {
            assert_eq!((r.count, r.more), (0, false), "an inner chunk with counts");
        }
    }
    assert!(out.header.is_some(), "no last chunk");
    (out, chunks)
}

fn prefix(p: &str) -> RangeRequest {
    let mut end = p.as_bytes().to_vec();
    *end.last_mut().expect("non-empty") += 1;
    RangeRequest {
        key: p.as_bytes().to_vec().into(),
        range_end: end.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_range_merges_into_the_range_at_its_revision() {
    let c = Cluster::start(1, &[]).await;
    let mut kv = c.members[0].kv().await;
    let value = "v".repeat(700);
    for i in 0..3000 {
        put(&mut kv, &format!("s/{i:05}"), &value).await;
    }
    put(&mut kv, "t/outside", "x").await;

    let (all, chunks) = merged(&mut kv, prefix("s/")).await;
    assert!(chunks > 2, "{chunks} chunks for ~2 MiB");
    let rev = all.header.as_ref().expect("header").revision;
    let unary = kv
        .range(RangeRequest {
            revision: rev,
            ..prefix("s/")
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(all.kvs, unary.kvs);
    assert_eq!((all.count, all.more), (3000, false));

    // With a limit, keys only.
    let req = RangeRequest {
        limit: 1234,
        keys_only: true,
        ..prefix("s/")
    };
    let (some, _) = merged(&mut kv, req.clone()).await;
    let unary = kv
        .range(RangeRequest {
            revision: rev,
            ..req
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(some.kvs, unary.kvs);
    assert_eq!((some.count, some.more), (unary.count, unary.more));
    assert_eq!(some.kvs.len(), 1234);
    assert!(some.kvs.iter().all(|kv| kv.value.is_empty()));

    // Writes while it streams: not in it.
    let mut stream = kv
        .range_stream(prefix("s/"))
        .await
        .expect("stream")
        .into_inner();
    let first = stream.message().await.expect("chunk").expect("a chunk");
    let mut keys: Vec<_> = first.range_response.expect("range").kvs;
    for i in 0..50 {
        put(&mut kv, &format!("s/{i:05}x"), "new").await;
    }
    let mut header = None;
    while let Some(c) = stream.message().await.expect("chunk") {
        let r = c.range_response.expect("range");
        keys.extend(r.kvs);
        header = header.or(r.header);
    }
    assert_eq!(keys.len(), 3000, "keys written during the stream");
    assert_eq!(header.expect("header").revision, rev);

    // A sort order is refused.
    let err = kv
        .range_stream(RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Key as i32,
            ..prefix("s/")
        })
        .await
        .map(|s| s.into_inner());
    let err = match err {
        Err(e) => e,
        Ok(mut s) => s.message().await.expect_err("a sorted stream"),
    };
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");

    // A revision compacted away is refused as Range refuses it.
    let now = put(&mut kv, "t/outside", "y").await;
    kv.compact(CompactionRequest {
        revision: now,
        physical: true,
    })
    .await
    .expect("compact");
    let err = match kv
        .range_stream(RangeRequest {
            revision: rev,
            ..prefix("s/")
        })
        .await
    {
        Err(e) => e,
        Ok(s) => {
            let mut s = s.into_inner();
            loop {
                match s.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("a stream at a compacted revision"),
                    Err(e) => break e,
                }
            }
        }
    };
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
}

/// A unary Range whose answer is over the size the member holds whole
/// (4 MiB) is encoded as it is sent: clients get the same answer as
/// from ranges small enough to be held, in every order and with a
/// limit; and a compaction above its revision while it is sent ends it
/// with etcd's compacted error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_range_is_sent_as_it_is_encoded() {
    let c = Cluster::start(1, &[]).await;
    let mut kv = c.members[0]
        .kv()
        .await
        .max_decoding_message_size(usize::MAX);
    let value = "w".repeat(2000);
    put_many(&mut kv, 4000, |i| format!("{i}{value}")).await;
    let rev = put(&mut kv, "m/outside", "x").await;

    // The whole prefix, against pages of it read at the same revision.
    let whole = kv.range(prefix("l/")).await.expect("range").into_inner();
    assert_eq!(
        (whole.count, whole.more, whole.kvs.len()),
        (4000, false, 4000)
    );
    assert_eq!(whole.header.as_ref().expect("header").revision, rev);
    let mut paged = Vec::new();
    let mut from = b"l/".to_vec();
    loop {
        let page = kv
            .range(RangeRequest {
                key: from.clone().into(),
                limit: 500,
                revision: rev,
                ..prefix("l/")
            })
            .await
            .expect("page")
            .into_inner();
        let last = page.kvs.last().map(|kv| kv.key.to_vec());
        paged.extend(page.kvs);
        match (page.more, last) {
            (true, Some(mut k)) => {
                k.push(0);
                from = k;
            }
            _ => break,
        }
    }
    assert_eq!(whole.kvs, paged);

    // Descending, and cut by a limit.
    let down = kv
        .range(RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Key as i32,
            ..prefix("l/")
        })
        .await
        .expect("descending")
        .into_inner();
    let mut reversed = whole.kvs.clone();
    reversed.reverse();
    assert_eq!(down.kvs, reversed);
    let cut = kv
        .range(RangeRequest {
            limit: 3500,
            ..prefix("l/")
        })
        .await
        .expect("limited")
        .into_inner();
    assert_eq!((cut.count, cut.more), (4000, true));
    assert_eq!(cut.kvs[..], whole.kvs[..3500]);

    // Paced by a client that takes one piece, then waits while every key
    // is overwritten and the store compacted above the range's revision.
    let mut stream = RawRange::send(&c.members[0].endpoint(), prefix("l/")).await;
    let first = stream.piece().await.expect("a first piece");
    assert!(first > 0);
    let now = put_many(&mut kv, 4000, |_| "new".into()).await;
    kv.compact(CompactionRequest {
        revision: now,
        physical: false,
    })
    .await
    .expect("compact");
    while stream.piece().await.is_some() {}
    let (code, message) = stream.status().await;
    assert_eq!(code, "11", "{message}");
    assert_eq!(
        message,
        "etcdserver: mvcc: required revision has been compacted"
    );
    assert!(
        stream.received < 4000 * 2000,
        "the whole answer was sent before the compaction ({} bytes)",
        stream.received
    );
}

/// Puts `l/00000` .. `l/{n-1}` with `value(i)`, 100 to a txn; the last
/// revision.
async fn put_many(kv: &mut KvClient<Channel>, n: usize, value: impl Fn(usize) -> String) -> i64 {
    let mut rev = 0;
    for from in (0..n).step_by(100) {
        let success = (from..(from + 100).min(n))
            .map(|i| RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: format!("l/{i:05}").into_bytes().into(),
                    value: value(i).into_bytes().into(),
                    ..Default::default()
                })),
            })
            .collect();
        let r = kv
            .txn(TxnRequest {
                success,
                ..Default::default()
            })
            .await
            .expect("txn")
            .into_inner();
        rev = r.header.expect("header").revision;
    }
    rev
}

/// A Range call over a raw HTTP/2 stream whose pieces the test takes one
/// at a time (the flow-control window then holds the server back).
struct RawRange {
    body: h2::RecvStream,
    received: usize,
}

impl RawRange {
    async fn send(endpoint: &str, req: RangeRequest) -> RawRange {
        use prost::Message;
        let tcp = tokio::net::TcpStream::connect(endpoint)
            .await
            .expect("connect");
        let (client, conn) = h2::client::handshake(tcp).await.expect("handshake");
        tokio::spawn(conn);
        let mut client = client.ready().await.expect("ready");
        let head = http::Request::post(format!("http://{endpoint}/etcdserverpb.KV/Range"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let (resp, mut send) = client.send_request(head, false).expect("send");
        let msg = req.encode_to_vec();
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        frame.extend_from_slice(&msg);
        send.send_data(frame.into(), true).expect("body");
        let resp = resp.await.expect("response");
        assert_eq!(resp.status(), 200);
        RawRange {
            body: resp.into_body(),
            received: 0,
        }
    }

    /// The next piece's length, its window given back; `None` at the end.
    async fn piece(&mut self) -> Option<usize> {
        let data = self.body.data().await?.expect("data");
        self.received += data.len();
        let _ = self.body.flow_control().release_capacity(data.len());
        Some(data.len())
    }

    /// grpc-status and the decoded grpc-message from the trailers.
    async fn status(&mut self) -> (String, String) {
        let t = self
            .body
            .trailers()
            .await
            .expect("trailers")
            .expect("some trailers");
        let get = |k: &str| {
            t.get(k)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        };
        (get("grpc-status"), percent_decoded(&get("grpc-message")))
    }
}

/// gRPC's percent-encoding of a status message undone.
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
