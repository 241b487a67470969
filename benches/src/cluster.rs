//! etcd or Cairn members as child processes on free 127.0.0.1 ports, each
//! with its own data dir under a temporary directory; killed and removed
//! on drop. Both run with their default durability (every commit
//! fsynced) and default Raft timings; only the log level is lowered.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{RangeRequest, StatusRequest};
use tonic::transport::Endpoint;

use crate::options::{Common, Consistency};

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum System {
    Etcd,
    Cairn,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Etcd => "etcd",
            System::Cairn => "cairn",
        }
    }
}

/// A port the OS reports free, not handed out before by this process.
pub fn free_port() -> Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .context("bind a free port")?
            .local_addr()
            .context("local addr")?
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
}

struct Member {
    args: Vec<String>,
    client: String,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running cluster of one system.
pub struct Cluster {
    pub system: System,
    bin: PathBuf,
    members: Vec<Member>,
    // Dropped last: the members' data dirs live in it.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` members of `system` from `bin` under `work` and waits
    /// until each serves a linearizable read.
    pub async fn start(system: System, bin: &Path, n: usize, work: &Path) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", system.name()))
            .tempdir_in(work)
            .context("temp dir")?;
        let mut urls = Vec::new();
        for i in 0..n {
            urls.push((
                format!("m{i}"),
                format!("http://127.0.0.1:{}", free_port()?),
                format!("http://127.0.0.1:{}", free_port()?),
            ));
        }
        let initial = urls
            .iter()
            .map(|(name, _, peer)| format!("{name}={peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let members = urls
            .iter()
            .map(|(name, client, peer)| {
                let data_dir = dir.path().join(name);
                let args = [
                    "--name",
                    name,
                    "--data-dir",
                    &data_dir.to_string_lossy(),
                    "--listen-client-urls",
                    client,
                    "--advertise-client-urls",
                    client,
                    "--listen-peer-urls",
                    peer,
                    "--initial-advertise-peer-urls",
                    peer,
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-state",
                    "new",
                    "--log-level",
                    "error",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                Member {
                    args,
                    client: client.trim_start_matches("http://").to_string(),
                    log: dir.path().join(format!("{name}.log")),
                    data_dir,
                    child: None,
                }
            })
            .collect();
        let mut c = Cluster {
            system,
            bin: bin.to_path_buf(),
            members,
            _dir: dir,
        };
        c.spawn_all()?;
        c.wait_ready(Duration::from_secs(60)).await?;
        Ok(c)
    }

    fn spawn_all(&mut self) -> Result<()> {
        for m in &mut self.members {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&m.log)
                .context("open member log")?;
            let child = Command::new(&self.bin)
                .args(&m.args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("start {}", self.bin.display()))?;
            m.child = Some(child);
        }
        Ok(())
    }

    /// Client endpoints (host:port).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    /// Client endpoints with the current leader's first (as members
    /// report it in Maintenance.Status; the plain order if none does). A
    /// load over one connection then talks to the leader, whichever
    /// member won the election, for etcd and Cairn alike.
    pub async fn leader_first_endpoints(&self) -> Vec<String> {
        let mut eps = self.endpoints();
        for (i, ep) in eps.iter().enumerate() {
            if let Some((id, leader)) = status(&format!("http://{ep}")).await {
                if id == leader {
                    let lead = eps.remove(i);
                    eps.insert(0, lead);
                    break;
                }
            }
        }
        eps
    }

    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref().map(|c| c.id()))
            .collect()
    }

    pub fn data_dirs(&self) -> Vec<PathBuf> {
        self.members.iter().map(|m| m.data_dir.clone()).collect()
    }

    /// A timed load against `endpoints` of this cluster, its members' CPU
    /// and disk measured: 8-byte keys drawn from 10,000, 256-byte values,
    /// linearizable reads.
    pub fn load(
        &self,
        endpoints: Vec<String>,
        clients: usize,
        conns: usize,
        duration: Duration,
    ) -> Common {
        Common {
            endpoints,
            conns,
            clients,
            total: 0,
            duration: Some(duration),
            rate: 0,
            key_size: 8,
            val_size: 256,
            key_space_size: 10_000,
            sequential_keys: false,
            consistency: Consistency::Linearizable,
            pids: self.pids(),
            data_dirs: self.data_dirs(),
            quiet: true,
            tls: Default::default(),
        }
    }

    /// Waits until every member answers a linearizable read.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.members.len() {
            let url = format!("http://{}", self.members[i].client);
            loop {
                if let Some(c) = self.members[i].child.as_mut() {
                    if let Ok(Some(status)) = c.try_wait() {
                        bail!(
                            "{} member {} exited ({status}); log: {}",
                            self.system.name(),
                            i,
                            self.members[i].log.display()
                        );
                    }
                }
                if ready(&url).await {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} member {i} not ready within {timeout:?}; log: {}",
                        self.system.name(),
                        self.members[i].log.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }

    /// Stops every member with SIGTERM (kill -9 after 60 s) and waits for
    /// them to exit.
    pub fn stop(&mut self) -> Result<()> {
        for m in &mut self.members {
            if let Some(c) = &m.child {
                let _ = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .status();
            }
        }
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    if c.try_wait().context("wait for member")?.is_some() {
                        break;
                    }
                    if Instant::now() > deadline {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        Ok(())
    }

    /// Stops the cluster, starts it again on the same data, and returns how
    /// long it took from the start until every member served a
    /// linearizable read.
    pub async fn restart(&mut self) -> Result<Duration> {
        self.stop()?;
        let t = Instant::now();
        self.spawn_all()?;
        self.wait_ready(Duration::from_secs(300)).await?;
        Ok(t.elapsed())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

async fn ready(url: &str) -> bool {
    let Ok(ep) = Endpoint::from_shared(url.to_string()) else {
        return false;
    };
    let Ok(ch) = ep
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
    else {
        return false;
    };
    KvClient::new(ch)
        .range(RangeRequest {
            key: b"ready".to_vec().into(),
            ..Default::default()
        })
        .await
        .is_ok()
}

/// (member id, leader id) from a member's Maintenance.Status.
async fn status(url: &str) -> Option<(u64, u64)> {
    let ch = Endpoint::from_shared(url.to_string())
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    let r = MaintenanceClient::new(ch)
        .status(StatusRequest {})
        .await
        .ok()?
        .into_inner();
    Some((r.header?.member_id, r.leader))
}

/// Finds `name` on PATH (or in /usr/bin).
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}
