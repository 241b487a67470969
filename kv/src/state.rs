//! The store's shared core: the in-memory [`State`] under the index lock
//! (key index, revisions, lease table, pending revokes), the [`Inner`]
//! every thread of a store shares (backend, locks, the background
//! workers' status), the tuning [`Options`], and [`load`], which rebuilds
//! the state from the backend on open.
//!
//! Everything above this module (writes, compaction, the revoker, the
//! [`crate::Store`] itself) works on these; nothing here calls up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::backend::{Backend, WriteBatch};
use crate::error::{Error, Result};
use crate::key_index::{compact_index, KeyIndex};
use crate::lease;
use crate::record::{self, Meta, Record};
use crate::request::Write;
use crate::revoke;

/// The compaction revision of a store never compacted (etcd's -1).
pub const NEVER_COMPACTED: i64 = -1;

/// Tuning knobs of a [`crate::Store`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Records physical compaction examines per step (etcd's
    /// `--experimental-compaction-batch-limit`, default 1000).
    pub compaction_batch: usize,
    /// Pause between compaction steps, so writes are not starved.
    pub compaction_pause: Duration,
    /// Keys of a revoked lease whose index entries the background revoker
    /// updates per step (see `kv/src/revoke.rs`); 0 = none: only a read or
    /// write that touches them brings them up to date.
    pub revoke_step: usize,
    /// Pause between revoker steps.
    pub revoke_pause: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            compaction_batch: 1000,
            compaction_pause: Duration::from_millis(1),
            revoke_step: 256,
            revoke_pause: Duration::from_millis(1),
        }
    }
}

/// Progress of physical compaction.
#[derive(Debug)]
pub(crate) struct CompactionStatus {
    /// Latest compaction revision asked for.
    pub(crate) target: i64,
    /// Latest compaction revision physically done.
    pub(crate) finished: i64,
    /// Set when the store is dropped.
    pub(crate) stop: bool,
}

/// What the revoker thread is told.
#[derive(Debug, Default)]
pub(crate) struct RevokerStatus {
    /// A revoke was added since the thread last looked.
    pub(crate) work: bool,
    /// Set when the store is dropped.
    pub(crate) stop: bool,
}

/// What the index lock guards.
#[derive(Debug)]
pub(crate) struct State {
    /// key → its revisions.
    pub(crate) index: BTreeMap<Bytes, KeyIndex>,
    /// The store revision: 1 when empty, +1 per write that changed something.
    pub(crate) current: i64,
    /// Reads below this revision fail with [`Error::Compacted`]; a
    /// compaction must be above it. [`NEVER_COMPACTED`] until the first.
    pub(crate) compacted: i64,
    /// The applied position of the latest write.
    pub(crate) applied: Option<Bytes>,
    /// The lease table, with each lease's keys.
    pub(crate) leases: lease::Leases,
    /// The same attachments by key (see [`lease::track`]).
    pub(crate) key_lease: lease::KeyLeases,
    /// Revokes whose tombstones are not all in `index` yet.
    pub(crate) revokes: revoke::Pending,
}

pub(crate) struct Inner<B> {
    pub(crate) backend: B,
    /// Lock order: `read_barrier`, then `state`, then `compaction`.
    pub(crate) state: RwLock<State>,
    /// Held shared by reads while they fetch records outside `state`; taken
    /// exclusively by physical compaction before it deletes anything.
    pub(crate) read_barrier: RwLock<()>,
    /// Set by the first backend failure; every later call fails.
    pub(crate) poisoned: AtomicBool,
    pub(crate) compaction: Mutex<CompactionStatus>,
    pub(crate) compaction_cv: Condvar,
    /// Bumped when the contents are replaced wholesale (snapshot import):
    /// a compaction step planned before must not delete anything.
    pub(crate) epoch: std::sync::atomic::AtomicU64,
    pub(crate) options: Options,
    pub(crate) revoker: Mutex<RevokerStatus>,
    pub(crate) revoker_cv: Condvar,
}

impl<B: Backend> Inner<B> {
    pub(crate) fn check(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// Poisons the store on a backend failure.
    pub(crate) fn guard<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(Error::Backend(_)) = &r {
            self.poisoned.store(true, Ordering::Release);
        }
        r
    }

    /// Holds off physical compaction while a read fetches records (see
    /// `read_barrier`); fails once the store is poisoned.
    pub(crate) fn reading(&self) -> Result<RwLockReadGuard<'_, ()>> {
        self.check()?;
        self.read_barrier.read().map_err(|_| Error::Poisoned)
    }

    pub(crate) fn read_state(&self) -> Result<RwLockReadGuard<'_, State>> {
        self.state.read().map_err(|_| Error::Poisoned)
    }

    pub(crate) fn write_state(&self) -> Result<RwLockWriteGuard<'_, State>> {
        self.state.write().map_err(|_| Error::Poisoned)
    }
}

