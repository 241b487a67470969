//! Replication as a pipeline over one stream per follower: a plain TCP
//! connection to its peer port (`append_wire`), or, with a
//! member that does not speak that, a gRPC bidi stream
//! (`cairnpb.Peer/AppendStream`). Both carry the same messages.
//!
//! openraft's replication task produces AppendEntries requests as entries
//! are submitted to the leader's log, without waiting for the previous
//! answer. The leader side sends each request as soon as openraft yields
//! it; the follower side hands them to [`Raft::stream_append`], which
//! answers each one, in order, once its entries are durable on the
//! follower. A follower thus fsyncs batch n+1 while batch n's answer is on
//! the wire, instead of idling for a round trip per batch.
//!
//! Heartbeats (the leader's lease upkeep and the quorum round of each
//! linearizable read) have a stream of their own per follower, kept open
//! between rounds ([`super::heartbeat`]), on the same connection.
//!
//! Timeouts: a stream may sit idle for as long as no entries are written,
//! so the leader side times out only an *outstanding* request, one sent
//! and not yet answered for longer than the RPC timeout. The stream then
//! ends with an error and openraft opens a new one.
//!
//! [`Raft::stream_append`]: openraft::Raft::stream_append

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_proto::cairnpb::RaftMessage;
use futures::{Stream, StreamExt};
use openraft::base::BoxStream;
use openraft::errors::{NetworkError, RPCError, Unreachable};
use openraft::raft::{AppendEntriesRequest, StreamAppendError, StreamAppendResult};
use tokio::sync::Notify;
use tonic::{Status, Streaming};

use super::{decode, encode, TypeConfig};

pub(super) type Answer = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// What the follower side sends per request: openraft's answer, or the
/// text of a fatal error of its Raft.
type WireAnswer = Result<StreamAppendResult<TypeConfig>, String>;

/// When each request still waiting for its answer was sent, oldest first.
#[derive(Default)]
struct Outstanding {
    sent: Mutex<VecDeque<Instant>>,
    more: Notify,
}

impl Outstanding {
    fn push(&self) {
        if let Ok(mut q) = self.sent.lock() {
            q.push_back(Instant::now());
        }
        self.more.notify_one();
    }

    fn pop(&self) {
        if let Ok(mut q) = self.sent.lock() {
            q.pop_front();
        }
    }

    fn oldest(&self) -> Option<Instant> {
        self.sent.lock().ok().and_then(|q| q.front().copied())
    }
}

/// The leader side's outgoing half: each request encoded as it is polled
/// (that is, as it goes on the wire), its send time recorded. A request
/// that cannot be encoded, or whose entries do not follow its
/// `prev_log_id`, ends the stream (logged); the missing answer then times
/// out and openraft starts over.
pub(super) fn requests<S>(
    input: S,
) -> (
    impl Stream<Item = RaftMessage> + Send + 'static,
    OutstandingRef,
)
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    let outstanding = OutstandingRef(Arc::default());
    let mark = outstanding.clone();
    let out = tokio_stream::StreamExt::map_while(input, move |req| {
        if !follows_prev(&req) {
            tracing::error!(
                request = %req,
                "an AppendEntries request's entries do not follow its prev_log_id; not sent"
            );
            return None;
        }
        match encode(&req) {
            Ok(payload) => {
                mark.0.push();
                Some(RaftMessage {
                    payload: payload.into(),
                })
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an AppendEntries request");
                None
            }
        }
    });
    (out, outstanding)
}

/// Whether `req`'s first entry (if any) is the one right after its
/// `prev_log_id`. A request read from a log purged under it (openraft
/// tolerates a reader starting after the purge point) would otherwise
/// leave a hole in the follower's log.
pub(super) fn follows_prev(req: &AppendEntriesRequest<TypeConfig>) -> bool {
    let next = req.prev_log_id.map_or(0, |p| p.index + 1);
    req.entries.first().is_none_or(|e| e.log_id.index == next)
}

/// Shared record of the requests of one stream still unanswered.
#[derive(Clone)]
pub(super) struct OutstandingRef(Arc<Outstanding>);

/// Where a leader reads a stream's answers from: the gRPC stream, or a
/// plain connection (`append_wire`). `next_message` must be
/// cancel safe (a message is never lost by dropping the future).
pub(super) trait Inbound: Send + 'static {
    /// The next message; `None` once the stream ended.
    fn next_message(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<Bytes>, Unreachable<TypeConfig>>> + Send;
}

