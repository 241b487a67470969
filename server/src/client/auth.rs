//! The [`Client`]'s Auth calls: etcd's `Auth` service — enabling and
//! disabling authentication, users, roles, permissions, and
//! `Authenticate`.
//!
//! Changes go through the log ([`cairnpb::AuthCommand`]): passwords are
//! hashed here, before proposing, so the log never holds one in clear;
//! enabling auth carries a fresh token key. With authentication on, every
//! call but `Authenticate` and `AuthStatus` is root's; with it off,
//! anyone's (etcd's rules).

use cairn_proto::cairnpb::{
    self, auth_command::Op as AuthOp, command::Op, command_response::Result as Res,
};
use cairn_proto::etcdserverpb as pb;
use rand::RngCore;

use super::{unexpected, Client, Result};
use crate::auth::state::Access;
use crate::error::Error;

impl Client {
    async fn propose_auth(&self, op: AuthOp, token_key: Vec<u8>) -> Result<u64> {
        let cmd = cairnpb::AuthCommand {
            op: Some(op),
            token_key: token_key.into(),
        };
        match self.propose(Op::Auth(cmd)).await? {
            Res::Auth(r) => Ok(r.auth_revision),
            other => Err(unexpected(other)),
        }
    }

    async fn change(&self, op: AuthOp) -> Result<Option<pb::ResponseHeader>> {
        self.require_root()?;
        self.propose_auth(op, Vec::new()).await?;
        Ok(self.current_header())
    }

