//! `etcdserverpb.Maintenance`: Status, Hash, HashKV and MoveLeader
//! translated into the [`Client`]'s calls; the rest answer Unimplemented.

use std::pin::Pin;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use futures::Stream;
use tonic::{Request, Response, Status};

use super::metadata::caller;
use crate::error::Error;
use crate::node::Node;
use crate::Client;

/// `etcdserverpb.Maintenance`.
pub struct MaintenanceService {
    node: Node,
    client: Client,
}

impl MaintenanceService {
    /// The service over `node`.
    pub fn server(node: &Node) -> MaintenanceServer<Self> {
        MaintenanceServer::new(Self {
            node: node.clone(),
            // Remote, naming no one until a request does.
            client: node.client().as_remote(None),
        })
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

fn unsupported(what: &str) -> Status {
    Status::from(Error::Unsupported(format!("{what} is not supported yet")))
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    type SnapshotStream = SnapshotStream;

    async fn alarm(
        &self,
        _req: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        Err(Status::from(Error::Unsupported(
            "alarms are not supported yet".into(),
        )))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?.status().await?,
        ))
    }

    async fn defragment(
        &self,
        _req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Err(unsupported("defragment"))
    }

    async fn hash(
        &self,
        req: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?.hash().await?,
        ))
    }

    async fn hash_kv(
        &self,
        req: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?
                .hash_kv(req.into_inner())
                .await?,
        ))
    }

    async fn snapshot(
        &self,
        _req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unsupported("snapshot"))
    }

    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?
                .move_leader(req.into_inner())
                .await?,
        ))
    }

    async fn downgrade(
        &self,
        _req: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(Status::from(Error::Unsupported(
            "downgrade is not supported".into(),
        )))
    }
}
