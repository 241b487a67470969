//! `etcdserverpb.Cluster`: each call translated into the [`Client`]'s.

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use tonic::{Request, Response, Status};

use super::metadata::{caller, check_leader};
use crate::node::Node;
use crate::Client;

/// `etcdserverpb.Cluster`.
pub struct ClusterService {
    node: Node,
    client: Client,
}

impl ClusterService {
    /// The service over `node`.
    pub fn server(node: &Node) -> ClusterServer<Self> {
        ClusterServer::new(Self {
            node: node.clone(),
            // Remote, naming no one until a request does.
            client: node.client().as_remote(None),
        })
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        check_leader(&self.node, &req)?;
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?
                .member_add(req.into_inner())
                .await?,
        ))
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        check_leader(&self.node, &req)?;
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?
                .member_remove(req.into_inner())
                .await?,
        ))
    }

    async fn member_update(
        &self,
        req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        check_leader(&self.node, &req)?;
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?
                .member_update(req.into_inner())
                .await?,
        ))
    }

    async fn member_list(
        &self,
        req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        check_leader(&self.node, &req)?;
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?
                .member_list(req.into_inner())
                .await?,
        ))
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        check_leader(&self.node, &req)?;
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?
                .member_promote(req.into_inner())
                .await?,
        ))
    }
}
