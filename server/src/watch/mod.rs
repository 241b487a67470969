//! etcd's Watch service.
//!
//! Events come from the state machine as each write is applied: one
//! [`RevEvents`] per revision, broadcast on a bounded channel. A watcher
//! reads history from the store ([`cairn_kv::Store::history`]) until it is
//! caught up, then follows the broadcast. A watcher that falls behind (the
//! broadcast overflowed, or a gap in revisions after a snapshot install)
//! goes back to history from its next revision, so writes never wait for
//! watchers and memory stays bounded. Every revision that changed the
//! store has at least one event, so a jump in revisions is a gap.
//!
//! One gRPC stream carries many watchers; each runs as its own task and
//! sends its responses through the stream's bounded channel, so a slow
//! client slows only its own watchers.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_kv as kv;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::watch_server::{Watch, WatchServer};
use cairn_proto::mvccpb;
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::node::Node;
use crate::status::msg;

/// The events of one applied revision.
#[derive(Debug)]
pub struct RevEvents {
    pub revision: i64,
    /// As the write produced them: most without `prev_kv` (see
    /// [`kv::Event`]).
    pub events: Vec<kv::Event>,
    /// The same events with every `prev_kv` read, by the first watcher
    /// that needs them, for all.
    with_prev: tokio::sync::OnceCell<Result<Arc<Vec<kv::Event>>, Arc<kv::Error>>>,
}

impl RevEvents {
    pub fn new(revision: i64, events: Vec<kv::Event>) -> Self {
        Self {
            revision,
            events,
            with_prev: tokio::sync::OnceCell::new(),
        }
    }

