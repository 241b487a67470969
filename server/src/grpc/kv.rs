//! `etcdserverpb.KV`: each call translated into the [`Client`]'s;
//! `RangeStream` chunked by `grpc/range_stream.rs`, large Range answers
//! encoded as they are sent by [`super::large_range`].

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::kv_server::{Kv, KvServer};
use tonic::{Request, Response, Status};

use super::large_range::{LargeRanges, Pending};
use super::metadata::{caller, check_leader};
use crate::client::RangeRead;
use crate::node::Node;
use crate::Client;

/// A Range answer larger than this (encoded) is not held whole but
/// encoded while it is sent (see `grpc/large_range.rs`).
pub const HOLD: usize = 4 << 20;

/// `etcdserverpb.KV`.
pub struct KvService {
    node: Node,
    client: Client,
}

type RangeChunks =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::RangeStreamResponse, Status>> + Send>>;

impl KvService {
    /// The service over `node`, with etcd's receive limit; Range answers
    /// over [`HOLD`] bytes are encoded as they are sent.
    pub fn server(node: &Node) -> LargeRanges<KvServer<Self>> {
        let max = node.max_recv_bytes();
        LargeRanges(
            KvServer::new(Self {
                node: node.clone(),
                // Remote, naming no one until a request does.
                client: node.client().as_remote(None),
            })
            .max_decoding_message_size(max)
            .max_encoding_message_size(usize::MAX),
        )
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        check_leader(&self.node, &req)?;
        let read = caller(&self.node, &self.client, &req)?
            .range_read(req.into_inner(), HOLD)
            .await?;
        Ok(match read {
            RangeRead::Whole(r) => Response::new(r),
            RangeRead::Large(large) => {
                let mut resp = Response::new(pb::RangeResponse::default());
                resp.extensions_mut().insert(Pending::new(large));
                resp
            }
        })
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        check_leader(&self.node, &req)?;
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?
                .put(req.into_inner())
                .await?,
        ))
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        check_leader(&self.node, &req)?;
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?
                .delete_range(req.into_inner())
                .await?,
        ))
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        check_leader(&self.node, &req)?;
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?
                .txn(req.into_inner())
                .await?,
        ))
    }

    type RangeStreamStream = RangeChunks;

    async fn range_stream(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        check_leader(&self.node, &req)?;
        let client = caller(&self.node, &self.client, &req)?.into_owned();
        let target = self.node.config().max_request_bytes;
        let chunks = super::range_stream::stream(client, req.into_inner(), target);
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(chunks),
        )))
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        check_leader(&self.node, &req)?;
        Ok(Response::new(
            caller(&self.node, &self.client, &req)?
                .compact(req.into_inner())
                .await?,
        ))
    }
}
