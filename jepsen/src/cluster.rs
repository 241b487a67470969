//! A Cairn cluster under test: one real `cairn` process per member, each
//! in its own network namespace of a [`Net`], with its data dir in a
//! temporary directory and its log in the run's output directory. Members
//! can be killed (SIGKILL) and restarted on the same data, paused
//! (SIGSTOP) and resumed, and replaced: removed from the cluster
//! (MemberRemove; the member stops itself and its data is wiped), then a
//! fresh member with a new name and id is added in its place
//! (MemberAdd, same address, `--initial-cluster-state existing`). Every
//! process is killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{
    self as pb, MemberAddRequest, MemberListRequest, MemberRemoveRequest, RangeRequest,
    StatusRequest,
};
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
    /// Entries between Raft snapshots (`--snapshot-count`; etcd's
    /// default if `None`). A fifth of it is kept behind each snapshot, so
    /// a member that falls further behind catches up from a snapshot.
    pub snapshot_count: Option<u64>,
    /// Where member logs go.
    pub log_dir: PathBuf,
}

/// Client port of every member (each has its own address).
pub const CLIENT_PORT: u16 = 2379;
/// Peer port of every member.
pub const PEER_PORT: u16 = 2380;

struct Member {
    client: String,
    name: String,
    peer: String,
    data_dir: PathBuf,
    /// `--initial-cluster` and `--initial-cluster-state` for its start.
    initial: (String, &'static str),
    namespace: String,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Being removed: its exit is expected.
    leaving: bool,
    /// Removed from the cluster and not replaced yet.
    removed: bool,
}

/// The running cluster.
pub struct Cluster {
    bin: PathBuf,
    heartbeat_ms: u64,
    election_ms: u64,
    snapshot_count: Option<u64>,
    replaced: usize,
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
            members.push(Member {
                client: format!("http://{addr}:{CLIENT_PORT}"),
                name: name(i),
                peer: format!("http://{addr}:{PEER_PORT}"),
                data_dir: data.path().join(name(i)),
                initial: (initial.clone(), "new"),
                namespace: net.namespace(i),
                log: opts.log_dir.join(format!("{}.log", name(i))),
                child: None,
                paused: false,
                leaving: false,
                removed: false,
            });
            endpoints.push(format!("{addr}:{CLIENT_PORT}"));
        }
        let mut cluster = Cluster {
            bin: opts.bin.clone(),
            heartbeat_ms: opts.heartbeat_ms,
            election_ms: opts.election_ms,
            snapshot_count: opts.snapshot_count,
            replaced: 0,
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

    /// The members' election timeout, in milliseconds.
    pub fn election_ms(&self) -> u64 {
        self.election_ms
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
        if m.child.is_some() || m.removed || m.leaving {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .with_context(|| format!("open {}", m.log.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &m.namespace])
            .arg(&self.bin)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client])
            .args(["--advertise-client-urls", &m.client])
            .args(["--listen-peer-urls", &m.peer])
            .args(["--initial-advertise-peer-urls", &m.peer])
            .args(["--initial-cluster", &m.initial.0])
            .args(["--initial-cluster-state", m.initial.1])
            .args(["--heartbeat-interval", &self.heartbeat_ms.to_string()])
            .args(["--election-timeout", &self.election_ms.to_string()]);
        if let Some(n) = self.snapshot_count {
            cmd.args(["--snapshot-count", &n.to_string()]).args([
                "--experimental-snapshot-catchup-entries",
                &(n / 5).max(1).to_string(),
            ]);
        }
        let child = cmd
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

    /// Starts removing member `i`: from now on its exit is expected.
    /// Returns the endpoints of the other members and its peer URL, for
    /// [`member_remove`] (which needs no access to the cluster, so that
    /// other faults can be healed while it waits for a quorum).
    pub fn begin_remove(&mut self, i: usize) -> (Vec<String>, String) {
        self.members[i].leaving = true;
        (self.others(i), self.members[i].peer.clone())
    }

    /// Once member `i` is out of the cluster: reaps its process (kill -9
    /// when paused, or when `force`: cut off from the others it may never
    /// learn it was removed) and wipes its data. Returns false while it is
    /// still running.
    pub fn reap_removed(&mut self, i: usize, force: bool) -> Result<bool> {
        let m = &mut self.members[i];
        if let Some(c) = m.child.as_mut() {
            if m.paused || force {
                c.kill().context("kill removed member")?;
            }
            if c.try_wait().context("wait for removed member")?.is_none() {
                if !(m.paused || force) {
                    return Ok(false);
                }
                c.wait().context("wait for removed member")?;
            }
        }
        m.child = None;
        m.paused = false;
        m.leaving = false;
        m.removed = true;
        // The next member at this address starts from nothing.
        if m.data_dir.exists() {
            std::fs::remove_dir_all(&m.data_dir).context("wipe removed member's data")?;
        }
        Ok(true)
    }

    /// Starts replacing removed member `i`: returns the endpoints of the
    /// other members, the peer URL and the new member's name, for
    /// [`member_add`]; None when `i` is not removed.
    pub fn begin_replace(&mut self, i: usize) -> Option<(Vec<String>, String, String)> {
        if !self.members[i].removed {
            return None;
        }
        self.replaced += 1;
        let name = format!("n{}r{}", i + 1, self.replaced);
        Some((self.others(i), self.members[i].peer.clone(), name))
    }

    /// Starts the new member `name` in slot `i`, with the cluster as
    /// `members` (from [`member_add`]) names it.
    pub fn finish_replace(&mut self, i: usize, name: String, members: &[pb::Member]) -> Result<()> {
        let peer = self.members[i].peer.clone();
        let initial = members
            .iter()
            .filter_map(|m| {
                let url = m.peer_ur_ls.first()?;
                let n = if *url == peer {
                    name.clone()
                } else if m.name.is_empty() {
                    format!("{:x}", m.id)
                } else {
                    m.name.clone()
                };
                Some(format!("{n}={url}"))
            })
            .collect::<Vec<_>>()
            .join(",");
        let m = &mut self.members[i];
        m.name = name;
        m.initial = (initial, "existing");
        m.removed = false;
        self.spawn(i)
    }

    /// Removes member `i` with exclusive access to the cluster.
    pub async fn remove(&mut self, i: usize) -> Result<()> {
        let (others, peer) = self.begin_remove(i);
        member_remove(&others, &peer).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.reap_removed(i, Instant::now() > deadline)? {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Replaces removed member `i` with exclusive access to the cluster.
    pub async fn replace(&mut self, i: usize) -> Result<()> {
        let Some((others, peer, name)) = self.begin_replace(i) else {
            return Ok(());
        };
        let members = member_add(&others, &peer).await?;
        self.finish_replace(i, name, &members)
    }

    fn others(&self, i: usize) -> Vec<String> {
        (0..self.len())
            .filter(|&j| j != i && self.is_running(j))
            .map(|j| self.endpoints[j].clone())
            .collect()
    }

    /// Whether member `i` is removed and not yet replaced.
    pub fn is_removed(&self, i: usize) -> bool {
        self.members[i].removed
    }

    /// Fails when a member's process exited on its own (a crash).
    pub fn check_alive(&mut self) -> Result<()> {
        for (i, m) in self.members.iter_mut().enumerate() {
            if m.leaving {
                continue;
            }
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

    /// Endpoints of the members that can answer now (running, not
    /// paused), by index, for [`leader_among`].
    pub fn answering(&self) -> Vec<(usize, String)> {
        (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some() && !self.members[i].paused)
            .map(|i| (i, self.endpoints[i].clone()))
            .collect()
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

    /// Data dir of member `i`.
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
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

/// Runs `call` against each of `endpoints` in turn until one succeeds
/// (5 s per attempt), going round again for up to 60 s.
async fn through_any<T, F, Fut>(endpoints: &[String], what: &str, mut call: F) -> Result<T>
where
    F: FnMut(ClusterClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for e in endpoints {
            let Ok(ch) = channel(e, Duration::from_millis(500)) else {
                continue;
            };
            if let Ok(Ok(v)) =
                tokio::time::timeout(Duration::from_secs(5), call(ClusterClient::new(ch))).await
            {
                return Ok(v);
            }
        }
        if Instant::now() > deadline {
            bail!("could not {what} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The member that says it is the leader, asking each of `members`
/// (index, endpoint) in turn.
pub async fn leader_among(members: &[(usize, String)]) -> Option<usize> {
    for (i, endpoint) in members {
        let Ok(ch) = channel(endpoint, Duration::from_millis(500)) else {
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
                return Some(*i);
            }
        }
    }
    None
}

/// Removes the member with peer URL `peer` through any of `endpoints`,
/// retrying until the member list no longer has it (a call that timed out
/// may still have taken effect, so each attempt looks first).
pub async fn member_remove(endpoints: &[String], peer: &str) -> Result<()> {
    through_any(
        endpoints,
        &format!("remove the member at {peer}"),
        |mut c| async move {
            let list = c
                .member_list(MemberListRequest { linearizable: true })
                .await?
                .into_inner();
            if let Some(id) = list
                .members
                .iter()
                .find(|m| m.peer_ur_ls.iter().any(|u| u == peer))
                .map(|m| m.id)
            {
                c.member_remove(MemberRemoveRequest { id }).await?;
            }
            Ok(())
        },
    )
    .await
}

/// Adds a voting member with peer URL `peer` through any of `endpoints`
/// and returns the member list (an earlier attempt that timed out may
/// have added it already: each attempt looks first).
pub async fn member_add(endpoints: &[String], peer: &str) -> Result<Vec<pb::Member>> {
    through_any(
        endpoints,
        &format!("add a member at {peer}"),
        |mut c| async move {
            let list = c
                .member_list(MemberListRequest { linearizable: true })
                .await?
                .into_inner();
            if list
                .members
                .iter()
                .any(|m| m.peer_ur_ls.iter().any(|u| u == peer))
            {
                return Ok(list.members);
            }
            let r = c
                .member_add(MemberAddRequest {
                    peer_ur_ls: vec![peer.to_string()],
                    is_learner: false,
                })
                .await?;
            Ok(r.into_inner().members)
        },
    )
    .await
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
