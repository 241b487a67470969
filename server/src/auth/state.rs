//! [`AuthState`]: users, roles, their permissions, and whether
//! authentication is on — the replicated part of auth — and how each
//! [`AuthCommand`] changes it, with etcd's rules and errors.
//!
//! Every member applies the same commands in the same order to the same
//! state, so every decision here is deterministic: passwords arrive
//! already hashed, the token signing key arrives in the command that
//! enables auth.

use std::collections::{BTreeMap, BTreeSet};

use cairn_proto::authpb::permission::Type as PermType;
use cairn_proto::cairnpb::auth_command::Op;
use cairn_proto::cairnpb::AuthCommand;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The name of the user and of the role that may do anything.
pub const ROOT: &str = "root";

/// A kind of access a permission grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    /// Read: Range, Watch, compares, `prev_kv`.
    Read,
    /// Write: Put, DeleteRange, lease revokes of attached keys.
    Write,
    /// Both.
    ReadWrite,
}

impl Access {
    /// Whether a permission of this kind allows `wanted` (Read or Write).
    pub fn allows(self, wanted: Access) -> bool {
        self == Access::ReadWrite || self == wanted
    }

    pub(crate) fn from_pb(t: i32) -> Access {
        match PermType::try_from(t) {
            Ok(PermType::Write) => Access::Write,
            Ok(PermType::Readwrite) => Access::ReadWrite,
            // READ is 0, proto3's default.
            _ => Access::Read,
        }
    }

    pub(crate) fn to_pb(self) -> PermType {
        match self {
            Access::Read => PermType::Read,
            Access::Write => PermType::Write,
            Access::ReadWrite => PermType::Readwrite,
        }
    }
}

/// One permission of a role: `access` to `key` alone (empty `range_end`),
/// to `[key, range_end)`, or to every key from `key` on (`range_end`
/// "\0").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    /// What it allows.
    pub access: Access,
    /// The first key.
    pub key: Vec<u8>,
    /// The end of the range, as etcd gives it.
    pub range_end: Vec<u8>,
}

/// A user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The bcrypt hash of the password; `None` for a user created with
    /// `--no-password` (who authenticates by client certificate only).
    pub password_hash: Option<String>,
    /// Its roles, sorted.
    pub roles: BTreeSet<String>,
    /// The auth revision at which the user was created or last had its
    /// password changed: a simple token names it, and is refused once it
    /// no longer matches.
    pub generation: u64,
}

/// A role: the permissions it grants, sorted by key then range end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Its permissions.
    pub permissions: Vec<Permission>,
}

/// The replicated auth state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    /// Whether authentication is on.
    pub enabled: bool,
    /// Bumped by every change (etcd's auth revision): 1 in a new store,
    /// as etcd's.
    pub revision: u64,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Roles by name.
    pub roles: BTreeMap<String, Role>,
    /// The key simple tokens are signed with; set when auth is first
    /// enabled.
    pub token_key: Vec<u8>,
}

impl Default for AuthState {
    /// A new store's: auth off, no users or roles, revision 1.
    fn default() -> AuthState {
        AuthState {
            enabled: false,
            revision: 1,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            token_key: Vec::new(),
        }
    }
}

