//! Space with real processes: a member whose store goes over
//! `--quota-backend-bytes` raises NOSPACE; every member then refuses
//! writes that add data with etcd's error while reads, deletes and
//! compaction go on; compaction, defragment and `alarm disarm` bring
//! writes back, as etcd's runbook says.

mod common;

use std::time::{Duration, Instant};

use cairn::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn::proto::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};
use common::*;

async fn db_size(m: &Member) -> i64 {
    let mut c = MaintenanceClient::new(m.channel().await);
    c.status(StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .db_size
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_alarm_refuses_writes_until_space_is_reclaimed_and_disarmed() {
    // The quota sits a few MiB above what an empty store takes.
    let probe = Cluster::start(1, &[]).await;
    let base = db_size(&probe.members[0]).await;
    drop(probe);
    let quota = (base + (6 << 20)).to_string();
    let c = Cluster::start(3, &["--quota-backend-bytes", &quota]).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let mut kv = c.members[leader].kv().await;
    let value = vec![b'x'; 256 << 10];
    let mut refused = None;
    for i in 0..400 {
        let r = kv
            .put(PutRequest {
                key: format!("big/{}", i % 4).into_bytes().into(),
                value: value.clone().into(),
                ..Default::default()
            })
            .await;
        if let Err(s) = r {
            refused = Some((i, s));
            break;
        }
        if i % 20 == 19 {
            // Let the size sampler see the growth.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let (after, status) = refused.expect("no write was refused within 100 MiB over the quota");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "etcdserver: mvcc: database space exceeded"
    );
    eprintln!("NOSPACE after {after} writes of 256 KiB (quota {quota} bytes)");

    // Raised for the cluster: listed, reported, enforced by every member.
    let all = c.endpoints();
    let alarms = ctl(&all, &["alarm", "list"]);
    assert!(alarms.contains("alarm:NOSPACE"), "{alarms}");
    let status = ctl(&all, &["endpoint", "status", "-w", "json"]);
    assert!(status.contains("alarm:NOSPACE"), "{status}");
    for m in &c.members {
        let (ok, _, err) = etcdctl(&m.endpoint(), &["put", "small", "1"]);
        assert!(
            !ok && err.contains("database space exceeded"),
            "{}: {err}",
            m.name
        );
    }
    let (ok, _, err) = etcdctl(&all, &["lease", "grant", "60"]);
    assert!(!ok && err.contains("database space exceeded"), "{err}");
    // Reads, deletes and compaction go on.
    assert_eq!(
        ctl(&all, &["get", "big/0", "--print-value-only"]).len(),
        value.len() + 1
    );
    ctl(&all, &["del", "big/3"]);
    let rev = ctl(&all, &["get", "big/0", "-w", "json"]);
    let rev: serde_json::Value = serde_json::from_str(rev.trim()).expect("json");
    let rev = rev["header"]["revision"].as_i64().expect("revision");
    ctl(&all, &["compaction", &rev.to_string(), "--physical"]);
    let defrag = ctl(&all, &["defrag"]);
    assert!(defrag.contains("Finished defragmenting"), "{defrag}");
    // What defragment frees goes back as fjall retires its old journal
    // (in the background, after the flush).
    for m in &c.members {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let size = db_size(m).await;
            if size < base + (6 << 20) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} is still over the quota after compaction and defragment: {size} bytes",
                m.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    ctl(&all, &["alarm", "disarm"]);
    let alarms = ctl(&all, &["alarm", "list"]);
    assert!(alarms.trim().is_empty(), "{alarms}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, _, err) = etcdctl(&all, &["put", "small", "2"]);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "writes did not come back: {err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(ctl(&all, &["get", "small", "--print-value-only"]), "2\n");
}

/// `--auto-compaction-retention 1s` (periodic): the leader compacts to
/// the revision of about a second ago, over and over; what is newer stays
/// readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_auto_compaction_keeps_the_retention() {
    let c = Cluster::start(3, &["--auto-compaction-retention", "1s"]).await;
    let all = c.endpoints();
    let mut kv = c.members[0].kv().await;
    let first = put(&mut kv, "ac", "1").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let latest = put(&mut kv, "ac", "2").await;
        let (ok, _, err) = etcdctl(&all, &["get", "ac", &format!("--rev={first}")]);
        if !ok {
            assert!(
                err.contains("required revision has been compacted"),
                "{err}"
            );
            // The newest revision is kept.
            let (ok, out, err) = etcdctl(&all, &["get", "ac", &format!("--rev={latest}")]);
            assert!(ok && out.contains('2'), "{err}");
            break;
        }
        if Instant::now() > deadline {
            c.dump_logs();
            panic!("revision {first} was never compacted");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let logged = c.members.iter().any(|m| {
        m.log_text()
            .contains("auto-compaction compacted the history")
    });
    assert!(logged, "no member logged an auto-compaction");
}

/// `--experimental-corrupt-check-time`: a member whose store was altered
/// behind Raft's back (a write it alone has) is found by the leader's
/// hash comparison; CORRUPT is raised and every member refuses kv calls
/// with etcd's error until it is cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_data_differs_raises_corrupt() {
    let mut c = Cluster::start(3, &["--experimental-corrupt-check-time", "500ms"]).await;
    let all = c.endpoints();
    for i in 0..20 {
        ctl(&all, &["put", &format!("c/{i}"), "v"]);
    }
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let f = (leader + 1) % 3;
    // Let the follower apply everything, then alter its store offline.
    let fep = c.members[f].endpoint();
    let deadline = Instant::now() + Duration::from_secs(20);
    while etcdctl(
        &fep,
        &["get", "c/19", "--consistency=s", "--print-value-only"],
    )
    .1 != "v\n"
    {
        assert!(Instant::now() < deadline, "follower never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.members[f].stop();
    {
        let store = cairn::kv::Store::open_path(c.members[f].data_dir.join("member").join("kv"))
            .expect("open the follower's store");
        let applied = store.applied().expect("applied position");
        store
            .put(
                &cairn::kv::PutRequest {
                    key: "rogue".into(),
                    value: "x".into(),
                    ..Default::default()
                },
                &applied,
            )
            .expect("rogue put");
        store.flush().expect("flush");
    }
    c.members[f].start();
    c.wait_leader(Duration::from_secs(20)).await;
    // New writes reach every member; the next check sees the difference.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // (refused once CORRUPT is raised)
        let _ = etcdctl(&all, &["put", "c/new", "v"]);
        let alarms = etcdctl(&all, &["alarm", "list"]).1;
        if alarms.contains("alarm:CORRUPT") {
            break;
        }
        if Instant::now() > deadline {
            c.dump_logs();
            panic!("CORRUPT was never raised: {alarms}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for m in &c.members {
        let (ok, _, err) = etcdctl(&m.endpoint(), &["put", "k", "v"]);
        assert!(
            !ok && err.contains("etcdserver: corrupt cluster"),
            "{}: {err}",
            m.name
        );
        let (ok, _, err) = etcdctl(&m.endpoint(), &["get", "c/1"]);
        assert!(
            !ok && err.contains("etcdserver: corrupt cluster"),
            "{}: {err}",
            m.name
        );
    }
    assert!(
        c.members
            .iter()
            .any(|m| m.log_text().contains("a member's data differs")),
        "the leader did not log what it found"
    );
    // Restarted with --experimental-initial-corrupt-check, the altered
    // member compares itself with the others and refuses to serve.
    c.members[f].stop();
    c.members[f]
        .extra
        .push("--experimental-initial-corrupt-check".into());
    c.members[f].start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.members[f].is_running() {
        if Instant::now() > deadline {
            c.dump_logs();
            panic!("the altered member started with --experimental-initial-corrupt-check");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = c.members[f].log_text();
    assert!(log.contains("found data inconsistency with peers"), "{log}");
}

/// A byte flipped in a stopped member's store file is found when the
/// member starts (the engine checks every block it reads): the member
/// refuses to start with the checksum error; nothing of it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_the_store_is_refused_at_start() {
    let mut c = Cluster::start(1, &[]).await;
    let ep = c.members[0].endpoint();
    let value = "v".repeat(30_000);
    for i in 0..40 {
        ctl(&ep, &["put", &format!("k{i}"), &value]);
    }
    // Into the engine's tables (not only its journal).
    ctl(&ep, &["defrag"]);
    c.members[0].stop();
    let tables = c.members[0].data_dir.join("member").join("kv");
    let mut biggest: Option<(u64, std::path::PathBuf)> = None;
    let mut dirs = vec![tables];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let e = e.expect("entry");
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.parent().is_some_and(|d| d.ends_with("tables")) {
                let len = e.metadata().expect("metadata").len();
                if biggest.as_ref().is_none_or(|(l, _)| len > *l) {
                    biggest = Some((len, p));
                }
            }
        }
    }
    let (_, table) = biggest.expect("a table file");
    let mut raw = std::fs::read(&table).expect("read table");
    let at = raw.len() / 3;
    raw[at] ^= 0x55;
    std::fs::write(&table, raw).expect("write table");

    c.members[0].start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.members[0].is_running() {
        let (ok, out, _) = etcdctl(&ep, &["get", "k", "--prefix", "--keys-only"]);
        assert!(
            !ok || out.trim().is_empty(),
            "a damaged store was served: {out}"
        );
        assert!(
            Instant::now() < deadline,
            "the member started on a damaged store"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = c.members[0].log_text();
    assert!(log.contains("ChecksumMismatch"), "{log}");
}

/// A tmpfs of `mib` MiB mounted at a new directory, unmounted when
/// dropped (the test runs as root, as the test command does).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u64) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            ok.success(),
            "mounting a tmpfs needs root, as the test command runs"
        );
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn try_put(m: &Member, key: &str, value: &[u8]) -> Result<(), tonic::Status> {
    m.kv()
        .await
        .put(PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: value.to_vec().into(),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

async fn read(m: &Member, key: &str) -> Option<usize> {
    let r = m
        .kv()
        .await
        .range(RangeRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("read");
    r.into_inner().kvs.first().map(|kv| kv.value.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_they_come_back_with_space() {
    let disk = SmallDisk::mount(48);
    let mut c = Cluster::prepare(1, &["--disk-reserve-bytes", "8388608"], "http", "http");
    c.members[0].data_dir = disk.dir.path().join("m0");
    c.members[0].start();
    c.wait_leader(Duration::from_secs(20)).await;
    // Most of the disk taken by something else.
    let ballast = disk.dir.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 30 << 20]).expect("ballast");

    let value = vec![b'v'; 100 << 10];
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..400 {
        match try_put(&c.members[0], &format!("k{i}"), &value).await {
            Ok(()) => acked.push(format!("k{i}")),
            Err(s) => {
                refused = Some(s);
                break;
            }
        }
    }
    let status = refused.expect("a 48 MiB disk took 40 MiB of writes");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.message(),
        "etcdserver: mvcc: database space exceeded"
    );
    assert!(
        acked.len() > 10,
        "only {} writes before the refusal",
        acked.len()
    );
    // The member refuses on its own estimate first; NOSPACE follows once
    // the disk measures under the reserve (writes that still fit go on
    // meanwhile).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = acked.len();
    while !ctl(&c.members[0].endpoint(), &["alarm", "list"]).contains("NOSPACE") {
        assert!(Instant::now() < deadline, "NOSPACE was not raised");
        i += 1;
        if try_put(&c.members[0], &format!("k{i}"), &value)
            .await
            .is_ok()
        {
            acked.push(format!("k{i}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Refused again, not a stopped member; reads and deletes served.
    let again = try_put(&c.members[0], "again", &value).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::ResourceExhausted, "{again:?}");
    assert_eq!(read(&c.members[0], &acked[0]).await, Some(value.len()));
    ctl(&c.members[0].endpoint(), &["del", &acked[0]]);

    // A restart on the full disk: the member comes back, serves what it
    // had, and still refuses writes.
    c.members[0].stop();
    c.members[0].start();
    c.wait_leader(Duration::from_secs(20)).await;
    assert_eq!(read(&c.members[0], &acked[1]).await, Some(value.len()));
    let after_restart = try_put(&c.members[0], "again", &value).await.unwrap_err();
    assert_eq!(after_restart.code(), tonic::Code::ResourceExhausted);

    // Space returns: writes are accepted again. (A NOSPACE raised before
    // a restart waits for an operator, as etcd's does.)
    std::fs::remove_file(&ballast).expect("remove ballast");
    ctl(&c.members[0].endpoint(), &["alarm", "disarm"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match try_put(&c.members[0], "after", b"yes").await {
            Ok(()) => break,
            Err(s) => assert!(
                Instant::now() < deadline,
                "no write accepted with space back: {s:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for k in &acked[1..] {
        assert_eq!(read(&c.members[0], k).await, Some(value.len()), "{k}");
    }
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_raised_for_the_disk_clears_itself_when_space_returns() {
    let disk = SmallDisk::mount(48);
    let mut c = Cluster::prepare(1, &["--disk-reserve-bytes", "8388608"], "http", "http");
    c.members[0].data_dir = disk.dir.path().join("m0");
    c.members[0].start();
    c.wait_leader(Duration::from_secs(20)).await;
    let ballast = disk.dir.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 36 << 20]).expect("ballast");
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        match try_put(&c.members[0], "k", &[b'v'; 64 << 10]).await {
            Ok(()) => assert!(Instant::now() < deadline, "never refused"),
            Err(s) => break s,
        }
    };
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    std::fs::remove_file(&ballast).expect("remove ballast");
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_put(&c.members[0], "k", b"back").await.is_err() {
        assert!(Instant::now() < deadline, "NOSPACE was not cleared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alarms = ctl(&c.members[0].endpoint(), &["alarm", "list"]);
    assert!(!alarms.contains("NOSPACE"), "{alarms}");
    drop(c);
}
