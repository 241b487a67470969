//! `etcdserverpb.Maintenance` translated into the [`Client`]'s calls;
//! Downgrade answers Unimplemented.

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

/// A snapshot whose export failed midway: the stream ends with this.
fn snapshot_failed(e: &std::io::Error) -> Status {
    tracing::error!(error = %e, "snapshot export failed");
    Status::internal(format!("snapshot failed: {e}"))
}

/// A snapshot's pieces as etcd's answers. Each piece is sent once the
/// next is known: `remaining_bytes` is what is known to follow (the next
/// piece; the export's total is not known before it ends), 0 on the last
/// (the SHA-256). Also what the JSON gateway streams.
pub(crate) fn snapshot_stream(
    header: Option<pb::ResponseHeader>,
    pieces: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
) -> impl Stream<Item = Result<pb::SnapshotResponse, Status>> + Send {
    futures::stream::unfold(
        (pieces, None::<bytes::Bytes>),
        move |(mut pieces, held)| async move {
            let held = match held {
                Some(h) => h,
                None => match pieces.recv().await? {
                    Ok(b) => b,
                    Err(e) => return Some((Err(snapshot_failed(&e)), (pieces, None))),
                },
            };
            let (next, remaining) = match pieces.recv().await {
                Some(Ok(b)) => {
                    let n = b.len() as u64;
                    (Some(b), n)
                }
                Some(Err(e)) => {
                    return Some((Err(snapshot_failed(&e)), (pieces, None)));
                }
                None => (None, 0),
            };
            let resp = pb::SnapshotResponse {
                header,
                remaining_bytes: remaining,
                blob: held,
            };
            Some((Ok(resp), (pieces, next)))
        },
    )
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    type SnapshotStream = SnapshotStream;

    async fn alarm(
        &self,
        req: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?
                .alarm(req.into_inner())
                .await?,
        ))
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
        req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?.defragment().await?,
        ))
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
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let (header, pieces) = caller(&self.node, &self.client, &req)?.snapshot()?;
        let stream = snapshot_stream(header, pieces);
        Ok(Response::new(Box::pin(stream)))
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