    /// Runs bcrypt (slow on purpose) off the async threads.
    async fn bcrypt<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::auth::Auth) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let auth = std::sync::Arc::clone(&self.node.inner.auth);
        tokio::task::spawn_blocking(move || f(&auth))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
    }

    /// etcd's AuthEnable: needs a `root` user with the `root` role.
    pub async fn auth_enable(&self) -> Result<pb::AuthEnableResponse> {
        self.require_root()?;
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        self.propose_auth(AuthOp::Enable(pb::AuthEnableRequest {}), key)
            .await?;
        Ok(pb::AuthEnableResponse {
            header: self.current_header(),
        })
    }

    /// etcd's AuthDisable.
    pub async fn auth_disable(&self) -> Result<pb::AuthDisableResponse> {
        let header = self
            .change(AuthOp::Disable(pb::AuthDisableRequest {}))
            .await?;
        Ok(pb::AuthDisableResponse { header })
    }

    /// etcd's AuthStatus: open to anyone.
    pub async fn auth_status(&self) -> Result<pb::AuthStatusResponse> {
        self.node.inner.read_barrier().await?;
        let st = self.node.inner.auth.state();
        Ok(pb::AuthStatusResponse {
            header: self.current_header(),
            enabled: st.enabled,
            auth_revision: st.revision,
        })
    }

    /// etcd's Authenticate: a token for a user and its password.
    pub async fn authenticate(
        &self,
        req: pb::AuthenticateRequest,
    ) -> Result<pb::AuthenticateResponse> {
        // A user just added through another member is known here too.
        self.node.inner.read_barrier().await?;
        let token = self
            .bcrypt(move |auth| {
                auth.check_password(&req.name, &req.password)?;
                auth.token_for(&req.name)
            })
            .await?;
        Ok(pb::AuthenticateResponse {
            header: self.current_header(),
            token,
        })
    }

    /// etcd's UserAdd (`options.no_password`: a user who authenticates by
    /// client certificate only).
    pub async fn user_add(
        &self,
        mut req: pb::AuthUserAddRequest,
    ) -> Result<pb::AuthUserAddResponse> {
        self.require_root()?;
        let no_password = req.options.as_ref().is_some_and(|o| o.no_password);
        if req.name.is_empty() {
            return Err(Error::UserEmpty);
        }
        if !no_password && req.hashed_password.is_empty() {
            let password = std::mem::take(&mut req.password);
            req.hashed_password = self.bcrypt(move |a| a.hash_password(&password)).await?;
        }
        req.password.clear();
        let header = self.change(AuthOp::UserAdd(req)).await?;
        Ok(pb::AuthUserAddResponse { header })
    }

    /// etcd's UserDelete.
    pub async fn user_delete(
        &self,
        req: pb::AuthUserDeleteRequest,
    ) -> Result<pb::AuthUserDeleteResponse> {
        let header = self.change(AuthOp::UserDelete(req)).await?;
        Ok(pb::AuthUserDeleteResponse { header })
    }

    /// etcd's UserChangePassword: the user's tokens stop working.
    pub async fn user_change_password(
        &self,
        mut req: pb::AuthUserChangePasswordRequest,
    ) -> Result<pb::AuthUserChangePasswordResponse> {
        self.require_root()?;
        if req.hashed_password.is_empty() {
            let password = std::mem::take(&mut req.password);
            req.hashed_password = self.bcrypt(move |a| a.hash_password(&password)).await?;
        }
        req.password.clear();
        let header = self.change(AuthOp::UserChangePassword(req)).await?;
        Ok(pb::AuthUserChangePasswordResponse { header })
    }

    /// etcd's UserGrantRole.
    pub async fn user_grant_role(
        &self,
        req: pb::AuthUserGrantRoleRequest,
    ) -> Result<pb::AuthUserGrantRoleResponse> {
        let header = self.change(AuthOp::UserGrantRole(req)).await?;
        Ok(pb::AuthUserGrantRoleResponse { header })
    }

    /// etcd's UserRevokeRole.
    pub async fn user_revoke_role(
        &self,
        req: pb::AuthUserRevokeRoleRequest,
    ) -> Result<pb::AuthUserRevokeRoleResponse> {
        let header = self.change(AuthOp::UserRevokeRole(req)).await?;
        Ok(pb::AuthUserRevokeRoleResponse { header })
    }

    /// etcd's UserGet: the user's roles.
    /// Root, or any user about themself.
    pub async fn user_get(&self, req: pb::AuthUserGetRequest) -> Result<pb::AuthUserGetResponse> {
        self.require_root_or(|_, user| user == req.name)?;
        self.node.inner.read_barrier().await?;
        let st = self.node.inner.auth.state();
        let user = st.users.get(&req.name).ok_or(Error::UserNotFound)?;
        Ok(pb::AuthUserGetResponse {
            header: self.current_header(),
            roles: user.roles.iter().cloned().collect(),
        })
    }

    /// etcd's UserList, sorted.
    pub async fn user_list(&self) -> Result<pb::AuthUserListResponse> {
        self.require_root()?;
        self.node.inner.read_barrier().await?;
        Ok(pb::AuthUserListResponse {
            header: self.current_header(),
            users: self.node.inner.auth.state().users.keys().cloned().collect(),
        })
    }

    /// etcd's RoleAdd.
    pub async fn role_add(&self, req: pb::AuthRoleAddRequest) -> Result<pb::AuthRoleAddResponse> {
        let header = self.change(AuthOp::RoleAdd(req)).await?;
        Ok(pb::AuthRoleAddResponse { header })
    }

    /// etcd's RoleDelete: the role is taken from every user.
    pub async fn role_delete(
        &self,
        req: pb::AuthRoleDeleteRequest,
    ) -> Result<pb::AuthRoleDeleteResponse> {
        let header = self.change(AuthOp::RoleDelete(req)).await?;
        Ok(pb::AuthRoleDeleteResponse { header })
    }

    /// etcd's RoleGet: the role's permissions.
    /// Root, or a user who has the role.
    pub async fn role_get(&self, req: pb::AuthRoleGetRequest) -> Result<pb::AuthRoleGetResponse> {
        self.require_root_or(|st, user| {
            st.users
                .get(user)
                .is_some_and(|u| u.roles.contains(&req.role))
        })?;
        self.node.inner.read_barrier().await?;
        let st = self.node.inner.auth.state();
        let role = st.roles.get(&req.role).ok_or(Error::RoleNotFound)?;
        Ok(pb::AuthRoleGetResponse {
            header: self.current_header(),
            perm: role
                .permissions
                .iter()
                .map(|p| cairn_proto::authpb::Permission {
                    perm_type: Access::to_pb(p.access) as i32,
                    key: p.key.clone().into(),
                    range_end: p.range_end.clone().into(),
                })
                .collect(),
        })
    }

    /// etcd's RoleList, sorted.
    pub async fn role_list(&self) -> Result<pb::AuthRoleListResponse> {
        self.require_root()?;
        self.node.inner.read_barrier().await?;
        Ok(pb::AuthRoleListResponse {
            header: self.current_header(),
            roles: self.node.inner.auth.state().roles.keys().cloned().collect(),
        })
    }

    /// etcd's RoleGrantPermission (the same key and range again replaces
    /// the permission's type).
    pub async fn role_grant_permission(
        &self,
        req: pb::AuthRoleGrantPermissionRequest,
    ) -> Result<pb::AuthRoleGrantPermissionResponse> {
        let header = self.change(AuthOp::RoleGrantPermission(req)).await?;
        Ok(pb::AuthRoleGrantPermissionResponse { header })
    }

    /// etcd's RoleRevokePermission.
    pub async fn role_revoke_permission(
        &self,
        req: pb::AuthRoleRevokePermissionRequest,
    ) -> Result<pb::AuthRoleRevokePermissionResponse> {
        let header = self.change(AuthOp::RoleRevokePermission(req)).await?;
        Ok(pb::AuthRoleRevokePermissionResponse { header })
    }
}
