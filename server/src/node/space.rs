//! A member's space: its store's size sampled in the background, and the
//! quota check a write that adds data passes before it is proposed
//! (etcd's: over `--quota-backend-bytes`, the member raises NOSPACE
//! through Raft and refuses the write); the data dir's disk watched, so
//! that a disk filling up raises NOSPACE before a write finds it full,
//! and clears it when room returns ([`crate::alarm::DiskRoom`]).
//!
//! Owns: [`Inner::check_space`] and the sampling tasks.
//!
//! May not: refuse a write at apply (the state machine does that, from
//! the replicated alarms, the same on every member).

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairnpb::{self, command::Op};
use cairn_proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
use prost::Message;
use rustix::fs::statvfs;
use tokio::sync::watch;

use super::Inner;
use crate::error::Error;

/// How often the store's size is measured.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// How often the data dir's disk is measured (one `statvfs`).
const DISK_EVERY: Duration = Duration::from_millis(100);

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
        let cost = cmd.encoded_len() as u64;
        if self.disk.low() {
            // The watcher raises NOSPACE; until it is applied, this member
            // refuses on its own.
            return Err(Error::NoSpace);
        }
        // The log, the store's journal and its tables each hold it once.
        self.disk.spend(cost.saturating_mul(3));
        if self.quota.admit(cost) {
            return Ok(());
        }
        if self.quota.start_raising() {
            tracing::warn!(
                size = self.quota.size(),
                quota = self.quota.bytes,
                "the store is over its quota: raising NOSPACE"
            );
            if let Err(e) = self.nospace(AlarmAction::Activate).await {
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

    /// Proposes `action` on this member's NOSPACE alarm.
    async fn nospace(&self, action: AlarmAction) -> Result<(), Error> {
        let req = AlarmRequest {
            action: action as i32,
            member_id: self.id,
            alarm: AlarmType::Nospace as i32,
        };
        self.replicate(cairnpb::Command {
            op: Some(Op::Alarm(req)),
            user: None,
        })
        .await
        .map(|_| ())
    }

    /// Measures the free space of the data dir's disk every
    /// [`DISK_EVERY`]; raises NOSPACE under the reserve and clears the
    /// one it raised with twice the reserve free, until the member stops.
    pub(super) async fn watch_disk(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let dir = self.config.data_dir.clone();
        loop {
            match statvfs(&dir) {
                Ok(st) => self.disk.sampled(st.f_bavail.saturating_mul(st.f_frsize)),
                Err(e) => {
                    tracing::warn!(error = %e, dir = %dir.display(), "measuring the data dir's free space")
                }
            }
            if self.disk.low() && !self.disk.raised() {
                tracing::warn!(
                    free = self.disk.free(),
                    reserve = self.disk.reserve,
                    "the data dir's disk is nearly full: raising NOSPACE (writes that add data are refused until there is room again)"
                );
                match self.nospace(AlarmAction::Activate).await {
                    Ok(()) => self.disk.set_raised(true),
                    Err(e) => tracing::warn!(error = %e, "raising NOSPACE failed; trying again"),
                }
            } else if self.disk.raised() && self.disk.roomy() && !self.quota.exceeded_by(0) {
                tracing::info!(
                    free = self.disk.free(),
                    "room on the data dir's disk again: clearing NOSPACE"
                );
                match self.nospace(AlarmAction::Deactivate).await {
                    Ok(()) => self.disk.set_raised(false),
                    Err(e) => tracing::warn!(error = %e, "clearing NOSPACE failed; trying again"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(DISK_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
