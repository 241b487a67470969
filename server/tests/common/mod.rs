//! Test harness: real `cairn` (and etcd) processes on free 127.0.0.1
//! ports, with temporary data dirs; everything is killed and removed on
//! drop.

#![allow(dead_code)]

pub mod certs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn::proto::etcdserverpb::kv_client::KvClient;
use cairn::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn::proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest, StatusRequest};
use tonic::transport::Channel;

/// Whether clusters run with mutual TLS on both ports
/// (`CAIRN_TEST_TLS=1`; the test command runs the cluster tests so too).
pub fn tls_mode() -> bool {
    std::env::var_os("CAIRN_TEST_TLS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The flags of mutual TLS on both ports, with the test certificates.
pub fn tls_flags() -> Vec<String> {
    let p = certs::Pki::get();
    let s = p.pair("server");
    [
        "--cert-file",
        &s.cert,
        "--key-file",
        &s.key,
        "--trusted-ca-file",
        &p.ca(),
        "--client-cert-auth",
        "--peer-cert-file",
        &s.cert,
        "--peer-key-file",
        &s.key,
        "--peer-trusted-ca-file",
        &p.ca(),
        "--peer-client-cert-auth",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// etcdctl's flags to talk to a TLS cluster as the test client.
fn ctl_tls_flags() -> Vec<String> {
    let p = certs::Pki::get();
    let c = p.pair("client");
    vec![
        format!("--cacert={}", p.ca()),
        format!("--cert={}", c.cert),
        format!("--key={}", c.key),
    ]
}

/// A port the OS reports free and this test process has not handed out
/// before (members bind their ports only when they start).
pub fn free_port() -> u16 {
    cairn_bench::cluster::free_port().expect("a free port")
}

/// Finds a binary on PATH (or /usr/bin); the test command installs
/// etcd-server and etcd-client, so a missing one is a failure.
pub fn which(name: &str) -> PathBuf {
    cairn_bench::cluster::which(name).unwrap_or_else(|| {
        panic!("{name} not found: run scripts/test, which installs etcd-server and etcd-client")
    })
}

/// One `cairn` member process.
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub extra: Vec<String>,
    pub initial_cluster: String,
    pub state: &'static str,
    /// Started with this descriptor limit (`ulimit -n`).
    pub fd_limit: Option<u32>,
    child: Option<Child>,
}

impl Member {
    pub fn endpoint(&self) -> String {
        if self.client_url.starts_with("https://") {
            self.client_url.clone()
        } else {
            self.client_url.trim_start_matches("http://").to_string()
        }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        // With `fd_limit`, through a shell that lowers the descriptor
        // limit first.
        let mut cmd = match self.fd_limit {
            None => Command::new(env!("CARGO_BIN_EXE_cairn")),
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")])
                    .arg(env!("CARGO_BIN_EXE_cairn"));
                c
            }
        };
        let child = cmd
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", self.state])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start cairn");
        self.child = Some(child);
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (e.g. "STOP", "CONT") to the running process.
    pub fn signal(&self, signal: &str) {
        let c = self.child.as_ref().expect("running");
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &c.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{signal} {}", self.name);
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("{} did not stop on SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn channel(&self) -> Channel {
        let mut e = Channel::from_shared(self.client_url.clone())
            .expect("url")
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(20));
        if self.client_url.starts_with("https://") {
            use tonic::transport::{Certificate, ClientTlsConfig, Identity};
            let p = certs::Pki::get();
            let c = p.pair("client");
            let read = |f: &str| std::fs::read(f).expect("certificate file");
            e = e
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(read(&p.ca())))
                        .identity(Identity::from_pem(read(&c.cert), read(&c.key)))
                        .domain_name("127.0.0.1"),
                )
                .expect("TLS config");
        }
        e.connect_lazy()
    }

    pub async fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel().await)
    }

    /// (member id, leader id) from Maintenance.Status, if it answers.
    pub async fn status(&self) -> Option<(u64, u64)> {
        let mut m = MaintenanceClient::new(self.channel().await);
        let r = tokio::time::timeout(Duration::from_secs(2), m.status(StatusRequest {}))
            .await
            .ok()?
            .ok()?
            .into_inner();
        Some((r.header?.member_id, r.leader))
    }

    /// The last log index from Maintenance.Status (etcd's raft index).
    pub async fn raft_index(&self) -> u64 {
        let mut m = MaintenanceClient::new(self.channel().await);
        m.status(StatusRequest {})
            .await
            .expect("status")
            .into_inner()
            .raft_index
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of `cairn` processes sharing a temp dir.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: Vec<Member>,
    pub extra: Vec<String>,
}

