//! [`PeerConnection`]: openraft's connection to one peer — appends over a
//! pipelined stream, heartbeats over a pipe of their own, votes, leader
//! transfer and snapshots.

use std::future::Future;
use std::io::{self, Read};
use std::time::Duration;

use cairn_proto::cairnpb::peer_client::PeerClient;
use cairn_proto::cairnpb::RaftMessage;
use futures::StreamExt;
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::RPCError;
use openraft::errors::{NetworkError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use super::Peers;
use super::{SnapshotHeader, SNAPSHOT_CHUNK};
use crate::raft::heartbeat::HeartbeatPipe;
use crate::raft::state_machine::Snapshot;
use crate::raft::{append_stream, append_wire};
use crate::raft::{decode, encode, Member, TypeConfig, Vote};

/// How long append streams to a peer that does not speak the plain
/// connection go over gRPC before it is asked again.
const GRPC_APPENDS_FOR: Duration = Duration::from_secs(60);

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &Member) -> PeerConnection {
        if let Ok(mut map) = self.urls.lock() {
            if let Some(u) = node.peer_urls.first() {
                map.entry(target).or_insert_with(|| u.clone());
            }
        }
        PeerConnection::new(target, self.clone())
    }

    async fn new_heartbeat_client(&mut self, target: u64, node: &Member) -> PeerConnection {
        let mut c = self.new_client(target, node).await;
        c.heartbeat = true;
        c
    }
}

/// openraft's connection to one peer.
pub struct PeerConnection {
    target: u64,
    peers: Peers,
    /// Whether this connection carries openraft's heartbeats, which go
    /// over one long-lived stream ([`HeartbeatPipe`]): a
    /// plain append connection, or a gRPC stream.
    heartbeat: bool,
    /// That stream between rounds: opened at the first heartbeat, and
    /// again after a failed round.
    heartbeat_pipe: Option<HeartbeatPipe>,
    /// The task running the last round, while it runs (see
    /// [`PeerConnection::heartbeat_round`]).
    heartbeat_running: Option<tokio::task::JoinHandle<HeartbeatDone>>,
    /// Until when append streams go over gRPC because the peer was seen
    /// not to speak the plain connection ([`append_wire`]); it is asked
    /// again after that (it may have been upgraded).
    grpc_appends_until: Option<std::time::Instant>,
}

/// What a heartbeat round's task hands back.
struct HeartbeatDone {
    answer: Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>,
    /// The pipe, if it can carry the next round.
    pipe: Option<HeartbeatPipe>,
    grpc_appends_until: Option<std::time::Instant>,
}

