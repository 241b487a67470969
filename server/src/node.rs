//! A Cairn member: storage, Raft, the peer service, and the operations the
//! etcd API and the in-process [`crate::Client`] are built on.
//!
//! # Data directory
//!
//! ```text
//! <data-dir>/member/cluster   identity: cluster id, member id, name (JSON)
//! <data-dir>/member/wal/      the Raft log (cairn-raft-log)
//! <data-dir>/member/kv/       the MVCC store (cairn-kv over fjall)
//! <data-dir>/member/snap/     the current snapshot image and its meta
//! ```
//!
//! The identity file is written (durably, by rename) only once the member
//! has bootstrapped or joined, so a failed first start leaves nothing that
//! a second start would trust. A data dir that is not empty but has no
//! identity file is refused, never overwritten.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_kv::Store;
use cairn_proto::cairnpb::{self, peer_server::PeerServer};
use cairn_proto::etcdserverpb as pb;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::rt::WatchReceiver;
use openraft::{ChangeMembers, ReadPolicy, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::{Code, Status};

use crate::config::{host_port, ClusterState, Config, GRPC_OVERHEAD_BYTES};
use crate::forward::{
    ForwardHandler, ForwardRequest, ForwardResponse, MembershipChange, WireStatus,
};
use crate::raft::log_store::LogStore;
use crate::raft::network::{PeerService, Peers, MAX_PEER_MESSAGE};
use crate::raft::state_machine::StateMachine;
use crate::raft::{Command, CommandResponse, Member, Raft};
use crate::status::msg;

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("data dir {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("raft log: {0}")]
    Log(#[from] cairn_raft_log::Error),
    #[error("kv store: {0}")]
    Kv(#[from] cairn_kv::Error),
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot join the cluster: {0}")]
    Join(String),
}

/// The identity a member keeps in its data dir.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Identity {
    cluster_id: u64,
    member_id: u64,
    name: String,
}

/// The heartbeat interval handed to openraft: `--heartbeat-interval`, but
/// at least a quarter of the election timeout. openraft gives up on a
/// heartbeat after one heartbeat interval, and a leader none of whose
/// heartbeats is answered within an election timeout refuses writes and
/// linearizable reads; so with members further apart (in round trip) than
/// the heartbeat interval, an idle cluster would stop serving although
/// every message arrives. etcd keeps working there, so Cairn stretches
/// the interval instead: members up to a quarter election timeout apart
/// keep working (250 ms with etcd's defaults), and followers still hear
/// from the leader well within their shortest election timeout (half of
/// it). Commit indexes still reach followers at once: replication sends
/// them as soon as they move.
fn openraft_heartbeat(cfg: &Config) -> u64 {
    cfg.heartbeat_interval.max(cfg.election_timeout / 4)
}

/// How long a client request may wait for a leader or for its commit.
fn request_timeout(cfg: &Config) -> Duration {
    // etcd: 5 s plus twice the election timeout.
    Duration::from_millis(5000 + 2 * cfg.election_timeout)
}

/// A member id from its peer URLs and the cluster token (stable: every
/// member of a new cluster computes the same ids).
pub fn member_id(peer_urls: &[String], token: &str, salt: Option<u128>) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha256::new();
    h.update(urls.join(",").as_bytes());
    h.update(b"\0");
    h.update(token.as_bytes());
    if let Some(s) = salt {
        h.update(s.to_be_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b).max(1)
}

fn cluster_id(member_ids: &[u64], token: &str) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    h.update(token.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b).max(1)
}

/// A running member. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The last log index when this process started (see `read_index`).
    startup_last_log: u64,
    pub id: u64,
    pub cluster_id: u64,
    pub config: Config,
    pub raft: Raft,
    pub store: Arc<Store>,
    /// Applied events, for watches.
    pub events: crate::watch::EventSender,
    pub log: LogStore,
    pub peers: Peers,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
    /// Set once another member showed a newer membership without us.
    removed: AtomicBool,
    shutting_down: AtomicBool,
    /// When an AppendEntries from a current leader last arrived.
    leader_contact: Arc<Mutex<Option<Instant>>>,
    /// True once this member's name and client URLs are in the membership.
    ready: watch::Sender<bool>,
    /// Lease deadlines (the leader's).
    pub(crate) lessor: Arc<crate::lease::Lessor>,
    /// Ids for leases granted without one.
    pub(crate) lease_ids: crate::lease::IdGen,
    /// Proposes this member's clients' kv writes while it leads.
    proposer: crate::propose::Proposer,
}

