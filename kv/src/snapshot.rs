//! Point-in-time images of a store, for Raft snapshots and backups.
//!
//! ```text
//! "CAIRNKV1"
//! current i64 BE | compacted i64 BE | applied length u32 BE | applied bytes
//! entries: key length u32 BE | backend key | value length u32 BE | value
//!   first the history records, oldest first; then the lease table;
//!   then the owned entries present (auth state "mauth", alarms "malarms")
//! //! end: u32::MAX | CRC32 of every byte before it, u32 BE
//! ```
//!
//! [`Store::export`] writes every record up to the revision current when it
//! started, while writes go on (records are immutable; the read barrier
//! keeps physical compaction off them meanwhile), and the lease table as it
//! was at that same moment. [`Store::import`] replaces
//! a store's whole contents: it first writes an "importing" marker, so a
//! crash midway leaves a store that opens empty (and gets the snapshot
//! again) rather than a mix of old and new.
//!
//! [`ImageWriter`] writes an image entry by entry and [`read`] reads one
//! entry by entry, decoded: how a keyspace kept in another format (an
//! etcd backend) becomes an image, and an image becomes one.

use std::io::{Read, Write};

use bytes::Bytes;

use crate::backend::{Backend, WriteBatch};
use crate::error::{Error, Result};
use crate::lease::{self, Lease};
use crate::record::{self, Meta, Record};
use crate::revision::Revision;
use crate::state;
use crate::store::Store;

const MAGIC: &[u8; 8] = b"CAIRNKV1";
const END: u32 = u32::MAX;

/// What an image holds besides its records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// Store revision of the image.
    pub revision: i64,
    /// Compaction revision of the image.
    pub compacted: i64,
    /// Applied position of the image.
    pub applied: Option<Bytes>,
    /// Records in the image.
    pub records: u64,
    /// The image's CRC32 (of every byte before it).
    pub checksum: u32,
}

/// Writes an image entry by entry: how [`Store::export`] writes one, and
/// how a store's contents made elsewhere (an import from another
/// format) become an image [`Store::import`] takes.
#[derive(Debug)]
pub struct ImageWriter<W: Write> {
    w: W,
    crc: crc32fast::Hasher,
    current: i64,
    compacted: i64,
    applied: Bytes,
    /// Backend entries of records written (a tombstone run counts once).
    records: u64,
}

impl<W: Write> ImageWriter<W> {
    /// Starts an image of a store at revision `current`, compacted at
    /// `compacted`, whose applied position is `applied` (empty: none).
    pub fn new(w: W, current: i64, compacted: i64, applied: &[u8]) -> Result<Self> {
        let mut me = ImageWriter {
            w,
            crc: crc32fast::Hasher::new(),
            current,
            compacted,
            applied: Bytes::copy_from_slice(applied),
            records: 0,
        };
        me.put(MAGIC)?;
        me.put(&current.to_be_bytes())?;
        me.put(&compacted.to_be_bytes())?;
        me.put(&(applied.len() as u32).to_be_bytes())?;
        me.put(applied)?;
        Ok(me)
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.crc.update(b);
        self.w.write_all(b).map_err(io_err)
    }

    fn entry(&mut self, k: &[u8], v: &[u8]) -> Result<()> {
        self.put(&(k.len() as u32).to_be_bytes())?;
        self.put(k)?;
        self.put(&(v.len() as u32).to_be_bytes())?;
        self.put(v)
    }

    /// Adds the record `rec` at `rev`. Revisions need not come in order,
    /// but each may come once, and none above the image's revision.
    pub fn record(&mut self, rev: Revision, rec: &Record) -> Result<()> {
        if rev.main > self.current || rev.main < 1 || rev.sub < 0 {
            return Err(bad("a record outside the image's revisions"));
        }
        if let Record::Put(kv) = rec {
            if kv.mod_revision != rev.main {
                return Err(bad("a put whose mod revision is not its revision"));
            }
        }
        self.entry(&record::record_key(rev), &rec.encode())?;
        self.records += 1;
        Ok(())
    }

