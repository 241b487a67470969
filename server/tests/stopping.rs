//! Stopping members under clients that never let go: SIGTERM ends a
//! member within a bounded time whatever its connections hold open, all
//! three members of a cluster stopped at once included, and a rolling
//! restart (each member stopped and started in turn) under a write load
//! and a watch loses no write beyond the client's own retry and no event.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::proto::etcdserverpb::kv_client::KvClient;
use cairn::proto::etcdserverpb::lease_client::LeaseClient;
use cairn::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn::proto::etcdserverpb::watch_client::WatchClient;
use cairn::proto::etcdserverpb::{
    watch_request, LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, StatusRequest,
    WatchCreateRequest, WatchRequest,
};
use common::*;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// What a client holding a member's streams open keeps alive: dropping
/// it would close them.
struct Held {
    _senders: Vec<Box<dyn std::any::Any + Send>>,
}

/// A watch stream and a lease keep-alive stream on `ch`, both left open,
/// and both answered once (so they are established).
async fn hold_streams(ch: Channel) -> Held {
    let (wtx, wrx) = mpsc::channel(4);
    wtx.send(WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: b"held/".to_vec().into(),
                range_end: b"held0".to_vec().into(),
                ..Default::default()
            },
        )),
    })
    .await
    .expect("queue watch");
    let mut watch = WatchClient::new(ch.clone())
        .watch(tokio_stream::wrappers::ReceiverStream::new(wrx))
        .await
        .expect("watch")
        .into_inner();
    watch
        .message()
        .await
        .expect("watch answer")
        .expect("created");
    let mut leases = LeaseClient::new(ch);
    let id = leases
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id;
    let (ltx, lrx) = mpsc::channel(4);
    ltx.send(LeaseKeepAliveRequest { id })
        .await
        .expect("queue keepalive");
    let mut keep = leases
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(lrx))
        .await
        .expect("keepalive")
        .into_inner();
    keep.message()
        .await
        .expect("keepalive answer")
        .expect("ttl");
    Held {
        _senders: vec![
            Box::new(wtx),
            Box::new(ltx),
            Box::new(watch),
            Box::new(keep),
        ],
    }
}

