//! etcd's v3 gRPC services over a [`Node`]: KV, Cluster, Maintenance, and
//! `grpc.health.v1.Health`.

use std::pin::Pin;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use cairn_proto::etcdserverpb::kv_server::{Kv, KvServer};
use cairn_proto::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use futures::Stream;
use openraft::rt::WatchReceiver;
use tonic::{Request, Response, Status};

use crate::forward::MembershipChange;
use crate::node::{member_id, MemberInfo, Node};
use crate::raft::Member;
use crate::status::{self, msg};
use crate::Client;

/// The etcd API version Cairn reports (`Maintenance.Status.version`).
pub const ETCD_VERSION: &str = "3.5.17";

/// Whether the client asked to be served only with a leader (metadata
/// `hasleader: true`, sent by kube-apiserver).
pub(crate) fn wants_leader<T>(req: &Request<T>) -> bool {
    req.metadata()
        .get("hasleader")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "true")
}

/// Fails with `etcdserver: no leader` when the client asked for a leader
/// and none is known.
pub(crate) fn check_leader<T>(node: &Node, req: &Request<T>) -> Result<(), Status> {
    if wants_leader(req) {
        node.inner.require_leader()?;
    }
    Ok(())
}

/// `etcdserverpb.KV`.
pub struct KvService {
    node: Node,
    client: Client,
}

impl KvService {
    pub fn server(node: &Node) -> KvServer<Self> {
        let max = node.inner.max_recv_bytes();
        KvServer::new(Self {
            node: node.clone(),
            client: node.client(),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(usize::MAX)
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        req: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        check_leader(&self.node, &req)?;
        self.client.range(req.into_inner()).await.map(Response::new)
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        check_leader(&self.node, &req)?;
        self.client.put(req.into_inner()).await.map(Response::new)
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        check_leader(&self.node, &req)?;
        self.client
            .delete_range(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        check_leader(&self.node, &req)?;
        self.client.txn(req.into_inner()).await.map(Response::new)
    }

    async fn compact(
        &self,
        req: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        check_leader(&self.node, &req)?;
        self.client
            .compact(req.into_inner())
            .await
            .map(Response::new)
    }
}

/// `etcdserverpb.Cluster`.
pub struct ClusterService {
    node: Node,
}

impl ClusterService {
    pub fn server(node: &Node) -> ClusterServer<Self> {
        ClusterServer::new(Self { node: node.clone() })
    }

    fn list(&self) -> Vec<pb::Member> {
        self.node.inner.members().into_iter().map(to_pb).collect()
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(
            self.node
                .inner
                .header(self.node.inner.store.current_revision()),
        )
    }
}

fn to_pb(m: MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.member.name,
        peer_ur_ls: m.member.peer_urls,
        client_ur_ls: m.member.client_urls,
        is_learner: m.is_learner,
    }
}

fn check_peer_urls(urls: &[String]) -> Result<(), Status> {
    if urls.is_empty() {
        return Err(Status::invalid_argument(
            "etcdserver: member peer URLs are not provided",
        ));
    }
    for u in urls {
        crate::config::check_url(u).map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    Ok(())
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        check_leader(&self.node, &req)?;
        let req = req.into_inner();
        check_peer_urls(&req.peer_ur_ls)?;
        let salt = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let id = member_id(
            &req.peer_ur_ls,
            &self.node.config().initial_cluster_token,
            Some(salt),
        );
        let member = Member {
            name: String::new(),
            peer_urls: req.peer_ur_ls.clone(),
            client_urls: Vec::new(),
            learner: req.is_learner,
        };
        self.node
            .inner
            .change_membership(MembershipChange::Add {
                id,
                member: member.clone(),
            })
            .await?;
        self.node
            .inner
            .wait_members(|ms| ms.iter().any(|m| m.id == id))
            .await;
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header(),
            member: Some(pb::Member {
                id,
                name: String::new(),
                peer_ur_ls: req.peer_ur_ls,
                client_ur_ls: Vec::new(),
                is_learner: req.is_learner,
            }),
            members: self.list(),
        }))
    }

    async fn member_remove(
        &self,
        req: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        check_leader(&self.node, &req)?;
        let id = req.into_inner().id;
        self.node
            .inner
            .change_membership(MembershipChange::Remove { id })
            .await?;
        self.node
            .inner
            .wait_members(|ms| ms.iter().all(|m| m.id != id))
            .await;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.header(),
            members: self.list(),
        }))
    }

    async fn member_update(
        &self,
        req: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        check_leader(&self.node, &req)?;
        let req = req.into_inner();
        check_peer_urls(&req.peer_ur_ls)?;
        self.node
            .inner
            .change_membership(MembershipChange::UpdatePeerUrls {
                id: req.id,
                peer_urls: req.peer_ur_ls.clone(),
            })
            .await?;
        self.node
            .inner
            .wait_members(|ms| {
                ms.iter()
                    .any(|m| m.id == req.id && m.member.peer_urls == req.peer_ur_ls)
            })
            .await;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: self.header(),
            members: self.list(),
        }))
    }

    async fn member_list(
        &self,
        req: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        check_leader(&self.node, &req)?;
        if req.get_ref().linearizable {
            self.node.inner.read_barrier().await?;
        }
        Ok(Response::new(pb::MemberListResponse {
            header: self.header(),
            members: self.list(),
        }))
    }

    async fn member_promote(
        &self,
        req: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        check_leader(&self.node, &req)?;
        let id = req.into_inner().id;
        self.node
            .inner
            .change_membership(MembershipChange::Promote { id })
            .await?;
        self.node
            .inner
            .wait_members(|ms| ms.iter().any(|m| m.id == id && !m.is_learner))
            .await;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header(),
            members: self.list(),
        }))
    }
}

