//! Leases: the lessor (who decides expiry), the leader's background duty,
//! and etcd's `etcdserverpb.Lease` service.
//!
//! What a lease is — its TTL, its last checkpointed remaining TTL and its
//! keys — lives in the replicated kv store ([`cairn_kv::lease`]). Time does
//! not: only the leader keeps expiry deadlines, in the [`Lessor`]. When the
//! leader sees a lease expire it proposes a revoke through Raft, so every
//! member deletes the lease's keys at the same revision. A follower's
//! lessor holds nothing; keep-alives and time-to-live questions go to the
//! leader.
//!
//! # Leader changes
//!
//! A member that becomes leader gives every lease its remaining TTL — the
//! last checkpoint, or the whole TTL if none — plus one election timeout of
//! grace, time for clients to find the new leader. The leader checkpoints
//! (through Raft) the remaining TTL of every lease that drifted at least
//! `--experimental-lease-checkpoint-interval` below its last checkpoint, so
//! a run of leader changes cannot keep an un-renewed lease alive: each
//! leader that stays longer than the grace plus one interval moves the
//! recorded remaining TTL down. A renewal of a checkpointed lease clears
//! its checkpoint through Raft before it is acknowledged, so a renewed
//! lease never comes back shorter after a leader change.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::cairnpb::{command::Op, command_response::Result as Res};
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::lease_server::{Lease, LeaseServer};
use futures::Stream;
use openraft::rt::WatchReceiver;
use openraft::ServerState;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::forward::{ForwardRequest, ForwardResponse};
use crate::node::{Inner, Node};
use crate::status::msg;

/// etcd's largest lease TTL, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// How often the leader looks for expired leases and due checkpoints.
const TICK: Duration = Duration::from_millis(500);
/// A revoke that has not taken effect after this long is proposed again.
const REVOKE_RETRY: Duration = Duration::from_secs(3);
/// Revokes proposed per tick at most (etcd revokes 1000 per second).
const REVOKES_PER_TICK: usize = 500;
/// Leases per checkpoint command (etcd's batch limit).
const CHECKPOINT_BATCH: usize = 1000;

/// The smallest TTL a lease gets: 1.5 election timeouts, in whole seconds
/// rounded up (etcd's rule), so a lease outlives a leader election.
pub fn min_ttl(election_timeout_ms: u64) -> i64 {
    let ms = election_timeout_ms.saturating_mul(3) / 2;
    (ms.div_ceil(1000)).max(1) as i64
}

#[derive(Default)]
struct State {
    /// True while this member is the leader and its deadlines are set.
    primary: bool,
    /// Lease id → when it expires (leader only).
    expiry: HashMap<i64, Instant>,
    /// Lease id → when its revoke was proposed.
    revoking: HashMap<i64, Instant>,
}

/// Expiry deadlines of leases. Only the leader's lessor holds any.
#[derive(Default)]
pub struct Lessor {
    state: Mutex<State>,
    /// Serializes checkpoint proposals with renewals that clear a
    /// checkpoint, so a stale checkpoint never lands after a renewal.
    checkpointing: tokio::sync::Mutex<()>,
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}

impl Lessor {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A lease was granted (applied).
    pub fn granted(&self, id: i64, ttl: i64) {
        let mut st = self.state();
        if st.primary {
            st.expiry.insert(id, Instant::now() + secs(ttl));
        }
    }

    /// A lease was revoked (applied).
    pub fn revoked(&self, id: i64) {
        let mut st = self.state();
        st.expiry.remove(&id);
        st.revoking.remove(&id);
    }

    /// This member became leader: every lease gets its remaining (or whole)
    /// TTL plus `extend`.
    fn promote(&self, store: &cairn_kv::Store, extend: Duration) {
        let mut st = self.state();
        let now = Instant::now();
        st.expiry = store
            .leases()
            .into_iter()
            .map(|l| {
                let left = if l.remaining_ttl > 0 {
                    l.remaining_ttl
                } else {
                    l.ttl
                };
                (l.id, now + secs(left) + extend)
            })
            .collect();
        st.revoking.clear();
        st.primary = true;
    }

