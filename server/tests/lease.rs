//! Leases: differential against a real etcd 3.4, etcdctl's `lease`
//! commands, expiry (keys deleted in one revision), restart, and expiry
//! across leader kills.

mod common;

use std::time::{Duration, Instant};

use cairn::proto::etcdserverpb::kv_client::KvClient;
use cairn::proto::etcdserverpb::lease_client::LeaseClient;
use cairn::proto::etcdserverpb::watch_client::WatchClient;
use cairn::proto::etcdserverpb::watch_request::RequestUnion;
use cairn::proto::etcdserverpb::*;
use common::*;
use tonic::transport::Channel;

fn strip(h: &mut Option<ResponseHeader>) {
    if let Some(h) = h {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
}

fn err(s: tonic::Status) -> String {
    format!("error {:?} {}", s.code(), s.message())
}

fn leased_put(key: &str, lease: i64) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: b"v".to_vec().into(),
        lease,
        ..Default::default()
    }
}

async fn grant(l: &mut LeaseClient<Channel>, id: i64, ttl: i64) -> String {
    match l.lease_grant(LeaseGrantRequest { id, ttl }).await {
        Ok(r) => {
            let mut r = r.into_inner();
            strip(&mut r.header);
            format!("{r:?}")
        }
        Err(e) => err(e),
    }
}

async fn put_str(kv: &mut KvClient<Channel>, req: PutRequest) -> String {
    match kv.put(req).await {
        Ok(r) => {
            let mut r = r.into_inner();
            strip(&mut r.header);
            format!("{r:?}")
        }
        Err(e) => err(e),
    }
}

async fn ttl_str(l: &mut LeaseClient<Channel>, id: i64) -> String {
    match l
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true })
        .await
    {
        Ok(r) => {
            let mut r = r.into_inner();
            strip(&mut r.header);
            // The remaining TTL depends on timing: only its range counts.
            let left_ok = r.ttl == -1 || (r.ttl > 0 && r.ttl <= r.granted_ttl);
            r.ttl = if r.ttl == -1 { -1 } else { i64::from(left_ok) };
            // etcd lists a lease's keys in no particular order.
            r.keys.sort();
            format!("{r:?}")
        }
        Err(e) => err(e),
    }
}