/// Raft state as etcd's Status reports it.
#[derive(Clone, Debug, Default)]
pub struct RaftStatus {
    pub leader: u64,
    pub term: u64,
    pub raft_index: u64,
    pub applied_index: u64,
    pub is_learner: bool,
}

/// A member as etcd's Cluster API lists it.
#[derive(Clone, Debug)]
pub struct MemberInfo {
    pub id: u64,
    pub member: Member,
    pub is_learner: bool,
}

impl Node {
    /// Starts a member: opens (or creates) its data dir, bootstraps or
    /// joins the cluster, and starts the peer service if it has peer URLs
    /// to listen on.
    pub async fn start(config: Config) -> Result<Node, StartError> {
        config.validate().map_err(StartError::Config)?;
        let member_dir = config.data_dir.join("member");
        let identity_path = member_dir.join("cluster");
        let existing = read_identity(&config.data_dir, &identity_path)?;
        if let Some(idt) = &existing {
            if idt.name != config.name {
                return Err(StartError::DataDir {
                    path: config.data_dir.clone(),
                    reason: format!(
                        "belongs to member {:?} (id {:x}) of cluster {:x}, not to {:?}",
                        idt.name, idt.member_id, idt.cluster_id, config.name
                    ),
                });
            }
        }
        let bootstrap_members: Option<BTreeMap<u64, Member>>;
        let identity = match existing {
            Some(idt) => {
                bootstrap_members = None;
                idt
            }
            None => match config.initial_cluster_state {
                ClusterState::New => {
                    let mut members = BTreeMap::new();
                    // Every initial member must propose exactly the same
                    // membership, so client URLs start empty; each member
                    // publishes its own once a leader is elected.
                    for (name, urls) in &config.initial_cluster {
                        let id = member_id(urls, &config.initial_cluster_token, None);
                        members.insert(
                            id,
                            Member {
                                name: name.clone(),
                                peer_urls: urls.clone(),
                                client_urls: Vec::new(),
                                learner: false,
                            },
                        );
                    }
                    let ids: Vec<u64> = members.keys().copied().collect();
                    let me = member_id(
                        &config.initial_advertise_peer_urls,
                        &config.initial_cluster_token,
                        None,
                    );
                    bootstrap_members = Some(members);
                    Identity {
                        cluster_id: cluster_id(&ids, &config.initial_cluster_token),
                        member_id: me,
                        name: config.name.clone(),
                    }
                }
                ClusterState::Existing => {
                    bootstrap_members = None;
                    join_identity(&config).await?
                }
            },
        };

        std::fs::create_dir_all(&member_dir)?;
        let log = LogStore::open(&member_dir.join("wal"))?;
        let store = Arc::new(Store::open_path(member_dir.join("kv"))?);
        let (events, _) = tokio::sync::broadcast::channel(crate::watch::BROADCAST_REVISIONS);
        let lessor = Arc::new(crate::lease::Lessor::default());
        let sm = StateMachine::new(Arc::clone(&store), &member_dir.join("snap"))?
            .with_events(events.clone())
            .with_lessor(Arc::clone(&lessor));

        let raft_config = openraft::Config {
            cluster_name: config.initial_cluster_token.clone(),
            heartbeat_interval: openraft_heartbeat(&config),
            // Followers time out after [et/2, et); openraft's leader lease
            // is the maximum, so a dead leader is replaced within about
            // one to two election timeouts.
            election_timeout_min: config.election_timeout / 2,
            election_timeout_max: config.election_timeout,
            install_snapshot_timeout: 10_000.max(config.election_timeout * 4),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count.max(1)),
            // etcd keeps this many entries after a snapshot so a slightly
            // lagging follower catches up from the log.
            max_in_snapshot_log_to_keep: config.snapshot_catchup_entries,
            max_payload_entries: 1000,
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;

        let peers = Peers::new(identity.cluster_id)
            .with_rpc_timeout_floor(Duration::from_millis(config.election_timeout));
        let raft = Raft::new(
            identity.member_id,
            Arc::new(raft_config),
            peers.clone(),
            log.clone(),
            sm,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;

        // Everything in the log at startup may have been committed and
        // acknowledged before a crash, while the committed index read back
        // can be older. A member that resumes leadership of its old term
        // (openraft restores it without an election) must not answer a
        // linearizable read below this.
        let startup_last_log = log.raft_log().last_log_id().map_or(0, |l| l.index);
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            startup_last_log,
            id: identity.member_id,
            cluster_id: identity.cluster_id,
            config: config.clone(),
            raft: raft.clone(),
            store,
            events,
            log,
            peers,
            tasks: Mutex::new(Vec::new()),
            stop,
            removed: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            leader_contact: Arc::default(),
            ready: watch::channel(false).0,
            lessor,
            lease_ids: crate::lease::IdGen::new(identity.member_id),
            proposer: crate::propose::Proposer::new(raft.clone()),
        });