    /// Adds the lease `l`.
    pub fn lease(&mut self, l: &Lease) -> Result<()> {
        if l.id == 0 {
            return Err(bad("a lease with id 0"));
        }
        self.entry(
            &lease::lease_key(l.id),
            &lease::encode(l.ttl, l.remaining_ttl),
        )
    }

    /// Adds the owned entry `which` (encoded by its owner).
    pub fn owned(&mut self, which: crate::Owned, value: &[u8]) -> Result<()> {
        self.entry(which.meta().key(), value)
    }

    /// Ends the image: the end marker and the checksum.
    pub fn finish(mut self) -> Result<ImageInfo> {
        self.put(&END.to_be_bytes())?;
        let crc = self.crc.clone().finalize();
        self.w.write_all(&crc.to_be_bytes()).map_err(io_err)?;
        self.w.flush().map_err(io_err)?;
        Ok(ImageInfo {
            revision: self.current,
            compacted: self.compacted,
            applied: (!self.applied.is_empty()).then_some(self.applied),
            records: self.records,
            checksum: crc,
        })
    }
}

/// One entry of an image, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageEntry {
    /// A record at its revision (a tombstone run comes as its tombstones).
    Record(Revision, Record),
    /// A lease.
    Lease(Lease),
    /// An owned entry, as its owner encoded it.
    Owned(crate::Owned, Bytes),
}

/// Reads the image in `r` whole, handing each entry to `f` in the order
/// it is stored (records by revision when [`Store::export`] wrote it),
/// then checks its checksum: an error from `f` or a damaged image ends
/// the reading.
pub fn read(r: &mut impl Read, mut f: impl FnMut(ImageEntry) -> Result<()>) -> Result<ImageInfo> {
    let mut image = ImageReader::open(r)?;
    while let Some((k, v)) = image.next_entry()? {
        if lease::is_lease_key(&k) {
            f(ImageEntry::Lease(lease::decode(&k, &v)?))?;
        } else if let Some(which) = crate::Owned::ALL.into_iter().find(|o| o.meta().key() == k) {
            f(ImageEntry::Owned(which, Bytes::from(v)))?;
        } else {
            let rev = record::revision_of(&k)?;
            Record::decode_each(rev, &Bytes::from(v), |rev, rec| {
                f(ImageEntry::Record(rev, rec))
            })?;
        }
    }
    image.finish()
}

fn io_err(e: std::io::Error) -> Error {
    Error::Backend(Box::new(e))
}

fn bad(reason: &str) -> Error {
    Error::Corrupt {
        location: "snapshot image".into(),
        reason: reason.into(),
    }
}

impl<B: Backend> Store<B> {
    /// Writes a point-in-time image of the store to `w`.
    pub fn export(&self, w: &mut impl Write) -> Result<ImageInfo> {
        self.export_fixed(w, |_| {})
    }

    /// [`Store::export`], handing `fixed` the image's applied position as
    /// soon as the image's moment is fixed, before any record is written:
    /// a caller can describe an image while it is still being written
    /// (and writes go on).
    pub fn export_fixed(
        &self,
        w: &mut impl Write,
        fixed: impl FnOnce(Option<&Bytes>),
    ) -> Result<ImageInfo> {
        let inner = self.inner();
        let _reading = inner.reading()?;
        let (current, compacted, applied, leases) = {
            let st = inner.read_state()?;
            let mut leases: Vec<(Bytes, Bytes)> = st
                .leases
                .iter()
                .map(|(id, l)| (lease::lease_key(*id), lease::encode(l.ttl, l.remaining_ttl)))
                .collect();
            // The owned entries as of the same moment (they change only
            // under the state lock).
            for which in crate::Owned::ALL {
                let key = which.meta().key();
                if let Some(v) = inner.backend.get(key).map_err(Error::Backend)? {
                    leases.push((Bytes::from_static(key), v));
                }
            }
            (st.current, st.compacted, st.applied.clone(), leases)
        };
        fixed(applied.as_ref());
        let mut out = ImageWriter::new(
            w,
            current,
            compacted,
            applied.as_deref().unwrap_or_default(),
        )?;
        for item in inner.backend.scan(
            &record::records_start(),
            &record::records_end_after(current),
        ) {
            let (k, v) = item.map_err(Error::Backend)?;
            out.entry(&k, &v)?;
            out.records += 1;
        }
        for (k, v) in &leases {
            out.entry(k, v)?;
        }
        out.finish()
    }

