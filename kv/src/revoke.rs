//! Revokes whose keys are deleted everywhere but in the key index yet.
//!
//! Revoking a lease deletes all its keys in one revision `R`. What a
//! revoke must do at once is cheap per key: the tombstone run (every key's
//! tombstone at `R`, sub = position in key order) goes to the backend in
//! the revoke's batch, and the DELETE events can be built from that run
//! and the lease's own key → revision map, then or later
//! ([`crate::RevokedKeys`]; Cairn's watch leaves it to the first watcher
//! that looks). What is expensive —
//! closing each key's generation in the index and dropping it from the
//! key → lease map, a few cache misses per key — is left for later: the
//! lease's key map moves, whole, into a [`PendingRevoke`], and the index
//! catches up in bounded steps. So a revoke of 10,000 keys does not hold
//! the writes behind it for the time of 10,000 index updates.
//!
//! Until a key's tombstone is in the index, the index still shows the key
//! live with its last put. Nothing may read the index for such a key:
//! - a write (put, delete, txn: compares, reads and writes, nested too)
//!   that names a pending key or a range holding one first brings the
//!   index up to date (`State::settle_for`); writes elsewhere go straight on;
//! - a range read over such keys does the same before planning;
//! - compaction and `hash_kv` bring the index up to date first;
//! - the live-key count subtracts the keys still pending.
//!
//! Everything else already sees the revoke: the backend has the
//! tombstones (history, snapshots, and a reopened store — the index is
//! rebuilt from records, so a crash leaves nothing pending), the lease is
//! gone from the table, and the events went out with the revoke.
//!
//! Catching up runs on a background thread (`cairn-kv-revoker`,
//! `crate::revoker`), at most
//! [`crate::Options::revoke_step`] keys per hold of the state lock, with
//! [`crate::Options::revoke_pause`] between steps.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use bytes::Bytes;

use crate::key_index::KeyIndex;
use crate::lease::KeyLeases;
use crate::range::key_bounds;
use crate::request::{RequestOp, TxnRequest, Write};
use crate::revision::Revision;

/// One revoke the index has not fully caught up with.
#[derive(Debug)]
pub(crate) struct PendingRevoke {
    /// The revoke's revision.
    pub(crate) rev: i64,
    /// Keys whose tombstone is not in the index yet, in key order (with
    /// the revision of their last put, unused here).
    pub(crate) keys: BTreeMap<Bytes, Revision>,
    /// Sub-revision of the first key left: the keys before it are done.
    pub(crate) next_sub: i64,
}

/// The revokes pending, oldest first. Their key sets are disjoint: a key
/// belongs to one lease, and a write that could move it settles first.
pub(crate) type Pending = VecDeque<PendingRevoke>;

/// Is any pending key in `key .. range_end` (etcd's range rules)?
pub(crate) fn touches(pending: &Pending, key: &[u8], range_end: &[u8]) -> bool {
    if pending.is_empty() {
        return false;
    }
    let (lo, hi) = key_bounds(key, range_end);
    if let (Bound::Included(a), Bound::Excluded(b)) = (lo, hi) {
        if a >= b {
            return false;
        }
    }
    pending
        .iter()
        .any(|p| p.keys.range::<[u8], _>((lo, hi)).next().is_some())
}

fn touches_op(pending: &Pending, op: &RequestOp) -> bool {
    match op {
        RequestOp::Range(r) => touches(pending, &r.key, &r.range_end),
        RequestOp::Put(p) => touches(pending, &p.key, &[]),
        RequestOp::DeleteRange(d) => touches(pending, &d.key, &d.range_end),
        RequestOp::Txn(t) => touches_txn(pending, t),
        RequestOp::Empty => false,
    }
}

fn touches_txn(pending: &Pending, t: &TxnRequest) -> bool {
    t.compare
        .iter()
        .any(|c| touches(pending, &c.key, &c.range_end))
        || t.success.iter().any(|op| touches_op(pending, op))
        || t.failure.iter().any(|op| touches_op(pending, op))
}

/// Does `w` read or write a pending key (either branch of a txn counts)?
pub(crate) fn touches_write(pending: &Pending, w: &Write<'_>) -> bool {
    if pending.is_empty() {
        return false;
    }
    match w {
        Write::Put(p) => touches(pending, &p.key, &[]),
        Write::DeleteRange(d) => touches(pending, &d.key, &d.range_end),
        Write::Txn(t) => touches_txn(pending, t),
    }
}

/// Puts up to `max` pending tombstones into the index (oldest revoke
/// first). Returns true while some are left.
pub(crate) fn settle(
    revokes: &mut Pending,
    index: &mut BTreeMap<Bytes, KeyIndex>,
    key_lease: &mut KeyLeases,
    max: usize,
) -> bool {
    let mut budget = max;
    while budget > 0 {
        let Some(p) = revokes.front_mut() else {
            return false;
        };
        let Some((key, _)) = p.keys.pop_first() else {
            revokes.pop_front();
            continue;
        };
        let at = Revision::new(p.rev, p.next_sub);
        p.next_sub += 1;
        // An attached key is live (attach needs a put, a delete detaches),
        // and nothing wrote it since the revoke.
        let closed = index.get_mut(&key).is_some_and(|ki| ki.tombstone(at));
        debug_assert!(closed, "a pending key was live in the index");
        key_lease.remove(&key);
        budget -= 1;
    }
    while revokes.front().is_some_and(|p| p.keys.is_empty()) {
        revokes.pop_front();
    }
    !revokes.is_empty()
}

/// Keys still pending, over all revokes.
pub(crate) fn pending_keys(revokes: &Pending) -> usize {
    revokes.iter().map(|p| p.keys.len()).sum()
}
