//! Wire compatibility: the generated client talks to a real etcd 3.4
//! (Debian's `etcd-server`, started here on free 127.0.0.1 ports with a
//! temporary data dir) and every response decodes as expected.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::*;
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::prost;
use tonic::transport::Channel;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real etcd process, killed (and its data dir removed) on drop.
struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    client_url: String,
}

impl Etcd {
    fn start() -> Etcd {
        let bin = which_etcd();
        let dir = tempfile::tempdir().unwrap();
        let (cp, pp) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{cp}");
        let peer_url = format!("http://127.0.0.1:{pp}");
        let child = Command::new(bin)
            .args(["--name", "wire", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("wire={peer_url}")])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        Etcd {
            child,
            _dir: dir,
            client_url,
        }
    }

    async fn channel(&self) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(ch) = Channel::from_shared(self.client_url.clone())
                .unwrap()
                .connect()
                .await
            {
                let mut kv = KvClient::new(ch.clone());
                if kv
                    .range(RangeRequest {
                        key: "probe".into(),
                        ..Default::default()
                    })
                    .await
                    .is_ok()
                {
                    return ch;
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not come up on {}",
                self.client_url
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which_etcd() -> String {
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    panic!("etcd is not installed: run the test command from the README (it installs etcd-server)");
}

fn put(k: &'static str, v: &'static str) -> PutRequest {
    PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_client_speaks_to_real_etcd() {
    let etcd = Etcd::start();
    let ch = etcd.channel().await;
    let mut kv = KvClient::new(ch.clone());

    // Put, with prev_kv.
    let r = kv.put(put("/a/1", "one")).await.unwrap().into_inner();
    let first_rev = r.header.as_ref().unwrap().revision;
    assert!(first_rev >= 2);
    assert_ne!(r.header.as_ref().unwrap().cluster_id, 0);
    kv.put(put("/a/2", "two")).await.unwrap();
    kv.put(put("/a/3", "three")).await.unwrap();
    let r = kv
        .put(PutRequest {
            prev_kv: true,
            ..put("/a/1", "uno")
        })
        .await
        .unwrap()
        .into_inner();
    let prev = r.prev_kv.unwrap();
    assert_eq!((prev.value.as_ref(), prev.version), (&b"one"[..], 1));

    // Range with options: prefix, limit, sort, keys_only, count_only, revision.
    let prefix = || RangeRequest {
        key: "/a/".into(),
        range_end: "/a0".into(),
        ..Default::default()
    };
    let r = kv
        .range(RangeRequest {
            limit: 2,
            ..prefix()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.kvs.len(), r.more, r.count), (2, true, 3));
    let r = kv
        .range(RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Value as i32,
            keys_only: true,
            ..prefix()
        })
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<_> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        keys,
        vec!["/a/1", "/a/2", "/a/3"]
            .into_iter()
            .map(prost::bytes::Bytes::from)
            .collect::<Vec<_>>()
    );
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    let r = kv
        .range(RangeRequest {
            count_only: true,
            ..prefix()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.kvs.len(), r.count), (0, 3));
    let r = kv
        .range(RangeRequest {
            key: "/a/1".into(),
            revision: first_rev,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.kvs[0].value, "one");
    assert_eq!(r.kvs[0].mod_revision, first_rev);

    // Txn with compares, both branches.
    let txn = |expect: &'static str| TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: "/a/1".into(),
            target_union: Some(TargetUnion::Value(expect.into())),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(put("/a/1", "won"))),
        }],
        failure: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: "/a/1".into(),
                ..Default::default()
            })),
        }],
    };
    let r = kv.txn(txn("uno")).await.unwrap().into_inner();
    assert!(r.succeeded);
    assert!(matches!(
        r.responses[0].response,
        Some(Response::ResponsePut(_))
    ));
    let r = kv.txn(txn("uno")).await.unwrap().into_inner();
    assert!(!r.succeeded);
    let Some(Response::ResponseRange(rr)) = &r.responses[0].response else {
        panic!("expected a range response")
    };
    assert_eq!(rr.kvs[0].value, "won");

    // A watch stream sees the delete below.
    let mut watch = WatchClient::new(ch.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: "/a/".into(),
            range_end: "/a0".into(),
            prev_kv: true,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut events = watch
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let created = events.message().await.unwrap().unwrap();
    assert!(created.created);

    // DeleteRange with prev_kv.
    let r = kv
        .delete_range(DeleteRangeRequest {
            key: "/a/2".into(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.deleted, 1);
    assert_eq!(r.prev_kvs[0].value, "two");
    let delete_rev = r.header.unwrap().revision;

    let w = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(w.events.len(), 1);
    let ev = &w.events[0];
    assert_eq!(ev.r#type, EventType::Delete as i32);
    assert_eq!(ev.kv.as_ref().unwrap().mod_revision, delete_rev);
    assert_eq!(ev.prev_kv.as_ref().unwrap().value, "two");
    drop(tx);

    // Compact, then a read below it fails with etcd's exact error.
    kv.compact(CompactionRequest {
        revision: delete_rev,
        physical: true,
    })
    .await
    .unwrap();
    let err = kv
        .range(RangeRequest {
            key: "/a/1".into(),
            revision: first_rev,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );

    // LeaseGrant.
    let mut lease = LeaseClient::new(ch);
    let r = lease
        .lease_grant(LeaseGrantRequest { ttl: 30, id: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(r.id != 0);
    assert_eq!(r.ttl, 30);
}
