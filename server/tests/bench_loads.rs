//! `cairn-bench` against real servers: its lean gRPC client reads
//! answers and errors from Cairn and from etcd alike, every load runs
//! against a Cairn member without errors, the side-by-side comparison runs end to end
//! against etcd 3.4 and Cairn (one short round), producing a value for
//! every row from both systems, and `pair` loads two Cairn clusters at
//! once and measures both.

mod common;

use std::time::Duration;

use cairn::proto::etcdserverpb::{compare as cmp, request_op, response_op};
use cairn::proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use cairn_bench::grpc::{Conn, Kv};
use cairn_bench::loads::{big_range, k8s, range, revoke, snapshot, txn, watch, Load};
use cairn_bench::options::{Common, Consistency};
use cairn_bench::tls::TlsFiles;
use cairn_bench::{compare, pair};
use common::{cairnutl, certs, tls_flags, tls_mode, which, Cluster, Etcd};
use tonic::Code;

fn common(endpoints: Vec<String>, pids: Vec<u32>) -> Common {
    Common {
        endpoints,
        conns: 2,
        clients: 4,
        total: 200,
        duration: None,
        rate: 0,
        key_size: 8,
        val_size: 64,
        key_space_size: 500,
        sequential_keys: false,
        consistency: Consistency::Linearizable,
        pids,
        data_dirs: vec![],
        quiet: true,
        tls: if tls_mode() {
            client_tls()
        } else {
            Default::default()
        },
    }
}

/// The test client's certificate files, as cairn-bench takes them.
fn client_tls() -> TlsFiles {
    let p = certs::Pki::get();
    let c = p.pair("client");
    TlsFiles {
        cacert: Some(p.ca().into()),
        cert: Some(c.cert.into()),
        key: Some(c.key.into()),
    }
}

