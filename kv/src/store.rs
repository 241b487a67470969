//! The MVCC store: opening (index rebuild), reads, writes and flush.
//!
//! # Layout and durability
//!
//! The backend holds history records and metadata (byte layout in
//! [`crate::record`]). Each write — a put, delete, txn or compaction — is
//! one atomic backend batch holding its records, the new store revision and
//! the caller's *applied position* (for Cairn, the Raft log id of the entry
//! being applied). Batches are not fsynced: [`Store::flush`] makes
//! everything written so far durable.
//!
//! # Crash behaviour
//!
//! A crash loses a suffix of the unflushed batches, never part of one (the
//! backend's contract, see [`crate::Backend`]). After reopening,
//! [`Store::applied`] names the last write that survived, so the owner can
//! apply again whatever came after it. A crash during physical compaction
//! leaves some garbage records; opening finishes the job.
//!
//! # Concurrency
//!
//! Reads run concurrently with each other and with writes: a read takes the
//! index lock only to pick record revisions, then fetches the records
//! without it. Records are immutable once written, and the only thing that
//! removes them is physical compaction, which deletes just records no
//! reader at a legal revision can reach, after waiting out reads that began
//! before the compaction (the `read_barrier`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;

use bytes::Bytes;

use crate::backend::{Backend, BackendKind, Engine, WriteBatch};
use crate::compact;
use crate::error::{Error, Result};
use crate::hash;
use crate::key_index::compact_index;
use crate::range;
use crate::record::{self, Meta};
use crate::request::{
    Applied, DeleteRangeRequest, DeleteRangeResponse, HashKv, KeyValue, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse, Write, Written,
};
use crate::revision::Revision;
use crate::revoke;
use crate::revoker;
use crate::state::{load, wipe, CompactionStatus, Inner, Options, RevokerStatus, NEVER_COMPACTED};
use crate::txn::{self, WriteTxn};

/// An MVCC key-value store with etcd's revision model.
///
/// ```
/// use cairn_kv::{PutRequest, RangeRequest, Store};
///
/// let store = Store::open_temporary()?;
/// let put = store.put(&PutRequest { key: "foo".into(), value: "bar".into(), ..Default::default() }, b"pos-1")?;
/// assert_eq!(put.revision, 2); // an empty store is at revision 1
/// let got = store.range(&RangeRequest { key: "foo".into(), ..Default::default() })?;
/// assert_eq!(got.kvs[0].value, "bar");
/// assert_eq!(store.applied().as_deref(), Some(&b"pos-1"[..]));
/// # Ok::<(), cairn_kv::Error>(())
/// ```
pub struct Store<B: Backend = Engine> {
    pub(crate) inner: Arc<Inner<B>>,
    compactor: Option<JoinHandle<()>>,
    revoker: Option<JoinHandle<()>>,
}

impl Store<Engine> {
    /// Opens (or creates) a store in directory `path`, over the default
    /// engine (fjall).
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_path_with(path, BackendKind::default())
    }

    /// Opens (or creates) a store in directory `path` over a `kind`
    /// database; a directory holding the other engine's is refused.
    pub fn open_path_with(path: impl AsRef<Path>, kind: BackendKind) -> Result<Self> {
        Self::open(Engine::open(path, kind).map_err(Error::Backend)?)
    }

    /// A store in a temporary database, gone on drop.
    pub fn open_temporary() -> Result<Self> {
        Self::open_temporary_with(BackendKind::default())
    }

    /// A store in a temporary `kind` database, gone on drop.
    pub fn open_temporary_with(kind: BackendKind) -> Result<Self> {
        Self::open(Engine::temporary(kind).map_err(Error::Backend)?)
    }
}

impl<B: Backend> Store<B> {
    /// Opens a store over `backend`, rebuilding the key index from its
    /// records, with default [`Options`].
    pub fn open(backend: B) -> Result<Self> {
        Self::open_with(backend, Options::default())
    }