impl AuthState {
    /// The state as the store keeps it (an owned entry).
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        postcard::to_stdvec(self).map_err(|e| format!("auth state: {e}"))
    }

    /// Decodes [`AuthState::to_bytes`].
    pub fn from_bytes(raw: &[u8]) -> Result<AuthState, String> {
        postcard::from_bytes(raw).map_err(|e| format!("unreadable auth state: {e}"))
    }

    /// Whether `user` holds the root role.
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(ROOT))
    }

    /// The permissions `user` holds through its roles.
    pub fn permissions_of<'a>(&'a self, user: &str) -> impl Iterator<Item = &'a Permission> {
        self.users
            .get(user)
            .into_iter()
            .flat_map(|u| u.roles.iter())
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.permissions.iter())
    }

    /// Applies `cmd`: the state after it, or etcd's error (the state
    /// unchanged). The revision counts as etcd's does: a change that
    /// changes nothing (granting a role already held) keeps it, and so
    /// does turning auth on (etcd counts turning it off).
    pub fn apply(&self, cmd: &AuthCommand) -> Result<AuthState, Error> {
        let mut next = self.clone();
        let changed = next.change(cmd)?;
        if changed {
            next.revision += 1;
        }
        Ok(next)
    }

    /// Makes `cmd`'s change: whether etcd counts it in the revision.
    fn change(&mut self, cmd: &AuthCommand) -> Result<bool, Error> {
        let Some(op) = &cmd.op else {
            return Ok(false);
        };
        match op {
            Op::Enable(_) => {
                if self.enabled {
                    // On already: only a state brought in without a token
                    // key (an import from etcd) takes the one given.
                    if self.token_key.is_empty() && !cmd.token_key.is_empty() {
                        self.token_key = cmd.token_key.to_vec();
                    }
                    return Ok(false);
                }
                let root = self.users.get(ROOT).ok_or(Error::RootUserNotExist)?;
                if !root.roles.contains(ROOT) {
                    return Err(Error::RootRoleNotExist);
                }
                self.enabled = true;
                if self.token_key.is_empty() {
                    self.token_key = cmd.token_key.to_vec();
                }
                return Ok(false);
            }
            Op::Disable(_) => {
                if !self.enabled {
                    return Ok(false);
                }
                self.enabled = false;
            }
            Op::UserAdd(r) => {
                if r.name.is_empty() {
                    return Err(Error::UserEmpty);
                }
                if self.users.contains_key(&r.name) {
                    return Err(Error::UserAlreadyExist);
                }
                let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
                let user = User {
                    password_hash: (!no_password).then(|| r.hashed_password.clone()),
                    roles: BTreeSet::new(),
                    generation: self.revision + 1,
                };
                self.users.insert(r.name.clone(), user);
            }
            Op::UserDelete(r) => {
                if self.enabled && r.name == ROOT {
                    return Err(Error::InvalidAuthMgmt);
                }
                self.users.remove(&r.name).ok_or(Error::UserNotFound)?;
            }
            Op::UserChangePassword(r) => {
                let generation = self.revision + 1;
                let user = self.users.get_mut(&r.name).ok_or(Error::UserNotFound)?;
                user.password_hash = Some(r.hashed_password.clone());
                user.generation = generation;
            }
            Op::UserGrantRole(r) => {
                if r.role != ROOT && !self.roles.contains_key(&r.role) {
                    // Checked after the user, as etcd does.
                    self.users.get(&r.user).ok_or(Error::UserNotFound)?;
                    return Err(Error::RoleNotFound);
                }
                let user = self.users.get_mut(&r.user).ok_or(Error::UserNotFound)?;
                if !user.roles.insert(r.role.clone()) {
                    return Ok(false);
                }
            }
            Op::UserRevokeRole(r) => {
                if self.enabled && r.name == ROOT && r.role == ROOT {
                    return Err(Error::InvalidAuthMgmt);
                }
                let user = self.users.get_mut(&r.name).ok_or(Error::UserNotFound)?;
                if !user.roles.remove(&r.role) {
                    return Err(Error::RoleNotGranted);
                }
            }
            Op::RoleAdd(r) => {
                if r.name.is_empty() {
                    return Err(Error::RoleEmpty);
                }
                if self.roles.contains_key(&r.name) {
                    return Err(Error::RoleAlreadyExist);
                }
                self.roles.insert(r.name.clone(), Role::default());
            }
            Op::RoleDelete(r) => {
                if self.enabled && r.role == ROOT {
                    return Err(Error::InvalidAuthMgmt);
                }
                self.roles.remove(&r.role).ok_or(Error::RoleNotFound)?;
                for user in self.users.values_mut() {
                    user.roles.remove(&r.role);
                }
            }
            Op::RoleGrantPermission(r) => {
                let role = self.roles.get_mut(&r.name).ok_or(Error::RoleNotFound)?;
                let Some(perm) = &r.perm else {
                    return Ok(false);
                };
                let access = Access::from_pb(perm.perm_type);
                match role
                    .permissions
                    .iter_mut()
                    .find(|p| p.key == perm.key.as_ref() && p.range_end == perm.range_end.as_ref())
                {
                    Some(p) => p.access = access,
                    None => {
                        role.permissions.push(Permission {
                            access,
                            key: perm.key.to_vec(),
                            range_end: perm.range_end.to_vec(),
                        });
                        role.permissions
                            .sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
                    }
                }
            }
            Op::RoleRevokePermission(r) => {
                let role = self.roles.get_mut(&r.role).ok_or(Error::RoleNotFound)?;
                let before = role.permissions.len();
                role.permissions
                    .retain(|p| !(p.key == r.key.as_ref() && p.range_end == r.range_end.as_ref()));
                if role.permissions.len() == before {
                    return Err(Error::PermissionNotGranted);
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::etcdserverpb as pb;

    fn cmd(op: Op) -> AuthCommand {
        AuthCommand {
            op: Some(op),
            token_key: b"key".to_vec().into(),
        }
    }

    fn user_add(name: &str) -> Op {
        Op::UserAdd(pb::AuthUserAddRequest {
            name: name.into(),
            hashed_password: "hash".into(),
            ..Default::default()
        })
    }

    fn grant(user: &str, role: &str) -> Op {
        Op::UserGrantRole(pb::AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        })
    }

    #[test]
    fn enabling_needs_root_with_the_root_role() {
        let s = AuthState::default();
        let enable = cmd(Op::Enable(pb::AuthEnableRequest {}));
        assert_eq!(s.apply(&enable), Err(Error::RootUserNotExist));
        let s = s.apply(&cmd(user_add(ROOT))).unwrap();
        assert_eq!(s.apply(&enable), Err(Error::RootRoleNotExist));
        // The root role need not exist to be granted (etcd's rule).
        let s = s.apply(&cmd(grant(ROOT, ROOT))).unwrap();
        let on = s.apply(&enable).unwrap();
        assert!(on.enabled);
        assert_eq!(on.token_key, b"key");
        // etcd does not count turning auth on.
        assert_eq!(on.revision, s.revision);
        // Enabling again changes nothing, its key included.
        let mut other = enable.clone();
        other.token_key = b"other".to_vec().into();
        assert_eq!(on.apply(&other).unwrap(), on);
        // On without a key (imported): enabling again sets one, once.
        let mut keyless = on.clone();
        keyless.token_key.clear();
        let keyed = keyless.apply(&other).unwrap();
        assert_eq!(keyed.token_key, b"other");
        assert!(keyed.enabled && keyed.revision == keyless.revision);
        assert_eq!(keyed.apply(&enable).unwrap(), keyed);
        // Root cannot be locked out while auth is on.
        let del = cmd(Op::UserDelete(pb::AuthUserDeleteRequest {
            name: ROOT.into(),
        }));
        assert_eq!(on.apply(&del), Err(Error::InvalidAuthMgmt));
        let revoke = cmd(Op::UserRevokeRole(pb::AuthUserRevokeRoleRequest {
            name: ROOT.into(),
            role: ROOT.into(),
        }));
        assert_eq!(on.apply(&revoke), Err(Error::InvalidAuthMgmt));
    }

    #[test]
    fn users_and_roles_with_etcds_errors() {
        let s = AuthState::default();
        assert_eq!(s.apply(&cmd(user_add(""))), Err(Error::UserEmpty));
        let s = s.apply(&cmd(user_add("u"))).unwrap();
        assert_eq!(s.apply(&cmd(user_add("u"))), Err(Error::UserAlreadyExist));
        assert_eq!(s.apply(&cmd(grant("u", "r"))), Err(Error::RoleNotFound));
        assert_eq!(s.apply(&cmd(grant("x", "r"))), Err(Error::UserNotFound));
        let role_add = |n: &str| cmd(Op::RoleAdd(pb::AuthRoleAddRequest { name: n.into() }));
        assert_eq!(s.apply(&role_add("")), Err(Error::RoleEmpty));
        let s = s.apply(&role_add("r")).unwrap();
        assert_eq!(s.apply(&role_add("r")), Err(Error::RoleAlreadyExist));
        let s = s.apply(&cmd(grant("u", "r"))).unwrap();
        let perm = |t: PermType, k: &str, e: &str| {
            cmd(Op::RoleGrantPermission(
                pb::AuthRoleGrantPermissionRequest {
                    name: "r".into(),
                    perm: Some(cairn_proto::authpb::Permission {
                        perm_type: t as i32,
                        key: k.as_bytes().to_vec().into(),
                        range_end: e.as_bytes().to_vec().into(),
                    }),
                },
            ))
        };
        let s = s.apply(&perm(PermType::Read, "a", "b")).unwrap();
        // The same key and range again: its type is replaced.
        let s = s.apply(&perm(PermType::Readwrite, "a", "b")).unwrap();
        assert_eq!(s.roles["r"].permissions.len(), 1);
        assert_eq!(s.roles["r"].permissions[0].access, Access::ReadWrite);
        let revoke = |k: &str, e: &str| {
            cmd(Op::RoleRevokePermission(
                pb::AuthRoleRevokePermissionRequest {
                    role: "r".into(),
                    key: k.as_bytes().to_vec().into(),
                    range_end: e.as_bytes().to_vec().into(),
                },
            ))
        };
        assert_eq!(s.apply(&revoke("a", "")), Err(Error::PermissionNotGranted));
        let s2 = s.apply(&revoke("a", "b")).unwrap();
        assert!(s2.roles["r"].permissions.is_empty());
        // Deleting a role takes it from every user.
        let s3 = s
            .apply(&cmd(Op::RoleDelete(pb::AuthRoleDeleteRequest {
                role: "r".into(),
            })))
            .unwrap();
        assert!(s3.users["u"].roles.is_empty());
        let not_granted = cmd(Op::UserRevokeRole(pb::AuthUserRevokeRoleRequest {
            name: "u".into(),
            role: "r".into(),
        }));
        assert_eq!(s3.apply(&not_granted), Err(Error::RoleNotGranted));
    }
}
