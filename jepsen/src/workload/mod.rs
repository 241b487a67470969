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
