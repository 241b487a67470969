//! Put latencies filed by when they ran relative to windows of another
//! operation (a lease revoke, a snapshot save): `before` (finished before
//! the first window opened), `during` (overlapping a window), `after`
//! (any other, after the first window opened).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::loads::put::Putter;
use crate::runner::Worker;

/// The windows, µs since the run's start (+1; 0 = not yet).
pub struct Windows {
    start: Instant,
    opened: Vec<AtomicU64>,
    closed: Vec<AtomicU64>,
}

impl Windows {
    /// `n` windows, none open yet.
    pub fn new(n: usize) -> Windows {
        Windows {
            start: Instant::now(),
            opened: (0..n).map(|_| AtomicU64::new(0)).collect(),
            closed: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64 + 1
    }

    /// Window `i` opens now (its operation is sent).
    pub fn open(&self, i: usize) {
        self.opened[i].store(self.now(), Ordering::Release);
    }

    /// Window `i` closes now (its operation returned).
    pub fn close(&self, i: usize) {
        self.closed[i].store(self.now(), Ordering::Release);
    }

    /// The series of a put that ran from `t0` to `t1`.
    fn series(&self, t0: u64, t1: u64) -> &'static str {
        let first = self.opened[0].load(Ordering::Acquire);
        if first == 0 || t1 < first {
            return "before";
        }
        for (o, c) in self.opened.iter().zip(&self.closed) {
            let (o, c) = (o.load(Ordering::Acquire), c.load(Ordering::Acquire));
            if o != 0 && t1 >= o && (c == 0 || t0 <= c) {
                return "during";
            }
        }
        "after"
    }
}

/// A putter whose latencies are filed by [`Windows`].
pub(crate) struct Timed {
    putter: Putter,
    windows: Arc<Windows>,
}

impl Timed {
    /// `putter`, filed by `windows`.
    pub(crate) fn new(putter: Putter, windows: Arc<Windows>) -> Timed {
        Timed { putter, windows }
    }
}

impl Worker for Timed {
    async fn call(&mut self, op: u64) -> Result<&'static str, tonic::Status> {
        let t0 = self.windows.now();
        self.putter.put(op).await?;
        Ok(self.windows.series(t0, self.windows.now()))
    }
}
