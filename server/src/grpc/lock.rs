//! `v3lockpb.Lock`: etcd's lock service, made of the caller's own KV and
//! Lease calls as etcd's is made of its client library's mutex.
//!
//! Locking `name` puts the key `name/<lease in hex>` (empty value,
//! attached to the caller's lease; without one, a lease of 60 s is
//! granted) if it is not there, and the caller holds the lock once no key
//! under `name/` was created before it: the waiters queue in creation
//! order. A caller that goes away while waiting has its key deleted. The
//! wait reads the keys before its own again after each short pause
//! (10 ms, growing to 100 ms); a lease that ends while waiting fails the
//! call with etcd's `session expired`. Unlock deletes the key. Every call
//! is made as the caller, so auth applies as to any KV call.

use std::time::Duration;

use bytes::Bytes;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::v3lockpb::lock_server::{Lock, LockServer};
use cairn_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::request_op::Request as Op;
use pb::response_op::Response as Answer;
use tonic::{Request, Response, Status};

use super::metadata::{caller, check_leader};
use crate::node::Node;
use crate::Client;

/// The TTL of the lease granted for a caller that names none (etcd's
/// session default).
const SESSION_TTL: i64 = 60;

/// `v3lockpb.Lock`.
pub struct LockService {
    node: Node,
    client: Client,
}

impl LockService {
    /// The service over `node`.
    pub fn server(node: &Node) -> LockServer<Self> {
        LockServer::new(Self {
            node: node.clone(),
            client: node.client().as_remote(None),
        })
    }
}

/// The end of the range of keys that start with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The first key under `prefix` by creation, at most `max_create`
/// (0: any).
fn first_created(prefix: &[u8], max_create: i64) -> pb::RangeRequest {
    pb::RangeRequest {
        key: Bytes::copy_from_slice(prefix),
        range_end: prefix_end(prefix).into(),
        limit: 1,
        sort_order: pb::range_request::SortOrder::Ascend as i32,
        sort_target: pb::range_request::SortTarget::Create as i32,
        max_create_revision: max_create,
        ..Default::default()
    }
}

fn range_answer(r: &pb::ResponseOp) -> Option<&pb::RangeResponse> {
    match &r.response {
        Some(Answer::ResponseRange(r)) => Some(r),
        _ => None,
    }
}

/// Deletes a waiter's key unless disarmed: a caller that goes away
/// while it waits leaves no key to block the others.
struct Abandon {
    client: Client,
    key: Option<Bytes>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let client = self.client.clone();
            tokio::spawn(async move {
                let _ = client
                    .delete_range(pb::DeleteRangeRequest {
                        key,
                        ..Default::default()
                    })
                    .await;
            });
        }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, req: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        check_leader(&self.node, &req)?;
        let client = caller(&self.node, &self.client, &req)?.into_owned();
        let LockRequest { name, lease } = req.into_inner();
        let lease = if lease == 0 {
            client
                .lease_grant(pb::LeaseGrantRequest {
                    ttl: SESSION_TTL,
                    id: 0,
                })
                .await?
                .id
        } else {
            lease
        };
        let mut prefix = name.to_vec();
        prefix.push(b'/');
        let key = Bytes::from([prefix.as_slice(), format!("{lease:x}").as_bytes()].concat());
        let txn = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: key.clone(),
                target_union: Some(TargetUnion::CreateRevision(0)),
                ..Default::default()
            }],
            success: vec![
                pb::RequestOp {
                    request: Some(Op::RequestPut(pb::PutRequest {
                        key: key.clone(),
                        lease,
                        ..Default::default()
                    })),
                },
                pb::RequestOp {
                    request: Some(Op::RequestRange(first_created(&prefix, 0))),
                },
            ],
            failure: vec![
                pb::RequestOp {
                    request: Some(Op::RequestRange(pb::RangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    })),
                },
                pb::RequestOp {
                    request: Some(Op::RequestRange(first_created(&prefix, 0))),
                },
            ],
        };
        let resp = client.txn(txn).await?;
        let header = resp.header;
        let mine = if resp.succeeded {
            header.as_ref().map_or(0, |h| h.revision)
        } else {
            resp.responses
                .first()
                .and_then(range_answer)
                .and_then(|r| r.kvs.first())
                .map_or(0, |kv| kv.create_revision)
        };
        let owner = resp
            .responses
            .get(1)
            .and_then(range_answer)
            .and_then(|r| r.kvs.first())
            .map_or(0, |kv| kv.create_revision);
        let mut abandon = Abandon {
            client: client.clone(),
            key: Some(key.clone()),
        };
        if owner != mine {
            let mut pause = Duration::from_millis(10);
            loop {
                let before = client.range(first_created(&prefix, mine - 1)).await?;
                if before.kvs.is_empty() {
                    break;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            let still = client
                .range(pb::RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                })
                .await?;
            if still.kvs.is_empty() {
                abandon.key = None;
                return Err(Status::unknown("session expired"));
            }
        }
        abandon.key = None;
        Ok(Response::new(LockResponse {
            header,
            key: key.to_vec().into(),
        }))
    }

    async fn unlock(
        &self,
        req: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        check_leader(&self.node, &req)?;
        let client = caller(&self.node, &self.client, &req)?.into_owned();
        let resp = client
            .delete_range(pb::DeleteRangeRequest {
                key: req.into_inner().key,
                ..Default::default()
            })
            .await?;
        Ok(Response::new(UnlockResponse {
            header: resp.header,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
