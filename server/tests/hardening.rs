//! What a client cannot do to a member: hold connections that say
//! nothing, exhaust its descriptors into a busy loop, or grow its memory
//! with a watch stream it never reads.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use cairn::proto::etcdserverpb::watch_client::WatchClient;
use cairn::proto::etcdserverpb::watch_request::RequestUnion;
use cairn::proto::etcdserverpb::{WatchCreateRequest, WatchRequest};
use common::{cpu_time, ctl, etcdctl, rss_bytes, Cluster};

/// HTTP/2's connection preface: what a gRPC client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_says_nothing_is_closed() {
    let c = Cluster::start(1, &[]).await;
    let addr = c.members[0].endpoint();
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf);
    assert!(
        matches!(n, Ok(0)) || started.elapsed() < Duration::from_secs(29),
        "a silent connection was kept for {:?}",
        started.elapsed()
    );
    // The port still serves.
    ctl(&addr, &["put", "k", "v"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_pauses_accepts_instead_of_spinning() {
    let mut c = Cluster::launch(
        1,
        &["--heartbeat-interval", "50", "--election-timeout", "500"],
        "http",
        "http",
    );
    c.members[0].kill();
    c.members[0].fd_limit = Some(128);
    c.members[0].start();
    c.wait_leader(Duration::from_secs(30)).await;
    let addr = c.members[0].endpoint();
    let pid = c.members[0].pid().expect("running");

    // Connections that speak (so they are kept), more than the limit.
    let mut conns = Vec::new();
    for _ in 0..200 {
        let Ok(mut s) = std::net::TcpStream::connect(&addr) else {
            break;
        };
        let _ = s.write_all(PREFACE);
        conns.push(s);
    }
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_time(pid) - before;
    // (The accept loop before this one, tonic's, used 3.7 s of CPU in
    // these 3 s, logging nothing.)
    assert!(
        used < Duration::from_millis(1000),
        "the member used {used:?} of CPU in 3 s while out of descriptors"
    );
    let log = c.members[0].log_text();
    assert_eq!(
        log.matches("out of file descriptors").count(),
        1,
        "logged once per episode:\n{log}"
    );

    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, _, _) = etcdctl(&addr, &["--command-timeout=3s", "put", "k", "v"]);
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the member did not serve again");
    }
    // Over once accepts went on for a while without a shortage: said at
    // the next connection.
    std::thread::sleep(Duration::from_secs(6));
    ctl(&addr, &["get", "k"]);
    assert!(c.members[0]
        .log_text()
        .contains("accepting connections again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_stream_never_read_holds_bounded_memory() {
    let c = Cluster::start(1, &[]).await;
    let ep = c.members[0].endpoint();
    // 96 MiB of history: 3,000 revisions of 32 KiB values.
    let value = "x".repeat(32 << 10);
    let mut kv = c.members[0].kv().await;
    for i in 0..3000 {
        common::put(&mut kv, &format!("big/{:04}", i % 100), &value).await;
    }
    let pid = c.members[0].pid().expect("running");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_bytes(pid);

    // 64 watchers from the first revision on one stream, whose answers
    // are never read.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{ep}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut w = WatchClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(128);
    for _ in 0..64 {
        tx.send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"big/".to_vec().into(),
                range_end: b"big0".to_vec().into(),
                start_revision: 1,
                prev_kv: true,
                ..Default::default()
            })),
        })
        .await
        .expect("queue");
    }
    let _stream = w
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch");
    let mut peak = before;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(rss_bytes(pid));
    }
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "a stream never read grew the member by {} MiB",
        grown >> 20
    );
    // The member still serves others.
    ctl(&ep, &["put", "after", "1"]);
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_takes_a_bounded_number_of_watchers() {
    let c = Cluster::start(1, &[]).await;
    let channel = c.members[0].channel().await;
    let mut w = WatchClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut answers = w
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    let limit = 10_000;
    let sender = tokio::spawn(async move {
        for i in 0..=limit {
            let req = WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: format!("w{i}").into_bytes().into(),
                    ..Default::default()
                })),
            };
            if tx.send(req).await.is_err() {
                return;
            }
        }
        // Kept open until the answers are read.
        std::future::pending::<()>().await;
    });
    let mut created = 0;
    let refused = loop {
        let r = answers.message().await.expect("answer").expect("open");
        if r.canceled {
            break r;
        }
        assert!(r.created);
        created += 1;
    };
    sender.abort();
    assert_eq!(created, limit);
    assert_eq!(refused.watch_id, -1);
    assert_eq!(
        refused.cancel_reason,
        "etcdserver: too many watchers on this watch stream"
    );
}

/// Established connections to `port` in namespace `ns`.
fn established(ns: &str, port: u16) -> usize {
    let out = cairn_jepsen::net::sh(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "ss",
            "-Htn",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ],
    )
    .expect("ss");
    out.lines().filter(|l| !l.trim().is_empty()).count()
}

/// A client whose end goes silent (a cut cable, a lost host) leaves the
/// member a half-open connection: the member's HTTP/2 pings find it and
/// close it (`--grpc-keepalive-interval`, `--grpc-keepalive-timeout`),
/// while an idle client that answers them keeps its connection. The
/// member runs in a network namespace of the test's own; the cut is a
/// firewall rule there that drops everything the client sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_client_connection_is_closed() {
    let net = cairn_jepsen::net::Net::create(1).expect("the test network (needs root)");
    let ns = net.namespace(0);
    let addr = net.addr(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = 2379;
    let client = format!("http://{addr}:{port}");
    let peer = "http://127.0.0.1:2380";
    let mut member = std::process::Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(env!("CARGO_BIN_EXE_cairn"))
        .arg("--data-dir")
        .arg(dir.path().join("m0"))
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", peer])
        .args(["--initial-advertise-peer-urls", peer])
        .args(["--initial-cluster", &format!("default={peer}")])
        .args(["--grpc-keepalive-interval", "1s"])
        .args(["--grpc-keepalive-timeout", "2s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start cairn in its namespace");
    let ep = format!("{addr}:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !etcdctl(&ep, &["put", "k", "v"]).0 {
        assert!(Instant::now() < deadline, "the member did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A watch: a long-lived stream on one connection.
    let mut watch = std::process::Command::new(common::etcdctl_bin())
        .args([&format!("--endpoints={ep}"), "watch", "k"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    let deadline = Instant::now() + Duration::from_secs(10);
    while established(&ns, port) == 0 {
        assert!(Instant::now() < deadline, "the watch did not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Idle but answering pings: kept past several ping rounds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        established(&ns, port),
        1,
        "a live idle connection was closed"
    );
    // The client goes silent: within a few rounds the member closes it,
    // though the client never did.
    net.cut_off(0).expect("drop the client's packets");
    let deadline = Instant::now() + Duration::from_secs(15);
    while established(&ns, port) > 0 {
        assert!(
            Instant::now() < deadline,
            "a half-open connection was kept for 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        watch.try_wait().expect("watch").is_none(),
        "the client closed it itself"
    );
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = member.kill();
    let _ = member.wait();
}
