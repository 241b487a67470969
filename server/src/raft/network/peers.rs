//! [`Peers`]: the gRPC channels to other members, one per address, and
//! requests forwarded to the leader over them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::cairnpb::peer_client::PeerClient;
use cairn_proto::cairnpb::RaftMessage;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use super::{CLUSTER_ID_HEADER, MAX_PEER_MESSAGE};
use crate::raft::forward::{ForwardError, ForwardRequest, ForwardResponse};
use crate::raft::forward_stream;
use crate::raft::{decode, encode, Member};
use crate::tls::ClientTls;

/// Opens gRPC channels to peers, one per address, shared by every user.
#[derive(Clone)]
pub struct Peers {
    pub(super) cluster_id: u64,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Each member's current peer URL, refreshed from the membership so a
    /// MemberUpdate takes effect on connections openraft already holds.
    pub(super) urls: Arc<Mutex<HashMap<u64, String>>>,
    /// The least time a Raft RPC is given to answer (see
    /// [`Peers::with_rpc_timeout_floor`]).
    pub(super) rpc_floor: Duration,
    /// Pipes of forwarded requests, one per peer URL.
    pipes: Arc<Mutex<HashMap<String, forward_stream::Pipe>>>,
    /// How `https://` peers are dialed; `None`: they cannot be.
    tls: Option<Arc<ClientTls>>,
    /// Round trips and failures, per peer (`etcd_network_peer_*`).
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Each peer's series, resolved once.
    peer_metrics: Arc<Mutex<HashMap<u64, crate::metrics::PeerMetrics>>>,
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
            tls: None,
            metrics: None,
            peer_metrics: Arc::default(),
        }
    }

    /// Reports round trips and failures to `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The series of peer `id` (labelled with its id in hex, as etcd's).
    pub(crate) fn metrics_of(&self, id: u64) -> Option<crate::metrics::PeerMetrics> {
        let metrics = self.metrics.as_ref()?;
        let mut cache = self.peer_metrics.lock().ok()?;
        Some(
            cache
                .entry(id)
                .or_insert_with(|| metrics.peer(&format!("{id:x}")))
                .clone(),
        )
    }

    /// Dials `https://` peers with `tls`.
    pub fn with_tls(mut self, tls: Option<Arc<ClientTls>>) -> Self {
        self.tls = tls;
        self
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
    pub(super) fn url_of(&self, id: u64) -> Option<String> {
        self.urls.lock().ok()?.get(&id).cloned()
    }

    /// A client for member `id`, at its current URL.
    pub(super) fn client_by_id(&self, id: u64) -> Result<PeerClient<Channel>, Status> {
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

    /// A new channel to the peer at `url`: plain for `http://`, over TLS
    /// for `https://` (the TLS is ours: tonic dials the same address as
    /// `http://` through a connector that runs the handshake).
    fn channel(&self, url: &str) -> Result<Channel, Status> {
        let bad = |e: &dyn std::fmt::Display| {
            Status::invalid_argument(format!("bad peer URL {url}: {e}"))
        };
        let Some(rest) = url.strip_prefix("https://") else {
            return Ok(Endpoint::from_shared(url.to_string())
                .map_err(|e| bad(&e))?
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true)
                .connect_lazy());
        };
        let tls = self.tls.clone().ok_or_else(|| {
            Status::unavailable(format!(
                "peer URL {url} is https but this member has no peer TLS (--peer-cert-file, --peer-key-file, --peer-trusted-ca-file or --peer-auto-tls)"
            ))
        })?;
        let endpoint = Endpoint::from_shared(format!("http://{rest}"))
            .map_err(|e| bad(&e))?
            .connect_timeout(Duration::from_secs(1));
        let host = crate::config::host_of(url).to_string();
        let addr = crate::config::host_port(url).to_string();
        let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
            let tls = Arc::clone(&tls);
            let host = host.clone();
            let addr = addr.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&addr).await?;
                tcp.set_nodelay(true)?;
                let s = tls.connect(&host, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        });
        Ok(endpoint.connect_with_connector_lazy(connector))
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
                    let c = self.channel(url)?;
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
pub(super) fn with_cluster_id<T>(cluster_id: u64, mut req: Request<T>) -> Request<T> {
    if cluster_id == 0 {
        return req;
    }
    if let Ok(v) = cluster_id.to_string().parse() {
        req.metadata_mut().insert(CLUSTER_ID_HEADER, v);
    }
    req
}
