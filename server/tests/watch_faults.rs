//! Watch guarantees under faults: concurrent writers (puts, deletes,
//! two-key txns) on a 3-member cluster while the leader is killed twice and
//! history is compacted; one watcher per member that reconnects (to any
//! member) and resumes from its last revision + 1. Every watcher's history
//! is then checked:
//! - ordered: revisions never go back; unique: no (revision, key) twice;
//! - atomic: all events of a revision arrive in one response, and every
//!   watcher that saw a revision saw the same events for it;
//! - reliable: no acknowledged write is missing, and no revision another
//!   watcher saw is missing, outside ranges the watcher was told were
//!   compacted;
//! - bookmarkable: no event arrives at or below a progress notification
//!   already received;
//! - prev_kv and IsCreate agree with the key's previous event.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::proto::etcdserverpb::kv_client::KvClient;
use cairn::proto::etcdserverpb::watch_client::WatchClient;
use cairn::proto::etcdserverpb::watch_request::RequestUnion;
use cairn::proto::etcdserverpb::*;
use cairn::proto::mvccpb;
use common::*;
use tonic::transport::Channel;

const KEYS: u64 = 12;

/// A small deterministic generator (no test dependency needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// An acknowledged write: what a key holds (None: deleted) at a revision.
#[derive(Clone, Debug)]
struct Ack {
    rev: i64,
    key: String,
    value: Option<String>,
}

/// What a watcher received.
#[derive(Clone, Debug)]
enum Seen {
    Events(Vec<mvccpb::Event>),
    Progress(i64),
    /// Resumed after a compaction: revisions in [from, to) are unknown.
    Gap {
        from: i64,
        to: i64,
    },
}

fn channel(m: &common::Member) -> Channel {
    Channel::from_shared(m.client_url.clone())
        .expect("url")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(3))
        .connect_lazy()
}

async fn writer(
    chans: Vec<Channel>,
    seed: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
) {
    let mut rng = Lcg(seed);
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let mut kv = KvClient::new(chans[rng.next(chans.len() as u64) as usize].clone());
        let key = format!("w/{:02}", rng.next(KEYS));
        let value = format!("{seed}-{n}");
        let put = |k: &str, v: &str| PutRequest {
            key: k.as_bytes().to_vec().into(),
            value: v.as_bytes().to_vec().into(),
            ..Default::default()
        };
        match rng.next(10) {
            0 | 1 => {
                let r = kv
                    .delete_range(DeleteRangeRequest {
                        key: key.clone().into_bytes().into(),
                        ..Default::default()
                    })
                    .await;
                if let Ok(r) = r {
                    let r = r.into_inner();
                    if r.deleted > 0 {
                        let rev = r.header.expect("header").revision;
                        acks.lock().unwrap().push(Ack {
                            rev,
                            key,
                            value: None,
                        });
                    }
                }
            }
            2 | 3 => {
                let other = format!(
                    "w/{:02}",
                    (rng.next(KEYS - 1) + 1 + key[2..].parse::<u64>().unwrap_or(0)) % KEYS
                );
                let op = |k: &str| RequestOp {
                    request: Some(request_op::Request::RequestPut(put(k, &value))),
                };
                if let Ok(r) = kv
                    .txn(TxnRequest {
                        success: vec![op(&key), op(&other)],
                        ..Default::default()
                    })
                    .await
                {
                    let rev = r.into_inner().header.expect("header").revision;
                    let mut a = acks.lock().unwrap();
                    for k in [key, other] {
                        a.push(Ack {
                            rev,
                            key: k,
                            value: Some(value.clone()),
                        });
                    }
                }
            }
            _ => {
                if let Ok(r) = kv.put(put(&key, &value)).await {
                    let rev = r.into_inner().header.expect("header").revision;
                    acks.lock().unwrap().push(Ack {
                        rev,
                        key,
                        value: Some(value),
                    });
                }
            }
        }
    }
}

