//! Linearizable reads: the read index (ReadIndex, confirmed by a quorum)
//! and the wait until this member has applied up to it.
//!
//! Owns: [`Inner::read_barrier`] and the leader's read index. Reads
//! themselves are served from the store by the caller.
//!
//! May not: write, or read the store (callers do, after the barrier).

use std::time::Instant;

use openraft::errors::RaftError;
use openraft::ReadPolicy;

use super::route::{unexpected, Resend};
use super::Inner;
use crate::error::Error;
use crate::raft::forward::{ForwardRequest, ForwardResponse};

/// Why the leader's read index could not be had.
type ReadIndexError = RaftError<
    crate::raft::TypeConfig,
    openraft::error::LinearizableReadError<crate::raft::TypeConfig>,
>;

impl Inner {
    /// The read index as leader: openraft's (leadership confirmed by a
    /// quorum), but never below the log this process started with, which
    /// may hold acknowledged writes that openraft does not yet know to be
    /// committed. (Capped at the current last index: a log that was cut
    /// since lost only entries that were never committed.) Fails with an
    /// API error on a follower.
    pub(super) async fn local_read_index(&self) -> Result<u64, ReadIndexError> {
        let r = self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await?;
        let last = self.log.raft_log().last_log_id().map_or(0, |l| l.index);
        Ok(r.index().max(self.startup_last_log.min(last)))
    }

    /// Waits until this member's state reflects every write committed
    /// before the call (etcd's linearizable read).
    pub async fn read_barrier(&self) -> Result<(), Error> {
        let deadline = Instant::now() + self.timeout();
        let index = self
            .route(
                deadline,
                Resend::Always,
                || ForwardRequest::ReadIndex,
                || async move {
                    match self.local_read_index().await {
                        Ok(i) => Ok(Some(i)),
                        Err(RaftError::APIError(_)) => Ok(None),
                        Err(e) => Err(Error::Raft(e.to_string())),
                    }
                },
                |r| match r {
                    ForwardResponse::ReadIndex(i) => Ok(i),
                    other => Err(unexpected(other)),
                },
            )
            .await?;
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map(|_| ())
            .map_err(|_| Error::Timeout)
    }
}
