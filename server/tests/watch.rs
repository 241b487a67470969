//! Watch: differential against a real etcd (Debian's 3.4, or the one
//! `CAIRN_REFERENCE_ETCD` names: same writes, same watch requests, same
//! responses) and etcdctl's `watch`.

mod common;

use std::time::Duration;

use cairn::proto::etcdserverpb::watch_client::WatchClient;
use cairn::proto::etcdserverpb::watch_create_request::FilterType;
use cairn::proto::etcdserverpb::watch_request::RequestUnion;
use cairn::proto::etcdserverpb::*;
use common::*;
use tokio::sync::mpsc;
use tonic::transport::Channel;

fn create(key: &str, end: &str, start: i64, prev_kv: bool, filters: Vec<i32>) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.as_bytes().to_vec().into(),
            range_end: end.as_bytes().to_vec().into(),
            start_revision: start,
            prev_kv,
            filters,
            ..Default::default()
        })),
    }
}

/// `req` (a create request) with `set` applied to its options.
fn with(mut req: WatchRequest, set: impl FnOnce(&mut WatchCreateRequest)) -> WatchRequest {
    if let Some(RequestUnion::CreateRequest(c)) = &mut req.request_union {
        set(c);
    }
    req
}

/// A watch stream: requests in, normalized responses out.
struct Stream {
    tx: mpsc::Sender<WatchRequest>,
    rx: tonic::Streaming<WatchResponse>,
}

impl Stream {
    /// Opens a stream with its first request already queued: a Go gRPC
    /// server sends the response headers only with the first response.
    async fn open(ch: Channel, first: WatchRequest) -> Stream {
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.expect("queue");
        let resp = WatchClient::new(ch)
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("watch");
        Stream {
            tx,
            rx: resp.into_inner(),
        }
    }

    async fn send(&self, r: WatchRequest) {
        self.tx.send(r).await.expect("send");
    }

    /// The next response, headers stripped of ids and term.
    async fn next(&mut self) -> Option<WatchResponse> {
        let r = tokio::time::timeout(Duration::from_secs(5), self.rx.message())
            .await
            .ok()?
            .ok()??;
        let mut r = r;
        if let Some(h) = &mut r.header {
            h.cluster_id = 0;
            h.member_id = 0;
            h.raft_term = 0;
        }
        Some(r)
    }

    /// Responses until `n` events arrived (or 5 s passed).
    async fn events(&mut self, n: usize) -> Vec<WatchResponse> {
        let mut out = Vec::new();
        let mut got = 0;
        while got < n {
            let Some(r) = self.next().await else { break };
            got += r.events.len();
            out.push(r);
        }
        out
    }
}

async fn writes(kv: &mut cairn::proto::etcdserverpb::kv_client::KvClient<Channel>) {
    for (k, v) in [("a", "1"), ("b", "1"), ("a", "2"), ("ab", "1"), ("c", "1")] {
        put(kv, k, v).await;
    }
    delete(kv, "a", "b").await;
    kv.txn(TxnRequest {
        success: vec![
            RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b"t1".to_vec().into(),
                    value: b"x".to_vec().into(),
                    ..Default::default()
                })),
            },
            RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b"t2".to_vec().into(),
                    value: b"y".to_vec().into(),
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    })
    .await
    .expect("txn");
}

