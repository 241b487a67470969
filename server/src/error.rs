//! [`Error`]: what a call on a member fails with, typed.
//!
//! The in-process [`crate::Client`] answers these; the gRPC layer turns
//! them into etcd's statuses through [`crate::status`], which alone spells
//! etcd's codes and messages (an error's `Display`, implemented there too, is that message).
//! Errors cross the peer network as they are (a follower forwarding a
//! write gets the leader's typed error back), so the enum is serde.

use cairn_kv as kv;
use cairn_proto::cairnpb::ApplyError;
use serde::{Deserialize, Serialize};

/// A failed call, as a caller branches on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// The revision asked for was compacted away.
    Compacted,
    /// The revision asked for is above the current one.
    FutureRevision,
    /// A request without a key.
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    KeyNotFound,
    /// A value given together with `ignore_value`.
    ValueProvided,
    /// A lease given together with `ignore_lease`.
    LeaseProvided,
    /// More operations in a txn branch than `--max-txn-ops`.
    TooManyOps,
    /// One key written twice in a txn branch.
    DuplicateKey,
    /// A request larger than `--max-request-bytes`.
    RequestTooLarge,
    /// No lease with that id.
    LeaseNotFound,
    /// A grant naming an id that is taken.
    LeaseExists,
    /// A TTL above etcd's maximum.
    LeaseTtlTooLarge,
    /// The cluster has no leader this member is in touch with.
    NoLeader,
    /// An operation only the leader may run, asked of another member.
    NotLeader,
    /// The leader changed while the request was under way; it may or may
    /// not have been applied.
    LeaderChanged,
    /// The request did not complete in time.
    Timeout,
    /// The member is stopping.
    Stopped,
    /// No member with that id.
    MemberNotFound,
    /// A peer URL that another member has.
    PeerUrlExists,
    /// A second learner (etcd allows one at a time).
    TooManyLearners,
    /// Removing the last voter.
    NotEnoughStartedMembers,
    /// Promoting a member that is not a learner.
    MemberNotLearner,
    /// Promoting a learner that has not caught up with the leader.
    LearnerNotReady,
    /// A member change without peer URLs.
    PeerUrlsNotProvided,
    /// A URL that cannot be used (the reason).
    InvalidUrl(String),
    /// A member change with a peer URL that is not one.
    MemberBadUrls,
    /// Moving leadership to a member that is not a voter.
    BadLeaderTransferee,
    /// Raft refused a membership change (its reason).
    MembershipRefused(String),
    /// Raft failed the request (its reason).
    Raft(String),
    /// The store failed (I/O, corruption); not the request's fault.
    Storage(String),
    /// Anything else that should not happen.
    Internal(String),
    /// A call Cairn does not serve (yet).
    Unsupported(String),
    /// Authentication is on and the request names no user (no token, no
    /// client certificate).
    UserEmpty,
    /// The caller may not do this.
    PermissionDenied,
    /// The token is unknown, expired, or of a user changed since.
    InvalidAuthToken,
    /// Wrong user name or password (or a user without a password).
    AuthFailed,
    /// An auth call that needs authentication on.
    AuthNotEnabled,
    /// Enabling auth without a `root` user.
    RootUserNotExist,
    /// Enabling auth while `root` lacks the `root` role.
    RootRoleNotExist,
    /// Adding a user that exists.
    UserAlreadyExist,
    /// No user by that name.
    UserNotFound,
    /// Adding a role that exists.
    RoleAlreadyExist,
    /// No role by that name.
    RoleNotFound,
    /// A role without a name.
    RoleEmpty,
    /// Revoking a role the user does not have.
    RoleNotGranted,
    /// Revoking a permission the role does not have.
    PermissionNotGranted,
    /// A change that would lock root out while auth is on.
    InvalidAuthMgmt,
    /// A write while the NOSPACE alarm is raised (the store is over
    /// `--quota-backend-bytes`).
    NoSpace,
    /// Any kv call while the CORRUPT alarm is raised (a member's data
    /// differs from the others').
    Corrupt,
}

impl From<kv::Error> for Error {
    fn from(e: kv::Error) -> Self {
        Self::from(&e)
    }
}

