//! Checkers over recorded histories.

pub mod linear;