/// Runs the same watch scenario against one server; returns every
/// response seen, in order.
async fn scenario(ch: Channel) -> Vec<WatchResponse> {
    let mut kv = cairn::proto::etcdserverpb::kv_client::KvClient::new(ch.clone());
    writes(&mut kv).await; // revisions 2..=8
    let mut out = Vec::new();

    // Historical: everything from revision 1, with prev kvs.
    let mut s = Stream::open(ch.clone(), create("\0", "\0", 1, true, vec![])).await;
    out.extend(s.events(9).await);
    // Prefix "a" with filters, from revision 2.
    s.send(create(
        "a",
        "b",
        2,
        false,
        vec![FilterType::Nodelete as i32],
    ))
    .await;
    out.extend(s.events(3).await);
    s.send(create("a", "b", 2, true, vec![FilterType::Noput as i32]))
        .await;
    out.extend(s.events(2).await);
    // A single key from now on, then live writes.
    s.send(create("c", "", 0, true, vec![])).await;
    out.extend(s.next().await);
    put(&mut kv, "c", "2").await;
    put(&mut kv, "zz", "0").await;
    // Watcher 0 (all keys) sees both, watcher 3 sees "c". Different
    // watchers' responses may interleave in any order.
    let mut live = s.events(3).await;
    live.sort_by_key(|r| (r.header.as_ref().map(|h| h.revision), r.watch_id));
    out.extend(live);
    // Progress request once everyone is caught up.
    s.send(WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    })
    .await;
    out.extend(s.next().await);
    // Cancel watcher 3.
    s.send(WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: 3,
        })),
    })
    .await;
    out.extend(s.next().await);

    // Compaction: a watch from below it is created, then canceled.
    kv.compact(CompactionRequest {
        revision: 6,
        physical: true,
    })
    .await
    .expect("compact");
    let mut s2 = Stream::open(ch.clone(), create("a", "", 3, false, vec![])).await;
    out.extend(s2.next().await);
    out.extend(s2.next().await);
    // A watch from the compacted revision itself is served (only a start
    // below it is compacted): "c" was put at 6 and at 9.
    let mut s3 = Stream::open(ch.clone(), create("c", "", 6, false, vec![])).await;
    out.extend(s3.next().await);
    out.extend(s3.events(2).await);
    // A key created again after a delete: its PUT has no prev_kv (the
    // version before was a tombstone), replayed from history as live.
    put(&mut kv, "a", "again").await;
    let mut s4 = Stream::open(ch.clone(), create("a", "", 7, true, vec![])).await;
    out.extend(s4.next().await);
    out.extend(s4.events(2).await);
    // A range that selects nothing is refused: created and canceled at
    // once, with no watcher id.
    s4.send(create("b", "a", 0, false, vec![])).await;
    out.extend(s4.next().await);
    s4.send(create("b", "b", 0, false, vec![])).await;
    out.extend(s4.next().await);
    // ... while "\0" as the end means every key from `key` on.
    s4.send(create("b", "\0", 0, false, vec![])).await;
    out.extend(s4.next().await);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_watch_responses_as_etcd() {
    let etcd = Etcd::start();
    let _ = etcd.kv().await;
    let want = scenario(etcd.channel()).await;
    let c = Cluster::start(1, &[]).await;
    let got = scenario(c.members[0].channel().await).await;
    assert!(want.len() >= 10, "etcd answered too little: {want:#?}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "response {i} differs");
    }
    assert_eq!(got.len(), want.len(), "got {got:#?}\nwant {want:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_watch() {
    let c = Cluster::start(1, &[]).await;
    let ep = c.endpoints();
    ctl(&ep, &["put", "foo", "a"]);
    ctl(&ep, &["put", "foo", "b"]);
    ctl(&ep, &["del", "foo"]);
    let bin = etcdctl_bin();
    let child = std::process::Command::new("timeout")
        .arg("3")
        .arg(bin)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={ep}"))
        .args(["watch", "--prefix", "f", "--rev=1", "--prev-kv"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl watch");
    tokio::time::sleep(Duration::from_millis(800)).await;
    ctl(&ep, &["put", "fx", "y"]);
    let out = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text,
        "PUT\nfoo\na\nPUT\nfoo\na\nfoo\nb\nDELETE\nfoo\nb\nfoo\n\nPUT\nfx\ny\n"
    );
}

/// Watches are served by followers too, with the leader's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_watch_sees_every_write() {
    let c = Cluster::start(3, &[]).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let follower = (leader + 1) % 3;
    let mut s = Stream::open(
        c.members[follower].channel().await,
        create("k", "l", 0, false, vec![]),
    )
    .await;
    let created = s.next().await.expect("created");
    assert!(created.created);
    let mut kv = c.members[leader].kv().await;
    for i in 0..100 {
        put(&mut kv, &format!("k{i:03}"), "v").await;
    }
    let resps = s.events(100).await;
    let keys: Vec<String> = resps
        .iter()
        .flat_map(|r| r.events.iter())
        .map(|e| String::from_utf8_lossy(&e.kv.as_ref().expect("kv").key).into_owned())
        .collect();
    let want: Vec<String> = (0..100).map(|i| format!("k{i:03}")).collect();
    assert_eq!(keys, want);

    // Resuming on another member from the last revision seen + 1 misses
    // nothing and repeats nothing, while writes go on.
    let mut first_half = Vec::new();
    let writer = tokio::spawn(async move {
        for i in 100..200 {
            put(&mut kv, &format!("k{i:03}"), "v").await;
        }
    });
    let mut last = 0;
    while first_half.len() < 30 {
        let r = s.next().await.expect("response");
        for e in &r.events {
            let kv = e.kv.as_ref().expect("kv");
            first_half.push(String::from_utf8_lossy(&kv.key).into_owned());
            last = kv.mod_revision;
        }
    }
    drop(s);
    let other = (follower + 1) % 3;
    let mut s2 = Stream::open(
        c.members[other].channel().await,
        create("k", "l", last + 1, false, vec![]),
    )
    .await;
    assert!(s2.next().await.expect("created").created);
    let rest = s2.events(100 - first_half.len()).await;
    writer.await.expect("writer");
    let mut all = first_half;
    all.extend(
        rest.iter()
            .flat_map(|r| r.events.iter())
            .map(|e| String::from_utf8_lossy(&e.kv.as_ref().expect("kv").key).into_owned()),
    );
    let want: Vec<String> = (100..200).map(|i| format!("k{i:03}")).collect();
    assert_eq!(all, want);
}

fn progress_request() -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    }
}