impl State {
    /// Puts up to `max` pending revoke tombstones into the index (oldest
    /// revoke first). Returns true while some are left.
    pub(crate) fn settle(&mut self, max: usize) -> bool {
        revoke::settle(&mut self.revokes, &mut self.index, &mut self.key_lease, max)
    }

    /// Brings the index up to date first if `w` touches a pending key.
    pub(crate) fn settle_for(&mut self, w: &Write<'_>) {
        if revoke::touches_write(&self.revokes, w) {
            self.settle(usize::MAX);
        }
    }

    /// Revoked keys whose tombstones are not in the index yet.
    pub(crate) fn pending_keys(&self) -> usize {
        revoke::pending_keys(&self.revokes)
    }
}

/// Reads the store's state from the backend: metadata, and the key index
/// rebuilt from every record. Returns the state and the scheduled and
/// finished compaction revisions.
pub(crate) fn load<B: Backend>(backend: &B) -> Result<(State, i64, i64)> {
    let meta_i64 = |m: Meta, name: &str| -> Result<Option<i64>> {
        match backend.get(m.key()).map_err(Error::Backend)? {
            Some(v) => Ok(Some(record::decode_i64(name, &v)?)),
            None => Ok(None),
        }
    };
    let mut current = meta_i64(Meta::Current, "current")?.unwrap_or(1);
    // -1: never compacted (etcd's convention: a first `Compact(0)` is
    // accepted, and HashKV reports -1).
    let scheduled =
        meta_i64(Meta::CompactScheduled, "compact_scheduled")?.unwrap_or(NEVER_COMPACTED);
    let finished = meta_i64(Meta::CompactFinished, "compact_finished")?.unwrap_or(NEVER_COMPACTED);
    let applied = backend.get(Meta::Applied.key()).map_err(Error::Backend)?;

    let mut index: BTreeMap<Bytes, KeyIndex> = BTreeMap::new();
    // key → lease of its latest put, for keys whose latest put had one.
    let mut key_lease: BTreeMap<Bytes, i64> = BTreeMap::new();
    let end = [record::RECORD_PREFIX + 1];
    for item in backend.scan(&record::records_start(), &end) {
        let (k, v) = item.map_err(Error::Backend)?;
        let rev = record::revision_of(&k)?;
        current = current.max(rev.main);
        Record::decode_each(rev, &v, |rev, rec| {
            match rec {
                Record::Put(kv) => {
                    if kv.lease != 0 {
                        key_lease.insert(kv.key.clone(), kv.lease);
                    } else {
                        key_lease.remove(&kv.key);
                    }
                    // A key new to the index gets a copy of its own: a
                    // slice would keep the whole record (value too) alive.
                    let ki = match index.get_mut(&kv.key) {
                        Some(ki) => ki,
                        None => index.entry(Bytes::copy_from_slice(&kv.key)).or_default(),
                    };
                    if ki.is_live() {
                        ki.put(rev);
                    } else {
                        ki.restore(crate::Revision::new(kv.create_revision, 0), rev, kv.version);
                    }
                }
                Record::Tombstone(key) => {
                    key_lease.remove(&key);
                    // A tombstone whose puts are gone is one kept at the
                    // compaction revision, or garbage left by an unfinished
                    // compaction (the compactor removes that): the index
                    // has no live key to close either way.
                    if let Some(ki) = index.get_mut(&key) {
                        ki.tombstone(rev);
                    }
                }
            }
            Ok(())
        })?;
    }
    if scheduled > 0 {
        compact_index(&mut index, scheduled);
    }
    let mut leases = lease::load(backend)?;
    let key_lease = lease::attach(&mut leases, key_lease, |k| {
        index
            .get_key_value(k)
            .filter(|(_, ki)| ki.is_live())
            .and_then(|(k, ki)| Some((k.clone(), ki.last_revision()?)))
    });
    let state = State {
        index,
        current: current.max(scheduled),
        compacted: scheduled,
        applied,
        leases,
        key_lease,
        revokes: revoke::Pending::new(),
    };
    Ok((state, scheduled, finished))
}

/// Deletes every key of the backend but the import marker.
pub(crate) fn wipe<B: Backend>(backend: &B) -> Result<()> {
    loop {
        let mut batch = WriteBatch::new();
        for item in backend.scan(&[], &[0xff; 2]).take(1024) {
            let (k, _) = item.map_err(Error::Backend)?;
            if k.as_ref() != Meta::Importing.key() {
                batch.delete(k);
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        backend.write(batch).map_err(Error::Backend)?;
    }
}
