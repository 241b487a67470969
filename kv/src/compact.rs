//! Compaction: logical (index) and physical (backend records).
//!
//! `Store::compact(rev)` records the compaction revision in the backend and
//! compacts the key index at once, under the index lock: from then on no
//! read below `rev` is served and the index holds exactly the revisions a
//! legal read can reach. Physical removal runs on a background thread: it
//! walks the records with `main ≤ rev` in steps of `compaction_batch`,
//! deleting each record whose revision its key's index no longer holds —
//! but the tombstones at `rev` itself, which a watch starting at the
//! compacted revision must still see (etcd serves that start); the next
//! compaction removes them — and pauses between steps so writes are never
//! stalled for long. Each step's
//! delete waits for in-flight reads and exports (the store's read barrier),
//! so nothing a running read or snapshot export picked disappears under it. When done it
//! records `compact_finished`. A crash midway is harmless: opening compacts
//! the rebuilt index again and the worker resumes.

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::{Backend, WriteBatch};
use crate::error::{Error, Result};
use crate::record::{self, Meta, Record};
use crate::state::Inner;

pub(crate) fn schedule<B>(inner: &Inner<B>, rev: i64) {
    if let Ok(mut st) = inner.compaction.lock() {
        st.target = st.target.max(rev);
        inner.compaction_cv.notify_all();
    }
}

pub(crate) fn stop<B>(inner: &Inner<B>) {
    if let Ok(mut st) = inner.compaction.lock() {
        st.stop = true;
        inner.compaction_cv.notify_all();
    }
}

pub(crate) fn wait<B: Backend>(inner: &Inner<B>) -> Result<()> {
    let mut st = inner.compaction.lock().map_err(|_| Error::Poisoned)?;
    loop {
        inner.check()?;
        if st.finished >= st.target || st.stop {
            return Ok(());
        }
        st = inner
            .compaction_cv
            .wait_timeout(st, std::time::Duration::from_millis(50))
            .map_err(|_| Error::Poisoned)?
            .0;
    }
}

/// The background worker's loop.
pub(crate) fn run<B: Backend>(inner: Arc<Inner<B>>) {
    loop {
        let target = {
            let Ok(mut st) = inner.compaction.lock() else {
                return;
            };
            loop {
                if st.stop {
                    return;
                }
                if st.target > st.finished {
                    break st.target;
                }
                st = match inner.compaction_cv.wait(st) {
                    Ok(g) => g,
                    Err(_) => return,
                };
            }
        };
        match remove_garbage(&inner, target) {
            Ok(Pass::Superseded) => {}
            Ok(Pass::Done) => {
                let mut batch = WriteBatch::new();
                batch.put(Meta::CompactFinished.key(), record::encode_i64(target));
                if inner
                    .guard(inner.backend.write(batch).map_err(Error::Backend))
                    .is_err()
                {
                    return;
                }
                if let Ok(mut st) = inner.compaction.lock() {
                    st.finished = st.finished.max(target);
                    inner.compaction_cv.notify_all();
                }
            }
            Ok(Pass::Stopped) => return,
            Err(_) => {
                inner
                    .poisoned
                    .store(true, std::sync::atomic::Ordering::Release);
                inner.compaction_cv.notify_all();
                return;
            }
        }
    }
}

/// How a pass of physical compaction ended.
enum Pass {
    Done,
    /// The store is being dropped.
    Stopped,
    /// A snapshot import replaced the contents midway.
    Superseded,
}

/// Deletes unreachable records with `main <= target`, but the tombstones
/// at `target`.
fn remove_garbage<B: Backend>(inner: &Inner<B>, target: i64) -> Result<Pass> {
    let epoch = inner.epoch.load(std::sync::atomic::Ordering::Acquire);
    let end = record::records_end_after(target);
    let mut start = record::records_start().to_vec();
    loop {
        if inner.compaction.lock().map(|s| s.stop).unwrap_or(true) {
            return Ok(Pass::Stopped);
        }
        inner.check()?;
        let mut batch = WriteBatch::new();
        let mut seen = 0usize;
        let mut last: Option<Bytes> = None;
        {
            let st = inner.read_state()?;
            for item in inner
                .backend
                .scan(&start, &end)
                .take(inner.options.compaction_batch)
            {
                let (k, v) = item.map_err(Error::Backend)?;
                let rev = record::revision_of(&k)?;
                // A run of tombstones goes only once none of them is needed.
                // Tombstones at the compaction revision itself stay until a
                // later compaction: a watch may start there (etcd serves a
                // start at the compacted revision) and must see the deletes.
                let mut reachable = false;
                Record::decode_each(rev, &v, |rev, rec| {
                    reachable |= st.index.get(rec.key()).is_some_and(|ki| ki.contains(rev))
                        || (rev.main == target && matches!(rec, Record::Tombstone(_)));
                    Ok(())
                })?;
                if !reachable {
                    batch.delete(k.clone());
                }
                last = Some(k);
                seen += 1;
            }
        }
        if !batch.is_empty() {
            // Wait out reads (and exports) that picked their records before
            // this step; new ones cannot need what it deletes.
            let _quiet = inner.read_barrier.write().map_err(|_| Error::Poisoned)?;
            if inner.epoch.load(std::sync::atomic::Ordering::Acquire) != epoch {
                // The contents were replaced since this step was planned;
                // the import scheduled a fresh pass.
                return Ok(Pass::Superseded);
            }
            inner.backend.write(batch).map_err(Error::Backend)?;
        }
        let Some(last) = last else {
            return Ok(Pass::Done);
        };
        if seen < inner.options.compaction_batch {
            return Ok(Pass::Done);
        }
        start = last.to_vec();
        start.push(0);
        std::thread::sleep(inner.options.compaction_pause);
    }
}
