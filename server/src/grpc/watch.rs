//! `etcdserverpb.Watch`: each stream is served by one task
//! (`watch_stream`) over the member's watch hub
//! ([`crate::watch`]).

use std::pin::Pin;
use std::time::Duration;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::watch_server::{Watch, WatchServer};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::metadata::wants_leader;
use crate::node::Node;

/// Events read from history per step.
pub(crate) const HISTORY_CHUNK: usize = 1000;

/// Responses buffered per stream.
const STREAM_BUFFER: usize = 256;

/// etcd's watch id for responses not tied to a watcher.
pub(crate) const INVALID_WATCH_ID: i64 = -1;

/// `etcdserverpb.Watch`.
pub struct WatchService {
    node: Node,
    progress_interval: Duration,
}

impl WatchService {
    /// The service over `node`, with etcd's receive limit.
    pub fn server(node: &Node) -> WatchServer<Self> {
        WatchServer::new(Self {
            node: node.clone(),
            progress_interval: node.config().watch_progress_notify_interval,
        })
        .max_decoding_message_size(node.max_recv_bytes())
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let wants_leader = wants_leader(&req);
        if wants_leader {
            self.node.require_leader()?;
        }
        let (tx, rx) = mpsc::channel::<Result<pb::WatchResponse, Status>>(STREAM_BUFFER);
        tokio::spawn(super::watch_stream::serve(
            self.node.clone(),
            req.into_inner(),
            tx,
            self.progress_interval,
            wants_leader,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
