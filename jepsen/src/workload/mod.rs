//! Client workloads: concurrent logical clients, each doing one operation
//! at a time and recording every invocation and completion.

pub mod append;
pub mod lease;
pub mod register;
pub mod watch;

use std::sync::atomic::{AtomicU64, Ordering};

/// Hands out logical client (process) ids. A client whose operation ended
/// with an unknown outcome continues under a new id: the old operation may
/// still be in flight.
#[derive(Default)]
pub struct Processes(AtomicU64);

impl Processes {
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// Key slots that move on to a fresh key every `ops_per_key` operations
/// (`<prefix><slot>/<generation>`), as Jepsen's independent keys do: the
/// checkers' work grows with the operations on one key.
pub struct Slots {
    used: Vec<std::sync::atomic::AtomicUsize>,
    ops_per_key: usize,
}

impl Slots {
    pub fn new(slots: usize, ops_per_key: usize) -> Slots {
        Slots {
            used: (0..slots.max(1))
                .map(|_| std::sync::atomic::AtomicUsize::new(0))
                .collect(),
            ops_per_key: ops_per_key.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    /// The key of `slot` for one more operation.
    pub fn key(&self, prefix: &str, slot: usize) -> String {
        let n = self.used[slot].fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{slot}/{}", n / self.ops_per_key)
    }
}