impl Cluster {
    /// Starts `n` members (fast timeouts for tests unless `extra` says
    /// otherwise) and waits for a leader.
    pub async fn start(n: usize, extra: &[&str]) -> Cluster {
        let c = if tls_mode() {
            let mut all = tls_flags();
            all.extend(extra.iter().map(|s| s.to_string()));
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            Cluster::launch(n, &all, "https", "https")
        } else {
            Cluster::launch(n, extra, "http", "http")
        };
        c.wait_leader(Duration::from_secs(30)).await;
        c
    }

    /// Starts `n` members with client and peer URLs of the given schemes
    /// (`http`, `https`) and does not wait: a TLS cluster is waited for
    /// with etcdctl ([`Cluster::wait_ready_ctl`]).
    pub fn launch(n: usize, extra: &[&str], client: &str, peer: &str) -> Cluster {
        let mut c = Cluster::prepare(n, extra, client, peer);
        for m in &mut c.members {
            m.start();
        }
        c
    }

    /// [`Cluster::launch`] without starting anyone (their data dirs are
    /// made first, e.g. restored from a backup).
    pub fn prepare(n: usize, extra: &[&str], client: &str, peer: &str) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !extra.iter().any(|e| e == "--election-timeout") {
            extra.extend(["--heartbeat-interval".into(), "50".into()]);
            extra.extend(["--election-timeout".into(), "500".into()]);
        }
        let mut members: Vec<Member> = (0..n)
            .map(|i| {
                let name = format!("m{i}");
                Member {
                    client_url: format!("{client}://127.0.0.1:{}", free_port()),
                    peer_url: format!("{peer}://127.0.0.1:{}", free_port()),
                    data_dir: dir.path().join(&name),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    extra: extra.clone(),
                    initial_cluster: String::new(),
                    state: "new",
                    fd_limit: None,
                    child: None,
                }
            })
            .collect();
        let ic = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial_cluster = ic.clone();
        }
        Cluster {
            dir,
            members,
            extra,
        }
    }

    /// A new (not yet started) member joining with state `existing`.
    pub fn new_member(&mut self, name: &str, extra: &[&str]) -> usize {
        let scheme = if tls_mode() { "https" } else { "http" };
        self.new_member_with(name, extra, scheme, scheme)
    }

    /// [`Cluster::new_member`] with client and peer URL schemes.
    pub fn new_member_with(
        &mut self,
        name: &str,
        extra: &[&str],
        client: &str,
        peer: &str,
    ) -> usize {
        let peer_url = format!("{peer}://127.0.0.1:{}", free_port());
        let mut ic: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect();
        ic.push(format!("{name}={peer_url}"));
        let mut ex = self.extra.clone();
        ex.extend(extra.iter().map(|s| s.to_string()));
        self.members.push(Member {
            name: name.into(),
            client_url: format!("{client}://127.0.0.1:{}", free_port()),
            peer_url,
            data_dir: self.dir.path().join(name),
            log: self.dir.path().join(format!("{name}.log")),
            extra: ex,
            initial_cluster: ic.join(","),
            state: "existing",
            fd_limit: None,
            child: None,
        });
        self.members.len() - 1
    }

    /// Waits until etcdctl (with `tls` flags) gets every running member's
    /// status and all name the same leader; returns the leader's index.
    pub fn wait_ready_ctl(&self, tls: &[&str], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            let mut ids = Vec::new();
            for m in self.members.iter().filter(|m| m.child.is_some()) {
                let mut args = tls.to_vec();
                args.extend(["endpoint", "status", "-w", "json"]);
                let (ok, out, _) = etcdctl(&m.endpoint(), &args);
                let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
                let status = &v[0]["Status"];
                if ok {
                    leaders.push(status["leader"].as_u64().unwrap_or(0));
                    ids.push(status["header"]["member_id"].as_u64().unwrap_or(0));
                } else {
                    leaders.push(0);
                    ids.push(0);
                }
            }
            if let Some(&l) = leaders.first() {
                if l != 0 && leaders.iter().all(|x| *x == l) {
                    if let Some(i) = ids.iter().position(|id| *id == l) {
                        let running: Vec<usize> = (0..self.members.len())
                            .filter(|i| self.members[*i].child.is_some())
                            .collect();
                        return running[i];
                    }
                }
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("no agreed leader within {timeout:?}: {leaders:x?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.endpoint())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every running member reports the same leader; returns
    /// the leader's index in `members`.
    pub async fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            let mut ids = Vec::new();
            for m in &self.members {
                if m.child.is_none() {
                    continue;
                }
                match m.status().await {
                    Some((id, leader)) => {
                        ids.push(id);
                        leaders.push(leader);
                    }
                    None => leaders.push(0),
                }
            }
            if let Some(&l) = leaders.first() {
                if l != 0 && leaders.iter().all(|x| *x == l) {
                    if let Some(i) = self.index_of_id(l, &ids).await {
                        return i;
                    }
                }
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("no agreed leader within {timeout:?}: {leaders:x?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn index_of_id(&self, id: u64, _ids: &[u64]) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            if let Some((mid, _)) = m.status().await {
                if mid == id {
                    return Some(i);
                }
            }
        }
        None
    }

    pub fn dump_logs(&self) {
        for m in &self.members {
            let text = m.log_text();
            let tail: Vec<&str> = text.lines().rev().take(120).collect();
            eprintln!("==== {} ====", m.name);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// A process's resident memory in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// CPU time a process has used (user and system).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Runs `cairnutl` with `args`: (success, stdout, stderr).
pub fn cairnutl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cairnutl"))
        .args(args)
        .output()
        .expect("run cairnutl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs etcdctl (v3 API) against `endpoints`; returns (success, stdout, stderr).
pub fn etcdctl(endpoints: &str, args: &[&str]) -> (bool, String, String) {
    etcdctl_stdin(endpoints, args, None)
}

pub fn etcdctl_stdin(
    endpoints: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    use std::io::Write;
    let mut cmd = Command::new(etcdctl_bin());
    if tls_mode() {
        cmd.args(ctl_tls_flags());
    }
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=15s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run etcdctl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().expect("etcdctl output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// etcdctl that must succeed; returns stdout.
#[track_caller]
pub fn ctl(endpoints: &str, args: &[&str]) -> String {
    let (ok, out, err) = etcdctl(endpoints, args);
    assert!(ok, "etcdctl {args:?} failed: {err}{out}");
    out
}

/// Deletes `[key, end)` (`end` empty: the key alone); returns the revision.
pub async fn delete(kv: &mut KvClient<Channel>, key: &str, end: &str) -> i64 {
    kv.delete_range(DeleteRangeRequest {
        key: key.as_bytes().to_vec().into(),
        range_end: end.as_bytes().to_vec().into(),
        ..Default::default()
    })
    .await
    .expect("delete")
    .into_inner()
    .header
    .expect("header")
    .revision
}

/// The store revision, read from a (linearizable) range's header.
pub async fn head(kv: &mut KvClient<Channel>) -> i64 {
    kv.range(RangeRequest {
        key: b"\0".to_vec().into(),
        count_only: true,
        ..Default::default()
    })
    .await
    .expect("range")
    .into_inner()
    .header
    .expect("header")
    .revision
}

pub async fn put(kv: &mut KvClient<Channel>, k: &str, v: &str) -> i64 {
    kv.put(PutRequest {
        key: k.as_bytes().to_vec().into(),
        value: v.as_bytes().to_vec().into(),
        ..Default::default()
    })
    .await
    .expect("put")
    .into_inner()
    .header
    .expect("header")
    .revision
}

pub async fn get(kv: &mut KvClient<Channel>, k: &str) -> Option<String> {
    kv.range(RangeRequest {
        key: k.as_bytes().to_vec().into(),
        ..Default::default()
    })
    .await
    .expect("range")
    .into_inner()
    .kvs
    .first()
    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

/// The etcd binary the side-by-side tests compare with: Debian's etcd
/// 3.4 on PATH, or the one `CAIRN_REFERENCE_ETCD` names (etcd 3.5.1 from
/// `scripts/etcd-3.5`).
pub fn reference_etcd() -> PathBuf {
    named_or_found("CAIRN_REFERENCE_ETCD", "etcd")
}

/// The binary the environment variable `var` names, or `name` on PATH.
fn named_or_found(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| which(name), PathBuf::from)
}

/// The etcdctl the tests run: Debian's 3.4 on PATH, or the one
/// `CAIRN_ETCDCTL` names (etcdctl 3.5.1 beside `scripts/etcd-3.5`'s etcd).
pub fn etcdctl_bin() -> PathBuf {
    named_or_found("CAIRN_ETCDCTL", "etcdctl")
}

/// etcd 3.5.1, as `scripts/etcd-3.5` installs it (the test command runs
/// that first), for the cases where 3.4 and 3.5 differ.
pub fn etcd35() -> PathBuf {
    let p = std::env::var_os("CAIRN_ETCD35").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/etcd-3.5.1/etcd"),
        PathBuf::from,
    );
    assert!(
        p.is_file(),
        "{} not found: run scripts/etcd-3.5 (scripts/test does)",
        p.display()
    );
    p
}

/// A real etcd process (see `reference_etcd`), single member.
pub struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    pub client_url: String,
}

impl Etcd {
    pub fn start() -> Etcd {
        Etcd::start_bin(&reference_etcd())
    }

    /// A fresh single member of the etcd binary `bin`.
    pub fn start_bin(bin: &std::path::Path) -> Etcd {
        Etcd::start_bin_with(bin, &[])
    }

    /// The same, with more flags.
    pub fn start_bin_with(bin: &std::path::Path, flags: &[&str]) -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        Etcd::start_bin_in(bin, dir, "ref", &peer_url, flags)
    }

    /// etcd on the data dir `dir/data` (made there, or restored there
    /// by `etcdctl snapshot restore --name name` with this peer URL).
    pub fn start_in(dir: tempfile::TempDir, name: &str, peer_url: &str) -> Etcd {
        Etcd::start_bin_in(&reference_etcd(), dir, name, peer_url, &[])
    }

    fn start_bin_in(
        bin: &std::path::Path,
        dir: tempfile::TempDir,
        name: &str,
        peer_url: &str,
        flags: &[&str],
    ) -> Etcd {
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let child = Command::new(bin)
            .args(["--name", name, "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", peer_url])
            .args(["--initial-advertise-peer-urls", peer_url])
            .args(["--initial-cluster", &format!("{name}={peer_url}")])
            .args(["--log-level", "error"])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        Etcd {
            child,
            _dir: dir,
            client_url,
        }
    }

    /// The data dir.
    pub fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }

    /// Stops etcd (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// True once the process has exited (etcd 3.4.23 and 3.5.1 exit on
    /// some nested txns).
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    pub fn channel(&self) -> Channel {
        Channel::from_shared(self.client_url.clone())
            .expect("url")
            .connect_lazy()
    }

    pub async fn kv(&self) -> KvClient<Channel> {
        let mut kv = KvClient::new(self.channel());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = kv
                .range(RangeRequest {
                    key: b"probe".to_vec().into(),
                    ..Default::default()
                })
                .await;
            if r.is_ok() {
                return kv;
            }
            assert!(Instant::now() < deadline, "etcd did not come up: {r:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request: (status, body).
pub fn http(addr: &str, request: &str) -> (u16, String) {
    let (status, _, body) = http_full(addr, request);
    (status, body)
}

/// One HTTP/1.1 request: (status, headers with lower-case names, body).
pub fn http_full(addr: &str, request: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, headers, body)
}

/// A chunked HTTP/1.1 body's content (Go's servers chunk long answers).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .expect("a chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").expect("a chunk's end");
    }
    out
}

/// A GET of `path`: (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}
