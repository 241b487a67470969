//! Group commit. Every change to the segment files is a command in one
//! queue, processed in submission order by whoever holds the `Writer`
//! (the *leader*), so appends, truncations and purges never interleave.
//!
//! The leader takes every command waiting, encodes them into one buffer
//! (written out whenever it passes `MAX_BATCH_BYTES`), writes it with one `write`,
//! makes it durable with one `fdatasync`, and only then runs each append's
//! completion. So N concurrent appenders share one fsync, and no completion
//! runs before its bytes are on disk.
//!
//! Who leads: a caller blocking on its own append (or a truncate/purge)
//! leads itself when the writer is free — no thread hand-off, so a lone
//! append costs one write+fdatasync. Appends with a callback or future never
//! block their caller: a background thread leads for them. After releasing
//! the writer a leader looks at the queue once more, so no command is left
//! behind between two leaders.
//!
//! A failed write or fdatasync poisons the log: the batch's completions and
//! every later call get an error; nothing is retried (the kernel may have
//! dropped the dirty pages, so a retried fsync could falsely succeed).

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, PoisonError};

use crate::error::{Error, Result};
use crate::io as lio;
use crate::record;
use crate::recovery::SegRange;
use crate::segment;
use crate::{Entry, LogId, Options, Shared, SharedState, Slot, PENDING};

/// Called once an append is durable (`Ok`) or failed.
pub type Completion = Box<dyn FnOnce(Result<()>) + Send + 'static>;

/// How an append or sync is told it finished.
pub(crate) enum Done {
    Callback(Completion),
    /// The state of an [`crate::AppendFuture`] (saves a boxed closure).
    Future(Arc<crate::FutState>),
}

impl Done {
    pub(crate) fn finish(self, r: Result<()>) {
        match self {
            Done::Callback(f) => f(r),
            Done::Future(s) => s.complete(r),
        }
    }
}

/// Encoded bytes gathered into one write at most.
const MAX_BATCH_BYTES: usize = 8 << 20;

/// The leader keeps its per-batch vectors for the next batch up to this
/// many elements; a burst beyond it does not stay allocated.
const KEEP_CAPACITY: usize = 4096;

pub(crate) enum Cmd {
    Append {
        entries: Vec<Entry>,
        done: Done,
    },
    Committed(u64),
    Sync {
        done: Done,
    },
    /// Remove entries after `after`; `None` removes every entry.
    Truncate {
        after: Option<u64>,
        done: Sender<Result<()>>,
    },
    Purge {
        upto: LogId,
        done: Sender<Result<()>>,
    },
    Vote {
        vote: bytes::Bytes,
        done: Sender<Result<()>>,
    },
}

/// Commands waiting for a leader.
#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) cmds: VecDeque<Cmd>,
    /// Set when the log is dropped: the background leader exits.
    pub(crate) closed: bool,
    /// Set when callback appends are waiting for the background leader.
    pub(crate) wake: bool,
    /// The background leader is parked on the condvar (only then is a
    /// notify, a syscall, needed).
    pub(crate) parked: bool,
}

/// Leads while there is work and nobody else leads.
pub(crate) fn drive(shared: &Shared) {
    loop {
        let Ok(mut w) = shared.writer.try_lock() else {
            // The current leader re-checks the queue after it lets go.
            return;
        };
        loop {
            // Everything queued, in one swap with the (empty) deque the
            // last batch left behind: the queue's lock is held for O(1).
            let mut cmds = std::mem::take(&mut w.spare);
            std::mem::swap(
                &mut shared
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .cmds,
                &mut cmds,
            );
            let empty = cmds.is_empty();
            if !empty {
                w.process(&mut cmds);
            }
            if cmds.capacity() <= KEEP_CAPACITY {
                w.spare = cmds;
            }
            if empty {
                break;
            }
        }
        drop(w);
        if shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .cmds
            .is_empty()
        {
            return;
        }
    }
}

/// The background leader for callback appends.
pub(crate) fn background(shared: Arc<Shared>) {
    loop {
        {
            let mut q = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            while !q.wake && !q.closed {
                q.parked = true;
                q = shared
                    .queue_cv
                    .wait(q)
                    .unwrap_or_else(PoisonError::into_inner);
                q.parked = false;
            }
            if q.closed && q.cmds.is_empty() {
                return;
            }
            q.wake = false;
        }
        drive(&shared);
    }
}

