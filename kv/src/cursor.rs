//! A range read in batches: for answers too large to hold whole.
//!
//! [`Store::range_cursor`] plans a range as [`Store::range`] does (same
//! read revision, count, filters, limit and `keys_only`) and hands back a
//! [`RangeCursor`] that fetches the answer's records a batch at a time,
//! as often as asked ([`RangeCursor::rewind`]): a caller can size the
//! answer in one pass and send it in a second without ever holding it.
//!
//! Records are immutable, and physical compaction removes only records
//! unreachable at every revision at or above its target; a record a read
//! at revision `R` needs can therefore go only once the store has been
//! compacted above `R`. Each batch is fetched under the read barrier
//! after checking the compacted revision is still at most `R`, so a batch
//! either sees every record it needs or fails with [`Error::Compacted`],
//! as a read at a compacted revision does. Between batches nothing is
//! held: a slow consumer delays no compaction and no other read.
//!
//! Sorting by anything but the key needs the whole range first: such a
//! request gets no cursor.

use std::sync::Arc;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::range;
use crate::request::{KeyValue, RangeRequest, SortOrder, SortTarget};
use crate::revision::Revision;
use crate::state::Inner;
use crate::store::Store;
use crate::txn;

/// A planned range whose answer is fetched in batches (see the module
/// docs).
pub struct RangeCursor<B: Backend> {
    inner: Arc<Inner<B>>,
    req: RangeRequest,
    /// Record revisions in the order the answer lists them.
    revs: Vec<Revision>,
    /// The revision the range is read at.
    at: i64,
    header_revision: i64,
    count: i64,
    /// Next index in `revs`.
    pos: usize,
    /// Keys handed out in this pass.
    given: i64,
    /// Set once a pass has ended: whether the limit cut keys off.
    more: Option<bool>,
}

impl<B: Backend> Store<B> {
    /// Plans `req` for reading in batches, or `None` when its sort order
    /// needs the whole range at once or it asks only for the count (use
    /// [`Store::range`]).
    pub fn range_cursor(&self, req: &RangeRequest) -> Result<Option<RangeCursor<B>>> {
        // Any other target is sorted ascending even without an order.
        if req.sort_target != SortTarget::Key || req.count_only {
            return Ok(None);
        }
        let (plan, current) = self.plan_range(req)?;
        let at = if req.revision <= 0 {
            current
        } else {
            req.revision
        };
        let mut revs = plan.revs;
        if req.sort_order == SortOrder::Descend {
            revs.reverse();
        }
        Ok(Some(RangeCursor {
            inner: Arc::clone(&self.inner),
            req: req.clone(),
            revs,
            at,
            header_revision: current,
            count: plan.count,
            pos: 0,
            given: 0,
            more: None,
        }))
    }
}

impl<B: Backend> RangeCursor<B> {
    /// The store's revision when the range was planned (the answer's
    /// header revision).
    pub fn header_revision(&self) -> i64 {
        self.header_revision
    }

    /// Keys in the range at the read revision, ignoring limit and filters.
    pub fn count(&self) -> i64 {
        self.count
    }

    /// Whether the limit cut keys off; known once a pass has ended.
    pub fn more(&self) -> Option<bool> {
        self.more
    }

    /// Starts the answer over from its first key.
    pub fn rewind(&mut self) {
        self.pos = 0;
        self.given = 0;
    }

    /// The answer's next keys, at most about `max` of them; empty once
    /// the pass has ended.
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<KeyValue>> {
        let mut out = Vec::new();
        if self.req.count_only || self.pos >= self.revs.len() && self.ended() {
            return Ok(out);
        }
        let _reading = self.inner.reading()?;
        let compacted = self.inner.read_state()?.compacted;
        if compacted > self.at {
            return Err(Error::Compacted {
                requested: self.at,
                compacted,
            });
        }
        while out.len() < max.max(1) {
            let Some(rev) = self.revs.get(self.pos).copied() else {
                self.more = Some(false);
                break;
            };
            let mut kv = self.inner.guard(txn::fetch_put(&self.inner.backend, rev))?;
            self.pos += 1;
            if !range::passes_filters(&self.req, &kv) {
                continue;
            }
            if self.req.limit > 0 && self.given >= self.req.limit {
                // One more key passes: the limit cut it off.
                self.more = Some(true);
                self.pos = self.revs.len();
                break;
            }
            self.given += 1;
            if self.req.keys_only {
                kv.value = bytes::Bytes::new();
            }
            out.push(kv);
        }
        Ok(out)
    }

