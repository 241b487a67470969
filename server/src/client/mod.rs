//! The in-process client: etcd's KV, Lease, Cluster and Maintenance calls
//! with etcd's semantics, called directly on a [`Node`] without gRPC.
//!
//! This is the one seam between the etcd API and the member: the gRPC
//! services (`crate::grpc`) translate each request into a call here and
//! each [`Error`] into etcd's status, so a program embedding Cairn and a
//! remote etcd client take the same code path. Requests and responses are
//! etcd's own messages ([`cairn_proto::etcdserverpb`]). Watches are not
//! calls but streams: the gRPC layer serves them from the member's watch
//! hub ([`crate::watch`]) directly.

mod auth;
mod large_range;

use std::sync::Arc;

use cairn_kv as kv;
use cairn_proto::cairnpb::{self, command::Op, command_response::Result as Res};
use cairn_proto::etcdserverpb as pb;
use prost::Message;

use crate::auth::perm;
use crate::convert;
use crate::error::Error;
use crate::node::{apply_result, member_id, MemberInfo, Node};
use crate::raft::forward::MembershipChange;
use crate::raft::Member;

pub(crate) use self::large_range::{kv_len, LargeRange, RangeRead};

/// The etcd API version Cairn reports (`Maintenance.Status.version`).
pub const ETCD_VERSION: &str = "3.5.17";

/// The cluster version `/version` reports, as etcd 3.5 does.
pub const ETCD_CLUSTER_VERSION: &str = "3.5.0";

/// A client of one member. Cheap to clone. Errors are typed
/// ([`Error`]); their `Display` is etcd's message, and
/// `tonic::Status::from` gives etcd's status, exactly what a remote
/// client would see.
///
/// A client made by [`Node::client`] is the embedding program's own and
/// is trusted: with authentication on, it may do anything. The gRPC
/// services make one per request with [`Client::as_remote`], which acts
/// as the user the request names and is checked like etcd checks it.
#[derive(Clone)]
pub struct Client {
    node: Node,
    caller: Caller,
}

/// Who a [`Client`]'s calls are made for.
#[derive(Clone, Debug)]
enum Caller {
    /// The embedding program (or the member itself): not checked.
    Trusted,
    /// A remote client: the user its request named (`None`: none).
    Remote(Option<String>),
}

/// The result type of client calls.
pub type Result<T> = std::result::Result<T, Error>;

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> kv::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(Error::from)
}

impl Client {
    pub(crate) fn new(node: Node) -> Self {
        Self {
            node,
            caller: Caller::Trusted,
        }
    }

    /// A client acting as `user` (as identified from a remote request's
    /// token or certificate; `None`: it named no one), checked against
    /// the auth state on every call while authentication is on.
    pub fn as_remote(&self, user: Option<String>) -> Client {
        Client {
            node: self.node.clone(),
            caller: Caller::Remote(user),
        }
    }

    /// The user the calls are checked as; `None` when trusted.
    fn remote_user(&self) -> Option<Option<&str>> {
        match &self.caller {
            Caller::Trusted => None,
            Caller::Remote(u) => Some(u.as_deref()),
        }
    }

    /// The user a proposed command carries (see `cairnpb::Command::user`):
    /// none for the trusted caller, "" for a remote one that named no one.
    fn command_user(&self) -> Option<String> {
        self.remote_user()
            .map(|u| u.unwrap_or_default().to_string())
    }

    /// Allows what `needs` lists for the caller (computed only with auth
    /// on).
    fn check(&self, needs: impl FnOnce() -> Vec<crate::auth::Need>) -> Result<()> {
        match self.remote_user() {
            Some(u) if self.node.inner.auth.is_enabled() => self.node.inner.auth.check(u, &needs()),
            _ => Ok(()),
        }
    }

    /// Allows root only (with auth on).
    fn require_root(&self) -> Result<()> {
        match self.remote_user() {
            None => Ok(()),
            Some(u) => self.node.inner.auth.require_root(u),
        }
    }

