//! Corruption checks (etcd's `--experimental-corrupt-check-time`): the
//! leader compares its HashKV with every other member's at its current
//! revision, and raises CORRUPT for a member whose hash differs at the
//! same compaction revision. A member behind (the revision not applied
//! there yet), unreachable or compacted differently is skipped until the
//! next check.
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
        let revision = self.store.current_revision();
        let store = Arc::clone(&self.store);
        let mine = tokio::task::spawn_blocking(move || store.hash_kv(revision))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let mut corrupt = Vec::new();
        for m in self.members() {
            if m.id == self.id {
                continue;
            }
            let Some(url) = m.member.peer_urls.first() else {
                continue;
            };
            let answer = self
                .peers
                .forward(url, ForwardRequest::HashKv { revision })
                .await;
            let Ok(ForwardResponse::HashKv {
                hash,
                compact_revision,
            }) = answer
            else {
                continue;
            };
            if compact_revision != mine.compact_revision || hash == mine.hash {
                continue;
            }
            tracing::error!(
                member = %format!("{:x}", m.id),
                revision,
                leader_hash = mine.hash,
                member_hash = hash,
                "a member's data differs from the leader's at the same revision: raising CORRUPT"
            );
            let raise = AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: m.id,
                alarm: AlarmType::Corrupt as i32,
            };
            self.propose(Op::Alarm(raise)).await?;
            corrupt.push(m.id);
        }
        Ok(corrupt)
    }
}