/// Zeros written ahead of the records in the active segment at a time.
/// Overwriting already-allocated, already-written blocks lets `fdatasync`
/// skip the file-size and extent updates an appending write needs.
const PREALLOCATE_BYTES: u64 = 1 << 20;
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// Owns the active segment; held by the leader.
pub(crate) struct Writer {
    pub(crate) dir: PathBuf,
    pub(crate) opts: Options,
    pub(crate) shared: Arc<SharedState>,
    pub(crate) segs: BTreeMap<u64, SegRange>,
    pub(crate) active_seq: u64,
    pub(crate) active: File,
    pub(crate) active_len: u64,
    /// The active segment is zero-filled (and its size synced) up to here:
    /// a sync of records written below it changes no file metadata.
    pub(crate) zeroed_until: u64,
    /// Encoding buffer, reused across batches.
    pub(crate) buf: Vec<u8>,
    /// Reused across batches (no allocation per batch): the command deque
    /// swapped with the queue's, and the batch's completions and positions.
    pub(crate) spare: VecDeque<Cmd>,
    pub(crate) batch_done: Vec<Done>,
    pub(crate) batch_placed: Vec<Placed>,
}

/// An entry placed in a segment by the current batch.
pub(crate) struct Placed {
    index: u64,
    seq: u64,
    offset: u64,
    len: u32,
}

struct Batch {
    buf: Vec<u8>,
    done: Vec<Done>,
    placed: Vec<Placed>,
}

impl Writer {
    fn poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    fn poison(&self) {
        self.shared.poisoned.store(true, Ordering::Release);
    }

    fn process(&mut self, cmds: &mut VecDeque<Cmd>) {
        let mut batch = Batch {
            buf: std::mem::take(&mut self.buf),
            done: std::mem::take(&mut self.batch_done),
            placed: std::mem::take(&mut self.batch_placed),
        };
        for cmd in cmds.drain(..) {
            if self.poisoned() {
                fail(cmd);
                continue;
            }
            match cmd {
                Cmd::Append { entries, done } => {
                    let r = entries.iter().try_for_each(|e| self.encode(&mut batch, e));
                    batch.done.push(done);
                    if r.is_err() {
                        self.finish_failed(&mut batch);
                    } else if batch.buf.len() >= MAX_BATCH_BYTES {
                        self.flush(&mut batch);
                    }
                }
                Cmd::Committed(i) => {
                    record::encode_committed(&mut batch.buf, i);
                }
                Cmd::Sync { done } => batch.done.push(done),
                Cmd::Truncate { after, done } => {
                    self.flush(&mut batch);
                    let r = self.truncate(after);
                    let r = self.guard(r);
                    let _ = done.send(r);
                }
                Cmd::Vote { vote, done } => {
                    // Ordered after every earlier append: flush them first.
                    self.flush(&mut batch);
                    let r = self.save_vote(vote);
                    let r = self.guard(r);
                    let _ = done.send(r);
                }
                Cmd::Purge { upto, done } => {
                    self.flush(&mut batch);
                    let r = self.purge(upto);
                    let r = self.guard(r);
                    let _ = done.send(r);
                }
            }
        }
        self.flush(&mut batch);
        batch.buf.clear();
        self.buf = batch.buf;
        if batch.done.capacity() <= KEEP_CAPACITY {
            self.batch_done = batch.done;
        }
        if batch.placed.capacity() <= KEEP_CAPACITY {
            self.batch_placed = batch.placed;
        }
    }

    fn guard(&self, r: Result<()>) -> Result<()> {
        if let Err(Error::Io { .. }) = &r {
            self.poison();
        }
        r
    }

    fn encode(&mut self, batch: &mut Batch, e: &Entry) -> Result<()> {
        let pos = self.active_len + batch.buf.len() as u64;
        if pos >= self.opts.max_segment_bytes && pos > segment::HEADER_LEN {
            self.write_out(batch)?;
            self.rotate()?;
        }
        let offset = self.active_len + batch.buf.len() as u64;
        let len = record::encode_entry(&mut batch.buf, e.index, e.term, &e.payload);
        batch.placed.push(Placed {
            index: e.index,
            seq: self.active_seq,
            offset,
            len: len as u32,
        });
        Ok(())
    }

