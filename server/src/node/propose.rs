//! Proposing commands on the leader.
//!
//! Every Raft entry costs the same per-entry work whatever it carries:
//! openraft's bookkeeping, an encoded record in the log of every member,
//! a place in each replication message, a decode before the apply. Kv
//! writes (puts, deletes, txns) that reach the leader at the same time
//! are therefore proposed together as one entry, a
//! [`cairnpb::CommandBatch`], which every member applies write by write
//! (each its own revision, events and result).
//!
//! [`Proposer`] does this for the writes of the leader's own clients
//! and for the groups of writes followers forward (which arrive in
//! batches, see [`crate::raft::forward_stream`]): writes that arrive
//! while none is in flight are proposed at once by their caller; writes
//! that arrive while others are in flight are queued, the queue waits one
//! turn of the scheduler, and whatever arrived by then goes out as one
//! entry.
//!
//! May not: forward (a non-leader answers `None`, and the caller
//! routes), or batch anything but puts, deletes and txns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cairn_proto::cairnpb;
use openraft::errors::{ClientWriteError, RaftError};
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::raft::{Command, Raft, MAX_ENTRY_BYTES, MAX_ENTRY_WRITES};

/// What proposing answers: the apply's response, or `None` when this
/// member is not the leader (nothing was proposed).
pub(crate) type Proposed = Result<Option<cairnpb::CommandResponse>, Error>;

/// What proposing several writes answers: each one's response, in
/// order, or `None` when this member is not the leader.
pub(crate) type ProposedMany = Result<Option<Vec<cairnpb::CommandResponse>>, Error>;

/// Proposes `cmd` as one entry.
pub(crate) async fn propose(raft: &Raft, cmd: cairnpb::Command, deadline: Instant) -> Proposed {
    let left = deadline.saturating_duration_since(Instant::now());
    let fut = raft.client_write(Command(cmd));
    match tokio::time::timeout(left, fut).await {
        Err(_) => Err(Error::Timeout),
        Ok(Ok(resp)) => Ok(Some(resp.data.0)),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Ok(None),
        Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => {
            Err(Error::LeaderChanged)
        }
        Ok(Err(e)) => Err(Error::Raft(e.to_string())),
    }
}

/// Proposes kv writes ([`crate::raft::batchable`] ones) as one entry; answers each
/// one's result, in order. `Ok(None)`: not the leader, nothing was
/// proposed.
pub(crate) async fn propose_batch(
    raft: &Raft,
    cmds: Vec<cairnpb::Command>,
    deadline: Instant,
) -> ProposedMany {
    let n = cmds.len();
    let batch = cairnpb::Command {
        op: Some(cairnpb::command::Op::Batch(cairnpb::CommandBatch {
            commands: cmds,
        })),
        // Each write carries its own.
        user: None,
    };
    let Some(r) = propose(raft, batch, deadline).await? else {
        return Ok(None);
    };
    match r.result {
        Some(cairnpb::command_response::Result::Batch(b)) if b.results.len() == n => {
            Ok(Some(b.results))
        }
        other => Err(Error::Internal(format!(
            "a batch of {n} writes answered {other:?}"
        ))),
    }
}

/// Writes waiting for their entry (one client's, or a forwarded group).
struct Job {
    cmds: Vec<cairnpb::Command>,
    bytes: usize,
    deadline: Instant,
    answer: oneshot::Sender<ProposedMany>,
}

/// Proposes the kv writes that reach the leader, several as one entry
/// when they arrive together (see the module documentation). Its task
/// ends when the proposer is dropped.
pub(crate) struct Proposer {
    raft: Raft,
    jobs: mpsc::UnboundedSender<Job>,
    /// Entries proposed and not yet answered.
    in_flight: Arc<AtomicUsize>,
}

