//! Checkers over recorded histories.

pub mod append;
pub mod lease;
pub mod linear;
pub mod watch;