    /// Writes and syncs the buffered bytes to the active segment.
    fn write_out(&mut self, batch: &mut Batch) -> Result<()> {
        if batch.buf.is_empty() {
            return Ok(());
        }
        let path = segment::path(&self.dir, self.active_seq);
        lio::check(&self.opts.fault, lio::Fault::Write, &path)?;
        let end = self.active_len + batch.buf.len() as u64;
        if end > self.zeroed_until {
            // Extend the file with zeros ahead of the records; the sync
            // below makes both durable, and the next syncs are cheaper.
            let until = end + PREALLOCATE_BYTES;
            let mut at = self.zeroed_until.max(end);
            while at < until {
                let n = (until - at).min(ZEROS.len() as u64) as usize;
                self.active
                    .write_all_at(&ZEROS[..n], at)
                    .map_err(|e| Error::io("write", &path, e))?;
                at += n as u64;
            }
            self.zeroed_until = until;
        }
        self.active
            .write_all_at(&batch.buf, self.active_len)
            .map_err(|e| Error::io("write", &path, e))?;
        self.active_len += batch.buf.len() as u64;
        batch.buf.clear();
        // Durable before the segment is left behind or anyone is told.
        let t = std::time::Instant::now();
        lio::sync_data(&self.active, &path, &self.opts.fault)?;
        let took = t.elapsed();
        if let Some(observe) = &self.opts.on_sync {
            observe(took);
        }
        let c = &self.shared.stats;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.entries
            .fetch_add(batch.placed.len() as u64, Ordering::Relaxed);
        c.sync_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Starts the next segment.
    fn rotate(&mut self) -> Result<()> {
        // Only the last segment may end in zeros: drop the preallocated
        // tail durably before a later segment exists.
        if self.zeroed_until > self.active_len {
            let path = segment::path(&self.dir, self.active_seq);
            self.active
                .set_len(self.active_len)
                .map_err(|e| Error::io("truncate", &path, e))?;
            lio::sync_data(&self.active, &path, &self.opts.fault)?;
        }
        let seq = self.active_seq + 1;
        let f = segment::create(&self.dir, seq, &self.opts.fault)?;
        let path = segment::path(&self.dir, seq);
        let reader = Arc::new(segment::open_for_read(&path)?);
        self.shared.lock().files.insert(seq, reader);
        self.segs.insert(
            seq,
            SegRange {
                path,
                first: None,
                last: None,
            },
        );
        self.active = f;
        self.active_seq = seq;
        self.active_len = segment::HEADER_LEN;
        self.zeroed_until = segment::HEADER_LEN;
        Ok(())
    }

    /// Writes, syncs, publishes positions and completes the batch.
    fn flush(&mut self, batch: &mut Batch) {
        if batch.buf.is_empty() && batch.done.is_empty() {
            return;
        }
        // With nothing new to write (a bare Sync), everything before was
        // already synced by its own batch.
        if let Err(e) = self.write_out(batch) {
            self.poison();
            for d in batch.done.drain(..) {
                d.finish(Err(e.clone()));
            }
            batch.placed.clear();
            batch.buf.clear();
            return;
        }
        {
            let mut st = self.shared.lock();
            for p in batch.placed.drain(..) {
                if let Some(seg) = self.segs.get_mut(&p.seq) {
                    seg.first.get_or_insert(p.index);
                    seg.last = Some(p.index);
                }
                if let Some(slot) = st.slot_mut(p.index) {
                    if slot.seq == PENDING {
                        slot.seq = p.seq;
                        slot.offset = p.offset;
                        slot.len = p.len;
                    }
                }
            }
            st.evict(self.opts.cache_bytes);
        }
        for d in batch.done.drain(..) {
            d.finish(Ok(()));
        }
    }

    fn finish_failed(&mut self, batch: &mut Batch) {
        self.poison();
        for d in batch.done.drain(..) {
            d.finish(Err(Error::Poisoned));
        }
        batch.placed.clear();
        batch.buf.clear();
    }

    /// Removes entries after `after`, durably.
    fn truncate(&mut self, after: Option<u64>) -> Result<()> {
        let (from, cut_seq, cut_offset) = {
            let st = self.shared.lock();
            let from = after.map_or(st.first, |a| a + 1);
            let Some(slot) = st.slot(from) else {
                return Ok(()); // nothing at or after `from`
            };
            (from, slot.seq, slot.offset)
        };
        if cut_seq == PENDING {
            return Err(Error::OutOfRange {
                index: from,
                reason: "entry not yet written",
            });
        }
        // Later segments go first, newest first: a crash midway leaves a
        // log that still ends in whole, ordered entries.
        let later: Vec<u64> = self
            .segs
            .range(cut_seq + 1..)
            .map(|(s, _)| *s)
            .rev()
            .collect();
        for s in &later {
            if let Some(r) = self.segs.remove(s) {
                fs::remove_file(&r.path).map_err(|e| Error::io("remove", &r.path, e))?;
            }
        }
        if !later.is_empty() {
            lio::sync_dir(&self.dir, &self.opts.fault)?;
        }
        let path = segment::path(&self.dir, cut_seq);
        if cut_seq != self.active_seq {
            self.active = segment::open_for_append(&path)?;
            self.active_seq = cut_seq;
        }
        self.active
            .set_len(cut_offset)
            .map_err(|e| Error::io("truncate", &path, e))?;
        // The cut must be durable before new entries reuse the indices.
        lio::sync_data(&self.active, &path, &self.opts.fault)?;
        self.active_len = cut_offset;
        self.zeroed_until = cut_offset;
        if let Some(r) = self.segs.get_mut(&cut_seq) {
            r.last = match r.first {
                Some(f) if f < from => Some(from - 1),
                _ => {
                    r.first = None;
                    None
                }
            };
        }
        let mut st = self.shared.lock();
        for s in &later {
            st.files.remove(s);
        }
        st.truncate_from(from);
        Ok(())
    }

    /// Durably replaces the vote in `meta`.
    fn save_vote(&mut self, vote: bytes::Bytes) -> Result<()> {
        let mut meta = self.shared.meta.lock().map_err(|_| Error::Poisoned)?;
        let mut next = meta.clone();
        next.vote = Some(vote);
        next.store(&self.dir, &self.opts.fault)?;
        *meta = next;
        Ok(())
    }

    /// Durably records the purge point, then removes whole segments below it.
    fn purge(&mut self, upto: LogId) -> Result<()> {
        {
            let mut meta = self.shared.meta.lock().map_err(|_| Error::Poisoned)?;
            if meta.purged.is_some_and(|p| p.index >= upto.index) {
                return Ok(());
            }
            let mut next = meta.clone();
            next.purged = Some(upto);
            next.store(&self.dir, &self.opts.fault)?;
            *meta = next;
        }
        self.shared.lock().purge_upto(upto);
        let doomed: Vec<u64> = self
            .segs
            .iter()
            .filter(|(s, r)| **s != self.active_seq && r.last.is_none_or(|l| l <= upto.index))
            .map(|(s, _)| *s)
            .collect();
        for s in &doomed {
            if let Some(r) = self.segs.remove(s) {
                fs::remove_file(&r.path).map_err(|e| Error::io("remove", &r.path, e))?;
            }
        }
        if !doomed.is_empty() {
            lio::sync_dir(&self.dir, &self.opts.fault)?;
            let mut st = self.shared.lock();
            for s in &doomed {
                st.files.remove(s);
            }
        }
        Ok(())
    }
}

fn fail(cmd: Cmd) {
    match cmd {
        Cmd::Append { done, .. } | Cmd::Sync { done } => done.finish(Err(Error::Poisoned)),
        Cmd::Truncate { done, .. } | Cmd::Purge { done, .. } | Cmd::Vote { done, .. } => {
            let _ = done.send(Err(Error::Poisoned));
        }
        Cmd::Committed(_) => {}
    }
}

/// Slots and cache are kept in step by these helpers on the shared state.
impl crate::State {
    pub(crate) fn slot(&self, index: u64) -> Option<&Slot> {
        index
            .checked_sub(self.first)
            .and_then(|i| self.slots.get(i as usize))
    }

