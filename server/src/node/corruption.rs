//! Corruption checks. Periodic (etcd's `--experimental-corrupt-check-time`):
//! the leader compares its HashKV with every other member's at the lower
//! of their current revisions, and raises CORRUPT for a member whose hash
//! differs at the same compaction revision. At start
//! (`--experimental-initial-corrupt-check`): a member compares itself
//! with the others the same way and refuses to serve if one differs. An
//! unreachable member, or one compacted differently, is skipped.
//!
//! Owns: the check and its schedule.
//!
//! May not: refuse anything itself (the CORRUPT alarm does, everywhere).

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairnpb::command::Op;
use cairn_proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
use tokio::sync::watch;

use super::Inner;
use crate::error::Error;
use crate::raft::forward::{ForwardRequest, ForwardResponse};

/// How long the start-up check waits for Raft to publish the membership
/// it loaded from disk.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(5);

impl Inner {
    /// Checks every `every` while this member leads, until it stops.
    pub(super) async fn run_corrupt_check(
        self: Arc<Self>,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if !self.leads() {
                continue;
            }
            if let Err(e) = self.check_corruption().await {
                tracing::warn!(error = %e, "corruption check failed");
            }
        }
    }

    /// Compares every other member's HashKV with this one's; raises
    /// CORRUPT for each that differs. Answers the members found corrupt.
    pub(crate) async fn check_corruption(&self) -> Result<Vec<u64>, Error> {
        let corrupt = self.differing_members().await?;
        for &id in &corrupt {
            let raise = AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: id,
                alarm: AlarmType::Corrupt as i32,
            };
            self.propose(Op::Alarm(raise)).await?;
        }
        Ok(corrupt)
    }

    /// etcd's `--experimental-initial-corrupt-check`: refuses to serve a
    /// store that differs from a reachable member's.
    pub(crate) async fn initial_corrupt_check(&self) -> Result<(), Error> {
        // Raft publishes the membership it loaded from disk a moment after
        // it starts; comparing before that would compare with no one.
        let me = self.id;
        let loaded = self
            .raft
            .wait(Some(MEMBERSHIP_WAIT))
            .metrics(
                |m| {
                    m.membership_config
                        .membership()
                        .nodes()
                        .any(|(id, _)| *id == me)
                },
                "membership loaded",
            )
            .await;
        if loaded.is_err() {
            tracing::warn!("membership not known yet; the initial corruption check compares with the members known now");
        }
        let differ = self.differing_members().await?;
        if differ.is_empty() {
            tracing::info!("initial corruption check passed");
            return Ok(());
        }
        Err(Error::Internal(format!(
            "{:x} found data inconsistency with peers",
            self.id
        )))
    }

    /// The other members whose HashKV differs from this member's at the
    /// same revision and compaction (the lower of the two current
    /// revisions). Unreachable members are skipped.
    async fn differing_members(&self) -> Result<Vec<u64>, Error> {
        let current = self.store.current_revision();
        let mut differ = Vec::new();
        for m in self.members() {
            if m.id == self.id {
                continue;
            }
            let Some(url) = m.member.peer_urls.first() else {
                continue;
            };
            let answer = tokio::time::timeout(
                Duration::from_secs(5),
                self.peers
                    .forward(url, ForwardRequest::HashKv { revision: current }),
            )
            .await;
            let (hash, compact_revision, revision) = match answer {
                Ok(Ok(ForwardResponse::HashKv {
                    hash,
                    compact_revision,
                    revision,
                })) => (hash, compact_revision, revision),
                other => {
                    tracing::warn!(
                        member = %format!("{:x}", m.id),
                        answer = ?other,
                        "cannot fetch the hash of a member; not compared"
                    );
                    continue;
                }
            };
            let store = Arc::clone(&self.store);
            let mine = tokio::task::spawn_blocking(move || store.hash_kv(revision))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
            if compact_revision != mine.compact_revision {
                tracing::warn!(
                    member = %format!("{:x}", m.id),
                    compact_revision,
                    mine = mine.compact_revision,
                    "a member is compacted differently; hashes not compared"
                );
                continue;
            }
            if hash == mine.hash {
                continue;
            }
            tracing::error!(
                member = %format!("{:x}", m.id),
                revision,
                hash = mine.hash,
                member_hash = hash,
                "a member's data differs from this member's at the same revision"
            );
            differ.push(m.id);
        }
        Ok(differ)
    }
}
