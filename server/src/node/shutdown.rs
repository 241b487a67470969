//! Stopping a member: leadership handed to the most caught-up voter
//! first (so the cluster does not wait an election timeout), then Raft,
//! the peer service and every background task stopped, and the store
//! flushed.
//!
//! Owns: [`Inner::shutdown`].
//!
//! May not: drop anything before the leadership handover has had its
//! chance (the peer service must answer the new leader meanwhile).

use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::rt::WatchReceiver;
use openraft::ServerState;
use tokio::task::JoinHandle;

use super::Inner;

impl Inner {
    pub(super) async fn shutdown(&self) {
        if self.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        // The peer service keeps running during the handoff: the new
        // leader must reach this member to tell it about the new term.
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state == ServerState::Leader {
            let target = self
                .voters()
                .into_iter()
                .filter(|v| *v != self.id)
                .max_by_key(|v| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(v).cloned())
                        .flatten()
                        .map(|l| l.index)
                });
            if let Some(to) = target {
                tracing::info!(to = %format!("{to:x}"), "handing leadership over before stopping");
                if self.raft.trigger().transfer_leader(to).await.is_ok() {
                    let me = self.id;
                    let _ = self
                        .raft
                        .wait(Some(Duration::from_millis(
                            self.config.election_timeout * 2,
                        )))
                        .metrics(
                            move |m| m.current_leader.is_some_and(|l| l != me),
                            "leadership handed over",
                        )
                        .await;
                }
            }
        }
        // How long servers, background tasks and Raft get to end on their
        // own (`--shutdown-grace`).
        let grace = self.config.shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        self.stop.send_replace(true);
        match tokio::time::timeout_at(deadline, self.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "raft shutdown"),
            Err(_) => {
                tracing::warn!(grace = ?grace, "raft did not stop within the grace period")
            }
        }
        let tasks: Vec<JoinHandle<()>> = match self.tasks.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => Vec::new(),
        };
        // Servers end gracefully (answering what is in flight) unless a
        // connection keeps them: then they are cut, so that a stop is
        // bounded whatever a client or peer does.
        let mut cut = 0;
        for mut t in tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                t.abort();
                cut += 1;
            }
        }
        if cut > 0 {
            tracing::warn!(
                tasks = cut,
                grace = ?grace,
                "stopped tasks that had not ended within the grace period"
            );
        }
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "flushing the store at shutdown");
        }
    }
}
