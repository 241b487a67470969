//! The peer network: openraft's RPCs over gRPC (`cairnpb.Peer`), except
//! the append streams of replication, which go over plain TCP connections
//! to the same peer port where the follower speaks that
//! ([`super::append_wire`]; over gRPC otherwise).
//!
//! Each openraft message is postcard-encoded into a `RaftMessage`. Every
//! call carries the sender's cluster id in the `cairn-cluster-id` metadata
//! and a member refuses calls from another cluster, so two clusters that
//! share addresses never mix logs.
//!
//! Snapshots travel as a client stream: a header (vote and snapshot meta),
//! then the image file in chunks, written by the receiver to a temporary
//! file under its snapshot directory and installed once complete. Neither
//! side holds the whole image in memory.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::cairnpb::peer_client::PeerClient;
use cairn_proto::cairnpb::peer_server::Peer;
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
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use super::forward::{ForwardError, ForwardHandler, ForwardRequest, ForwardResponse};
use super::state_machine::Snapshot;
use super::{append_stream, append_wire, forward_stream};
use super::{decode, encode, Member, SnapshotMeta, TypeConfig, Vote};

/// Metadata key carrying the sender's cluster id.
pub const CLUSTER_ID_HEADER: &str = "cairn-cluster-id";

/// Size of one snapshot chunk on the wire.
const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Largest peer message accepted (entries batches, snapshot chunks).
pub const MAX_PEER_MESSAGE: usize = 64 << 20;

/// How long append streams to a peer that does not speak the plain
/// connection go over gRPC before it is asked again.
const GRPC_APPENDS_FOR: Duration = Duration::from_secs(60);

/// The first message of a snapshot stream.
#[derive(Serialize, Deserialize)]
struct SnapshotHeader {
    vote: Vote,
    meta: SnapshotMeta,
}

/// Opens gRPC channels to peers, one per address, shared by every user.
#[derive(Clone)]
pub struct Peers {
    cluster_id: u64,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Each member's current peer URL, refreshed from the membership so a
    /// MemberUpdate takes effect on connections openraft already holds.
    urls: Arc<Mutex<HashMap<u64, String>>>,
    /// The least time a Raft RPC is given to answer (see
    /// [`Peers::with_rpc_timeout_floor`]).
    rpc_floor: Duration,
    /// Pipes of forwarded requests, one per peer URL.
    pipes: Arc<Mutex<HashMap<String, forward_stream::Pipe>>>,
}

impl Peers {
    /// Peers of cluster `cluster_id` (0: not known yet, joining).
    pub fn new(cluster_id: u64) -> Self {
        Self {
            cluster_id,
            channels: Arc::default(),
            urls: Arc::default(),
            rpc_floor: Duration::ZERO,
            pipes: Arc::default(),
        }
    }

    /// Gives every Raft RPC at least `floor` to answer. openraft times
    /// appends out after one heartbeat interval, so members whose round
    /// trip is longer than that would never get an append acknowledged
    /// and the cluster would commit nothing; etcd keeps working there (its
    /// guidance is only that the heartbeat be near the round trip). With
    /// the election timeout as the floor, a slow link slows commits down
    /// instead of stopping them; a peer that does not answer at all is
    /// given up on after one election timeout, one that refuses the
    /// connection at once.
    pub fn with_rpc_timeout_floor(mut self, floor: Duration) -> Self {
        self.rpc_floor = floor;
        self
    }

