//! `cairnutl migrate` against the real etcd 3.4: a keyspace written by
//! etcd moves into Cairn and back into etcd with every key, value,
//! create/mod revision, version, lease, user and role as etcd had them,
//! read the same at every revision kept; damaged and foreign files are
//! refused with nothing made.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn wait_ctl(ep: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !etcdctl(ep, &["get", "probe"]).0 {
        assert!(Instant::now() < deadline, "{ep} did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a client sees of the keyspace at `rev` (0: now): the header's
/// revision and the kvs, or the error.
fn view(ep: &str, rev: i64) -> Result<(i64, Value), String> {
    let rev = format!("--rev={rev}");
    let (ok, out, err) = etcdctl(ep, &["get", "", "--prefix", &rev, "-w", "json"]);
    if !ok {
        // The error line without etcdctl's log noise.
        return Err(err.lines().last().unwrap_or_default().to_string());
    }
    let v: Value = serde_json::from_str(&out).expect("json");
    let head = v["header"]["revision"].as_i64().expect("revision");
    Ok((head, v["kvs"].clone()))
}

/// Every view from revision 1 to the current one.
fn views(ep: &str) -> Vec<Result<(i64, Value), String>> {
    let now = view(ep, 0).expect("current view").0;
    (0..=now).map(|r| view(ep, r)).collect()
}

/// Granted TTL and attached keys of every lease.
fn leases(ep: &str) -> Vec<(String, i64, Vec<String>)> {
    let out = ctl(ep, &["lease", "list"]);
    let mut ids: Vec<String> = out.lines().skip(1).map(|l| l.trim().to_string()).collect();
    ids.sort();
    ids.into_iter()
        .map(|id| {
            let v: Value = serde_json::from_str(&ctl(
                ep,
                &["lease", "timetolive", &id, "--keys", "-w", "json"],
            ))
            .expect("json");
            let granted = v["granted-ttl"].as_i64().expect("granted-ttl");
            // Attached keys in key order (etcd lists them in its map's
            // order, which varies).
            let mut keys: Vec<String> = v["keys"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            keys.sort();
            (id, granted, keys)
        })
        .collect()
}

fn auth_view(ep: &str) -> (String, String, String) {
    (
        ctl(ep, &["user", "list"]),
        ctl(ep, &["user", "get", "alice"]),
        ctl(ep, &["role", "get", "reader"]),
    )
}

/// etcd's history: puts, overwrites, deletes, a multi-op txn (sub
/// revisions), leases with and without keys, a compaction, users, roles.
fn write_history(ep: &str) {
    for i in 0..30 {
        ctl(ep, &["put", &format!("k{}", i % 7), &format!("v{i}")]);
    }
    ctl(ep, &["del", "k3"]);
    let lease = ctl(ep, &["lease", "grant", "600"]);
    let lease = lease
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    ctl(ep, &["put", "leased", "x", &format!("--lease={lease}")]);
    ctl(ep, &["put", "leased2", "y", &format!("--lease={lease}")]);
    ctl(ep, &["lease", "grant", "900"]);
    let (ok, _, err) = etcdctl_stdin(
        ep,
        &["txn"],
        Some("\nput t1 one\nput t2 two\ndel k4\nput k5 txn\n\n\n"),
    );
    assert!(ok, "{err}");
    ctl(ep, &["del", "k", "--prefix"]);
    ctl(ep, &["put", "k0", "back"]);
    ctl(ep, &["compact", "35"]);
    // Values past a page (4 KiB): overflow pages in the file written.
    for (i, len) in [0, 100, 1000, 5000, 9000].iter().enumerate() {
        ctl(ep, &["put", &format!("after{i}"), &"z".repeat(*len)]);
    }
    ctl(ep, &["user", "add", "alice:secret"]);
    ctl(ep, &["role", "add", "reader"]);
    ctl(
        ep,
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "k",
            "--prefix",
        ],
    );
    ctl(
        ep,
        &["role", "grant-permission", "reader", "readwrite", "t1"],
    );
    ctl(ep, &["user", "grant-role", "alice", "reader"]);
}

/// A one-member Cairn cluster whose data dir `cairnutl migrate
/// --from-etcd-db` made.
fn migrated_cairn(db: &Path, extra: &[&str]) -> (Cluster, String) {
    let mut c = Cluster::prepare(1, &[], "http", "http");
    let m = &c.members[0];
    let data_dir = m.data_dir.to_str().expect("path").to_string();
    let mut args = vec![
        "migrate",
        "--from-etcd-db",
        db.to_str().expect("path"),
        "--data-dir",
        &data_dir,
        "--name",
        &m.name,
        "--initial-cluster",
        &m.initial_cluster,
        "--initial-advertise-peer-urls",
        &m.peer_url,
    ];
    args.extend(extra);
    let (ok, out, err) = cairnutl(&args);
    assert!(ok, "migrate failed: {err}{out}");
    c.members[0].start();
    let ep = c.members[0].endpoint();
    wait_ctl(&ep);
    (c, out)
}

#[test]
fn an_etcd_keyspace_moves_to_cairn_and_back_to_etcd_unchanged() {
    let mut etcd = Etcd::start();
    let eep = etcd.client_url.clone();
    wait_ctl(&eep);
    write_history(&eep);
    let tmp = tempfile::tempdir().expect("tempdir");
    let snap = tmp.path().join("etcd.db");
    ctl(&eep, &["snapshot", "save", snap.to_str().expect("path")]);
    let want = views(&eep);
    let want_leases = leases(&eep);
    let want_auth = auth_view(&eep);
    // Revisions 0..35 are compacted, the rest readable.
    assert!(want[34].is_err() && want[35].is_ok(), "{:?}", &want[34..36]);

    // etcd → Cairn: the same at every revision.
    let (mut cairn, out) = migrated_cairn(&snap, &[]);
    assert!(out.contains("SHA-256 checked"), "{out}");
    let cep = cairn.members[0].endpoint();
    let got = views(&cep);
    assert_eq!(got.len(), want.len());
    for (rev, (g, w)) in got.iter().zip(&want).enumerate() {
        match (g, w) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "revision {rev}"),
            (Err(g), Err(w)) => {
                assert!(
                    g.contains("required revision has been compacted") && g == w,
                    "revision {rev}: {g} / {w}"
                )
            }
            _ => panic!("revision {rev}: cairn {g:?}, etcd {w:?}"),
        }
    }
    assert_eq!(leases(&cep), want_leases);
    assert_eq!(auth_view(&cep), want_auth);
    // Both go on from the same revision.
    let next = |ep: &str| {
        let v: Value =
            serde_json::from_str(&ctl(ep, &["put", "next", "1", "-w", "json"])).expect("json");
        v["header"]["revision"].as_i64().expect("revision")
    };
    let on_etcd = next(&eep);
    assert_eq!(next(&cep), on_etcd);
    let want = views(&eep);

    // Cairn → etcd: a file `etcdctl snapshot restore` takes, the same
    // keyspace (the write made on Cairn included) in the etcd it makes.
    cairn.members[0].stop();
    let back = tmp.path().join("back.db");
    let (ok, out, err) = cairnutl(&[
        "migrate",
        "--to-etcd-db",
        back.to_str().expect("path"),
        "--data-dir",
        cairn.members[0].data_dir.to_str().expect("path"),
    ]);
    assert!(ok, "{err}{out}");
    assert!(!err.contains("warning"), "{err}");
    let edir = tempfile::tempdir().expect("tempdir");
    let peer = format!("http://127.0.0.1:{}", free_port());
    let restore = std::process::Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore", back.to_str().expect("path")])
        .arg("--data-dir")
        .arg(edir.path().join("data"))
        .args([
            "--name",
            "back",
            "--initial-cluster",
            &format!("back={peer}"),
        ])
        .args(["--initial-advertise-peer-urls", &peer])
        .output()
        .expect("etcdctl snapshot restore");
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    let etcd2 = Etcd::start_in(edir, "back", &peer);
    let ep2 = etcd2.client_url.clone();
    wait_ctl(&ep2);
    assert_eq!(views(&ep2), want);
    assert_eq!(leases(&ep2), want_leases);
    assert_eq!(auth_view(&ep2), want_auth);
    assert_eq!(next(&ep2), next(&eep));

    // A stopped etcd's own backend (no hash appended) imports too.
    etcd.stop();
    let db = etcd.data_dir().join("member/snap/db");
    let (c3, out) = migrated_cairn(&db, &[]);
    assert!(out.contains("no SHA-256 checked"), "{out}");
    assert_eq!(
        view(&c3.members[0].endpoint(), 0).expect("view").0,
        on_etcd + 1
    );
}

