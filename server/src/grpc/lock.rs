//! `v3lockpb.Lock`: etcd's lock service.
//!
//! Locking `name` takes a place in the queue of keys under `name/` (see
//! `grpc/queue.rs`): the key `name/<lease in hex>`, empty, attached to
//! the caller's lease (without one, a lease of 60 s is granted). The
//! caller holds the lock once its key is at the head; a caller that goes
//! away while waiting has its key deleted, and a lease that ends while
//! waiting fails the call with etcd's `session expired`. Unlock deletes
//! the key. Every call is made as the caller, so auth applies as to any
//! KV call.

use bytes::Bytes;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::v3lockpb::lock_server::{Lock, LockServer};
use cairn_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use super::metadata::{caller, check_leader};
use super::queue;
use crate::node::Node;
use crate::Client;

/// `v3lockpb.Lock`.
pub struct LockService {
    node: Node,
    client: Client,
}

impl LockService {
    /// The service over `node`.
    pub fn server(node: &Node) -> LockServer<Self> {
        LockServer::new(Self {
            node: node.clone(),
            client: node.client().as_remote(None),
        })
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        check_leader(&self.node, &req)?;
        let client = caller(&self.node, &self.client, &req)?.into_owned();
        let LockRequest { name, lease } = req.into_inner();
        let lease = queue::session_lease(&client, lease).await?;
        let prefix = [name.as_ref(), b"/"].concat();
        let place = queue::join(&client, &prefix, lease, Bytes::new()).await?;
        let abandon = queue::Abandon::new(&client, &place.key);
        queue::wait_for_head(&client, &prefix, &place).await?;
        abandon.disarm();
        Ok(Response::new(LockResponse {
            header: place.header,
            key: place.key,
        }))
    }

    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        check_leader(&self.node, &req)?;
        let client = caller(&self.node, &self.client, &req)?.into_owned();
        let resp = client
            .delete_range(pb::DeleteRangeRequest {
                key: req.into_inner().key,
                ..Default::default()
            })
            .await?;
        Ok(Response::new(UnlockResponse {
            header: resp.header,
        }))
    }
}