    /// Records the peer URL of every member in `members`.
    pub fn update_urls<'a>(&self, members: impl Iterator<Item = (&'a u64, &'a Member)>) {
        if let Ok(mut map) = self.urls.lock() {
            for (id, m) in members {
                if let Some(u) = m.peer_urls.first() {
                    map.insert(*id, u.clone());
                }
            }
        }
    }

    /// Member `id`'s current peer URL.
    fn url_of(&self, id: u64) -> Option<String> {
        self.urls.lock().ok()?.get(&id).cloned()
    }

    /// A client for member `id`, at its current URL.
    fn client_by_id(&self, id: u64) -> Result<PeerClient<Channel>, Status> {
        let url = self
            .urls
            .lock()
            .map_err(|_| Status::internal("peer URL map poisoned"))?
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::unavailable(format!("no peer URL known for {id:x}")))?;
        self.client_for(&url)
    }

    /// A client for the first peer URL of `member`.
    pub fn client(&self, member: &Member) -> Result<PeerClient<Channel>, Status> {
        let url = member
            .peer_urls
            .first()
            .ok_or_else(|| Status::unavailable("member has no peer URL"))?;
        self.client_for(url)
    }

    /// A client for the peer at `url`.
    pub fn client_for(&self, url: &str) -> Result<PeerClient<Channel>, Status> {
        let channel = {
            let mut map = self
                .channels
                .lock()
                .map_err(|_| Status::internal("peer channel map poisoned"))?;
            match map.get(url) {
                Some(c) => c.clone(),
                None => {
                    let c = Endpoint::from_shared(url.to_string())
                        .map_err(|e| Status::invalid_argument(format!("bad peer URL {url}: {e}")))?
                        .connect_timeout(Duration::from_secs(1))
                        .tcp_nodelay(true)
                        .connect_lazy();
                    map.insert(url.to_string(), c.clone());
                    c
                }
            }
        };
        Ok(PeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE))
    }

    /// A request carrying this cluster's id.
    pub fn request<T>(&self, body: T) -> Request<T> {
        with_cluster_id(self.cluster_id, Request::new(body))
    }

    /// Sends a forwarded request to the member at `url`: over the pipe to
    /// it ([`forward_stream`]), or, for a member that knows no cluster id
    /// yet (joining) and for the cluster info it asks for, as a call of
    /// its own. [`ForwardError::NotSent`] means the request never left
    /// this member.
    pub async fn forward(
        &self,
        url: &str,
        req: ForwardRequest,
    ) -> Result<ForwardResponse, ForwardError> {
        if self.cluster_id == 0 || matches!(req, ForwardRequest::ClusterInfo) {
            return self.forward_unary(url, &req).await;
        }
        let (answer, answered) = tokio::sync::oneshot::channel();
        let mut job = forward_stream::Job { req, answer };
        // A pipe found closed (its stream broke) is replaced once.
        for _ in 0..2 {
            let pipe = {
                let mut pipes = self
                    .pipes
                    .lock()
                    .map_err(|_| ForwardError::NotSent("forwarding pipe map poisoned".into()))?;
                match pipes.get(url) {
                    Some(p) if !p.is_closed() => p.clone(),
                    _ => {
                        let client = self
                            .client_for(url)
                            .map_err(|s| ForwardError::NotSent(s.message().to_string()))?;
                        let p = forward_stream::open(client, self.cluster_id, with_cluster_id, url);
                        pipes.insert(url.to_string(), p.clone());
                        p
                    }
                }
            };
            match pipe.send(job) {
                Ok(()) => {
                    return answered.await.unwrap_or_else(|_| {
                        Err(ForwardError::NotSent("forwarding stream closed".into()))
                    })
                }
                Err(tokio::sync::mpsc::error::SendError(j)) => job = j,
            }
        }
        Err(ForwardError::NotSent("forwarding stream closed".into()))
    }

    /// [`Peers::forward`] as one unary call.
    async fn forward_unary(
        &self,
        url: &str,
        req: &ForwardRequest,
    ) -> Result<ForwardResponse, ForwardError> {
        let payload = encode(req).map_err(|e| ForwardError::NotSent(e.to_string()))?;
        let mut client = self
            .client_for(url)
            .map_err(|s| ForwardError::NotSent(s.message().to_string()))?;
        let resp = client
            .forward(self.request(RaftMessage {
                payload: payload.into(),
            }))
            .await
            .map_err(|s| classify(&s))?;
        decode(&resp.into_inner().payload).map_err(|e| ForwardError::Lost(e.to_string()))
    }
}

/// A failed unary forward, typed: a transport failure before the request
/// reached the peer is [`ForwardError::NotSent`]. tonic reports those as
/// Unavailable with the connection error in the message; this is the one
/// place that reads it.
fn classify(s: &Status) -> ForwardError {
    let m = s.message();
    if s.code() == tonic::Code::Unavailable
        && (m.contains("error trying to connect")
            || m.contains("tcp connect error")
            || m.contains("Connection refused"))
    {
        ForwardError::NotSent(m.to_string())
    } else {
        ForwardError::Lost(m.to_string())
    }
}

/// `req` with the cluster id header, unless `cluster_id` is 0 (a member
/// still joining knows none yet and sends none).
fn with_cluster_id<T>(cluster_id: u64, mut req: Request<T>) -> Request<T> {
    if cluster_id == 0 {
        return req;
    }
    if let Ok(v) = cluster_id.to_string().parse() {
        req.metadata_mut().insert(CLUSTER_ID_HEADER, v);
    }
    req
}

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
    /// over one long-lived stream ([`append_stream::HeartbeatPipe`]): a
    /// plain append connection, or a gRPC stream.
    heartbeat: bool,
    /// That stream between rounds: opened at the first heartbeat, and
    /// again after a failed round.
    heartbeat_pipe: Option<append_stream::HeartbeatPipe>,
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
    pipe: Option<append_stream::HeartbeatPipe>,
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
        self.heartbeat_running = Some(tokio::spawn(async move {
            let opened = match kept {
                Some(p) => Ok(p),
                None => dialer.open_heartbeat_pipe(timeout).await,
            };
            let (answer, pipe) = match opened {
                Ok(mut pipe) => {
                    let (answer, reusable) = pipe.round(&req, timeout).await;
                    (answer, reusable.then_some(pipe))
                }
                Err(e) => (Err(e), None),
            };
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
    ) -> Result<append_stream::HeartbeatPipe, RPCError<TypeConfig>> {
        if let Some(conn) = self.open_append_connection(timeout).await? {
            return Ok(append_stream::HeartbeatPipe::over(conn));
        }
        let mut client = self.client()?;
        let peers = self.peers.clone();
        append_stream::HeartbeatPipe::open(
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
    type SnapshotData = std::fs::File;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
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
                return Ok(append_wire::stream(conn, input, timeout));
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
        let mut file = snapshot.snapshot;
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
                    let n = file.read(&mut buf[filled..])?;
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

/// The `cairnpb.Peer` service of one member.
pub struct PeerService {
    /// This member's cluster: calls from another are refused.
    pub cluster_id: u64,
    /// When an AppendEntries from a current leader last arrived.
    pub leader_contact: Arc<Mutex<Option<std::time::Instant>>>,
    /// The member's Raft.
    pub raft: super::Raft,
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
            snapshot: reader,
        };
        let result = self
            .raft
            .install_full_snapshot(header.vote, snapshot)
            .await
            .map_err(|e| e.to_string());
        // `path` is removed when dropped; the state machine kept its own
        // copy if it installed the image.
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
