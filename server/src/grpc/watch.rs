//! `etcdserverpb.Watch`: each stream is served by one task
//! (`watch_stream`) over the member's watch hub
//! ([`crate::watch`]).

use std::pin::Pin;
use std::time::Duration;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::watch_server::{Watch, WatchServer};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tonic::{Request, Response, Status, Streaming};

use super::metadata::{wants_leader, CertName};
use crate::node::Node;

/// Events read from history per step.
pub(crate) const HISTORY_CHUNK: usize = 1000;

/// Bytes of records read from history per step (a step ends at a
/// revision boundary once past it).
pub(crate) const HISTORY_CHUNK_BYTES: usize = 1 << 20;

/// Responses buffered per stream.
pub(crate) const STREAM_BUFFER: usize = 256;

/// Bytes of responses (keys and values, roughly) a stream may have
/// waiting for its client: a client that does not read holds the stream's
/// task at this much, whatever the size of its events.
pub(crate) const STREAM_BUFFER_BYTES: usize = 4 << 20;

/// A response on its way to the client, with its share of
/// [`STREAM_BUFFER_BYTES`], given back when tonic takes it.
pub(crate) type Outgoing = (
    Result<pb::WatchResponse, Status>,
    Option<OwnedSemaphorePermit>,
);

/// The most watchers one stream may carry; a create beyond it is
/// answered created and canceled. With [`CATCH_UP_PERMITS`] and
/// [`STREAM_BUFFER_BYTES`] it bounds what a client that never reads can
/// make a stream hold: its watchers' entries, [`STREAM_BUFFER_BYTES`] of
/// responses and [`CATCH_UP_PERMITS`] chunks of history. etcd has no such
/// bound.
pub(crate) const MAX_WATCHERS_PER_STREAM: usize = 10_000;

/// Chunks of history a stream reads at once for its watchers that are
/// catching up; the others wait their turn.
pub(crate) const CATCH_UP_PERMITS: usize = 2;

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
        let token = req.metadata().get("token").and_then(|v| v.to_str().ok());
        let cert = req.extensions().get::<CertName>().map(|c| &*c.0);
        let user = self.node.inner.auth.identify(token, cert)?;
        let (tx, rx) = mpsc::channel::<Outgoing>(STREAM_BUFFER);
        tokio::spawn(super::watch_stream::serve(
            self.node.clone(),
            req.into_inner(),
            tx,
            self.progress_interval,
            wants_leader,
            user,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx).map(|(resp, _share)| resp),
        )))
    }
}