/// Counts an entry in flight for as long as it lives (a proposal whose
/// caller gave up included).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(n))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Proposer {
    /// Entries proposed and not yet answered.
    pub(crate) fn pending(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// A proposer over `raft`; must be called inside a tokio runtime.
    pub(crate) fn new(raft: Raft) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let in_flight = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(raft.clone(), rx, Arc::clone(&in_flight)));
        Self {
            raft,
            jobs: tx,
            in_flight,
        }
    }

    /// Proposes `cmd`, a [`crate::raft::batchable`] write, maybe with others; the same
    /// answers as [`propose`].
    pub(crate) async fn propose(&self, cmd: cairnpb::Command, deadline: Instant) -> Proposed {
        let r = self.propose_many(vec![cmd], deadline).await?;
        Ok(r.and_then(|mut rs| rs.pop()))
    }

    /// Proposes `cmds`, [`crate::raft::batchable`] writes at most [`MAX_ENTRY_WRITES`]
    /// and [`MAX_ENTRY_BYTES`] together (or a single larger one), in one
    /// entry, maybe with others; answers each one's result, in order.
    pub(crate) async fn propose_many(
        &self,
        cmds: Vec<cairnpb::Command>,
        deadline: Instant,
    ) -> ProposedMany {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            // Nothing to wait for: propose from here.
            let _counted = InFlight::new(&self.in_flight);
            return propose_cmds(&self.raft, cmds, deadline).await;
        }
        let (tx, rx) = oneshot::channel();
        let job = Job {
            bytes: cmds.iter().map(Message::encoded_len).sum(),
            cmds,
            deadline,
            answer: tx,
        };
        if self.jobs.send(job).is_err() {
            return Err(Error::Stopped);
        }
        rx.await.unwrap_or_else(|_| Err(Error::Stopped))
    }
}

/// Proposes `cmds` as one entry: a batch unless there is only one.
async fn propose_cmds(
    raft: &Raft,
    mut cmds: Vec<cairnpb::Command>,
    deadline: Instant,
) -> ProposedMany {
    if cmds.len() == 1 {
        if let Some(cmd) = cmds.pop() {
            return Ok(propose(raft, cmd, deadline).await?.map(|r| vec![r]));
        }
    }
    propose_batch(raft, cmds, deadline).await
}

async fn run(raft: Raft, mut jobs: mpsc::UnboundedReceiver<Job>, in_flight: Arc<AtomicUsize>) {
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(j) => j,
            None => match jobs.recv().await {
                Some(j) => j,
                None => return,
            },
        };
        if in_flight.load(Ordering::Acquire) > 0 {
            tokio::task::yield_now().await;
        }
        let mut writes = first.cmds.len();
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while let Ok(j) = jobs.try_recv() {
            if writes + j.cmds.len() > MAX_ENTRY_WRITES || bytes + j.bytes > MAX_ENTRY_BYTES {
                held = Some(j);
                break;
            }
            writes += j.cmds.len();
            bytes += j.bytes;
            batch.push(j);
        }
        let counted = InFlight::new(&in_flight);
        let raft = raft.clone();
        tokio::spawn(async move {
            propose_jobs(&raft, batch).await;
            drop(counted);
        });
    }
}