/// A put, a read of it, a compare-and-put, and a read at a future
/// revision (etcd's error) through the lean client; `who` names the
/// server in failures.
async fn lean_client_calls(kv: &mut Kv, who: &str) {
    let put = kv
        .put(PutRequest {
            key: b"lean/a".to_vec().into(),
            value: b"one".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{who}: put: {e}"));
    let rev = put.header.map(|h| h.revision).unwrap_or(0);
    assert!(rev > 1, "{who}: revision {rev}");
    let got = kv
        .range(RangeRequest {
            key: b"lean/a".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{who}: range: {e}"));
    assert_eq!(got.kvs.len(), 1, "{who}: {got:?}");
    assert_eq!(&got.kvs[0].value[..], b"one", "{who}");
    assert_eq!(got.kvs[0].mod_revision, rev, "{who}");

    // Compare on the mod revision just read: the first txn wins, the
    // second (same compare) fails and reads the new value instead.
    let txn = |value: &'static [u8]| TxnRequest {
        compare: vec![Compare {
            key: b"lean/a".to_vec().into(),
            result: cmp::CompareResult::Equal as i32,
            target: cmp::CompareTarget::Mod as i32,
            target_union: Some(cmp::TargetUnion::ModRevision(rev)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"lean/a".to_vec().into(),
                value: value.to_vec().into(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: b"lean/a".to_vec().into(),
                ..Default::default()
            })),
        }],
    };
    let won = kv
        .txn(txn(b"two"))
        .await
        .unwrap_or_else(|e| panic!("{who}: txn: {e}"));
    assert!(won.succeeded, "{who}: {won:?}");
    let lost = kv
        .txn(txn(b"three"))
        .await
        .unwrap_or_else(|e| panic!("{who}: txn: {e}"));
    assert!(!lost.succeeded, "{who}: {lost:?}");
    match lost.responses.first().and_then(|r| r.response.as_ref()) {
        Some(response_op::Response::ResponseRange(r)) => {
            assert_eq!(&r.kvs[0].value[..], b"two", "{who}")
        }
        other => panic!("{who}: failure branch answered {other:?}"),
    }

    let future = kv
        .range(RangeRequest {
            key: b"lean/a".to_vec().into(),
            revision: rev + 1_000,
            ..Default::default()
        })
        .await
        .expect_err("a future revision");
    assert_eq!(future.code(), Code::OutOfRange, "{who}: {future:?}");
    assert_eq!(
        future.message(),
        "etcdserver: mvcc: required revision is a future revision",
        "{who}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lean_client_reads_cairn_and_etcd_alike() {
    let etcd = Etcd::start();
    etcd.kv().await; // up
    let endpoint = etcd.client_url.clone();
    let mut kv = Conn::connect(&endpoint, None)
        .await
        .expect("connect etcd")
        .kv();
    lean_client_calls(&mut kv, "etcd").await;
    // The server goes away: a call fails as unavailable, it does not hang.
    drop(etcd);
    let gone = kv
        .range(RangeRequest::default())
        .await
        .expect_err("etcd stopped");
    assert_eq!(gone.code(), Code::Unavailable, "{gone:?}");
    assert!(Conn::connect(&endpoint, None).await.is_err());

    let c = Cluster::start(1, &[]).await;
    let mut kv = Conn::connect(&c.members[0].endpoint(), None)
        .await
        .expect("connect cairn")
        .kv();
    lean_client_calls(&mut kv, "cairn").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_load_runs_against_cairn() {
    let c = Cluster::start(3, &[]).await;
    let endpoints: Vec<String> = c.members.iter().map(|m| m.endpoint()).collect();
    let base = common(endpoints, vec![]);
    let serializable = Common {
        consistency: Consistency::Serializable,
        ..base.clone()
    };
    let loads = [
        (Load::Put, base.clone()),
        (Load::Range(range::Args { list_size: 0 }), base.clone()),
        (Load::Range(range::Args { list_size: 100 }), serializable),
        (Load::TxnPut(txn::Args { txn_ops: 4 }), base.clone()),
        (
            Load::WatchLatency(watch::Args {
                watchers: 50,
                streams: 5,
                put_rate: 50,
                put_total: 20,
            }),
            base.clone(),
        ),
        (Load::LeaseKeepalive, base.clone()),
        (
            Load::K8s(k8s::Args {
                watchers: 2,
                page_size: 50,
            }),
            Common {
                key_space_size: 120,
                ..base.clone()
            },
        ),
        (
            Load::LeaseRevoke(revoke::Args {
                lease_keys: 300,
                revokes: 2,
            }),
            Common {
                duration: Some(Duration::from_secs(2)),
                ..base.clone()
            },
        ),
        (
            Load::BigRange(big_range::Args {
                list_size: 3000,
                reads: 2,
                settle: Duration::from_millis(100),
            }),
            Common {
                pids: c.members[0].pid().into_iter().collect(),
                val_size: 2000,
                ..base.clone()
            },
        ),
        (
            Load::SnapshotSave(snapshot::Args {
                save_to: Some(c.dir.path().join("saved.db")),
            }),
            Common {
                duration: Some(Duration::from_secs(2)),
                // The member the snapshot is taken from.
                pids: c.members[0].pid().into_iter().collect(),
                ..base.clone()
            },
        ),
    ];
    for (load, opts) in loads {
        let r = match load.run(&opts).await {
            Ok(r) => r,
            Err(e) => panic!("{}: {e:#}", load.name()),
        };
        assert_eq!(r.errors, 0, "{}: {:?}", load.name(), r.first_error);
        assert!(r.ops > 0 && r.throughput > 0.0, "{}: {r:?}", load.name());
        assert!(!r.latencies.is_empty(), "{}", load.name());
        match &load {
            // 20 puts seen by 50 watchers each.
            Load::WatchLatency(_) => assert_eq!(r.extra("events"), Some(1000.0)),
            Load::K8s(_) => assert!(r.extra("watch events").unwrap_or(0.0) > 0.0),
            // 3000 keys of 2000 bytes: over the size a member holds whole.
            Load::BigRange(_) => {
                assert!(r.extra("answer MiB").unwrap_or(0.0) > 5.0, "{r:?}");
                assert!(
                    r.extra("server RSS growth, first read MiB").is_some(),
                    "{r:?}"
                );
            }
            Load::LeaseRevoke(_) => {
                assert!(r.latency("during").is_some(), "{r:?}");
                assert!(r.extra("slowest revoke ms").unwrap_or(0.0) > 0.0, "{r:?}");
            }
            Load::SnapshotSave(_) => {
                assert!(r.latency("during").is_some(), "{r:?}");
                assert!(
                    r.extra("server RSS growth during the save MiB").is_some(),
                    "{r:?}"
                );
                // The file saved is a whole backup.
                let saved = c.dir.path().join("saved.db");
                let size = std::fs::metadata(&saved).expect("saved").len();
                assert_eq!(Some(size as f64 / (1 << 20) as f64), r.extra("save MiB"));
                let (ok, out, err) =
                    cairnutl(&["snapshot", "status", saved.to_str().expect("path")]);
                assert!(ok, "{err}{out}");
            }
            _ => {}
        }
    }
    // Bad flags are refused before anything is sent.
    let bad = Common {
        key_size: 2,
        ..base.clone()
    };
    assert!(Load::Put.run(&bad).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_by_side_comparison_runs_against_etcd_and_cairn() {
    let out = tempfile::tempdir().expect("tempdir");
    let args = compare::Args {
        etcd: Some(which("etcd")),
        cairn: Some(env!("CARGO_BIN_EXE_cairn").into()),
        rounds: 1,
        duration: Duration::from_millis(300),
        members: vec![1],
        big_keys: 2_000,
        watchers: 100,
        watch_put_rate: 20,
        out: out.path().to_path_buf(),
        work_dir: Some(out.path().to_path_buf()),
        render: None,
    };
    compare::run(&args).await.expect("compare");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results.json")).expect("results.json"),
    )
    .expect("json");
    let runs = json["runs"].as_array().expect("runs");
    // 9 loads × 2 systems + the memory/restart run × 2 systems.
    assert_eq!(runs.len(), 20, "{json:#}");
    for run in runs {
        assert!(run["error"].is_null(), "failed run: {run:#}");
    }
    let rows = json["rows"].as_array().expect("rows");
    assert!(rows.len() > 20, "{rows:#?}");
    for row in rows {
        assert!(
            row["etcd"].is_number() && row["cairn"].is_number(),
            "row without both values: {row:#}"
        );
        assert_eq!(row["errors"], 0, "{row:#}");
    }
    let md = std::fs::read_to_string(out.path().join("results.md")).expect("results.md");
    assert!(md.contains("| 1 | put, 256 clients / 32 conns |"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_loads_two_builds_at_once() {
    let work = tempfile::tempdir().expect("tempdir");
    let args = pair::Args {
        a: env!("CARGO_BIN_EXE_cairn").into(),
        b: env!("CARGO_BIN_EXE_cairn").into(),
        members: 1,
        rounds: 2,
        duration: Duration::from_millis(500),
        clients: 4,
        conns: 2,
        work_dir: Some(work.path().to_path_buf()),
        load: pair::PairLoad::Put,
    };
    for load in [pair::PairLoad::Put, pair::PairLoad::RangeL] {
        let args = pair::Args {
            load,
            ..args.clone()
        };
        let rounds = pair::rounds(&args).await.expect("pair");
        assert_eq!(rounds.len(), 2);
        for (a, b) in &rounds {
            for s in [a, b] {
                assert!(s.throughput > 0.0 && s.cpu_us > 0.0, "{load:?}: {rounds:?}");
            }
        }
        assert!(
            pair::markdown(&args, &rounds).contains(if load == pair::PairLoad::Put {
                ", put, "
            } else {
                ", range l, "
            })
        );
    }
    // Nothing of either cluster is left behind.
    assert_eq!(std::fs::read_dir(work.path()).expect("work dir").count(), 0);
    let missing = pair::Args {
        b: work.path().join("no-such-cairn"),
        ..args.clone()
    };
    assert!(pair::rounds(&missing).await.is_err());
    let no_rounds = pair::Args { rounds: 0, ..args };
    assert!(pair::rounds(&no_rounds).await.is_err());
}

/// The loads over mutual TLS (etcdctl's `--cacert`, `--cert`, `--key`):
/// the lean unary client and tonic's streams both connect and run
/// without errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_run_over_mutual_tls() {
    let flags = tls_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let c = Cluster::launch(1, &flags, "https", "https");
    let p = certs::Pki::get();
    let cl = p.pair("client");
    let ctl = [
        format!("--cacert={}", p.ca()),
        format!("--cert={}", cl.cert),
        format!("--key={}", cl.key),
    ];
    let ctl: Vec<&str> = ctl.iter().map(String::as_str).collect();
    c.wait_ready_ctl(&ctl, Duration::from_secs(30));
    let base = Common {
        tls: client_tls(),
        ..common(vec![c.members[0].endpoint()], vec![])
    };
    assert!(base.endpoints[0].starts_with("https://"));
    for load in [
        Load::Put,
        Load::K8s(k8s::Args {
            watchers: 2,
            page_size: 50,
        }),
    ] {
        let r = load
            .run(&Common {
                key_space_size: 120,
                ..base.clone()
            })
            .await
            .unwrap_or_else(|e| panic!("{}: {e:#}", load.name()));
        assert_eq!(r.errors, 0, "{}: {:?}", load.name(), r.first_error);
        assert!(r.ops > 0, "{}", load.name());
    }
    // Without the client certificate the member refuses the connection.
    let refused = Load::Put
        .run(&Common {
            tls: TlsFiles {
                cacert: Some(p.ca().into()),
                ..Default::default()
            },
            ..base.clone()
        })
        .await;
    assert!(refused.is_err() || refused.is_ok_and(|r| r.errors > 0));
}
