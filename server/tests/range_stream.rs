//! `KV.RangeStream` (etcd 3.7) against a real member: a client that
//! merges the chunks gets what a `Range` at the stream's revision
//! answers (with a limit, keys only, writes going on meanwhile); chunks
//! before the last carry keys only; a sort order is refused; a
//! compacted revision is refused with etcd's error.

mod common;

use cairn::proto::etcdserverpb::kv_client::KvClient;
use cairn::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn::proto::etcdserverpb::{CompactionRequest, RangeRequest, RangeResponse};
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
