//! The in-process client: etcd's KV/Txn/Compact and Lease calls with
//! etcd's semantics and errors, called directly on a [`Node`] without gRPC. The gRPC KV service
//! is a thin layer over the same calls.

use cairn_kv as kv;
use cairn_proto::cairnpb::{self, command::Op, command_response::Result as Res};
use cairn_proto::etcdserverpb as pb;
use prost::Message;
use tonic::Status;

use crate::convert;
use crate::forward::apply_result;
use crate::node::Node;
use crate::status::{self, msg};

/// A client of one member. Cheap to clone. Errors are etcd's gRPC statuses
/// (code and message), exactly what a remote client would see.
#[derive(Clone)]
pub struct Client {
    node: Node,
}

/// The result type of client calls.
pub type Result<T> = std::result::Result<T, Status>;

impl Client {
    pub(crate) fn new(node: Node) -> Self {
        Self { node }
    }

    fn header(&self, h: Option<pb::ResponseHeader>) -> Option<pb::ResponseHeader> {
        let rev = h.map(|h| h.revision).unwrap_or(0);
        Some(self.node.inner.header(rev))
    }

    async fn propose(&self, op: Op) -> Result<Res> {
        let cmd = cairnpb::Command { op: Some(op) };
        if cmd.encoded_len() > self.node.inner.config.max_request_bytes {
            return Err(Status::invalid_argument(msg::REQUEST_TOO_LARGE));
        }
        apply_result(self.node.inner.write(cmd).await?)
    }

    /// etcd's Range. Linearizable unless `serializable` is set.
    pub async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse> {
        let kreq = convert::range_request(&req);
        kv::validate_range(&kreq).map_err(|e| status::from_kv(&e))?;
        if !req.serializable {
            self.node.inner.read_barrier().await?;
        }
        let store = std::sync::Arc::clone(&self.node.inner.store);
        let resp = tokio::task::spawn_blocking(move || store.range(&kreq))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| status::from_kv(&e))?;
        let mut resp = convert::range_response(resp);
        resp.header = self.header(resp.header);
        Ok(resp)
    }

    /// etcd's Put.
    pub async fn put(&self, req: pb::PutRequest) -> Result<pb::PutResponse> {
        kv::validate_put(&convert::put_request(&req)).map_err(|e| status::from_kv(&e))?;
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
        kv::validate_delete(&convert::delete_request(&req)).map_err(|e| status::from_kv(&e))?;
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
        )
        .map_err(|e| status::from_kv(&e))?;
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
        let physical = req.physical;
        match self.propose(Op::Compact(req)).await? {
            Res::Compact(mut r) => {
                if physical {
                    let store = std::sync::Arc::clone(&self.node.inner.store);
                    tokio::task::spawn_blocking(move || store.wait_for_compaction())
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?
                        .map_err(|e| status::from_kv(&e))?;
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
        self.node.inner.lease_grant(req).await
    }

    /// etcd's LeaseRevoke: deletes the lease's keys in one revision.
    pub async fn lease_revoke(&self, id: i64) -> Result<pb::LeaseRevokeResponse> {
        self.node.inner.lease_revoke(id).await
    }

    /// One keep-alive: the lease's TTL from now, 0 if there is no such lease.
    pub async fn lease_keep_alive(&self, id: i64) -> Result<i64> {
        self.node.inner.lease_renew(id).await
    }

    /// etcd's LeaseTimeToLive: TTL −1 if there is no such lease.
    pub async fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
    ) -> Result<pb::LeaseTimeToLiveResponse> {
        self.node.inner.lease_time_to_live(id, keys).await
    }

    /// etcd's LeaseLeases.
    pub fn lease_leases(&self) -> pb::LeaseLeasesResponse {
        self.node.inner.lease_leases()
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

fn unexpected(r: Res) -> Status {
    Status::internal(format!("unexpected apply result {r:?}"))
}