/// Waits for `m` to exit after a SIGTERM sent earlier; how long it took
/// from `since`.
fn wait_exit(m: &mut Member, since: Instant, limit: Duration) -> Duration {
    let deadline = since + limit;
    loop {
        if !m.is_running() {
            return since.elapsed();
        }
        if Instant::now() > deadline {
            m.kill();
            panic!("{} still running {limit:?} after SIGTERM", m.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to all three members at the same moment, each holding
/// clients' watch and keep-alive streams open and serving a put loop:
/// every member is gone within the handover plus `--shutdown-grace`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_members_whose_clients_hold_streams_open() {
    let mut c = Cluster::start(3, &["--shutdown-grace", "2s"]).await;
    let mut held = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for m in &c.members {
        for _ in 0..2 {
            held.push(hold_streams(m.channel().await).await);
        }
        let mut kv = m.kv().await;
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = kv
                    .put(PutRequest {
                        key: b"held/loop".to_vec().into(),
                        value: n.to_string().into_bytes().into(),
                        ..Default::default()
                    })
                    .await;
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    for m in &c.members {
        m.signal("TERM");
    }
    let mut took = Vec::new();
    for m in &mut c.members {
        took.push(wait_exit(m, t0, Duration::from_secs(8)));
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.abort();
    }
    drop(held);
    for m in &c.members {
        let log = m.log_text();
        assert!(
            log.contains("received a stop signal; shutting down"),
            "{}: {log}",
            m.name
        );
    }
    eprintln!("members stopped after {took:?}");
}

/// Puts `roll/k{n % 8} = n` for n = 0, 1, … until `stop`, each retried on
/// the next member (after a short pause) until it succeeds, as a client
/// does; the revision of each acknowledged write, and how many tries
/// failed.
async fn writer(kvs: Vec<KvClient<Channel>>, stop: Arc<AtomicBool>) -> (Vec<i64>, u64) {
    let mut kvs = kvs;
    let mut at = 0;
    let mut acked = Vec::new();
    let mut failed_tries = 0;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let req = PutRequest {
            key: format!("roll/k{}", n % 8).into_bytes().into(),
            value: n.to_string().into_bytes().into(),
            ..Default::default()
        };
        let since = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), kvs[at].put(req.clone())).await {
                Ok(Ok(r)) => {
                    acked.push(r.into_inner().header.expect("header").revision);
                    break;
                }
                _ => {
                    failed_tries += 1;
                    assert!(
                        since.elapsed() < Duration::from_secs(30),
                        "write {n} not accepted by any member for 30 s"
                    );
                    at = (at + 1) % kvs.len();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        n += 1;
    }
    (acked, failed_tries)
}

/// Watches `roll/` from revision 1, never closing its stream; when a
/// member ends it, watches again on the next member from the revision
/// after the last event seen. The revisions of the events, in order.
async fn watcher(channels: Vec<Channel>, stop: Arc<AtomicBool>) -> Vec<i64> {
    let mut seen: Vec<i64> = Vec::new();
    let mut at = 0;
    while !stop.load(Ordering::Relaxed) {
        let start = seen.last().map_or(1, |r| r + 1);
        let (tx, rx) = mpsc::channel(1);
        let _ = tx
            .send(WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(
                    WatchCreateRequest {
                        key: b"roll/".to_vec().into(),
                        range_end: b"roll0".to_vec().into(),
                        start_revision: start,
                        ..Default::default()
                    },
                )),
            })
            .await;
        let call = WatchClient::new(channels[at].clone())
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        if let Ok(stream) = call {
            let mut stream = stream.into_inner();
            loop {
                let next = tokio::time::timeout(Duration::from_millis(200), stream.message());
                match next.await {
                    Ok(Ok(Some(r))) => {
                        assert!(!r.canceled, "watch canceled: {}", r.cancel_reason);
                        seen.extend(
                            r.events
                                .iter()
                                .filter_map(|e| e.kv.as_ref())
                                .map(|kv| kv.mod_revision),
                        );
                    }
                    Ok(_) => break,
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
        }
        drop(tx);
        at = (at + 1) % channels.len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

/// `m`'s raft index, if it answers.
async fn raft_index(m: &Member) -> Option<u64> {
    let mut s = MaintenanceClient::new(m.channel().await);
    let r = tokio::time::timeout(Duration::from_secs(2), s.status(StatusRequest {}));
    Some(r.await.ok()?.ok()?.into_inner().raft_index)
}

/// Each member in turn stopped with SIGTERM and started again, under a
/// write load and a watch that never closes its stream: every write is
/// accepted (by the client's own retry on another member at worst), the
/// watch sees every acknowledged write once and in order, and each
/// member stops within its grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_writes_and_a_watch() {
    let mut c = Cluster::start(3, &["--shutdown-grace", "2s"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut kvs = Vec::new();
    let mut channels = Vec::new();
    for m in &c.members {
        kvs.push(m.kv().await);
        channels.push(m.channel().await);
    }
    let writes = tokio::spawn(writer(kvs, stop.clone()));
    let watch = tokio::spawn(watcher(channels, stop.clone()));
    let mut stops = Vec::new();
    for i in 0..c.members.len() {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let t = Instant::now();
        let st = c.members[i].stop();
        stops.push(t.elapsed());
        assert!(st.success(), "{}: {st:?}", c.members[i].name);
        c.members[i].start();
        // Caught up: its log reaches the others' before the next stops.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let target = raft_index(&c.members[(i + 1) % 3]).await;
            if let (Some(me), Some(target)) = (raft_index(&c.members[i]).await, target) {
                if me >= target {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} never caught up",
                c.members[i].name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failed_tries) = writes.await.expect("writer");
    let seen = watch.await.expect("watcher");
    assert!(acked.len() > 50, "only {} writes", acked.len());
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "events repeated or out of order"
    );
    let seen_set: std::collections::BTreeSet<i64> = seen.iter().copied().collect();
    let missing: Vec<i64> = acked
        .iter()
        .filter(|r| !seen_set.contains(r))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes the watch never saw: {missing:?}"
    );
    for s in &stops {
        assert!(*s < Duration::from_secs(8), "a member took {s:?} to stop");
    }
    let mut by_key = BTreeMap::new();
    for m in &c.members {
        let mut kv = m.kv().await;
        for k in 0..8 {
            let v = get(&mut kv, &format!("roll/k{k}")).await;
            by_key.entry(k).or_insert_with(Vec::new).push(v);
        }
    }
    assert!(by_key
        .values()
        .all(|vs| vs.windows(2).all(|w| w[0] == w[1])));
    eprintln!(
        "{} writes, {failed_tries} tries retried, {} events, stops took {stops:?}",
        acked.len(),
        seen.len()
    );
}