/// Watches `w/` from revision 1, on member `home` first; reconnects to the
/// next member on any error and resumes after the last revision seen.
async fn watcher(
    chans: Vec<Channel>,
    home: usize,
    stop_at: Arc<std::sync::atomic::AtomicI64>,
    log: Arc<Mutex<Vec<Seen>>>,
    mut pause_after: Option<usize>,
) {
    let mut next = 1i64;
    let mut responses = 0usize;
    let mut member = home;
    loop {
        let target = stop_at.load(std::sync::atomic::Ordering::Acquire);
        if target > 0 && next > target {
            return;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let _ = tx
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: b"w/".to_vec().into(),
                    range_end: b"w0".to_vec().into(),
                    start_revision: next,
                    prev_kv: true,
                    progress_notify: true,
                    ..Default::default()
                })),
            })
            .await;
        let stream = WatchClient::new(chans[member].clone())
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(_) => {
                member = (member + 1) % chans.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        loop {
            let msg = tokio::select! {
                m = tokio::time::timeout(Duration::from_secs(3), stream.message()) => m,
                _ = tick.tick() => {
                    let _ = tx.send(WatchRequest {
                        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                    }).await;
                    let target = stop_at.load(std::sync::atomic::Ordering::Acquire);
                    if target > 0 && next > target {
                        return;
                    }
                    continue;
                }
            };
            let resp = match msg {
                Ok(Ok(Some(r))) => r,
                _ => break,
            };
            responses += 1;
            if pause_after.is_some_and(|n| responses >= n) {
                // A client away for a while: history moves on (and is
                // compacted) before it resumes.
                pause_after = None;
                drop(stream);
                tokio::time::sleep(Duration::from_secs(4)).await;
                break;
            }
            if resp.canceled {
                if resp.compact_revision > 0 {
                    // Canceled as compacted: its start fell below the
                    // compaction; resume after the compacted revision.
                    log.lock().unwrap().push(Seen::Gap {
                        from: next,
                        to: resp.compact_revision + 1,
                    });
                    next = resp.compact_revision + 1;
                }
                break;
            }
            if resp.created {
                continue;
            }
            let rev = resp.header.as_ref().map_or(0, |h| h.revision);
            if resp.events.is_empty() {
                log.lock().unwrap().push(Seen::Progress(rev));
                continue;
            }
            let last = resp
                .events
                .iter()
                .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
                .max()
                .unwrap_or(0);
            log.lock().unwrap().push(Seen::Events(resp.events));
            next = next.max(last + 1);
        }
        member = (member + 1) % chans.len();
    }
}

/// Checks one watcher's log; returns its events by revision.
/// A watcher's events by revision, and its compaction gaps.
type Checked = (BTreeMap<i64, Vec<mvccpb::Event>>, Vec<(i64, i64)>);

fn check_one(name: &str, log: &[Seen]) -> Checked {
    let mut by_rev: BTreeMap<i64, Vec<mvccpb::Event>> = BTreeMap::new();
    let mut gaps = Vec::new();
    let mut last_rev = 0i64;
    let mut bookmark = 0i64;
    // key → (mod_revision, value) of its latest put, None once deleted.
    let mut state = KeyState::new();
    for s in log {
        match s {
            Seen::Progress(p) => bookmark = bookmark.max(*p),
            Seen::Gap { from, to } => {
                gaps.push((*from, *to));
                state.clear();
            }
            Seen::Events(evs) => {
                // A response may carry several revisions (catching up), but
                // a revision never spans two responses.
                let mut groups: BTreeMap<i64, Vec<mvccpb::Event>> = BTreeMap::new();
                for e in evs {
                    let rev = e.kv.as_ref().expect("kv").mod_revision;
                    assert!(rev >= last_rev, "{name}: revision {rev} after {last_rev}");
                    assert!(
                        rev > bookmark,
                        "{name}: event at {rev} after a progress notification at {bookmark}"
                    );
                    last_rev = rev;
                    groups.entry(rev).or_default().push(e.clone());
                }
                for (rev, evs) in groups {
                    check_revision(name, rev, &evs, &mut state);
                    assert!(
                        by_rev.insert(rev, evs).is_none(),
                        "{name}: revision {rev} in two responses"
                    );
                }
                last_rev += 1;
            }
        }
    }
    (by_rev, gaps)
}

