//! Range reads: which revisions a range selects, and how the fetched values
//! are filtered, sorted and cut, with etcd's exact rules.
//!
//! A range runs in two steps so that the store's index lock is held only for
//! the first: [`plan`] walks the key index and picks the record revisions;
//! the caller fetches those records; [`finish`] applies filters, sort order,
//! limit and `keys_only`.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::key_index::{KeyAt, KeyIndex};
use crate::request::{KeyValue, RangeRequest, RangeResponse, SortOrder, SortTarget};
use crate::revision::Revision;

/// The keys `[key, range_end)` selects: a single key when `range_end` is
/// empty, every key ≥ `key` when it is `"\0"`.
pub fn key_bounds<'a>(key: &'a [u8], range_end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    if range_end.is_empty() {
        (Bound::Included(key), Bound::Included(key))
    } else if range_end == [0] {
        (Bound::Included(key), Bound::Unbounded)
    } else {
        (Bound::Included(key), Bound::Excluded(range_end))
    }
}

/// Calls `f` for every key in the range that exists at revision `at`, in key
/// order, until `f` returns false.
pub fn visit(
    index: &BTreeMap<Bytes, KeyIndex>,
    key: &[u8],
    range_end: &[u8],
    at: i64,
    mut f: impl FnMut(&Bytes, KeyAt) -> bool,
) {
    let (lo, hi) = key_bounds(key, range_end);
    // An inverted range selects nothing (BTreeMap::range would panic).
    let empty = match (lo, hi) {
        (Bound::Included(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    };
    if empty {
        return;
    }
    for (k, ki) in index.range::<[u8], _>((lo, hi)) {
        if let Some(at) = ki.get(at) {
            if !f(k, at) {
                return;
            }
        }
    }
}

/// What a range reads, decided under the index lock.
#[derive(Debug)]
pub struct Plan {
    /// Revisions of the records to fetch, in key order.
    pub revs: Vec<Revision>,
    /// Keys in the range at the read revision.
    pub count: i64,
}

/// Checks the read revision and picks the records of `req`, reading a store
/// whose revision is `current` and compacted revision `compacted`.
pub fn plan(
    index: &BTreeMap<Bytes, KeyIndex>,
    current: i64,
    compacted: i64,
    req: &RangeRequest,
) -> Result<Plan> {
    let at = read_revision(current, compacted, req.revision)?;
    let mut revs = Vec::new();
    let mut count = 0i64;
    if req.count_only {
        visit(index, &req.key, &req.range_end, at, |_, _| {
            count += 1;
            true
        });
        return Ok(Plan { revs, count });
    }
    // etcd fetches one extra key to learn `more`, and everything when
    // results are sorted or filtered (those apply before the limit).
    let fetch_limit = if req.sort_order != SortOrder::None
        || req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0
    {
        0
    } else if req.limit > 0 {
        req.limit.saturating_add(1)
    } else {
        0
    };
    visit(index, &req.key, &req.range_end, at, |_, k| {
        count += 1;
        if fetch_limit == 0 || (revs.len() as i64) < fetch_limit {
            revs.push(k.modified);
        }
        true
    });
    Ok(Plan { revs, count })
}

/// The revision a read at `requested` sees, or etcd's error for it.
pub fn read_revision(current: i64, compacted: i64, requested: i64) -> Result<i64> {
    if requested > current {
        return Err(Error::FutureRevision { requested, current });
    }
    let at = if requested <= 0 { current } else { requested };
    if at < compacted {
        return Err(Error::Compacted {
            requested: at,
            compacted,
        });
    }
    Ok(at)
}

/// Builds the response from the fetched records (in plan order).
pub fn finish(
    req: &RangeRequest,
    plan: &Plan,
    mut kvs: Vec<KeyValue>,
    header_revision: i64,
) -> RangeResponse {
    kvs.retain(|kv| passes_filters(req, kv));
    let mut order = req.sort_order;
    if req.sort_target != SortTarget::Key && order == SortOrder::None {
        // Records come in key order; any other target sorts ascending.
        order = SortOrder::Ascend;
    }
    if order != SortOrder::None {
        // Stable sort: keys with equal targets stay in key order.
        let desc = order == SortOrder::Descend;
        match req.sort_target {
            SortTarget::Key => {
                if desc {
                    kvs.reverse();
                }
            }
            SortTarget::Version => sort_by(&mut kvs, desc, |kv| kv.version),
            SortTarget::Create => sort_by(&mut kvs, desc, |kv| kv.create_revision),
            SortTarget::Mod => sort_by(&mut kvs, desc, |kv| kv.mod_revision),
            SortTarget::Value => {
                if desc {
                    kvs.sort_by(|a, b| b.value.cmp(&a.value));
                } else {
                    kvs.sort_by(|a, b| a.value.cmp(&b.value));
                }
            }
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() as i64 > req.limit {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    RangeResponse {
        header_revision,
        kvs,
        more,
        count: plan.count,
    }
}

/// Whether `kv` passes `req`'s mod and create revision filters (0: no
/// bound).
pub fn passes_filters(req: &RangeRequest, kv: &KeyValue) -> bool {
    (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
        && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
        && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
}

fn sort_by(kvs: &mut [KeyValue], desc: bool, f: impl Fn(&KeyValue) -> i64) {
    if desc {
        kvs.sort_by_key(|kv| std::cmp::Reverse(f(kv)));
    } else {
        kvs.sort_by_key(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_forms() {
        use Bound::*;
        assert_eq!(
            key_bounds(b"a", b""),
            (Included(&b"a"[..]), Included(&b"a"[..]))
        );
        assert_eq!(key_bounds(b"a", b"\0"), (Included(&b"a"[..]), Unbounded));
        assert_eq!(
            key_bounds(b"a", b"b"),
            (Included(&b"a"[..]), Excluded(&b"b"[..]))
        );
    }

    #[test]
    fn inverted_range_is_empty() {
        let mut index = BTreeMap::new();
        let mut ki = KeyIndex::new();
        ki.put(Revision::new(2, 0));
        index.insert(Bytes::from_static(b"m"), ki);
        let mut n = 0;
        visit(&index, b"z", b"a", 2, |_, _| {
            n += 1;
            true
        });
        assert_eq!(n, 0);
    }

    #[test]
    fn read_revision_rules() {
        assert_eq!(read_revision(10, 5, 0).unwrap(), 10);
        assert_eq!(read_revision(10, 5, -3).unwrap(), 10);
        assert_eq!(read_revision(10, 5, 5).unwrap(), 5);
        assert!(matches!(
            read_revision(10, 5, 4),
            Err(Error::Compacted { .. })
        ));
        assert!(matches!(
            read_revision(10, 5, 11),
            Err(Error::FutureRevision { .. })
        ));
    }
}