fn unreachable(e: &(impl std::error::Error + 'static)) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(e))
}

impl PeerConnection {
    fn new(target: u64, peers: Peers) -> Self {
        PeerConnection {
            target,
            peers,
            heartbeat: false,
            heartbeat_pipe: None,
            heartbeat_running: None,
            grpc_appends_until: None,
        }
    }

    fn client(&self) -> Result<PeerClient<Channel>, RPCError<TypeConfig>> {
        self.peers
            .client_by_id(self.target)
            .map_err(|e| unreachable(&e))
    }

    /// A copy of what opening a connection to the peer needs, for a task.
    fn dialer(&self) -> PeerConnection {
        PeerConnection {
            grpc_appends_until: self.grpc_appends_until,
            ..PeerConnection::new(self.target, self.peers.clone())
        }
    }

    /// One heartbeat over this connection's heartbeat pipe. A pipe found
    /// closed before the round (the follower restarted, the connection
    /// broke while idle) is replaced by a new one; a round that fails
    /// drops its pipe.
    ///
    /// The round (opening the pipe where there is none, then the
    /// exchange) runs in a task of its own, so that openraft's timeout on
    /// a heartbeat — one heartbeat interval — does not cut it short: a
    /// cancelled round goes on to its end, and the next round first waits
    /// for it and takes its pipe back, its late answer dropped. Opening a
    /// pipe takes two round trips before the heartbeat's own; where the
    /// three are longer than the interval, a round that had to open one
    /// would otherwise always be cancelled, drop the half-opened pipe, and
    /// leave the next round to start again from nothing, and no heartbeat
    /// would ever be answered.
    async fn heartbeat_round(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>> {
        // A round cut short by openraft is still running: wait for it
        // and keep its pipe; its answer is late.
        let _late = self.finish_round().await;
        let timeout = option.soft_ttl().max(self.peers.rpc_floor);
        let kept = self.heartbeat_pipe.take().filter(|p| !p.is_closed());
        let mut dialer = self.dialer();
        let metrics = self.peers.metrics_of(self.target);
        self.heartbeat_running = Some(tokio::spawn(async move {
            let opened = match kept {
                Some(p) => Ok(p),
                None => dialer.open_heartbeat_pipe(timeout).await,
            };
            let (answer, pipe) = match opened {
                Ok(mut pipe) => {
                    let sent = std::time::Instant::now();
                    let (answer, reusable) = pipe.round(&req, timeout).await;
                    // A heartbeat's answer is one round trip: etcd's
                    // peer round-trip time.
                    if let (true, Some(m), Ok(_)) = (crate::metrics::ON, &metrics, &answer) {
                        m.round_trip.observe(sent.elapsed().as_secs_f64());
                    }
                    (answer, reusable.then_some(pipe))
                }
                Err(e) => (Err(e), None),
            };
            if let (Some(m), Err(_)) = (&metrics, &answer) {
                m.sent_failures.inc();
            }
            HeartbeatDone {
                answer,
                pipe,
                grpc_appends_until: dialer.grpc_appends_until,
            }
        }));
        match self.finish_round().await {
            Some(answer) => answer,
            None => Err(RPCError::Unreachable(Unreachable::from_string(
                "heartbeat round not started",
            ))),
        }
    }

    /// Waits for the task of the running round, if there is one, keeps
    /// what it hands back, and returns its answer. Awaited through a
    /// reference: a cancellation here leaves the task in place for the
    /// next round.
    async fn finish_round(
        &mut self,
    ) -> Option<Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> {
        let done = self.heartbeat_running.as_mut()?.await;
        self.heartbeat_running = None;
        Some(match done {
            Ok(done) => {
                self.heartbeat_pipe = done.pipe;
                self.grpc_appends_until = done.grpc_appends_until;
                done.answer
            }
            Err(e) => Err(RPCError::Unreachable(Unreachable::from_string(format!(
                "heartbeat round ended: {e}"
            )))),
        })
    }

    /// A plain append connection to the peer ([`append_wire`]), or `None`
    /// where appends go over gRPC: the peer's URL is not plain `http`, or
    /// the peer was seen not to speak it within [`GRPC_APPENDS_FOR`].
    async fn open_append_connection(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<tokio::net::TcpStream>, RPCError<TypeConfig>> {
        let addr = self
            .peers
            .url_of(self.target)
            .and_then(|u| append_wire::socket_addr(&u));
        let over_tcp = self
            .grpc_appends_until
            .is_none_or(|t| std::time::Instant::now() >= t);
        let Some(addr) = addr.filter(|_| over_tcp) else {
            return Ok(None);
        };
        let opened =
            tokio::time::timeout(timeout, append_wire::connect(&addr, self.peers.cluster_id)).await;
        match opened {
            Ok(Ok(append_wire::Opened::Stream(conn))) => Ok(Some(conn)),
            Ok(Ok(append_wire::Opened::NotSpoken)) => {
                tracing::info!(
                    member = %format!("{:x}", self.target),
                    "peer has no plain append connections; replicating over gRPC"
                );
                self.grpc_appends_until = Some(std::time::Instant::now() + GRPC_APPENDS_FOR);
                Ok(None)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RPCError::Unreachable(Unreachable::from_string(format!(
                "append connection not opened within {timeout:?}"
            )))),
        }
    }

    async fn open_heartbeat_pipe(
        &mut self,
        timeout: Duration,
    ) -> Result<HeartbeatPipe, RPCError<TypeConfig>> {
        if let Some(conn) = self.open_append_connection(timeout).await? {
            return Ok(HeartbeatPipe::over(conn));
        }
        let mut client = self.client()?;
        let peers = self.peers.clone();
        HeartbeatPipe::open(
            move |out| async move { client.append_stream(peers.request(out)).await },
            timeout,
        )
        .await
    }

    async fn unary<Req: Serialize, Resp: for<'de> Deserialize<'de>>(
        &self,
        which: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self.client()?;
        let mut request = self.peers.request(RaftMessage {
            payload: payload.into(),
        });
        request.set_timeout(option.hard_ttl().max(self.peers.rpc_floor));
        let resp = match which {
            Rpc::Append => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::PreVote => client.pre_vote(request).await,
            Rpc::Transfer => client.transfer_leader(request).await,
        }
        .map_err(|e| unreachable(&e))?;
        let body = resp.into_inner().payload;
        let result: Result<Resp, String> =
            decode(&body).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|msg| RPCError::Unreachable(Unreachable::from_string(msg)))
    }
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    PreVote,
    Transfer,
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = crate::raft::snapshot::SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        if !append_stream::follows_prev(&rpc) {
            return Err(RPCError::Unreachable(Unreachable::from_string(format!(
                "not sent: the entries of {rpc} do not follow its prev_log_id"
            ))));
        }
        self.unary(Rpc::Append, &rpc, &option).await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        if self.heartbeat {
            // openraft's heartbeat worker sends one request per call and
            // waits for the stream to end.
            return Box::pin(async move {
                let mut input = input;
                let answers: BoxStream<'s, _> = match input.next().await {
                    Some(req) => {
                        let answer = self.heartbeat_round(req, &option).await;
                        Box::pin(futures::stream::once(async move { answer }))
                    }
                    None => Box::pin(futures::stream::empty()),
                };
                Ok(answers)
            });
        }
        Box::pin(async move {
            let timeout = option.soft_ttl().max(self.peers.rpc_floor);
            if let Some(conn) = self.open_append_connection(timeout).await? {
                let metrics = self.peers.metrics_of(self.target);
                return Ok(append_wire::stream(conn, input, timeout, metrics));
            }
            let mut client = self.client()?;
            let (outbound, outstanding) = append_stream::requests(input);
            let call = client.append_stream(self.peers.request(outbound));
            let inbound = match tokio::time::timeout(timeout, call).await {
                Ok(r) => r.map_err(|e| unreachable(&e))?.into_inner(),
                Err(_) => {
                    return Err(RPCError::Unreachable(Unreachable::from_string(format!(
                        "append stream not opened within {timeout:?}"
                    ))))
                }
            };
            let answers: BoxStream<'s, _> =
                Box::pin(append_stream::answers(inbound, outstanding, timeout));
            Ok(answers)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(Rpc::Vote, &rpc, &option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(Rpc::PreVote, &rpc, &option).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.unary(Rpc::Transfer, &req, &option).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let header = encode(&SnapshotHeader {
            vote,
            meta: snapshot.meta.clone(),
        })
        .map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let mut client = self
            .peers
            .client_by_id(self.target)
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        // Chunks are read on a blocking thread and fed through a small
        // channel, so at most a few chunks are in memory at once.
        let (tx, rx) = tokio::sync::mpsc::channel::<RaftMessage>(2);
        // An image being exported from the store as it is read.
        let mut image = snapshot.snapshot;
        let reader = tokio::task::spawn_blocking(move || -> io::Result<()> {
            if tx
                .blocking_send(RaftMessage {
                    payload: header.into(),
                })
                .is_err()
            {
                return Ok(());
            }
            loop {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK];
                let mut filled = 0;
                while filled < buf.len() {
                    let n = image.read(&mut buf[filled..])?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    return Ok(());
                }
                buf.truncate(filled);
                if tx
                    .blocking_send(RaftMessage {
                        payload: buf.into(),
                    })
                    .is_err()
                {
                    return Ok(());
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let call = client.install_snapshot(self.peers.request(stream));
        let resp = tokio::select! {
            r = call => r,
            closed = cancel => return Err(StreamingError::Closed(closed)),
        };
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StreamingError::Network(NetworkError::new(&e))),
            Err(e) => return Err(StreamingError::Network(NetworkError::new(&e))),
        }
        let body = resp
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?
            .into_inner()
            .payload;
        let result: Result<SnapshotResponse<TypeConfig>, String> =
            decode(&body).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        result.map_err(|msg| StreamingError::Unreachable(Unreachable::from_string(msg)))
    }
}

impl std::fmt::Debug for PeerConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerConnection({})", self.target)
    }
}