    fn demote(&self) {
        let mut st = self.state();
        st.primary = false;
        st.expiry.clear();
        st.revoking.clear();
    }

    fn is_primary(&self) -> bool {
        self.state().primary
    }

    /// The deadline of lease `lease` on the leader, making one up for a
    /// lease applied before this member's deadlines were set.
    fn deadline(st: &mut State, lease: &cairn_kv::Lease) -> Instant {
        *st.expiry
            .entry(lease.id)
            .or_insert_with(|| Instant::now() + secs(lease.ttl))
    }

    /// Leases past their deadline whose revoke is not under way; marks them.
    fn expired(&self, store: &cairn_kv::Store) -> Vec<i64> {
        let mut st = self.state();
        if !st.primary {
            return Vec::new();
        }
        let now = Instant::now();
        let mut out = Vec::new();
        for l in store.leases() {
            if out.len() >= REVOKES_PER_TICK {
                break;
            }
            if Self::deadline(&mut st, &l) > now {
                continue;
            }
            if st
                .revoking
                .get(&l.id)
                .is_some_and(|t| now.duration_since(*t) < REVOKE_RETRY)
            {
                continue;
            }
            st.revoking.insert(l.id, now);
            out.push(l.id);
        }
        out
    }

    /// Remaining TTLs (whole seconds, at least 1) of leases that drifted
    /// `interval` or more below their last checkpoint.
    fn due_checkpoints(&self, store: &cairn_kv::Store, interval: Duration) -> Vec<(i64, i64)> {
        let mut st = self.state();
        if !st.primary {
            return Vec::new();
        }
        let now = Instant::now();
        let step = interval.as_secs().max(1) as i64;
        let mut out = Vec::new();
        for l in store.leases() {
            let deadline = Self::deadline(&mut st, &l);
            if deadline <= now {
                continue;
            }
            let left = (deadline - now).as_secs() as i64;
            let recorded = if l.remaining_ttl > 0 {
                l.remaining_ttl
            } else {
                l.ttl
            };
            if recorded - left >= step {
                out.push((l.id, left.max(1)));
            }
        }
        out
    }

    /// Time left of a lease on the leader; `None` if not primary.
    fn remaining(&self, lease: &cairn_kv::Lease) -> Option<Duration> {
        let mut st = self.state();
        if !st.primary {
            return None;
        }
        let d = Self::deadline(&mut st, lease);
        Some(d.saturating_duration_since(Instant::now()))
    }
}

/// What a renewal found.
enum Renewal {
    /// The lease lives on for this many seconds.
    Renewed(i64),
    /// No such lease (or it expired and is being revoked).
    NotFound,
    /// This member is not the leader.
    NotLeader,
}

/// Picks lease ids for grants that name none: positive, from this member's
/// id and a clock-seeded counter, like etcd's request ids.
pub(crate) struct IdGen {
    prefix: i64,
    counter: AtomicI64,
}

impl IdGen {
    pub(crate) fn new(member_id: u64) -> Self {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Self {
            prefix: ((member_id & 0x7fff) as i64) << 48,
            counter: AtomicI64::new((now_ms << 8) & ((1 << 48) - 1)),
        }
    }

    fn next(&self) -> i64 {
        loop {
            let c = self.counter.fetch_add(1, Ordering::Relaxed) & ((1 << 48) - 1);
            let id = self.prefix | c;
            if id != 0 {
                return id;
            }
        }
    }
}

impl Inner {
    fn lease_header(&self) -> Option<pb::ResponseHeader> {
        Some(self.header(self.store.current_revision()))
    }

