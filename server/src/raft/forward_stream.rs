//! Forwarded requests as a pipeline over one gRPC bidi stream per leader
//! (`cairnpb.Peer/ForwardStream`).
//!
//! A member that is not the leader sends its clients' writes and read
//! index requests to the leader. One unary call per request costs the
//! leader a whole HTTP/2 stream each (headers, routing, trailers), about
//! as much as serving the client itself; under load most of the leader's
//! time went there. Instead, each member keeps one stream to each member
//! it forwards to: requests queued while a batch is on the wire go out
//! together as the next batch, tagged with ids, and the leader answers in
//! batches too, in whatever order the requests complete. A pipe with
//! answers outstanding waits one turn of the scheduler before it sends,
//! so that the writes arriving meanwhile go in the same batch; the leader
//! proposes a batch's kv writes as one log entry (see
//! the node's proposer).
//!
//! Outcomes: a request that never went out (the stream could not be
//! opened, or closed before it was sent) fails with
//! [`ForwardError::NotSent`], which a caller may retry; one that went out
//! and got no answer because the stream broke fails with
//! [`ForwardError::Lost`] (it may have been applied).

use std::collections::HashMap;
use std::sync::Arc;

use cairn_proto::cairnpb::peer_client::PeerClient;
use cairn_proto::cairnpb::RaftMessage;
use futures::Stream;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tonic::{Request, Status, Streaming};

use super::forward::{ForwardError, ForwardHandler, ForwardRequest, ForwardResponse};
use super::{batchable, Command, MAX_ENTRY_BYTES, MAX_ENTRY_WRITES};
use super::{decode, encode};
use crate::error::Error;

/// Most requests (or answers) carried by one message.
const MAX_BATCH: usize = 256;

type Answer = Result<ForwardResponse, ForwardError>;

/// One request waiting for its pipe.
pub(super) struct Job {
    pub req: ForwardRequest,
    pub answer: oneshot::Sender<Answer>,
}

/// The sending end of a pipe to one member.
pub(super) type Pipe = mpsc::UnboundedSender<Job>;

/// How the stream's opening request is dressed (the cluster id header).
pub(super) type Dress = fn(u64, Request<Outbound>) -> Request<Outbound>;

type Outbound = tokio_stream::wrappers::UnboundedReceiverStream<RaftMessage>;

/// Opens a pipe over `client`, served by a task of its own that ends when
/// the stream breaks or every sender is gone (the next request then opens
/// a new pipe).
pub(super) fn open(client: PeerClient<Channel>, cluster_id: u64, dress: Dress, url: &str) -> Pipe {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(client, cluster_id, dress, url.to_string(), rx));
    tx
}

async fn run(
    client: PeerClient<Channel>,
    cluster_id: u64,
    dress: Dress,
    url: String,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let mut pending: HashMap<u64, oneshot::Sender<Answer>> = HashMap::new();
    let end = serve_pipe(client, cluster_id, dress, &mut jobs, &mut pending).await;
    if let Err(e) = &end {
        tracing::debug!(url, error = %e, "forwarding stream closed");
    }
    // Sent, unanswered: unknown outcome.
    let why = match &end {
        Ok(()) => "forwarding stream closed".to_string(),
        Err(e) => e.message().to_string(),
    };
    for (_, tx) in pending.drain() {
        let _ = tx.send(Err(ForwardError::Lost(why.clone())));
    }
    // Queued, never sent: retryable.
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        let _ = job.answer.send(Err(ForwardError::NotSent(why.clone())));
    }
}

async fn serve_pipe(
    mut client: PeerClient<Channel>,
    cluster_id: u64,
    dress: Dress,
    jobs: &mut mpsc::UnboundedReceiver<Job>,
    pending: &mut HashMap<u64, oneshot::Sender<Answer>>,
) -> Result<(), Status> {
    let (out, out_rx) = mpsc::unbounded_channel::<RaftMessage>();
    let outbound = tokio_stream::wrappers::UnboundedReceiverStream::new(out_rx);
    let mut inbound = client
        .forward_stream(dress(cluster_id, Request::new(outbound)))
        .await?
        .into_inner();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            job = jobs.recv() => {
                let Some(first) = job else { return Ok(()) };
                // With answers outstanding (the leader is busy), let the
                // writes arriving now join this batch: the leader proposes
                // a batch's writes as one entry. An idle pipe sends at once.
                if !pending.is_empty() {
                    tokio::task::yield_now().await;
                }
                let mut batch = Vec::with_capacity(1);
                let mut answers = Vec::with_capacity(1);
                let mut job = Some(first);
                while let Some(j) = job.take() {
                    next_id += 1;
                    batch.push((next_id, j.req));
                    answers.push((next_id, j.answer));
                    if batch.len() < MAX_BATCH {
                        job = jobs.try_recv().ok();
                    }
                }
                let payload = match encode(&batch) {
                    Ok(p) => p,
                    Err(e) => {
                        for (_, tx) in answers {
                            let _ = tx.send(Err(ForwardError::NotSent(e.to_string())));
                        }
                        continue;
                    }
                };
                pending.extend(answers);
                if out.send(RaftMessage { payload: payload.into() }).is_err() {
                    return Err(Status::unavailable("forwarding stream closed"));
                }
            }
            m = inbound.message() => {
                let Some(m) = m? else {
                    return Err(Status::unavailable("forwarding stream ended by the leader"));
                };
                let batch: Vec<(u64, ForwardResponse)> = decode(&m.payload)
                    .map_err(|e| Status::internal(format!("bad forwarded answer: {e}")))?;
                for (id, resp) in batch {
                    if let Some(tx) = pending.remove(&id) {
                        let _ = tx.send(Ok(resp));
                    }
                }
            }
        }
    }
}