    /// Replaces the store's whole contents with the image read from `r`,
    /// durably (flushed before returning). If the image is damaged or an
    /// I/O step fails, the store is poisoned: reopened, it is empty.
    pub fn import(&self, r: &mut impl Read) -> Result<ImageInfo> {
        self.import_with(r, &Restore::default())
    }

    /// [`Store::import`], changed as `how` says (a restore).
    pub fn import_with(&self, r: &mut impl Read, how: &Restore) -> Result<ImageInfo> {
        let inner = self.inner();
        inner.check()?;
        let r = self.import_inner(r, how);
        if r.is_err() {
            inner
                .poisoned
                .store(true, std::sync::atomic::Ordering::Release);
        }
        r
    }

    fn import_inner(&self, r: &mut impl Read, how: &Restore) -> Result<ImageInfo> {
        let inner = self.inner();
        let mut image = ImageReader::open(r)?;
        let header = image.header.clone();
        let current = header.current + how.bump_revision;
        let compacted = if how.mark_compacted {
            current
        } else {
            header.compacted
        };
        let applied = how.applied.clone().unwrap_or(header.applied);

        // No read, write or compaction step runs while the contents are
        // replaced (lock order: read barrier, then state).
        let _quiet = inner.read_barrier.write().map_err(|_| Error::Poisoned)?;
        let mut st = inner.write_state()?;
        inner
            .epoch
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        // Mark, wipe, fill, unmark: a crash in between opens empty.
        let mut batch = WriteBatch::new();
        batch.put(Meta::Importing.key(), Bytes::from_static(b"1"));
        inner.guard(inner.backend.write(batch).map_err(Error::Backend))?;
        inner.guard(state::wipe(&inner.backend))?;
        let mut batch = WriteBatch::new();
        while let Some((k, v)) = image.next_entry()? {
            batch.put(k, v);
            if batch.len() >= 1024 {
                inner.guard(
                    inner
                        .backend
                        .write(std::mem::take(&mut batch))
                        .map_err(Error::Backend),
                )?;
            }
        }
        // A checksum mismatch leaves the marker: the store opens empty.
        let info = image.finish()?;
        batch.put(Meta::Current.key(), record::encode_i64(current));
        batch.put(Meta::CompactScheduled.key(), record::encode_i64(compacted));
        if !applied.is_empty() {
            batch.put(Meta::Applied.key(), applied.clone());
        }
        inner.guard(inner.backend.write(batch).map_err(Error::Backend))?;
        let mut batch = WriteBatch::new();
        batch.delete(Meta::Importing.key());
        inner.guard(inner.backend.write(batch).map_err(Error::Backend))?;
        inner.guard(inner.backend.flush().map_err(Error::Backend))?;
        let (state, scheduled, _) = state::load(&inner.backend)?;
        *st = state;
        drop(st);
        if let Ok(mut c) = inner.compaction.lock() {
            // Whatever garbage the image carries is below its compaction
            // revision: have the worker pass over it.
            c.finished = state::NEVER_COMPACTED;
            c.target = scheduled;
            inner.compaction_cv.notify_all();
        }
        Ok(ImageInfo {
            revision: current,
            compacted,
            applied: (!applied.is_empty()).then_some(applied),
            ..info
        })
    }
}

