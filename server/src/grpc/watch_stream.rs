//! One gRPC watch stream: every watcher on it, served by one task.
//!
//! A watcher is *synced* or *catching up*. A synced watcher takes each
//! revision from the event broadcast as the stream task receives it: one
//! receiver and one task wake-up per stream and revision, however many
//! watchers the stream carries. A watcher that starts in the past, or
//! finds a gap (the broadcast overflowed while the client was slow, or a
//! snapshot was installed), catches up: a task of its own reads its next
//! chunk of history from the store and hands it back to the stream task,
//! which sends it and either asks for the next chunk or, once the watcher
//! has reached the revisions the broadcast is still to bring, makes it
//! synced. So writes never wait for watchers, a behind watcher holds back
//! nobody else, and memory stays bounded (the broadcast is bounded; a
//! catch-up holds one chunk).
//!
//! Everything a stream sends goes out from its task, in order: a progress
//! answer can only be queued after the events sent before it.
//!
//! Length: just over 500 lines; one task owns every watcher of a stream
//! and its states (synced, catching up, progress) are one piece.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_kv as kv;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::mvccpb;
use tokio::sync::{broadcast, mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tonic::Status;

use super::watch::{
    Outgoing, CATCH_UP_PERMITS, HISTORY_CHUNK, HISTORY_CHUNK_BYTES, INVALID_WATCH_ID,
    MAX_WATCHERS_PER_STREAM, STREAM_BUFFER_BYTES,
};
use crate::auth::{perm, Need};
use crate::error::Error;
use crate::node::Node;
use crate::status::msg;
use crate::watch::filter::Filter;
use crate::watch::RevEvents;

type Tx = mpsc::Sender<Outgoing>;

/// Serves one stream until the client goes away (or, with `hasleader`,
/// the member loses its leader).
pub(crate) async fn serve(
    node: Node,
    mut incoming: impl futures::Stream<Item = Result<pb::WatchRequest, Status>> + Unpin + Send,
    tx: Tx,
    progress_interval: Duration,
    wants_leader: bool,
    user: Option<String>,
) {
    // Subscribe before reading the current revision: every revision after
    // it arrives on the channel.
    let mut rx = node.inner.events.subscribe();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut hub = Hub {
        seen: node.inner.store.current_revision(),
        node,
        tx,
        watchers: HashMap::new(),
        next_id: 0,
        serial: 0,
        sent: 0,
        progress_target: 0,
        caught_up: done_tx,
        reading: Arc::new(Semaphore::new(CATCH_UP_PERMITS)),
        unread: Arc::new(Semaphore::new(STREAM_BUFFER_BYTES)),
        open: true,
        user,
    };
    let mut leader_check = tokio::time::interval(Duration::from_millis(500));
    // (A zero interval would be a busy loop; tokio refuses it anyway.)
    let mut progress_tick = tokio::time::interval(progress_interval.max(Duration::from_millis(1)));
    progress_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A client that closes its sending side still gets events until it
    // goes away, as with etcd.
    let mut requests_done = false;
    while hub.open {
        tokio::select! {
            m = futures::StreamExt::next(&mut incoming), if !requests_done => match m {
                Some(Ok(req)) => hub.on_request(req).await,
                None => requests_done = true,
                Some(Err(_)) => break,
            },
            r = rx.recv() => match r {
                Ok(batch) => hub.on_revision(&batch).await,
                // The next revision received shows the gap.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            Some(done) = done_rx.recv() => hub.on_caught_up(done).await,
            _ = progress_tick.tick() => hub.on_progress_tick().await,
            _ = leader_check.tick(), if wants_leader => {
                if hub.node.inner.leader().is_none() {
                    let _ = hub.tx.send((Err(Status::from(Error::NoLeader)), None)).await;
                    break;
                }
            }
            _ = hub.tx.closed() => break,
        }
        hub.answer_progress().await;
    }
    for w in hub.watchers.into_values() {
        if let Some(task) = w.catching_up {
            task.abort();
        }
    }
}

/// The stream's state, owned by its task.
struct Hub {
    node: Node,
    tx: Tx,
    watchers: HashMap<i64, Watcher>,
    next_id: i64,
    /// Numbers watchers as created, so a catch-up's result is never taken
    /// for a later watcher that reused its id.
    serial: u64,
    /// The newest revision taken from the broadcast, or current when the
    /// stream subscribed: later revisions are still to come on it.
    seen: i64,
    /// The newest event revision sent on the stream.
    sent: i64,
    /// The revision a pending RequestProgress answer must reach; 0 when
    /// none is pending. Requests made while one is pending share its
    /// answer (as in etcd), so a stream has at most one.
    progress_target: i64,
    /// Where catch-up tasks hand their chunks back.
    caught_up: mpsc::UnboundedSender<CaughtUp>,
    /// Chunks being read or waiting to be sent: a catch-up holds a
    /// permit from before its read until the stream has taken its chunk,
    /// so a stream whose client does not read holds a bounded number.
    reading: Arc<Semaphore>,
    /// Bytes of responses the client has not taken yet (see
    /// `STREAM_BUFFER_BYTES`).
    unread: Arc<Semaphore>,
    /// False once the client is gone.
    open: bool,
    /// The user the stream's requests named (with auth on).
    user: Option<String>,
}

struct Watcher {
    serial: u64,
    filter: Filter,
    /// The next revision this watcher delivers: every revision below it
    /// was sent (if it had events for the watcher).
    next: i64,
    /// Sends a progress notification on each tick it had no events since
    /// the previous one (etcd's `progress_notify`).
    progress_notify: bool,
    quiet: bool,
    /// The task reading its next chunk of history, while catching up.
    catching_up: Option<JoinHandle<()>>,
    /// What the watcher reads, for the auth checks.
    need: Need,
    /// The auth revision, and whether auth was on, when its permission
    /// was last checked: checked again before it is sent anything once
    /// either has changed, so events never reach a watcher whose grant
    /// was revoked (turning auth on keeps the revision, as in etcd).
    auth_checked: (u64, bool),
    /// Counts it in `etcd_debugging_mvcc_watcher_total` while it lives.
    _counted: Counted,
}

/// One in a gauge for as long as it lives.
struct Counted(prometheus::IntGauge);

impl Counted {
    fn new(gauge: &prometheus::IntGauge) -> Counted {
        if crate::metrics::ON {
            gauge.inc();
        }
        Counted(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if crate::metrics::ON {
            self.0.dec();
        }
    }
}

/// A chunk of history read for a watcher that is catching up.
struct CaughtUp {
    id: i64,
    serial: u64,
    read: Result<Chunk, kv::Error>,
    /// Given back once the chunk is sent.
    _permit: OwnedSemaphorePermit,
}

struct Chunk {
    events: Vec<mvccpb::Event>,
    /// The first revision the chunk does not cover.
    next: i64,
    /// The store's revision when the chunk was read (its header).
    current: i64,
}

impl Hub {
    async fn send(&mut self, resp: Result<pb::WatchResponse, Status>) {
        let bytes = resp
            .as_ref()
            .map_or(0, approximate_size)
            .clamp(1, STREAM_BUFFER_BYTES);
        let share = tokio::select! {
            p = Arc::clone(&self.unread).acquire_many_owned(bytes as u32) => p.ok(),
            // Gone while we waited for it to read.
            _ = self.tx.closed() => None,
        };
        if share.is_none() || self.tx.send((resp, share)).await.is_err() {
            self.open = false;
        }
    }

    async fn on_request(&mut self, req: pb::WatchRequest) {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                if let Some(w) = self.watchers.remove(&c.watch_id) {
                    if let Some(task) = w.catching_up {
                        task.abort();
                    }
                    let header = Some(self.header_now());
                    self.send(Ok(pb::WatchResponse {
                        header,
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    }))
                    .await;
                }
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Answered once every watcher of the stream has delivered
                // everything up to the revision current now (see
                // `answer_progress`).
                let current = self.node.inner.store.current_revision();
                self.progress_target = self.progress_target.max(current);
            }
            None => {}
        }
    }

    fn header_now(&self) -> pb::ResponseHeader {
        self.node
            .inner
            .header(self.node.inner.store.current_revision())
    }

    async fn create(&mut self, c: pb::WatchCreateRequest) {
        // etcd refuses a range that selects nothing (`range_end` at or
        // below `key`; "\0" means every key from `key` on) before it
        // picks an id.
        if !c.range_end.is_empty() && c.range_end.as_ref() != [0] && c.key >= c.range_end {
            let header = Some(self.header_now());
            self.send(Ok(pb::WatchResponse {
                header,
                watch_id: INVALID_WATCH_ID,
                created: true,
                canceled: true,
                cancel_reason: msg::WATCHER_RANGE_EMPTY.into(),
                ..Default::default()
            }))
            .await;
            return;
        }
        let id = if c.watch_id != 0 {
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        let current = self.node.inner.store.current_revision();
        let header = Some(self.node.inner.header(current));
        let need = Need::read_range(&c.key, &c.range_end);
        let auth = self.node.inner.auth.state();
        if let Err(e) = perm::check(&auth, self.user.as_deref(), std::slice::from_ref(&need)) {
            self.send(Ok(pb::WatchResponse {
                header,
                watch_id: INVALID_WATCH_ID,
                created: true,
                canceled: true,
                cancel_reason: crate::status::go_error_string(&e),
                ..Default::default()
            }))
            .await;
            return;
        }
        if self.watchers.len() >= MAX_WATCHERS_PER_STREAM {
            self.send(Ok(pb::WatchResponse {
                header,
                watch_id: INVALID_WATCH_ID,
                created: true,
                canceled: true,
                cancel_reason: msg::TOO_MANY_WATCHERS.into(),
                ..Default::default()
            }))
            .await;
            return;
        }
        if self.watchers.contains_key(&id) || id < 0 {
            self.send(Ok(pb::WatchResponse {
                header,
                watch_id: INVALID_WATCH_ID,
                created: true,
                canceled: true,
                cancel_reason: msg::DUPLICATE_WATCH_ID.into(),
                ..Default::default()
            }))
            .await;
            return;
        }
        let next = if c.start_revision > 0 {
            c.start_revision
        } else {
            current + 1
        };
        self.send(Ok(pb::WatchResponse {
            header,
            watch_id: id,
            created: true,
            ..Default::default()
        }))
        .await;
        self.serial += 1;
        self.watchers.insert(
            id,
            Watcher {
                serial: self.serial,
                filter: Filter::of(&c),
                next,
                progress_notify: c.progress_notify,
                quiet: false,
                catching_up: None,
                need,
                auth_checked: (auth.revision, auth.enabled),
                _counted: Counted::new(&self.node.inner.metrics.watchers),
            },
        );
        if next <= self.seen {
            // Revisions up to `seen` come from history only.
            self.catch_up(id);
        }
    }

    /// Starts reading the watcher's next chunk of history.
    fn catch_up(&mut self, id: i64) {
        let Some(w) = self.watchers.get_mut(&id) else {
            return;
        };
        let store = Arc::clone(&self.node.inner.store);
        let filter = w.filter.clone();
        let (next, serial) = (w.next, w.serial);
        let done = self.caught_up.clone();
        let reading = Arc::clone(&self.reading);
        w.catching_up = Some(tokio::spawn(async move {
            let Ok(permit) = reading.acquire_owned().await else {
                return; // the stream is gone
            };
            let read = tokio::task::spawn_blocking(move || read_chunk(&store, &filter, next)).await;
            let read = read.unwrap_or_else(|e| Err(kv::Error::Backend(Box::new(e))));
            let _ = done.send(CaughtUp {
                id,
                serial,
                read,
                _permit: permit,
            });
        }));
    }

    /// Delivers one applied revision to the synced watchers.
    async fn on_revision(&mut self, batch: &RevEvents) {
        let rev = batch.revision;
        self.seen = self.seen.max(rev);
        let mut due = Vec::new();
        let mut needs_prev = false;
        let mut gaps = Vec::new();
        for (id, w) in &self.watchers {
            if w.catching_up.is_some() || w.next > rev {
                continue;
            }
            if w.next < rev {
                gaps.push(*id);
                continue;
            }
            needs_prev |= w.filter.needs_prev_kv(batch.events());
            due.push(*id);
        }
        for id in gaps {
            self.catch_up(id);
        }
        let filled = if needs_prev {
            match batch.with_prev_kv(&self.node.inner.store).await {
                Ok(events) => Some(events),
                Err(e) => {
                    // Only the watchers that need the previous values fail.
                    let failed: Vec<i64> = due
                        .iter()
                        .copied()
                        .filter(|id| self.watchers[id].filter.needs_prev_kv(batch.events()))
                        .collect();
                    due.retain(|id| !failed.contains(id));
                    for id in failed {
                        self.stop(id, &e).await;
                    }
                    None
                }
            }
        } else {
            None
        };
        for id in due {
            let Some(w) = self.watchers.get_mut(&id) else {
                continue;
            };
            let events = match (&filled, w.filter.prev_kv) {
                (Some(f), true) => w.filter.select(f),
                _ => w.filter.select(batch.events()),
            };
            if events.is_empty() {
                w.next = rev + 1;
            } else {
                self.send_events(id, rev, events, rev + 1).await;
            }
        }
    }

    async fn on_caught_up(&mut self, done: CaughtUp) {
        let Some(w) = self.watchers.get_mut(&done.id) else {
            return; // canceled meanwhile
        };
        if w.serial != done.serial {
            return; // for an earlier watcher with this id
        }
        w.catching_up = None;
        match done.read {
            Ok(chunk) => {
                if chunk.events.is_empty() {
                    w.next = chunk.next;
                } else {
                    self.send_events(done.id, chunk.current, chunk.events, chunk.next)
                        .await;
                }
                // Revisions up to `seen` will not come on the broadcast
                // again; later ones will.
                if self
                    .watchers
                    .get(&done.id)
                    .is_some_and(|w| w.next <= self.seen)
                {
                    self.catch_up(done.id);
                }
            }
            Err(e) => self.stop(done.id, &e).await,
        }
    }

    /// Ends a watcher on a store error: a compaction that overtook it
    /// cancels it as etcd does, anything else fails the stream.
    async fn stop(&mut self, id: i64, e: &kv::Error) {
        if let Some(w) = self.watchers.remove(&id) {
            if let Some(task) = w.catching_up {
                task.abort();
            }
        }
        let resp = match e {
            kv::Error::Compacted { compacted, .. } => Ok(pb::WatchResponse {
                // etcd leaves the header revision 0 on this response.
                header: Some(self.node.inner.header(0)),
                watch_id: id,
                canceled: true,
                // etcd says why by `compact_revision` alone (clients key
                // on it): no `cancel_reason`.
                compact_revision: *compacted,
                ..Default::default()
            }),
            e => Err(Status::from(Error::from(e))),
        };
        self.send(resp).await;
    }

    /// Sends `events` for watcher `id` in one response or, when it asked
    /// for fragments and the response would exceed the request size
    /// limit, in several (all but the last marked `fragment`); then the
    /// watcher's next revision is `next`.
    async fn send_events(&mut self, id: i64, revision: i64, events: Vec<mvccpb::Event>, next: i64) {
        if let Err(e) = self.still_permitted(id) {
            // Its grant went: it gets nothing more, and is told why.
            if let Some(w) = self.watchers.remove(&id) {
                if let Some(task) = w.catching_up {
                    task.abort();
                }
            }
            let header = Some(self.header_now());
            self.send(Ok(pb::WatchResponse {
                header,
                watch_id: id,
                canceled: true,
                cancel_reason: crate::status::go_error_string(&e),
                ..Default::default()
            }))
            .await;
            return;
        }
        let Some(w) = self.watchers.get_mut(&id) else {
            return;
        };
        w.next = next;
        w.quiet = false;
        let fragment = w.filter.fragment;
        let newest = events
            .iter()
            .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
            .max()
            .unwrap_or(0);
        self.sent = self.sent.max(newest);
        let header = Some(self.node.inner.header(revision));
        let limit = self.node.config().max_request_bytes;
        let size: usize = events.iter().map(prost::Message::encoded_len).sum();
        if !fragment || size < limit || events.len() < 2 {
            self.send(Ok(pb::WatchResponse {
                header,
                watch_id: id,
                events,
                ..Default::default()
            }))
            .await;
            return;
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
            self.send(Ok(pb::WatchResponse {
                header,
                watch_id: id,
                events,
                fragment: i < last,
                ..Default::default()
            }))
            .await;
        }
    }

    /// Whether watcher `id` may still read what it watches, checked again
    /// only when the auth state changed since it last was.
    fn still_permitted(&mut self, id: i64) -> Result<(), Error> {
        let auth = self.node.inner.auth.state();
        let Some(w) = self.watchers.get_mut(&id) else {
            return Ok(());
        };
        if w.auth_checked == (auth.revision, auth.enabled) {
            return Ok(());
        }
        perm::check(&auth, self.user.as_deref(), std::slice::from_ref(&w.need))?;
        w.auth_checked = (auth.revision, auth.enabled);
        Ok(())
    }

    /// Progress notifications for the synced watchers that asked for them
    /// and had no events since the last tick. Each promises that every
    /// event up to its revision was delivered. A watcher that starts in
    /// the future has nothing to report yet (etcd#20221).
    async fn on_progress_tick(&mut self) {
        let current = self.node.inner.store.current_revision();
        let mut due = Vec::new();
        for (id, w) in &mut self.watchers {
            if !w.progress_notify || w.catching_up.is_some() {
                continue;
            }
            if w.quiet && w.next - 1 <= current {
                due.push((*id, w.next - 1));
            }
            w.quiet = true;
        }
        for (id, rev) in due {
            self.send_progress(id, rev).await;
        }
    }

    /// A progress notification: no events, header at `rev`.
    async fn send_progress(&mut self, watch_id: i64, rev: i64) {
        let header = Some(self.node.inner.header(rev));
        self.send(Ok(pb::WatchResponse {
            header,
            watch_id,
            ..Default::default()
        }))
        .await;
    }

    /// Answers a pending RequestProgress once every watcher has delivered
    /// everything up to its target, naming the lowest revision every
    /// watcher has delivered — never one below an event already sent on
    /// the stream (etcd#15220).
    async fn answer_progress(&mut self) {
        if self.progress_target == 0 || !self.open {
            return;
        }
        let current = self.node.inner.store.current_revision();
        // A watcher starting past the current revision has nothing to
        // deliver yet.
        let delivered = self
            .watchers
            .values()
            .map(|w| w.next - 1)
            .filter(|&d| d <= current)
            .min()
            .unwrap_or(current)
            .min(current);
        if delivered >= self.progress_target && delivered >= self.sent {
            self.progress_target = 0;
            self.send_progress(INVALID_WATCH_ID, delivered).await;
        }
    }
}

/// A response's size as far as the buffer bound is concerned: its keys
/// and values, and a little for the rest of each event (exact enough to
/// bound memory, cheaper than encoding).
fn approximate_size(resp: &pb::WatchResponse) -> usize {
    let kv = |kv: &Option<mvccpb::KeyValue>| {
        kv.as_ref()
            .map_or(0, |kv| kv.key.len() + kv.value.len() + 32)
    };
    64 + resp
        .events
        .iter()
        .map(|e| kv(&e.kv) + kv(&e.prev_kv))
        .sum::<usize>()
}

/// Reads the next chunk of history from `next` for a watcher: its events
/// only, with their previous values if it asked for them.
fn read_chunk(store: &kv::Store, filter: &Filter, next: i64) -> Result<Chunk, kv::Error> {
    let current = store.current_revision();
    let h = store.history_within(next, current, HISTORY_CHUNK, HISTORY_CHUNK_BYTES)?;
    let mut events: Vec<kv::Event> = h
        .events
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| filter.matches(e))
        .collect();
    if filter.prev_kv {
        store.fill_prev_kv(&mut events)?;
    }
    Ok(Chunk {
        events: filter.select(&events),
        next: h.next,
        current,
    })
}
