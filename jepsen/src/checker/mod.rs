//! Checkers over recorded histories.

pub mod linear;
pub mod watch;
