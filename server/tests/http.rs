//! HTTP beside gRPC on the client port, and alone on
//! `--listen-metrics-urls`: the probes' answers as etcd 3.5 gives them
//! (healthy, no leader, an alarm raised and excluded), `/version`,
//! `/metrics` under etcd's names counting what was done, and bad HTTP
//! answered with HTTP errors while gRPC goes on.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cairn::proto::etcdserverpb::alarm_request::AlarmAction;
use cairn::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn::proto::etcdserverpb::{AlarmRequest, AlarmType};
use common::*;

/// One HTTP/1.1 request: (status, body).
fn http(addr: &str, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn get(addr: &str, path: &str) -> (u16, String) {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

fn host(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// The value of the sample `name` (with its labels) in a metrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_version_and_metrics_on_both_ports() {
    let mut c = Cluster::prepare(3, &[], "http", "http");
    let mut metrics_urls = Vec::new();
    for m in &mut c.members {
        let url = format!("http://127.0.0.1:{}", free_port());
        m.extra
            .extend(["--listen-metrics-urls".to_string(), url.clone()]);
        metrics_urls.push(host(&url));
    }
    for m in &mut c.members {
        m.start();
    }
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let client = host(&c.members[0].client_url);
    let metrics = metrics_urls[0].clone();

    // Healthy, on both ports.
    for addr in [&client, &metrics] {
        let (status, body) = get(addr, "/health");
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"health":"true","reason":""}"#)
        );
        assert_eq!(get(addr, "/livez"), (200, "ok\n".into()));
        assert_eq!(get(addr, "/readyz"), (200, "ok\n".into()));
        let (status, body) = get(addr, "/readyz?verbose");
        assert_eq!(status, 200);
        assert_eq!(
            body,
            "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok\n"
        );
        let (status, body) = get(addr, "/version");
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["etcdcluster"], "3.5.0");
        let server = v["etcdserver"].as_str().expect("version");
        let minor: Vec<u32> = server.split('.').filter_map(|p| p.parse().ok()).collect();
        // kube-apiserver needs 3.5.13 or later for its watch progress
        // requests and consistent reads from its cache.
        assert!(minor >= vec![3, 5, 13], "{server}");
    }

    // Metrics count what was done.
    let ep = c.members[leader].endpoint();
    for i in 0..20 {
        ctl(&ep, &["put", &format!("k{i}"), "v"]);
    }
    ctl(&ep, &["get", "k", "--prefix"]);
    let (status, text) = get(&metrics_urls[leader], "/metrics");
    assert_eq!(status, 200);
    let put_ok = r#"grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"}"#;
    assert!(sample(&text, put_ok) >= Some(20.0), "{text}");
    let started = r#"grpc_server_started_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"}"#;
    assert!(sample(&text, started) >= Some(1.0));
    for (name, at_least) in [
        ("etcd_server_has_leader", 1.0),
        ("etcd_server_is_leader", 1.0),
        ("etcd_server_leader_changes_seen_total", 1.0),
        ("etcd_server_proposals_committed_total", 20.0),
        ("etcd_server_proposals_applied_total", 20.0),
        ("etcd_debugging_mvcc_keys_total", 20.0),
        ("etcd_disk_wal_fsync_duration_seconds_count", 1.0),
        ("etcd_disk_backend_commit_duration_seconds_count", 1.0),
        ("etcd_network_client_grpc_received_bytes_total", 100.0),
        ("etcd_network_client_grpc_sent_bytes_total", 100.0),
        ("etcd_mvcc_db_total_size_in_bytes", 1.0),
        ("etcd_server_quota_backend_bytes", 2147483648.0),
        ("process_resident_memory_bytes", 1.0),
    ] {
        let v = sample(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
        assert!(v >= at_least, "{name} = {v}");
    }
    assert_eq!(sample(&text, "etcd_server_proposals_pending"), Some(0.0));
    // The leader's links to its two followers: heartbeat round trips
    // and append bytes, per peer.
    for family in [
        "etcd_network_peer_round_trip_time_seconds_count{To=",
        "etcd_network_peer_sent_bytes_total{To=",
        "etcd_network_peer_received_bytes_total{From=",
    ] {
        let peers: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(family))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert!(
            peers.len() == 2 && peers.iter().all(|&v| v > 0.0),
            "{family}: {peers:?}"
        );
    }
    // A watch open counts as a watcher.
    let mut watch = std::process::Command::new(which("etcdctl"))
        .args([&format!("--endpoints={ep}"), "watch", "w"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = get(&metrics_urls[leader], "/metrics");
        if sample(&text, "etcd_debugging_mvcc_watcher_total") == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the watcher was not counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = watch.kill();
    let _ = watch.wait();

    // Unknown paths and bad HTTP get HTTP errors; gRPC goes on.
    assert_eq!(get(&client, "/nope").0, 404);
    assert_eq!(get(&metrics, "/v3/kv/range").0, 404);
    assert_eq!(http(&client, "GARBAGE\r\n\r\n").0, 400);
    assert_eq!(
        http(&metrics, "GET /health HTTP/1.1\r\nBad Header\r\n\r\n").0,
        400
    );
    ctl(&c.members[0].endpoint(), &["get", "k0"]);

    // An alarm: unhealthy unless excluded.
    let mut m = MaintenanceClient::new(c.members[0].channel().await);
    let member_id = c.members[0].status().await.map_or(0, |s| s.0);
    let alarm = |action: AlarmAction| AlarmRequest {
        action: action as i32,
        member_id,
        alarm: AlarmType::Nospace as i32,
    };
    m.alarm(alarm(AlarmAction::Activate))
        .await
        .expect("raise NOSPACE");
    let (status, body) = get(&client, "/health");
    assert_eq!(
        (status, body.as_str()),
        (503, r#"{"health":"false","reason":"ALARM NOSPACE"}"#)
    );
    assert_eq!(get(&client, "/health?exclude=NOSPACE").0, 200);
    assert_eq!(get(&metrics, "/readyz").0, 200, "NOSPACE is not corruption");
    m.alarm(alarm(AlarmAction::Deactivate))
        .await
        .expect("clear NOSPACE");

    // No leader: the survivor says so; it still serves serializable
    // reads, so it is live but not ready.
    let others: Vec<usize> = (0..3).filter(|&i| i != 0).collect();
    for i in others {
        c.members[i].kill();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(&client, "/health");
        if status == 503 {
            assert!(
                body.contains("RAFT NO LEADER") || body.contains("QGET ERROR"),
                "{body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "still healthy without a quorum");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get(&metrics, "/livez").0, 200);
    let (status, body) = get(&metrics, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("[-]linearizable_read failed") && body.ends_with("readyz check failed\n"),
        "{body}"
    );
    assert_eq!(get(&metrics, "/readyz?exclude=linearizable_read").0, 200);
}
