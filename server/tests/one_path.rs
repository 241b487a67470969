//! The embedded library and the gRPC server take one code path: the same
//! scenario — writes, reads at old and future revisions, txns both ways,
//! compaction, leases, and requests etcd refuses — run through the
//! in-process [`cairn::Client`] of one member and through etcd's gRPC API
//! of another gives the same answers, field for field, and the same
//! errors, code and message.

use std::time::Duration;

use bytes::Bytes;
use cairn::proto::etcdserverpb as pb;
use cairn::proto::etcdserverpb::kv_client::KvClient;
use cairn::proto::etcdserverpb::lease_client::LeaseClient;
use cairn::{Client, Config, Node};
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use tonic::transport::Channel;
use tonic::Code;

/// One call of the scenario.
#[derive(Clone, Debug)]
enum Call {
    Put(pb::PutRequest),
    Range(pb::RangeRequest),
    Delete(pb::DeleteRangeRequest),
    Txn(pb::TxnRequest),
    Compact(i64),
    LeaseGrant(pb::LeaseGrantRequest),
    LeaseTimeToLive(i64),
    LeaseRevoke(i64),
}

/// An answer with the member-specific header fields and the ticking TTL
/// left out, or the error's code and message.
type Answer = Result<String, (Code, String)>;

fn header(h: Option<pb::ResponseHeader>) -> Option<pb::ResponseHeader> {
    h.map(|h| pb::ResponseHeader {
        revision: h.revision,
        ..Default::default()
    })
}

macro_rules! answer {
    ($r:expr) => {{
        let mut r = $r;
        r.header = header(r.header);
        format!("{r:?}")
    }};
}

fn txn_answer(mut r: pb::TxnResponse) -> String {
    r.header = header(r.header);
    for op in &mut r.responses {
        use pb::response_op::Response;
        match &mut op.response {
            Some(Response::ResponseRange(x)) => x.header = header(x.header.take()),
            Some(Response::ResponsePut(x)) => x.header = header(x.header.take()),
            Some(Response::ResponseDeleteRange(x)) => x.header = header(x.header.take()),
            Some(Response::ResponseTxn(x)) => x.header = header(x.header.take()),
            None => {}
        }
    }
    format!("{r:?}")
}

fn ttl_answer(mut r: pb::LeaseTimeToLiveResponse) -> String {
    r.header = header(r.header);
    r.ttl = r.ttl.signum();
    format!("{r:?}")
}

async fn embedded(c: &Client, call: Call) -> Answer {
    let e = |e: cairn::Error| {
        let s = tonic::Status::from(e);
        (s.code(), s.message().to_string())
    };
    match call {
        Call::Put(r) => c.put(r).await.map(|r| answer!(r)).map_err(e),
        Call::Range(r) => c.range(r).await.map(|r| answer!(r)).map_err(e),
        Call::Delete(r) => c.delete_range(r).await.map(|r| answer!(r)).map_err(e),
        Call::Txn(r) => c.txn(r).await.map(txn_answer).map_err(e),
        Call::Compact(rev) => c
            .compact(pb::CompactionRequest {
                revision: rev,
                physical: true,
            })
            .await
            .map(|r| answer!(r))
            .map_err(e),
        Call::LeaseGrant(r) => c.lease_grant(r).await.map(|r| answer!(r)).map_err(e),
        Call::LeaseTimeToLive(id) => c
            .lease_time_to_live(id, true)
            .await
            .map(ttl_answer)
            .map_err(e),
        Call::LeaseRevoke(id) => c.lease_revoke(id).await.map(|r| answer!(r)).map_err(e),
    }
}

async fn remote(ch: &Channel, call: Call) -> Answer {
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch.clone());
    let e = |s: tonic::Status| (s.code(), s.message().to_string());
    match call {
        Call::Put(r) => kv.put(r).await.map(|r| answer!(r.into_inner())).map_err(e),
        Call::Range(r) => kv
            .range(r)
            .await
            .map(|r| answer!(r.into_inner()))
            .map_err(e),
        Call::Delete(r) => kv
            .delete_range(r)
            .await
            .map(|r| answer!(r.into_inner()))
            .map_err(e),
        Call::Txn(r) => kv
            .txn(r)
            .await
            .map(|r| txn_answer(r.into_inner()))
            .map_err(e),
        Call::Compact(rev) => kv
            .compact(pb::CompactionRequest {
                revision: rev,
                physical: true,
            })
            .await
            .map(|r| answer!(r.into_inner()))
            .map_err(e),
        Call::LeaseGrant(r) => lease
            .lease_grant(r)
            .await
            .map(|r| answer!(r.into_inner()))
            .map_err(e),
        Call::LeaseTimeToLive(id) => lease
            .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
            .await
            .map(|r| ttl_answer(r.into_inner()))
            .map_err(e),
        Call::LeaseRevoke(id) => lease
            .lease_revoke(pb::LeaseRevokeRequest { id })
            .await
            .map(|r| answer!(r.into_inner()))
            .map_err(e),
    }
}