/// The same lease scenario against one server; every answer, normalized.
async fn scenario(ch: Channel) -> Vec<String> {
    let mut kv = KvClient::new(ch.clone());
    let mut l = LeaseClient::new(ch.clone());
    let mut out = vec![
        grant(&mut l, 100, 0).await, // raised to the minimum TTL
        grant(&mut l, 100, 10).await,
        grant(&mut l, 200, 9_000_000_001).await,
        grant(&mut l, 200, 30).await,
        grant(&mut l, 300, 60).await,
    ];
    for (k, lease) in [("a", 200), ("f", 200), ("b", 200), ("c", 300), ("d", 999)] {
        out.push(put_str(&mut kv, leased_put(k, lease)).await);
    }
    // b moves to lease 300; a keeps its lease with ignore_lease.
    out.push(put_str(&mut kv, leased_put("b", 300)).await);
    let mut keep = leased_put("a", 0);
    keep.ignore_lease = true;
    keep.prev_kv = true;
    out.push(put_str(&mut kv, keep).await);
    let mut missing = leased_put("zz", 0);
    missing.ignore_lease = true;
    out.push(put_str(&mut kv, missing).await);
    // A txn is checked on the branch it takes only.
    let put_op = |k: &str, lease| RequestOp {
        request: Some(request_op::Request::RequestPut(leased_put(k, lease))),
    };
    let always = Compare {
        key: b"a".to_vec().into(),
        result: compare::CompareResult::Greater as i32,
        target: compare::CompareTarget::Version as i32,
        target_union: Some(compare::TargetUnion::Version(0)),
        ..Default::default()
    };
    for (success, failure) in [(999, 300), (300, 999)] {
        let r = kv
            .txn(TxnRequest {
                compare: vec![always.clone()],
                success: vec![put_op("t", success)],
                failure: vec![put_op("t", failure)],
            })
            .await;
        out.push(match r {
            Ok(r) => {
                let mut r = r.into_inner();
                strip(&mut r.header);
                for resp in &mut r.responses {
                    if let Some(response_op::Response::ResponsePut(p)) = &mut resp.response {
                        strip(&mut p.header);
                    }
                }
                format!("{r:?}")
            }
            Err(e) => err(e),
        });
    }
    for id in [200, 300, 100, 12345] {
        out.push(ttl_str(&mut l, id).await);
    }
    let mut leases = l
        .lease_leases(LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner();
    strip(&mut leases.header);
    leases.leases.sort_by_key(|s| s.id);
    out.push(format!("{leases:?}"));

    // Keep-alive: a known lease gets its TTL back, an unknown one 0.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(LeaseKeepAliveRequest { id: 200 })
        .await
        .expect("queue");
    let mut ka = l
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("keepalive")
        .into_inner();
    let mut r = ka.message().await.expect("answer").expect("some");
    strip(&mut r.header);
    out.push(format!("{r:?}"));
    tx.send(LeaseKeepAliveRequest { id: 12345 })
        .await
        .expect("send");
    let mut r = ka.message().await.expect("answer").expect("some");
    strip(&mut r.header);
    out.push(format!("{r:?}"));
    drop(tx);

    // Revoking deletes the lease's keys in one revision, with events.
    let (wtx, wrx) = tokio::sync::mpsc::channel(4);
    wtx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"\0".to_vec().into(),
            range_end: b"\0".to_vec().into(),
            prev_kv: true,
            ..Default::default()
        })),
    })
    .await
    .expect("queue");
    let mut w = WatchClient::new(ch.clone())
        .watch(tokio_stream::wrappers::ReceiverStream::new(wrx))
        .await
        .expect("watch")
        .into_inner();
    assert!(w.message().await.expect("created").expect("some").created);
    for id in [200, 200, 300] {
        out.push(match l.lease_revoke(LeaseRevokeRequest { id }).await {
            Ok(r) => {
                let mut r = r.into_inner();
                strip(&mut r.header);
                format!("{r:?}")
            }
            Err(e) => err(e),
        });
    }
    for _ in 0..2 {
        let mut r = tokio::time::timeout(Duration::from_secs(5), w.message())
            .await
            .expect("events in time")
            .expect("stream")
            .expect("some");
        strip(&mut r.header);
        out.push(format!("{r:?}"));
    }
    let all = kv
        .range(RangeRequest {
            key: b"\0".to_vec().into(),
            range_end: b"\0".to_vec().into(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    out.push(format!("{:?}", all.kvs));
    out.push(ttl_str(&mut l, 200).await);
    drop(wtx);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_lease_responses_as_etcd() {
    let etcd = Etcd::start();
    let _ = etcd.kv().await;
    let want = scenario(etcd.channel()).await;
    // etcd's default timeouts: the same minimum TTL.
    let c = Cluster::start(
        1,
        &["--heartbeat-interval", "100", "--election-timeout", "1000"],
    )
    .await;
    let got = scenario(c.members[0].channel().await).await;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "answer {i} differs");
    }
    assert_eq!(got.len(), want.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lease() {
    let c = Cluster::start(1, &[]).await;
    let ep = c.endpoints();
    let out = ctl(&ep, &["lease", "grant", "60"]);
    // "lease 694d7f1a2b3c4d5e granted with TTL(60s)"
    let id = out.split_whitespace().nth(1).expect("lease id").to_string();
    assert!(out.contains("granted with TTL(60s)"), "{out}");
    ctl(&ep, &["put", "--lease", &id, "k1", "v1"]);
    ctl(&ep, &["put", "--lease", &id, "k2", "v2"]);
    let out = ctl(&ep, &["lease", "timetolive", "--keys", &id]);
    assert!(
        out.contains("granted with TTL(60s)") && out.contains("attached keys([k1 k2])"),
        "{out}"
    );
    let out = ctl(&ep, &["lease", "list"]);
    assert!(out.contains("found 1 leases") && out.contains(&id), "{out}");
    let out = ctl(&ep, &["lease", "keep-alive", "--once", &id]);
    assert!(out.contains("keepalived with TTL(60)"), "{out}");
    let out = ctl(&ep, &["lease", "revoke", &id]);
    assert!(out.contains("revoked"), "{out}");
    let out = ctl(&ep, &["get", "k", "--prefix"]);
    assert!(out.trim().is_empty(), "keys outlived their lease: {out}");
    let (ok, _, err) = etcdctl(&ep, &["put", "--lease", &id, "k3", "v"]);
    assert!(!ok && err.contains("requested lease not found"), "{err}");
    let out = ctl(&ep, &["lease", "timetolive", &id]);
    assert!(out.contains("already expired"), "{out}");
}

async fn lease_client(m: &common::Member) -> LeaseClient<Channel> {
    LeaseClient::new(m.channel().await)
}

async fn count(kv: &mut KvClient<Channel>, prefix: &str) -> i64 {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    kv.range(RangeRequest {
        key: prefix.as_bytes().to_vec().into(),
        range_end: end.into(),
        count_only: true,
        ..Default::default()
    })
    .await
    .expect("count")
    .into_inner()
    .count
}

/// Renews `id` through `ch` every `every` until dropped, giving up on an
/// attempt after 1 s (as a client would, rather than wait on a leader that
/// is gone); panics if the lease is ever reported gone.
fn keep_renewing(ch: Channel, id: i64, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut l = LeaseClient::new(ch.clone());
            let attempt = async {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let _ = tx.send(LeaseKeepAliveRequest { id }).await;
                let mut s = l
                    .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                    .ok()?;
                s.get_mut().message().await.ok().flatten()
            };
            if let Ok(Some(a)) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
                assert!(a.ttl > 0, "renewed lease {id:x} was reported gone");
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// Stops a renewer, failing the test if it saw its lease gone.
async fn stop_renewing(r: tokio::task::JoinHandle<()>) {
    if r.is_finished() {
        r.await.expect("renewer");
    } else {
        r.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_deletes_keys_in_one_revision_and_leases_survive_restart() {
    let mut c = Cluster::start(1, &[]).await;
    let mut l = lease_client(&c.members[0]).await;
    let mut kv = c.members[0].kv().await;
    l.lease_grant(LeaseGrantRequest { id: 7, ttl: 3 })
        .await
        .expect("grant 7");
    l.lease_grant(LeaseGrantRequest { id: 8, ttl: 3 })
        .await
        .expect("grant 8");
    let granted = Instant::now();
    for i in 0..50 {
        kv.put(leased_put(&format!("/e/{i:02}"), 7))
            .await
            .expect("put");
        kv.put(leased_put(&format!("/k/{i:02}"), 8))
            .await
            .expect("put");
    }
    let renew = keep_renewing(c.members[0].channel().await, 8, Duration::from_millis(500));
    // Restart (SIGTERM): leases and their keys come back.
    assert!(c.members[0].stop().success());
    c.members[0].start();
    c.wait_leader(Duration::from_secs(20)).await;
    let mut l = lease_client(&c.members[0]).await;
    let mut kv = c.members[0].kv().await;
    let t = l
        .lease_time_to_live(LeaseTimeToLiveRequest { id: 7, keys: true })
        .await
        .expect("ttl")
        .into_inner();
    assert_eq!((t.granted_ttl, t.keys.len()), (3, 50), "{t:?}");
    let before = head(&mut kv).await;
    let (wtx, wrx) = tokio::sync::mpsc::channel(1);
    wtx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"/e/".to_vec().into(),
            range_end: b"/e0".to_vec().into(),
            start_revision: before + 1,
            prev_kv: true,
            ..Default::default()
        })),
    })
    .await
    .expect("queue");
    let mut w = WatchClient::new(c.members[0].channel().await)
        .watch(tokio_stream::wrappers::ReceiverStream::new(wrx))
        .await
        .expect("watch")
        .into_inner();
    assert!(w.message().await.expect("created").expect("some").created);
    let r = tokio::time::timeout(Duration::from_secs(15), w.message())
        .await
        .expect("expiry in time")
        .expect("stream")
        .expect("some");
    let gone_after = granted.elapsed();
    assert_eq!(r.events.len(), 50, "every key in one response");
    let rev = r.events[0].kv.as_ref().expect("kv").mod_revision;
    assert_eq!(rev, before + 1, "one revision for the whole lease");
    for e in &r.events {
        assert_eq!(e.r#type, 1, "DELETE");
        assert_eq!(e.kv.as_ref().expect("kv").mod_revision, rev);
        assert_eq!(e.prev_kv.as_ref().expect("prev").lease, 7);
    }
    // The restart took some of the TTL; with the grace of one election
    // timeout after it, the lease cannot outlive TTL + restart + grace by
    // much.
    assert!(
        gone_after >= Duration::from_secs(3),
        "expired early: {gone_after:?}"
    );
    assert_eq!(count(&mut kv, "/e/").await, 0);
    assert_eq!(count(&mut kv, "/k/").await, 50, "the renewed lease expired");
    let t = l
        .lease_time_to_live(LeaseTimeToLiveRequest { id: 7, keys: false })
        .await
        .expect("ttl")
        .into_inner();
    assert_eq!(t.ttl, -1);
    stop_renewing(renew).await;
    drop(wtx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kills_neither_extend_nor_expire_leases() {
    // Election timeout 500 ms; checkpoints whenever a lease's remaining
    // TTL drifted 1 s from the last one.
    let mut c = Cluster::start(3, &["--experimental-lease-checkpoint-interval", "1s"]).await;
    let first = c.wait_leader(Duration::from_secs(20)).await;
    let other = (first + 1) % 3;
    let mut l = lease_client(&c.members[other]).await;
    let ttl = 8;
    l.lease_grant(LeaseGrantRequest { id: 1, ttl })
        .await
        .expect("grant abandoned");
    l.lease_grant(LeaseGrantRequest { id: 2, ttl: 2 })
        .await
        .expect("grant renewed");
    let granted = Instant::now();
    let mut kv = c.members[other].kv().await;
    for i in 0..20 {
        kv.put(leased_put(&format!("/a/{i}"), 1))
            .await
            .expect("put");
        kv.put(leased_put(&format!("/r/{i}"), 2))
            .await
            .expect("put");
    }
    // Renewals go to a member that is never killed.
    let mut renewers = Vec::new();
    for m in 0..3 {
        if m != first {
            renewers.push(keep_renewing(
                c.members[m].channel().await,
                2,
                Duration::from_millis(400),
            ));
        }
    }
    // Two leader kills, three seconds apart: without checkpoints each new
    // leader would give the abandoned lease its whole TTL again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut killed = first;
    for round in 0..2 {
        c.members[killed].kill();
        let next = c.wait_leader(Duration::from_secs(20)).await;
        c.members[killed].start();
        tokio::time::sleep(Duration::from_secs(3)).await;
        killed = if round == 0 {
            c.wait_leader(Duration::from_secs(20)).await
        } else {
            next
        };
    }
    let survivor = (0..3).find(|m| *m != killed).expect("a live member");
    let mut kv = c.members[survivor].kv().await;
    let deadline = granted + Duration::from_secs(30);
    loop {
        if count(&mut kv, "/a/").await == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "abandoned lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone_after = granted.elapsed();
    eprintln!("abandoned lease (TTL {ttl}s) gone after {gone_after:?}");
    // TTL, plus for the last kill: up to one checkpoint interval and tick
    // of drift, detection and election, one election timeout of grace and
    // a tick to notice — about 3.5 s — with room for a loaded machine.
    // (Without checkpoints this takes about 16 s.)
    assert!(
        gone_after <= Duration::from_secs(ttl as u64 + 5),
        "abandoned lease lived {gone_after:?} with a TTL of {ttl}s"
    );
    assert!(
        gone_after >= Duration::from_secs(ttl as u64),
        "expired early"
    );
    assert_eq!(count(&mut kv, "/r/").await, 20, "a renewed lease expired");
    for r in renewers {
        stop_renewing(r).await;
    }
}

/// The in-process client of an embedded member speaks leases too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_client_leases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = cairn::Node::start(cairn::Config::embedded(dir.path().join("data")))
        .await
        .expect("start");
    let client = node.client();
    let g = client
        .lease_grant(LeaseGrantRequest { id: 0, ttl: 0 })
        .await
        .expect("grant");
    assert!(g.id > 0);
    assert_eq!(g.ttl, 2, "raised to 1.5 election timeouts");
    client
        .put(leased_put("k", g.id))
        .await
        .expect("put with lease");
    assert_eq!(client.lease_keep_alive(g.id).await.expect("renew"), 2);
    let t = client.lease_time_to_live(g.id, true).await.expect("ttl");
    assert_eq!(t.keys, vec![b"k".to_vec()]);
    assert_eq!(client.lease_leases().expect("leases").leases.len(), 1);
    client.lease_revoke(g.id).await.expect("revoke");
    assert_eq!(client.get("k").await.expect("get"), None);
    assert_eq!(client.lease_keep_alive(g.id).await.expect("renew"), 0);
    assert_eq!(
        client
            .lease_time_to_live(g.id, false)
            .await
            .expect("ttl")
            .ttl,
        -1
    );
    let e = client.put(leased_put("k", g.id)).await.expect_err("gone");
    assert_eq!(e, cairn::Error::LeaseNotFound);
    assert_eq!(e.to_string(), "etcdserver: requested lease not found");
    node.shutdown().await;
}

/// A leader paused past its leases' deadlines must not revoke them when it
/// wakes up: the leader elected meanwhile took their renewals. (Found by
/// cairn-jepsen's lease workload: the woken leader's revoke was forwarded
/// to the new leader and applied; `lease/early-expiry-after-pause.jsonl`
/// in jepsen's regression histories is that run.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_waking_up_does_not_revoke_leases_renewed_elsewhere() {
    let c = Cluster::start(3, &[]).await;
    let first = c.wait_leader(Duration::from_secs(20)).await;
    let other = (first + 1) % 3;
    let mut l = lease_client(&c.members[other]).await;
    l.lease_grant(LeaseGrantRequest { id: 7, ttl: 2 })
        .await
        .expect("grant");
    let mut kv = c.members[other].kv().await;
    kv.put(leased_put("/p/k", 7)).await.expect("put");
    c.members[first].signal("STOP");
    let renewer = keep_renewing(
        c.members[other].channel().await,
        7,
        Duration::from_millis(300),
    );
    // Well past the paused leader's deadline for the lease (2 s + one
    // election timeout of grace).
    tokio::time::sleep(Duration::from_secs(4)).await;
    c.members[first].signal("CONT");
    // It wakes up with stale deadlines; time for it to act on them and to
    // learn it was deposed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = count(&mut kv, "/p/").await;
    if left != 1 || renewer.is_finished() {
        c.dump_logs();
    }
    assert_eq!(left, 1, "a renewed lease was revoked");
    stop_renewing(renewer).await;
}
