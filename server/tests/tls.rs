//! TLS on the client and peer ports, tried with etcdctl and certificates
//! made by the test: mutual TLS, refusals (no certificate, another CA, a
//! revoked certificate, plaintext, a wrong peer name), rotation without
//! a restart, a 3-member cluster with mutual TLS on both ports, etcd's
//! automatic TLS, and the start-up errors.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::certs::Pki;
use common::{etcdctl, Cluster};

/// The client port's mutual TLS flags.
fn client_mtls(p: &Pki) -> Vec<String> {
    let server = p.pair("server");
    vec![
        "--cert-file".into(),
        server.cert,
        "--key-file".into(),
        server.key,
        "--trusted-ca-file".into(),
        p.ca(),
        "--client-cert-auth".into(),
    ]
}

/// The peer port's mutual TLS flags, with `cert` as this member's
/// certificate.
fn peer_mtls(p: &Pki, cert: &str) -> Vec<String> {
    let pair = p.pair(cert);
    vec![
        "--peer-cert-file".into(),
        pair.cert,
        "--peer-key-file".into(),
        pair.key,
        "--peer-trusted-ca-file".into(),
        p.ca(),
        "--peer-client-cert-auth".into(),
        "--peer-cert-allowed-cn".into(),
        "member".into(),
    ]
}