type KeyState = HashMap<Vec<u8>, Option<(i64, Vec<u8>)>>;

/// One revision's events: distinct keys; prev_kv and IsCreate agree with
/// what the watcher saw of each key before.
fn check_revision(name: &str, rev: i64, evs: &[mvccpb::Event], state: &mut KeyState) {
    let mut keys: Vec<_> = evs
        .iter()
        .map(|e| e.kv.as_ref().expect("kv").key.clone())
        .collect();
    keys.sort();
    let n = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), n, "{name}: a key twice at {rev}");
    for e in evs {
        let kv = e.kv.as_ref().expect("kv");
        let prev = e.prev_kv.as_ref();
        if let Some(known) = state.get(&kv.key.to_vec()) {
            match (known, prev) {
                (Some((r, v)), Some(p)) => assert_eq!(
                    (p.mod_revision, p.value.to_vec()),
                    (*r, v.clone()),
                    "{name}: prev_kv at {rev}"
                ),
                (None, None) => {}
                (k, p) => panic!("{name}: prev_kv at {rev}: known {k:?}, got {p:?}"),
            }
        }
        if e.r#type == 0 {
            let created = kv.create_revision == kv.mod_revision;
            assert_eq!(created, kv.version == 1, "{name}: IsCreate at {rev}");
            assert_eq!(
                created,
                prev.is_none(),
                "{name}: create vs prev_kv at {rev}"
            );
            state.insert(kv.key.to_vec(), Some((kv.mod_revision, kv.value.to_vec())));
        } else {
            assert!(prev.is_some(), "{name}: a delete without prev_kv at {rev}");
            state.insert(kv.key.to_vec(), None);
        }
    }
}

