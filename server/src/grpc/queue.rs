//! Keys queued by creation under a prefix, each attached to its
//! holder's lease: what etcd's Lock and Election services are made of
//! (its client library's mutex and election), here over the caller's
//! own KV and lease calls.
//!
//! A holder's key is `prefix<lease in hex>`; the holder whose key was
//! created first is at the head. Waiting for the head reads the keys
//! created before one's own again after each short pause (10 ms, growing
//! to 100 ms) until none is left.

use std::time::Duration;

use bytes::Bytes;
use cairn_proto::etcdserverpb as pb;
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::request_op::Request as Op;
use pb::response_op::Response as Answer;
use tonic::Status;

use crate::Client;

/// The TTL of the lease granted for a caller that names none (etcd's
/// session default).
const SESSION_TTL: i64 = 60;

/// The end of the range of keys that start with `prefix`.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The first key under `prefix` by creation, created at or before
/// `max_create` (0: any).
pub(super) fn first_created(prefix: &[u8], max_create: i64) -> pb::RangeRequest {
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

/// A compare that holds while `key` was created at `rev` (0: absent).
pub(super) fn created_at(key: &Bytes, rev: i64) -> pb::Compare {
    pb::Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.clone(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
        ..Default::default()
    }
}

fn op(r: Op) -> pb::RequestOp {
    pb::RequestOp { request: Some(r) }
}

fn range_answer(r: &pb::ResponseOp) -> Option<&pb::RangeResponse> {
    match &r.response {
        Some(Answer::ResponseRange(r)) => Some(r),
        _ => None,
    }
}

/// `lease`, or a new lease of [`SESSION_TTL`] for a caller that names
/// none.
pub(super) async fn session_lease(client: &Client, lease: i64) -> Result<i64, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    Ok(client
        .lease_grant(pb::LeaseGrantRequest {
            ttl: SESSION_TTL,
            id: 0,
        })
        .await?
        .id)
}

/// A holder's place in a queue.
pub(super) struct Place {
    /// Its key.
    pub key: Bytes,
    /// The revision the key was created at.
    pub rev: i64,
    /// The value the key held before, if it was there already.
    pub existing: Option<Bytes>,
    /// The header of the call that took the place.
    pub header: Option<pb::ResponseHeader>,
    /// Whether it is at the head of the queue.
    pub at_head: bool,
}

/// Takes `lease`'s place under `prefix` (puts its key with `value`
/// unless it is there already).
pub(super) async fn join(
    client: &Client,
    prefix: &[u8],
    lease: i64,
    value: Bytes,
) -> Result<Place, Status> {
    let key = Bytes::from([prefix, format!("{lease:x}").as_bytes()].concat());
    let resp = client
        .txn(pb::TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![
                op(Op::RequestPut(pb::PutRequest {
                    key: key.clone(),
                    value,
                    lease,
                    ..Default::default()
                })),
                op(Op::RequestRange(first_created(prefix, 0))),
            ],
            failure: vec![
                op(Op::RequestRange(pb::RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                })),
                op(Op::RequestRange(first_created(prefix, 0))),
            ],
        })
        .await?;
    let (rev, existing) = if resp.succeeded {
        (resp.header.as_ref().map_or(0, |h| h.revision), None)
    } else {
        let kv = resp
            .responses
            .first()
            .and_then(range_answer)
            .and_then(|r| r.kvs.first());
        (
            kv.map_or(0, |kv| kv.create_revision),
            kv.map(|kv| kv.value.clone()),
        )
    };
    let head = resp
        .responses
        .get(1)
        .and_then(range_answer)
        .and_then(|r| r.kvs.first())
        .map_or(0, |kv| kv.create_revision);
    Ok(Place {
        key,
        rev,
        existing,
        header: resp.header,
        at_head: head == rev,
    })
}

/// Waits until no key under `prefix` was created before `place`, then
/// checks that `place`'s key is still there (its lease may have ended
/// meanwhile: etcd's `session expired`).
pub(super) async fn wait_for_head(
    client: &Client,
    prefix: &[u8],
    place: &Place,
) -> Result<(), Status> {
    if place.at_head {
        return Ok(());
    }
    let mut pause = Duration::from_millis(10);
    loop {
        let before = client.range(first_created(prefix, place.rev - 1)).await?;
        if before.kvs.is_empty() {
            break;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    let still = client
        .range(pb::RangeRequest {
            key: place.key.clone(),
            ..Default::default()
        })
        .await?;
    if still.kvs.is_empty() {
        return Err(Status::unknown("session expired"));
    }
    Ok(())
}

/// Deletes a waiter's key unless disarmed: a caller that goes away
/// while it waits leaves no key to block the others.
pub(super) struct Abandon {
    client: Client,
    key: Option<Bytes>,
}

impl Abandon {
    /// Deletes `key` when dropped, unless [`Abandon::disarm`]ed.
    pub(super) fn new(client: &Client, key: &Bytes) -> Self {
        Abandon {
            client: client.clone(),
            key: Some(key.clone()),
        }
    }

    /// Keeps the key.
    pub(super) fn disarm(mut self) {
        self.key = None;
    }
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