impl Inbound for Streaming<RaftMessage> {
    async fn next_message(&mut self) -> Result<Option<Bytes>, Unreachable<TypeConfig>> {
        match self.message().await {
            Ok(m) => Ok(m.map(|m| m.payload)),
            Err(status) => Err(Unreachable::new(&status)),
        }
    }
}

/// The leader side's incoming half: one answer per request, in order. An
/// answer that does not come within `timeout` of its request, a transport
/// error, or an answer that ends the stream (conflict, higher vote, a
/// fatal error over there) is the last item.
pub(super) fn answers<I: Inbound>(
    inbound: I,
    outstanding: OutstandingRef,
    timeout: Duration,
) -> impl Stream<Item = Answer> + Send + 'static {
    futures::stream::unfold(Some(inbound), move |state| {
        let outstanding = outstanding.clone();
        async move {
            let mut inbound = state?;
            let received = loop {
                // Registered before looking at the queue, so a request sent
                // in between wakes this wait.
                let more = outstanding.0.more.notified();
                match outstanding.0.oldest() {
                    Some(sent) => {
                        let deadline = tokio::time::Instant::from_std(sent + timeout);
                        tokio::select! {
                            r = inbound.next_message() => break r,
                            _ = tokio::time::sleep_until(deadline) => {
                                let e = Unreachable::from_string(format!(
                                    "no answer to an append within {timeout:?}"
                                ));
                                return Some((Err(RPCError::Unreachable(e)), None));
                            }
                        }
                    }
                    None => tokio::select! {
                        r = inbound.next_message() => break r,
                        _ = more => continue,
                    },
                }
            };
            let msg = match received {
                Ok(Some(m)) => m,
                Ok(None) => return None,
                Err(e) => return Some((Err(RPCError::Unreachable(e)), None)),
            };
            outstanding.0.pop();
            let (answer, go_on) = decode_answer(&msg);
            Some((answer, go_on.then_some(inbound)))
        }
    })
}

/// The answer one follower message carries, and whether the stream goes
/// on after it (the follower ends it after a conflict, a higher vote or
/// a fatal error).
pub(super) fn decode_answer(msg: &[u8]) -> (Answer, bool) {
    match decode::<WireAnswer>(msg) {
        Ok(Ok(answer)) => {
            let go_on = answer.is_ok();
            (Ok(answer), go_on)
        }
        Ok(Err(fatal)) => (
            Err(RPCError::Unreachable(Unreachable::from_string(fatal))),
            false,
        ),
        Err(e) => (Err(RPCError::Network(NetworkError::new(&e))), false),
    }
}

/// The follower side: decodes the requests, feeds them to `raft`, and
/// encodes its answers. `on_leader` runs for every answer given to a
/// current leader (accepted, or a conflict to resolve). A request that cannot be
/// decoded ends the stream with `InvalidArgument` after the answers to
/// the requests before it.
pub(super) fn serve<S, E>(
    raft: &super::Raft,
    inbound: S,
    on_leader: impl Fn() + Send + 'static,
) -> impl Stream<Item = Result<RaftMessage, Status>> + Send + 'static
where
    S: Stream<Item = Result<RaftMessage, E>> + Send + Unpin + 'static,
{
    let bad: Arc<Mutex<Option<Status>>> = Arc::default();
    let bad_in = Arc::clone(&bad);
    let requests = tokio_stream::StreamExt::map_while(inbound, move |m| {
        let m = m.ok()?;
        match decode::<AppendEntriesRequest<TypeConfig>>(&m.payload) {
            Ok(req) => Some(req),
            Err(e) => {
                if let Ok(mut b) = bad_in.lock() {
                    *b = Some(Status::invalid_argument(format!("bad append request: {e}")));
                }
                None
            }
        }
    });
    // Boxed: the opaque type openraft returns names the borrow of `raft`
    // although it outlives it.
    let answered: BoxStream<'static, _> = Box::pin(raft.stream_append(requests));
    let answers = answered.map(move |r| {
        if matches!(r, Ok(Ok(_)) | Ok(Err(StreamAppendError::Conflict(_)))) {
            on_leader();
        }
        let wire: WireAnswer = r.map_err(|e| e.to_string());
        encode(&wire)
            .map(|p| RaftMessage { payload: p.into() })
            .map_err(|e| Status::internal(e.to_string()))
    });
    let trailer = futures::stream::once(async move { bad.lock().ok().and_then(|mut b| b.take()) })
        .filter_map(|s| async move { s.map(Err) });
    answers.chain(trailer)
}