fn in_gap(gaps: &[(i64, i64)], rev: i64) -> bool {
    gaps.iter().any(|(f, t)| rev >= *f && rev < *t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_guarantees_hold_through_leader_kills_and_compactions() {
    let mut c = Cluster::start(3, &[]).await;
    let chans: Vec<Channel> = c.members.iter().map(channel).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_at = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for seed in 1..=3 {
        writers.push(tokio::spawn(writer(
            chans.clone(),
            seed,
            Arc::clone(&stop),
            Arc::clone(&acks),
        )));
    }
    let mut logs = Vec::new();
    let mut watchers = Vec::new();
    for home in 0..3 {
        let log = Arc::new(Mutex::new(Vec::new()));
        logs.push(Arc::clone(&log));
        watchers.push(tokio::spawn(watcher(
            chans.clone(),
            home,
            Arc::clone(&stop_at),
            log,
            (home == 2).then_some(200),
        )));
    }
    // Faults: two leader kills, and compactions near the head of history.
    let mut compacted = 0;
    for round in 0..4 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let leader = c.wait_leader(Duration::from_secs(20)).await;
        if round % 2 == 0 {
            c.members[leader].kill();
            c.wait_leader(Duration::from_secs(20)).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            c.members[leader].start();
        }
        let mut kv = KvClient::new(chans[(leader + 1) % 3].clone());
        if let Ok(r) = kv
            .range(RangeRequest {
                key: b"w/".to_vec().into(),
                ..Default::default()
            })
            .await
        {
            let head = r.into_inner().header.expect("header").revision;
            if head - 5 > compacted {
                compacted = head - 5;
                let _ = kv
                    .compact(CompactionRequest {
                        revision: compacted,
                        physical: false,
                    })
                    .await;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    c.wait_leader(Duration::from_secs(20)).await;
    let head = head(&mut KvClient::new(chans[0].clone())).await;
    stop_at.store(head, std::sync::atomic::Ordering::Release);
    for w in watchers {
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("watchers caught up with the final revision")
            .expect("watcher");
    }

    let acks = acks.lock().unwrap().clone();
    assert!(acks.len() > 100, "too few writes: {}", acks.len());
    let checked: Vec<_> = logs
        .iter()
        .enumerate()
        .map(|(i, l)| check_one(&format!("watcher {i}"), &l.lock().unwrap()))
        .collect();
    // Every revision with events, as any watcher saw it.
    let mut union: BTreeMap<i64, Vec<mvccpb::Event>> = BTreeMap::new();
    for (by_rev, _) in &checked {
        for (rev, evs) in by_rev {
            match union.get(rev) {
                Some(other) => assert_eq!(other, evs, "watchers disagree at {rev}"),
                None => {
                    union.insert(*rev, evs.clone());
                }
            }
        }
    }
    for (i, (by_rev, gaps)) in checked.iter().enumerate() {
        for rev in union.keys() {
            if *rev <= head && !in_gap(gaps, *rev) {
                assert!(
                    by_rev.contains_key(rev),
                    "watcher {i} missed revision {rev}"
                );
            }
        }
        for a in &acks {
            if in_gap(gaps, a.rev) {
                continue;
            }
            let evs = by_rev
                .get(&a.rev)
                .unwrap_or_else(|| panic!("watcher {i} missed acknowledged {a:?}"));
            let e = evs
                .iter()
                .find(|e| e.kv.as_ref().is_some_and(|kv| kv.key == a.key.as_bytes()))
                .unwrap_or_else(|| panic!("watcher {i}: {a:?} not in its revision"));
            let got = (e.r#type == 0)
                .then(|| String::from_utf8_lossy(&e.kv.as_ref().expect("kv").value).into_owned());
            assert_eq!(got, a.value, "watcher {i}: {a:?}");
        }
    }
    eprintln!(
        "{} acknowledged writes, {} revisions watched, gaps {:?}",
        acks.len(),
        union.len(),
        checked.iter().map(|(_, g)| g.clone()).collect::<Vec<_>>()
    );
}

/// The checker itself fails on each kind of violation.
#[test]
fn checker_catches_violations() {
    let ev = |rev: i64, key: &str, value: &str, prev: Option<(i64, &str)>| mvccpb::Event {
        r#type: 0,
        kv: Some(mvccpb::KeyValue {
            key: key.as_bytes().to_vec().into(),
            create_revision: prev.map_or(rev, |_| 2),
            mod_revision: rev,
            version: if prev.is_some() { 2 } else { 1 },
            value: value.as_bytes().to_vec().into(),
            lease: 0,
        }),
        prev_kv: prev.map(|(r, v)| mvccpb::KeyValue {
            key: key.as_bytes().to_vec().into(),
            create_revision: 2,
            mod_revision: r,
            version: 1,
            value: v.as_bytes().to_vec().into(),
            lease: 0,
        }),
    };
    let good = vec![
        Seen::Events(vec![ev(2, "a", "1", None), ev(3, "b", "1", None)]),
        Seen::Progress(3),
        Seen::Events(vec![ev(4, "a", "2", Some((2, "1")))]),
    ];
    check_one("good", &good);
    let bad: Vec<(&str, Vec<Seen>)> = vec![
        (
            "back in time",
            vec![
                Seen::Events(vec![ev(3, "a", "1", None)]),
                Seen::Events(vec![ev(2, "b", "1", None)]),
            ],
        ),
        (
            "revision split",
            vec![
                Seen::Events(vec![ev(2, "a", "1", None)]),
                Seen::Events(vec![ev(2, "b", "1", None)]),
            ],
        ),
        (
            "after bookmark",
            vec![Seen::Progress(5), Seen::Events(vec![ev(4, "a", "1", None)])],
        ),
        (
            "wrong prev_kv",
            vec![
                Seen::Events(vec![ev(2, "a", "1", None)]),
                Seen::Events(vec![ev(4, "a", "2", Some((3, "1")))]),
            ],
        ),
        (
            "missing prev_kv",
            vec![
                Seen::Events(vec![ev(2, "a", "1", None)]),
                Seen::Events(vec![ev(4, "a", "2", None)]),
            ],
        ),
        (
            "key twice",
            vec![Seen::Events(vec![
                ev(2, "a", "1", None),
                ev(2, "a", "2", None),
            ])],
        ),
    ];
    for (what, log) in bad {
        let r = std::panic::catch_unwind(|| check_one(what, &log));
        assert!(r.is_err(), "the checker accepted: {what}");
    }
}

/// etcd#15271: a member that falls so far behind that it catches up from a
/// snapshot must not send its watchers anything twice or out of order
/// (etcd's watch went back in time there). A follower is paused while
/// 600 writes go by (snapshots every 10 entries, 5 kept behind: writes
/// arriving together share an entry, so 600 writes may take only a few
/// dozen), then resumed; its watcher from revision 1 must see every
/// write, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_a_member_catching_up_from_a_snapshot_never_goes_back() {
    let c = Cluster::start(
        3,
        &[
            "--snapshot-count",
            "10",
            "--experimental-snapshot-catchup-entries",
            "5",
        ],
    )
    .await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let f = (leader + 1) % 3;
    let chans: Vec<Channel> = c.members.iter().map(channel).collect();
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop_at = Arc::new(std::sync::atomic::AtomicI64::new(0));
    // Watches only the follower (never moves to another member).
    let w = tokio::spawn(watcher(
        vec![chans[f].clone()],
        0,
        Arc::clone(&stop_at),
        Arc::clone(&log),
        None,
    ));
    let kv = KvClient::new(chans[leader].clone());
    let mut revs = Vec::new();
    let write = |i: usize| {
        let mut kv = kv.clone();
        async move { put(&mut kv, &format!("w/{:02}", i % 10), &i.to_string()).await }
    };
    for i in 0..50 {
        revs.push(write(i).await);
    }
    c.members[f].signal("STOP");
    let mut pending = Vec::new();
    for i in 50..650 {
        pending.push(tokio::spawn(write(i)));
        if pending.len() >= 16 {
            for p in pending.drain(..) {
                revs.push(p.await.expect("writer"));
            }
        }
    }
    for p in pending.drain(..) {
        revs.push(p.await.expect("writer"));
    }
    // The leader's replication call to the paused follower is still in
    // flight, and the leader keeps the log that call covers; once the call
    // times out (well within 2 s at these timeouts) the log is purged, so
    // the follower can only catch up from a snapshot.
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.members[f].signal("CONT");
    for i in 650..700 {
        revs.push(write(i).await);
    }
    revs.sort();
    let last = *revs.last().expect("writes");
    stop_at.store(last, std::sync::atomic::Ordering::Release);
    match tokio::time::timeout(Duration::from_secs(60), w).await {
        Ok(done) => done.expect("watcher"),
        Err(_) => {
            c.dump_logs();
            let seen = log.lock().map(|l| l.len()).unwrap_or(0);
            panic!(
                "the follower's watcher did not catch up to {last} in 60 s ({seen} events seen)"
            );
        }
    }
    assert!(
        c.members[f]
            .log_text()
            .contains("installed a snapshot from the leader"),
        "the follower did not catch up from a snapshot"
    );
    let (by_rev, gaps) = check_one("follower watcher", &log.lock().unwrap());
    assert!(gaps.is_empty(), "nothing was compacted: {gaps:?}");
    let seen: Vec<i64> = by_rev.keys().copied().collect();
    assert_eq!(seen, revs, "every write once, in order");
    drop(kv);
}
