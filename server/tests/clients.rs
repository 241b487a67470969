//! The etcd clients people use, each run against Cairn and against a real
//! etcd 3.4 in the same test: the Python `etcd3` client, the Node `etcd3`
//! package and the Rust `etcd-client` crate go through the same calls
//! (puts, ranges, deletes, txns, leases, watches, locks, an election,
//! members, compaction) on a fresh single member of each, and must print the same
//! transcript; so must OpenStack's `etcd3gw`, which speaks etcd's JSON
//! gateway, and etcdctl with bare and `http://` endpoints (3.4, and
//! 3.5.1 against etcd 3.5.1 with `CAIRN_ETCDCTL` and
//! `CAIRN_REFERENCE_ETCD`, as the test command runs it too). curl's
//! calls to the JSON gateway are compared with etcd 3.5.1, whose HTTP
//! statuses Cairn follows. The Python and Node clients are installed on first use
//! into the test's scratch directory under `target/` (pip and npm;
//! versions pinned here).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::{etcd35, etcdctl, reference_etcd, Cluster, Etcd};

/// The Python clients: `etcd3` (gRPC) with the protobuf runtime it was
/// written for (it does not run on protobuf 4), and OpenStack's `etcd3gw`
/// (etcd's JSON gateway).
const PYTHON_PACKAGES: &[&str] = &["etcd3==0.12.0", "protobuf==3.20.3", "etcd3gw==2.7.0"];
/// The Node client.
const NODE_PACKAGE: &str = "etcd3@1.1.2";

fn scratch() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("clients")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Python interpreter of a virtual environment with the client.
fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = scratch().join("venv");
        let py = venv.join("bin/python");
        let stamp = venv.join(PYTHON_PACKAGES.join(" ").replace(['/', '='], "_"));
        if !stamp.exists() {
            let _ = std::fs::remove_dir_all(&venv);
            run(
                Command::new("python3").args(["-m", "venv"]).arg(&venv),
                "python3 -m venv",
            );
            run(
                Command::new(&py)
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                    ])
                    .args(PYTHON_PACKAGES),
                "pip install etcd3",
            );
            std::fs::write(&stamp, b"").expect("stamp");
        }
        py
    })
}

/// A `node_modules` with the Node client.
fn node_modules() -> &'static Path {
    static MODULES: OnceLock<PathBuf> = OnceLock::new();
    MODULES.get_or_init(|| {
        let dir = scratch().join("node");
        let modules = dir.join("node_modules");
        let stamp = dir.join(NODE_PACKAGE.replace(['/', '@'], "_"));
        if !stamp.exists() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("node dir");
            run(
                Command::new("npm")
                    .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                    .arg(&dir)
                    .arg(NODE_PACKAGE),
                "npm install etcd3",
            );
            std::fs::write(&stamp, b"").expect("stamp");
        }
        modules
    })
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(name)
}

