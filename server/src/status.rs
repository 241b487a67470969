//! Every mapping from Cairn's errors to etcd's gRPC statuses, in one place.
//! Clients match on the exact code and message, so both are etcd's, byte
//! for byte.

use cairn_kv as kv;
use cairn_proto::cairnpb::ApplyError;
use tonic::{Code, Status};

/// etcd's error messages, as clients match them.
pub mod msg {
    pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
    pub const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
    pub const EMPTY_KEY: &str = "etcdserver: key is not provided";
    pub const KEY_NOT_FOUND: &str = "etcdserver: key not found";
    pub const VALUE_PROVIDED: &str = "etcdserver: value is provided";
    pub const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
    pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
    pub const LEASE_EXISTS: &str = "etcdserver: lease already exists";
    pub const LEASE_TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
    pub const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
    pub const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
    pub const REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";
    pub const NO_LEADER: &str = "etcdserver: no leader";
    pub const NOT_LEADER: &str = "etcdserver: not leader";
    pub const LEADER_CHANGED: &str = "etcdserver: leader changed";
    pub const TIMEOUT: &str = "etcdserver: request timed out";
    pub const STOPPED: &str = "etcdserver: server stopped";
}

/// A store error as recorded in an apply result: a stable kind name that
/// every member produces identically. `None` for failures of the store
/// itself (I/O, corruption), which are fatal rather than per-request.
pub fn apply_error(e: &kv::Error) -> Option<ApplyError> {
    let kind = match e {
        kv::Error::Compacted { .. } => "compacted",
        kv::Error::FutureRevision { .. } => "future_revision",
        kv::Error::EmptyKey => "empty_key",
        kv::Error::KeyNotFound => "key_not_found",
        kv::Error::ValueProvided => "value_provided",
        kv::Error::LeaseProvided => "lease_provided",
        kv::Error::LeaseNotFound => "lease_not_found",
        kv::Error::LeaseExists => "lease_exists",
        kv::Error::TooManyOps { .. } => "too_many_ops",
        kv::Error::DuplicateKey => "duplicate_key",
        kv::Error::Corrupt { .. } | kv::Error::Backend(_) | kv::Error::Poisoned => return None,
    };
    Some(ApplyError {
        kind: kind.into(),
        message: e.to_string(),
    })
}

/// The gRPC status etcd answers for an apply error.
pub fn from_apply_error(e: &ApplyError) -> Status {
    match e.kind.as_str() {
        "compacted" => Status::new(Code::OutOfRange, msg::COMPACTED),
        "future_revision" => Status::new(Code::OutOfRange, msg::FUTURE_REV),
        "empty_key" => Status::new(Code::InvalidArgument, msg::EMPTY_KEY),
        "key_not_found" => Status::new(Code::InvalidArgument, msg::KEY_NOT_FOUND),
        "value_provided" => Status::new(Code::InvalidArgument, msg::VALUE_PROVIDED),
        "lease_provided" => Status::new(Code::InvalidArgument, msg::LEASE_PROVIDED),
        "lease_not_found" => Status::new(Code::NotFound, msg::LEASE_NOT_FOUND),
        "lease_exists" => Status::new(Code::FailedPrecondition, msg::LEASE_EXISTS),
        "too_many_ops" => Status::new(Code::InvalidArgument, msg::TOO_MANY_OPS),
        "duplicate_key" => Status::new(Code::InvalidArgument, msg::DUPLICATE_KEY),
        _ => Status::new(Code::Internal, e.message.clone()),
    }
}

/// The gRPC status etcd answers for a store error.
pub fn from_kv(e: &kv::Error) -> Status {
    match apply_error(e) {
        Some(a) => from_apply_error(&a),
        None => Status::new(Code::Internal, format!("etcdserver: {e}")),
    }
}
