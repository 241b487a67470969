//! `etcdserverpb.Lease`: each call translated into the [`Client`]'s; a
//! keep-alive stream answers its requests one by one.

use std::pin::Pin;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::lease_server::{Lease, LeaseServer};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::metadata::{caller, check_leader};
use crate::node::Node;
use crate::Client;

/// `etcdserverpb.Lease`.
pub struct LeaseService {
    node: Node,
    client: Client,
}

impl LeaseService {
    /// The service over `node`.
    pub fn server(node: &Node) -> LeaseServer<Self> {
        LeaseServer::new(Self {
            node: node.clone(),
            // Remote, naming no one until a request does.
            client: node.client().as_remote(None),
        })
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        check_leader(&self.node, &req)?;
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?
                .lease_grant(req.into_inner())
                .await?,
        ))
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        check_leader(&self.node, &req)?;
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?
                .lease_revoke(req.into_inner().id)
                .await?,
        ))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        check_leader(&self.node, &req)?;
        let client = caller(&self.node, &self.client, &req)?.into_owned();
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = incoming.message() => m,
                    _ = tx.closed() => return,
                };
                let id = match msg {
                    Ok(Some(r)) => r.id,
                    Ok(None) | Err(_) => return,
                };
                let answer = client
                    .lease_keep_alive_response(id)
                    .await
                    .map_err(Status::from);
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        check_leader(&self.node, &req)?;
        let client = caller(&self.node, &self.client, &req)?;
        let r = req.into_inner();
        Ok(Response::new(
            client.lease_time_to_live(r.id, r.keys).await?,
        ))
    }

    async fn lease_leases(
        &self,
        req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        check_leader(&self.node, &req)?;
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?.lease_leases()?,
        ))
    }
}
