//! Three-member clusters of real `cairn` processes: etcdctl against every
//! member, membership changes, kill -9 of the leader under load, full
//! restarts, snapshot catch-up, removal.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::proto::etcdserverpb::{
    watch_client, watch_request, PutRequest, RangeRequest, RangeResponse, WatchCreateRequest,
    WatchRequest,
};
use common::*;

fn member_lines(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(", ").map(String::from).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_with_etcdctl() {
    let mut c = Cluster::start(3, &[]).await;
    let all = c.endpoints();

    // Writes through every member (followers forward), reads from every
    // member see all of them (linearizable by default).
    for (i, m) in c.members.iter().enumerate() {
        ctl(&m.endpoint(), &["put", &format!("k{i}"), &format!("v{i}")]);
    }
    for m in &c.members {
        assert_eq!(
            ctl(&m.endpoint(), &["get", "--prefix", "k"]),
            "k0\nv0\nk1\nv1\nk2\nv2\n"
        );
        // Serializable reads are served locally; after the linearizable
        // read above, they see the same.
        assert_eq!(
            ctl(&m.endpoint(), &["get", "--prefix", "k", "--consistency=s"]),
            "k0\nv0\nk1\nv1\nk2\nv2\n"
        );
    }

    // Member list: every member published its name and client URL.
    let list = member_lines(&ctl(&all, &["member", "list"]));
    assert_eq!(list.len(), 3);
    for m in &c.members {
        let row = list
            .iter()
            .find(|r| r[2] == m.name)
            .unwrap_or_else(|| panic!("{} not listed: {list:?}", m.name));
        assert_eq!(row[1], "started");
        assert_eq!(row[3], m.peer_url);
        assert_eq!(row[4], m.client_url);
        assert_eq!(row[5], "false");
    }

    // Endpoint status: one leader, everyone agrees on it.
    let st: serde_json::Value =
        serde_json::from_str(&ctl(&all, &["endpoint", "status", "-w", "json"])).expect("json");
    let leaders: Vec<u64> = st
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["Status"]["leader"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(leaders.len(), 3);
    assert!(
        leaders.iter().all(|l| *l == leaders[0] && *l != 0),
        "{leaders:?}"
    );

    // Add a learner, start it, promote it once it caught up.
    let out = ctl(
        &all,
        &[
            "member",
            "add",
            "m3",
            "--learner",
            "--peer-urls=http://127.0.0.1:1",
        ],
    );
    assert!(out.contains("added to cluster"), "{out}");
    // One learner at a time, as in etcd.
    let (ok, _, err) = etcdctl(
        &all,
        &[
            "member",
            "add",
            "l2",
            "--learner",
            "--peer-urls=http://127.0.0.1:2",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("etcdserver: too many learner members in cluster"),
        "{err}"
    );
    // Duplicate peer URLs are refused with etcd's error.
    let (ok, _, err) = etcdctl(
        &all,
        &["member", "add", "dup", "--peer-urls=http://127.0.0.1:1"],
    );
    assert!(!ok);
    assert!(
        err.contains("etcdserver: Peer URLs already exists"),
        "{err}"
    );
    let id = member_lines(&ctl(&all, &["member", "list"]))
        .into_iter()
        .find(|r| r[3] == "http://127.0.0.1:1")
        .map(|r| r[0].clone())
        .expect("learner listed");
    // Not started, so not in sync: promotion refused.
    let (ok, _, err) = etcdctl(&all, &["member", "promote", &id]);
    assert!(!ok);
    assert!(
        err.contains("etcdserver: can only promote a learner member which is in sync with leader"),
        "{err}"
    );
    // Fix its peer URL to a real one (MemberUpdate), then start it.
    let idx = c.new_member("m3", &[]);
    let new_peer = c.members[idx].peer_url.clone();
    ctl(
        &all,
        &["member", "update", &id, &format!("--peer-urls={new_peer}")],
    );
    c.members[idx].start();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, err) = etcdctl(&all, &["member", "promote", &id]);
        if ok {
            assert!(out.contains("promoted"), "{out}");
            break;
        }
        assert!(err.contains("in sync"), "{err}");
        assert!(Instant::now() < deadline, "learner never caught up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // It publishes its name once started (asynchronously, as in etcd).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = member_lines(&ctl(&all, &["member", "list"]));
        let row = list.iter().find(|r| r[0] == id).expect("listed").clone();
        assert_eq!(row[5], "false", "promoted member listed as learner");
        if row[2] == "m3" {
            assert_eq!(row[4], c.members[idx].client_url);
            break;
        }
        assert!(Instant::now() < deadline, "m3 never published its name");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ctl(&c.members[idx].endpoint(), &["get", "--prefix", "k"]),
        "k0\nv0\nk1\nv1\nk2\nv2\n"
    );
    // Promoting a voter is refused.
    let (ok, _, err) = etcdctl(&all, &["member", "promote", &id]);
    assert!(!ok);
    assert!(
        err.contains("etcdserver: can only promote a learner member"),
        "{err}"
    );

    // Unknown member ids.
    let (ok, _, err) = etcdctl(&all, &["member", "remove", "1234"]);
    assert!(!ok);
    assert!(err.contains("etcdserver: member not found"), "{err}");

    // Remove it: it stops, the rest go on.
    ctl(&all, &["member", "remove", &id]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.members[idx].is_running() {
        if Instant::now() > deadline {
            c.dump_logs();
            panic!("removed member kept running");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = member_lines(&ctl(&all, &["member", "list"]));
    assert_eq!(list.len(), 3, "{list:?}");
    ctl(&all, &["put", "after-remove", "yes"]);
    assert_eq!(ctl(&all, &["get", "after-remove"]), "after-remove\nyes\n");
}

/// Concurrent writers against every member; kill -9 the leader midway.
/// Every acknowledged write is there afterwards, and a new leader serves
/// within 3 election timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_leader_under_load_loses_no_acknowledged_write() {
    let election_ms = 500u64;
    let mut c = Cluster::start(3, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<std::sync::Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..6 {
        // Writers talk to the followers so they survive the kill.
        let target = (0..3).filter(|i| *i != leader).nth(w % 2).unwrap_or(0);
        let mut kv = c.members[target].kv().await;
        let stop = Arc::clone(&stop);
        let acked = Arc::clone(&acked);
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{w}-{n}");
                let val = format!("{n}");
                let r = kv
                    .put(PutRequest {
                        key: key.clone().into_bytes().into(),
                        value: val.clone().into_bytes().into(),
                        ..Default::default()
                    })
                    .await;
                if r.is_ok() {
                    if let Ok(mut a) = acked.lock() {
                        a.insert(key, val);
                    }
                }
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    c.members[leader].kill();
    // A new leader among the survivors.
    let new_leader = c.wait_leader(Duration::from_secs(20)).await;
    let elected_in = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    // And it serves a write.
    let mut kv = c.members[new_leader].kv().await;
    put(&mut kv, "after-kill", "1").await;
    let served_in = killed_at.elapsed();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    assert!(
        served_in <= Duration::from_millis(3 * election_ms) + Duration::from_millis(500),
        "new leader took {elected_in:?} to be agreed, {served_in:?} to serve"
    );

    // Bring the old leader back; it catches up.
    c.members[leader].start();
    c.wait_leader(Duration::from_secs(20)).await;
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(
        acked.len() > 50,
        "too few writes acknowledged: {}",
        acked.len()
    );
    for m in &c.members {
        let mut kv = m.kv().await;
        let r = kv
            .range(RangeRequest {
                key: b"w".to_vec().into(),
                range_end: b"x".to_vec().into(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        let got: BTreeMap<String, String> = r
            .kvs
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    String::from_utf8_lossy(&kv.value).into_owned(),
                )
            })
            .collect();
        for (k, v) in &acked {
            assert_eq!(got.get(k), Some(v), "{} lost acknowledged {k}", m.name);
        }
    }
}

/// All members stopped and restarted from their data dirs: data and
/// revisions intact, identical on every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_all_members_keeps_data() {
    let mut c = Cluster::start(3, &[]).await;
    let all = c.endpoints();
    for i in 0..100 {
        ctl(
            &c.members[i % 3].endpoint(),
            &["put", &format!("k{i:03}"), &format!("v{i}")],
        );
    }
    ctl(&all, &["del", "k050"]);
    let before = ctl(&all, &["get", "--prefix", "k", "-w", "json"]);
    for m in &mut c.members {
        m.kill();
    }
    for m in &mut c.members {
        m.start();
    }
    c.wait_leader(Duration::from_secs(30)).await;
    let strip = |s: &str| {
        let mut v: serde_json::Value = serde_json::from_str(s).expect("json");
        v["header"]["raft_term"] = 0.into();
        v["header"]["member_id"] = 0.into();
        v
    };
    for m in &c.members {
        let after = ctl(&m.endpoint(), &["get", "--prefix", "k", "-w", "json"]);
        assert_eq!(strip(&before), strip(&after), "{}", m.name);
    }
}

/// A member added after 10,000 writes, with a small --snapshot-count,
/// catches up from a snapshot (the log it would need is purged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_member_catches_up_by_snapshot() {
    // Writes arriving together share a log entry, so 10,000 puts take
    // far fewer entries; a short log behind each snapshot makes sure the
    // late member needs one whatever the batching.
    let mut c = Cluster::start(
        3,
        &[
            "--snapshot-count",
            "100",
            "--experimental-snapshot-catchup-entries",
            "50",
        ],
    )
    .await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let mut kv = c.members[leader].kv().await;
        tasks.push(tokio::spawn(async move {
            for n in 0..625 {
                put(&mut kv, &format!("s{w:02}-{n:04}"), &format!("{n}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let all = c.endpoints();
    let idx = c.new_member("late", &[]);
    let peer = c.members[idx].peer_url.clone();
    ctl(
        &all,
        &["member", "add", "late", &format!("--peer-urls={peer}")],
    );
    c.members[idx].start();
    let ep = c.members[idx].endpoint();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out, _) = etcdctl(&ep, &["get", "s15-0624", "--consistency=s"]);
        if ok && out == "s15-0624\n624\n" {
            break;
        }
        if Instant::now() > deadline {
            c.dump_logs();
            panic!("late member never caught up");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = c.members[idx].log_text();
    assert!(
        log.contains("received snapshot"),
        "no snapshot was installed:\n{log}"
    );
    // Same data as the leader, counted through gRPC.
    let count = |m: usize| {
        let m = &c.members[m];
        async move {
            let mut kv = m.kv().await;
            kv.range(RangeRequest {
                key: b"s".to_vec().into(),
                range_end: b"t".to_vec().into(),
                count_only: true,
                serializable: true,
                ..Default::default()
            })
            .await
            .expect("count")
            .into_inner()
            .count
        }
    };
    assert_eq!(count(idx).await, 10_000);
    assert_eq!(count(leader).await, 10_000);
    // Once caught up it was promoted to a voter (it was added as one).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st: serde_json::Value =
            serde_json::from_str(&ctl(&ep, &["endpoint", "status", "-w", "json"])).expect("json");
        if st[0]["Status"]["isLearner"].as_bool() != Some(true) {
            break;
        }
        assert!(Instant::now() < deadline, "never promoted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// SIGTERM on the leader hands leadership over before exiting: with a
/// 5 s election timeout, a new leader is in place far sooner than an
/// election could produce one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_leader_hands_leadership_over() {
    let mut c = Cluster::start(
        3,
        &["--heartbeat-interval", "100", "--election-timeout", "5000"],
    )
    .await;
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    ctl(&c.endpoints(), &["put", "before", "1"]);
    let t0 = Instant::now();
    let st = c.members[leader].stop();
    assert!(st.success(), "clean exit: {st:?}");
    let new_leader = c.wait_leader(Duration::from_secs(20)).await;
    let took = t0.elapsed();
    assert_ne!(new_leader, leader);
    if took >= Duration::from_millis(2500) {
        c.dump_logs();
    }
    assert!(
        took < Duration::from_millis(2500),
        "leadership took {took:?} to move (an election alone needs >= 2.5 s)"
    );
    let ep = c.members[new_leader].endpoint();
    assert_eq!(ctl(&ep, &["get", "before"]), "before\n1\n");
}

/// Five members: any two may die and the cluster goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_survive_two_failures() {
    let mut c = Cluster::start(5, &[]).await;
    let all = c.endpoints();
    ctl(&all, &["put", "five", "1"]);
    let list = member_lines(&ctl(&all, &["member", "list"]));
    assert_eq!(list.len(), 5);
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    // Kill the leader and one follower.
    let other = (leader + 1) % 5;
    c.members[leader].kill();
    c.members[other].kill();
    let new_leader = c.wait_leader(Duration::from_secs(20)).await;
    let ep = c.members[new_leader].endpoint();
    ctl(&ep, &["put", "five", "2"]);
    for (i, m) in c.members.iter().enumerate() {
        if i == leader || i == other {
            continue;
        }
        assert_eq!(ctl(&m.endpoint(), &["get", "five"]), "five\n2\n");
    }
}

/// With `hasleader: true` metadata (kube-apiserver sends it), a member
/// that lost its quorum answers `etcdserver: no leader`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn has_leader_metadata_without_quorum() {
    let mut c = Cluster::start(3, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let survivor = (leader + 1) % 3;
    let mut kv = c.members[survivor].kv().await;
    let with_meta = || {
        let mut req = tonic::Request::new(RangeRequest {
            key: b"k".to_vec().into(),
            ..Default::default()
        });
        req.metadata_mut()
            .insert("hasleader", "true".parse().expect("metadata"));
        req
    };
    kv.range(with_meta())
        .await
        .expect("served while the leader lives");
    // A watch stream opened with the same metadata.
    let (wtx, wrx) = tokio::sync::mpsc::channel(4);
    wtx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: b"k".to_vec().into(),
                ..Default::default()
            },
        )),
    })
    .await
    .expect("queue");
    let mut wreq = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(wrx));
    wreq.metadata_mut()
        .insert("hasleader", "true".parse().expect("metadata"));
    let mut watch = watch_client::WatchClient::new(c.members[survivor].channel().await)
        .watch(wreq)
        .await
        .expect("watch")
        .into_inner();
    assert!(
        watch
            .message()
            .await
            .expect("created")
            .expect("open")
            .created
    );
    for i in 0..3 {
        if i != survivor {
            c.members[i].kill();
        }
    }
    // Within a couple of election timeouts the survivor knows it is alone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match kv.range(with_meta()).await {
            Err(e) if e.message() == "etcdserver: no leader" => {
                assert_eq!(e.code(), tonic::Code::Unavailable);
                break;
            }
            other => {
                assert!(Instant::now() < deadline, "still answered {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // Status reports no leader too.
    assert_eq!(c.members[survivor].status().await.map(|s| s.1), Some(0));
    // And the watch stream was cancelled with the same error.
    let end = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("watch stream still open without a leader");
    match end {
        Err(e) => assert_eq!(e.message(), "etcdserver: no leader"),
        Ok(m) => panic!("watch went on: {m:?}"),
    }
    drop(wtx);
}

/// A membership change sent to a follower is answered with a member list
/// that already has it, as etcd does (`etcdctl member add` builds the new
/// member's `--initial-cluster` from that list). Found by cairn-jepsen: a
/// replacement member started with a list that lacked itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_through_a_follower_answer_with_the_new_list() {
    use cairn::proto::etcdserverpb::cluster_client::ClusterClient;
    use cairn::proto::etcdserverpb::{MemberAddRequest, MemberRemoveRequest};
    let c = Cluster::start(3, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (leader + 1) % 3;
    let mut cl = ClusterClient::new(c.members[follower].channel().await);
    for round in 0..5 {
        let peer = format!("http://127.0.0.1:{}", free_port());
        let added = cl
            .member_add(MemberAddRequest {
                peer_ur_ls: vec![peer.clone()],
                is_learner: true,
            })
            .await
            .expect("member add")
            .into_inner();
        let id = added.member.as_ref().expect("member").id;
        assert!(
            added
                .members
                .iter()
                .any(|m| m.id == id && m.peer_ur_ls == [peer.clone()]),
            "round {round}: the new member is missing from {:?}",
            added.members
        );
        let removed = cl
            .member_remove(MemberRemoveRequest { id })
            .await
            .expect("member remove")
            .into_inner();
        assert!(
            removed.members.iter().all(|m| m.id != id),
            "round {round}: the removed member is still in {:?}",
            removed.members
        );
    }
}

/// Many concurrent writes sent to a follower travel to the leader in
/// batches over one stream and are proposed several to an entry: each is
/// applied exactly once (the revision moves by exactly their number, each
/// answer has its own revision) and each key holds its own value, on
/// every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_a_follower_apply_once_each() {
    let c = Cluster::start(3, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (0..3).find(|i| *i != leader).unwrap_or(0);
    let mut kv = c.members[follower].kv().await;
    let before = head(&mut kv).await;
    let index_before = c.members[leader].raft_index().await;
    let n = 300;
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut kv = kv.clone();
        tasks.push(tokio::spawn(async move {
            put(&mut kv, &format!("f{i:03}"), &format!("v{i}")).await
        }));
    }
    let mut revs = Vec::new();
    for t in tasks {
        revs.push(t.await.expect("task"));
    }
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), n, "every write got its own revision");
    assert_eq!(revs.first().copied(), Some(before + 1));
    assert_eq!(revs.last().copied(), Some(before + n as i64));
    let entries = c.members[leader].raft_index().await - index_before;
    assert!(
        entries <= n as u64 / 2,
        "{n} concurrent writes took {entries} log entries"
    );
    for m in &c.members {
        let mut kv = m.kv().await;
        // Linearizable: the member catches up before answering.
        assert_eq!(head(&mut kv).await, before + n as i64, "{}", m.name);
        for i in [0, n / 2, n - 1] {
            assert_eq!(
                get(&mut kv, &format!("f{i:03}")).await.as_deref(),
                Some(format!("v{i}").as_str()),
                "{}",
                m.name
            );
        }
    }
}

/// A follower stopped with SIGSTOP leaves the leader's append stream to
/// it with unanswered requests: commits go on with the other follower,
/// and once the stopped one resumes it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_follower_does_not_stall_commits_and_catches_up() {
    let c = Cluster::start(3, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let paused = (0..3).find(|i| *i != leader).unwrap_or(0);
    let mut kv = c.members[leader].kv().await;
    put(&mut kv, "before-pause", "1").await;
    c.members[paused].signal("STOP");
    // Longer than the append timeout (one election timeout) several times.
    let t0 = Instant::now();
    let mut last = 0;
    for i in 0..200 {
        last = put(&mut kv, &format!("p{i}"), "x").await;
        if i == 100 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }
    let took = t0.elapsed();
    c.members[paused].signal("CONT");
    assert!(
        took < Duration::from_secs(10),
        "200 writes with a follower stopped took {took:?}"
    );
    wait_serializable(
        &c.members[paused],
        "p199",
        "the resumed follower never caught up",
        |r| r.header.as_ref().map(|h| h.revision) == Some(last) && r.kvs.len() == 1,
    )
    .await;
}

/// Serializable reads of `key` on `m` until one satisfies `done` (panics
/// with `what` after 20 s).
async fn wait_serializable(
    m: &Member,
    key: &str,
    what: &str,
    done: impl Fn(&RangeResponse) -> bool,
) {
    let mut kv = m.kv().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = kv
            .range(RangeRequest {
                key: key.as_bytes().to_vec().into(),
                serializable: true,
                ..Default::default()
            })
            .await;
        if matches!(&r, Ok(r) if done(r.get_ref())) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Linearizable reads of `key` through `m` for `how_long`, each
/// expected to see `want`; then checks that `m` is still the leader it
/// was (a leader that cannot confirm itself loses its leadership to an
/// election, and reads through it would be forwarded to the new one).
async fn reads_keep_leadership(m: &Member, key: &str, want: &str, how_long: Duration) {
    let (id, leader) = m.status().await.expect("status");
    assert_eq!(id, leader, "{} is not the leader", m.name);
    let mut kv = m.kv().await;
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < how_long {
        assert_eq!(get(&mut kv, key).await.as_deref(), Some(want), "{}", m.name);
        n += 1;
    }
    let after = m.status().await.expect("status");
    assert_eq!(
        after,
        (id, id),
        "{} lost its leadership during {n} reads",
        m.name
    );
}

/// A linearizable read on the leader waits for one follower to answer a
/// heartbeat round, and those rounds travel over one long-lived stream
/// per follower. A stream that broke — its follower stopped past the
/// round's timeout, or killed and restarted — must be replaced, or the
/// leader could no longer confirm itself with that follower: here each
/// follower in turn is the only other member answering, for several
/// election timeouts (500 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_reads_after_heartbeat_streams_break() {
    let mut c = Cluster::start(3, &[]).await;
    let followers = |leader: usize| -> (usize, usize) {
        let f: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        (f[0], f[1])
    };
    let long = Duration::from_millis(1500);
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let mut kv = c.members[leader].kv().await;
    put(&mut kv, "hb", "1").await;

    // One follower stopped: its rounds time out while the other follower
    // confirms every read.
    let (a, b) = followers(leader);
    c.members[a].signal("STOP");
    reads_keep_leadership(&c.members[leader], "hb", "1", long).await;
    c.members[a].signal("CONT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Now the follower that kept answering is stopped: reads need a new
    // stream to the one that was stopped.
    c.members[b].signal("STOP");
    reads_keep_leadership(&c.members[leader], "hb", "1", long).await;
    c.members[b].signal("CONT");

    // A follower killed and restarted: its stream broke on the leader's
    // side; with the other follower stopped, reads need a new stream to
    // the new process.
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let (restarted, other) = followers(leader);
    c.members[restarted].kill();
    let mut kv = c.members[leader].kv().await;
    put(&mut kv, "hb", "2").await;
    c.members[restarted].start();
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    // The restarted member has caught up with the leader.
    wait_serializable(
        &c.members[restarted],
        "hb",
        "restarted member never caught up",
        |r| r.kvs.first().map(|kv| kv.value.as_ref()) == Some(b"2".as_slice()),
    )
    .await;
    let other = if other == leader { restarted } else { other };
    c.members[other].signal("STOP");
    reads_keep_leadership(&c.members[leader], "hb", "2", long).await;
    c.members[other].signal("CONT");
}
