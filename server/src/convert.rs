//! Conversions between etcd's wire messages (`cairn-proto`) and the store's
//! request/response types (`cairn-kv`). Headers carry only the revision
//! here; the API layer fills in cluster id, member id and term.

use cairn_kv as kv;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb;

/// etcd's Range request as the store's.
pub fn range_request(r: &pb::RangeRequest) -> kv::RangeRequest {
    use pb::range_request::{SortOrder, SortTarget};
    kv::RangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        limit: r.limit,
        revision: r.revision,
        sort_order: match SortOrder::try_from(r.sort_order) {
            Ok(SortOrder::Ascend) => kv::SortOrder::Ascend,
            Ok(SortOrder::Descend) => kv::SortOrder::Descend,
            _ => kv::SortOrder::None,
        },
        sort_target: match SortTarget::try_from(r.sort_target) {
            Ok(SortTarget::Version) => kv::SortTarget::Version,
            Ok(SortTarget::Create) => kv::SortTarget::Create,
            Ok(SortTarget::Mod) => kv::SortTarget::Mod,
            Ok(SortTarget::Value) => kv::SortTarget::Value,
            _ => kv::SortTarget::Key,
        },
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

/// etcd's Put request as the store's.
pub fn put_request(r: &pb::PutRequest) -> kv::PutRequest {
    kv::PutRequest {
        key: r.key.clone(),
        value: r.value.clone(),
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

/// etcd's DeleteRange request as the store's.
pub fn delete_request(r: &pb::DeleteRangeRequest) -> kv::DeleteRangeRequest {
    kv::DeleteRangeRequest {
        key: r.key.clone(),
        range_end: r.range_end.clone(),
        prev_kv: r.prev_kv,
    }
}

fn compare(c: &pb::Compare) -> kv::Compare {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let int =
        |want: fn(&TargetUnion) -> Option<i64>| c.target_union.as_ref().and_then(want).unwrap_or(0);
    let target = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Create) => kv::CompareTarget::CreateRevision(int(|t| match t {
            TargetUnion::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => kv::CompareTarget::ModRevision(int(|t| match t {
            TargetUnion::ModRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Value) => kv::CompareTarget::Value(match &c.target_union {
            Some(TargetUnion::Value(v)) => v.clone(),
            _ => Default::default(),
        }),
        Ok(CompareTarget::Lease) => kv::CompareTarget::Lease(int(|t| match t {
            TargetUnion::Lease(v) => Some(*v),
            _ => None,
        })),
        _ => kv::CompareTarget::Version(int(|t| match t {
            TargetUnion::Version(v) => Some(*v),
            _ => None,
        })),
    };
    kv::Compare {
        key: c.key.clone(),
        range_end: c.range_end.clone(),
        result: match CompareResult::try_from(c.result) {
            Ok(CompareResult::Greater) => kv::CompareResult::Greater,
            Ok(CompareResult::Less) => kv::CompareResult::Less,
            Ok(CompareResult::NotEqual) => kv::CompareResult::NotEqual,
            _ => kv::CompareResult::Equal,
        },
        target,
    }
}

fn request_op(op: &pb::RequestOp) -> kv::RequestOp {
    use pb::request_op::Request;
    match &op.request {
        Some(Request::RequestRange(r)) => kv::RequestOp::Range(range_request(r)),
        Some(Request::RequestPut(p)) => kv::RequestOp::Put(put_request(p)),
        Some(Request::RequestDeleteRange(d)) => kv::RequestOp::DeleteRange(delete_request(d)),
        Some(Request::RequestTxn(t)) => kv::RequestOp::Txn(txn_request(t)),
        None => kv::RequestOp::Empty,
    }
}

/// etcd's Txn request as the store's.
pub fn txn_request(t: &pb::TxnRequest) -> kv::TxnRequest {
    kv::TxnRequest {
        compare: t.compare.iter().map(compare).collect(),
        success: t.success.iter().map(request_op).collect(),
        failure: t.failure.iter().map(request_op).collect(),
    }
}

/// A stored key-value as etcd's `mvccpb.KeyValue`.
pub fn key_value(kv: kv::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// A header carrying only `revision` (the API layer fills in the rest).
pub fn header(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// The store's range answer as etcd's.
pub fn range_response(r: kv::RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: header(r.header_revision),
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

/// The store's put answer as etcd's.
pub fn put_response(r: kv::PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: header(r.header_revision),
        prev_kv: r.prev_kv.map(key_value),
    }
}

/// The store's delete answer as etcd's.
pub fn delete_response(r: kv::DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: header(r.header_revision),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
    }
}

/// The store's txn answer as etcd's.
pub fn txn_response(r: kv::TxnResponse) -> pb::TxnResponse {
    use pb::response_op::Response;
    pb::TxnResponse {
        header: header(r.header_revision),
        succeeded: r.succeeded,
        responses: r
            .responses
            .into_iter()
            .map(|op| pb::ResponseOp {
                response: Some(match op {
                    kv::ResponseOp::Range(r) => Response::ResponseRange(range_response(r)),
                    kv::ResponseOp::Put(p) => Response::ResponsePut(put_response(p)),
                    kv::ResponseOp::DeleteRange(d) => {
                        Response::ResponseDeleteRange(delete_response(d))
                    }
                    kv::ResponseOp::Txn(t) => Response::ResponseTxn(txn_response(t)),
                }),
            })
            .collect(),
    }
}
