//! etcd's Watch service.
//!
//! Events come from the state machine as each write is applied: one
//! [`RevEvents`] per revision, broadcast on a bounded channel. Each gRPC
//! stream is served by one task (`stream`) holding all its watchers:
//! those caught up (*synced*) take each revision from the broadcast as it
//! arrives; those behind — starting in the past, or after a gap (the
//! broadcast overflowed, or a snapshot was installed) — read history from
//! the store ([`cairn_kv::Store::history`]) until they reach it. So writes
//! never wait for watchers, memory stays bounded, and a slow client slows
//! only its own stream. Every revision that changed the store has at
//! least one event, so a jump in revisions is a gap.
//!
//! Modules: `filter` (what a watcher selects), `stream` (one stream's
//! watchers, progress notifications and RequestProgress answers).

mod filter;
mod stream;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cairn_kv as kv;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::watch_server::{Watch, WatchServer};
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Response, Status, Streaming};

use crate::node::Node;

/// The events of one applied revision.
#[derive(Debug)]
pub struct RevEvents {
    pub revision: i64,
    /// As the write produced them: most without `prev_kv` (see
    /// [`kv::Event`]); for a revoke, built from `deferred` when first
    /// asked for.
    events: std::sync::OnceLock<Vec<kv::Event>>,
    deferred: Option<kv::RevokedKeys>,
    /// The same events with every `prev_kv` read, by the first watcher
    /// that needs them, for all.
    with_prev: tokio::sync::OnceCell<Result<Arc<Vec<kv::Event>>, Arc<kv::Error>>>,
}

impl RevEvents {
    pub fn new(revision: i64, events: Vec<kv::Event>) -> Self {
        Self {
            revision,
            events: std::sync::OnceLock::from(events),
            deferred: None,
            with_prev: tokio::sync::OnceCell::new(),
        }
    }

    /// A revoke's events, built by the first reader.
    pub fn deferred(revision: i64, deleted: kv::RevokedKeys) -> Self {
        Self {
            revision,
            events: std::sync::OnceLock::new(),
            deferred: Some(deleted),
            with_prev: tokio::sync::OnceCell::new(),
        }
    }

    /// The events, in order.
    pub fn events(&self) -> &[kv::Event] {
        self.events.get_or_init(|| {
            self.deferred
                .as_ref()
                .map(kv::RevokedKeys::events)
                .unwrap_or_default()
        })
    }

    /// The events with `prev_kv` filled in, read from `store` once.
    async fn with_prev_kv(
        &self,
        store: &Arc<kv::Store>,
    ) -> Result<Arc<Vec<kv::Event>>, Arc<kv::Error>> {
        self.with_prev
            .get_or_init(|| async {
                let store = Arc::clone(store);
                let mut events = self.events().to_vec();
                let read = tokio::task::spawn_blocking(move || {
                    store.fill_prev_kv(&mut events).map(|()| events)
                })
                .await;
                match read {
                    Ok(Ok(events)) => Ok(Arc::new(events)),
                    Ok(Err(e)) => Err(Arc::new(e)),
                    Err(e) => Err(Arc::new(kv::Error::Backend(Box::new(e)))),
                }
            })
            .await
            .clone()
    }
}

/// Where applied events are published.
pub type EventSender = broadcast::Sender<Arc<RevEvents>>;

/// Revisions kept for watchers that are briefly behind; further behind,
/// they read history.
pub const BROADCAST_REVISIONS: usize = 4096;

/// Events read from history per step.
const HISTORY_CHUNK: usize = 1000;

/// Responses buffered per stream.
const STREAM_BUFFER: usize = 256;

/// etcd's watch id for responses not tied to a watcher.
const INVALID_WATCH_ID: i64 = -1;

/// `etcdserverpb.Watch`.
pub struct WatchService {
    node: Node,
    progress_interval: Duration,
}

impl WatchService {
    pub fn server(node: &Node) -> WatchServer<Self> {
        WatchServer::new(Self {
            node: node.clone(),
            progress_interval: node.config().watch_progress_notify_interval,
        })
        .max_decoding_message_size(node.inner.max_recv_bytes())
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
        let wants_leader = crate::api::wants_leader(&req);
        if wants_leader {
            self.node.inner.require_leader()?;
        }
        let (tx, rx) = mpsc::channel::<Result<pb::WatchResponse, Status>>(STREAM_BUFFER);
        tokio::spawn(stream::serve(
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
