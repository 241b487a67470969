//! Leadership as seen from this member, followed for metrics: each
//! change of leader counts in `etcd_server_leader_changes_seen_total`
//! (etcd counts the first leader a member sees too).

use std::sync::Arc;

use openraft::rt::WatchReceiver;
use tokio::sync::watch;

use super::Inner;

impl Inner {
    /// Counts leader changes until the member stops.
    pub(super) async fn follow_leadership(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut metrics = self.raft.server_metrics();
        let mut last = None;
        loop {
            let leader = metrics.borrow_watched().current_leader;
            if leader.is_some() && leader != last {
                self.metrics.leader_changes.inc();
            }
            if leader.is_some() {
                last = leader;
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
