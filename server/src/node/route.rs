//! Leader routing: who leads as far as this member can tell, and the one
//! routine that runs a request on the leader — here if this member leads,
//! forwarded over the peer network otherwise — retrying while the
//! leadership moves, until the request's deadline.
//!
//! Owns: [`Inner::leader`], [`Inner::require_leader`], the wait for a
//! leader, and [`Inner::route`]. It decides nothing about what a request
//! does; callers pass the local step and read the leader's answer.
//!
//! May not: match on error messages (every decision is on typed
//! errors), or carry out a request itself.

use std::future::Future;
use std::time::{Duration, Instant};

use openraft::rt::WatchReceiver;

use super::Inner;
use crate::error::Error;
use crate::raft::forward::{ForwardError, ForwardRequest, ForwardResponse};
use crate::raft::Member;

/// How long to wait before asking again when the leader moved.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Whether a forwarded request whose answer was lost may be sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Only if it never reached the leader: it changes state, and may
    /// have been carried out (a lost answer is [`Error::LeaderChanged`]).
    IfNotSent,
    /// Always: asking twice does no harm (reads, renewals).
    Always,
}

/// The error for a leader's reply of the wrong kind.
pub(crate) fn unexpected(r: ForwardResponse) -> Error {
    Error::Internal(format!("unexpected answer {r:?}"))
}

impl Inner {
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

    /// Whether Raft names this member the leader (without asking whether
    /// a quorum still follows it; proposing finds that out).
    pub(crate) fn leads(&self) -> bool {
        self.raft.metrics().borrow_watched().current_leader == Some(self.id)
    }

    /// Fails with [`Error::NoLeader`] unless a leader is known.
    pub fn require_leader(&self) -> Result<(), Error> {
        if self.leader().is_some() {
            Ok(())
        } else {
            Err(Error::NoLeader)
        }
    }

    /// The leader Raft names and its member record, waiting for one until
    /// `deadline`.
    async fn wait_leader(&self, deadline: Instant) -> Result<(u64, Member), Error> {
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
                return Err(Error::NoLeader);
            }
            if tokio::time::timeout(left, rx.changed()).await.is_err() {
                return Err(Error::NoLeader);
            }
        }
    }

    /// Runs a request on the leader until `deadline`.
    ///
    /// Each round first tries `local`, which answers `Ok(None)` when this
    /// member is not the leader (having changed nothing); otherwise the
    /// request (built by `request`) goes to the leader Raft names, and `answer` reads the
    /// leader's reply (see [`unexpected`] for a reply it did not expect). A
    /// leader that says it no longer leads, or that could not be reached
    /// before the request left, is asked again after the leadership
    /// settles; `resend` says what to do when an answer is lost. An error
    /// from `local` or from the leader ends the request.
    pub(crate) async fn route<T, L>(
        &self,
        deadline: Instant,
        resend: Resend,
        request: impl Fn() -> ForwardRequest,
        mut local: impl FnMut() -> L,
        answer: impl Fn(ForwardResponse) -> Result<T, Error>,
    ) -> Result<T, Error>
    where
        L: Future<Output = Result<Option<T>, Error>>,
    {
        loop {
            if let Some(v) = local().await? {
                return Ok(v);
            }
            let (leader, member) = self.wait_leader(deadline).await?;
            if leader != self.id {
                let url = member.peer_urls.first().ok_or(Error::NoLeader)?;
                match self.peers.forward(url, request()).await {
                    Ok(ForwardResponse::NotLeader) => {}
                    Ok(ForwardResponse::Error(e)) => return Err(e),
                    Ok(r) => return answer(r),
                    Err(ForwardError::NotSent(why)) => {
                        tracing::debug!(%why, "forwarding to the leader; will retry");
                    }
                    Err(ForwardError::Lost(why)) if resend == Resend::Always => {
                        tracing::debug!(%why, "forwarding to the leader; will retry");
                    }
                    Err(ForwardError::Lost(_)) => return Err(Error::LeaderChanged),
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}