/// `etcdserverpb.Maintenance` (Status, Hash, HashKV, MoveLeader).
pub struct MaintenanceService {
    node: Node,
}

impl MaintenanceService {
    pub fn server(node: &Node) -> MaintenanceServer<Self> {
        MaintenanceServer::new(Self { node: node.clone() })
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(
            self.node
                .inner
                .header(self.node.inner.store.current_revision()),
        )
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    type SnapshotStream = SnapshotStream;

    async fn alarm(
        &self,
        _req: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        Err(Status::unimplemented("alarms are not supported yet"))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let st = self.node.inner.raft_status();
        let store = std::sync::Arc::clone(&self.node.inner.store);
        let db_size = tokio::task::spawn_blocking(move || store.size_on_disk())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| status::from_kv(&e))?;
        let db_size = i64::try_from(db_size).unwrap_or(i64::MAX);
        let mut errors = Vec::new();
        if st.leader == 0 {
            errors.push(msg::NO_LEADER.to_string());
        }
        Ok(Response::new(pb::StatusResponse {
            header: self.header(),
            version: ETCD_VERSION.into(),
            db_size,
            leader: st.leader,
            raft_index: st.raft_index,
            raft_term: st.term,
            raft_applied_index: st.applied_index,
            errors,
            db_size_in_use: db_size,
            is_learner: st.is_learner,
        }))
    }

    async fn defragment(
        &self,
        _req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        Err(Status::unimplemented("defragment is not supported yet"))
    }

    async fn hash(
        &self,
        _req: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let store = std::sync::Arc::clone(&self.node.inner.store);
        let hash = tokio::task::spawn_blocking(move || store.hash())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| status::from_kv(&e))?;
        Ok(Response::new(pb::HashResponse {
            header: self.header(),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let rev = req.into_inner().revision;
        let store = std::sync::Arc::clone(&self.node.inner.store);
        let h = tokio::task::spawn_blocking(move || store.hash_kv(rev))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| status::from_kv(&e))?;
        Ok(Response::new(pb::HashKvResponse {
            header: self.header(),
            hash: h.hash,
            compact_revision: h.compact_revision,
        }))
    }

    async fn snapshot(
        &self,
        _req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(Status::unimplemented("snapshot is not supported yet"))
    }

    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let target = req.into_inner().target_id;
        let inner = &self.node.inner;
        if inner.leader() != Some(inner.id) {
            return Err(Status::failed_precondition(msg::NOT_LEADER));
        }
        let voters: Vec<u64> = inner
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if !voters.contains(&target) {
            return Err(Status::not_found("etcdserver: bad leader transferee"));
        }
        inner
            .raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|e| Status::unavailable(format!("etcdserver: {e}")))?;
        inner
            .raft
            .wait(Some(inner.timeout()))
            .metrics(move |m| m.current_leader == Some(target), "leader moved")
            .await
            .map_err(|_| Status::unavailable(msg::TIMEOUT))?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: self.header(),
        }))
    }

    async fn downgrade(
        &self,
        _req: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(Status::unimplemented("downgrade is not supported"))
    }
}
