//! Checkers over recorded histories.

pub mod lease;
pub mod linear;
pub mod watch;
