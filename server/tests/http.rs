//! HTTP beside gRPC on the client port, and alone on
//! `--listen-metrics-urls`: the probes' answers as etcd 3.5 gives them
//! (healthy, no leader, an alarm raised and excluded), `/version`,
//! `/metrics` under etcd's names counting what was done, and bad HTTP
//! answered with HTTP errors while gRPC goes on.

mod common;

use std::time::{Duration, Instant};

use cairn::proto::etcdserverpb::alarm_request::AlarmAction;
use cairn::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn::proto::etcdserverpb::{AlarmRequest, AlarmType};
use common::*;

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
        let (status, body) = http_get(addr, "/health");
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"health":"true","reason":""}"#)
        );
        assert_eq!(http_get(addr, "/livez"), (200, "ok\n".into()));
        assert_eq!(http_get(addr, "/readyz"), (200, "ok\n".into()));
        let (status, body) = http_get(addr, "/readyz?verbose");
        assert_eq!(status, 200);
        assert_eq!(
            body,
            "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\nok\n"
        );
        let (status, body) = http_get(addr, "/version");
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
    let (status, text) = http_get(&metrics_urls[leader], "/metrics");
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
    let mut watch = std::process::Command::new(etcdctl_bin())
        .args([&format!("--endpoints={ep}"), "watch", "w"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = http_get(&metrics_urls[leader], "/metrics");
        if sample(&text, "etcd_debugging_mvcc_watcher_total") == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the watcher was not counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = watch.kill();
    let _ = watch.wait();

    // Unknown paths and bad HTTP get HTTP errors; gRPC goes on.
    assert_eq!(http_get(&client, "/nope").0, 404);
    assert_eq!(http_get(&metrics, "/v3/kv/range").0, 404);
    assert_eq!(http(&client, "GARBAGE\r\n\r\n").0, 400);
    assert_eq!(
        http(&metrics, "GET /health HTTP/1.1\r\nBad Header\r\n\r\n").0,
        400
    );
    ctl(&c.members[0].endpoint(), &["get", "k0"]);

    // An alarm: unhealthy unless excluded.
    nospace(c.members[0].channel().await, AlarmAction::Activate).await;
    let (status, body) = http_get(&client, "/health");
    assert_eq!(
        (status, body.as_str()),
        (503, "{\"health\":\"false\",\"reason\":\"ALARM NOSPACE\"}\n")
    );
    assert_eq!(http_get(&client, "/health?exclude=NOSPACE").0, 200);
    assert_eq!(
        http_get(&metrics, "/readyz").0,
        200,
        "NOSPACE is not corruption"
    );
    nospace(c.members[0].channel().await, AlarmAction::Deactivate).await;

    // No leader: the survivor says so; it still serves serializable
    // reads, so it is live but not ready.
    let others: Vec<usize> = (0..3).filter(|&i| i != 0).collect();
    for i in others {
        c.members[i].kill();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http_get(&client, "/health");
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
    assert_eq!(http_get(&metrics, "/livez").0, 200);
    let (status, body) = http_get(&metrics, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("[-]linearizable_read failed") && body.ends_with("readyz check failed\n"),
        "{body}"
    );
    assert_eq!(
        http_get(&metrics, "/readyz?exclude=linearizable_read").0,
        200
    );
}

/// Raises (or clears) the NOSPACE alarm of the member behind `ch`.
async fn nospace(ch: tonic::transport::Channel, action: AlarmAction) {
    let mut m = MaintenanceClient::new(ch);
    let member_id = m
        .status(cairn::proto::etcdserverpb::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .header
        .map_or(0, |h| h.member_id);
    m.alarm(AlarmRequest {
        action: action as i32,
        member_id,
        alarm: AlarmType::Nospace as i32,
    })
    .await
    .expect("NOSPACE alarm");
}

/// One answer: (what was asked, status or gRPC code, the headers that
/// describe the body, body or message).
type Answer = (String, u16, Vec<(String, String)>, String);

/// An HTTP request's answer, with the headers etcd sets on its own.
fn answer(addr: &str, method: &str, path: &str) -> Answer {
    let (status, headers, body) = http_full(
        addr,
        &format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    let mut kept: Vec<_> = headers
        .into_iter()
        .filter(|(k, _)| ["content-type", "x-content-type-options", "allow"].contains(&k.as_str()))
        .collect();
    kept.sort();
    (format!("{method} {path}"), status, kept, body)
}

/// The probes' answers through a NOSPACE alarm, and a put refused by
/// it; before that, other methods than GET and an unknown path.
async fn probes_through_an_alarm(client: &str, ch: tonic::transport::Channel) -> Vec<Answer> {
    let mut out = Vec::new();
    for path in [
        "/health",
        "/health?serializable=true",
        "/health?exclude=NOSPACE",
    ] {
        out.push(answer(client, "GET", path));
    }
    out.push(answer(client, "POST", "/health"));
    out.push(answer(client, "PUT", "/version"));
    out.push(answer(client, "GET", "/no-such-path"));
    nospace(ch.clone(), AlarmAction::Activate).await;
    for path in [
        "/health",
        "/health?serializable=true",
        "/health?exclude=NOSPACE",
        "/health?exclude=NOSPACE&serializable=true",
        "/health?exclude=CORRUPT",
    ] {
        out.push(answer(client, "GET", path));
    }
    let put = cairn::proto::etcdserverpb::kv_client::KvClient::new(ch.clone())
        .put(cairn::proto::etcdserverpb::PutRequest {
            key: b"k".to_vec().into(),
            value: b"v".to_vec().into(),
            ..Default::default()
        })
        .await;
    out.push(match put {
        Ok(_) => ("put".into(), 0, vec![], String::new()),
        Err(e) => (
            "put".into(),
            e.code() as u16,
            vec![],
            e.message().to_string(),
        ),
    });
    nospace(ch, AlarmAction::Deactivate).await;
    out.push(answer(client, "GET", "/health"));
    out
}

/// etcd 3.4 answers `/health` without a reason; Cairn answers as etcd
/// 3.5 does, compared here with a real etcd 3.5.1, headers and bytes:
/// healthy, under a NOSPACE alarm (excluded or not, serializable or
/// not), a put refused, cleared again; methods other than GET; and
/// `/version`'s fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_as_etcd_3_5_does() {
    let c = Cluster::start(1, &[]).await;
    let got = probes_through_an_alarm(
        &host(&c.members[0].client_url),
        c.members[0].channel().await,
    )
    .await;
    let etcd = Etcd::start_bin(&etcd35());
    let _ = etcd.kv().await;
    let addr = host(&etcd.client_url);
    let want = probes_through_an_alarm(&addr, etcd.channel()).await;
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "etcd 3.5.1 answers otherwise");
    }
    assert_eq!(got.len(), want.len());
    assert!(
        got.iter()
            .any(|(_, s, _, b)| *s == 503 && b.contains("ALARM NOSPACE")),
        "the alarm was never reported: {got:?}"
    );
    let fields = |addr: &str| {
        let (status, body) = http_get(addr, "/version");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let server = v["etcdserver"].as_str().unwrap_or_default().to_string();
        (status, v["etcdcluster"].clone(), server.starts_with("3.5."))
    };
    assert_eq!(fields(&host(&c.members[0].client_url)), fields(&addr));
}

/// The metric families in a Prometheus text exposition: name → type.
fn families(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// Dashboards and alerts written for etcd find every metric Cairn
/// exports under the name and type etcd 3.5.1 gives it (with `--metrics
/// extensive`, which adds the gRPC latency histograms Cairn always
/// has); only `process_threads`, of the process collector, is Cairn's
/// own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_families_are_etcd_3_5s() {
    let c = Cluster::start(1, &[]).await;
    let etcd = Etcd::start_bin_with(&etcd35(), &["--metrics", "extensive"]);
    let _ = etcd.kv().await;
    let cairn = host(&c.members[0].client_url);
    let mut kv = c.members[0].kv().await;
    put(&mut kv, "k", "v").await;
    let mut ekv = etcd.kv().await;
    put(&mut ekv, "k", "v").await;
    let (status, text) = http_get(&host(&etcd.client_url), "/metrics");
    assert_eq!(status, 200);
    let theirs = families(&text);
    let (status, text) = http_get(&cairn, "/metrics");
    assert_eq!(status, 200);
    let ours = families(&text);
    assert!(ours.len() >= 25, "too few families: {ours:?}");
    let unknown: Vec<_> = ours
        .iter()
        .filter(|(name, kind)| theirs.get(*name) != Some(kind) && *name != "process_threads")
        .collect();
    assert!(unknown.is_empty(), "not etcd 3.5.1's: {unknown:?}");
}