    /// Opens a store over `backend` with `options`.
    pub fn open_with(backend: B, options: Options) -> Result<Self> {
        if backend
            .get(Meta::Importing.key())
            .map_err(Error::Backend)?
            .is_some()
        {
            // A snapshot import was cut short: start empty, the owner
            // installs the snapshot again.
            wipe(&backend)?;
            backend.flush().map_err(Error::Backend)?;
        }
        let (state, scheduled, finished) = load(&backend)?;
        let inner = Arc::new(Inner {
            backend,
            state: RwLock::new(state),
            read_barrier: RwLock::new(()),
            poisoned: AtomicBool::new(false),
            compaction: Mutex::new(CompactionStatus {
                target: scheduled,
                finished,
                stop: false,
            }),
            compaction_cv: Condvar::new(),
            epoch: std::sync::atomic::AtomicU64::new(0),
            options,
            revoker: Mutex::new(RevokerStatus::default()),
            revoker_cv: Condvar::new(),
        });
        let worker = Arc::clone(&inner);
        let compactor = std::thread::Builder::new()
            .name("cairn-kv-compactor".into())
            .spawn(move || compact::run(worker))
            .map_err(|e| Error::Backend(Box::new(e)))?;
        let worker = Arc::clone(&inner);
        let revoker = std::thread::Builder::new()
            .name("cairn-kv-revoker".into())
            .spawn(move || revoker::run(worker));
        let revoker = match revoker {
            Ok(h) => h,
            Err(e) => {
                compact::stop(&inner);
                let _ = compactor.join();
                return Err(Error::Backend(Box::new(e)));
            }
        };
        Ok(Self {
            inner,
            compactor: Some(compactor),
            revoker: Some(revoker),
        })
    }

    pub(crate) fn inner(&self) -> &Inner<B> {
        &self.inner
    }

    /// The store revision (1 for an empty store).
    pub fn current_revision(&self) -> i64 {
        self.inner.read_state().map(|s| s.current).unwrap_or(0)
    }

    /// The latest compaction revision ([`NEVER_COMPACTED`], -1, if none).
    pub fn compacted_revision(&self) -> i64 {
        self.inner
            .read_state()
            .map(|s| s.compacted)
            .unwrap_or(NEVER_COMPACTED)
    }

    /// The applied position stored with the latest write, if any.
    pub fn applied(&self) -> Option<Bytes> {
        self.inner.read_state().ok().and_then(|s| s.applied.clone())
    }

    /// Keys of revoked leases not yet updated in the key index (see
    /// [`Options::revoke_step`]); they read as deleted all the same.
    pub fn pending_revoked_keys(&self) -> usize {
        self.inner
            .read_state()
            .map(|s| s.pending_keys())
            .unwrap_or(0)
    }

    /// Number of keys live now.
    pub fn key_count(&self) -> usize {
        self.inner
            .read_state()
            .map(|s| {
                let live = s.index.values().filter(|ki| ki.is_live()).count();
                live.saturating_sub(s.pending_keys())
            })
            .unwrap_or(0)
    }

