//! Starting a member: the data dir opened (or created), storage and Raft
//! brought up (openraft replays what the kv store had not applied), the
//! peer service started, and the cluster bootstrapped or joined.
//!
//! Owns: [`Node::start`], [`StartError`], openraft's configuration from
//! etcd's flags, and binding the peer listeners. The identity file is
//! [`super::identity`]'s.
//!
//! May not: serve clients (that is `crate::grpc`'s, on the node it
//! returns).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_kv::Store;
use cairn_proto::cairnpb::peer_server::PeerServer;
use openraft::errors::RaftError;
use openraft::SnapshotPolicy;
use tokio::sync::watch;

use super::identity::{join_identity, new_cluster, read_identity, write_identity};
use super::propose::Proposer;
use super::{Inner, Node};
use crate::alarm::{Alarms, DiskRoom, Quota};
use crate::auth::Auth;
use crate::config::{host_port, ClusterState, Config};
use crate::lease::{IdGen, Lessor};
use crate::raft::apply::ApplyObserver;
use crate::raft::forward::ForwardHandler;
use crate::raft::log_store::LogStore;
use crate::raft::network::{PeerService, Peers};
use crate::raft::state_machine::StateMachine;
use crate::raft::MAX_PEER_MESSAGE;
use crate::raft::{Member, Raft};
use crate::tls::{ClientTls, ServerTls};
use crate::watch::EventSender;

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A flag or setting that cannot be used.
    #[error("{0}")]
    Config(String),
    /// A data dir that cannot be used.
    #[error("data dir {path}: {reason}")]
    DataDir {
        /// The data dir.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The Raft log refused to open.
    #[error("raft log: {0}")]
    Log(#[from] cairn_raft_log::Error),
    /// The kv store refused to open.
    #[error("kv store: {0}")]
    Kv(#[from] cairn_kv::Error),
    /// openraft refused to start.
    #[error("raft: {0}")]
    Raft(String),
    /// The running cluster could not be joined.
    #[error("cannot join the cluster: {0}")]
    Join(String),
    /// `--experimental-initial-corrupt-check` found this member's data
    /// different from another member's.
    #[error("{0}")]
    Corrupt(String),
}

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

/// Who hears what the state machine applies: the watch hub (each
/// revision's events) and the lessor (grants and revokes).
struct Observers {
    events: EventSender,
    lessor: Arc<Lessor>,
}

impl ApplyObserver for Observers {
    fn revision_applied(&self, revision: i64, events: Vec<cairn_kv::Event>) {
        crate::watch::publish(&self.events, revision, events);
    }

    fn lease_granted(&self, id: i64, ttl: i64) {
        self.lessor.granted(id, ttl);
    }

    fn lease_revoked(&self, id: i64, revision: i64, deleted: cairn_kv::RevokedKeys) {
        crate::watch::publish_revoke(&self.events, revision, deleted);
        self.lessor.revoked(id);
    }
}

impl Node {
    /// Starts a member: opens (or creates) its data dir, bootstraps or
    /// joins the cluster, and starts the peer service if it has peer URLs
    /// to listen on.
    pub async fn start(config: Config) -> Result<Node, StartError> {
        config.validate().map_err(StartError::Config)?;
        data_dir_permissions(&config.data_dir)?;
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
        let restarted = existing.is_some();
        if config.force_new_cluster && !restarted {
            return Err(StartError::Config(
                "--force-new-cluster needs the data dir of a member that has run before".into(),
            ));
        }
        let peer_tls = PeerTls::load(&config)?;
        let bootstrap_members: Option<BTreeMap<u64, Member>>;
        let identity = match existing {
            Some(idt) => {
                bootstrap_members = None;
                idt
            }
            None => match config.initial_cluster_state {
                ClusterState::New => {
                    let (identity, members) = new_cluster(
                        &config.name,
                        &config.initial_cluster,
                        &config.initial_cluster_token,
                        &config.initial_advertise_peer_urls,
                    );
                    bootstrap_members = Some(members);
                    identity
                }
                ClusterState::Existing => {
                    bootstrap_members = None;
                    join_identity(&config, peer_tls.dialing.clone()).await?
                }
            },
        };

        std::fs::create_dir_all(&member_dir)?;
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let fsyncs = metrics.wal_fsync.clone();
        let log = LogStore::open_with(
            &member_dir.join("wal"),
            Some(Arc::new(move |took: std::time::Duration| {
                if crate::metrics::ON {
                    fsyncs.observe(took.as_secs_f64())
                }
            })),
        )?;
        let store = Arc::new(Store::open_path_with(
            member_dir.join("kv"),
            config.backend,
        )?);
        if config.force_new_cluster {
            super::recover::force_new_cluster(&log, &store, identity.member_id)?;
        }
        let (events, _) = tokio::sync::broadcast::channel(crate::watch::BROADCAST_REVISIONS);
        let lessor = Arc::new(Lessor::default());
        let observer = Observers {
            events: events.clone(),
            lessor: Arc::clone(&lessor),
        };
        let auth = Arc::new(
            Auth::open(
                &store,
                &config.auth_token,
                config.auth_token_ttl,
                config.bcrypt_cost,
            )
            .map_err(StartError::Config)?,
        );
        let alarms = Arc::new(Alarms::open(&store)?);
        let sm = StateMachine::new(Arc::clone(&store), &member_dir.join("snap"))?
            .with_observer(Arc::new(observer))
            .with_auth(Arc::clone(&auth))
            .with_alarms(Arc::clone(&alarms))
            .with_metrics(Arc::clone(&metrics));

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
            .with_rpc_timeout_floor(Duration::from_millis(config.election_timeout))
            .with_tls(peer_tls.dialing.clone())
            .with_metrics(Arc::clone(&metrics));
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
            lease_ids: IdGen::new(identity.member_id),
            proposer: Proposer::new(raft.clone()),
            auth,
            alarms,
            quota: Quota::new(config.quota_backend_bytes),
            disk: DiskRoom::new(config.disk_reserve_bytes),
            metrics,
        });

        // Peer service first, so the others can reach us while we bootstrap.
        for url in &config.listen_peer_urls {
            let tls = if url.starts_with("https://") {
                peer_tls.serving.clone()
            } else {
                if !config.peer_tls.is_empty() {
                    tracing::warn!(
                        peer_url = %url,
                        "scheme is HTTP while key and cert files are present; ignoring key and cert files"
                    );
                }
                None
            };
            serve_peers(&inner, url, tls, &member_dir).await?;
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
        if config.initial_corrupt_check {
            if let Err(e) = inner.initial_corrupt_check().await {
                inner.shutdown().await;
                return Err(StartError::Corrupt(e.to_string()));
            }
        }
        tracing::info!(
            name = %config.name,
            member_id = %format!("{:x}", inner.id),
            cluster_id = %format!("{:x}", inner.cluster_id),
            "member started"
        );
        Ok(Node { inner })
    }
}

/// Serves the peer service (Raft's RPCs, forwarded requests, and the
/// plain append connections beside them) on `url` until the member stops.
async fn serve_peers(
    inner: &Arc<Inner>,
    url: &str,
    tls: Option<Arc<ServerTls>>,
    member_dir: &Path,
) -> Result<(), StartError> {
    let addr = resolve(url).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Config(format!("listen-peer-urls {url}: cannot bind: {e}")))?;
    let svc = PeerService {
        cluster_id: inner.cluster_id,
        leader_contact: Arc::clone(&inner.leader_contact),
        raft: inner.raft.clone(),
        snap_dir: member_dir.join("snap"),
        forward: Arc::clone(inner) as Arc<dyn ForwardHandler>,
        stop: inner.stop.subscribe(),
    };
    let server = PeerServer::new(svc)
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE);
    let mut stop_rx = inner.stop.subscribe();
    // Append connections are served beside gRPC on the same port.
    let (incoming, accept_task) = crate::raft::append_wire::incoming(
        listener,
        tls,
        crate::raft::append_wire::FollowerSide {
            cluster_id: inner.cluster_id,
            raft: inner.raft.clone(),
            leader_contact: Arc::clone(&inner.leader_contact),
            stop: inner.stop.subscribe(),
        },
    );
    inner.push_task(accept_task);
    let task = tokio::spawn(async move {
        let r = tonic::transport::Server::builder()
            // Pings find a peer connection whose other end is gone.
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
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
    Ok(())
}

/// The peer port's TLS, loaded once at start: the side that serves
/// (`https://` listen peer URLs) and the side that dials (`https://` peer
/// URLs of any member).
struct PeerTls {
    serving: Option<Arc<ServerTls>>,
    dialing: Option<Arc<ClientTls>>,
}

impl PeerTls {
    fn load(config: &Config) -> Result<Self, StartError> {
        let https = |u: &String| u.starts_with("https://");
        let serves = config.listen_peer_urls.iter().any(https);
        let dials = serves
            || config.initial_advertise_peer_urls.iter().any(https)
            || config
                .initial_cluster
                .iter()
                .flat_map(|(_, u)| u)
                .any(https);
        if !serves && !dials {
            return Ok(Self {
                serving: None,
                dialing: None,
            });
        }
        let hosts: Vec<&str> = config
            .listen_peer_urls
            .iter()
            .chain(&config.initial_advertise_peer_urls)
            .map(|u| crate::config::host_of(u))
            .collect();
        let info = config
            .peer_tls
            .resolve_auto(&config.data_dir.join("fixtures").join("peer"), &hosts)
            .map_err(StartError::Config)?;
        let serving = if serves {
            Some(Arc::new(
                ServerTls::new(&info, &config.tls, "peer").map_err(StartError::Config)?,
            ))
        } else {
            None
        };
        let dialing = Some(Arc::new(
            ClientTls::new(&info, &config.tls).map_err(StartError::Config)?,
        ));
        Ok(Self { serving, dialing })
    }
}

/// Creates the data dir owner-only (0700) if it is not there; one that
/// is there and open to others is warned about, as etcd does.
fn data_dir_permissions(dir: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::metadata(dir) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    data_dir = %dir.display(),
                    permission = %format!("{mode:o}"),
                    "check file permission: the data dir is open to other users; \
                     the recommended permission is 700 (rwx------)"
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StartError::DataDir {
                path: dir.to_path_buf(),
                reason: format!("cannot create: {e}"),
            }),
        Err(e) => Err(StartError::DataDir {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        }),
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
