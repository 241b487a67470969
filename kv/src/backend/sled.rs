//! [`SledBackend`]: the store over sled 0.34 (one default tree).
//!
//! A batch is applied atomically by sled (and after a crash is there
//! whole or not at all, in order); [`Backend::flush`] makes sled write
//! and fsync its log. sled's own periodic flush is off: durability comes
//! from the Raft log, and the owner flushes when it needs to.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Backend, ScanIter, WriteBatch, LOCK_WAIT};
use crate::error::BackendError;

/// sled 0.34 reports a lock held elsewhere as an `Other` I/O error naming
/// the lock; its `WouldBlock` cause is only in the message.
fn is_lock_contention(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

/// [`Backend`] over a sled database.
pub struct SledBackend {
    db: sled::Db,
}

impl SledBackend {
    /// Opens (or creates) the database in directory `path`.
    ///
    /// sled releases its lock file from a background thread some moments
    /// after the last handle is dropped, so a database closed just before
    /// by this process can look locked. A lock still held after
    /// [`LOCK_WAIT`] is reported as an error (another process has it).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BackendError> {
        let config = sled::Config::new()
            .path(path.as_ref())
            // 64 MiB page cache: enough for the hot revisions, bounded.
            .cache_capacity(64 << 20)
            .flush_every_ms(None);
        let deadline = Instant::now() + LOCK_WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            match config.open() {
                Ok(db) => return Ok(Self { db }),
                Err(e) if is_lock_contention(&e) && Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(e) if is_lock_contention(&e) => {
                    return Err(format!(
                        "database {} is in use by another process: {e}",
                        path.as_ref().display()
                    )
                    .into())
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A throwaway database, deleted on drop (for tests).
    pub fn temporary() -> Result<Self, BackendError> {
        let db = sled::Config::new().temporary(true).open()?;
        Ok(Self { db })
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, BackendError> {
        Ok(self.db.get(key)?.map(|v| Bytes::copy_from_slice(&v)))
    }

    fn scan<'a>(&'a self, start: &[u8], end: &[u8]) -> ScanIter<'a> {
        Box::new(self.db.range(start.to_vec()..end.to_vec()).map(|r| {
            r.map(|(k, v)| (Bytes::copy_from_slice(&k), Bytes::copy_from_slice(&v)))
                .map_err(BackendError::from)
        }))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), BackendError> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.into_ops() {
            match v {
                Some(v) => b.insert(k.as_ref(), v.as_ref()),
                None => b.remove(k.as_ref()),
            }
        }
        self.db.apply_batch(b)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), BackendError> {
        // Writes sled's log and fsyncs it: every batch so far is durable.
        self.db.flush()?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64, BackendError> {
        Ok(self.db.size_on_disk()?)
    }

    fn defragment(&self) -> Result<(), BackendError> {
        // sled reclaims the space of removed data as it goes (segment
        // cleaning); it has nothing to run on demand.
        Ok(())
    }
}