/// The data dirs of a `n`-member Cairn cluster, each made from `db` by
/// `cairnutl migrate --from-etcd-db`, as an operator makes them.
fn migrated_cluster(db: &Path, n: usize) -> Cluster {
    let mut c = Cluster::prepare(n, &[], "http", "http");
    for m in &c.members {
        let (ok, out, err) = cairnutl(&[
            "migrate",
            "--from-etcd-db",
            db.to_str().expect("path"),
            "--data-dir",
            m.data_dir.to_str().expect("path"),
            "--name",
            &m.name,
            "--initial-cluster",
            &m.initial_cluster,
            "--initial-advertise-peer-urls",
            &m.peer_url,
        ]);
        assert!(ok, "migrate failed: {err}{out}");
    }
    for m in &mut c.members {
        m.start();
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_move_with_auth_on_and_tokens_verify_on_every_member() {
    use cairn::proto::etcdserverpb::auth_client::AuthClient;
    use cairn::proto::etcdserverpb::kv_client::KvClient;
    use cairn::proto::etcdserverpb::{AuthenticateRequest, PutRequest, RangeRequest};

    let etcd = Etcd::start();
    let ep = etcd.client_url.clone();
    wait_ctl(&ep);
    ctl(&ep, &["put", "k0", "v0"]);
    ctl(&ep, &["user", "add", "root:rootpw"]);
    ctl(&ep, &["user", "grant-role", "root", "root"]);
    ctl(&ep, &["role", "add", "reader"]);
    ctl(
        &ep,
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "k",
            "--prefix",
        ],
    );
    ctl(&ep, &["user", "add", "alice:alicepw"]);
    ctl(&ep, &["user", "grant-role", "alice", "reader"]);
    ctl(&ep, &["auth", "enable"]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let snap = tmp.path().join("etcd.db");
    ctl(
        &ep,
        &[
            "--user",
            "root:rootpw",
            "snapshot",
            "save",
            snap.to_str().expect("path"),
        ],
    );

    let c = migrated_cluster(&snap, 3);
    // (Status needs a user with auth on: wait with root's.)
    let deadline = Instant::now() + Duration::from_secs(30);
    for m in &c.members {
        while !etcdctl(&m.endpoint(), &["--user", "root:rootpw", "get", "k0"]).0 {
            assert!(Instant::now() < deadline, "{} did not come up", m.name);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // etcd's passwords work; no user, no answer.
    let (ok, _, err) = etcdctl(&c.members[0].endpoint(), &["get", "k0"]);
    assert!(!ok && err.contains("user name is empty"), "{err}");
    // A token made by one member verifies on the others (the signing
    // key the leader proposed is the same everywhere).
    let deadline = Instant::now() + Duration::from_secs(20);
    let token = loop {
        let r = AuthClient::new(c.members[0].channel().await)
            .authenticate(AuthenticateRequest {
                name: "alice".into(),
                password: "alicepw".into(),
            })
            .await;
        match r {
            Ok(r) => break r.into_inner().token,
            Err(s) => assert!(Instant::now() < deadline, "authenticate: {s:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert("token", token.parse().expect("token metadata"));
        r
    }
    for m in &c.members {
        let mut kv = KvClient::new(m.channel().await);
        let got = kv
            .range(with_token(
                RangeRequest {
                    key: b"k0".to_vec().into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .unwrap_or_else(|s| panic!("{}: {s:?}", m.name))
            .into_inner();
        assert_eq!(got.kvs[0].value, b"v0".to_vec());
        // Read-only: a put is refused.
        let put = kv
            .put(with_token(
                PutRequest {
                    key: b"k1".to_vec().into(),
                    value: b"x".to_vec().into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(put.message(), "etcdserver: permission denied", "{}", m.name);
    }
    let (ok, _, err) = etcdctl(
        &c.members[1].endpoint(),
        &["--user", "alice:wrong", "get", "k0"],
    );
    assert!(!ok && err.contains("authentication failed"), "{err}");
    ctl(
        &c.members[2].endpoint(),
        &["--user", "root:rootpw", "put", "k1", "y"],
    );
}

#[test]
fn damaged_or_foreign_files_are_refused_and_nothing_is_made() {
    let etcd = Etcd::start();
    let ep = etcd.client_url.clone();
    wait_ctl(&ep);
    for i in 0..200 {
        ctl(&ep, &["put", &format!("key{i}"), &"v".repeat(100)]);
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let snap = tmp.path().join("etcd.db");
    ctl(&ep, &["snapshot", "save", snap.to_str().expect("path")]);
    let bytes = std::fs::read(&snap).expect("read");
    let try_import = |name: &str, content: &[u8], extra: &[&str]| -> String {
        let file = tmp.path().join(name);
        std::fs::write(&file, content).expect("write");
        let dir = tmp.path().join(format!("{name}.cairn"));
        let mut args = vec![
            "migrate",
            "--from-etcd-db",
            file.to_str().expect("path"),
            "--data-dir",
            dir.to_str().expect("path"),
        ];
        args.extend(extra);
        let (ok, out, err) = cairnutl(&args);
        assert!(!ok, "{name} was imported: {out}");
        assert!(!dir.exists(), "{name} left a data dir");
        err
    };
    // One byte changed in the middle: the hash says so.
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x40;
    let err = try_import("flipped", &flipped, &[]);
    assert!(err.contains("integrity check failed"), "{err}");
    // The same file with the hash check skipped: refused by what it
    // reads, or read whole; either way never a crash.
    let (ok, _, err) = {
        let file = tmp.path().join("flipped");
        let dir = tmp.path().join("skipped.cairn");
        cairnutl(&[
            "migrate",
            "--from-etcd-db",
            file.to_str().expect("path"),
            "--data-dir",
            dir.to_str().expect("path"),
            "--skip-hash-check",
        ])
    };
    assert!(ok || err.contains("Error:"), "{err}");
    // Cut short: no longer a whole bbolt file.
    let err = try_import("short", &bytes[..bytes.len() - 4096 - 32], &[]);
    assert!(err.contains("not a valid bbolt file"), "{err}");
    // Not etcd's at all.
    let err = try_import("text", &b"hello".repeat(2000), &[]);
    assert!(err.contains("not a valid bbolt file"), "{err}");

    // An export never overwrites a file.
    let (ok, _, err) = cairnutl(&[
        "migrate",
        "--to-etcd-db",
        snap.to_str().expect("path"),
        "--data-dir",
        tmp.path().to_str().expect("path"),
    ]);
    assert!(!ok && err.contains("not overwriting"), "{err}");
}
