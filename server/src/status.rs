//! etcd's gRPC codes and messages for every [`Error`], in one place.
//! Clients match on the exact code and message, so both are etcd's, byte
//! for byte. No other file spells an etcd message.

use std::borrow::Cow;
use std::fmt;

use tonic::{Code, Status};

use crate::error::Error;

/// etcd's error messages, as clients match them: each is the message of
/// the [`Error`] variant of the same name, or a watch's cancel reason.
#[allow(missing_docs)]
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
    pub const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";
    pub const CORRUPT: &str = "etcdserver: corrupt cluster";
    pub const NO_LEADER: &str = "etcdserver: no leader";
    pub const NOT_LEADER: &str = "etcdserver: not leader";
    pub const LEADER_CHANGED: &str = "etcdserver: leader changed";
    pub const TIMEOUT: &str = "etcdserver: request timed out";
    pub const STOPPED: &str = "etcdserver: server stopped";
    pub const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
    pub const PEER_URL_EXISTS: &str = "etcdserver: Peer URLs already exists";
    pub const TOO_MANY_LEARNERS: &str = "etcdserver: too many learner members in cluster";
    pub const NOT_ENOUGH_STARTED_MEMBERS: &str =
        "etcdserver: re-configuration failed due to not enough started members";
    pub const MEMBER_NOT_LEARNER: &str = "etcdserver: can only promote a learner member";
    pub const LEARNER_NOT_READY: &str =
        "etcdserver: can only promote a learner member which is in sync with leader";
    pub const PEER_URLS_NOT_PROVIDED: &str = "etcdserver: member peer URLs are not provided";
    pub const MEMBER_BAD_URLS: &str = "etcdserver: given member URLs are invalid";
    pub const BAD_LEADER_TRANSFEREE: &str = "etcdserver: bad leader transferee";
    pub const USER_EMPTY: &str = "etcdserver: user name is empty";
    pub const PERMISSION_DENIED: &str = "etcdserver: permission denied";
    pub const INVALID_AUTH_TOKEN: &str = "etcdserver: invalid auth token";
    pub const AUTH_FAILED: &str = "etcdserver: authentication failed, invalid user ID or password";
    pub const AUTH_NOT_ENABLED: &str = "etcdserver: authentication is not enabled";
    pub const ROOT_USER_NOT_EXIST: &str = "etcdserver: root user does not exist";
    pub const ROOT_ROLE_NOT_EXIST: &str = "etcdserver: root user does not have root role";
    pub const USER_ALREADY_EXIST: &str = "etcdserver: user name already exists";
    pub const USER_NOT_FOUND: &str = "etcdserver: user name not found";
    pub const ROLE_ALREADY_EXIST: &str = "etcdserver: role name already exists";
    pub const ROLE_NOT_FOUND: &str = "etcdserver: role name not found";
    pub const ROLE_EMPTY: &str = "etcdserver: role name is empty";
    pub const ROLE_NOT_GRANTED: &str = "etcdserver: role is not granted to the user";
    pub const PERMISSION_NOT_GRANTED: &str = "etcdserver: permission is not granted to the role";
    pub const INVALID_AUTH_MGMT: &str = "etcdserver: invalid auth management";
    pub const WATCHER_RANGE_EMPTY: &str = "mvcc: watcher range is empty";
    pub const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
    /// Cairn's own: a stream already carries the most watchers it may
    /// (etcd has no bound).
    pub const TOO_MANY_WATCHERS: &str = "etcdserver: too many watchers on this watch stream";
    /// Cairn's own: a command a batch entry may not carry (never reaches a
    /// client; a batch is built only of puts, deletes and txns).
    pub const NOT_BATCHABLE: &str = "etcdserver: only puts, deletes and txns can be batched";
}

/// The gRPC code etcd answers `e` with.
pub fn code(e: &Error) -> Code {
    match e {
        Error::Compacted | Error::FutureRevision | Error::LeaseTtlTooLarge => Code::OutOfRange,
        Error::EmptyKey
        | Error::KeyNotFound
        | Error::ValueProvided
        | Error::LeaseProvided
        | Error::TooManyOps
        | Error::DuplicateKey
        | Error::RequestTooLarge
        | Error::PeerUrlsNotProvided
        | Error::InvalidUrl(_)
        | Error::MemberBadUrls
        | Error::UserEmpty
        | Error::AuthFailed
        | Error::RoleEmpty
        | Error::InvalidAuthMgmt => Code::InvalidArgument,
        Error::PermissionDenied => Code::PermissionDenied,
        Error::InvalidAuthToken => Code::Unauthenticated,
        Error::AuthNotEnabled
        | Error::RootUserNotExist
        | Error::RootRoleNotExist
        | Error::UserAlreadyExist
        | Error::UserNotFound
        | Error::RoleAlreadyExist
        | Error::RoleNotFound
        | Error::RoleNotGranted
        | Error::PermissionNotGranted => Code::FailedPrecondition,
        Error::LeaseNotFound | Error::MemberNotFound => Code::NotFound,
        Error::LeaseExists
        | Error::NotLeader
        | Error::PeerUrlExists
        | Error::TooManyLearners
        | Error::NotEnoughStartedMembers
        | Error::MemberNotLearner
        | Error::LearnerNotReady
        | Error::BadLeaderTransferee
        | Error::MembershipRefused(_) => Code::FailedPrecondition,
        Error::NoLeader
        | Error::LeaderChanged
        | Error::Timeout
        | Error::Stopped
        | Error::Raft(_) => Code::Unavailable,
        Error::Storage(_) | Error::Internal(_) => Code::Internal,
        Error::Unsupported(_) => Code::Unimplemented,
        Error::NoSpace => Code::ResourceExhausted,
        Error::Corrupt => Code::DataLoss,
    }
}

