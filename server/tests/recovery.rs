//! Disaster recovery with real processes: a cluster that lost its
//! quorum brought back from its survivor (`--force-new-cluster`), and a
//! cluster rebuilt from a backup taken with `etcdctl snapshot save`
//! (`cairnutl snapshot restore`), each as the runbook in
//! `docs/operations.md` says.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Waits until `ep` answers a serializable get of `key` with `want`.
async fn wait_value(c: &Cluster, ep: &str, key: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out, _) = etcdctl(ep, &["get", key, "--print-value-only", "--consistency=s"]);
        if ok && out.trim_end() == want {
            return;
        }
        if Instant::now() > deadline {
            c.dump_logs();
            panic!("{ep} never served {key}={want} (last: {out:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Adds a fresh member through `ep` and starts it.
fn add_member(c: &mut Cluster, ep: &str, name: &str) -> usize {
    let idx = c.new_member(name, &[]);
    let peer = c.members[idx].peer_url.clone();
    ctl(ep, &["member", "add", name, &format!("--peer-urls={peer}")]);
    c.members[idx].start();
    idx
}

/// Three members; two die with their data; the survivor is restarted
/// with `--force-new-cluster` and keeps every write whose commit reached
/// it; two fresh members join; the survivor then restarts without the
/// flag as one member of the new three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_lost_recovered_from_the_survivor() {
    let mut c = Cluster::start(3, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    // The survivor is a follower: the harder case (its commit index
    // trails the leader's).
    let survivor = (leader + 1) % 3;
    let mut kv = c.members[leader].kv().await;
    let mut acked = Vec::new();
    for i in 0..200 {
        let rev = put(&mut kv, &format!("k/{i:03}"), &i.to_string()).await;
        acked.push((i, rev));
    }
    let last_acked = acked.last().map(|(_, r)| *r).expect("writes");
    // The harness knows these commits reached the survivor once it
    // serves the last one.
    let sep = c.members[survivor].endpoint();
    wait_value(&c, &sep, "k/199", "199").await;
    drop(kv);

    for i in 0..3 {
        if i != survivor {
            c.members[i].kill();
            std::fs::remove_dir_all(&c.members[i].data_dir).expect("remove data dir");
        }
    }
    // Without a quorum the survivor refuses writes.
    let (ok, _, _) = etcdctl(&sep, &["put", "k/refused", "x", "--command-timeout=2s"]);
    assert!(!ok, "a member without quorum accepted a write");

    // The runbook: stop the survivor, start it with --force-new-cluster.
    let st = c.members[survivor].stop();
    assert!(st.success(), "clean exit: {st:?}");
    let t0 = Instant::now();
    c.members[survivor].extra.push("--force-new-cluster".into());
    c.members[survivor].start();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, _, _) = etcdctl(&sep, &["put", "after", "1", "--command-timeout=1s"]);
        if ok {
            break;
        }
        if Instant::now() > deadline {
            c.dump_logs();
            panic!("the survivor accepted no write within 30 s of --force-new-cluster");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rto = t0.elapsed();
    eprintln!("recovery time (start with --force-new-cluster to first write): {rto:?}");
    assert!(
        c.members[survivor]
            .log_text()
            .contains("forced a new cluster of this member alone"),
        "the survivor did not log the recovery"
    );
    // Every acknowledged write is there, at its revision, and new
    // revisions continue above them.
    let mut kv = c.members[survivor].kv().await;
    for (i, rev) in &acked {
        let out = ctl(&sep, &["get", &format!("k/{i:03}"), "-w", "json"]);
        assert!(
            out.contains(&format!("\"mod_revision\":{rev}")),
            "k/{i:03} lost or changed: {out}"
        );
    }
    let after = put(&mut kv, "after", "2").await;
    assert!(
        after > last_acked,
        "revision went back: {after} <= {last_acked}"
    );
    let members = ctl(&sep, &["member", "list"]);
    assert_eq!(members.lines().count(), 1, "{members}");

    // Two fresh members join; the data reaches them.
    let a = add_member(&mut c, &sep, "m3");
    wait_value(&c, &c.members[a].endpoint(), "k/199", "199").await;
    let b = add_member(&mut c, &sep, "m4");
    wait_value(&c, &c.members[b].endpoint(), "after", "2").await;
    c.wait_leader(Duration::from_secs(20)).await;
    assert_eq!(ctl(&c.endpoints(), &["member", "list"]).lines().count(), 3);

    // Restarted without the flag, the survivor is one of three again.
    c.members[survivor].stop();
    c.members[survivor]
        .extra
        .retain(|f| f != "--force-new-cluster");
    c.members[survivor].start();
    c.wait_leader(Duration::from_secs(20)).await;
    ctl(&c.endpoints(), &["put", "final", "3"]);
    for i in [survivor, a, b] {
        wait_value(&c, &c.members[i].endpoint(), "final", "3").await;
    }
    assert_eq!(ctl(&c.endpoints(), &["member", "list"]).lines().count(), 3);
}

/// `--force-new-cluster` on an empty data dir is refused with a clear
/// error, and nothing is created.
#[test]
fn force_new_cluster_needs_a_member_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("fresh");
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["--name", "x", "--force-new-cluster"])
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{}", free_port()),
        ])
        .args([
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{}", free_port()),
        ])
        .output()
        .expect("run cairn");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--force-new-cluster needs the data dir of a member that has run before"),
        "{err}"
    );
}