fn put(k: &str, v: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: Bytes::copy_from_slice(k.as_bytes()),
        value: Bytes::copy_from_slice(v.as_bytes()),
        ..Default::default()
    }
}

fn prefix(p: &str, revision: i64) -> pb::RangeRequest {
    let mut end = p.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    pb::RangeRequest {
        key: Bytes::copy_from_slice(p.as_bytes()),
        range_end: end.into(),
        revision,
        ..Default::default()
    }
}

fn mod_is(k: &str, rev: i64) -> pb::Compare {
    pb::Compare {
        key: Bytes::copy_from_slice(k.as_bytes()),
        target: CompareTarget::Mod as i32,
        result: CompareResult::Equal as i32,
        target_union: Some(TargetUnion::ModRevision(rev)),
        ..Default::default()
    }
}

fn op_put(k: &str, v: &str) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(put(k, v))),
    }
}

fn scenario() -> Vec<Call> {
    const LEASE: i64 = 0x77;
    vec![
        Call::Put(put("a/1", "one")),
        Call::Put(pb::PutRequest {
            prev_kv: true,
            ..put("a/1", "uno")
        }),
        Call::Put(put("a/2", "two")),
        Call::Range(prefix("a/", 0)),
        Call::Range(prefix("a/", 2)),
        Call::Range(prefix("a/", 99)),
        Call::Txn(pb::TxnRequest {
            compare: vec![mod_is("a/1", 3)],
            success: vec![op_put("a/3", "three")],
            failure: vec![op_put("a/3", "never")],
        }),
        Call::Txn(pb::TxnRequest {
            compare: vec![mod_is("a/1", 2)],
            success: vec![op_put("a/4", "never")],
            failure: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestRange(prefix("a/", 0))),
            }],
        }),
        Call::Txn(pb::TxnRequest {
            compare: vec![],
            success: vec![op_put("d", "1"), op_put("d", "2")],
            failure: vec![],
        }),
        Call::Delete(pb::DeleteRangeRequest {
            key: "a/2".into(),
            prev_kv: true,
            ..Default::default()
        }),
        Call::Compact(4),
        Call::Range(prefix("a/", 3)),
        Call::Range(prefix("a/", 4)),
        Call::Compact(4),
        Call::Put(put("", "no key")),
        Call::LeaseGrant(pb::LeaseGrantRequest { ttl: 60, id: LEASE }),
        Call::LeaseGrant(pb::LeaseGrantRequest { ttl: 60, id: LEASE }),
        Call::LeaseGrant(pb::LeaseGrantRequest {
            ttl: 9_000_000_001,
            id: 0,
        }),
        Call::Put(pb::PutRequest {
            lease: LEASE,
            ..put("l/1", "leased")
        }),
        Call::LeaseTimeToLive(LEASE),
        Call::LeaseRevoke(LEASE),
        Call::LeaseTimeToLive(LEASE),
        Call::Range(prefix("l/", 0)),
        Call::Put(pb::PutRequest {
            lease: LEASE,
            ..put("l/2", "gone lease")
        }),
        Call::LeaseRevoke(LEASE),
        Call::Put(pb::PutRequest {
            ignore_value: true,
            ..put("missing", "")
        }),
    ]
}

async fn start(dir: &std::path::Path, name: &str, listen: Option<String>) -> Node {
    let mut config = Config::embedded(dir.join(name));
    if let Some(url) = listen {
        config.listen_client_urls = vec![url.clone()];
        config.advertise_client_urls = vec![url];
    }
    let node = Node::start(config).await.expect("start");
    node.wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_client_and_grpc_answer_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = cairn_bench::cluster::free_port().expect("port");
    let url = format!("http://127.0.0.1:{port}");

    let local = start(dir.path(), "local", None).await;
    let served = start(dir.path(), "served", Some(url.clone())).await;
    let listeners = cairn::grpc::bind_clients(served.config())
        .await
        .expect("bind");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cairn::grpc::serve(served.clone(), listeners, async {
        let _ = stop_rx.await;
    }));
    let channel = Channel::from_shared(url)
        .expect("url")
        .connect()
        .await
        .expect("connect");

    let client = local.client();
    let mut errors = 0;
    for (i, call) in scenario().into_iter().enumerate() {
        let a = embedded(&client, call.clone()).await;
        let b = remote(&channel, call.clone()).await;
        assert_eq!(a, b, "step {i}: {call:?}");
        errors += usize::from(a.is_err());
    }
    assert!(errors >= 8, "the scenario exercises errors ({errors})");

    let _ = stop_tx.send(());
    server.await.expect("join").expect("serve");
    local.shutdown().await;
    served.shutdown().await;
}