/// Proposes the writes of `batch` as one entry and answers each job.
async fn propose_jobs(raft: &Raft, batch: Vec<Job>) {
    let deadline = batch.iter().map(|j| j.deadline).min();
    let deadline = deadline.unwrap_or_else(Instant::now);
    let mut cmds = Vec::with_capacity(batch.iter().map(|j| j.cmds.len()).sum());
    let mut answers = Vec::with_capacity(batch.len());
    for j in batch {
        answers.push((j.cmds.len(), j.answer));
        cmds.extend(j.cmds);
    }
    match propose_cmds(raft, cmds, deadline).await {
        Ok(Some(results)) => {
            let mut results = results.into_iter();
            for (n, tx) in answers {
                let _ = tx.send(Ok(Some(results.by_ref().take(n).collect())));
            }
        }
        Ok(None) => {
            for (_, tx) in answers {
                let _ = tx.send(Ok(None));
            }
        }
        Err(e) => {
            for (_, tx) in answers {
                let _ = tx.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cairn_proto::etcdserverpb as pb;

    use crate::{Config, Error, Node};

    fn put(key: String, value: String, lease: i64) -> pb::PutRequest {
        pb::PutRequest {
            key: key.into_bytes().into(),
            value: value.into_bytes().into(),
            lease,
            ..Default::default()
        }
    }

    /// Concurrent writes on the leader share entries, yet each is applied
    /// as its own write: its own revision, its own error, its own txn
    /// outcome; and the log replays to the same state after a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_entries_and_keep_their_own_results() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::embedded(dir.path().join("data"));
        let node = Node::start(config.clone()).await.expect("start");
        let client = node.client();
        client.put_kv("t", "0").await.expect("put t");
        let before = node.inner.raft_status().raft_index;
        let n = 300;
        let mut tasks = Vec::new();
        for i in 0..n {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                match i % 10 {
                    // A lease that does not exist: this write alone fails.
                    3 => client
                        .put(put(format!("k{i:03}"), format!("v{i}"), 0x5eed))
                        .await
                        .map(|_| None),
                    // A txn whose compare fails: only its else branch runs.
                    7 => {
                        let r = client
                            .txn(pb::TxnRequest {
                                compare: vec![pb::Compare {
                                    key: bytes::Bytes::from_static(b"t"),
                                    target: pb::compare::CompareTarget::Value as i32,
                                    target_union: Some(pb::compare::TargetUnion::Value(
                                        bytes::Bytes::from_static(b"nope"),
                                    )),
                                    ..Default::default()
                                }],
                                success: vec![],
                                failure: vec![pb::RequestOp {
                                    request: Some(pb::request_op::Request::RequestPut(put(
                                        format!("k{i:03}"),
                                        format!("else{i}"),
                                        0,
                                    ))),
                                }],
                            })
                            .await?;
                        assert!(!r.succeeded, "txn {i} took the else branch");
                        Ok(r.header.map(|h| h.revision))
                    }
                    _ => client
                        .put(put(format!("k{i:03}"), format!("v{i}"), 0))
                        .await
                        .map(|r| r.header.map(|h| h.revision)),
                }
            }));
        }
        let mut revs = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.expect("task") {
                Ok(Some(rev)) => revs.push(rev),
                Ok(None) => panic!("write {i} answered without a header"),
                Err(e) => {
                    assert_eq!(i % 10, 3, "write {i} failed: {e:?}");
                    assert_eq!(e, Error::LeaseNotFound, "write {i}");
                }
            }
        }
        let ok = n - n / 10;
        assert_eq!(revs.len(), ok, "every other write succeeded");
        revs.sort_unstable();
        revs.dedup();
        assert_eq!(revs.len(), ok, "each write got a revision of its own");
        // `t` was written at revision 2 (the first write of a fresh store).
        assert_eq!(revs.first().copied(), Some(3));
        assert_eq!(revs.last().copied(), Some(2 + ok as i64));
        let entries = node.inner.raft_status().raft_index - before;
        assert!(
            entries <= n as u64 / 2,
            "{n} concurrent writes took {entries} log entries"
        );
        let want = |i: usize| match i % 10 {
            3 => None,
            7 => Some(format!("else{i}").into_bytes()),
            _ => Some(format!("v{i}").into_bytes()),
        };
        for i in 0..n {
            let got = client.get(format!("k{i:03}")).await.expect("get");
            assert_eq!(got, want(i), "k{i:03}");
        }
        node.shutdown().await;
        drop(client);
        drop(node);

        let node = Node::start(config).await.expect("restart");
        let client = node.client();
        for i in 0..n {
            let got = client.get(format!("k{i:03}")).await.expect("get");
            assert_eq!(got, want(i), "k{i:03} after a restart");
        }
        let head = client
            .range(pb::RangeRequest {
                key: bytes::Bytes::from_static(b"t"),
                ..Default::default()
            })
            .await
            .expect("range");
        assert_eq!(head.header.map(|h| h.revision), Some(2 + ok as i64));
        node.shutdown().await;
    }
}