        // Peer service first, so the others can reach us while we bootstrap.
        for url in &config.listen_peer_urls {
            let addr = resolve(url).await?;
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                StartError::Config(format!("listen-peer-urls {url}: cannot bind: {e}"))
            })?;
            let svc = PeerService {
                cluster_id: identity.cluster_id,
                leader_contact: Arc::clone(&inner.leader_contact),
                raft: raft.clone(),
                snap_dir: member_dir.join("snap"),
                forward: Arc::clone(&inner) as Arc<dyn ForwardHandler>,
                stop: inner.stop.subscribe(),
            };
            let server = PeerServer::new(svc)
                .max_decoding_message_size(MAX_PEER_MESSAGE)
                .max_encoding_message_size(MAX_PEER_MESSAGE);
            let mut stop_rx = inner.stop.subscribe();
            // Append connections are served beside gRPC on the same port.
            let (incoming, accept_task) = crate::raft::append_wire::incoming(
                listener,
                crate::raft::append_wire::FollowerSide {
                    cluster_id: identity.cluster_id,
                    raft: raft.clone(),
                    leader_contact: Arc::clone(&inner.leader_contact),
                    stop: inner.stop.subscribe(),
                },
            );
            inner.push_task(accept_task);
            let task = tokio::spawn(async move {
                let r = tonic::transport::Server::builder()
                    .add_service(server)
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = stop_rx.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "peer server failed");
                }
            });
            inner.push_task(task);
        }

        if let Some(members) = bootstrap_members {
            if !raft
                .is_initialized()
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?
            {
                // Every initial member proposes the same membership; openraft
                // accepts it once and elects a leader among them.
                match raft.initialize(members).await {
                    Ok(()) => {}
                    Err(RaftError::APIError(e)) => {
                        tracing::debug!(error = %e, "already initialized");
                    }
                    Err(e) => return Err(StartError::Raft(e.to_string())),
                }
            }
        }
        write_identity(&identity_path, &identity)?;

        inner.spawn_background();
        tracing::info!(
            name = %config.name,
            member_id = %format!("{:x}", inner.id),
            cluster_id = %format!("{:x}", inner.cluster_id),
            "member started"
        );
        Ok(Node { inner })
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> u64 {
        self.inner.cluster_id
    }

    /// The member's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A typed in-process client (no gRPC).
    pub fn client(&self) -> crate::Client {
        crate::Client::new(self.clone())
    }

    /// Waits until the cluster has a leader, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, Status> {
        match self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "leader")
            .await
        {
            Ok(m) => Ok(m.current_leader.unwrap_or(0)),
            Err(_) => Err(Status::unavailable(msg::NO_LEADER)),
        }
    }

    /// Stops the member: hands leadership to another voter if it leads,
    /// stops Raft and the peer service, and flushes the store.
    pub async fn shutdown(&self) {
        self.inner.shutdown().await;
    }

    /// Waits until this member has published its name and client URLs to
    /// the cluster (which needs a quorum), as etcd does before it serves
    /// clients.
    pub async fn wait_ready(&self) {
        let mut rx = self.inner.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// True once this member has been removed from the cluster.
    pub fn is_removed(&self) -> bool {
        self.inner.is_removed()
    }
}

