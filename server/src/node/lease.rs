//! Leases on a member: etcd's lease calls (grant, revoke, keep-alive,
//! time to live, list) and the leader's duty — taking over deadlines on
//! becoming leader, revoking what expired and checkpointing what drifted,
//! all through Raft.
//!
//! Owns: the lease calls of [`Inner`] and the background task
//! `run_lessor`. Deadlines themselves are the [`crate::lease::Lessor`]'s;
//! what a lease is (TTL, keys) is the kv store's.
//!
//! May not: change a lease's state outside Raft (every grant, revoke
//! and checkpoint is proposed), or forward except through `route`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::cairnpb::{command::Op, command_response::Result as Res};
use cairn_proto::etcdserverpb as pb;
use openraft::rt::WatchReceiver;
use openraft::ServerState;

use super::route::{unexpected, Resend};
use super::write::apply_result;
use super::Inner;
use crate::error::Error;
use crate::lease::{min_ttl, secs, Lessor, CHECKPOINT_BATCH, MAX_LEASE_TTL, TICK};
use crate::raft::forward::{ForwardRequest, ForwardResponse, TimeToLive};

/// What a renewal found.
enum Renewal {
    /// The lease lives on for this many seconds.
    Renewed(i64),
    /// No such lease (or it expired and is being revoked).
    NotFound,
    /// This member is not the leader.
    NotLeader,
}

impl Inner {
    pub(crate) fn lease_header(&self) -> Option<pb::ResponseHeader> {
        Some(self.header(self.store.current_revision()))
    }

    /// etcd's LeaseGrant.
    pub async fn lease_grant(
        &self,
        req: pb::LeaseGrantRequest,
    ) -> Result<pb::LeaseGrantResponse, Error> {
        if req.ttl > MAX_LEASE_TTL {
            return Err(Error::LeaseTtlTooLarge);
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
                Err(Error::LeaseExists) if !chosen => continue,
                Err(e) => return Err(e),
                Ok(other) => return Err(Error::Internal(format!("unexpected {other:?}"))),
            }
        }
    }

    /// etcd's LeaseRevoke.
    pub async fn lease_revoke(
        &self,
        id: i64,
        user: Option<String>,
    ) -> Result<pb::LeaseRevokeResponse, Error> {
        match self
            .propose_as(Op::LeaseRevoke(pb::LeaseRevokeRequest { id }), user)
            .await?
        {
            Res::LeaseRevoke(r) => Ok(pb::LeaseRevokeResponse {
                header: Some(self.header(r.header.map_or(0, |h| h.revision))),
            }),
            other => Err(Error::Internal(format!("unexpected {other:?}"))),
        }
    }

    /// Renews on this member, which must be the leader.
    async fn renew_local(&self, id: i64) -> Result<Renewal, Error> {
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
    pub async fn lease_renew(&self, id: i64) -> Result<i64, Error> {
        self.route(
            Instant::now() + self.timeout(),
            Resend::Always,
            || ForwardRequest::LeaseRenew(id),
            || async move {
                Ok(match self.renew_local(id).await? {
                    Renewal::Renewed(ttl) => Some(ttl),
                    Renewal::NotFound => Some(0),
                    Renewal::NotLeader => None,
                })
            },
            |r| match r {
                ForwardResponse::LeaseRenewed(ttl) => Ok(ttl),
                other => Err(unexpected(other)),
            },
        )
        .await
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
    ) -> Result<pb::LeaseTimeToLiveResponse, Error> {
        self.route(
            Instant::now() + self.timeout(),
            Resend::Always,
            || ForwardRequest::LeaseTimeToLive { id, keys },
            || async move { Ok(self.time_to_live_local(id, keys)) },
            |r| match r {
                ForwardResponse::LeaseTimeToLive(t) => Ok(pb::LeaseTimeToLiveResponse {
                    // The header is this member's, as for every answer.
                    header: self.lease_header(),
                    id: t.id,
                    ttl: t.ttl,
                    granted_ttl: t.granted_ttl,
                    keys: t.keys.into_iter().map(Into::into).collect(),
                }),
                other => Err(unexpected(other)),
            },
        )
        .await
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
                Err(e) => ForwardResponse::Error(e),
            },
            ForwardRequest::LeaseTimeToLive { id, keys } => {
                match self.time_to_live_local(id, keys) {
                    Some(r) => ForwardResponse::LeaseTimeToLive(TimeToLive {
                        id: r.id,
                        ttl: r.ttl,
                        granted_ttl: r.granted_ttl,
                        keys: r.keys.into_iter().map(|k| k.to_vec()).collect(),
                    }),
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
                    // The member's own: expiry needs no permission.
                    user: None,
                };
                let deadline = Instant::now() + me.timeout();
                match me.write_local(cmd, deadline).await {
                    Ok(Some(r)) => {
                        if let Err(e) = apply_result(r) {
                            if e != Error::LeaseNotFound {
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