    fn slot_mut(&mut self, index: u64) -> Option<&mut Slot> {
        index
            .checked_sub(self.first)
            .and_then(|i| self.slots.get_mut(i as usize))
    }

    /// Drops cached payloads from the front while over budget, keeping
    /// those not yet written (they exist nowhere else).
    pub(crate) fn evict(&mut self, budget: usize) {
        while self.cache_bytes > budget {
            let idx = self.last_index_plus_one() - self.cache.len() as u64;
            let written = self.slot(idx).is_some_and(|s| s.seq != PENDING);
            if !written {
                break;
            }
            match self.cache.pop_front() {
                Some(b) => self.cache_bytes -= b.len(),
                None => break,
            }
        }
    }

    pub(crate) fn last_index_plus_one(&self) -> u64 {
        self.first + self.slots.len() as u64
    }

    /// Index of the oldest cached entry (the cache holds the newest
    /// entries, up to the end of the log).
    pub(crate) fn cache_start(&self) -> u64 {
        self.last_index_plus_one() - self.cache.len() as u64
    }

    /// `range` clipped to the held entries: `[lo, hi)`.
    pub(crate) fn index_bounds(&self, range: &impl std::ops::RangeBounds<u64>) -> (u64, u64) {
        use std::ops::Bound;
        let end = self.last_index_plus_one();
        let lo = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .max(self.first);
        let hi = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => end,
        }
        .min(end);
        (lo, hi)
    }

    fn truncate_from(&mut self, from: u64) {
        let keep = from.saturating_sub(self.first) as usize;
        let drop_n = self.slots.len().saturating_sub(keep);
        self.slots.truncate(keep);
        for _ in 0..drop_n.min(self.cache.len()) {
            if let Some(b) = self.cache.pop_back() {
                self.cache_bytes -= b.len();
            }
        }
    }

    fn purge_upto(&mut self, upto: LogId) {
        let n = (upto.index + 1)
            .saturating_sub(self.first)
            .min(self.slots.len() as u64) as usize;
        self.slots.drain(..n);
        if self.slots.is_empty() {
            self.first = upto.index + 1;
            self.cache.clear();
            self.cache_bytes = 0;
        } else {
            self.first += n as u64;
            while self.cache.len() > self.slots.len() {
                if let Some(b) = self.cache.pop_front() {
                    self.cache_bytes -= b.len();
                }
            }
        }
        self.purged = Some(upto);
    }
}
