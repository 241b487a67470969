//! What can go wrong reading or writing a bbolt file.

/// An error of this crate. A file this crate does not understand is
/// refused with [`Error::Invalid`], never guessed at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the file failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The file is not a bbolt file this crate understands, or is damaged.
    #[error("not a valid bbolt file: {0}")]
    Invalid(String),
    /// A write broke the format's rules (keys out of order, empty or too
    /// long, a bucket named twice).
    #[error("cannot write: {0}")]
    Misuse(String),
}

/// This crate's result.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn invalid(what: impl Into<String>) -> Error {
    Error::Invalid(what.into())
}