/// A large transaction's events arrive in fragments when asked for, and
/// whole otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_responses_are_fragmented_on_request() {
    let c = Cluster::start(1, &["--max-request-bytes", "4096"]).await;
    let ch = c.members[0].channel().await;
    let mut kv = c.members[0].kv().await;
    let big = "x".repeat(1000);
    for i in 0..10 {
        put(&mut kv, &format!("f{i}"), &big).await;
    }
    // Deleting all ten in one revision makes about 10 KB of events with
    // their previous values.
    let frag_req = with(create("f", "g", 0, true, vec![]), |c| c.fragment = true);
    let mut frag = Stream::open(ch.clone(), frag_req).await;
    let mut whole = Stream::open(ch.clone(), create("f", "g", 0, true, vec![])).await;
    assert!(frag.next().await.expect("created").created);
    assert!(whole.next().await.expect("created").created);
    delete(&mut kv, "f", "g").await;
    let parts = frag.events(10).await;
    assert!(parts.len() >= 3, "{} parts", parts.len());
    let flags: Vec<bool> = parts.iter().map(|r| r.fragment).collect();
    let mut want = vec![true; parts.len()];
    *want.last_mut().expect("parts") = false;
    assert_eq!(flags, want);
    assert_eq!(parts.iter().map(|r| r.events.len()).sum::<usize>(), 10);
    let one = whole.events(10).await;
    assert_eq!(one.len(), 1);
    assert!(!one[0].fragment);
    assert_eq!(one[0].events.len(), 10);
}