/// The address to bind for `url`; IPv4 first, so `localhost` means
/// 127.0.0.1 as it does for etcd.
pub(crate) async fn resolve(url: &str) -> Result<SocketAddr, StartError> {
    let hp = host_port(url);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(hp)
        .await
        .map_err(|e| StartError::Config(format!("cannot resolve {url}: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| StartError::Config(format!("cannot resolve {url}")))
}

fn read_identity(data_dir: &Path, path: &Path) -> Result<Option<Identity>, StartError> {
    match std::fs::read(path) {
        Ok(raw) => serde_json::from_slice(&raw)
            .map(Some)
            .map_err(|e| StartError::DataDir {
                path: data_dir.to_path_buf(),
                reason: format!("unreadable identity file {}: {e}", path.display()),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let non_empty = match std::fs::read_dir(data_dir) {
                Ok(mut it) => it.next().is_some(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(e.into()),
            };
            if non_empty {
                return Err(StartError::DataDir {
                    path: data_dir.to_path_buf(),
                    reason: "is not empty and holds no Cairn member; refusing to overwrite it"
                        .into(),
                });
            }
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn write_identity(path: &Path, idt: &Identity) -> Result<(), StartError> {
    if path.exists() {
        return Ok(());
    }
    let raw = serde_json::to_vec_pretty(idt).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&raw)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// For `--initial-cluster-state existing`: asks the other members listed in
/// `--initial-cluster` for the cluster id and finds this member (added
/// beforehand with MemberAdd) by its peer URLs.
async fn join_identity(config: &Config) -> Result<Identity, StartError> {
    let peers = Peers::new(0);
    let mut mine = config.initial_advertise_peer_urls.clone();
    mine.sort();
    let others: Vec<&String> = config
        .initial_cluster
        .iter()
        .filter(|(n, _)| n != &config.name)
        .flat_map(|(_, urls)| urls)
        .collect();
    if others.is_empty() {
        return Err(StartError::Join(
            "--initial-cluster lists no other member to join".into(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last_err = String::new();
    while Instant::now() < deadline {
        for url in &others {
            match peers.forward(url, ForwardRequest::ClusterInfo).await {
                Ok(ForwardResponse::ClusterInfo {
                    cluster_id,
                    members,
                    ..
                }) => {
                    for (id, m) in members {
                        let mut theirs = m.peer_urls.clone();
                        theirs.sort();
                        if theirs == mine {
                            return Ok(Identity {
                                cluster_id,
                                member_id: id,
                                name: config.name.clone(),
                            });
                        }
                    }
                    return Err(StartError::Join(format!(
                        "no member of cluster {cluster_id:x} has peer URLs {}; add it with MemberAdd first",
                        mine.join(",")
                    )));
                }
                Ok(other) => last_err = format!("{url}: unexpected answer {other:?}"),
                Err(e) => last_err = format!("{url}: {}", e.message()),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(StartError::Join(format!("no member answered: {last_err}")))
}

impl Inner {
    fn push_task(&self, t: JoinHandle<()>) {
        if let Ok(mut v) = self.tasks.lock() {
            v.push(t);
        }
    }

    pub fn timeout(&self) -> Duration {
        request_timeout(&self.config)
    }

    /// The gRPC receive limit for client requests.
    pub fn max_recv_bytes(&self) -> usize {
        self.config.max_request_bytes + GRPC_OVERHEAD_BYTES
    }

    fn membership_index(&self) -> u64 {
        let m = self.raft.metrics().borrow_watched().clone();
        m.membership_config.log_id().map(|l| l.index).unwrap_or(0)
    }

    pub fn is_removed(&self) -> bool {
        if self.removed.load(Ordering::Relaxed) {
            return true;
        }
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        membership.get_node(&self.id).is_none() && m.membership_config.log_id().is_some()
    }

    /// The leader, if this member is in touch with one: a leader that a
    /// quorum acknowledged within an election timeout, or for a follower,
    /// a leader heard from within an election timeout. (openraft keeps a
    /// follower's last leader in view while it fails to elect a new one,
    /// so the leader id alone does not say the cluster has a leader.)
    pub fn leader(&self) -> Option<u64> {
        let m = self.raft.metrics().borrow_watched().clone();
        let leader = m.current_leader?;
        let window = Duration::from_millis(self.config.election_timeout);
        if leader == self.id {
            if m.membership_config.membership().voter_ids().count() <= 1 {
                return Some(leader);
            }
            let acked = m.last_quorum_acked?;
            return (openraft::rt::Instant::elapsed(&*acked) < window).then_some(leader);
        }
        let last = self.leader_contact.lock().ok().and_then(|t| *t)?;
        (last.elapsed() < window).then_some(leader)
    }

    pub fn raft_status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let is_voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == self.id);
        RaftStatus {
            leader: self.leader().unwrap_or(0),
            term: m.current_term,
            raft_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            is_learner: !is_voter,
        }
    }

    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.id,
            revision,
            raft_term: self.raft.metrics().borrow_watched().current_term,
        }
    }

    pub fn members(&self) -> Vec<MemberInfo> {
        let config = self
            .raft
            .server_metrics()
            .borrow_watched()
            .membership_config
            .clone();
        let membership = config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, member)| MemberInfo {
                id: *id,
                member: member.clone(),
                is_learner: !voters.contains(id) && member.learner,
            })
            .collect()
    }

    /// Waits (up to the request timeout) until this member's view of the
    /// membership satisfies `done`: a change forwarded to the leader is
    /// committed before this member has the entry, and etcd answers a
    /// membership change with the list that includes it.
    pub async fn wait_members(&self, done: impl Fn(&[MemberInfo]) -> bool) {
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut rx = self.raft.server_metrics();
        while !done(&self.members()) {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }

    /// Fails with etcd's `no leader` unless a leader is known.
    pub fn require_leader(&self) -> Result<(), Status> {
        if self.leader().is_some() {
            Ok(())
        } else {
            Err(Status::unavailable(msg::NO_LEADER))
        }
    }

    async fn wait_leader(&self, deadline: Instant) -> Result<(u64, Member), Status> {
        let mut rx = self.raft.metrics();
        loop {
            {
                let m = rx.borrow_and_update();
                if let Some(l) = m.current_leader {
                    if let Some(node) = m.membership_config.membership().get_node(&l) {
                        return Ok((l, node.clone()));
                    }
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Status::unavailable(msg::NO_LEADER));
            }
            if tokio::time::timeout(left, rx.changed()).await.is_err() {
                return Err(Status::unavailable(msg::NO_LEADER));
            }
        }
    }

    /// Replicates `cmd` and answers what applying it produced, forwarding
    /// to the leader if this member is not it.
    pub async fn write(&self, cmd: cairnpb::Command) -> Result<cairnpb::CommandResponse, Status> {
        let deadline = Instant::now() + self.timeout();
        loop {
            let local = if !crate::propose::batchable(&cmd) {
                self.write_local(cmd.clone(), deadline).await
            } else if self.raft.metrics().borrow_watched().current_leader == Some(self.id) {
                self.proposer.propose(cmd.clone(), deadline).await
            } else {
                // Not the leader as far as this member knows: forward.
                Ok(None)
            };
            match local {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            let (leader, node) = self.wait_leader(deadline).await?;
            if leader != self.id {
                let url = node
                    .peer_urls
                    .first()
                    .ok_or_else(|| Status::unavailable(msg::NO_LEADER))?;
                match self
                    .peers
                    .forward(
                        url,
                        ForwardRequest::Write(crate::raft::Command(cmd.clone())),
                    )
                    .await
                {
                    Ok(ForwardResponse::Write(r)) => return Ok(r.0),
                    Ok(ForwardResponse::Error(e)) => return Err(e.into()),
                    Ok(ForwardResponse::NotLeader) => {}
                    Ok(other) => {
                        return Err(Status::internal(format!("unexpected answer {other:?}")))
                    }
                    Err(e) if is_connect_error(&e) => {}
                    // The leader may or may not have applied it.
                    Err(_) => return Err(Status::unavailable(msg::LEADER_CHANGED)),
                }
            }
            if Instant::now() >= deadline {
                return Err(Status::unavailable(msg::TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `req` to the leader. `Ok(None)`: no answer worth keeping (this
    /// member is the leader, the leader moved, or it could not be reached);
    /// the caller may try again.
    pub(crate) async fn ask_leader(
        &self,
        req: ForwardRequest,
        deadline: Instant,
    ) -> Result<Option<ForwardResponse>, Status> {
        let (leader, node) = self.wait_leader(deadline).await?;
        if leader == self.id {
            return Ok(None);
        }
        let url = node
            .peer_urls
            .first()
            .ok_or_else(|| Status::unavailable(msg::NO_LEADER))?;
        match self.peers.forward(url, req).await {
            Ok(ForwardResponse::NotLeader) | Err(_) => Ok(None),
            Ok(r) => Ok(Some(r)),
        }
    }

    /// Proposes on this member. `Ok(None)`: not the leader, nothing was
    /// proposed.
    pub(crate) async fn write_local(
        &self,
        cmd: cairnpb::Command,
        deadline: Instant,
    ) -> Result<Option<cairnpb::CommandResponse>, Status> {
        crate::propose::propose(&self.raft, cmd, deadline).await
    }

    /// The read index as leader: openraft's (leadership confirmed by a
    /// quorum), but never below the log this process started with, which
    /// may hold acknowledged writes that openraft does not yet know to be
    /// committed. (Capped at the current last index: a log that was cut
    /// since lost only entries that were never committed.) Fails with an
    /// API error on a follower.
    async fn local_read_index(
        &self,
    ) -> Result<
        u64,
        RaftError<
            crate::raft::TypeConfig,
            openraft::error::LinearizableReadError<crate::raft::TypeConfig>,
        >,
    > {
        let r = self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await?;
        let last = self.log.raft_log().last_log_id().map_or(0, |l| l.index);
        Ok(r.index().max(self.startup_last_log.min(last)))
    }

    /// Waits until this member's state reflects every write committed
    /// before the call (etcd's linearizable read).
    pub async fn read_barrier(&self) -> Result<(), Status> {
        let deadline = Instant::now() + self.timeout();
        loop {
            let index = match self.local_read_index().await {
                Ok(r) => Some(r),
                Err(RaftError::APIError(_)) => None,
                Err(e) => return Err(Status::unavailable(format!("etcdserver: {e}"))),
            };
            let index = match index {
                Some(i) => i,
                None => {
                    let (leader, node) = self.wait_leader(deadline).await?;
                    if leader == self.id {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    let url = node
                        .peer_urls
                        .first()
                        .ok_or_else(|| Status::unavailable(msg::NO_LEADER))?;
                    match self.peers.forward(url, ForwardRequest::ReadIndex).await {
                        Ok(ForwardResponse::ReadIndex(i)) => i,
                        Ok(ForwardResponse::Error(e)) => return Err(e.into()),
                        Ok(_) | Err(_) => {
                            if Instant::now() >= deadline {
                                return Err(Status::unavailable(msg::TIMEOUT));
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            return self
                .raft
                .wait(Some(left))
                .applied_index_at_least(Some(index), "linearizable read")
                .await
                .map(|_| ())
                .map_err(|_| Status::unavailable(msg::TIMEOUT));
        }
    }

    /// Carries out a membership change on the leader (forwarding if this
    /// member is not it).
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), Status> {
        let deadline = Instant::now() + self.timeout();
        loop {
            let (leader, node) = self.wait_leader(deadline).await?;
            if leader == self.id {
                match self.change_local(change.clone()).await {
                    Ok(Some(())) => return Ok(()),
                    Ok(None) => {}
                    Err(e) => return Err(e),
                }
            } else {
                let url = node
                    .peer_urls
                    .first()
                    .ok_or_else(|| Status::unavailable(msg::NO_LEADER))?;
                match self
                    .peers
                    .forward(url, ForwardRequest::Membership(change.clone()))
                    .await
                {
                    Ok(ForwardResponse::Membership) => return Ok(()),
                    Ok(ForwardResponse::Error(e)) => return Err(e.into()),
                    Ok(_) => {}
                    Err(e) if is_connect_error(&e) => {}
                    Err(_) => return Err(Status::unavailable(msg::LEADER_CHANGED)),
                }
            }
            if Instant::now() >= deadline {
                return Err(Status::unavailable(msg::TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `Ok(None)`: not the leader.
    async fn change_local(&self, change: MembershipChange) -> Result<Option<()>, Status> {
        let members = self.members();
        let voters: BTreeSet<u64> = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        let find = |id: u64| members.iter().find(|m| m.id == id).cloned();
        let url_taken = |urls: &[String], except: u64| {
            members
                .iter()
                .filter(|m| m.id != except)
                .any(|m| m.member.peer_urls.iter().any(|u| urls.contains(u)))
        };
        let result = match change {
            MembershipChange::Add { id, member } => {
                if url_taken(&member.peer_urls, 0) {
                    return Err(Status::failed_precondition(
                        "etcdserver: Peer URLs already exists",
                    ));
                }
                // etcd allows one learner at a time.
                if member.learner && members.iter().any(|m| m.is_learner) {
                    return Err(Status::failed_precondition(
                        "etcdserver: too many learner members in cluster",
                    ));
                }
                self.raft.add_learner(id, member, false).await.map(|_| ())
            }
            MembershipChange::Remove { id } => {
                if find(id).is_none() {
                    return Err(Status::not_found("etcdserver: member not found"));
                }
                if voters.contains(&id) {
                    if voters.len() == 1 {
                        return Err(Status::failed_precondition(
                            "etcdserver: re-configuration failed due to not enough started members",
                        ));
                    }
                    // retain=false: the removed voter is not kept as a learner.
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters([id].into()), false)
                        .await
                        .map(|_| ())
                } else {
                    self.raft
                        .change_membership(ChangeMembers::RemoveNodes([id].into()), false)
                        .await
                        .map(|_| ())
                }
            }
            MembershipChange::Promote { id } => {
                let Some(m) = find(id) else {
                    return Err(Status::not_found("etcdserver: member not found"));
                };
                if voters.contains(&id) {
                    return Err(Status::failed_precondition(
                        "etcdserver: can only promote a learner member",
                    ));
                }
                if !self.caught_up(id) {
                    return Err(Status::failed_precondition(
                        "etcdserver: can only promote a learner member which is in sync with leader",
                    ));
                }
                // A voter is listed as a voter whatever its `learner` flag
                // says, so only the voter set changes.
                let _ = m;
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds([id].into()), true)
                    .await
                    .map(|_| ())
            }
            MembershipChange::UpdatePeerUrls { id, peer_urls } => {
                let Some(m) = find(id) else {
                    return Err(Status::not_found("etcdserver: member not found"));
                };
                if url_taken(&peer_urls, id) {
                    return Err(Status::failed_precondition(
                        "etcdserver: Peer URLs already exists",
                    ));
                }
                let mut member = m.member;
                member.peer_urls = peer_urls;
                self.raft
                    .change_membership(ChangeMembers::SetNodes([(id, member)].into()), true)
                    .await
                    .map(|_| ())
            }
            MembershipChange::Publish {
                id,
                name,
                client_urls,
            } => {
                let Some(m) = find(id) else {
                    return Err(Status::not_found("etcdserver: member not found"));
                };
                let mut member = m.member;
                member.name = name;
                member.client_urls = client_urls;
                self.raft
                    .change_membership(ChangeMembers::SetNodes([(id, member)].into()), true)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(Some(())),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Ok(None),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(Status::failed_precondition(format!("etcdserver: {e}")))
            }
            Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                Err(Status::unavailable(msg::LEADER_CHANGED))
            }
            Err(e) => Err(Status::unavailable(format!("etcdserver: {e}"))),
        }
    }

    /// Whether the leader has replicated at least 90% of its log to `id`
    /// (etcd's readiness rule for promoting a learner).
    fn caught_up(&self, id: u64) -> bool {
        let m = self.raft.metrics().borrow_watched().clone();
        let last = m.last_log_index.unwrap_or(0);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned())
            .flatten()
            .map(|l| l.index)
            .unwrap_or(0);
        matched as f64 >= last as f64 * 0.9
    }

    fn spawn_background(self: &Arc<Self>) {
        let t = tokio::spawn(Arc::clone(self).run_lessor(self.stop.subscribe()));
        self.push_task(t);

        // Leader: promote members added as voters once they caught up.
        let me = Arc::clone(self);
        let mut stop = self.stop.subscribe();
        let t = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                if me.raft.metrics().borrow_watched().state != ServerState::Leader {
                    continue;
                }
                let voters: BTreeSet<u64> = me
                    .raft
                    .metrics()
                    .borrow_watched()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect();
                for m in me.members() {
                    if !voters.contains(&m.id) && !m.member.learner && me.caught_up(m.id) {
                        tracing::info!(member = %format!("{:x}", m.id), "promoting caught-up member to voter");
                        if let Err(e) = me
                            .raft
                            .change_membership(ChangeMembers::AddVoterIds([m.id].into()), true)
                            .await
                        {
                            tracing::warn!(error = %e, "promotion failed");
                        }
                    }
                }
            }
        });
        self.push_task(t);

        // Every member: keep peer URLs current as the membership changes.
        let me = Arc::clone(self);
        let mut stop = self.stop.subscribe();
        let t = tokio::spawn(async move {
            // Server metrics change with the membership, not with every write.
            let mut rx = me.raft.server_metrics();
            loop {
                {
                    let membership = rx.borrow_watched().membership_config.clone();
                    me.peers.update_urls(membership.membership().nodes());
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    r = rx.changed() => if r.is_err() { return },
                }
            }
        });
        self.push_task(t);

        // Every follower: ask another member now and then whether we were
        // removed. A removed member hears from no leader again, and
        // openraft keeps its last leader in view while its pre-votes fail,
        // so it cannot tell by itself.
        let me = Arc::clone(self);
        let mut stop = self.stop.subscribe();
        let t = tokio::spawn(async move {
            let every = Duration::from_millis((me.config.election_timeout * 2).max(1000));
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if me.leader() == Some(me.id) {
                    continue;
                }
                let mine = me.membership_index();
                let mut others: Vec<MemberInfo> =
                    me.members().into_iter().filter(|m| m.id != me.id).collect();
                // The leader first: it has the newest membership.
                let leader = me.leader();
                others.sort_by_key(|m| Some(m.id) != leader);
                for m in others {
                    let Some(url) = m.member.peer_urls.first() else {
                        continue;
                    };
                    if let Ok(ForwardResponse::ClusterInfo {
                        members,
                        membership_index,
                        ..
                    }) = me.peers.forward(url, ForwardRequest::ClusterInfo).await
                    {
                        if membership_index > mine && !members.iter().any(|(id, _)| *id == me.id) {
                            tracing::warn!("this member has been removed from the cluster");
                            me.removed.store(true, Ordering::Relaxed);
                            return;
                        }
                        break;
                    }
                }
            }
        });
        self.push_task(t);

        // Every member: publish name and client URLs (etcd's publish).
        let me = Arc::clone(self);
        let mut stop = self.stop.subscribe();
        let t = tokio::spawn(async move {
            loop {
                let published = me.members().iter().find(|m| m.id == me.id).map(|m| {
                    m.member.client_urls == me.config.advertise_client_urls
                        && m.member.name == me.config.name
                });
                if published == Some(true) {
                    me.ready.send_replace(true);
                    return;
                }
                if published.is_some() {
                    let change = MembershipChange::Publish {
                        id: me.id,
                        name: me.config.name.clone(),
                        client_urls: me.config.advertise_client_urls.clone(),
                    };
                    match me.change_membership(change).await {
                        Ok(()) => {
                            me.ready.send_replace(true);
                            return;
                        }
                        Err(e) => tracing::debug!(error = %e, "publish failed; will retry"),
                    }
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        });
        self.push_task(t);
    }

    async fn shutdown(&self) {
        if self.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        // The peer service keeps running during the handoff: the new
        // leader must reach this member to tell it about the new term.
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state == ServerState::Leader {
            let target = m
                .membership_config
                .membership()
                .voter_ids()
                .filter(|v| *v != self.id)
                .max_by_key(|v| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(v).cloned())
                        .flatten()
                        .map(|l| l.index)
                });
            if let Some(to) = target {
                tracing::info!(to = %format!("{to:x}"), "handing leadership over before stopping");
                if self.raft.trigger().transfer_leader(to).await.is_ok() {
                    let me = self.id;
                    let _ = self
                        .raft
                        .wait(Some(Duration::from_millis(
                            self.config.election_timeout * 2,
                        )))
                        .metrics(
                            move |m| m.current_leader.is_some_and(|l| l != me),
                            "leadership handed over",
                        )
                        .await;
                }
            }
        }
        self.stop.send_replace(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let tasks: Vec<JoinHandle<()>> = match self.tasks.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => Vec::new(),
        };
        for t in tasks {
            let _ = t.await;
        }
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "flushing the store at shutdown");
        }
    }
}

fn is_connect_error(s: &Status) -> bool {
    // A transport failure before the request reached the peer: tonic
    // reports it as Unavailable with a connection error source.
    crate::raft::forward_stream::is_not_sent(s)
        || s.code() == Code::Unavailable
            && (s.message().contains("error trying to connect")
                || s.message().contains("tcp connect error")
                || s.message().contains("Connection refused"))
}

fn wire(s: Status) -> ForwardResponse {
    ForwardResponse::Error(WireStatus::from(&s))
}

#[tonic::async_trait]
impl ForwardHandler for Inner {
    async fn handle_writes(&self, cmds: Vec<Command>) -> Vec<ForwardResponse> {
        let n = cmds.len();
        let deadline = Instant::now() + self.timeout();
        let cmds = cmds.into_iter().map(|c| c.0).collect();
        match self.proposer.propose_many(cmds, deadline).await {
            Ok(Some(rs)) => rs
                .into_iter()
                .map(|r| ForwardResponse::Write(CommandResponse(r)))
                .collect(),
            Ok(None) => vec![ForwardResponse::NotLeader; n],
            Err(e) => vec![wire(e); n],
        }
    }

    async fn handle(&self, req: ForwardRequest) -> ForwardResponse {
        match req {
            ForwardRequest::Write(cmd) => {
                let deadline = Instant::now() + self.timeout();
                match self.write_local(cmd.0, deadline).await {
                    Ok(Some(r)) => ForwardResponse::Write(CommandResponse(r)),
                    Ok(None) => ForwardResponse::NotLeader,
                    Err(e) => wire(e),
                }
            }
            ForwardRequest::ReadIndex => match self.local_read_index().await {
                Ok(r) => ForwardResponse::ReadIndex(r),
                Err(RaftError::APIError(_)) => ForwardResponse::NotLeader,
                Err(e) => wire(Status::unavailable(format!("etcdserver: {e}"))),
            },
            ForwardRequest::Membership(change) => {
                if self.leader() != Some(self.id) {
                    return ForwardResponse::NotLeader;
                }
                match self.change_local(change).await {
                    Ok(Some(())) => ForwardResponse::Membership,
                    Ok(None) => ForwardResponse::NotLeader,
                    Err(e) => wire(e),
                }
            }
            r @ (ForwardRequest::LeaseRenew(_) | ForwardRequest::LeaseTimeToLive { .. }) => {
                self.handle_lease_forward(r).await
            }
            ForwardRequest::ClusterInfo => {
                // Linearizable: a member added by MemberAdd (which returns
                // once the change is committed) is in the answer even if
                // this member had not applied it yet.
                if let Err(e) = self.read_barrier().await {
                    return wire(e);
                }
                ForwardResponse::ClusterInfo {
                    cluster_id: self.cluster_id,
                    members: self
                        .members()
                        .into_iter()
                        .map(|m| (m.id, m.member))
                        .collect(),
                    membership_index: self.membership_index(),
                }
            }
        }
    }
}