/// Proposes forwarded kv writes (as one entry if they are several; the
/// leader may add others) and queues each one's answer.
fn propose(
    handler: &Arc<dyn ForwardHandler>,
    done: &mpsc::UnboundedSender<Out>,
    writes: Vec<(u64, Command)>,
) {
    if writes.is_empty() {
        return;
    }
    let handler = Arc::clone(handler);
    let done = done.clone();
    tokio::spawn(async move {
        let n = writes.len();
        let (ids, cmds): (Vec<u64>, Vec<Command>) = writes.into_iter().unzip();
        let mut answers = handler.handle_writes(cmds).await.into_iter();
        for id in ids {
            let resp = answers.next().unwrap_or_else(|| {
                ForwardResponse::Error(Error::Internal(format!(
                    "a batch of {n} writes answered fewer"
                )))
            });
            let _ = done.send(Out::Answer(id, resp));
        }
    });
}

/// What the serving side's answer queue carries.
enum Out {
    Answer(u64, ForwardResponse),
    Fatal(Status),
}

/// The serving side: every request of every batch handled concurrently,
/// answers sent in batches as they complete. A batch that cannot be
/// decoded ends the stream with `InvalidArgument` (the sender then fails
/// its unanswered requests).
pub(super) fn serve(
    handler: Arc<dyn ForwardHandler>,
    mut inbound: Streaming<RaftMessage>,
) -> impl Stream<Item = Result<RaftMessage, Status>> + Send + 'static {
    let (done, done_rx) = mpsc::unbounded_channel::<Out>();
    tokio::spawn(async move {
        while let Ok(Some(m)) = inbound.message().await {
            let batch: Vec<(u64, ForwardRequest)> = match decode(&m.payload) {
                Ok(b) => b,
                Err(e) => {
                    let _ = done.send(Out::Fatal(Status::invalid_argument(format!(
                        "bad forwarded batch: {e}"
                    ))));
                    return;
                }
            };
            // The batch's kv writes go into as few log entries as their
            // size allows; anything else is handled on its own.
            let mut writes: Vec<(u64, Command)> = Vec::new();
            let mut bytes = 0;
            for (id, req) in batch {
                match req {
                    ForwardRequest::Write(cmd) if batchable(&cmd.0) => {
                        let len = cmd.0.encoded_len();
                        if !writes.is_empty()
                            && (bytes + len > MAX_ENTRY_BYTES || writes.len() >= MAX_ENTRY_WRITES)
                        {
                            propose(&handler, &done, std::mem::take(&mut writes));
                            bytes = 0;
                        }
                        bytes += len;
                        writes.push((id, cmd));
                    }
                    req => {
                        let handler = Arc::clone(&handler);
                        let done = done.clone();
                        tokio::spawn(async move {
                            let resp = handler.handle(req).await;
                            let _ = done.send(Out::Answer(id, resp));
                        });
                    }
                }
            }
            propose(&handler, &done, writes);
        }
    });
    futures::stream::unfold(Some(done_rx), |state| async move {
        let mut rx = state?;
        let mut batch = Vec::new();
        let mut next = rx.recv().await;
        while let Some(out) = next.take() {
            match out {
                Out::Answer(id, resp) => batch.push((id, resp)),
                Out::Fatal(status) => {
                    // The answers so far are lost with the stream; the
                    // sender reports them as unknown.
                    return Some((Err(status), None));
                }
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if batch.is_empty() {
            return None;
        }
        let msg = encode(&batch)
            .map(|p| RaftMessage { payload: p.into() })
            .map_err(|e| Status::internal(e.to_string()));
        Some((msg, Some(rx)))
    })
}
