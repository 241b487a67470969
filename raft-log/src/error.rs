//! The log's one error type.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Everything a log call can fail with.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed. If it was a write or fsync, the log is poisoned.
    #[error("{op} {path}: {source}")]
    Io {
        /// The call (open, write, fsync, …).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: Arc<io::Error>,
    },
    /// Damage before the tail of the log: the log refuses to open.
    #[error("corrupt log segment {segment} at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Where in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An earlier write or fsync failed; the log must be reopened (and its
    /// tail re-checked) before it is used again.
    #[error("raft log is poisoned by an earlier I/O failure")]
    Poisoned,
    /// Appended entries do not continue the log.
    #[error("append of index {got} does not continue the log (expected {expected})")]
    NotContiguous {
        /// The index the next entry must have.
        expected: u64,
        /// The index it had.
        got: u64,
    },
    /// A truncate or purge point outside the log.
    #[error("index {index} is outside the log ({reason})")]
    OutOfRange {
        /// The index asked for.
        index: u64,
        /// Why it is outside.
        reason: &'static str,
    },
    /// The log was closed.
    #[error("raft log is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

/// Shorthand for log results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