    /// Allows root, and a user for whom `own` holds in the current auth
    /// state (etcd lets users read their own user and their roles).
    fn require_root_or(
        &self,
        own: impl FnOnce(&crate::auth::AuthState, &str) -> bool,
    ) -> Result<()> {
        match self.require_root() {
            Err(e) => match self.remote_user() {
                Some(Some(u)) if own(&self.node.inner.auth.state(), u) => Ok(()),
                _ => Err(e),
            },
            ok => ok,
        }
    }

    /// Allows any user (with auth on).
    fn require_user(&self) -> Result<()> {
        match self.remote_user() {
            None => Ok(()),
            Some(u) => self.node.inner.auth.require_user(u),
        }
    }

    fn header(&self, h: Option<pb::ResponseHeader>) -> Option<pb::ResponseHeader> {
        let rev = h.map(|h| h.revision).unwrap_or(0);
        Some(self.node.inner.header(rev))
    }

    /// The header of the Cluster service's answers: etcd's carries no
    /// revision.
    fn cluster_header(&self) -> Option<pb::ResponseHeader> {
        Some(self.node.inner.header(0))
    }

    /// A header at the current revision.
    fn current_header(&self) -> Option<pb::ResponseHeader> {
        Some(
            self.node
                .inner
                .header(self.node.inner.store.current_revision()),
        )
    }

    async fn propose(&self, op: Op) -> Result<Res> {
        let cmd = cairnpb::Command {
            op: Some(op),
            user: self.command_user(),
        };
        if cmd.encoded_len() > self.node.inner.config.max_request_bytes {
            return Err(Error::RequestTooLarge);
        }
        apply_result(self.node.inner.write(cmd).await?)
    }

    /// etcd's Range. Linearizable unless `serializable` is set.
    pub async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse> {
        let kreq = self.admit_range(&req).await?;
        let store = Arc::clone(&self.node.inner.store);
        let resp = blocking(move || store.range(&kreq)).await?;
        let mut resp = convert::range_response(resp);
        resp.header = self.header(resp.header);
        Ok(resp)
    }

    /// Checks a Range as etcd does before reading it, and waits for the
    /// read barrier unless it is `serializable`.
    async fn admit_range(&self, req: &pb::RangeRequest) -> Result<kv::RangeRequest> {
        let kreq = convert::range_request(req);
        kv::validate_range(&kreq)?;
        if !req.serializable {
            self.node.inner.read_barrier().await?;
        }
        // After the barrier: a CORRUPT raised before the read is seen.
        if self.node.inner.alarms.corrupt() {
            return Err(Error::Corrupt);
        }
        // After the barrier: the auth state is at least as new as the read.
        self.check(|| perm::needs_of_range(req))?;
        Ok(kreq)
    }

    /// etcd's Put.
    pub async fn put(&self, req: pb::PutRequest) -> Result<pb::PutResponse> {
        kv::validate_put(&convert::put_request(&req))?;
        self.check(|| perm::needs_of_put(&req))?;
        match self.propose(Op::Put(req)).await? {
            Res::Put(mut r) => {
                r.header = self.header(r.header);
                Ok(r)
            }
            other => Err(unexpected(other)),
        }
    }

