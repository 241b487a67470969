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
    /// The first key (or the only one).
    pub key: Bytes,
    /// The end of the range, exclusive (see above).
    pub range_end: Bytes,
    /// At most this many keys (0 = no limit); `more` tells if some were cut.
    pub limit: i64,
    /// Read at this revision (≤ 0 = current).
    pub revision: i64,
    /// Order of the result.
    pub sort_order: SortOrder,
    /// What the result is sorted by.
    pub sort_target: SortTarget,
    /// Return keys without values.
    pub keys_only: bool,
    /// Return only the count.
    pub count_only: bool,
    /// Only keys modified at or after this revision (0 = any).
    pub min_mod_revision: i64,
    /// Only keys modified at or before this revision (0 = any).
    pub max_mod_revision: i64,
    /// Only keys created at or after this revision (0 = any).
    pub min_create_revision: i64,
    /// Only keys created at or before this revision (0 = any).
    pub max_create_revision: i64,
}

/// etcd's `RangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The store's revision when the range was served.
    pub header_revision: i64,
    /// The keys read, after filters, sort and limit.
    pub kvs: Vec<KeyValue>,
    /// Whether the limit cut keys off.
    pub more: bool,
    /// Keys in the range at the read revision, ignoring limit and filters.
    pub count: i64,
}

/// etcd's `PutRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// The lease to attach the key to (0 = none; detaches).
    pub lease: i64,
    /// Return the key's previous record.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

/// etcd's `PutResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    /// The store's revision after the write.
    pub header_revision: i64,
    /// The previous record, when asked for and there was one.
    pub prev_kv: Option<KeyValue>,
}

/// etcd's `DeleteRangeRequest`; `range_end` as in [`RangeRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    /// The first key (or the only one).
    pub key: Bytes,
    /// The end of the range, exclusive.
    pub range_end: Bytes,
    /// Return the deleted records.
    pub prev_kv: bool,
}

/// etcd's `DeleteRangeResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    /// The store's revision after the write.
    pub header_revision: i64,
    /// Keys deleted.
    pub deleted: i64,
    /// The deleted records, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// How a compare's two sides must relate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompareResult {
    #[default]
    /// Equal.
    Equal,
    /// The key's side is greater.
    Greater,
    /// The key's side is less.
    Less,
    /// Not equal.
    NotEqual,
}

/// What a compare looks at, with the operand. (In etcd's wire form the
/// target and the operand are separate fields; an operand missing for the
/// target compares as 0 or the empty value.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's version.
    Version(i64),
    /// The key's create revision.
    CreateRevision(i64),
    /// The key's last modification revision.
    ModRevision(i64),
    /// The key's value.
    Value(Bytes),
    /// The key's lease.
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
    /// The first key (or the only one).
    pub key: Bytes,
    /// The end of the range, exclusive (empty: `key` alone).
    pub range_end: Bytes,
    /// How the two sides must relate.
    pub result: CompareResult,
    /// What is compared, with the operand.
    pub target: CompareTarget,
}

/// One operation of a transaction branch (etcd's `RequestOp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    /// A read.
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction.
    Txn(TxnRequest),
    /// An op with no request set: rejected by validation, as etcd does.
    Empty,
}

/// One operation's result (etcd's `ResponseOp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseOp {
    /// A read's result.
    Range(RangeResponse),
    /// A put's result.
    Put(PutResponse),
    /// A delete's result.
    DeleteRange(DeleteRangeResponse),
    /// A nested transaction's result.
    Txn(TxnResponse),
}

/// etcd's `TxnRequest`: if every compare holds, run `success`, else
/// `failure`. Later ops see the changes of earlier ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    /// The conditions, all of which must hold.
    pub compare: Vec<Compare>,
    /// Run when every compare holds.
    pub success: Vec<RequestOp>,
    /// Run otherwise.
    pub failure: Vec<RequestOp>,
}

/// etcd's `TxnResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// The store's revision after the txn.
    pub header_revision: i64,
    /// Whether the compares held.
    pub succeeded: bool,
    /// One result per op of the branch that ran.
    pub responses: Vec<ResponseOp>,
}

/// One write of a batch ([`crate::Store::write_batch`]).
#[derive(Clone, Copy, Debug)]
pub enum Write<'r> {
    /// A put.
    Put(&'r PutRequest),
    /// A delete.
    DeleteRange(&'r DeleteRangeRequest),
    /// A transaction.
    Txn(&'r TxnRequest),
}

/// The response to one [`Write`].
#[derive(Clone, Debug, PartialEq)]
pub enum Written {
    /// A put's response.
    Put(PutResponse),
    /// A delete's response.
    DeleteRange(DeleteRangeResponse),
    /// A transaction's response.
    Txn(TxnResponse),
}

/// Result of a write: the response, the watch events it produced (in
/// revision order) and the store revision after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied<R> {
    /// The write's response.
    pub response: R,
    /// The watch events it produced, in order.
    pub events: Vec<Event>,
    /// The store's revision after it.
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