/// Runs a client script against `endpoint` (host:port); its transcript.
fn transcript(cmd: &mut Command, endpoint: &str, who: &str) -> String {
    let out = cmd
        .arg(endpoint)
        .output()
        .unwrap_or_else(|e| panic!("{who}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{who} against {endpoint} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.lines().count() > 10, "{who}: too short:\n{stdout}");
    stdout
}

/// A fresh etcd (the reference) and a fresh one-member Cairn, as
/// host:port each.
async fn fresh_pair() -> (Etcd, Cluster, String, String) {
    fresh_pair_of(&reference_etcd()).await
}

/// The same, with the etcd binary `bin`.
async fn fresh_pair_of(bin: &std::path::Path) -> (Etcd, Cluster, String, String) {
    let etcd = Etcd::start_bin(bin);
    let cairn = Cluster::start(1, &[]).await;
    etcd.kv().await;
    let e = etcd.client_url.trim_start_matches("http://").to_string();
    let c = cairn.members[0]
        .client_url
        .trim_start_matches("http://")
        .to_string();
    (etcd, cairn, e, c)
}

fn compare(who: &str, etcd: &str, cairn: &str) {
    for (i, (e, c)) in etcd.lines().zip(cairn.lines()).enumerate() {
        assert_eq!(c, e, "{who}: line {} differs (Cairn, then etcd)", i + 1);
    }
    assert_eq!(
        cairn.lines().count(),
        etcd.lines().count(),
        "{who}: transcripts of different lengths:\n{cairn}\n---\n{etcd}"
    );
}

/// Runs the client script `who` starts (a command given the endpoint
/// last) against a fresh etcd and a fresh Cairn; the transcripts must
/// be equal.
async fn same_transcript(who: &str, command: impl Fn() -> Command) {
    let (_etcd, _cairn, e, c) = fresh_pair().await;
    let on_etcd = transcript(&mut command(), &e, who);
    let on_cairn = transcript(&mut command(), &c, who);
    compare(who, &on_etcd, &on_cairn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_etcd3_client_sees_what_it_sees_on_etcd() {
    let py = python();
    same_transcript("python etcd3", || {
        let mut cmd = Command::new(py);
        cmd.arg(script("python_etcd3.py"));
        cmd
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_gateway_answers_etcd3gw_as_etcd_does() {
    let py = python();
    same_transcript("python etcd3gw", || {
        let mut cmd = Command::new(py);
        cmd.arg(script("python_etcd3gw.py"));
        cmd
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_etcd3_package_sees_what_it_sees_on_etcd() {
    let modules = node_modules();
    same_transcript("node etcd3", || {
        let mut cmd = Command::new("node");
        cmd.env("NODE_PATH", modules).arg(script("node_etcd3.js"));
        cmd
    })
    .await;
}

/// The same kind of calls through the Rust `etcd-client` crate; one
/// line per answer, with what any etcd would answer.
async fn rust_transcript(endpoint: &str) -> Vec<String> {
    use etcd_client::{
        Client, CompactionOptions, Compare, CompareOp, EventType, GetOptions,
        LeaseTimeToLiveOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, WatchOptions,
    };
    let mut c = Client::connect([endpoint], None).await.expect("connect");
    let mut out = Vec::new();
    let kvs = |r: &etcd_client::GetResponse| -> Vec<String> {
        r.kvs()
            .iter()
            .map(|kv| {
                format!(
                    "{}={} c{} m{} v{}",
                    kv.key_str().unwrap_or("?"),
                    kv.value_str().unwrap_or("?"),
                    kv.create_revision(),
                    kv.mod_revision(),
                    kv.version()
                )
            })
            .collect()
    };

    c.put("foo", "bar", None).await.expect("put");
    let r = c.get("foo", None).await.expect("get");
    out.push(format!("get {:?}", kvs(&r)));
    let r = c
        .put("foo", "bar2", Some(PutOptions::new().with_prev_key()))
        .await
        .expect("put prev");
    out.push(format!(
        "put prev {:?} at {:?}",
        r.prev_key()
            .map(|kv| kv.value_str().unwrap_or("?").to_string()),
        r.header().map(|h| h.revision())
    ));
    for k in ["fa", "fb", "g"] {
        c.put(k, k.to_uppercase(), None).await.expect("put");
    }
    let r = c
        .get(
            "f",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Value, SortOrder::Descend)
                    .with_limit(2),
            ),
        )
        .await
        .expect("prefix");
    out.push(format!("prefix by value {:?} more {}", kvs(&r), r.more()));
    let r = c
        .get("f", Some(GetOptions::new().with_prefix().with_count_only()))
        .await
        .expect("count");
    out.push(format!("count {}", r.count()));
    let r = c
        .get("", Some(GetOptions::new().with_all_keys().with_keys_only()))
        .await
        .expect("keys");
    out.push(format!("all keys {:?}", kvs(&r)));
    let r = c
        .delete(
            "f",
            Some(
                etcd_client::DeleteOptions::new()
                    .with_prefix()
                    .with_prev_key(),
            ),
        )
        .await
        .expect("delete");
    out.push(format!(
        "deleted {} prev {}",
        r.deleted(),
        r.prev_kvs().len()
    ));

    let t = Txn::new()
        .when([Compare::version("t", CompareOp::Equal, 0)])
        .and_then([TxnOp::put("t", "created", None)])
        .or_else([TxnOp::get("t", None)]);
    let r = c.txn(t).await.expect("txn");
    out.push(format!("txn created {}", r.succeeded()));
    let t = Txn::new()
        .when([Compare::value("t", CompareOp::NotEqual, "created")])
        .and_then([TxnOp::delete("t", None)])
        .or_else([TxnOp::get("g", None), TxnOp::put("t2", "x", None)]);
    let r = c.txn(t).await.expect("txn");
    out.push(format!(
        "txn else {} answers {}",
        r.succeeded(),
        r.op_responses().len()
    ));

    let lease = c.lease_grant(60, None).await.expect("grant");
    c.put(
        "leased",
        "v",
        Some(PutOptions::new().with_lease(lease.id())),
    )
    .await
    .expect("put leased");
    let ttl = c
        .lease_time_to_live(lease.id(), Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .expect("ttl");
    out.push(format!(
        "lease granted {} keys {:?}",
        ttl.granted_ttl(),
        ttl.keys()
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    ));
    c.lease_revoke(lease.id()).await.expect("revoke");
    let r = c.get("leased", None).await.expect("get");
    out.push(format!("after revoke {}", r.kvs().len()));

    let mut w = c
        .watch("w", Some(WatchOptions::new().with_prev_key()))
        .await
        .expect("watch");
    c.put("w", "1", None).await.expect("put");
    c.put("w", "2", None).await.expect("put");
    c.delete("w", None).await.expect("delete");
    let mut events = Vec::new();
    while events.len() < 3 {
        let m = tokio::time::timeout(std::time::Duration::from_secs(10), w.message())
            .await
            .expect("a watch event in time")
            .expect("watch")
            .expect("stream open");
        for e in m.events() {
            let kv = e.kv().expect("kv");
            events.push(format!(
                "{} {}={} m{} prev {:?}",
                if e.event_type() == EventType::Put {
                    "put"
                } else {
                    "delete"
                },
                kv.key_str().unwrap_or("?"),
                kv.value_str().unwrap_or("?"),
                kv.mod_revision(),
                e.prev_kv()
                    .map(|p| p.value_str().unwrap_or("?").to_string())
            ));
        }
    }
    out.push(format!("watch {events:?}"));

    let l = c.lock("the-lock", None).await.expect("lock");
    c.unlock(l.key()).await.expect("unlock");
    out.push("lock taken and released".into());
    // A second holder waits for the first.
    let a = c.lease_grant(30, None).await.expect("grant").id();
    let b = c.lease_grant(30, None).await.expect("grant").id();
    let first = c
        .lock("queue", Some(etcd_client::LockOptions::new().with_lease(a)))
        .await
        .expect("first lock");
    let mut other = c.clone();
    let second = tokio::spawn(async move {
        other
            .lock("queue", Some(etcd_client::LockOptions::new().with_lease(b)))
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let waited = !second.is_finished();
    c.unlock(first.key()).await.expect("unlock");
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), second)
        .await
        .expect("the second lock in time")
        .expect("task")
        .expect("second lock");
    out.push(format!(
        "second waited {waited}, then held {}",
        String::from_utf8_lossy(got.key()).starts_with("queue/")
    ));
    // An election: a leader proclaims, a second candidate waits, an
    // observer sees each leader, the first resigns and the second leads.
    {
        use etcd_client::{ProclaimOptions, ResignOptions};
        let a = c.lease_grant(30, None).await.expect("grant").id();
        let b = c.lease_grant(30, None).await.expect("grant").id();
        let first = c.campaign("vote", "one", a).await.expect("campaign");
        let first = first.leader().expect("leader key").clone();
        c.proclaim(
            "one-b",
            Some(ProclaimOptions::new().with_leader(first.clone())),
        )
        .await
        .expect("proclaim");
        let now = c.leader("vote").await.expect("leader");
        let value = |r: &etcd_client::LeaderResponse| {
            r.kv()
                .map(|kv| kv.value_str().unwrap_or("?").to_string())
                .unwrap_or_default()
        };
        out.push(format!("leader says {}", value(&now)));
        let mut observer = c.observe("vote").await.expect("observe");
        let seen = observer.message().await.expect("observe").expect("open");
        out.push(format!("observed {}", value(&seen)));
        let mut other = c.clone();
        let second = tokio::spawn(async move { other.campaign("vote", "two", b).await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let waited = !second.is_finished();
        c.resign(Some(ResignOptions::new().with_leader(first.clone())))
            .await
            .expect("resign");
        let won = tokio::time::timeout(std::time::Duration::from_secs(10), second)
            .await
            .expect("the second campaign in time")
            .expect("task")
            .expect("campaign");
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), observer.message())
            .await
            .expect("the observer sees the new leader")
            .expect("observe")
            .expect("open");
        out.push(format!(
            "second waited {waited}, leads {}, observed {}",
            won.leader().is_some(),
            value(&next)
        ));
        let stale = c
            .proclaim("late", Some(ProclaimOptions::new().with_leader(first)))
            .await;
        out.push(format!(
            "proclaim after resigning: {}",
            match stale {
                Ok(_) => "accepted".to_string(),
                Err(etcd_client::Error::GRpcStatus(s)) => s.message().to_string(),
                Err(e) => e.to_string(),
            }
        ));
        let none = c.leader("nobody").await;
        out.push(format!(
            "leader of an empty election: {}",
            match none {
                Ok(r) => format!("{:?}", r.kv().map(|kv| kv.key().to_vec())),
                Err(etcd_client::Error::GRpcStatus(s)) => s.message().to_string(),
                Err(e) => e.to_string(),
            }
        ));
    }
    out.push(format!(
        "members {}",
        c.member_list().await.expect("members").members().len()
    ));

    let rev = c.get("t", None).await.expect("get").kvs()[0].mod_revision();
    c.put("t", "again", None).await.expect("put");
    c.compact(rev, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    let r = c
        .get("t", Some(GetOptions::new().with_revision(rev - 1)))
        .await;
    out.push(format!(
        "read below the compaction: {}",
        match r {
            Ok(r) => format!("count {}", r.count()),
            Err(etcd_client::Error::GRpcStatus(s)) => format!("{:?} {}", s.code(), s.message()),
            Err(e) => format!("{e}"),
        }
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_etcd_client_crate_sees_what_it_sees_on_etcd() {
    let (_etcd, _cairn, e, c) = fresh_pair().await;
    let on_etcd = rust_transcript(&e).await.join("\n");
    let on_cairn = rust_transcript(&c).await.join("\n");
    assert!(on_etcd.lines().count() > 10, "{on_etcd}");
    assert!(
        on_etcd.contains("second waited true, then held true")
            && on_etcd.contains("second waited true, leads true, observed two"),
        "{on_etcd}"
    );
    compare("rust etcd-client", &on_etcd, &on_cairn);
}

/// A POST to `url` with `body` through curl: the HTTP status and the
/// JSON answer, with what differs between any two etcds (ids, terms)
/// taken out of its headers.
fn gateway_post(url: &str, body: &str) -> (u16, serde_json::Value) {
    gateway_post_as(url, body, None)
}

/// [`gateway_post`] with a token in `Authorization`.
fn gateway_post_as(url: &str, body: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-X", "POST", "-w", "\n%{http_code}", "-d", body, url]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: {t}")]);
    }
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (json, code) = text.rsplit_once('\n').expect("status line");
    let mut v: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{url} {body}: {e}: {json}"));
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for k in [
                    "cluster_id",
                    "member_id",
                    "raft_term",
                    "ID",
                    "member",
                    "token",
                    "hash",
                ] {
                    m.remove(k);
                }
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    (code.trim().parse().expect("status"), v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_gateway_answers_curl_as_etcd_does() {
    // Against etcd 3.5.1: 3.4's gateway answers some codes with other
    // HTTP statuses (FailedPrecondition: 412, where 3.5 says 400).
    let (_etcd, cairn, e, c) = fresh_pair_of(&etcd35()).await;
    let calls: &[(&str, &str)] = &[
        ("/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#),
        (
            "/v3/kv/put",
            r#"{"key":"Zm9v","value":"YmF6","prev_kv":true}"#,
        ),
        ("/v3/kv/range", r#"{"key":"Zm9v"}"#),
        (
            "/v3beta/kv/range",
            r#"{"key":"Zg==","range_end":"Zw==","keys_only":true}"#,
        ),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":"100"}"#),
        ("/v3/kv/put", r#"{"value":"YmFy"}"#),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"target":"VALUE","key":"Zm9v","value":"YmF6"}],"success":[{"request_put":{"key":"dA==","value":"eA=="}}],"failure":[{"request_range":{"key":"Zm9v"}}]}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"100"}],"failure":[{"requestRange":{"key":"dA=="}}]}"#,
        ),
        ("/v3/kv/deleterange", r#"{"key":"dA==","prev_kv":true}"#),
        ("/v3/kv/compaction", r#"{"revision":"3"}"#),
        ("/v3/kv/range", r#"{"key":"Zm9v","revision":"2"}"#),
        ("/v3/lease/grant", r#"{"TTL":"30","ID":"77"}"#),
        ("/v3/lease/timetolive", r#"{"ID":"77","keys":true}"#),
        ("/v3/lease/leases", "{}"),
        ("/v3/lease/revoke", r#"{"ID":"77"}"#),
        ("/v3/lease/revoke", r#"{"ID":"77"}"#),
        ("/v3/auth/authenticate", r#"{"name":"x","password":"y"}"#),
    ];
    let same_answers = |calls: &[(&str, &str)]| {
        for (path, body) in calls {
            let (ecode, ejson) = gateway_post(&format!("http://{e}{path}"), body);
            let (ccode, cjson) = gateway_post(&format!("http://{c}{path}"), body);
            assert_eq!(
                (ccode, &cjson),
                (ecode, &ejson),
                "POST {path} {body}: Cairn, then etcd"
            );
        }
    };
    same_answers(calls);
    // A backup through the gateway: JSON lines of base64 pieces making
    // a snapshot file etcdctl reads, at the same revision as etcd's.
    let dir = cairn.dir.path();
    let revision_of = |ep: &str, who: &str| -> u64 {
        let out = Command::new("curl")
            .args(["-s", "-X", "POST", "-d", "{}"])
            .arg(format!("http://{ep}/v3/maintenance/snapshot"))
            .output()
            .expect("curl");
        let mut file = Vec::new();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let blob = v["result"]["blob"].as_str().expect("a blob in each line");
            let mut dec = Command::new("base64")
                .arg("-d")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("base64");
            dec.stdin
                .take()
                .expect("stdin")
                .write_all(blob.as_bytes())
                .expect("write");
            file.extend(dec.wait_with_output().expect("base64").stdout);
        }
        let path = dir.join(format!("gateway-{who}.db"));
        std::fs::write(&path, &file).expect("write the snapshot");
        let (ok, status, err) = etcdctl(
            "",
            &[
                "snapshot",
                "status",
                "-w",
                "json",
                path.to_str().expect("path"),
            ],
        );
        assert!(ok, "{who}: etcdctl snapshot status: {err}");
        let v: serde_json::Value = serde_json::from_str(&status).expect("status json");
        v["revision"].as_u64().expect("revision")
    };
    assert_eq!(revision_of(&c, "cairn"), revision_of(&e, "etcd"));

    // Users, roles and auth through the gateway, then calls with and
    // without the token.
    let admin: &[(&str, &str)] = &[
        (
            "/v3/auth/user/add",
            r#"{"name":"root","password":"rootpw"}"#,
        ),
        ("/v3/auth/user/add", r#"{"name":"alice","password":"pw"}"#),
        ("/v3/auth/role/add", r#"{"name":"reader"}"#),
        (
            "/v3/auth/role/grant",
            r#"{"name":"reader","perm":{"permType":"READ","key":"Zm9v"}}"#,
        ),
        ("/v3/auth/user/grant", r#"{"user":"alice","role":"reader"}"#),
        ("/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#),
        ("/v3/auth/role/get", r#"{"role":"reader"}"#),
        ("/v3/auth/user/list", "{}"),
        ("/v3/auth/enable", "{}"),
        ("/v3/kv/range", r#"{"key":"Zm9v"}"#),
        (
            "/v3/auth/authenticate",
            r#"{"name":"alice","password":"wrong"}"#,
        ),
        ("/v3/cluster/member/add", r#"{"peerURLs":["not a url"]}"#),
    ];
    same_answers(admin);
    let token = |ep: &str, user: &str, pw: &str| -> String {
        let (code, v) = gateway_post(
            &format!("http://{ep}/v3/auth/authenticate"),
            &format!(r#"{{"name":"{user}","password":"{pw}"}}"#),
        );
        assert_eq!(code, 200, "{v}");
        let out = Command::new("curl")
            .args(["-s", "-X", "POST", "-d"])
            .arg(format!(r#"{{"name":"{user}","password":"{pw}"}}"#))
            .arg(format!("http://{ep}/v3/auth/authenticate"))
            .output()
            .expect("curl");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v["token"].as_str().expect("a token").to_string()
    };
    // Without credentials, Cairn refuses the calls etcd 3.4 and early
    // 3.5 left open (GHSA-q8m4-xhhv-38mg; docs/compatibility.md).
    let (code, v) = gateway_post(&format!("http://{c}/v3/maintenance/alarm"), "{}");
    assert_eq!(
        (code, &v["message"]),
        (400, &"etcdserver: user name is empty".into())
    );
    let log = cairn.members[0].log_text();
    assert!(
        log.contains("request refused") && log.contains("remote=127.0.0.1:"),
        "a gateway refusal is logged with the client's address:\n{log}"
    );
    let (et, ct) = (token(&e, "alice", "pw"), token(&c, "alice", "pw"));
    let (er, cr) = (token(&e, "root", "rootpw"), token(&c, "root", "rootpw"));
    let as_user: &[(&str, &str, bool)] = &[
        ("/v3/kv/range", r#"{"key":"Zm9v"}"#, false),
        ("/v3/kv/put", r#"{"key":"Zm9v","value":"eA=="}"#, false),
        ("/v3/auth/user/get", r#"{"name":"alice"}"#, false),
        ("/v3/auth/user/list", "{}", false),
        ("/v3/auth/user/list", "{}", true),
        ("/v3/auth/disable", "{}", true),
    ];
    for (i, (path, body, root)) in as_user.iter().enumerate() {
        let (etok, ctok) = if *root { (&er, &cr) } else { (&et, &ct) };
        let (ecode, ejson) = gateway_post_as(&format!("http://{e}{path}"), body, Some(etok));
        let (ccode, cjson) = gateway_post_as(&format!("http://{c}{path}"), body, Some(ctok));
        assert_eq!(
            (ccode, &cjson),
            (ecode, &ejson),
            "call {i}: POST {path} {body} with a token: Cairn, then etcd"
        );
    }

    // A token sent with auth off: etcd refuses it as invalid, Cairn
    // serves the call (docs/compatibility.md).
    let (code, _) = gateway_post_as(
        &format!("http://{c}/v3/kv/range"),
        r#"{"key":"Zm9v"}"#,
        Some(&ct),
    );
    assert_eq!(code, 200);

    // A body that is not JSON: both refuse it as an invalid argument
    // (the parsers' messages differ).
    let (ecode, ejson) = gateway_post(&format!("http://{e}/v3/kv/range"), "garbage");
    let (ccode, cjson) = gateway_post(&format!("http://{c}/v3/kv/range"), "garbage");
    assert_eq!((ccode, &cjson["code"]), (ecode, &ejson["code"]));
    assert_eq!(ccode, 400);
}

/// etcdctl's output with what differs between any two servers masked:
/// endpoints and URLs, member names, ids and hashes, timings, sizes.
fn masked(out: &str, names: &[&str], dir: &str) -> String {
    // JSON (-w json): the header's ids and term out; members' ids, names
    // and URLs masked.
    if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(out.trim()) {
        if let Some(h) = v.get_mut("header").and_then(|h| h.as_object_mut()) {
            for k in ["cluster_id", "member_id", "raft_term"] {
                h.remove(k);
            }
        }
        fn mask_json(v: &mut serde_json::Value, names: &[&str]) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, x) in m.iter_mut() {
                        if k == "ID" {
                            *x = "<id>".into();
                        } else {
                            mask_json(x, names);
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter_mut().for_each(|x| mask_json(x, names)),
                serde_json::Value::String(s) => {
                    if s.starts_with("http://127.0.0.1:") {
                        *s = "<endpoint>".into();
                    } else if names.contains(&s.as_str()) {
                        *s = "<name>".into();
                    }
                }
                _ => {}
            }
        }
        mask_json(&mut v, names);
        return v.to_string();
    }
    // -w fields: the same lines out.
    let out: String = out
        .lines()
        .filter(|l| {
            !["\"ClusterID\"", "\"MemberID\"", "\"RaftTerm\""]
                .iter()
                .any(|f| l.starts_with(f))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let mut s = out.replace(dir, "<dir>");
    for n in names {
        s = s.replace(&format!(", {n}, "), ", <name>, ");
    }
    let words: Vec<String> = s
        .split_inclusive(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .map(|w| {
            let (word, sep) = w.split_at(w.trim_end_matches([' ', '\n', ',', '[', ']']).len());
            let masked = if word.starts_with("http://127.0.0.1:") || word.starts_with("127.0.0.1:")
            {
                "<endpoint>".to_string()
            } else if word.len() >= 12 && word.chars().all(|c| c.is_ascii_hexdigit()) {
                "<id>".to_string()
            } else if word.len() >= 8 && word.chars().all(|c| c.is_ascii_digit()) {
                "<n>".to_string()
            } else if word.ends_with("ms") || word.ends_with("µs") {
                "<took>".to_string()
            } else {
                word.to_string()
            };
            format!("{masked}{sep}")
        })
        .collect();
    words.concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_answers_as_etcd_does_with_either_endpoint_form() {
    use common::etcdctl_stdin;
    let (_etcd, cairn, e, c) = fresh_pair().await;
    let dirs = tempfile::tempdir().expect("tempdir");
    let names = ["ref", cairn.members[0].name.as_str()];
    // (arguments, stdin); each command runs with bare and with http://
    // endpoints in turn.
    let txn = "value(\"foo\") = \"bar2\"\n\nput t yes\n\nput t no\n\n";
    let steps: &[(&[&str], Option<&str>)] = &[
        (&["put", "foo", "bar"], None),
        (&["put", "foo", "bar2", "--prev-kv"], None),
        (&["put", "fa", "1"], None),
        (&["get", "foo"], None),
        (
            &[
                "get",
                "f",
                "--prefix",
                "--sort-by=MODIFY",
                "--order=DESCEND",
            ],
            None,
        ),
        (&["get", "f", "--prefix", "-w", "json"], None),
        (&["get", "foo", "--rev=2", "--print-value-only"], None),
        (&["get", "a", "--from-key", "--keys-only"], None),
        (
            &["get", "f", "--prefix", "--count-only", "-w", "fields"],
            None,
        ),
        (&["txn"], Some(txn)),
        (&["get", "t"], None),
        (&["del", "fa", "--prev-kv"], None),
        (&["del", "nothing"], None),
        (&["compaction", "3"], None),
        (&["get", "foo", "--rev=2"], None),
        (&["alarm", "list"], None),
        (&["alarm", "disarm"], None),
        (&["defrag"], None),
        (&["endpoint", "health"], None),
        (&["member", "list"], None),
        // etcd's Cluster answers carry no revision in their header.
        (&["member", "list", "-w", "json"], None),
        (&["user", "add", "alice", "--new-user-password=pw"], None),
        (&["role", "add", "reader"], None),
        (
            &[
                "role",
                "grant-permission",
                "reader",
                "read",
                "foo",
                "--prefix",
            ],
            None,
        ),
        (&["user", "grant-role", "alice", "reader"], None),
        (&["user", "get", "alice"], None),
        (&["role", "get", "reader"], None),
        (&["user", "list"], None),
        (&["role", "list"], None),
        (
            &["role", "revoke-permission", "reader", "foo", "--prefix"],
            None,
        ),
        (&["user", "revoke-role", "alice", "reader"], None),
        (&["user", "delete", "alice"], None),
        (&["role", "delete", "reader"], None),
        (&["auth", "disable"], None),
        (&["lock", "mutex", "echo", "held"], None),
        // History below the compaction: refused by both.
        (&["watch", "foo", "--rev=1", "--", "true"], None),
    ];
    for (i, (args, stdin)) in steps.iter().enumerate() {
        let (ep_e, ep_c) = if i % 2 == 0 {
            (e.clone(), c.clone())
        } else {
            (format!("http://{e}"), format!("http://{c}"))
        };
        let (eok, eout, eerr) = etcdctl_stdin(&ep_e, args, *stdin);
        let (cok, cout, cerr) = etcdctl_stdin(&ep_c, args, *stdin);
        let dir = dirs.path().to_str().expect("utf-8");
        assert_eq!(
            (cok, masked(&cout, &names, dir)),
            (eok, masked(&eout, &names, dir)),
            "etcdctl {args:?} against {ep_c} (Cairn), then etcd: stderr {cerr} / {eerr}"
        );
    }

    // Leases: ids and remaining TTLs differ, the rest must not.
    let lease = |ep: &str| -> String {
        let (ok, out, err) = etcdctl_stdin(ep, &["lease", "grant", "100"], None);
        assert!(ok, "{err}");
        out.split_whitespace().nth(1).expect("lease id").to_string()
    };
    let (le, lc) = (lease(&e), lease(&c));
    for args in [
        vec!["put", "leased", "v", "--lease=ID"],
        vec!["lease", "keep-alive", "--once", "ID"],
        vec!["lease", "list"],
        vec!["lease", "revoke", "ID"],
        vec!["get", "leased"],
    ] {
        let fill = |id: &str| -> Vec<String> {
            args.iter().map(|a| a.replace("ID", id)).collect::<Vec<_>>()
        };
        let (ea, ca) = (fill(&le), fill(&lc));
        let ea: Vec<&str> = ea.iter().map(String::as_str).collect();
        let ca: Vec<&str> = ca.iter().map(String::as_str).collect();
        let (eok, eout, eerr) = etcdctl_stdin(&e, &ea, None);
        let (cok, cout, cerr) = etcdctl_stdin(&format!("http://{c}"), &ca, None);
        let dir = dirs.path().to_str().expect("utf-8");
        assert!(eok && cok, "{args:?}: {eerr} / {cerr}");
        assert_eq!(
            masked(&cout, &names, dir),
            masked(&eout, &names, dir),
            "etcdctl {args:?}: Cairn, then etcd"
        );
    }

    // Backups: each server's file, read by etcdctl.
    for (ep, file) in [(&e, "e.db"), (&c, "c.db")] {
        let path = dirs.path().join(file);
        let p = path.to_str().expect("utf-8");
        let (ok, out, err) = etcdctl_stdin(ep, &["snapshot", "save", p], None);
        assert!(ok && out.contains("Snapshot saved at"), "{out}{err}");
        let (ok, out, err) = etcdctl_stdin(ep, &["snapshot", "status", p, "-w", "table"], None);
        assert!(ok && out.contains("REVISION"), "{out}{err}");
    }
}
