//! Auto-compaction (`--auto-compaction-mode`, `--auto-compaction-retention`)
//! with etcd's meaning, run by the leader (every member runs the task; only
//! the one leading compacts, through Raft, as the member's own command).
//!
//! - `periodic` with a retention R: the current revision is sampled every
//!   min(R, 1h)/10, and every min(R, 1h) the history is compacted to the
//!   revision sampled R ago (so about R of history is kept).
//! - `revision` with a retention N: every 5 minutes, the history is
//!   compacted to the current revision minus N.
//!
//! Owns: [`AutoCompaction`]'s schedule and decisions.
//!
//! May not: compact anything but through a proposal (every member applies
//! the same compaction).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::cairnpb::command::Op;
use cairn_proto::etcdserverpb::CompactionRequest;
use tokio::sync::watch;

use super::Inner;
use crate::config::AutoCompaction;
use crate::error::Error;

/// How often the revision mode compacts (etcd's).
const REVISION_EVERY: Duration = Duration::from_secs(5 * 60);

/// The longest periodic compaction interval (etcd's).
const PERIODIC_MAX_EVERY: Duration = Duration::from_secs(3600);

/// Samples per periodic interval (etcd's).
const PERIODIC_SAMPLES: u32 = 10;

/// Decides when to compact, and to which revision.
enum Compactor {
    Periodic {
        retention: Duration,
        every: Duration,
        samples: VecDeque<(Instant, i64)>,
        last: Instant,
    },
    Revision {
        keep: i64,
        last: i64,
    },
}

impl Compactor {
    fn new(mode: AutoCompaction, now: Instant) -> Compactor {
        match mode {
            AutoCompaction::Periodic(retention) => Compactor::Periodic {
                retention,
                every: retention.min(PERIODIC_MAX_EVERY),
                samples: VecDeque::new(),
                last: now,
            },
            AutoCompaction::Revision(keep) => Compactor::Revision { keep, last: 0 },
        }
    }

    /// How often [`Compactor::tick`] is called.
    fn tick_every(&self) -> Duration {
        match self {
            Compactor::Periodic { every, .. } => *every / PERIODIC_SAMPLES,
            Compactor::Revision { .. } => REVISION_EVERY,
        }
    }

    /// At `now`, with the store at `revision`: the revision to compact
    /// to, if it is time.
    fn tick(&mut self, now: Instant, revision: i64) -> Option<i64> {
        match self {
            Compactor::Periodic {
                retention,
                every,
                samples,
                last,
            } => {
                samples.push_back((now, revision));
                // The newest sample at least `retention` old is the target;
                // older ones are of no more use.
                let old_enough = |t: Instant| now.saturating_duration_since(t) >= *retention;
                while samples.len() > 1 && old_enough(samples[1].0) {
                    samples.pop_front();
                }
                if now.saturating_duration_since(*last) < *every {
                    return None;
                }
                let (t, rev) = *samples.front()?;
                if !old_enough(t) {
                    return None;
                }
                *last = now;
                Some(rev).filter(|r| *r > 0)
            }
            Compactor::Revision { keep, last } => {
                let target = revision - *keep;
                if target <= 0 || target == *last {
                    return None;
                }
                *last = target;
                Some(target)
            }
        }
    }
}

impl Inner {
    /// Compacts as `mode` says while this member leads, until it stops.
    pub(super) async fn run_auto_compaction(
        self: Arc<Self>,
        mode: AutoCompaction,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut compactor = Compactor::new(mode, Instant::now());
        loop {
            tokio::select! {
                _ = tokio::time::sleep(compactor.tick_every()) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if !self.leads() {
                // A new leader starts its own schedule (etcd pauses the
                // compactor of a member that does not lead).
                compactor = Compactor::new(mode, Instant::now());
                continue;
            }
            let Some(rev) = compactor.tick(Instant::now(), self.store.current_revision()) else {
                continue;
            };
            if rev <= self.store.compacted_revision() {
                continue;
            }
            let req = CompactionRequest {
                revision: rev,
                physical: false,
            };
            match self.propose(Op::Compact(req)).await {
                Ok(_) => tracing::info!(revision = rev, "auto-compaction compacted the history"),
                Err(Error::Compacted) => {}
                Err(e) => tracing::warn!(revision = rev, error = %e, "auto-compaction failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_keeps_the_retention_of_history() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Compactor::new(AutoCompaction::Periodic(s(10)), t0);
        assert_eq!(c.tick_every(), s(1));
        // One revision a second; nothing is 10 s old before t0 + 10 s.
        let mut got = Vec::new();
        for i in 0..=25u64 {
            got.push(c.tick(t0 + s(i), 100 + i as i64));
        }
        // First compaction at t0 + 10 s, to the revision of t0 (100);
        // the next 10 s later, to the revision of t0 + 10 s (110).
        let compactions: Vec<(usize, i64)> = got
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.map(|r| (i, r)))
            .collect();
        assert_eq!(compactions, vec![(10, 100), (20, 110)]);
    }

    #[test]
    fn periodic_interval_is_at_most_an_hour() {
        let c = Compactor::new(
            AutoCompaction::Periodic(Duration::from_secs(72 * 3600)),
            Instant::now(),
        );
        assert_eq!(c.tick_every(), Duration::from_secs(360));
    }

    #[test]
    fn revision_keeps_the_last_n() {
        let t0 = Instant::now();
        let mut c = Compactor::new(AutoCompaction::Revision(1000), t0);
        assert_eq!(c.tick(t0, 500), None);
        assert_eq!(c.tick(t0, 1500), Some(500));
        // Nothing written since: nothing to do.
        assert_eq!(c.tick(t0, 1500), None);
        assert_eq!(c.tick(t0, 1800), Some(800));
    }
}