    fn ended(&self) -> bool {
        self.more.is_some()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;
    use crate::request::{DeleteRangeRequest, PutRequest};

    fn store_with(ops: &[(u8, Option<u8>)]) -> Store {
        let store = Store::open_temporary().unwrap();
        for (i, (k, v)) in ops.iter().enumerate() {
            let key = bytes::Bytes::from(vec![b'k', b'a' + k % 12]);
            let pos = format!("{i}");
            match v {
                Some(v) => {
                    let req = PutRequest {
                        key,
                        value: vec![*v; 1 + *v as usize % 7].into(),
                        ..Default::default()
                    };
                    store.put(&req, pos.as_bytes()).unwrap();
                }
                None => {
                    let req = DeleteRangeRequest {
                        key,
                        ..Default::default()
                    };
                    store.delete_range(&req, pos.as_bytes()).unwrap();
                }
            }
        }
        store
    }

    fn drain(c: &mut RangeCursor<crate::Engine>, batch: usize) -> Vec<KeyValue> {
        let mut all = Vec::new();
        loop {
            let b = c.next_batch(batch).unwrap();
            if b.is_empty() {
                return all;
            }
            all.extend(b);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Two passes over a cursor give what `range` answers, whatever
        /// the batch size.
        #[test]
        fn cursor_answers_as_range(
            ops in proptest::collection::vec((0u8..16, proptest::option::weighted(0.8, any::<u8>())), 1..40),
            start in 0u8..12,
            span in 0u8..14,
            limit in 0i64..6,
            back in 0i64..6,
            order in 0u8..3,
            keys_only in any::<bool>(),
            min_mod in 0i64..20,
            max_create in 0i64..30,
            batch in 1usize..5,
        ) {
            let store = store_with(&ops);
            let key = vec![b'k', b'a' + start];
            let range_end = match span {
                0 => Vec::new(),
                1 => vec![0],
                n => vec![b'k', b'a' + start + n - 1],
            };
            let req = RangeRequest {
                key: key.into(),
                range_end: range_end.into(),
                limit,
                revision: (store.current_revision() - back).max(0),
                sort_order: [SortOrder::None, SortOrder::Ascend, SortOrder::Descend][order as usize],
                keys_only,
                min_mod_revision: min_mod,
                max_create_revision: max_create,
                ..Default::default()
            };
            let whole = store.range(&req).unwrap();
            let mut c = store.range_cursor(&req).unwrap().unwrap();
            for _ in 0..2 {
                prop_assert_eq!(&drain(&mut c, batch), &whole.kvs);
                prop_assert_eq!(c.more(), Some(whole.more));
                prop_assert_eq!(c.count(), whole.count);
                prop_assert_eq!(c.header_revision(), whole.header_revision);
                c.rewind();
            }
        }
    }

    #[test]
    fn other_sort_targets_and_counts_get_no_cursor() {
        let store = store_with(&[(1, Some(1))]);
        let by_value = RangeRequest {
            key: "k".into(),
            range_end: "l".into(),
            sort_target: SortTarget::Value,
            ..Default::default()
        };
        assert!(store.range_cursor(&by_value).unwrap().is_none());
        let count = RangeRequest {
            key: "k".into(),
            range_end: "l".into(),
            count_only: true,
            ..Default::default()
        };
        assert!(store.range_cursor(&count).unwrap().is_none());
    }

    /// A compaction above the read revision between batches fails the
    /// next batch as a read at a compacted revision; one at or below it
    /// changes nothing.
    #[test]
    fn compaction_above_the_read_revision_ends_the_cursor() {
        let ops: Vec<_> = (0..12).map(|i| (i, Some(i))).collect();
        let store = store_with(&ops);
        let req = RangeRequest {
            key: "k".into(),
            range_end: "l".into(),
            ..Default::default()
        };
        let at = store.current_revision();
        let mut c = store.range_cursor(&req).unwrap().unwrap();
        let first = c.next_batch(3).unwrap();
        assert_eq!(first.len(), 3);
        // Overwrite everything, then compact at the read revision: the
        // records the cursor needs are still reachable there.
        for (i, (k, _)) in ops.iter().enumerate() {
            let key = bytes::Bytes::from(vec![b'k', b'a' + k % 12]);
            let req = PutRequest {
                key,
                value: "new".into(),
                ..Default::default()
            };
            store.put(&req, format!("x{i}").as_bytes()).unwrap();
        }
        store.compact(at, b"c1").unwrap();
        store.wait_for_compaction().unwrap();
        let second = c.next_batch(3).unwrap();
        assert_eq!(second.len(), 3);
        assert!(second.iter().all(|kv| kv.mod_revision <= at));
        store.compact(at + 2, b"c2").unwrap();
        store.wait_for_compaction().unwrap();
        match c.next_batch(3) {
            Err(Error::Compacted {
                requested,
                compacted,
            }) => assert_eq!((requested, compacted), (at, at + 2)),
            other => panic!("expected a compacted error, got {other:?}"),
        }
    }
}
