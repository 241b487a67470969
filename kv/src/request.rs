//! Requests and responses of the store, shaped like etcd's `etcdserverpb`
//! messages but free of any RPC library. The server converts between these
//! and the wire types.

use bytes::Bytes;

use crate::revision::Revision;

/// A key's value at one revision (etcd's `mvccpb.KeyValue`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Bytes,
    /// Revision of the key's latest creation.
    pub create_revision: i64,
    /// Revision of the key's latest change.
    pub mod_revision: i64,
    /// 1 on creation, +1 on every put; 0 for a deleted key.
    pub version: i64,
    /// The value.
    pub value: Bytes,
    /// Lease the key is attached to, 0 for none.
    pub lease: i64,
}

/// What happened to a key in one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or overwritten.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change a write made, for watchers (etcd's `mvccpb.Event`).
///
/// A DELETE event's `kv` holds only the key and `mod_revision` = the
/// deletion's revision, as etcd sends it.
///
/// Writes do not read the key's previous value just for the event (only a
/// request that needs it reads it): `prev_kv` may be left out while
/// `prev_revision` says where it is. [`crate::Store::fill_prev_kv`] reads
/// it, for the watchers that ask for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change.
    pub kv: KeyValue,
    /// The key before the change, when it existed and has been read (boxed:
    /// most events never carry one, and a write or revoke of many keys
    /// builds one event per key).
    pub prev_kv: Option<Box<KeyValue>>,
    /// The revision of the key's record before the change, when the key
    /// existed.
    pub prev_revision: Option<Revision>,
}

impl Event {
    /// True when the key existed before but `prev_kv` is not filled in.
    pub fn needs_prev_kv(&self) -> bool {
        self.prev_kv.is_none() && self.prev_revision.is_some()
    }
}

/// Order of range results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Key order (ascending by key) unless a non-key target is given.
    #[default]
    None,
    /// Ascending by the sort target.
    Ascend,
    /// Descending by the sort target.
    Descend,
}

/// Field range results are sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value.
    Value,
}

/// etcd's `RangeRequest`. `range_end` empty = the single `key`; `"\0"` =
/// every key ≥ `key`; otherwise `[key, range_end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: Bytes,
    pub range_end: Bytes,
    /// At most this many keys (0 = no limit); `more` tells if some were cut.
    pub limit: i64,
    /// Read at this revision (≤ 0 = current).
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

/// etcd's `RangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The store's revision when the range was served.
    pub header_revision: i64,
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    /// Keys in the range at the read revision, ignoring limit and filters.
    pub count: i64,
}

/// etcd's `PutRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    pub key: Bytes,
    pub value: Bytes,
    pub lease: i64,
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

/// etcd's `PutResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    pub header_revision: i64,
    pub prev_kv: Option<KeyValue>,
}

/// etcd's `DeleteRangeRequest`; `range_end` as in [`RangeRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    pub key: Bytes,
    pub range_end: Bytes,
    pub prev_kv: bool,
}

/// etcd's `DeleteRangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    pub header_revision: i64,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

/// How a compare's two sides must relate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompareResult {
    #[default]
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// What a compare looks at, with the operand. (In etcd's wire form the
/// target and the operand are separate fields; an operand missing for the
/// target compares as 0 or the empty value.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Value(Bytes),
    Lease(i64),
}

impl Default for CompareTarget {
    fn default() -> Self {
        CompareTarget::Version(0)
    }
}

/// etcd's `Compare`: every key in `[key, range_end)` (or `key` alone) must
/// satisfy it. A missing key compares as a zero `KeyValue`, except that a
/// value compare on a missing key is false.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compare {
    pub key: Bytes,
    pub range_end: Bytes,
    pub result: CompareResult,
    pub target: CompareTarget,
}

/// One operation of a transaction branch (etcd's `RequestOp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    /// An op with no request set: rejected by validation, as etcd does.
    Empty,
}

/// One operation's result (etcd's `ResponseOp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

/// etcd's `TxnRequest`: if every compare holds, run `success`, else
/// `failure`. Later ops see the changes of earlier ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

/// etcd's `TxnResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    pub header_revision: i64,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

/// One write of a batch ([`crate::Store::write_batch`]).
#[derive(Clone, Copy, Debug)]
pub enum Write<'r> {
    Put(&'r PutRequest),
    DeleteRange(&'r DeleteRangeRequest),
    Txn(&'r TxnRequest),
}

/// The response to one [`Write`].
#[derive(Clone, Debug, PartialEq)]
pub enum Written {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

/// Result of a write: the response, the watch events it produced (in
/// revision order) and the store revision after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied<R> {
    pub response: R,
    pub events: Vec<Event>,
    pub revision: i64,
}

/// Result of [`crate::Store::hash_kv`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashKv {
    /// CRC32 over every record a reader at `revision` could still see.
    pub hash: u32,
    /// The store's compacted revision when the hash was taken.
    pub compact_revision: i64,
    /// The revision the hash covers.
    pub revision: i64,
}
