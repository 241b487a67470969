//! A Cairn cluster under test: one real `cairn` process per member, each
//! in its own network namespace of a [`Net`], with its data dir in a
//! temporary directory and its log in the run's output directory. Members
//! can be killed (SIGKILL) and restarted on the same data, paused
//! (SIGSTOP) and resumed. Every process is killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{RangeRequest, StatusRequest};
use tonic::transport::{Channel, Endpoint};

use crate::net::Net;

/// How to start the members.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The `cairn` binary.
    pub bin: PathBuf,
    pub members: usize,
    /// Raft timings (etcd's flags), in milliseconds.
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// Where member logs go.
    pub log_dir: PathBuf,
}

/// Client port of every member (each has its own address).
pub const CLIENT_PORT: u16 = 2379;
/// Peer port of every member.
pub const PEER_PORT: u16 = 2380;

struct Member {
    args: Vec<String>,
    namespace: String,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// The running cluster.
pub struct Cluster {
    bin: PathBuf,
    members: Vec<Member>,
    endpoints: Vec<String>,
    // Dropped after the members (fields drop in order): data dirs, then
    // the network.
    _data: tempfile::TempDir,
    net: Net,
}

impl Cluster {
    /// Creates the network, starts every member and waits until each
    /// serves a linearizable read.
    pub async fn start(opts: &ClusterOptions) -> Result<Cluster> {
        let net = Net::create(opts.members)?;
        let data = tempfile::Builder::new()
            .prefix("cairn-jepsen-")
            .tempdir()
            .context("temp dir for data")?;
        std::fs::create_dir_all(&opts.log_dir).context("create log dir")?;
        let name = |i: usize| format!("n{}", i + 1);
        let initial = (0..opts.members)
            .map(|i| format!("{}=http://{}:{PEER_PORT}", name(i), net.addr(i)))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        let mut endpoints = Vec::new();
        for i in 0..opts.members {
            let addr = net.addr(i);
            let client = format!("http://{addr}:{CLIENT_PORT}");
            let peer = format!("http://{addr}:{PEER_PORT}");
            let data_dir = data.path().join(name(i));
            let args = vec![
                "--name".to_string(),
                name(i),
                "--data-dir".to_string(),
                data_dir.to_string_lossy().into_owned(),
                "--listen-client-urls".to_string(),
                client.clone(),
                "--advertise-client-urls".to_string(),
                client,
                "--listen-peer-urls".to_string(),
                peer.clone(),
                "--initial-advertise-peer-urls".to_string(),
                peer,
                "--initial-cluster".to_string(),
                initial.clone(),
                "--initial-cluster-state".to_string(),
                "new".to_string(),
                "--heartbeat-interval".to_string(),
                opts.heartbeat_ms.to_string(),
                "--election-timeout".to_string(),
                opts.election_ms.to_string(),
            ];
            members.push(Member {
                args,
                namespace: net.namespace(i),
                log: opts.log_dir.join(format!("{}.log", name(i))),
                child: None,
                paused: false,
            });
            endpoints.push(format!("{addr}:{CLIENT_PORT}"));
        }
        let mut cluster = Cluster {
            bin: opts.bin.clone(),
            members,
            endpoints,
            _data: data,
            net,
        };
        for i in 0..opts.members {
            cluster.spawn(i)?;
        }
        cluster.wait_ready(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn net(&self) -> &Net {
        &self.net
    }

    /// Client endpoints (ip:port), by member index.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Whether member `i` has a process (running or paused).
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        if m.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .with_context(|| format!("open {}", m.log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &m.namespace])
            .arg(&self.bin)
            .args(&m.args)
            .env(
                "RUST_LOG",
                std::env::var("CAIRN_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {} in {}", self.bin.display(), m.namespace))?;
        // `ip netns exec` execs the program: the pid is cairn's.
        m.child = Some(child);
        m.paused = false;
        Ok(())
    }

    fn signal(&self, i: usize, sig: &str) -> Result<()> {
        if let Some(c) = &self.members[i].child {
            crate::net::sh("kill", &[sig, &c.id().to_string()])?;
        }
        Ok(())
    }

    /// kill -9 of member `i`.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        if let Some(mut c) = m.child.take() {
            c.kill().context("kill member")?;
            c.wait().context("wait for killed member")?;
        }
        m.paused = false;
        Ok(())
    }

    /// Starts member `i` again on its data (no-op while it runs).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.spawn(i)
    }

    /// SIGSTOP of member `i`.
    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.signal(i, "-STOP")?;
        self.members[i].paused = true;
        Ok(())
    }

    /// SIGCONT of member `i`.
    pub fn resume(&mut self, i: usize) -> Result<()> {
        if self.members[i].paused {
            self.signal(i, "-CONT")?;
            self.members[i].paused = false;
        }
        Ok(())
    }

    /// Fails when a member's process exited on its own (a crash).
    pub fn check_alive(&mut self) -> Result<()> {
        for (i, m) in self.members.iter_mut().enumerate() {
            if let Some(c) = m.child.as_mut() {
                if let Some(status) = c.try_wait().context("poll member")? {
                    m.child = None;
                    bail!(
                        "member n{} exited on its own ({status}); log: {}",
                        i + 1,
                        m.log.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// The member that says it is the leader, asking each running member.
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() || self.members[i].paused {
                continue;
            }
            let Ok(ch) = channel(&self.endpoints[i], Duration::from_millis(500)) else {
                continue;
            };
            if let Ok(Ok(r)) = tokio::time::timeout(
                Duration::from_secs(1),
                MaintenanceClient::new(ch).status(StatusRequest {}),
            )
            .await
            {
                let r = r.into_inner();
                if r.header.map(|h| h.member_id) == Some(r.leader) && r.leader != 0 {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Waits until every running member answers a linearizable read.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            loop {
                self.check_alive()?;
                if ready(&self.endpoints[i]).await {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "member n{} not ready within {timeout:?}; log: {}",
                        i + 1,
                        self.members[i].log.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Log file of member `i`.
    pub fn log(&self, i: usize) -> &Path {
        &self.members[i].log
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            let _ = self.resume(i);
            let _ = self.kill(i);
        }
    }
}

/// A lazily connecting channel to `endpoint` (ip:port).
pub fn channel(endpoint: &str, connect_timeout: Duration) -> Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{endpoint}"))
        .context("endpoint")?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .connect_lazy())
}

async fn ready(endpoint: &str) -> bool {
    let Ok(ch) = channel(endpoint, Duration::from_millis(500)) else {
        return false;
    };
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            KvClient::new(ch).range(RangeRequest {
                key: b"ready".to_vec().into(),
                ..Default::default()
            }),
        )
        .await,
        Ok(Ok(_))
    )
}