    /// The events with `prev_kv` filled in, read from `store` once.
    async fn with_prev_kv(
        &self,
        store: &Arc<kv::Store>,
    ) -> Result<Arc<Vec<kv::Event>>, Arc<kv::Error>> {
        self.with_prev
            .get_or_init(|| async {
                let store = Arc::clone(store);
                let mut events = self.events.clone();
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

/// What a watcher selects.
#[derive(Clone)]
struct Filter {
    key: Bytes,
    /// Empty: the single key; `None`: every key from `key` on.
    range_end: Option<Bytes>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    fragment: bool,
}

impl Filter {
    fn matches(&self, e: &kv::Event) -> bool {
        let k = &e.kv.key;
        let in_range = match &self.range_end {
            None => k >= &self.key,
            Some(end) if end.is_empty() => k == &self.key,
            Some(end) => k >= &self.key && k < end,
        };
        in_range
            && !(self.no_put && e.kind == kv::EventKind::Put)
            && !(self.no_delete && e.kind == kv::EventKind::Delete)
    }

    fn to_pb(&self, e: &kv::Event) -> mvccpb::Event {
        mvccpb::Event {
            r#type: match e.kind {
                kv::EventKind::Put => mvccpb::event::EventType::Put as i32,
                kv::EventKind::Delete => mvccpb::event::EventType::Delete as i32,
            },
            kv: Some(convert::key_value(e.kv.clone())),
            prev_kv: if self.prev_kv {
                e.prev_kv.clone().map(convert::key_value)
            } else {
                None
            },
        }
    }
}

struct WatcherHandle {
    task: JoinHandle<()>,
    /// The next revision this watcher will deliver.
    next: Arc<AtomicI64>,
}

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
        let mut incoming = req.into_inner();
        let (tx, rx) = mpsc::channel::<Result<pb::WatchResponse, Status>>(STREAM_BUFFER);
        let node = self.node.clone();
        let progress_interval = self.progress_interval;
        tokio::spawn(async move {
            let mut watchers: HashMap<i64, WatcherHandle> = HashMap::new();
            let mut next_id: i64 = 0;
            // The revision a pending progress answer must reach; 0 when
            // none is pending. Requests made while one is pending share
            // its answer (as in etcd), so a stream has at most one.
            let progress_target = Arc::new(AtomicI64::new(0));
            // Highest event revision queued on the stream; held while a
            // watcher queues events and advances, and while a progress
            // answer is chosen and queued, so no answer names a revision
            // below an event sent before it.
            let sent = Arc::new(tokio::sync::Mutex::new(0i64));
            let mut leader_check = tokio::time::interval(Duration::from_millis(500));
            // A client that closes its sending side still gets events until
            // it goes away, as with etcd.
            let mut requests_done = false;
            loop {
                let msg = tokio::select! {
                    m = incoming.message(), if !requests_done => m,
                    _ = leader_check.tick(), if wants_leader => {
                        if node.inner.leader().is_none() {
                            let _ = tx.send(Err(Status::unavailable(msg::NO_LEADER))).await;
                            break;
                        }
                        continue;
                    }
                    _ = tx.closed() => break,
                };
                let req = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        requests_done = true;
                        continue;
                    }
                    Err(_) => break,
                };
                match req.request_union {
                    Some(RequestUnion::CreateRequest(c)) => {
                        let id = if c.watch_id != 0 {
                            c.watch_id
                        } else {
                            while watchers.contains_key(&next_id) {
                                next_id += 1;
                            }
                            let id = next_id;
                            next_id += 1;
                            id
                        };
                        let header = Some(node.inner.header(node.inner.store.current_revision()));
                        if watchers.contains_key(&id) || id < 0 {
                            let _ = tx
                                .send(Ok(pb::WatchResponse {
                                    header,
                                    watch_id: INVALID_WATCH_ID,
                                    created: true,
                                    canceled: true,
                                    cancel_reason:
                                        "mvcc: duplicate watch ID provided on the WatchStream"
                                            .into(),
                                    ..Default::default()
                                }))
                                .await;
                            continue;
                        }
                        watchers.retain(|_, w| !w.task.is_finished());
                        let handle = start_watcher(
                            &node,
                            id,
                            c,
                            tx.clone(),
                            Arc::clone(&sent),
                            progress_interval,
                        )
                        .await;
                        watchers.insert(id, handle);
                    }
                    Some(RequestUnion::CancelRequest(c)) => {
                        if let Some(w) = watchers.remove(&c.watch_id) {
                            w.task.abort();
                            let _ = w.task.await;
                            let header =
                                Some(node.inner.header(node.inner.store.current_revision()));
                            let _ = tx
                                .send(Ok(pb::WatchResponse {
                                    header,
                                    watch_id: c.watch_id,
                                    canceled: true,
                                    ..Default::default()
                                }))
                                .await;
                        }
                    }
                    Some(RequestUnion::ProgressRequest(_)) => {
                        // Answered only once every watcher of the stream has
                        // delivered everything up to the current revision.
                        let node = node.clone();
                        let tx = tx.clone();
                        let nexts: Vec<Arc<AtomicI64>> = watchers
                            .values()
                            .filter(|w| !w.task.is_finished())
                            .map(|w| Arc::clone(&w.next))
                            .collect();
                        // The answer is the lowest revision every watcher
                        // has delivered, once all have reached the
                        // revision current at the request. A watcher sends
                        // its events before advancing `next`, so this
                        // answer is queued after them.
                        let current = node.inner.store.current_revision();
                        if progress_target.fetch_max(current, Ordering::AcqRel) != 0 {
                            continue;
                        }
                        let progress_target = Arc::clone(&progress_target);
                        let sent = Arc::clone(&sent);
                        tokio::spawn(async move {
                            loop {
                                let target = progress_target.load(Ordering::Acquire);
                                let sent_rev = sent.lock().await;
                                let current = node.inner.store.current_revision();
                                // A watcher starting past the current
                                // revision has nothing to deliver yet.
                                let delivered = nexts
                                    .iter()
                                    .map(|n| n.load(Ordering::Acquire) - 1)
                                    .filter(|&d| d <= current)
                                    .min()
                                    .unwrap_or(current)
                                    .min(current);
                                if delivered >= target
                                    && delivered >= *sent_rev
                                    && progress_target
                                        .compare_exchange(
                                            target,
                                            0,
                                            Ordering::AcqRel,
                                            Ordering::Acquire,
                                        )
                                        .is_ok()
                                {
                                    let _ = tx
                                        .send(Ok(pb::WatchResponse {
                                            header: Some(node.inner.header(delivered)),
                                            watch_id: INVALID_WATCH_ID,
                                            ..Default::default()
                                        }))
                                        .await;
                                    return;
                                }
                                drop(sent_rev);
                                if tx.is_closed() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        });
                    }
                    None => {}
                }
            }
            for (_, w) in watchers {
                w.task.abort();
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

async fn start_watcher(
    node: &Node,
    id: i64,
    c: pb::WatchCreateRequest,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    sent: Arc<tokio::sync::Mutex<i64>>,
    progress_interval: Duration,
) -> WatcherHandle {
    let key = if c.key.is_empty() {
        Bytes::from_static(b"\0")
    } else {
        c.key.clone()
    };
    let range_end = match c.range_end.as_ref() {
        [] => Some(Bytes::new()),
        [0] => None,
        _ => Some(c.range_end.clone()),
    };
    let filter = Filter {
        key,
        range_end,
        no_put: c.filters.contains(&(FilterType::Noput as i32)),
        no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        prev_kv: c.prev_kv,
        fragment: c.fragment,
    };
    // Subscribe before reading the current revision: every revision after
    // it arrives on the channel.
    let rx = node.inner.events.subscribe();
    let current = node.inner.store.current_revision();
    let start = if c.start_revision > 0 {
        c.start_revision
    } else {
        current + 1
    };
    let next = Arc::new(AtomicI64::new(start));
    let created = pb::WatchResponse {
        header: Some(node.inner.header(current)),
        watch_id: id,
        created: true,
        ..Default::default()
    };
    let w = Watcher {
        node: node.clone(),
        id,
        filter,
        tx,
        sent,
        next: Arc::clone(&next),
        progress: c.progress_notify.then_some(progress_interval),
    };
    let task = tokio::spawn(async move {
        let next = Arc::clone(&w.next);
        if w.tx.send(Ok(created)).await.is_ok() {
            w.run(rx).await;
        }
        // A watcher that ended holds back no progress answer.
        next.store(i64::MAX, Ordering::Release);
    });
    WatcherHandle { task, next }
}

struct Watcher {
    node: Node,
    id: i64,
    filter: Filter,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    /// The stream's highest queued event revision (see the stream task).
    sent: Arc<tokio::sync::Mutex<i64>>,
    next: Arc<AtomicI64>,
    progress: Option<Duration>,
}

enum Step {
    Go,
    Stop,
}

impl Watcher {
    async fn run(self, mut rx: broadcast::Receiver<Arc<RevEvents>>) {
        let mut last_sent = tokio::time::Instant::now();
        loop {
            // Catch up from history while behind.
            loop {
                let next = self.next.load(Ordering::Acquire);
                let current = self.node.inner.store.current_revision();
                if next > current {
                    break;
                }
                match self.send_history(next, current).await {
                    Step::Go => last_sent = tokio::time::Instant::now(),
                    Step::Stop => return,
                }
            }
            // Follow the broadcast.
            let recv = async {
                match self.progress {
                    Some(every) => tokio::time::timeout_at(last_sent + every, rx.recv())
                        .await
                        .ok(),
                    None => Some(rx.recv().await),
                }
            };
            match recv.await {
                None => {
                    // Progress notification: nothing new for a while and
                    // caught up, so every event up to here was delivered.
                    // A watcher that starts in the future has nothing to
                    // report yet (etcd#20221).
                    let rev = self.next.load(Ordering::Acquire) - 1;
                    if rev > self.node.inner.store.current_revision() {
                        last_sent = tokio::time::Instant::now();
                        continue;
                    }
                    let resp = pb::WatchResponse {
                        header: Some(self.node.inner.header(rev)),
                        watch_id: self.id,
                        ..Default::default()
                    };
                    if self.tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                    last_sent = tokio::time::Instant::now();
                }
                Some(Ok(batch)) => {
                    let next = self.next.load(Ordering::Acquire);
                    if batch.revision < next {
                        continue;
                    }
                    if batch.revision > next {
                        // A gap: history fills it on the next turn.
                        continue;
                    }
                    let filled;
                    let mut events: &[kv::Event] = &batch.events;
                    if self.filter.prev_kv
                        && events
                            .iter()
                            .any(|e| e.needs_prev_kv() && self.filter.matches(e))
                    {
                        match batch.with_prev_kv(&self.node.inner.store).await {
                            Ok(e) => {
                                filled = e;
                                events = &filled;
                            }
                            Err(e) => {
                                self.stop_on(&e).await;
                                return;
                            }
                        }
                    }
                    let events: Vec<mvccpb::Event> = events
                        .iter()
                        .filter(|e| self.filter.matches(e))
                        .map(|e| self.filter.to_pb(e))
                        .collect();
                    if events.is_empty() {
                        self.next.store(batch.revision + 1, Ordering::Release);
                    } else {
                        if !self
                            .send_events(batch.revision, events, batch.revision + 1)
                            .await
                        {
                            return;
                        }
                        last_sent = tokio::time::Instant::now();
                    }
                }
                Some(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Some(Err(broadcast::error::RecvError::Closed)) => return,
            }
        }
    }

    /// Sends history from `next` up to `current` (one chunk).
    async fn send_history(&self, next: i64, current: i64) -> Step {
        let store = Arc::clone(&self.node.inner.store);
        let filter = self.filter.clone();
        // Only this watcher's events, and their previous values only if
        // it asked for them.
        let read = tokio::task::spawn_blocking(move || {
            let h = store.history(next, current, HISTORY_CHUNK)?;
            let mut events: Vec<kv::Event> = h
                .events
                .into_iter()
                .map(|(_, e)| e)
                .filter(|e| filter.matches(e))
                .collect();
            if filter.prev_kv {
                store.fill_prev_kv(&mut events)?;
            }
            Ok::<_, kv::Error>((events, h.next))
        })
        .await;
        let (events, h_next) = match read {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                self.stop_on(&e).await;
                return Step::Stop;
            }
            Err(e) => {
                let _ = self.tx.send(Err(Status::internal(e.to_string()))).await;
                return Step::Stop;
            }
        };
        let events: Vec<mvccpb::Event> = events.iter().map(|e| self.filter.to_pb(e)).collect();
        if events.is_empty() {
            self.next.store(h_next, Ordering::Release);
        } else if !self.send_events(current, events, h_next).await {
            return Step::Stop;
        }
        Step::Go
    }

    /// Ends the watcher on a store error: a compaction that overtook it
    /// cancels it as etcd does, anything else fails the stream.
    async fn stop_on(&self, e: &kv::Error) {
        let resp = match e {
            kv::Error::Compacted { compacted, .. } => Ok(pb::WatchResponse {
                // etcd leaves the header revision 0 on this response.
                header: Some(self.node.inner.header(0)),
                watch_id: self.id,
                canceled: true,
                compact_revision: *compacted,
                cancel_reason: msg::COMPACTED.into(),
                ..Default::default()
            }),
            e => Err(crate::status::from_kv(e)),
        };
        let _ = self.tx.send(resp).await;
    }

    /// Sends events in one response or, when the watcher asked for
    /// fragments and the response would exceed the request size limit, in
    /// several: all but the last marked `fragment`. False when the stream
    /// is gone. Then the watcher's next revision becomes `next`.
    async fn send_events(&self, revision: i64, events: Vec<mvccpb::Event>, next: i64) -> bool {
        let mut sent = self.sent.lock().await;
        let newest = events
            .iter()
            .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
            .max()
            .unwrap_or(0);
        if !self.queue_events(revision, events).await {
            return false;
        }
        *sent = (*sent).max(newest);
        self.next.store(next, Ordering::Release);
        true
    }

    async fn queue_events(&self, revision: i64, events: Vec<mvccpb::Event>) -> bool {
        let header = Some(self.node.inner.header(revision));
        let limit = self.node.config().max_request_bytes;
        let size: usize = events.iter().map(prost::Message::encoded_len).sum();
        if !self.filter.fragment || size < limit || events.len() < 2 {
            let resp = pb::WatchResponse {
                header,
                watch_id: self.id,
                events,
                ..Default::default()
            };
            return self.tx.send(Ok(resp)).await.is_ok();
        }
        let mut parts: Vec<Vec<mvccpb::Event>> = Vec::new();
        let mut part = Vec::new();
        let mut part_size = 0;
        for e in events {
            let n = prost::Message::encoded_len(&e);
            if !part.is_empty() && part_size + n > limit {
                parts.push(std::mem::take(&mut part));
                part_size = 0;
            }
            part_size += n;
            part.push(e);
        }
        parts.push(part);
        let last = parts.len() - 1;
        for (i, events) in parts.into_iter().enumerate() {
            let resp = pb::WatchResponse {
                header,
                watch_id: self.id,
                events,
                fragment: i < last,
                ..Default::default()
            };
            if self.tx.send(Ok(resp)).await.is_err() {
                return false;
            }
        }
        true
    }
}
