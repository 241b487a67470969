//! Consistency hashes over the store's records (etcd's Hash and HashKV).
//!
//! Both hash backend keys and values with CRC32 in backend order, so two
//! members that applied the same writes agree.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::key_index::KeyIndex;
use crate::record::{self, Record};

/// CRC32 of every record stored.
pub(crate) fn hash_all<B: Backend>(backend: &B) -> Result<u32> {
    let mut h = crc32fast::Hasher::new();
    let end = [record::RECORD_PREFIX + 1];
    for item in backend.scan(&record::records_start(), &end) {
        let (k, v) = item.map_err(Error::Backend)?;
        h.update(&k);
        h.update(&v);
    }
    Ok(h.finalize())
}

/// CRC32 of the records with `main <= at` that the index still holds.
pub(crate) fn hash_visible<B: Backend>(
    backend: &B,
    index: &BTreeMap<Bytes, KeyIndex>,
    at: i64,
) -> Result<u32> {
    let mut h = crc32fast::Hasher::new();
    for item in backend.scan(&record::records_start(), &record::records_end_after(at)) {
        let (k, v) = item.map_err(Error::Backend)?;
        let rev = record::revision_of(&k)?;
        let mut visible = false;
        Record::decode_each(rev, &v, |rev, rec| {
            visible |= index.get(rec.key()).is_some_and(|ki| ki.contains(rev));
            Ok(())
        })?;
        if visible {
            h.update(&k);
            h.update(&v);
        }
    }
    Ok(h.finalize())
}
