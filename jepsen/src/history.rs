//! The history of a run: every invocation and completion of a client
//! operation, and every fault the nemesis injected or healed, with
//! monotonic timestamps (nanoseconds since the run started). Written as
//! JSON lines while the run goes on, so that a run that dies still leaves
//! what it did; kept in memory for the checkers.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What an event says about its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The client is about to send the operation.
    Invoke,
    /// The operation took effect; its result is in the event.
    Ok,
    /// The operation certainly did not take effect.
    Fail,
    /// Unknown outcome (timeout, lost connection): it may or may not have
    /// taken effect, at any time after its invocation.
    Info,
}

/// What an operation does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Op {
    /// Read a register. `value` is the result on completion (None: absent).
    Read { key: String, value: Option<u64> },
    /// Write a register.
    Write { key: String, value: u64 },
    /// Compare-and-set: if the register holds `from`, set it to `to`.
    /// `swapped` is the result on completion.
    Cas {
        key: String,
        from: u64,
        to: u64,
        swapped: Option<bool>,
    },
    /// Put to a watched key (the watch workload); `revision` is the
    /// revision the put created, on completion.
    Put {
        key: String,
        value: u64,
        revision: Option<i64>,
    },
    /// Grant a lease; `lease` and `ttl` (seconds) are the result.
    Grant { lease: i64, ttl: i64 },
    /// Put a key attached to a lease; `renewed` tells whether its client
    /// keeps the lease alive to the end or abandons it.
    Attach {
        key: String,
        lease: i64,
        renewed: bool,
    },
    /// One keep-alive of a lease; `ttl` is the result (0: not found).
    Renew { lease: i64, ttl: Option<i64> },
    /// Read a leased key; `present` is the result. `last` marks the final
    /// reads after the run, once every fault was healed and every
    /// abandoned lease had time to expire.
    ReadLeased {
        key: String,
        lease: i64,
        present: Option<bool>,
        last: bool,
    },
    /// A transaction over lists (the append workload): appends and reads,
    /// applied atomically; reads carry their result on completion.
    Txn { mops: Vec<Mop> },
    /// The nemesis starts a fault.
    Fault { name: String, detail: String },
    /// The nemesis heals a fault.
    Heal { name: String },
}

/// One micro-operation of a list transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "m", rename_all = "snake_case")]
pub enum Mop {
    /// Append `value` to the list at `key`.
    Append { key: String, value: u64 },
    /// Read the list at `key` (None until completed).
    Read { key: String, list: Option<Vec<u64>> },
}

/// One line of the history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    /// Nanoseconds since the run started (monotonic clock).
    pub time: u64,
    /// The client process (a logical client: one operation at a time);
    /// the nemesis is process u64::MAX.
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(flatten)]
    pub op: Op,
    /// The member the client talked to, or the error on fail/info.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
}

/// The process id the nemesis records its events under.
pub const NEMESIS: u64 = u64::MAX;

/// A shared, append-only history.
#[derive(Clone)]
pub struct History {
    inner: Arc<Mutex<Inner>>,
    start: Instant,
}

struct Inner {
    events: Vec<Event>,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl History {
    /// A history that also writes JSON lines to `path`.
    pub fn create(path: &Path) -> Result<History> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("create history {}", path.display()))?;
        Ok(History {
            inner: Arc::new(Mutex::new(Inner {
                events: Vec::new(),
                file: Some(std::io::BufWriter::new(file)),
            })),
            start: Instant::now(),
        })
    }

    /// A history kept in memory only.
    pub fn in_memory() -> History {
        History {
            inner: Arc::new(Mutex::new(Inner {
                events: Vec::new(),
                file: None,
            })),
            start: Instant::now(),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Records an event stamped now; returns the stamp.
    pub fn record(&self, process: u64, kind: Kind, op: Op, note: Option<String>) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Stamped under the lock so that the file is in time order.
        let time = self.now();
        let event = Event {
            time,
            process,
            kind,
            op,
            note,
        };
        if let Some(f) = inner.file.as_mut() {
            // A history line that cannot be written makes the run's file
            // incomplete, not the run wrong: the in-memory copy is checked.
            if serde_json::to_writer(&mut *f, &event).is_ok() {
                let _ = f.write_all(b"\n");
            }
        }
        inner.events.push(event);
        time
    }

    /// Flushes the JSON lines file.
    pub fn flush(&self) -> Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = inner.file.as_mut() {
            f.flush().context("flush history")?;
        }
        Ok(())
    }

    /// Runs `f` over every event so far, in time order, without copying
    /// them.
    pub fn scan<T>(&self, f: impl FnOnce(&[Event]) -> T) -> T {
        f(&self.inner.lock().unwrap_or_else(|e| e.into_inner()).events)
    }

    /// Every event so far, in time order.
    pub fn events(&self) -> Vec<Event> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .events
            .clone()
    }
}