impl From<&kv::Error> for Error {
    fn from(e: &kv::Error) -> Self {
        match e {
            kv::Error::Compacted { .. } => Error::Compacted,
            kv::Error::FutureRevision { .. } => Error::FutureRevision,
            kv::Error::EmptyKey => Error::EmptyKey,
            kv::Error::KeyNotFound => Error::KeyNotFound,
            kv::Error::ValueProvided => Error::ValueProvided,
            kv::Error::LeaseProvided => Error::LeaseProvided,
            kv::Error::LeaseNotFound => Error::LeaseNotFound,
            kv::Error::LeaseExists => Error::LeaseExists,
            kv::Error::TooManyOps { .. } => Error::TooManyOps,
            kv::Error::DuplicateKey => Error::DuplicateKey,
            kv::Error::Corrupt { .. } | kv::Error::Backend(_) | kv::Error::Poisoned => {
                Error::Storage(e.to_string())
            }
        }
    }
}

/// The kind names of apply errors, as every member records them in an
/// apply result (stable: a follower reads a leader's).
const APPLY_KINDS: &[(&str, Error)] = &[
    ("compacted", Error::Compacted),
    ("future_revision", Error::FutureRevision),
    ("empty_key", Error::EmptyKey),
    ("key_not_found", Error::KeyNotFound),
    ("value_provided", Error::ValueProvided),
    ("lease_provided", Error::LeaseProvided),
    ("lease_not_found", Error::LeaseNotFound),
    ("lease_exists", Error::LeaseExists),
    ("too_many_ops", Error::TooManyOps),
    ("duplicate_key", Error::DuplicateKey),
    ("permission_denied", Error::PermissionDenied),
    ("auth_not_enabled", Error::AuthNotEnabled),
    ("root_user_not_exist", Error::RootUserNotExist),
    ("root_role_not_exist", Error::RootRoleNotExist),
    ("user_empty", Error::UserEmpty),
    ("user_already_exist", Error::UserAlreadyExist),
    ("user_not_found", Error::UserNotFound),
    ("role_already_exist", Error::RoleAlreadyExist),
    ("role_not_found", Error::RoleNotFound),
    ("role_empty", Error::RoleEmpty),
    ("role_not_granted", Error::RoleNotGranted),
    ("permission_not_granted", Error::PermissionNotGranted),
    ("invalid_auth_mgmt", Error::InvalidAuthMgmt),
    ("no_space", Error::NoSpace),
    ("corrupt", Error::Corrupt),
];

impl Error {
    /// A store error as an apply result records it: a stable kind name
    /// that every member produces identically. `None` for failures of the
    /// store itself (I/O, corruption), which are fatal rather than
    /// per-request.
    pub fn to_apply(e: &kv::Error) -> Option<ApplyError> {
        let typed = Error::from(e);
        let kind = APPLY_KINDS.iter().find(|(_, k)| *k == typed)?.0;
        Some(ApplyError {
            kind: kind.into(),
            message: e.to_string(),
        })
    }

    /// An apply result recording `e`, a deterministic failure decided by
    /// the auth state (every member decides it alike). `None` for errors
    /// that are not such failures.
    pub fn to_apply_error(e: &Error) -> Option<ApplyError> {
        let kind = APPLY_KINDS.iter().find(|(_, k)| k == e)?.0;
        Some(ApplyError {
            kind: kind.into(),
            message: e.to_string(),
        })
    }

    /// The error an apply result records.
    pub fn from_apply(e: &ApplyError) -> Error {
        APPLY_KINDS
            .iter()
            .find(|(kind, _)| *kind == e.kind)
            .map(|(_, err)| err.clone())
            .unwrap_or_else(|| Error::Internal(e.message.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_kinds_round_trip() {
        for (kind, err) in APPLY_KINDS {
            let a = ApplyError {
                kind: (*kind).into(),
                message: String::new(),
            };
            assert_eq!(&Error::from_apply(&a), err);
        }
        let e = kv::Error::Compacted {
            requested: 1,
            compacted: 5,
        };
        let a = Error::to_apply(&e).expect("a request error");
        assert_eq!(a.kind, "compacted");
        assert_eq!(Error::from_apply(&a), Error::Compacted);
        assert!(Error::to_apply(&kv::Error::Poisoned).is_none());
    }

    #[test]
    fn an_unknown_kind_is_internal_with_its_message() {
        let a = ApplyError {
            kind: "batch".into(),
            message: "only puts".into(),
        };
        assert_eq!(Error::from_apply(&a), Error::Internal("only puts".into()));
    }
}
