//! A member's space: its store's size sampled in the background, and the
//! quota check a write that adds data passes before it is proposed
//! (etcd's: over `--quota-backend-bytes`, the member raises NOSPACE
//! through Raft and refuses the write).
//!
//! Owns: [`Inner::check_space`] and the sampling task.
//!
//! May not: refuse a write at apply (the state machine does that, from
//! the replicated alarms, the same on every member).

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairnpb::{self, command::Op};
use cairn_proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
use prost::Message;
use tokio::sync::watch;

use super::Inner;
use crate::error::Error;

/// How often the store's size is measured.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

impl Inner {
    /// Refuses `cmd` if it adds data while NOSPACE is raised, or would
    /// take the store over its quota (raising NOSPACE then).
    pub(super) async fn check_space(&self, cmd: &cairnpb::Command) -> Result<(), Error> {
        if !crate::alarm::adds_data(cmd) {
            return Ok(());
        }
        if self.alarms.nospace() {
            return Err(Error::NoSpace);
        }
        if !self.quota.exceeded_by(cmd.encoded_len() as u64) {
            return Ok(());
        }
        if self.quota.start_raising() {
            tracing::warn!(
                size = self.quota.size(),
                quota = self.quota.bytes,
                "the store is over its quota: raising NOSPACE"
            );
            let raise = AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: self.id,
                alarm: AlarmType::Nospace as i32,
            };
            let cmd = cairnpb::Command {
                op: Some(Op::Alarm(raise)),
                user: None,
            };
            if let Err(e) = self.replicate(cmd).await {
                tracing::warn!(error = %e, "raising NOSPACE failed; the next write over the quota tries again");
            }
            self.quota.raised();
        }
        Err(Error::NoSpace)
    }

    /// Measures the store's size every [`SAMPLE_EVERY`] until the member
    /// stops.
    pub(super) async fn sample_size(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let store = Arc::clone(&self.store);
            match tokio::task::spawn_blocking(move || store.size_on_disk()).await {
                Ok(Ok(size)) => self.quota.sampled(size),
                Ok(Err(e)) => tracing::warn!(error = %e, "measuring the store's size"),
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
