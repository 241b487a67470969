//! Fault-injection testing of real Cairn clusters.
//!
//! - [`history`]: the record of a run (invocations, completions, faults).
//! - [`checker`]: linearizability of registers, and watch guarantees.
#![allow(clippy::new_without_default)]

pub mod checker;
pub mod history;
