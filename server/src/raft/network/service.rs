//! [`PeerService`]: the `cairnpb.Peer` service a member serves — Raft's
//! RPCs, snapshots received to a temporary file, forwarded requests.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cairn_proto::cairnpb::peer_server::Peer;
use cairn_proto::cairnpb::RaftMessage;
use openraft::base::BoxStream;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderRequest, VoteRequest,
};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status, Streaming};

use super::{SnapshotHeader, CLUSTER_ID_HEADER};
use crate::raft::forward::{ForwardHandler, ForwardRequest};
use crate::raft::state_machine::Snapshot;
use crate::raft::{append_stream, forward_stream};
use crate::raft::{decode, encode, TypeConfig};

/// The `cairnpb.Peer` service of one member.
pub struct PeerService {
    /// This member's cluster: calls from another are refused.
    pub cluster_id: u64,
    /// When an AppendEntries from a current leader last arrived.
    pub leader_contact: Arc<Mutex<Option<std::time::Instant>>>,
    /// The member's Raft.
    pub raft: crate::raft::Raft,
    /// Where received snapshots are written.
    pub snap_dir: PathBuf,
    /// Serves what other members forward.
    pub forward: Arc<dyn ForwardHandler>,
    /// Turns true when the member stops: the long-lived streams end then,
    /// or the server's graceful shutdown would wait for them forever.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

fn reply<T: Serialize>(r: Result<T, String>) -> Result<Response<RaftMessage>, Status> {
    let payload = encode(&r).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage {
        payload: payload.into(),
    }))
}

fn parse<T: for<'de> Deserialize<'de>>(m: &RaftMessage) -> Result<T, Status> {
    decode(&m.payload).map_err(|e| Status::invalid_argument(format!("bad peer message: {e}")))
}

impl PeerService {
    /// `s`, ended once the member stops.
    fn until_stopped<S: futures::Stream + Send + 'static>(
        &self,
        s: S,
    ) -> impl futures::Stream<Item = S::Item> + Send + 'static {
        let mut stop = self.stop.clone();
        futures::StreamExt::take_until(s, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
    }

    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let theirs = req
            .metadata()
            .get(CLUSTER_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match theirs {
            Some(id) if id == self.cluster_id => Ok(()),
            Some(id) => Err(Status::failed_precondition(format!(
                "request from cluster {id:x}, this member belongs to cluster {:x}",
                self.cluster_id
            ))),
            None => Err(Status::failed_precondition("request without a cluster id")),
        }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.check(&req)?;
        let rpc: AppendEntriesRequest<TypeConfig> = parse(req.get_ref())?;
        let result = self.raft.append_entries(rpc).await;
        if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            if let Ok(mut t) = self.leader_contact.lock() {
                *t = Some(std::time::Instant::now());
            }
        }
        reply(result.map_err(|e| e.to_string()))
    }

    type AppendStreamStream = BoxStream<'static, Result<RaftMessage, Status>>;

    async fn append_stream(
        &self,
        req: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        self.check(&req)?;
        let contact = Arc::clone(&self.leader_contact);
        let answers = append_stream::serve(&self.raft, req.into_inner(), move || {
            if let Ok(mut t) = contact.lock() {
                *t = Some(std::time::Instant::now());
            }
        });
        Ok(Response::new(Box::pin(self.until_stopped(answers))))
    }

    type ForwardStreamStream = BoxStream<'static, Result<RaftMessage, Status>>;

    async fn forward_stream(
        &self,
        req: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::ForwardStreamStream>, Status> {
        self.check(&req)?;
        let answers = forward_stream::serve(Arc::clone(&self.forward), req.into_inner());
        Ok(Response::new(Box::pin(self.until_stopped(answers))))
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.check(&req)?;
        let rpc: VoteRequest<TypeConfig> = parse(req.get_ref())?;
        reply(self.raft.vote(rpc).await.map_err(|e| e.to_string()))
    }

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.check(&req)?;
        let rpc: VoteRequest<TypeConfig> = parse(req.get_ref())?;
        reply(self.raft.pre_vote(rpc).await.map_err(|e| e.to_string()))
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.check(&req)?;
        let rpc: TransferLeaderRequest<TypeConfig> = parse(req.get_ref())?;
        reply(
            self.raft
                .handle_transfer_leader(rpc)
                .await
                .map_err(|e| e.to_string()),
        )
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.check(&req)?;
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let header: SnapshotHeader = parse(&first)?;
        let tmp = tempfile::Builder::new()
            .prefix("receiving-")
            .suffix(".img")
            .tempfile_in(&self.snap_dir)
            .map_err(|e| Status::internal(format!("snapshot temp file: {e}")))?;
        let (mut file, path) = tmp.into_parts();
        let mut received = 0u64;
        while let Some(chunk) = stream.message().await? {
            // Small synchronous writes into the page cache; durability is
            // the installer's job.
            file.write_all(&chunk.payload)
                .map_err(|e| Status::internal(format!("snapshot write: {e}")))?;
            received += chunk.payload.len() as u64;
        }
        tracing::info!(
            bytes = received,
            last = ?header.meta.last_log_id,
            "received snapshot"
        );
        let reader = std::fs::File::open(&path)
            .map_err(|e| Status::internal(format!("snapshot reopen: {e}")))?;
        drop(file);
        let snapshot = Snapshot {
            meta: header.meta,
            snapshot: crate::raft::snapshot::SnapshotData::file(reader),
        };
        let result = self
            .raft
            .install_full_snapshot(header.vote, snapshot)
            .await
            .map_err(|e| e.to_string());
        // `path` is removed when dropped: the image, once imported, is
        // the store.
        drop(path);
        reply(result)
    }

    async fn forward(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let fr: ForwardRequest = parse(req.get_ref())?;
        // A joining member asks for the cluster id before it knows it.
        let anonymous = req.metadata().get(CLUSTER_ID_HEADER).is_none();
        if !(anonymous && matches!(fr, ForwardRequest::ClusterInfo)) {
            self.check(&req)?;
        }
        let resp = self.forward.handle(fr).await;
        let payload = encode(&resp).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RaftMessage {
            payload: payload.into(),
        }))
    }
}