    /// Reads keys with every option of etcd's Range.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let _reading = self.inner.reading()?;
        let (plan, current) = self.plan_range(req)?;
        let kvs = plan
            .revs
            .iter()
            .map(|r| txn::fetch_put(&self.inner.backend, *r))
            .collect::<Result<Vec<_>>>();
        let kvs = self.inner.guard(kvs)?;
        Ok(range::finish(req, &plan, kvs, current))
    }

    /// Checks `req` and picks its records (with the store's revision),
    /// after settling the pending revokes it touches.
    pub(crate) fn plan_range(&self, req: &RangeRequest) -> Result<(range::Plan, i64)> {
        self.inner.check()?;
        txn::validate_range(req)?;
        let mut st = self.inner.read_state()?;
        // Looped: a revoke may land between the write lock and the read
        // lock taken again.
        while revoke::touches(&st.revokes, &req.key, &req.range_end) {
            drop(st);
            self.inner.write_state()?.settle(usize::MAX);
            st = self.inner.read_state()?;
        }
        Ok((
            range::plan(&st.index, st.current, st.compacted, req)?,
            st.current,
        ))
    }

    /// Runs one write transaction and commits it with `applied`.
    /// `w` is the request `f` runs, if any: pending revokes it touches
    /// are settled first.
    fn write<R>(
        &self,
        applied: &[u8],
        w: Option<Write<'_>>,
        f: impl FnOnce(&mut WriteTxn<'_, B>) -> Result<R>,
    ) -> Result<Applied<R>> {
        self.inner.check()?;
        let mut st = self.inner.write_state()?;
        if let Some(w) = &w {
            st.settle_for(w);
        }
        let mut tx = WriteTxn::new(&self.inner.backend, &mut st);
        let response = match f(&mut tx) {
            Ok(r) => r,
            Err(e) => {
                tx.rollback();
                return self.inner.guard(Err(e));
            }
        };
        let (revision, events) = self.inner.guard(tx.commit(applied))?;
        Ok(Applied {
            response,
            events,
            revision,
        })
    }

    /// Puts a key (etcd's Put). `applied` is stored with the write.
    pub fn put(&self, req: &PutRequest, applied: &[u8]) -> Result<Applied<PutResponse>> {
        txn::validate_put(req)?;
        self.write(applied, Some(Write::Put(req)), |tx| tx.put(req))
    }

    /// Deletes a key or range (etcd's DeleteRange).
    pub fn delete_range(
        &self,
        req: &DeleteRangeRequest,
        applied: &[u8],
    ) -> Result<Applied<DeleteRangeResponse>> {
        txn::validate_delete(req)?;
        self.write(applied, Some(Write::DeleteRange(req)), |tx| {
            tx.delete_range(req)
        })
    }

    /// Runs a transaction (etcd's Txn). Validates shape and duplicate keys
    /// without an op limit; the API layer applies `--max-txn-ops` with
    /// [`crate::validate_txn`] before proposing.
    pub fn txn(&self, req: &TxnRequest, applied: &[u8]) -> Result<Applied<TxnResponse>> {
        txn::validate_txn(req, usize::MAX)?;
        self.write(applied, Some(Write::Txn(req)), |tx| tx.txn(req))
    }

    /// Applies several writes as ONE backend batch: each gets its own
    /// revision and response exactly as if applied alone and in order
    /// (later writes see earlier ones), but the records, the current
    /// revision and `applied` (the position of the last write) go to the
    /// backend in one atomic batch — a crash keeps all or none of them.
    ///
    /// A write that fails deterministically (validation, a missing lease,
    /// `ignore_value` on a missing key, …) gets its error in its slot and
    /// changes nothing. A backend or corruption error fails the whole call
    /// and poisons the store.
    pub fn write_batch(
        &self,
        writes: &[Write<'_>],
        applied: &[u8],
    ) -> Result<Vec<Result<Applied<Written>>>> {
        self.inner.check()?;
        let mut st = self.inner.write_state()?;
        let begin = st.current;
        let mut batch = WriteBatch::new();
        let mut staged: HashMap<Revision, KeyValue> = HashMap::new();
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            let valid = match w {
                Write::Put(r) => txn::validate_put(r),
                Write::DeleteRange(r) => txn::validate_delete(r),
                Write::Txn(r) => txn::validate_txn(r, usize::MAX),
            };
            if let Err(e) = valid {
                out.push(Err(e));
                continue;
            }
            st.settle_for(w);
            let mut tx = WriteTxn::new(&self.inner.backend, &mut st).with_staged(&staged);
            let r = match w {
                Write::Put(r) => tx.put(r).map(Written::Put),
                Write::DeleteRange(r) => tx.delete_range(r).map(Written::DeleteRange),
                Write::Txn(r) => tx.txn(r).map(Written::Txn),
            };
            match r {
                Ok(response) => {
                    let s = tx.stage(&mut batch);
                    staged.extend(s.puts);
                    out.push(Ok(Applied {
                        response,
                        events: s.events,
                        revision: s.revision,
                    }));
                }
                Err(e @ (Error::Backend(_) | Error::Corrupt { .. })) => {
                    tx.rollback();
                    // Earlier writes of the batch are in memory only.
                    self.inner.poisoned.store(true, Ordering::Release);
                    return Err(e);
                }
                Err(e) => {
                    tx.rollback();
                    out.push(Err(e));
                }
            }
        }
        if st.current != begin {
            batch.put(Meta::Current.key(), record::encode_i64(st.current));
        }
        let applied = Bytes::copy_from_slice(applied);
        batch.put(Meta::Applied.key(), applied.clone());
        if let Err(e) = self.inner.backend.write(batch) {
            self.inner.poisoned.store(true, Ordering::Release);
            return Err(Error::Backend(e));
        }
        st.applied = Some(applied);
        Ok(out)
    }

    /// Stores `applied` without changing any key (for commands that write
    /// nothing, so a restart does not replay them).
    pub fn record_applied(&self, applied: &[u8]) -> Result<()> {
        self.write(applied, None, |_| Ok(())).map(|_| ())
    }

    /// Compacts history at `rev` (etcd's Compact): reads below `rev` fail
    /// from now on, and a background worker removes the records no read can
    /// reach, in bounded steps. Returns the store revision.
    pub fn compact(&self, rev: i64, applied: &[u8]) -> Result<i64> {
        self.inner.check()?;
        let current = {
            let mut st = self.inner.write_state()?;
            // Compacting the index needs every tombstone in it.
            st.settle(usize::MAX);
            if rev <= st.compacted {
                return Err(Error::Compacted {
                    requested: rev,
                    compacted: st.compacted,
                });
            }
            if rev > st.current {
                return Err(Error::FutureRevision {
                    requested: rev,
                    current: st.current,
                });
            }
            let applied = Bytes::copy_from_slice(applied);
            let mut batch = WriteBatch::new();
            batch.put(Meta::CompactScheduled.key(), record::encode_i64(rev));
            batch.put(Meta::Applied.key(), applied.clone());
            self.inner
                .guard(self.inner.backend.write(batch).map_err(Error::Backend))?;
            compact_index(&mut st.index, rev);
            st.compacted = rev;
            st.applied = Some(applied);
            st.current
        };
        compact::schedule(&self.inner, rev);
        Ok(current)
    }

    /// Blocks until physical compaction has caught up with the latest
    /// [`Store::compact`] (etcd's `physical: true`).
    pub fn wait_for_compaction(&self) -> Result<()> {
        compact::wait(&self.inner)
    }

    /// CRC32 over every record in the backend (etcd's Hash: depends on how
    /// far physical compaction got).
    pub fn hash(&self) -> Result<u32> {
        self.inner.check()?;
        let _st = self.inner.read_state()?;
        self.inner.guard(hash::hash_all(&self.inner.backend))
    }

    /// CRC32 over the records a read at `rev` (0 = current) may reach, plus
    /// the compaction-kept ones below it: equal on members with equal
    /// history, whatever their physical compaction progress.
    pub fn hash_kv(&self, rev: i64) -> Result<HashKv> {
        self.inner.check()?;
        let mut st = self.inner.read_state()?;
        while !st.revokes.is_empty() {
            drop(st);
            self.inner.write_state()?.settle(usize::MAX);
            st = self.inner.read_state()?;
        }
        let at = if rev == 0 { st.current } else { rev };
        range::read_revision(st.current, st.compacted, at)?;
        let hash = self
            .inner
            .guard(hash::hash_visible(&self.inner.backend, &st.index, at))?;
        Ok(HashKv {
            hash,
            compact_revision: st.compacted,
            revision: at,
        })
    }

    /// Makes every write so far durable. A failure poisons the store.
    pub fn flush(&self) -> Result<()> {
        self.inner.check()?;
        self.inner
            .guard(self.inner.backend.flush().map_err(Error::Backend))
    }

    /// Bytes of data the backend holds (see [`Backend::size_on_disk`]).
    pub fn size_on_disk(&self) -> Result<u64> {
        self.inner.backend.size_on_disk().map_err(Error::Backend)
    }

    /// Gives back to the file system the space of data removed by
    /// compaction (etcd's defragment), while reads and writes go on. A
    /// compaction under way finishes first, so its space is given back
    /// too.
    pub fn defragment(&self) -> Result<()> {
        self.inner.check()?;
        self.wait_for_compaction()?;
        self.inner.backend.defragment().map_err(Error::Backend)
    }
}

impl<B: Backend> Drop for Store<B> {
    fn drop(&mut self) {
        compact::stop(&self.inner);
        revoker::stop(&self.inner);
        if let Some(h) = self.compactor.take() {
            let _ = h.join();
        }
        if let Some(h) = self.revoker.take() {
            let _ = h.join();
        }
    }
}
