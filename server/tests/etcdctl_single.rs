//! One `cairn` member driven by Debian's etcdctl 3.4 and by the generated
//! gRPC client.

mod common;

use cairn::proto::etcdserverpb::{RangeRequest, TxnRequest};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_against_one_member() {
    let c = Cluster::start(1, &[]).await;
    let ep = c.endpoints();

    // put / get, prefix, limit, keys-only, json.
    assert_eq!(ctl(&ep, &["put", "foo", "bar"]).trim(), "OK");
    ctl(&ep, &["put", "foo1", "v1"]);
    ctl(&ep, &["put", "foo2", "v2"]);
    ctl(&ep, &["put", "zzz", "last"]);
    assert_eq!(ctl(&ep, &["get", "foo"]), "foo\nbar\n");
    assert_eq!(
        ctl(&ep, &["get", "--prefix", "foo"]),
        "foo\nbar\nfoo1\nv1\nfoo2\nv2\n"
    );
    assert_eq!(
        ctl(&ep, &["get", "--prefix", "foo", "--limit=2"]),
        "foo\nbar\nfoo1\nv1\n"
    );
    assert_eq!(
        ctl(&ep, &["get", "--prefix", "foo", "--keys-only"]),
        "foo\n\nfoo1\n\nfoo2\n\n"
    );
    assert_eq!(
        ctl(&ep, &["get", "foo", "zzz"]),
        "foo\nbar\nfoo1\nv1\nfoo2\nv2\n"
    );
    assert_eq!(
        ctl(&ep, &["get", "--from-key", "foo2"]),
        "foo2\nv2\nzzz\nlast\n"
    );
    assert_eq!(
        ctl(
            &ep,
            &["get", "--prefix", "foo", "--sort-by=KEY", "--order=DESCEND"]
        ),
        "foo2\nv2\nfoo1\nv1\nfoo\nbar\n"
    );

    let json: serde_json::Value =
        serde_json::from_str(&ctl(&ep, &["get", "foo", "-w", "json"])).expect("json");
    assert_eq!(json["header"]["revision"], 5);
    assert_eq!(json["count"], 1);
    assert_eq!(json["kvs"][0]["create_revision"], 2);
    assert_eq!(json["kvs"][0]["mod_revision"], 2);
    assert_eq!(json["kvs"][0]["version"], 1);
    assert_ne!(json["header"]["cluster_id"], 0);
    assert_ne!(json["header"]["member_id"], 0);
    assert!(json["header"]["raft_term"].as_u64().unwrap_or(0) >= 1);

    // Revisions: overwrite, then read the old one.
    ctl(&ep, &["put", "foo", "bar2"]);
    assert_eq!(ctl(&ep, &["get", "foo", "--rev=2"]), "foo\nbar\n");
    assert_eq!(ctl(&ep, &["get", "foo"]), "foo\nbar2\n");
    // No lease exists, so naming one is etcd's "lease not found" and
    // writes nothing.
    let (ok, _, err) = etcdctl(&ep, &["put", "foo", "leased", "--lease=1234"]);
    assert!(!ok);
    assert!(
        err.contains("etcdserver: requested lease not found"),
        "{err}"
    );
    assert_eq!(ctl(&ep, &["get", "foo"]), "foo\nbar2\n");
    let (ok, _, err) = etcdctl(&ep, &["get", "foo", "--rev=100"]);
    assert!(!ok);
    assert!(
        err.contains("etcdserver: mvcc: required revision is a future revision"),
        "{err}"
    );

    // del, with prefix and prev-kv.
    assert_eq!(ctl(&ep, &["del", "foo1"]), "1\n");
    assert_eq!(ctl(&ep, &["del", "nothing"]), "0\n");
    assert_eq!(ctl(&ep, &["del", "--prev-kv", "foo2"]), "1\nfoo2\nv2\n");
    assert_eq!(ctl(&ep, &["get", "--prefix", "foo"]), "foo\nbar2\n");

    // txn, both branches.
    let txn = "value(\"foo\") = \"bar2\"\n\nput t1 yes\nget foo\n\nput t1 no\n\n";
    let (ok, out, err) = etcdctl_stdin(&ep, &["txn"], Some(txn));
    assert!(ok, "{err}");
    assert_eq!(out, "SUCCESS\n\nOK\n\nfoo\nbar2\n");
    let txn = "mod(\"foo\") < \"3\"\n\nput t2 yes\n\nput t2 no\n\n";
    let (ok, out, err) = etcdctl_stdin(&ep, &["txn"], Some(txn));
    assert!(ok, "{err}");
    assert_eq!(out, "FAILURE\n\nOK\n");
    assert_eq!(ctl(&ep, &["get", "t2"]), "t2\nno\n");

    // compaction: old revisions gone, current readable.
    let rev = json["header"]["revision"].as_i64().unwrap_or(0) + 1;
    assert_eq!(
        ctl(&ep, &["compaction", "--physical", &rev.to_string()]),
        format!("compacted revision {rev}\n")
    );
    let (ok, _, err) = etcdctl(&ep, &["get", "foo", "--rev=2"]);
    assert!(!ok);
    assert!(
        err.contains("etcdserver: mvcc: required revision has been compacted"),
        "{err}"
    );
    let (ok, _, err) = etcdctl(&ep, &["compaction", &rev.to_string()]);
    assert!(!ok);
    assert!(
        err.contains("required revision has been compacted"),
        "{err}"
    );
    assert_eq!(ctl(&ep, &["get", "foo"]), "foo\nbar2\n");

    // endpoint status / health, member list.
    let st: serde_json::Value =
        serde_json::from_str(&ctl(&ep, &["endpoint", "status", "-w", "json"])).expect("json");
    let s = &st[0]["Status"];
    assert_eq!(s["leader"], s["header"]["member_id"]);
    assert!(s["version"].as_str().unwrap_or("").starts_with("3.5."));
    assert!(s["dbSize"].as_i64().unwrap_or(0) > 0);
    assert!(s["raftIndex"].as_u64().unwrap_or(0) >= 10);
    // etcdctl 3.4 prints the health line on stderr.
    let (ok, out, err) = etcdctl(&ep, &["endpoint", "health"]);
    assert!(
        ok && format!("{out}{err}").contains("is healthy"),
        "{out}{err}"
    );
    let members = ctl(&ep, &["member", "list"]);
    assert!(members.contains(", started, m0, "), "{members}");
    assert!(members.contains(&c.members[0].client_url), "{members}");

    // count_only (etcdctl 3.4 has no --count-only) through gRPC.
    let mut kv = c.members[0].kv().await;
    let r = kv
        .range(RangeRequest {
            key: b"\0".to_vec().into(),
            range_end: b"\0".to_vec().into(),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 4); // foo, t1, t2, zzz

    // Errors through gRPC: exact codes and messages.
    let e = kv
        .range(RangeRequest::default())
        .await
        .expect_err("empty key");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(e.message(), "etcdserver: key is not provided");
    let big = TxnRequest {
        success: (0..129)
            .map(|i| cairn::proto::etcdserverpb::RequestOp {
                request: Some(
                    cairn::proto::etcdserverpb::request_op::Request::RequestRange(RangeRequest {
                        key: format!("k{i}").into_bytes().into(),
                        ..Default::default()
                    }),
                ),
            })
            .collect(),
        ..Default::default()
    };
    let e = kv.txn(big).await.expect_err("too many ops");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "etcdserver: too many operations in txn request"
    );
    let e = kv
        .put(cairn::proto::etcdserverpb::PutRequest {
            key: b"big".to_vec().into(),
            value: vec![0u8; 1_600_000].into(),
            ..Default::default()
        })
        .await
        .expect_err("too large");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(e.message(), "etcdserver: request is too large");
    // Over the receive limit (--max-request-bytes + 512 KiB): refused
    // before it is read, with grpc-go's code and message, as etcd does.
    let e = kv
        .put(cairn::proto::etcdserverpb::PutRequest {
            key: b"huge".to_vec().into(),
            value: vec![0u8; 10 << 20].into(),
            ..Default::default()
        })
        .await
        .expect_err("over the receive limit");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert_eq!(
        e.message(),
        "grpc: received message larger than max (10485771 vs. 2097152)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_data_and_revisions() {
    let mut c = Cluster::start(1, &[]).await;
    let ep = c.endpoints();
    for i in 0..50 {
        ctl(&ep, &["put", &format!("k{i:02}"), &format!("v{i}")]);
    }
    let before = ctl(&ep, &["get", "--prefix", "k", "-w", "json"]);
    let st = c.members[0].stop();
    assert!(st.success(), "clean exit on SIGTERM: {st:?}");
    c.members[0].start();
    c.wait_leader(std::time::Duration::from_secs(20)).await;
    let after = ctl(&ep, &["get", "--prefix", "k", "-w", "json"]);
    let strip = |s: &str| {
        let mut v: serde_json::Value = serde_json::from_str(s).expect("json");
        v["header"]["raft_term"] = 0.into();
        v
    };
    assert_eq!(strip(&before), strip(&after));
    // The next write continues the revision sequence.
    let out = ctl(&ep, &["put", "next", "x", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["header"]["revision"], 52);

    // kill -9, no flush at all: every acknowledged write survives.
    c.members[0].kill();
    c.members[0].start();
    c.wait_leader(std::time::Duration::from_secs(20)).await;
    assert_eq!(ctl(&ep, &["get", "next"]), "next\nx\n");
    assert_eq!(ctl(&ep, &["get", "k49"]), "k49\nv49\n");
}

/// `--backend sled`: a member over sled serves and keeps acknowledged
/// writes across kill -9 like one over fjall, and its data dir is refused
/// (left as it is) by a start with the other engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_backend_serves_and_its_data_dir_refuses_fjall() {
    let mut c = Cluster::start(1, &["--backend", "sled"]).await;
    let ep = c.endpoints();
    for i in 0..20 {
        ctl(&ep, &["put", &format!("s{i:02}"), &format!("v{i}")]);
    }
    c.members[0].kill();
    c.members[0].start();
    c.wait_leader(std::time::Duration::from_secs(20)).await;
    assert_eq!(ctl(&ep, &["get", "s19"]), "s19\nv19\n");
    let out = ctl(&ep, &["put", "after", "x", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["header"]["revision"], 22, "revisions continue over sled");
    assert!(c.members[0].stop().success());
    let dir = c.members[0]
        .data_dir
        .to_str()
        .expect("utf-8 path")
        .to_string();
    let st = cairnutl_status(&dir);
    assert_eq!(st["backend"], "sled", "{st}");
    assert_eq!(st["revision"], 22, "{st}");

    let kv_dir = c.members[0].data_dir.join("member/kv");
    let before: Vec<_> = std::fs::read_dir(&kv_dir)
        .expect("kv dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    let extra = &mut c.members[0].extra;
    let at = extra
        .iter()
        .position(|a| a == "--backend")
        .expect("--backend");
    extra[at + 1] = "fjall".into();
    c.members[0].start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while c.members[0].is_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "a sled data dir was opened with fjall"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = c.members[0].log_text();
    assert!(
        log.contains("holds a sled database") && log.contains("--backend sled"),
        "{log}"
    );
    c.members[0].kill();
    let after: Vec<_> = std::fs::read_dir(&kv_dir)
        .expect("kv dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(before, after, "the refused data dir was touched");
}

/// `cairnutl status -w json` of data dir `dir`, which must succeed.
fn cairnutl_status(dir: &str) -> serde_json::Value {
    let (ok, out, err) = cairnutl(&["status", "--data-dir", dir, "-w", "json"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).expect("json")
}

/// `cairnutl status` and `hashkv` on a stopped member's data dir agree
/// with what the member answered while it ran; a dir without a member is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairnutl_reads_a_stopped_members_data_dir() {
    let mut c = Cluster::start(1, &[]).await;
    let ep = c.endpoints();
    for i in 0..30 {
        ctl(&ep, &["put", &format!("u{:02}", i % 10), &format!("v{i}")]);
    }
    ctl(&ep, &["del", "u09"]);
    let online: serde_json::Value =
        serde_json::from_str(&ctl(&ep, &["endpoint", "hashkv", "-w", "json"])).expect("json");
    let online_hash = online[0]["HashKV"]["hash"].as_u64().expect("hash");
    assert!(c.members[0].stop().success());

    let dir = c.members[0]
        .data_dir
        .to_str()
        .expect("utf-8 path")
        .to_string();
    let st = cairnutl_status(&dir);
    assert_eq!(st["name"], "m0");
    assert_eq!(st["backend"], "fjall");
    assert_eq!(st["revision"], 32, "{st}");
    assert_eq!(st["totalKey"], 9, "{st}");
    assert!(st["appliedIndex"].as_u64().unwrap_or(0) > 0, "{st}");

    let (ok, out, err) = cairnutl(&["hashkv", "--data-dir", &dir, "-w", "json"]);
    assert!(ok, "{err}");
    let h: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(h["hash"].as_u64(), Some(online_hash), "{h}");

    let (ok, out, _) = cairnutl(&["status", "--data-dir", &dir]);
    assert!(ok);
    assert!(
        out.lines()
            .any(|l| l.starts_with("revision") && l.ends_with("32")),
        "{out}"
    );

    let empty = tempfile::tempdir().expect("tempdir");
    let (ok, _, err) = cairnutl(&["status", "--data-dir", empty.path().to_str().expect("path")]);
    assert!(!ok);
    assert!(err.contains("holds no Cairn member"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_and_foreign_data_dirs_are_refused() {
    let bin = env!("CARGO_BIN_EXE_cairn");
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .args(args)
            .output()
            .expect("run cairn")
    };
    let out = run(&["--no-such-flag"]);
    assert!(!out.status.success());
    let out = run(&["--initial-cluster-state", "maybe"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--initial-cluster-state"));
    let out = run(&["--heartbeat-interval", "100", "--election-timeout", "200"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--election-timeout"));
    let out = run(&["--listen-client-urls", "localhost:2379"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("scheme"));

    // A non-empty directory that is not a Cairn data dir is not touched.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(foreign.join("member/snap")).expect("mkdir");
    std::fs::write(foreign.join("member/snap/db"), b"etcd data").expect("write");
    let (cp, pp) = (free_port(), free_port());
    let curl = format!("http://127.0.0.1:{cp}");
    let purl = format!("http://127.0.0.1:{pp}");
    let ic = format!("default={purl}");
    let args = [
        "--data-dir",
        foreign.to_str().unwrap_or_default(),
        "--listen-client-urls",
        &curl,
        "--advertise-client-urls",
        &curl,
        "--listen-peer-urls",
        &purl,
        "--initial-advertise-peer-urls",
        &purl,
        "--initial-cluster",
        &ic,
    ];
    let out = run(&args);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(foreign.join("member/snap/db")).expect("read"),
        b"etcd data"
    );

    // A data dir of another member name.
    let mine = dir.path().join("mine");
    let mut args2: Vec<&str> = args.to_vec();
    args2[1] = mine.to_str().unwrap_or_default();
    let mut child = std::process::Command::new(bin)
        .args(&args2)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !mine.join("member/cluster").exists() {
        assert!(std::time::Instant::now() < deadline, "member never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let other_ic = format!("other={purl}");
    let mut args3 = args2.clone();
    args3.extend(["--name", "other"]);
    args3[11] = &other_ic;
    let out = run(&args3);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("belongs to member \"default\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_with_etcd_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cp, pp) = (free_port(), free_port());
    let yaml = format!(
        "name: filed\n\
         data-dir: {}\n\
         listen-client-urls: http://127.0.0.1:{cp}\n\
         advertise-client-urls: http://127.0.0.1:{cp}\n\
         listen-peer-urls: http://127.0.0.1:{pp}\n\
         initial-advertise-peer-urls: http://127.0.0.1:{pp}\n\
         initial-cluster: filed=http://127.0.0.1:{pp}\n\
         initial-cluster-token: file-token\n\
         heartbeat-interval: 50\n\
         election-timeout: 500\n",
        dir.path().join("data").display()
    );
    let cfg = dir.path().join("cairn.yaml");
    std::fs::write(&cfg, yaml).expect("write config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--config-file")
        .arg(&cfg)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start");
    let ep = format!("127.0.0.1:{cp}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let out = loop {
        let (ok, out, _) = etcdctl(&ep, &["member", "list"]);
        if ok && out.contains("filed") {
            break out;
        }
        assert!(std::time::Instant::now() < deadline, "never came up");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // The member runs without transparent huge pages (see main.rs).
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.contains(&format!("http://127.0.0.1:{pp}")), "{out}");
    let status = status.expect("read /proc/PID/status");
    assert!(
        status
            .lines()
            .any(|l| l.split_whitespace().eq(["THP_enabled:", "0"])),
        "{status}"
    );

    // Unknown keys are an error, not silently ignored.
    std::fs::write(&cfg, "name: x\nno-such-key: 1\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--config-file")
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-key"));
}
