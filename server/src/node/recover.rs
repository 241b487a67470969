//! `--force-new-cluster`: a member that outlived its cluster's quorum
//! made the only member of a new one-member cluster, with the same
//! cluster id, its own member id and everything it knew to be committed,
//! ready for `member add` of fresh members (etcd's meaning).
//!
//! Owns: the change to the log made before Raft starts. Entries past the
//! last one this member knew committed are dropped (no client was told
//! they were written by this member's cluster unless a quorum, gone now,
//! held them); a membership entry naming this member alone follows, marked
//! committed. Raft then starts with this member as its only voter and
//! elects it. Done again at every start with the flag, which changes
//! nothing more for a member that is alone already.
//!
//! May not: touch the kv store (its data is what the member committed and
//! applied; openraft applies the rest of the committed log on start).

use std::collections::BTreeMap;

use cairn_kv::Store;

use super::StartError;
use crate::raft::log_store::LogStore;
use crate::raft::state_machine::{applied_log_id, applied_membership};
use crate::raft::LogId;

/// What forcing a new cluster kept: the last committed index and the
/// store's revision (the recovery point).
#[derive(Clone, Copy, Debug)]
pub struct Forced {
    /// The last Raft index kept.
    pub committed: u64,
    /// The kv store's revision when it started (entries committed but not
    /// yet applied add theirs as Raft applies them).
    pub revision: i64,
}

fn refused(reason: String) -> StartError {
    StartError::Config(format!("--force-new-cluster: {reason}"))
}

/// Rewrites `log`'s tail so that member `me` starts as a one-member
/// cluster.
pub(super) fn force_new_cluster(
    log: &LogStore,
    store: &Store,
    me: u64,
) -> Result<Forced, StartError> {
    let raw = log.raft_log();
    let applied = applied_log_id(store)?;
    let committed = raw
        .committed()
        .max(applied.map(|l| l.index))
        .ok_or_else(|| refused("this member never saw anything committed".into()))?;
    let term = raw
        .term(committed)
        .or_else(|| {
            raw.purged()
                .filter(|p| p.index == committed)
                .map(|p| p.term)
        })
        .or_else(|| {
            applied
                .filter(|a| a.index == committed)
                .map(|a| a.leader_id.term)
        })
        .ok_or_else(|| {
            refused(format!(
                "the term of committed entry {committed} is unknown"
            ))
        })?;
    let in_log = if committed >= raw.first_index() {
        log.last_membership(committed)?
    } else {
        None
    };
    let membership = match in_log {
        Some(m) => m,
        None => applied_membership(store)?.membership().clone(),
    };
    let mut mine = membership
        .get_node(&me)
        .cloned()
        .ok_or_else(|| refused(format!("member {me:x} is not in its cluster's membership")))?;
    mine.learner = false;
    let members = BTreeMap::from([(me, mine)]);
    log.commit_membership(LogId::new_term_index(term, committed + 1), &members)?;
    let forced = Forced {
        committed,
        revision: store.current_revision(),
    };
    tracing::warn!(
        committed = forced.committed,
        revision = forced.revision,
        "forced a new cluster of this member alone; add members with `member add`, and restart without --force-new-cluster"
    );
    Ok(forced)
}