    /// etcd's LeaseGrant.
    pub async fn lease_grant(
        &self,
        req: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, Status> {
        if req.ttl > MAX_LEASE_TTL {
            return Err(Status::out_of_range(msg::LEASE_TTL_TOO_LARGE));
        }
        let ttl = req.ttl.max(min_ttl(self.config.election_timeout));
        let chosen = req.id != 0;
        loop {
            let id = if chosen {
                req.id
            } else {
                self.lease_ids.next()
            };
            let cmd = Op::LeaseGrant(pb::LeaseGrantRequest { ttl, id });
            match self.propose(cmd).await {
                Ok(Res::LeaseGrant(mut r)) => {
                    r.header = Some(self.header(r.header.map_or(0, |h| h.revision)));
                    return Ok(r);
                }
                // A generated id that happens to be taken: pick another.
                Err(e) if !chosen && e.message() == msg::LEASE_EXISTS => continue,
                Err(e) => return Err(e),
                Ok(other) => return Err(Status::internal(format!("unexpected {other:?}"))),
            }
        }
    }

    /// etcd's LeaseRevoke.
    pub async fn lease_revoke(&self, id: i64) -> Result<pb::LeaseRevokeResponse, Status> {
        match self
            .propose(Op::LeaseRevoke(pb::LeaseRevokeRequest { id }))
            .await?
        {
            Res::LeaseRevoke(r) => Ok(pb::LeaseRevokeResponse {
                header: Some(self.header(r.header.map_or(0, |h| h.revision))),
            }),
            other => Err(Status::internal(format!("unexpected {other:?}"))),
        }
    }

    async fn propose(&self, op: Op) -> Result<Res, Status> {
        let cmd = cairn_proto::cairnpb::Command { op: Some(op) };
        crate::forward::apply_result(self.write(cmd).await?)
    }

    /// Renews on this member, which must be the leader.
    async fn renew_local(&self, id: i64) -> Result<Renewal, Status> {
        if self.leader() != Some(self.id) || !self.lessor.is_primary() {
            return Ok(Renewal::NotLeader);
        }
        // Confirm leadership with a quorum and apply everything committed
        // before renewing: a deposed leader that does not know it yet must
        // not promise a TTL the real leader never heard of, and a new
        // leader must first apply a revoke its predecessor committed.
        self.read_barrier().await?;
        if self.leader() != Some(self.id) {
            return Ok(Renewal::NotLeader);
        }
        let Some(lease) = self.store.lease(id) else {
            return Ok(Renewal::NotFound);
        };
        let _order = self.lessor.checkpointing.lock().await;
        {
            let mut st = self.lessor.state();
            if !st.primary {
                return Ok(Renewal::NotLeader);
            }
            let now = Instant::now();
            if Lessor::deadline(&mut st, &lease) <= now {
                // Expired: its revoke is on its way.
                return Ok(Renewal::NotFound);
            }
            st.expiry.insert(id, now + secs(lease.ttl));
        }
        // Read again under the lock: a checkpoint proposed before it was
        // taken has been applied by now.
        let current = self.store.lease(id);
        if current.as_ref().is_some_and(|l| l.remaining_ttl != 0) {
            let clear = pb::LeaseCheckpointRequest {
                checkpoints: vec![pb::LeaseCheckpoint {
                    id,
                    remaining_ttl: 0,
                }],
            };
            self.propose(Op::LeaseCheckpoint(clear)).await?;
        }
        Ok(Renewal::Renewed(lease.ttl))
    }

    /// etcd's LeaseKeepAlive for one request: the TTL the lease now has, 0
    /// if there is no such lease.
    pub async fn lease_renew(&self, id: i64) -> Result<i64, Status> {
        let deadline = Instant::now() + self.timeout();
        loop {
            match self.renew_local(id).await? {
                Renewal::Renewed(ttl) => return Ok(ttl),
                Renewal::NotFound => return Ok(0),
                Renewal::NotLeader => {}
            }
            match self
                .ask_leader(ForwardRequest::LeaseRenew(id), deadline)
                .await?
            {
                Some(ForwardResponse::LeaseRenewed(ttl)) => return Ok(ttl),
                Some(ForwardResponse::Error(e)) => return Err(e.into()),
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(Status::unavailable(msg::TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Time to live on this member, which must be the leader. `None`: not
    /// the leader.
    fn time_to_live_local(&self, id: i64, keys: bool) -> Option<pb::LeaseTimeToLiveResponse> {
        if self.leader() != Some(self.id) || !self.lessor.is_primary() {
            return None;
        }
        let Some(lease) = self.store.lease(id) else {
            return Some(pb::LeaseTimeToLiveResponse {
                header: self.lease_header(),
                id,
                ttl: -1,
                ..Default::default()
            });
        };
        let left = self.lessor.remaining(&lease)?;
        Some(pb::LeaseTimeToLiveResponse {
            header: self.lease_header(),
            id,
            ttl: left.as_secs() as i64,
            granted_ttl: lease.ttl,
            keys: if keys {
                self.store.lease_keys(id)
            } else {
                Vec::new()
            },
        })
    }

    /// etcd's LeaseTimeToLive: TTL −1 for an unknown lease.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<pb::LeaseTimeToLiveResponse, Status> {
        let deadline = Instant::now() + self.timeout();
        loop {
            if let Some(r) = self.time_to_live_local(id, keys) {
                return Ok(r);
            }
            match self
                .ask_leader(ForwardRequest::LeaseTimeToLive { id, keys }, deadline)
                .await?
            {
                Some(ForwardResponse::LeaseTimeToLive(r)) => {
                    let mut r: pb::LeaseTimeToLiveResponse = r.into();
                    // The header is this member's, as for every answer.
                    r.header = self.lease_header();
                    return Ok(r);
                }
                Some(ForwardResponse::Error(e)) => return Err(e.into()),
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(Status::unavailable(msg::TIMEOUT));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// etcd's LeaseLeases: the leases this member knows, by id.
    pub fn lease_leases(&self) -> pb::LeaseLeasesResponse {
        pb::LeaseLeasesResponse {
            header: self.lease_header(),
            leases: self
                .store
                .leases()
                .into_iter()
                .map(|l| pb::LeaseStatus { id: l.id })
                .collect(),
        }
    }

    /// Serves a forwarded lease request as the leader.
    pub(crate) async fn handle_lease_forward(&self, req: ForwardRequest) -> ForwardResponse {
        match req {
            ForwardRequest::LeaseRenew(id) => match self.renew_local(id).await {
                Ok(Renewal::Renewed(ttl)) => ForwardResponse::LeaseRenewed(ttl),
                Ok(Renewal::NotFound) => ForwardResponse::LeaseRenewed(0),
                Ok(Renewal::NotLeader) => ForwardResponse::NotLeader,
                Err(e) => ForwardResponse::Error((&e).into()),
            },
            ForwardRequest::LeaseTimeToLive { id, keys } => {
                match self.time_to_live_local(id, keys) {
                    Some(r) => ForwardResponse::LeaseTimeToLive(r.into()),
                    None => ForwardResponse::NotLeader,
                }
            }
            _ => ForwardResponse::NotLeader,
        }
    }

    /// The leader's lease duty, run by every member: take over deadlines on
    /// becoming leader, drop them on losing it, revoke what expired and
    /// checkpoint what drifted.
    pub(crate) async fn run_lessor(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let extend = Duration::from_millis(self.config.election_timeout);
        let interval = self.config.lease_checkpoint_interval;
        // Server metrics: leadership, not every write's progress.
        let mut metrics = self.raft.server_metrics();
        let mut next_tick = tokio::time::Instant::now();
        loop {
            // Leadership is followed as it changes; the lease scan runs
            // once per tick.
            let leader = metrics.borrow_watched().state == ServerState::Leader;
            if leader && !self.lessor.is_primary() {
                self.lessor.promote(&self.store, extend);
                tracing::debug!("lessor promoted");
            } else if !leader && self.lessor.is_primary() {
                self.lessor.demote();
                tracing::debug!("lessor demoted");
            }
            if tokio::time::Instant::now() >= next_tick {
                next_tick = tokio::time::Instant::now() + TICK;
                if leader {
                    self.revoke_expired();
                    self.checkpoint(interval).await;
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                r = metrics.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(next_tick) => {}
            }
        }
    }

    /// Proposes a revoke for every lease past its deadline. Only as the
    /// leader itself, never forwarded: a deposed leader that does not know
    /// it yet (paused, or cut off) has stale deadlines, and its revoke must
    /// not reach the leader that took the renewals since; proposed in its
    /// own term, it cannot commit once a majority moved on.
    fn revoke_expired(self: &Arc<Self>) {
        for id in self.lessor.expired(&self.store) {
            let me = Arc::clone(self);
            tokio::spawn(async move {
                tracing::debug!(lease = id, "lease expired; revoking");
                let cmd = cairn_proto::cairnpb::Command {
                    op: Some(Op::LeaseRevoke(pb::LeaseRevokeRequest { id })),
                };
                let deadline = Instant::now() + me.timeout();
                match me.write_local(cmd, deadline).await {
                    Ok(Some(r)) => {
                        if let Err(e) = crate::forward::apply_result(r) {
                            if e.message() != msg::LEASE_NOT_FOUND {
                                tracing::warn!(lease = id, error = %e, "revoking an expired lease");
                            }
                        }
                    }
                    Ok(None) => {
                        tracing::debug!(lease = id, "no longer leader; expiry left to the leader")
                    }
                    Err(e) => tracing::warn!(lease = id, error = %e, "revoking an expired lease"),
                }
            });
        }
    }

    async fn checkpoint(&self, interval: Duration) {
        let _order = self.lessor.checkpointing.lock().await;
        let due = self.lessor.due_checkpoints(&self.store, interval);
        for batch in due.chunks(CHECKPOINT_BATCH) {
            let req = pb::LeaseCheckpointRequest {
                checkpoints: batch
                    .iter()
                    .map(|(id, left)| pb::LeaseCheckpoint {
                        id: *id,
                        remaining_ttl: *left,
                    })
                    .collect(),
            };
            if let Err(e) = self.propose(Op::LeaseCheckpoint(req)).await {
                tracing::debug!(error = %e, "lease checkpoint failed");
                return;
            }
        }
    }
}

/// A TimeToLive answer as it crosses the peer network.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct WireTimeToLive {
    pub id: i64,
    pub ttl: i64,
    pub granted_ttl: i64,
    pub keys: Vec<Vec<u8>>,
}

impl From<pb::LeaseTimeToLiveResponse> for WireTimeToLive {
    fn from(r: pb::LeaseTimeToLiveResponse) -> Self {
        Self {
            id: r.id,
            ttl: r.ttl,
            granted_ttl: r.granted_ttl,
            keys: r.keys.into_iter().map(|k| k.to_vec()).collect(),
        }
    }
}

impl From<WireTimeToLive> for pb::LeaseTimeToLiveResponse {
    fn from(w: WireTimeToLive) -> Self {
        Self {
            header: None,
            id: w.id,
            ttl: w.ttl,
            granted_ttl: w.granted_ttl,
            keys: w.keys.into_iter().map(Into::into).collect(),
        }
    }
}

/// `etcdserverpb.Lease`.
pub struct LeaseService {
    node: Node,
}

impl LeaseService {
    pub fn server(node: &Node) -> LeaseServer<Self> {
        LeaseServer::new(Self { node: node.clone() })
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        crate::api::check_leader(&self.node, &req)?;
        self.node
            .inner
            .lease_grant(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        crate::api::check_leader(&self.node, &req)?;
        self.node
            .inner
            .lease_revoke(req.into_inner().id)
            .await
            .map(Response::new)
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        crate::api::check_leader(&self.node, &req)?;
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let node = self.node.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = incoming.message() => m,
                    _ = tx.closed() => return,
                };
                let id = match msg {
                    Ok(Some(r)) => r.id,
                    Ok(None) | Err(_) => return,
                };
                let answer =
                    node.inner
                        .lease_renew(id)
                        .await
                        .map(|ttl| pb::LeaseKeepAliveResponse {
                            header: node.inner.lease_header(),
                            id,
                            ttl,
                        });
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        crate::api::check_leader(&self.node, &req)?;
        let r = req.into_inner();
        self.node
            .inner
            .lease_time_to_live(r.id, r.keys)
            .await
            .map(Response::new)
    }

    async fn lease_leases(
        &self,
        req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        crate::api::check_leader(&self.node, &req)?;
        Ok(Response::new(self.node.inner.lease_leases()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
        assert_eq!(min_ttl(1000), 2);
        assert_eq!(min_ttl(100), 1);
        assert_eq!(min_ttl(2000), 3);
        assert_eq!(min_ttl(5000), 8);
    }

    #[test]
    fn generated_ids_are_positive_and_distinct() {
        let g = IdGen::new(u64::MAX);
        let a = g.next();
        let b = g.next();
        assert!(a > 0 && b > 0 && a != b);
    }
}