/// Everything under `prefix` as etcdctl prints it in JSON, the header
/// left out (keys, values, create and mod revisions, versions, leases).
fn kvs_json(ep: &str, prefix: &str) -> String {
    let out = ctl(
        ep,
        &["get", prefix, "--prefix", "-w", "json", "--consistency=s"],
    );
    let at = out.find("\"kvs\"").unwrap_or(out.len());
    out[at..].to_string()
}

/// A backup saved with `etcdctl snapshot save` while writes go on, then
/// checked with `cairnutl snapshot status`; damaged copies are refused;
/// a new three-member cluster is restored from it (revision bumped and
/// marked compacted) and serves the same keys at the same revisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_restored_from_an_etcdctl_snapshot() {
    let c = Cluster::start(3, &[]).await;
    let all = c.endpoints();
    for i in 0..300 {
        ctl(&all, &["put", &format!("b/{i:03}"), &format!("v{i}")]);
    }
    ctl(&all, &["put", "b/010", "overwritten"]);
    ctl(&all, &["del", "b/020"]);
    let lease = ctl(&all, &["lease", "grant", "600"]);
    let lease_id = lease
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    ctl(
        &all,
        &["put", "b/leased", "x", &format!("--lease={lease_id}")],
    );
    let before = kvs_json(&all, "b/");

    // Writes go on while the backup streams.
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let ep = c.members[leader].endpoint();
    let writer = {
        let all = all.clone();
        std::thread::spawn(move || {
            for i in 0..100 {
                ctl(&all, &["put", &format!("during/{i:03}"), "x"]);
            }
        })
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.db");
    let f = file.to_str().expect("utf-8 path");
    let saved = ctl(&ep, &["snapshot", "save", f]);
    assert!(saved.contains("Snapshot saved at"), "{saved}");
    writer.join().expect("writer");

    let (ok, out, err) = cairnutl(&["snapshot", "status", f, "-w", "json"]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    let revision = status["revision"].as_i64().expect("revision");
    assert!(revision >= 303, "{status}");
    assert!(
        status["totalKey"].as_u64().expect("keys") >= 302,
        "{status}"
    );
    assert_eq!(
        status["totalSize"].as_u64(),
        Some(std::fs::metadata(&file).expect("size").len())
    );
    // The file is etcd's snapshot format: etcdctl reads it and restores
    // an etcd member from it.
    let theirs: serde_json::Value =
        serde_json::from_str(ctl(&ep, &["snapshot", "status", f, "-w", "json"]).trim())
            .expect("etcdctl's json");
    assert_eq!(theirs["revision"].as_i64(), Some(revision), "{theirs}");
    let etcd_dir = dir.path().join("etcd-member");
    ctl(
        &ep,
        &[
            "snapshot",
            "restore",
            f,
            "--data-dir",
            etcd_dir.to_str().expect("utf-8"),
        ],
    );
    assert!(
        etcd_dir.join("member/snap/db").is_file(),
        "etcdctl restored nothing"
    );

    // A flipped byte, a truncated copy and a foreign file are refused.
    let raw = std::fs::read(&file).expect("read backup");
    let flipped = dir.path().join("flipped.db");
    let mut b = raw.clone();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    std::fs::write(&flipped, &b).expect("write");
    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &raw[..raw.len() - 100]).expect("write");
    let foreign = dir.path().join("foreign.db");
    std::fs::write(&foreign, vec![7u8; 4096]).expect("write");
    // A file from a future version of Cairn's own format.
    let future = dir.path().join("future.db");
    let mut b = b"CAIRNBK2".to_vec();
    b.extend_from_slice(&raw[8..]);
    std::fs::write(&future, &b).expect("write");
    for (bad, want) in [
        (&flipped, "integrity check failed"),
        (&truncated, "integrity check failed"),
        (&foreign, "is not a snapshot file"),
        (&future, "of format '2', which this version does not read"),
    ] {
        let p = bad.to_str().expect("utf-8");
        let (ok, _, err) = cairnutl(&["snapshot", "status", p]);
        assert!(!ok && err.contains(want), "status of {p}: {err}");
        let target = dir.path().join("never");
        let (ok, _, err) = cairnutl(&[
            "snapshot",
            "restore",
            p,
            "--data-dir",
            target.to_str().expect("utf-8"),
        ]);
        assert!(!ok && err.contains(want), "restore of {p}: {err}");
        assert!(!target.exists(), "a refused restore left {target:?}");
    }

    // Every member of the new cluster is restored from the same file.
    let mut r = Cluster::prepare(
        3,
        &["--heartbeat-interval", "50", "--election-timeout", "500"],
        "http",
        "http",
    );
    for m in &r.members {
        let (ok, out, err) = cairnutl(&[
            "snapshot",
            "restore",
            f,
            "--data-dir",
            m.data_dir.to_str().expect("utf-8"),
            "--name",
            &m.name,
            "--initial-cluster",
            &m.initial_cluster,
            "--initial-cluster-token",
            "restored",
            "--initial-advertise-peer-urls",
            &m.peer_url,
            "--bump-revision",
            "1000",
            "--mark-compacted",
        ]);
        assert!(ok, "restore {}: {err}", m.name);
        assert!(out.contains(&format!("at revision {revision}")), "{out}");
    }
    // A data dir in use is not restored over.
    let (ok, _, err) = cairnutl(&[
        "snapshot",
        "restore",
        f,
        "--data-dir",
        r.members[0].data_dir.to_str().expect("utf-8"),
    ]);
    assert!(!ok && err.contains("not empty"), "{err}");
    for m in &mut r.members {
        m.start();
    }
    r.wait_leader(Duration::from_secs(30)).await;
    let rall = r.endpoints();
    assert_eq!(kvs_json(&rall, "b/"), before, "restored keys differ");
    // The new revisions continue above the bumped one; revisions below it
    // are compacted.
    let mut kv = r.members[0].kv().await;
    let next = put(&mut kv, "after", "1").await;
    assert_eq!(next, revision + 1000 + 1);
    let (ok, _, err) = etcdctl(&rall, &["get", "b/001", &format!("--rev={revision}")]);
    assert!(
        !ok && err.contains("required revision has been compacted"),
        "{err}"
    );
    assert_eq!(ctl(&rall, &["member", "list"]).lines().count(), 3);
}

