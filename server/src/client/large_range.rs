//! Range answers too large to hold whole: read in two passes over one
//! planned range, the first measuring the answer's encoded size, the
//! second handing it out batch by batch while it is sent (see
//! `crate::grpc::large_range`), so that a list of any size costs the
//! member a batch of memory, not the list.
//!
//! A range is read whole, as [`Client::range`] reads it, when it is one
//! key, is sorted by something other than the key (the order needs every
//! value first; etcd holds it too), or its encoded answer turns out to
//! fit in the caller's `hold` bytes (the first pass then keeps what it
//! read: one pass, as before). Both passes read the same records at the
//! same revision; a compaction above that revision between two batches
//! ends the answer with etcd's compacted error (see
//! [`cairn_kv::cursor`]).

use std::sync::Arc;

use cairn_kv as kv;
use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb;
use prost::encoding::message;

use super::{blocking, Client, Result};
use crate::convert;

/// Keys fetched per batch.
const BATCH: usize = 256;

/// A Range's answer: whole, or too large to hold.
pub(crate) enum RangeRead {
    /// The answer, read at once.
    Whole(pb::RangeResponse),
    /// Everything but the keys, and a cursor over them.
    Large(LargeRange),
}

/// A Range answer whose keys are read batch by batch.
pub(crate) struct LargeRange {
    /// The answer's header.
    pub header: pb::ResponseHeader,
    /// Keys in the range, as the answer's `count`.
    pub count: i64,
    /// Whether the limit cut keys off, as the answer's `more`.
    pub more: bool,
    /// Bytes the answer's `kvs` field encodes to (tags and lengths
    /// included).
    pub kvs_len: usize,
    cursor: kv::RangeCursor<kv::Engine>,
}

impl LargeRange {
    /// The next keys of the answer, in order; empty at the end. Blocks on
    /// the store: call it off the async runtime.
    pub fn next_batch(&mut self) -> kv::Result<Vec<mvccpb::KeyValue>> {
        Ok(self
            .cursor
            .next_batch(BATCH)?
            .into_iter()
            .map(convert::key_value)
            .collect())
    }
}

/// Bytes `kv` adds to a `RangeResponse` (field 2).
pub(crate) fn kv_len(kv: &mvccpb::KeyValue) -> usize {
    message::encoded_len(2, kv)
}

impl Client {
    /// etcd's Range, answered whole when its encoded answer fits in
    /// `hold` bytes and as a [`LargeRange`] otherwise.
    pub(crate) async fn range_read(&self, req: pb::RangeRequest, hold: usize) -> Result<RangeRead> {
        let kreq = self.admit_range(&req).await?;
        let store = Arc::clone(&self.node.inner.store);
        let read = blocking(move || {
            let cursor = if kreq.range_end.is_empty() {
                None
            } else {
                store.range_cursor(&kreq)?
            };
            let Some(mut cursor) = cursor else {
                return Ok(Read::Whole(store.range(&kreq)?));
            };
            let mut kept = Vec::new();
            let mut kvs_len = 0usize;
            loop {
                let batch = cursor.next_batch(BATCH)?;
                if batch.is_empty() {
                    break;
                }
                for kv in batch {
                    let kv = convert::key_value(kv);
                    kvs_len += kv_len(&kv);
                    if kvs_len <= hold {
                        kept.push(kv);
                    } else if !kept.is_empty() {
                        kept = Vec::new();
                    }
                }
            }
            let more = cursor.more().unwrap_or(false);
            if kvs_len <= hold {
                return Ok(Read::Kept {
                    revision: cursor.header_revision(),
                    kvs: kept,
                    more,
                    count: cursor.count(),
                });
            }
            cursor.rewind();
            Ok(Read::Large {
                cursor,
                more,
                kvs_len,
            })
        })
        .await?;
        Ok(match read {
            Read::Whole(r) => {
                let mut r = convert::range_response(r);
                r.header = self.header(r.header);
                RangeRead::Whole(r)
            }
            Read::Kept {
                revision,
                kvs,
                more,
                count,
            } => RangeRead::Whole(pb::RangeResponse {
                header: self.header(convert::header(revision)),
                kvs,
                more,
                count,
            }),
            Read::Large {
                cursor,
                more,
                kvs_len,
            } => RangeRead::Large(LargeRange {
                header: self
                    .header(convert::header(cursor.header_revision()))
                    .unwrap_or_default(),
                count: cursor.count(),
                more,
                kvs_len,
                cursor,
            }),
        })
    }
}

/// What the first pass found.
enum Read {
    Whole(kv::RangeResponse),
    Kept {
        revision: i64,
        kvs: Vec<mvccpb::KeyValue>,
        more: bool,
        count: i64,
    },
    Large {
        cursor: kv::RangeCursor<kv::Engine>,
        more: bool,
        kvs_len: usize,
    },
}
