//! [`FjallBackend`]: the store over fjall, an LSM tree.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Backend, ScanIter, WriteBatch};
use crate::error::BackendError;

/// How long [`FjallBackend::open`] waits for a lock still held by a
/// database this process is closing.
pub const LOCK_WAIT: Duration = Duration::from_secs(3);

/// [`Backend`] over a fjall database (an LSM tree): one keyspace.
///
/// A batch is one journal record (checksummed, written to the OS at
/// commit), so after a crash a batch is there whole or not at all, and in
/// order; [`Backend::flush`] fsyncs the journal. fjall moves data from the
/// journal into sorted tables in the background and drops a journal only
/// once its tables are durable.
pub struct FjallBackend {
    db: fjall::Database,
    kv: fjall::Keyspace,
}

impl FjallBackend {
    /// Opens (or creates) the database in directory `path`.
    ///
    /// A lock still held after [`LOCK_WAIT`] is reported as an error
    /// (another process has the database open).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, BackendError> {
        let p = path.as_ref();
        if p.join("conf").is_file() && p.join("db").is_file() {
            // fjall would start an empty store beside it.
            return Err(format!(
                "{} holds a sled database, which the fjall backend does not read",
                p.display()
            )
            .into());
        }
        let deadline = Instant::now() + LOCK_WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            match Self::open_once(path.as_ref(), false) {
                Err(fjall::Error::Locked) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(fjall::Error::Locked) => {
                    return Err(format!(
                        "database {} is in use by another process",
                        path.as_ref().display()
                    )
                    .into())
                }
                r => return r.map_err(BackendError::from),
            }
        }
    }

    /// A throwaway database in the system's temporary directory, deleted
    /// on drop (for tests).
    pub fn temporary() -> Result<Self, BackendError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("cairn-kv-{}-{n}-{nanos}", std::process::id()));
        Ok(Self::open_once(&path, true)?)
    }

    fn open_once(path: &Path, temporary: bool) -> Result<Self, fjall::Error> {
        let db = fjall::Database::builder(path)
            // Block cache for the tables: the hot revisions, bounded.
            .cache_size(64 << 20)
            // Journals are replayed on open: keep them short so a restart
            // does not read back more than this.
            .max_journaling_size(128 << 20)
            // Uncompressed journal: a large batch (a revoke's run of
            // tombstones) is written as is rather than compressed while
            // the writes behind it wait; batches are small otherwise.
            .journal_compression(fjall::CompressionType::None)
            .temporary(temporary)
            .open()?;
        let kv = db.keyspace("kv", || {
            fjall::KeyspaceCreateOptions::default()
                .max_memtable_size(32 << 20)
                .expect_point_read_hits(true)
                .data_block_compression_policy(fjall::config::CompressionPolicy::disabled())
                .data_block_hash_ratio_policy(fjall::config::HashRatioPolicy::all(0.75))
        })?;
        Ok(Self { db, kv })
    }
}

impl Backend for FjallBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, BackendError> {
        Ok(self.kv.get(key)?.map(|v| Bytes::copy_from_slice(&v)))
    }

    fn scan<'a>(&'a self, start: &[u8], end: &[u8]) -> ScanIter<'a> {
        Box::new(self.kv.range(start.to_vec()..end.to_vec()).map(|g| {
            g.into_inner()
                .map(|(k, v)| (Bytes::copy_from_slice(&k), Bytes::copy_from_slice(&v)))
                .map_err(BackendError::from)
        }))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), BackendError> {
        let mut b = self.db.batch();
        for (k, v) in batch.into_ops() {
            match v {
                Some(v) => b.insert(&self.kv, k.as_ref(), v.as_ref()),
                None => b.remove(&self.kv, k.as_ref()),
            }
        }
        b.commit()?;
        Ok(())
    }

    fn flush(&self) -> Result<(), BackendError> {
        // fsync of the journal: every batch committed so far is durable.
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    /// The sorted tables' bytes plus the memtable's (data not yet in a
    /// table). The journal is this engine's write-ahead log and, like
    /// etcd's WAL beside its bbolt file, is not counted: each journal
    /// file is set to 64 MiB before it is written to, and it still holds
    /// what compaction and defragment removed until it is dropped. A
    /// memtable being written out to a table is counted by neither for
    /// that moment.
    fn size_on_disk(&self) -> Result<u64, BackendError> {
        use fjall::AbstractTree;
        Ok(self.kv.disk_space() + self.kv.tree.active_memtable().size())
    }

    fn defragment(&self) -> Result<(), BackendError> {
        // Everything in memory to tables, then every table merged into
        // one run: deleted and overwritten versions are dropped and their
        // files removed. Reads and writes go on meanwhile.
        self.kv.rotate_memtable_and_wait()?;
        self.kv.major_compact()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_sled_database_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("conf"), b"segment_size: 524288").unwrap();
        std::fs::write(dir.path().join("db"), b"sled pages").unwrap();
        let err = FjallBackend::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("holds a sled database"), "{err}");
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["conf", "db"]);
    }
}