/// kube-apiserver's pattern: list at R, watch from R+1 with prev_kv and
/// progress_notify, RequestProgress while writes go on. Every progress
/// answer at revision P comes after every event at or below P, and the
/// watched state ends equal to the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_never_overtakes_events() {
    let c = Cluster::start(1, &[]).await;
    let ch = c.members[0].channel().await;
    let mut kv = c.members[0].kv().await;
    for i in 0..20 {
        put(&mut kv, &format!("/r/{i}"), "0").await;
    }
    let list = kv
        .range(RangeRequest {
            key: b"/r/".to_vec().into(),
            range_end: b"/r0".to_vec().into(),
            limit: 5,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    let r = list.header.expect("header").revision;
    let watch_req = with(create("/r/", "/r0", r + 1, true, vec![]), |c| {
        c.progress_notify = true
    });
    let mut s = Stream::open(ch.clone(), watch_req).await;
    assert!(s.next().await.expect("created").created);
    let writer = tokio::spawn(async move {
        let mut revs = Vec::new();
        for i in 0..300 {
            let k = format!("/r/{}", i % 37);
            if i % 5 == 4 {
                let resp = kv
                    .delete_range(DeleteRangeRequest {
                        key: k.into_bytes().into(),
                        ..Default::default()
                    })
                    .await
                    .expect("delete")
                    .into_inner();
                if resp.deleted > 0 {
                    revs.push(resp.header.expect("header").revision);
                }
            } else {
                revs.push(put(&mut kv, &k, &i.to_string()).await);
            }
        }
        revs
    });
    let mut seen = Vec::new();
    let mut progress = 0;
    let mut last_rev = r;
    loop {
        s.send(progress_request()).await;
        let mut answered = false;
        while !answered {
            let resp = s.next().await.expect("response");
            let rev = resp.header.as_ref().expect("header").revision;
            if resp.watch_id == -1 {
                // Every write at or below `rev` was already delivered.
                assert!(rev >= last_rev);
                assert!(seen.iter().all(|&s| s <= rev));
                progress += 1;
                answered = true;
                last_rev = rev;
            } else {
                for e in &resp.events {
                    let kv = e.kv.as_ref().expect("kv");
                    seen.push(kv.mod_revision);
                    // prev_kv is present on every non-create event.
                    if e.r#type == 1 || kv.version > 1 {
                        assert!(e.prev_kv.is_some(), "missing prev_kv: {e:?}");
                    }
                }
            }
        }
        if writer.is_finished() {
            break;
        }
    }
    let revs = writer.await.expect("writer");
    // A last progress answer covers every write.
    s.send(progress_request()).await;
    loop {
        let resp = s.next().await.expect("response");
        if resp.watch_id == -1 {
            assert!(resp.header.expect("header").revision >= *revs.last().expect("writes"));
            break;
        }
        seen.extend(
            resp.events
                .iter()
                .map(|e| e.kv.as_ref().expect("kv").mod_revision),
        );
    }
    seen.dedup();
    assert_eq!(seen, revs, "every write seen once, in order");
    assert!(progress >= 2);
}

/// Many watchers on one stream whose client stops reading while thousands
/// of writes go on: the broadcast overflows and each watcher catches up
/// from history. Every watcher still gets every event once, in order
/// (etcd#17529: events lost or starved on a shared stream; etcd#17247:
/// duplicated events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_shared_stream_loses_and_repeats_nothing() {
    let c = Cluster::start(1, &[]).await;
    let ch = c.members[0].channel().await;
    const WATCHERS: i64 = 5;
    let mut s = Stream::open(ch.clone(), create("s/", "s0", 0, true, vec![])).await;
    assert!(s.next().await.expect("created").created);
    for _ in 1..WATCHERS {
        s.send(create("s/", "s0", 0, true, vec![])).await;
        assert!(s.next().await.expect("created").created);
    }
    // More revisions than the broadcast keeps, written while nobody reads.
    let mut kv = c.members[0].kv().await;
    let mut revs = Vec::new();
    for i in 0..(cairn::watch::BROADCAST_REVISIONS + 1500) {
        revs.push(put(&mut kv, &format!("s/{}", i % 100), &i.to_string()).await);
    }
    // Progress requests made while the watchers are far behind share one
    // answer, which comes after every event up to the last write.
    for _ in 0..20 {
        s.send(progress_request()).await;
    }
    let last = *revs.last().expect("writes");
    let mut seen: Vec<Vec<i64>> = vec![Vec::new(); WATCHERS as usize];
    let mut answers = 0;
    while answers == 0 || seen.iter().any(|v| v.len() < revs.len()) {
        let r = s.next().await.expect("events stopped");
        if r.watch_id == -1 {
            assert!(r.header.expect("header").revision >= last);
            assert!(
                seen.iter().all(|v| v.len() == revs.len()),
                "answer before events"
            );
            answers += 1;
            continue;
        }
        let got = &mut seen[r.watch_id as usize];
        for e in &r.events {
            let kv = e.kv.as_ref().expect("kv");
            got.push(kv.mod_revision);
            if kv.version > 1 {
                let prev = e.prev_kv.as_ref().expect("prev_kv");
                assert_eq!(prev.version + 1, kv.version);
            }
        }
    }
    for (id, got) in seen.iter().enumerate() {
        assert_eq!(got, &revs, "watcher {id}");
    }
    // Nothing more arrives: the other requests were answered by that one.
    assert!(s.next().await.is_none());
    assert_eq!(answers, 1);
}