/// How an image is imported for a restore (`etcdutl snapshot restore`'s
/// options); the default imports it as it is.
#[derive(Clone, Debug, Default)]
pub struct Restore {
    /// Added to the image's revision: the next write gets a revision
    /// above any a client saw before the restore.
    pub bump_revision: i64,
    /// Marks the (bumped) revision compacted, so that watchers and
    /// readers of older revisions are told to start over.
    pub mark_compacted: bool,
    /// Replaces the image's applied position (a new cluster starts from
    /// its own).
    pub applied: Option<Bytes>,
}

/// Reads an image without importing it: its header and counts, its
/// checksum checked (`cairnutl snapshot status`).
pub fn inspect(r: &mut impl Read) -> Result<ImageInfo> {
    let mut image = ImageReader::open(r)?;
    while image.next_entry()?.is_some() {}
    image.finish()
}

#[derive(Clone)]
struct Header {
    current: i64,
    compacted: i64,
    applied: Bytes,
}

/// An image read entry by entry, each checked for what it claims to be,
/// the checksum checked at the end.
struct ImageReader<'a, R: Read> {
    r: &'a mut R,
    crc: crc32fast::Hasher,
    header: Header,
    records: u64,
}

impl<'a, R: Read> ImageReader<'a, R> {
    fn open(r: &'a mut R) -> Result<Self> {
        let mut me = ImageReader {
            r,
            crc: crc32fast::Hasher::new(),
            header: Header {
                current: 0,
                compacted: 0,
                applied: Bytes::new(),
            },
            records: 0,
        };
        let magic = me.read(8)?;
        if magic != MAGIC {
            if magic[..7] == MAGIC[..7] {
                return Err(bad("an image of a newer format than this version reads"));
            }
            return Err(bad("not a cairn-kv image"));
        }
        me.header.current = me.i64()?;
        me.header.compacted = me.i64()?;
        let alen = me.u32()? as usize;
        me.header.applied = Bytes::from(me.read(alen)?);
        Ok(me)
    }

    fn read(&mut self, n: usize) -> Result<Vec<u8>> {
        // Grown as bytes arrive, not sized from the length field: a
        // damaged length must not allocate gigabytes up front.
        let mut b = Vec::with_capacity(n.min(64 << 10));
        self.r
            .by_ref()
            .take(n as u64)
            .read_to_end(&mut b)
            .map_err(|_| bad("truncated image"))?;
        if b.len() < n {
            return Err(bad("truncated image"));
        }
        self.crc.update(&b);
        Ok(b)
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(
            self.read(8)?.try_into().unwrap_or([0; 8]),
        ))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(
            self.read(4)?.try_into().unwrap_or([0; 4]),
        ))
    }

    /// The next entry, checked; `None` at the end marker.
    fn next_entry(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let klen = self.u32()?;
        if klen == END {
            return Ok(None);
        }
        let k = self.read(klen as usize)?;
        let vlen = self.u32()? as usize;
        let v = self.read(vlen)?;
        if lease::is_lease_key(&k) {
            lease::decode(&k, &v)?;
        } else if crate::Owned::is_key(&k) {
            // Opaque here; its owner checks it when it loads it.
        } else {
            record::revision_of(&k)?;
            self.records += 1;
        }
        Ok(Some((k, v)))
    }

    /// Checks the checksum after the end marker.
    fn finish(self) -> Result<ImageInfo> {
        let mut tail = [0u8; 4];
        self.r
            .read_exact(&mut tail)
            .map_err(|_| bad("truncated image"))?;
        let crc = self.crc.finalize();
        if u32::from_be_bytes(tail) != crc {
            return Err(bad("image checksum mismatch"));
        }
        let h = self.header;
        Ok(ImageInfo {
            revision: h.current,
            compacted: h.compacted,
            applied: (!h.applied.is_empty()).then_some(h.applied),
            records: self.records,
            checksum: crc,
        })
    }
}
