//! The store's one error type. Each variant is a case a caller branches on;
//! the server maps them to etcd's exact gRPC codes and messages.

/// Errors from the backend engine, boxed so the trait stays engine-neutral.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a store call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The revision asked for has been compacted away
    /// (etcd: `mvcc: required revision has been compacted`).
    #[error("required revision {requested} has been compacted (compacted at {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The store's compacted revision.
        compacted: i64,
    },
    /// The revision asked for is newer than the store
    /// (etcd: `mvcc: required revision is a future revision`).
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: i64,
        /// The store's current revision.
        current: i64,
    },
    /// A request without a key (etcd: `key is not provided`).
    #[error("key is not provided")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a missing key, or an empty txn op
    /// (etcd: `key not found`).
    #[error("key not found")]
    KeyNotFound,
    /// `ignore_value` together with a value (etcd: `value is provided`).
    #[error("value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease (etcd: `lease is provided`).
    #[error("lease is provided")]
    LeaseProvided,
    /// A txn branch or compare list over the op limit
    /// (etcd: `too many operations in txn request`).
    #[error("too many operations in txn request (max {max})")]
    TooManyOps {
        /// The limit.
        max: usize,
    },
    /// A txn writes one key twice in a branch
    /// (etcd: `duplicate key given in txn request`).
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// A put names a lease that does not exist, or a revoke an unknown
    /// lease (etcd: `requested lease not found`).
    #[error("requested lease not found")]
    LeaseNotFound,
    /// A grant names a lease id already in use (etcd: `lease already exists`).
    #[error("lease already exists")]
    LeaseExists,
    /// A stored record that does not decode: the data on disk is damaged.
    #[error("corrupt record at {location}: {reason}")]
    Corrupt {
        /// Which record.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend failed. The store is poisoned from then on.
    #[error("backend failure: {0}")]
    Backend(#[source] BackendError),
    /// An earlier backend failure left the store unusable; reopen it.
    #[error("store is poisoned by an earlier backend failure; reopen it")]
    Poisoned,
}

/// Shorthand for store results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