/// Reads a JSON lines history.
pub fn load(path: &Path) -> Result<Vec<Event>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("line {}", i + 1)))
        .collect()
}

/// An operation with its invocation and completion paired up.
#[derive(Clone, Debug)]
pub struct Completed {
    pub process: u64,
    pub invoke: u64,
    /// None while the operation never completed (the run ended first).
    pub complete: Option<u64>,
    pub kind: Kind,
    /// The operation as completed (with its result), or as invoked when
    /// it never completed.
    pub op: Op,
    pub note: Option<String>,
}

/// Pairs each client's invocations with their completions. Operations
/// that never completed come out as `Info`.
pub fn pair(events: &[Event]) -> Vec<Completed> {
    let mut open: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let mut out: Vec<Completed> = Vec::new();
    for e in events {
        if e.process == NEMESIS {
            continue;
        }
        match e.kind {
            Kind::Invoke => {
                open.insert(e.process, out.len());
                out.push(Completed {
                    process: e.process,
                    invoke: e.time,
                    complete: None,
                    kind: Kind::Info,
                    op: e.op.clone(),
                    note: None,
                });
            }
            kind => {
                if let Some(i) = open.remove(&e.process) {
                    out[i].complete = Some(e.time);
                    out[i].kind = kind;
                    out[i].op = e.op.clone();
                    out[i].note = e.note.clone();
                }
            }
        }
    }
    out
}

/// Fault windows (name, start, end) from the nemesis' events; a fault
/// never healed ends at `end`.
pub fn faults(events: &[Event], end: u64) -> Vec<(String, u64, u64)> {
    let mut open: Vec<(String, u64)> = Vec::new();
    let mut out = Vec::new();
    for e in events.iter().filter(|e| e.process == NEMESIS) {
        match &e.op {
            Op::Fault { name, .. } => open.push((name.clone(), e.time)),
            Op::Heal { name } => {
                if let Some(i) = open.iter().position(|(n, _)| n == name) {
                    let (n, t) = open.remove(i);
                    out.push((n, t, e.time));
                }
            }
            _ => {}
        }
    }
    out.extend(open.into_iter().map(|(n, t)| (n, t, end)));
    out.sort_by_key(|f| f.1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_invocations_with_completions_and_keeps_unfinished_as_info() {
        let h = History::in_memory();
        let w = |v| Op::Write {
            key: "a".into(),
            value: v,
        };
        h.record(1, Kind::Invoke, w(1), None);
        h.record(2, Kind::Invoke, w(2), None);
        h.record(1, Kind::Ok, w(1), None);
        h.record(NEMESIS, Kind::Info, Op::Heal { name: "x".into() }, None);
        let ops = pair(&h.events());
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].kind, Kind::Ok);
        assert!(ops[0].complete.is_some());
        assert_eq!(ops[1].kind, Kind::Info);
        assert!(ops[1].complete.is_none());
    }

    #[test]
    fn history_round_trips_through_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let h = History::create(&path).unwrap();
        h.record(
            3,
            Kind::Invoke,
            Op::Cas {
                key: "k".into(),
                from: 1,
                to: 2,
                swapped: None,
            },
            None,
        );
        h.record(
            3,
            Kind::Ok,
            Op::Cas {
                key: "k".into(),
                from: 1,
                to: 2,
                swapped: Some(true),
            },
            Some("n1".into()),
        );
        h.flush().unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].op, h.events()[1].op);
        assert_eq!(back[1].note.as_deref(), Some("n1"));
    }

    #[test]
    fn fault_windows_pair_faults_with_heals() {
        let h = History::in_memory();
        let f = |n: &str| Op::Fault {
            name: n.into(),
            detail: String::new(),
        };
        h.record(NEMESIS, Kind::Info, f("kill"), None);
        h.record(NEMESIS, Kind::Info, f("pause"), None);
        h.record(
            NEMESIS,
            Kind::Info,
            Op::Heal {
                name: "kill".into(),
            },
            None,
        );
        let w = faults(&h.events(), 1_000_000_000_000);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].0, "kill");
        assert_eq!(w[1].0, "pause");
        assert_eq!(w[1].2, 1_000_000_000_000);
    }
}
