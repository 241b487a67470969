//! Watch guarantees, checked against the final history of the watched
//! prefix (a watch from revision 1 opened after the run, once the cluster
//! is healed) and the acknowledged puts:
//!
//! - the final history itself: revisions strictly increase; every
//!   acknowledged put is in it at the revision its response named, with
//!   its value; every event's value was written by some invoked put;
//!   every prev_kv is the key's previous value in it;
//! - each watcher (ordered, unique, reliable, resumable across
//!   reconnects): what it saw is exactly the final history up to the last
//!   revision it saw, prev_kv included; no gap, no duplicate, nothing out
//!   of order;
//! - progress (bookmarkable): a notification at revision R came after
//!   every event at or below R;
//! - every watcher caught up with the end once the faults were healed.

use std::collections::{HashMap, HashSet};

use crate::history::{Completed, Kind, Op};
use crate::workload::watch::{Seen, WatcherLog};

/// The watch verdict.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub events: usize,
    pub watchers: usize,
    pub violations: Vec<String>,
}

impl Report {
    pub fn valid(&self) -> bool {
        self.violations.is_empty()
    }
}

const MAX_REPORTED: usize = 20;

/// Checks `watchers` against `truth` (the final history of the prefix)
/// and the puts in `history`.
pub fn check(history: &[Completed], truth: &[Seen], watchers: &[WatcherLog]) -> Report {
    let mut v: Vec<String> = Vec::new();
    let push = |v: &mut Vec<String>, s: String| {
        if v.len() < MAX_REPORTED {
            v.push(s);
        }
    };

    // The final history on its own.
    for w in truth.windows(2) {
        if w[1].revision <= w[0].revision {
            push(
                &mut v,
                format!(
                    "final history: revision {} after {}",
                    w[1].revision, w[0].revision
                ),
            );
        }
    }
    let mut last: HashMap<&str, u64> = HashMap::new();
    for e in truth {
        let expected = last.get(e.key.as_str()).copied();
        if e.prev != expected {
            push(
                &mut v,
                format!(
                    "final history: prev_kv of {} at revision {} is {:?}, the key held {:?}",
                    e.key, e.revision, e.prev, expected
                ),
            );
        }
        match e.value {
            Some(x) => last.insert(&e.key, x),
            None => last.remove(e.key.as_str()),
        };
    }
    let at: HashMap<i64, &Seen> = truth.iter().map(|e| (e.revision, e)).collect();
    let mut invoked: HashSet<(&str, u64)> = HashSet::new();
    for c in history {
        if let Op::Put {
            key,
            value,
            revision,
        } = &c.op
        {
            invoked.insert((key, *value));
            if c.kind != Kind::Ok {
                continue;
            }
            let rev = revision.unwrap_or_default();
            match at.get(&rev) {
                Some(e) if e.key == *key && e.value == Some(*value) => {}
                Some(e) => push(&mut v, format!(
                    "acknowledged put {key}={value} at revision {rev} is {}={:?} in the final history",
                    e.key, e.value
                )),
                None => push(&mut v, format!(
                    "acknowledged put {key}={value} at revision {rev} is missing from the final history (lost write)"
                )),
            }
        }
    }
    for e in truth {
        if let Some(x) = e.value {
            if !invoked.contains(&(e.key.as_str(), x)) {
                push(
                    &mut v,
                    format!(
                        "final history: {}={x} at revision {} was never written",
                        e.key, e.revision
                    ),
                );
            }
        }
    }

    // Each watcher against it.
    for w in watchers {
        let who = &w.endpoint;
        let seen_to = w.events.last().map(|e| e.revision).unwrap_or(0);
        let expected: Vec<&Seen> = truth.iter().filter(|e| e.revision <= seen_to).collect();
        let mut reported = false;
        for (i, e) in w.events.iter().enumerate() {
            if i > 0 && e.revision <= w.events[i - 1].revision {
                push(
                    &mut v,
                    format!(
                        "watcher on {who}: revision {} after {} (event {i}: {})",
                        e.revision,
                        w.events[i - 1].revision,
                        if e.revision == w.events[i - 1].revision {
                            "duplicate"
                        } else {
                            "went back"
                        }
                    ),
                );
                reported = true;
                break;
            }
            match expected.get(i) {
                Some(t) if *t == e => {}
                Some(t) => {
                    push(
                        &mut v,
                        format!(
                            "watcher on {who}: event {i} is {e:?}, the history has {t:?} there{}",
                            if t.revision < e.revision {
                                " (gap: missed event)"
                            } else {
                                ""
                            }
                        ),
                    );
                    reported = true;
                    break;
                }
                None => {
                    push(
                        &mut v,
                        format!("watcher on {who}: event {i} {e:?} is not in the final history"),
                    );
                    reported = true;
                    break;
                }
            }
        }
        if !reported && w.events.len() != expected.len() {
            push(
                &mut v,
                format!(
                    "watcher on {who}: saw {} events up to revision {seen_to}, the history has {}",
                    w.events.len(),
                    expected.len()
                ),
            );
        }
        for &(rev, count) in &w.progress {
            let due = truth.iter().filter(|e| e.revision <= rev).count();
            if count < due {
                push(&mut v, format!(
                    "watcher on {who}: progress at revision {rev} after {count} events, but {due} events are at or below it"
                ));
                break;
            }
        }
        if !w.caught_up {
            push(&mut v, format!(
                "watcher on {who}: never caught up with the end after the faults healed (saw up to revision {seen_to}; last errors: {:?})",
                w.errors.iter().rev().take(3).collect::<Vec<_>>()
            ));
        }
    }
    Report {
        events: truth.len(),
        watchers: watchers.len(),
        violations: v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::History;

    fn seen(revision: i64, key: &str, value: u64, prev: Option<u64>) -> Seen {
        Seen {
            revision,
            key: key.into(),
            value: Some(value),
            prev,
        }
    }

    fn setup() -> (Vec<Completed>, Vec<Seen>) {
        let h = History::in_memory();
        let puts = [(2, "w/0", 10), (3, "w/1", 11), (5, "w/0", 12)];
        for (i, &(rev, key, value)) in puts.iter().enumerate() {
            let op = |revision| Op::Put {
                key: key.into(),
                value,
                revision,
            };
            h.record(i as u64, Kind::Invoke, op(None), None);
            h.record(i as u64, Kind::Ok, op(Some(rev)), None);
        }
        let truth = vec![
            seen(2, "w/0", 10, None),
            seen(3, "w/1", 11, None),
            seen(5, "w/0", 12, Some(10)),
        ];
        (crate::history::pair(&h.events()), truth)
    }

    fn watcher(events: Vec<Seen>, progress: Vec<(i64, usize)>) -> WatcherLog {
        WatcherLog {
            endpoint: "m".into(),
            events,
            progress,
            caught_up: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_faithful_watcher_passes() {
        let (h, truth) = setup();
        let w = watcher(truth.clone(), vec![(3, 2), (6, 3)]);
        let r = check(&h, &truth, &[w]);
        assert!(r.valid(), "{:?}", r.violations);
    }

    #[test]
    fn gaps_duplicates_reordering_and_early_progress_are_caught() {
        let (h, truth) = setup();
        let cases = [
            watcher(vec![truth[0].clone(), truth[2].clone()], vec![]),
            watcher(
                vec![truth[0].clone(), truth[0].clone(), truth[1].clone()],
                vec![],
            ),
            watcher(vec![truth[1].clone(), truth[0].clone()], vec![]),
            watcher(truth.clone(), vec![(3, 1)]),
            watcher(
                vec![
                    truth[0].clone(),
                    seen(3, "w/1", 11, Some(4)),
                    truth[2].clone(),
                ],
                vec![],
            ),
            WatcherLog {
                caught_up: false,
                ..watcher(truth.clone(), vec![])
            },
        ];
        for (i, w) in cases.into_iter().enumerate() {
            let r = check(&h, &truth, &[w]);
            assert!(!r.valid(), "case {i} passed");
        }
    }

    #[test]
    fn a_lost_acknowledged_put_or_a_phantom_value_is_caught() {
        let (h, truth) = setup();
        // The put of w/1 at revision 3 is gone.
        let lost = Seen {
            prev: Some(10),
            ..truth[2].clone()
        };
        let r = check(&h, &[truth[0].clone(), lost], &[]);
        assert!(!r.valid());
        let mut phantom = truth.clone();
        phantom.push(seen(6, "w/1", 99, Some(11)));
        let r = check(&h, &phantom, &[]);
        assert!(!r.valid());
    }
}