    /// etcd's DeleteRange.
    pub async fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
    ) -> Result<pb::DeleteRangeResponse> {
        kv::validate_delete(&convert::delete_request(&req))?;
        self.check(|| perm::needs_of_delete(&req))?;
        match self.propose(Op::DeleteRange(req)).await? {
            Res::DeleteRange(mut r) => {
                r.header = self.header(r.header);
                Ok(r)
            }
            other => Err(unexpected(other)),
        }
    }

    /// etcd's Txn. Every txn, read-only ones too, goes through the log, so
    /// each is linearizable.
    pub async fn txn(&self, req: pb::TxnRequest) -> Result<pb::TxnResponse> {
        kv::validate_txn(
            &convert::txn_request(&req),
            self.node.inner.config.max_txn_ops,
        )?;
        self.check(|| perm::needs_of_txn(&req))?;
        match self.propose(Op::Txn(req)).await? {
            Res::Txn(mut r) => {
                r.header = self.header(r.header);
                Ok(r)
            }
            other => Err(unexpected(other)),
        }
    }

    /// etcd's Compact. With `physical`, returns once the compacted records
    /// are gone from this member's store.
    pub async fn compact(&self, req: pb::CompactionRequest) -> Result<pb::CompactionResponse> {
        self.require_root()?;
        let physical = req.physical;
        match self.propose(Op::Compact(req)).await? {
            Res::Compact(mut r) => {
                if physical {
                    let store = Arc::clone(&self.node.inner.store);
                    blocking(move || store.wait_for_compaction()).await?;
                }
                r.header = self.header(r.header);
                Ok(r)
            }
            other => Err(unexpected(other)),
        }
    }

    /// etcd's LeaseGrant: `req.id` 0 lets the member pick the id; a TTL
    /// below the minimum (1.5 election timeouts) is raised to it.
    pub async fn lease_grant(&self, req: pb::LeaseGrantRequest) -> Result<pb::LeaseGrantResponse> {
        self.require_user()?;
        self.node.inner.lease_grant(req).await
    }

    /// etcd's LeaseRevoke: deletes the lease's keys in one revision. With
    /// auth on, the caller must be able to write every one of them
    /// (decided at apply).
    pub async fn lease_revoke(&self, id: i64) -> Result<pb::LeaseRevokeResponse> {
        self.require_user()?;
        self.node.inner.lease_revoke(id, self.command_user()).await
    }

    /// One keep-alive: the lease's TTL from now, 0 if there is no such lease.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64> {
        self.require_user()?;
        self.node.inner.lease_renew(id).await
    }

    /// etcd's LeaseKeepAlive answer for one request.
    pub async fn lease_keep_alive_response(&self, id: i64) -> Result<pb::LeaseKeepAliveResponse> {
        self.require_user()?;
        let ttl = self.node.inner.lease_renew(id).await?;
        Ok(pb::LeaseKeepAliveResponse {
            header: self.node.inner.lease_header(),
            id,
            ttl,
        })
    }

    /// etcd's LeaseTimeToLive: TTL −1 if there is no such lease.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<pb::LeaseTimeToLiveResponse> {
        self.require_user()?;
        let resp = self.node.inner.lease_time_to_live(id, keys).await?;
        // The keys are shown only to a caller who may read each of them
        // (CVE-2023-32082).
        self.check(|| resp.keys.iter().map(|k| perm::Need::read_key(k)).collect())?;
        Ok(resp)
    }

    /// etcd's LeaseLeases.
    pub fn lease_leases(&self) -> Result<pb::LeaseLeasesResponse> {
        self.require_user()?;
        Ok(self.node.inner.lease_leases())
    }

    /// etcd's MemberAdd: the member gets an id and joins as a learner (a
    /// voter is promoted once it caught up).
    pub async fn member_add(&self, req: pb::MemberAddRequest) -> Result<pb::MemberAddResponse> {
        // Malformed URLs first, as etcd checks them before the caller.
        check_peer_urls(&req.peer_ur_ls)?;
        self.require_root()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let id = member_id(
            &req.peer_ur_ls,
            &self.node.config().initial_cluster_token,
            Some(now),
        );
        let member = Member {
            name: String::new(),
            peer_urls: req.peer_ur_ls.clone(),
            client_urls: Vec::new(),
            learner: req.is_learner,
        };
        let inner = &self.node.inner;
        inner
            .change_membership(MembershipChange::Add { id, member })
            .await?;
        inner.wait_members(|ms| ms.iter().any(|m| m.id == id)).await;
        Ok(pb::MemberAddResponse {
            header: self.cluster_header(),
            member: Some(pb::Member {
                id,
                name: String::new(),
                peer_ur_ls: req.peer_ur_ls,
                client_ur_ls: Vec::new(),
                is_learner: req.is_learner,
            }),
            members: self.members(),
        })
    }

    /// etcd's MemberRemove.
    pub async fn member_remove(
        &self,
        req: pb::MemberRemoveRequest,
    ) -> Result<pb::MemberRemoveResponse> {
        self.require_root()?;
        let id = req.id;
        let inner = &self.node.inner;
        inner
            .change_membership(MembershipChange::Remove { id })
            .await?;
        inner.wait_members(|ms| ms.iter().all(|m| m.id != id)).await;
        Ok(pb::MemberRemoveResponse {
            header: self.cluster_header(),
            members: self.members(),
        })
    }

    /// etcd's MemberUpdate: new peer URLs for a member.
    pub async fn member_update(
        &self,
        req: pb::MemberUpdateRequest,
    ) -> Result<pb::MemberUpdateResponse> {
        self.require_root()?;
        check_peer_urls(&req.peer_ur_ls)?;
        let inner = &self.node.inner;
        inner
            .change_membership(MembershipChange::UpdatePeerUrls {
                id: req.id,
                peer_urls: req.peer_ur_ls.clone(),
            })
            .await?;
        inner
            .wait_members(|ms| {
                ms.iter()
                    .any(|m| m.id == req.id && m.member.peer_urls == req.peer_ur_ls)
            })
            .await;
        Ok(pb::MemberUpdateResponse {
            header: self.cluster_header(),
            members: self.members(),
        })
    }

    /// etcd's MemberPromote: a learner that caught up becomes a voter.
    pub async fn member_promote(
        &self,
        req: pb::MemberPromoteRequest,
    ) -> Result<pb::MemberPromoteResponse> {
        self.require_root()?;
        let id = req.id;
        let inner = &self.node.inner;
        inner
            .change_membership(MembershipChange::Promote { id })
            .await?;
        inner
            .wait_members(|ms| ms.iter().any(|m| m.id == id && !m.is_learner))
            .await;
        Ok(pb::MemberPromoteResponse {
            header: self.cluster_header(),
            members: self.members(),
        })
    }

    /// etcd's MemberList; with `linearizable`, after a read barrier.
    pub async fn member_list(&self, req: pb::MemberListRequest) -> Result<pb::MemberListResponse> {
        self.require_user()?;
        if req.linearizable {
            self.node.inner.read_barrier().await?;
        }
        Ok(pb::MemberListResponse {
            header: self.cluster_header(),
            members: self.members(),
        })
    }

    fn members(&self) -> Vec<pb::Member> {
        self.node
            .inner
            .members()
            .into_iter()
            .map(member_pb)
            .collect()
    }

    /// etcd's Status of this member.
    pub async fn status(&self) -> Result<pb::StatusResponse> {
        self.require_user()?;
        let st = self.node.inner.raft_status();
        let store = Arc::clone(&self.node.inner.store);
        let db_size = blocking(move || store.size_on_disk()).await?;
        let db_size = i64::try_from(db_size).unwrap_or(i64::MAX);
        let mut errors = Vec::new();
        if st.leader == 0 {
            errors.push(Error::NoLeader.to_string());
        }
        for a in self.node.inner.alarms.list(pb::AlarmType::None as i32) {
            let name = pb::AlarmType::try_from(a.alarm)
                .map(|t| t.as_str_name())
                .unwrap_or("UNKNOWN");
            errors.push(format!("memberID:{} alarm:{name} ", a.member_id));
        }
        Ok(pb::StatusResponse {
            header: self.current_header(),
            version: ETCD_VERSION.into(),
            db_size,
            leader: st.leader,
            raft_index: st.raft_index,
            raft_term: st.term,
            raft_applied_index: st.applied_index,
            errors,
            db_size_in_use: db_size,
            is_learner: st.is_learner,
        })
    }

    /// etcd's Snapshot: a backup of this member's store as it is now,
    /// in pieces (see [`crate::backup`]), with the header to send with
    /// each.
    pub fn snapshot(
        &self,
    ) -> Result<(
        Option<pb::ResponseHeader>,
        tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    )> {
        self.require_root()?;
        let inner = &self.node.inner;
        // The scratch file goes beside the store, on the same disk.
        let scratch = self.node.config().data_dir.join("member");
        let pieces = crate::backup::stream(Arc::clone(&inner.store), scratch);
        Ok((self.current_header(), pieces))
    }

    /// etcd's Alarm: lists (any user), raises or clears (root only) an
    /// alarm, through Raft as etcd does.
    pub async fn alarm(&self, req: pb::AlarmRequest) -> Result<pb::AlarmResponse> {
        if req.action == pb::alarm_request::AlarmAction::Get as i32 {
            self.require_user()?;
        } else {
            self.require_root()?;
        }
        match self.propose(Op::Alarm(req)).await? {
            Res::Alarm(mut r) => {
                r.header = self.current_header();
                Ok(r)
            }
            other => Err(unexpected(other)),
        }
    }

    /// etcd's Defragment: gives this member's store's unused space back
    /// to the file system, while reads and writes go on.
    pub async fn defragment(&self) -> Result<pb::DefragmentResponse> {
        self.require_root()?;
        let store = Arc::clone(&self.node.inner.store);
        let size = blocking(move || {
            store.defragment()?;
            store.size_on_disk()
        })
        .await?;
        self.node.inner.quota.sampled(size);
        Ok(pb::DefragmentResponse {
            header: self.current_header(),
        })
    }

    /// etcd's Hash: of everything this member's store holds.
    pub async fn hash(&self) -> Result<pb::HashResponse> {
        self.require_root()?;
        let store = Arc::clone(&self.node.inner.store);
        let hash = blocking(move || store.hash()).await?;
        Ok(pb::HashResponse {
            header: self.current_header(),
            hash,
        })
    }

    /// etcd's HashKV: of the kv history up to `revision` (0: current).
    pub async fn hash_kv(&self, req: pb::HashKvRequest) -> Result<pb::HashKvResponse> {
        self.require_root()?;
        let store = Arc::clone(&self.node.inner.store);
        let h = blocking(move || store.hash_kv(req.revision)).await?;
        Ok(pb::HashKvResponse {
            header: self.current_header(),
            hash: h.hash,
            compact_revision: h.compact_revision,
        })
    }

    /// etcd's MoveLeader: only the leader may hand its leadership over,
    /// and only to a voter.
    pub async fn move_leader(&self, req: pb::MoveLeaderRequest) -> Result<pb::MoveLeaderResponse> {
        self.require_root()?;
        let target = req.target_id;
        let inner = &self.node.inner;
        if inner.leader() != Some(inner.id) {
            return Err(Error::NotLeader);
        }
        if !inner.voters().contains(&target) {
            return Err(Error::BadLeaderTransferee);
        }
        inner
            .raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        inner
            .raft
            .wait(Some(inner.timeout()))
            .metrics(move |m| m.current_leader == Some(target), "leader moved")
            .await
            .map_err(|_| Error::Timeout)?;
        Ok(pb::MoveLeaderResponse {
            header: self.current_header(),
        })
    }

    /// Puts `value` at `key`; a shorthand for [`Client::put`].
    pub async fn put_kv(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<pb::PutResponse> {
        self.put(pb::PutRequest {
            key: key.into().into(),
            value: value.into().into(),
            ..Default::default()
        })
        .await
    }

    /// The value at `key` (linearizable), if any.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>> {
        let r = self
            .range(pb::RangeRequest {
                key: key.into().into(),
                ..Default::default()
            })
            .await?;
        Ok(r.kvs.into_iter().next().map(|kv| kv.value.to_vec()))
    }
}

fn member_pb(m: MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.member.name,
        peer_ur_ls: m.member.peer_urls,
        client_ur_ls: m.member.client_urls,
        is_learner: m.is_learner,
    }
}

fn check_peer_urls(urls: &[String]) -> Result<()> {
    if urls.is_empty() {
        return Err(Error::PeerUrlsNotProvided);
    }
    for u in urls {
        if crate::config::check_url(u).is_err() {
            return Err(Error::MemberBadUrls);
        }
    }
    Ok(())
}

fn unexpected(r: Res) -> Error {
    Error::Internal(format!("unexpected apply result {r:?}"))
}