/// etcdctl's flags to present certificate `name` and trust `ca`.
fn creds(p: &Pki, name: &str, ca: &str) -> Vec<String> {
    let pair = p.pair(name);
    vec![
        format!("--cacert={}", p.path(ca)),
        format!("--cert={}", pair.cert),
        format!("--key={}", pair.key),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// etcdctl with `tls` flags, a short dial timeout.
fn ctl_with(endpoint: &str, tls: &[String], args: &[&str]) -> (bool, String, String) {
    let mut all: Vec<&str> = strs(tls);
    all.push("--dial-timeout=3s");
    all.extend(args);
    etcdctl(endpoint, &all)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_port_with_mutual_tls_refuses_whoever_it_should() {
    let p = Pki::get();
    let mut extra = client_mtls(p);
    extra.extend(["--client-crl-file".into(), p.path("crl.pem")]);
    let c = Cluster::launch(1, &strs(&extra), "https", "http");
    let good = creds(p, "client", "ca.pem");
    c.wait_ready_ctl(&strs(&good), Duration::from_secs(30));
    let ep = c.members[0].endpoint();
    assert!(ep.starts_with("https://"), "{ep}");

    // A connection that never starts its handshake is closed.
    let addr = ep.trim_start_matches("https://").to_string();
    let stalled = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let started = Instant::now();
        let mut buf = [0u8; 16];
        let closed =
            matches!(s.read(&mut buf), Ok(0)) || started.elapsed() < Duration::from_secs(29);
        (closed, started.elapsed())
    });

    let (ok, _, err) = ctl_with(&ep, &good, &["put", "k", "v"]);
    assert!(ok, "put with a client certificate: {err}");
    let (ok, out, err) = ctl_with(&ep, &good, &["get", "k", "--print-value-only"]);
    assert!(ok && out.trim() == "v", "get: {out}{err}");
    // The trusted CA's own certificate as the client's (Go's servers take
    // a trusted root as a chain of one; etcd's own tests do this).
    let as_root = |ca: &str, key: &str| {
        vec![
            format!("--cacert={}", p.ca()),
            format!("--cert={}", p.path(ca)),
            format!("--key={}", p.path(key)),
        ]
    };
    let (ok, out, err) = ctl_with(
        &ep,
        &as_root("ca.pem", "ca-key.pem"),
        &["get", "k", "--print-value-only"],
    );
    assert!(
        ok && out.trim() == "v",
        "the CA's certificate as a client's: {out}{err}"
    );

    // etcdctl retries a refused handshake until its command timeout.
    let refused = |tls: Vec<String>, why: &str| {
        let (ok, out, err) = ctl_with(&ep, &tls, &["--command-timeout=3s", "get", "k"]);
        assert!(!ok, "{why}: served: {out}");
        err
    };
    refused(
        vec![format!("--cacert={}", p.ca())],
        "no client certificate",
    );
    refused(
        creds(p, "other-client", "ca.pem"),
        "a certificate from another CA",
    );
    refused(creds(p, "revoked", "ca.pem"), "a revoked certificate");
    refused(
        as_root("other-ca.pem", "other-ca-key.pem"),
        "another CA's own certificate",
    );
    // The client does not trust a server certificate from another CA.
    refused(creds(p, "client", "other-ca.pem"), "an untrusted server");
    // Plaintext to the TLS port.
    let plain = format!("http://{}", ep.trim_start_matches("https://"));
    let (ok, out, _) = ctl_with(&plain, &[], &["--command-timeout=3s", "get", "k"]);
    assert!(!ok, "plaintext served on a TLS port: {out}");

    let (closed, after) = stalled.join().expect("stalled thread");
    assert!(
        closed,
        "a connection without a handshake was kept {after:?}"
    );

    let log = c.members[0].log_text();
    assert!(
        log.contains("rejected connection") && log.contains("remote=127.0.0.1:"),
        "refusals are logged with the client's address:\n{log}"
    );
    // Owner-only data dir.
    let mode = std::fs::metadata(&c.members[0].data_dir)
        .expect("data dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "data dir mode {mode:o}");
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_are_reloaded_when_their_files_change() {
    let p = Pki::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let install = |name: &str| {
        let pair = p.pair(name);
        // Written beside and renamed into place, as rotation tools do.
        for (from, to) in [(&pair.cert, &cert), (&pair.key, &key)] {
            let tmp = to.with_extension("new");
            std::fs::copy(from, &tmp).expect("copy");
            std::fs::rename(&tmp, to).expect("rename");
        }
    };
    install("server");
    let extra = [
        "--cert-file".to_string(),
        cert.display().to_string(),
        "--key-file".into(),
        key.display().to_string(),
    ];
    let c = Cluster::launch(1, &strs(&extra), "https", "http");
    let trust = |ca: &str| vec![format!("--cacert={}", p.path(ca))];
    c.wait_ready_ctl(&strs(&trust("ca.pem")), Duration::from_secs(30));
    let ep = c.members[0].endpoint();
    assert!(ctl_with(&ep, &trust("ca.pem"), &["put", "k", "1"]).0);
    let quick = "--command-timeout=3s";
    assert!(!ctl_with(&ep, &trust("other-ca.pem"), &[quick, "get", "k"]).0);

    install("other-server");
    let (ok, _, err) = ctl_with(&ep, &trust("other-ca.pem"), &["get", "k"]);
    assert!(ok, "the new certificate is served without a restart: {err}");
    assert!(
        !ctl_with(&ep, &trust("ca.pem"), &[quick, "get", "k"]).0,
        "the old certificate is still served"
    );

    // A half-written file keeps the last good certificate.
    std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----\ngarbage").expect("write");
    let (ok, _, err) = ctl_with(&ep, &trust("other-ca.pem"), &["get", "k"]);
    assert!(ok, "a broken key file must not stop the port: {err}");
    assert!(c.members[0]
        .log_text()
        .contains("keeping the previous ones"));
}

#[tokio::test(flavor = "multi_thread")]
async fn three_members_with_mutual_tls_on_both_ports() {
    let p = Pki::get();
    let mut extra = client_mtls(p);
    extra.extend(peer_mtls(p, "server"));
    let mut c = Cluster::launch(3, &strs(&extra), "https", "https");
    let tls = creds(p, "client", "ca.pem");
    let leader = c.wait_ready_ctl(&strs(&tls), Duration::from_secs(60));
    let eps = |c: &Cluster, i: usize| c.members[i].endpoint();

    let (ok, _, err) = ctl_with(&eps(&c, 0), &tls, &["put", "a", "1"]);
    assert!(ok, "put: {err}");
    for i in 0..3 {
        let (ok, out, err) = ctl_with(&eps(&c, i), &tls, &["get", "a", "--print-value-only"]);
        assert!(ok && out.trim() == "1", "member {i}: {out}{err}");
    }
    let (ok, out, _) = ctl_with(&eps(&c, 1), &tls, &["member", "list"]);
    assert!(
        ok && out.matches("https://127.0.0.1:").count() >= 6,
        "{out}"
    );

    // The leader dies; the other two elect one over TLS and go on.
    c.members[leader].kill();
    let next = c.wait_ready_ctl(&strs(&tls), Duration::from_secs(30));
    assert_ne!(next, leader);
    let alive = (0..3).find(|i| *i != leader).expect("a member");
    let (ok, _, err) = ctl_with(&eps(&c, alive), &tls, &["put", "b", "2"]);
    assert!(ok, "put after the leader died: {err}");
    c.members[leader].start();

    // A member whose peer certificate has another common name is refused
    // by every peer.
    let intruder = c.new_member_with("intruder", &[], "https", "https");
    let mut ex = client_mtls(p);
    ex.extend(peer_mtls(p, "intruder"));
    ex.extend(["--heartbeat-interval".into(), "50".into()]);
    ex.extend(["--election-timeout".into(), "500".into()]);
    c.members[intruder].extra = ex;
    c.members[intruder].start();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(0..3).any(|i| c.members[i].log_text().contains("rejected connection")) {
        assert!(Instant::now() < deadline, "the intruder was not refused");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.members[intruder].kill();

    // A proper new member joins over TLS and catches up.
    let url = c.members[intruder].peer_url.clone();
    let _ = url;
    let m3 = c.new_member_with("m3", &[], "https", "https");
    let peer_url = c.members[m3].peer_url.clone();
    let (ok, _, err) = ctl_with(
        &eps(&c, alive),
        &tls,
        &["member", "add", "m3", &format!("--peer-urls={peer_url}")],
    );
    assert!(ok, "member add: {err}");
    // Only the members that exist are listed to join.
    let ic: Vec<String> = c
        .members
        .iter()
        .filter(|m| m.name != "intruder")
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect();
    c.members[m3].initial_cluster = ic.join(",");
    c.members[m3].start();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, _) = ctl_with(
            &eps(&c, m3),
            &tls,
            &["get", "b", "--print-value-only", "--consistency=s"],
        );
        if ok && out.trim() == "2" {
            break;
        }
        if Instant::now() > deadline {
            c.dump_logs();
            panic!("the new member did not catch up over TLS: {out}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn automatic_tls_on_both_ports() {
    // With certificate authentication asked for but no CA to check
    // against, auto TLS drops it (etcd's behaviour) and says so.
    let c = Cluster::launch(
        3,
        &["--auto-tls", "--peer-auto-tls", "--peer-client-cert-auth"],
        "https",
        "https",
    );
    let tls = [
        "--insecure-skip-tls-verify".to_string(),
        "--insecure-transport=false".into(),
    ];
    c.wait_ready_ctl(&strs(&tls), Duration::from_secs(60));
    let ep = c.members[2].endpoint();
    let (ok, _, err) = ctl_with(&ep, &tls, &["put", "auto", "yes"]);
    assert!(ok, "put: {err}");
    let (ok, out, err) = ctl_with(
        &c.members[0].endpoint(),
        &tls,
        &["get", "auto", "--print-value-only"],
    );
    assert!(ok && out.trim() == "yes", "{out}{err}");
    assert!(c.members[0]
        .log_text()
        .contains("client certificate authentication is off"));
    for side in ["client", "peer"] {
        let key = c.members[0]
            .data_dir
            .join("fixtures")
            .join(side)
            .join("key.pem");
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{} mode {mode:o}", key.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_and_tls_client_listeners_side_by_side() {
    let p = Pki::get();
    let dir = tempfile::tempdir().expect("tempdir");
    let (plain, tls, peer) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let plain_url = format!("http://127.0.0.1:{plain}");
    let tls_url = format!("https://127.0.0.1:{tls}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let server = p.pair("server");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .args(["--listen-client-urls", &format!("{plain_url},{tls_url}")])
        .args(["--advertise-client-urls", &tls_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("default={peer_url}")])
        .args(["--cert-file", &server.cert, "--key-file", &server.key])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cairn");
    let trust = vec![format!("--cacert={}", p.ca())];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ctl_with(&tls_url, &trust, &["put", "k", "v"]).0 {
        assert!(Instant::now() < deadline, "the TLS listener did not serve");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, out, err) = ctl_with(&plain_url, &[], &["get", "k", "--print-value-only"]);
    assert!(ok && out.trim() == "v", "plaintext listener: {out}{err}");
    // Each port speaks only its own.
    let quick = "--command-timeout=3s";
    let tls_as_plain = format!("http://127.0.0.1:{tls}");
    assert!(!ctl_with(&tls_as_plain, &[], &[quick, "get", "k"]).0);
    let plain_as_tls = format!("https://127.0.0.1:{plain}");
    assert!(!ctl_with(&plain_as_tls, &trust, &[quick, "get", "k"]).0);
    let _ = child.kill();
    let _ = child.wait();
}

/// A TLS connection to `addr` presenting certificate `name`; whether the
/// member kept it (the handshake done, nothing refused by the time it
/// answers or closes).
async fn peer_handshake(addr: &str, p: &Pki, name: &str) -> bool {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pair = p.pair(name);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pair.cert)
        .expect("cert")
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(&pair.key).expect("key");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(p.ca()).expect("ca") {
        roots.add(c.expect("ca cert")).expect("root");
    }
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .expect("client cert");
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let Ok(mut tls) = connector.connect(name, tcp).await else {
        return false;
    };
    // TLS 1.3: a refused client certificate shows on the first read.
    let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await,
        Ok(Ok(n)) if n > 0
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn peer_certificates_refused_by_revocation_or_host_name() {
    let p = Pki::get();
    let s = p.pair("server");
    let extra = [
        "--peer-cert-file",
        &s.cert,
        "--peer-key-file",
        &s.key,
        "--peer-trusted-ca-file",
        &p.ca(),
        "--peer-client-cert-auth",
        "--peer-crl-file",
        &p.path("crl.pem"),
        "--peer-cert-allowed-hostname",
        "127.0.0.1",
    ];
    let mut c = Cluster::launch(1, &extra, "http", "https");
    c.wait_leader(Duration::from_secs(30)).await;
    let addr = c.members[0]
        .peer_url
        .trim_start_matches("https://")
        .to_string();
    assert!(
        peer_handshake(&addr, p, "server").await,
        "a good peer refused"
    );
    assert!(
        !peer_handshake(&addr, p, "revoked").await,
        "a revoked peer kept"
    );
    assert!(
        !peer_handshake(&addr, p, "client").await,
        "a peer without the host name kept"
    );
    // The member logs a refusal after the client saw its connection end.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = c.members[0].log_text();
        if log.matches("rejected connection").count() >= 2 && log.to_lowercase().contains("revoked")
        {
            break;
        }
        assert!(Instant::now() < deadline, "refusals not logged:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.members[0].kill();
}

/// Runs `cairn` with `args` and expects it to refuse to start with
/// `message` on stderr.
fn refused_start(args: &[&str], message: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .args(args)
        .stdout(Stdio::null())
        .output()
        .expect("run cairn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} started");
    assert!(
        err.contains(message),
        "{args:?}: expected {message:?}, got: {err}"
    );
    assert!(
        !dir.path().join("d").join("member").exists(),
        "{args:?} left a data dir behind"
    );
}

#[test]
fn tls_settings_that_cannot_work_are_refused_at_start() {
    let port = common::free_port();
    let peer = common::free_port();
    let client_url = format!("https://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let base = [
        "--listen-client-urls",
        &client_url,
        "--advertise-client-urls",
        &client_url,
        "--listen-peer-urls",
        &peer_url,
        "--initial-advertise-peer-urls",
        &peer_url,
        "--initial-cluster",
        &format!("default={peer_url}"),
    ]
    .map(String::from);
    let with = |more: &[&str]| {
        let mut v: Vec<String> = base.to_vec();
        v.extend(more.iter().map(|s| s.to_string()));
        v
    };
    let run = |more: &[&str], msg: &str| refused_start(&strs(&with(more)), msg);
    run(
        &[],
        &format!(
            "TLS key/cert (--cert-file, --key-file) must be provided for client url {client_url} with HTTPS scheme"
        ),
    );
    let p = Pki::get();
    let s = p.pair("server");
    run(
        &[
            "--cert-file",
            &s.cert,
            "--key-file",
            &s.key,
            "--cipher-suites",
            "TLS_RSA_WITH_RC4_128_SHA",
        ],
        "is not supported",
    );
    run(
        &[
            "--cert-file",
            &s.cert,
            "--key-file",
            &s.key,
            "--tls-min-version",
            "TLS1.0",
        ],
        "TLS1.0 is not supported",
    );
    run(
        &["--cert-file", &s.cert, "--key-file", &p.pair("client").key],
        "certificate",
    );
    run(
        &["--cert-file", "/nonexistent/cert.pem", "--key-file", &s.key],
        "/nonexistent/cert.pem",
    );
    // A peer URL with https and no peer certificate.
    let tls_peer = format!("https://127.0.0.1:{peer}");
    refused_start(
        &[
            "--listen-peer-urls",
            &tls_peer,
            "--initial-advertise-peer-urls",
            &tls_peer,
            "--initial-cluster",
            &format!("default={tls_peer}"),
        ],
        &format!(
            "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url {tls_peer} with HTTPS scheme"
        ),
    );
}
