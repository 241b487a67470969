//! `etcdserverpb.Auth`: each call translated into the [`Client`]'s
//! (`crate::client`'s auth calls), as the user the request names.

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::auth_server::{Auth, AuthServer};
use tonic::{Request, Response, Status};

use super::metadata::caller;
use crate::node::Node;
use crate::Client;

/// `etcdserverpb.Auth`.
pub struct AuthService {
    node: Node,
    client: Client,
}

impl AuthService {
    /// The service over `node`.
    pub fn server(node: &Node) -> AuthServer<Self> {
        AuthServer::new(Self {
            node: node.clone(),
            // Remote, naming no one until a request does.
            client: node.client().as_remote(None),
        })
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        req: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(client.auth_enable().await?))
    }

    async fn auth_disable(
        &self,
        req: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(client.auth_disable().await?))
    }

    async fn auth_status(
        &self,
        req: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(client.auth_status().await?))
    }

    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(client.authenticate(req.into_inner()).await?))
    }

    async fn user_add(
        &self,
        req: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(client.user_add(req.into_inner()).await?))
    }

    async fn user_get(
        &self,
        req: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(client.user_get(req.into_inner()).await?))
    }

    async fn user_list(
        &self,
        req: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(client.user_list().await?))
    }

    async fn user_delete(
        &self,
        req: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(client.user_delete(req.into_inner()).await?))
    }

    async fn user_change_password(
        &self,
        req: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(
            client.user_change_password(req.into_inner()).await?,
        ))
    }

    async fn user_grant_role(
        &self,
        req: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(
            client.user_grant_role(req.into_inner()).await?,
        ))
    }

    async fn user_revoke_role(
        &self,
        req: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(
            client.user_revoke_role(req.into_inner()).await?,
        ))
    }

    async fn role_add(
        &self,
        req: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(client.role_add(req.into_inner()).await?))
    }

    async fn role_get(
        &self,
        req: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(client.role_get(req.into_inner()).await?))
    }

    async fn role_list(
        &self,
        req: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(client.role_list().await?))
    }

    async fn role_delete(
        &self,
        req: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(client.role_delete(req.into_inner()).await?))
    }

    async fn role_grant_permission(
        &self,
        req: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(
            client.role_grant_permission(req.into_inner()).await?,
        ))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let client = caller(&self.node, &self.client, &req)?;
        Ok(Response::new(
            client.role_revoke_permission(req.into_inner()).await?,
        ))
    }
}