/// The message etcd answers `e` with.
pub fn message(e: &Error) -> Cow<'static, str> {
    Cow::Borrowed(match e {
        Error::Compacted => msg::COMPACTED,
        Error::FutureRevision => msg::FUTURE_REV,
        Error::EmptyKey => msg::EMPTY_KEY,
        Error::KeyNotFound => msg::KEY_NOT_FOUND,
        Error::ValueProvided => msg::VALUE_PROVIDED,
        Error::LeaseProvided => msg::LEASE_PROVIDED,
        Error::TooManyOps => msg::TOO_MANY_OPS,
        Error::DuplicateKey => msg::DUPLICATE_KEY,
        Error::RequestTooLarge => msg::REQUEST_TOO_LARGE,
        Error::LeaseNotFound => msg::LEASE_NOT_FOUND,
        Error::LeaseExists => msg::LEASE_EXISTS,
        Error::LeaseTtlTooLarge => msg::LEASE_TTL_TOO_LARGE,
        Error::NoLeader => msg::NO_LEADER,
        Error::NotLeader => msg::NOT_LEADER,
        Error::LeaderChanged => msg::LEADER_CHANGED,
        Error::Timeout => msg::TIMEOUT,
        Error::Stopped => msg::STOPPED,
        Error::MemberNotFound => msg::MEMBER_NOT_FOUND,
        Error::PeerUrlExists => msg::PEER_URL_EXISTS,
        Error::TooManyLearners => msg::TOO_MANY_LEARNERS,
        Error::NotEnoughStartedMembers => msg::NOT_ENOUGH_STARTED_MEMBERS,
        Error::MemberNotLearner => msg::MEMBER_NOT_LEARNER,
        Error::LearnerNotReady => msg::LEARNER_NOT_READY,
        Error::PeerUrlsNotProvided => msg::PEER_URLS_NOT_PROVIDED,
        Error::MemberBadUrls => msg::MEMBER_BAD_URLS,
        Error::BadLeaderTransferee => msg::BAD_LEADER_TRANSFEREE,
        Error::UserEmpty => msg::USER_EMPTY,
        Error::PermissionDenied => msg::PERMISSION_DENIED,
        Error::InvalidAuthToken => msg::INVALID_AUTH_TOKEN,
        Error::AuthFailed => msg::AUTH_FAILED,
        Error::AuthNotEnabled => msg::AUTH_NOT_ENABLED,
        Error::RootUserNotExist => msg::ROOT_USER_NOT_EXIST,
        Error::RootRoleNotExist => msg::ROOT_ROLE_NOT_EXIST,
        Error::UserAlreadyExist => msg::USER_ALREADY_EXIST,
        Error::UserNotFound => msg::USER_NOT_FOUND,
        Error::RoleAlreadyExist => msg::ROLE_ALREADY_EXIST,
        Error::RoleNotFound => msg::ROLE_NOT_FOUND,
        Error::RoleEmpty => msg::ROLE_EMPTY,
        Error::RoleNotGranted => msg::ROLE_NOT_GRANTED,
        Error::PermissionNotGranted => msg::PERMISSION_NOT_GRANTED,
        Error::InvalidAuthMgmt => msg::INVALID_AUTH_MGMT,
        Error::NoSpace => msg::NO_SPACE,
        Error::Corrupt => msg::CORRUPT,
        Error::MembershipRefused(why) | Error::Raft(why) | Error::Storage(why) => {
            return Cow::Owned(format!("etcdserver: {why}"))
        }
        Error::InvalidUrl(why) | Error::Internal(why) | Error::Unsupported(why) => {
            return Cow::Owned(why.clone())
        }
    })
}

/// `e` as Go's gRPC prints a status error, which is how etcd words a
/// watch's cancel reason for auth failures
/// (`rpc error: code = PermissionDenied desc = etcdserver: permission denied`).
pub fn go_error_string(e: &Error) -> String {
    format!("rpc error: code = {:?} desc = {}", code(e), message(e))
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&message(self))
    }
}

impl std::error::Error for Error {}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        Status::new(code(&e), message(&e))
    }
}

impl From<&Error> for Status {
    fn from(e: &Error) -> Self {
        Status::new(code(e), message(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_etcds() {
        let s = Status::from(Error::Compacted);
        assert_eq!(s.code(), Code::OutOfRange);
        assert_eq!(s.message(), msg::COMPACTED);
        let s = Status::from(Error::LeaseNotFound);
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "etcdserver: requested lease not found");
        let s = Status::from(Error::Raft("boom".into()));
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "etcdserver: boom");
        assert_eq!(Error::NoLeader.to_string(), "etcdserver: no leader");
        // etcdctl move-leader to a member that is not there.
        let s = Status::from(Error::BadLeaderTransferee);
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.message(), "etcdserver: bad leader transferee");
    }
}