/// etcd#18089 and #19179: a watch opened at the compaction revision must
/// not miss a delete made in that revision. etcd 3.5 serves a start at
/// the compacted revision (only one below it is compacted) and keeps the
/// tombstones of that revision through compaction; so does Cairn. (etcd
/// 3.4.23 and 3.5.1, the references here, still drop the DELETE; 3.5.16
/// fixed it: not compared.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_at_the_compaction_revision_sees_its_deletes() {
    let c = Cluster::start(1, &[]).await;
    let ch = c.members[0].channel().await;
    let mut kv = c.members[0].kv().await;
    for v in ["v2", "v3", "v4"] {
        put(&mut kv, "k", v).await;
    }
    let del = delete(&mut kv, "k", "").await;
    let again = put(&mut kv, "k", "v6").await;
    kv.compact(CompactionRequest {
        revision: del,
        physical: true,
    })
    .await
    .expect("compact");
    let mut s = Stream::open(ch, create("k", "", del, true, vec![])).await;
    assert!(s.next().await.expect("created").created);
    let got: Vec<(i32, i64, bool)> = s
        .events(2)
        .await
        .iter()
        .flat_map(|r| r.events.clone())
        .map(|e| {
            let kv = e.kv.unwrap_or_default();
            (e.r#type, kv.mod_revision, e.prev_kv.is_some())
        })
        .collect();
    // The delete (no prev_kv: the version before it was compacted away),
    // then the put that created the key again (no prev_kv: a create).
    assert_eq!(got, vec![(1, del, false), (0, again, false)]);
    // One below the compaction revision is compacted.
    let mut below = Stream::open(
        c.members[0].channel().await,
        create("k", "", del - 1, false, vec![]),
    )
    .await;
    assert!(below.next().await.expect("created").created);
    let end = below.next().await.expect("cancel");
    assert!(end.canceled);
    assert_eq!(end.compact_revision, del);
    assert_eq!(end.cancel_reason, "");
}

/// etcd#20221: a watch on a future revision must not report progress
/// beyond what exists, and delivers exactly the events from its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_a_future_revision() {
    let c = Cluster::start(
        1,
        &["--experimental-watch-progress-notify-interval", "100ms"],
    )
    .await;
    let ch = c.members[0].channel().await;
    let mut kv = c.members[0].kv().await;
    let now = put(&mut kv, "f", "0").await;
    let req = with(create("f", "", now + 5, false, vec![]), |c| {
        c.progress_notify = true
    });
    let mut s = Stream::open(ch, req).await;
    assert!(s.next().await.expect("created").created);
    // Several notification intervals with no writes: nothing may claim a
    // revision past the current one.
    let quiet = tokio::time::timeout(Duration::from_millis(400), async {
        while let Some(r) = s.next().await {
            let rev = r.header.as_ref().expect("header").revision;
            assert!(rev <= now, "progress at {rev} while the store is at {now}");
        }
    });
    let _ = quiet.await;
    let mut revs = Vec::new();
    for i in 1..=10 {
        revs.push(put(&mut kv, "f", &i.to_string()).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while got.len() < 6 && std::time::Instant::now() < deadline {
        let r = s.next().await.expect("response");
        let rev = r.header.as_ref().expect("header").revision;
        if r.events.is_empty() {
            // A progress notification never claims a revision that did
            // not exist when it was sent, nor one before the events
            // already delivered.
            assert!(rev <= *revs.last().expect("writes"), "progress at {rev}");
            assert!(got.last().is_none_or(|&g| rev >= g));
        }
        got.extend(
            r.events
                .iter()
                .map(|e| e.kv.as_ref().expect("kv").mod_revision),
        );
    }
    assert_eq!(got, revs[4..].to_vec());
}

/// A client that closes its sending side after creating a watch still
/// receives events, as with etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_after_the_client_closes_its_side() {
    let c = Cluster::start(1, &[]).await;
    let ch = c.members[0].channel().await;
    let mut s = Stream::open(ch, create("h", "", 0, false, vec![])).await;
    assert!(s.next().await.expect("created").created);
    let Stream { tx, mut rx } = s;
    drop(tx);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut kv = c.members[0].kv().await;
    let rev = put(&mut kv, "h", "1").await;
    let r = tokio::time::timeout(Duration::from_secs(5), rx.message())
        .await
        .expect("no event within 5 s")
        .expect("stream error")
        .expect("stream ended");
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.events[0].kv.as_ref().expect("kv").mod_revision, rev);
}
