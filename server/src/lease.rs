//! The lessor: who decides that a lease expired.
//!
//! What a lease is — its TTL, its last checkpointed remaining TTL and its
//! keys — lives in the replicated kv store ([`cairn_kv::lease`]). Time does
//! not: only the leader keeps expiry deadlines, in the [`Lessor`]. When the
//! leader sees a lease expire it proposes a revoke through Raft, so every
//! member deletes the lease's keys at the same revision. A follower's
//! lessor holds nothing; keep-alives and time-to-live questions go to the
//! leader. The leader's duty (revoking and checkpointing through Raft) and
//! the lease calls are the node's (`crate::node::lease`); etcd's Lease
//! service is `crate::grpc::lease`. This module knows nothing of Raft or
//! gRPC: the state machine tells it of grants and revokes through the
//! node's apply observer.
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
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// etcd's largest lease TTL, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// How often the leader looks for expired leases and due checkpoints.
pub(crate) const TICK: Duration = Duration::from_millis(500);
/// A revoke that has not taken effect after this long is proposed again.
const REVOKE_RETRY: Duration = Duration::from_secs(3);
/// Revokes proposed per tick at most (etcd revokes 1000 per second).
const REVOKES_PER_TICK: usize = 500;
/// Leases per checkpoint command (etcd's batch limit).
pub(crate) const CHECKPOINT_BATCH: usize = 1000;

/// The smallest TTL a lease gets: 1.5 election timeouts, in whole seconds
/// rounded up (etcd's rule), so a lease outlives a leader election.
pub fn min_ttl(election_timeout_ms: u64) -> i64 {
    let ms = election_timeout_ms.saturating_mul(3) / 2;
    (ms.div_ceil(1000)).max(1) as i64
}

#[derive(Default)]
pub(crate) struct State {
    /// True while this member is the leader and its deadlines are set.
    pub(crate) primary: bool,
    /// Lease id → when it expires (leader only).
    pub(crate) expiry: HashMap<i64, Instant>,
    /// Lease id → when its revoke was proposed.
    revoking: HashMap<i64, Instant>,
}

/// Expiry deadlines of leases. Only the leader's lessor holds any.
#[derive(Default)]
pub struct Lessor {
    state: Mutex<State>,
    /// Serializes checkpoint proposals with renewals that clear a
    /// checkpoint, so a stale checkpoint never lands after a renewal.
    pub(crate) checkpointing: tokio::sync::Mutex<()>,
}

pub(crate) fn secs(s: i64) -> Duration {
    Duration::from_secs(s.max(0) as u64)
}

impl Lessor {
    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, State> {
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
    pub(crate) fn promote(&self, store: &cairn_kv::Store, extend: Duration) {
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

    pub(crate) fn demote(&self) {
        let mut st = self.state();
        st.primary = false;
        st.expiry.clear();
        st.revoking.clear();
    }

    pub(crate) fn is_primary(&self) -> bool {
        self.state().primary
    }

    /// The deadline of lease `lease` on the leader, making one up for a
    /// lease applied before this member's deadlines were set.
    pub(crate) fn deadline(st: &mut State, lease: &cairn_kv::Lease) -> Instant {
        *st.expiry
            .entry(lease.id)
            .or_insert_with(|| Instant::now() + secs(lease.ttl))
    }

    /// Leases past their deadline whose revoke is not under way; marks them.
    pub(crate) fn expired(&self, store: &cairn_kv::Store) -> Vec<i64> {
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
    pub(crate) fn due_checkpoints(
        &self,
        store: &cairn_kv::Store,
        interval: Duration,
    ) -> Vec<(i64, i64)> {
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
    pub(crate) fn remaining(&self, lease: &cairn_kv::Lease) -> Option<Duration> {
        let mut st = self.state();
        if !st.primary {
            return None;
        }
        let d = Self::deadline(&mut st, lease);
        Some(d.saturating_duration_since(Instant::now()))
    }
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

    /// A fresh id.
    pub(crate) fn next(&self) -> i64 {
        loop {
            let c = self.counter.fetch_add(1, Ordering::Relaxed) & ((1 << 48) - 1);
            let id = self.prefix | c;
            if id != 0 {
                return id;
            }
        }
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