/// Scheduled backups go to their own directory, the newest two kept;
/// with every member's data lost, the member is restored from the newest
/// one and serves everything written before it (the recovery point the
/// restore prints).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_everything_restored_from_a_scheduled_backup() {
    let backups = tempfile::tempdir().expect("tempdir");
    let bdir = backups.path().join("m0");
    let b = bdir.to_str().expect("utf-8").to_string();
    let mut c = Cluster::start(
        1,
        &[
            "--snapshot-interval",
            "300ms",
            "--snapshot-retention",
            "2",
            "--snapshot-dir",
            &b,
        ],
    )
    .await;
    let ep = c.members[0].endpoint();
    let mut kv = c.members[0].kv().await;
    let mut last = 0;
    for i in 0..100 {
        last = put(&mut kv, &format!("s/{i:03}"), &i.to_string()).await;
    }
    drop(kv);
    // Wait for a backup holding the last write, and for older ones to
    // have been pruned.
    let deadline = Instant::now() + Duration::from_secs(20);
    let newest = loop {
        let mut files: Vec<String> = std::fs::read_dir(&bdir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let written = c.members[0]
            .log_text()
            .matches("scheduled backup written")
            .count();
        if let Some(newest) = files.last() {
            let p = bdir.join(newest);
            let (ok, out, _) = cairnutl(&[
                "snapshot",
                "status",
                p.to_str().expect("utf-8"),
                "-w",
                "json",
            ]);
            let rev = serde_json::from_str::<serde_json::Value>(out.trim())
                .ok()
                .and_then(|v| v["revision"].as_i64());
            if ok && rev >= Some(last) && written >= 4 {
                assert_eq!(files.len(), 2, "retention 2 kept {files:?}");
                assert!(
                    files
                        .iter()
                        .all(|f| f.starts_with("backup-") && f.ends_with(".db")),
                    "{files:?}"
                );
                break p;
            }
        }
        if Instant::now() > deadline {
            c.dump_logs();
            panic!("no backup at revision {last} within 20 s: {files:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Everything is lost but the backups.
    c.members[0].kill();
    std::fs::remove_dir_all(&c.members[0].data_dir).expect("remove data dir");
    let m = &c.members[0];
    let (ok, out, err) = cairnutl(&[
        "snapshot",
        "restore",
        newest.to_str().expect("utf-8"),
        "--data-dir",
        m.data_dir.to_str().expect("utf-8"),
        "--name",
        &m.name,
        "--initial-cluster",
        &m.initial_cluster,
        "--initial-advertise-peer-urls",
        &m.peer_url,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("restored snapshot at revision"), "{out}");
    c.members[0].start();
    c.wait_leader(Duration::from_secs(20)).await;
    assert_eq!(ctl(&ep, &["get", "s/099", "--print-value-only"]), "99\n");
    let keys = ctl(&ep, &["get", "s/", "--prefix", "--keys-only"]);
    assert_eq!(
        keys.lines().filter(|l| !l.is_empty()).count(),
        100,
        "{keys}"
    );
    let mut kv = c.members[0].kv().await;
    assert!(put(&mut kv, "after", "1").await > last);
}
