//! The storage engine under the MVCC store.
//!
//! [`Backend`] is deliberately narrow: one ordered byte keyspace with point
//! get, ascending range scan, atomic batch write and flush. The store lays
//! its tables out as key prefixes (see [`crate::store`]), so an engine
//! needs only these five methods. Two implement it:
//!
//! - [`FjallBackend`] (`fjall`, an LSM tree): the default, measured faster
//!   (see the crate docs);
//! - [`SledBackend`] (`sled` 0.34, a B+ tree over a log-structured page
//!   store), with the cargo feature `sled` (on by default).
//!
//! [`Engine`] is the one chosen at run time ([`BackendKind`]); a database
//! made by one engine is never opened by the other ([`BackendKind::detect`]).

mod fjall;
#[cfg(feature = "sled")]
mod sled;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use bytes::Bytes;

use crate::error::BackendError;

pub use self::fjall::{FjallBackend, LOCK_WAIT};
#[cfg(feature = "sled")]
pub use self::sled::SledBackend;

/// One atomic group of writes: all of them land, or none.
#[derive(Clone, Debug, Default)]
pub struct WriteBatch {
    ops: Vec<(Bytes, Option<Bytes>)>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: impl Into<Bytes>) {
        self.ops.push((key.into(), None));
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations in order; `None` is a delete.
    pub fn into_ops(self) -> Vec<(Bytes, Option<Bytes>)> {
        self.ops
    }
}

/// Iterator over `(key, value)` pairs of a scan.
pub type ScanIter<'a> = Box<dyn Iterator<Item = Result<(Bytes, Bytes), BackendError>> + 'a>;

/// An ordered key-value engine.
///
/// To ensure correctness an implementation must:
/// - apply each [`WriteBatch`] atomically, also across a crash: after a
///   restart either every op of a batch is visible or none is;
/// - keep batches in order across a crash: if a batch survives, every
///   batch written before it survives;
/// - make every batch written before a successful [`Backend::flush`]
///   survive a crash;
/// - scan keys in ascending byte order and see every batch written before
///   the scan started.
pub trait Backend: Send + Sync + 'static {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, BackendError>;
    /// Pairs with `start <= key < end`, ascending.
    fn scan<'a>(&'a self, start: &[u8], end: &[u8]) -> ScanIter<'a>;
    /// Applies `batch` atomically. Not durable until [`Backend::flush`].
    fn write(&self, batch: WriteBatch) -> Result<(), BackendError>;
    /// Makes every write so far durable.
    fn flush(&self) -> Result<(), BackendError>;
    /// Bytes of data the engine holds, its write-ahead log aside (what
    /// etcd reports as its backend's size and checks the quota against).
    fn size_on_disk(&self) -> Result<u64, BackendError>;
    /// Gives back to the file system what removed data still occupies,
    /// while reads and writes go on.
    fn defragment(&self) -> Result<(), BackendError>;
}

/// Which engine a store runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendKind {
    /// fjall, an LSM tree (the default).
    #[default]
    Fjall,
    /// sled 0.34 (needs the `sled` feature).
    Sled,
}

impl BackendKind {
    /// Every kind, by name.
    pub const ALL: [BackendKind; 2] = [BackendKind::Fjall, BackendKind::Sled];

    /// The kind's name, as `--backend` takes it.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Fjall => "fjall",
            BackendKind::Sled => "sled",
        }
    }

    /// Whether this build carries the engine.
    pub fn available(self) -> bool {
        match self {
            BackendKind::Fjall => true,
            BackendKind::Sled => cfg!(feature = "sled"),
        }
    }

    /// The engine whose database is in directory `path`; `None` when
    /// there is none (the directory is missing or empty). sled keeps a
    /// `conf` and a `db` file; anything else is taken for fjall's.
    pub fn detect(path: &Path) -> std::io::Result<Option<BackendKind>> {
        let mut entries = match std::fs::read_dir(path) {
            Ok(it) => it,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if entries.next().is_none() {
            return Ok(None);
        }
        if path.join("conf").is_file() && path.join("db").is_file() {
            return Ok(Some(BackendKind::Sled));
        }
        Ok(Some(BackendKind::Fjall))
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        BackendKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown backend {s:?} (fjall or sled)"))
    }
}

/// The engine chosen at run time: a [`Backend`] that passes each call to
/// the one it holds.
pub enum Engine {
    /// fjall.
    Fjall(FjallBackend),
    /// sled.
    #[cfg(feature = "sled")]
    Sled(SledBackend),
}

impl Engine {
    /// Opens (or creates) a `kind` database in directory `path`. A
    /// directory holding the other engine's database is refused, and left
    /// as it is.
    pub fn open(path: impl AsRef<Path>, kind: BackendKind) -> Result<Self, BackendError> {
        let path = path.as_ref();
        if let Some(found) = BackendKind::detect(path)? {
            if found != kind {
                return Err(format!(
                    "{} holds a {found} database, not a {kind} one (choose the backend it was created with: --backend {found})",
                    path.display()
                )
                .into());
            }
        }
        match kind {
            BackendKind::Fjall => Ok(Engine::Fjall(FjallBackend::open(path)?)),
            #[cfg(feature = "sled")]
            BackendKind::Sled => Ok(Engine::Sled(SledBackend::open(path)?)),
            #[cfg(not(feature = "sled"))]
            BackendKind::Sled => Err(no_sled()),
        }
    }

    /// A throwaway database of `kind`, deleted on drop (for tests).
    pub fn temporary(kind: BackendKind) -> Result<Self, BackendError> {
        match kind {
            BackendKind::Fjall => Ok(Engine::Fjall(FjallBackend::temporary()?)),
            #[cfg(feature = "sled")]
            BackendKind::Sled => Ok(Engine::Sled(SledBackend::temporary()?)),
            #[cfg(not(feature = "sled"))]
            BackendKind::Sled => Err(no_sled()),
        }
    }

    /// The engine's kind.
    pub fn kind(&self) -> BackendKind {
        match self {
            Engine::Fjall(_) => BackendKind::Fjall,
            #[cfg(feature = "sled")]
            Engine::Sled(_) => BackendKind::Sled,
        }
    }
}

#[cfg(not(feature = "sled"))]
fn no_sled() -> BackendError {
    "this build has no sled backend (built without the `sled` feature)".into()
}

impl Backend for Engine {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, BackendError> {
        match self {
            Engine::Fjall(b) => b.get(key),
            #[cfg(feature = "sled")]
            Engine::Sled(b) => b.get(key),
        }
    }

    fn scan<'a>(&'a self, start: &[u8], end: &[u8]) -> ScanIter<'a> {
        match self {
            Engine::Fjall(b) => b.scan(start, end),
            #[cfg(feature = "sled")]
            Engine::Sled(b) => b.scan(start, end),
        }
    }

    fn write(&self, batch: WriteBatch) -> Result<(), BackendError> {
        match self {
            Engine::Fjall(b) => b.write(batch),
            #[cfg(feature = "sled")]
            Engine::Sled(b) => b.write(batch),
        }
    }

    fn flush(&self) -> Result<(), BackendError> {
        match self {
            Engine::Fjall(b) => b.flush(),
            #[cfg(feature = "sled")]
            Engine::Sled(b) => b.flush(),
        }
    }

    fn size_on_disk(&self) -> Result<u64, BackendError> {
        match self {
            Engine::Fjall(b) => b.size_on_disk(),
            #[cfg(feature = "sled")]
            Engine::Sled(b) => b.size_on_disk(),
        }
    }

    fn defragment(&self) -> Result<(), BackendError> {
        match self {
            Engine::Fjall(b) => b.defragment(),
            #[cfg(feature = "sled")]
            Engine::Sled(b) => b.defragment(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// The engines this build carries.
    fn kinds() -> impl Iterator<Item = BackendKind> {
        BackendKind::ALL.into_iter().filter(|k| k.available())
    }

    #[test]
    fn batch_scan_get() {
        for kind in kinds() {
            let b = Engine::temporary(kind).unwrap();
            let mut wb = WriteBatch::new();
            wb.put(&b"a"[..], &b"1"[..]);
            wb.put(&b"b"[..], &b"2"[..]);
            wb.put(&b"c"[..], &b"3"[..]);
            b.write(wb).unwrap();
            let mut wb = WriteBatch::new();
            wb.delete(&b"b"[..]);
            b.write(wb).unwrap();
            assert_eq!(b.get(b"a").unwrap().as_deref(), Some(&b"1"[..]), "{kind}");
            assert_eq!(b.get(b"b").unwrap(), None, "{kind}");
            let keys: Vec<_> = b.scan(b"a", b"z").map(|r| r.unwrap().0).collect::<Vec<_>>();
            assert_eq!(
                keys,
                vec![Bytes::from_static(b"a"), Bytes::from_static(b"c")],
                "{kind}"
            );
            b.flush().unwrap();
        }
    }

    #[test]
    fn reopening_right_after_drop_waits_for_the_lock() {
        for kind in kinds() {
            let dir = tempfile::tempdir().unwrap();
            for i in 0..30u32 {
                let b = Engine::open(dir.path(), kind).unwrap();
                let mut wb = WriteBatch::new();
                wb.put(Bytes::from(format!("k{i}")), Bytes::from_static(b"v"));
                b.write(wb).unwrap();
                b.flush().unwrap();
            }
            let b = Engine::open(dir.path(), kind).unwrap();
            assert_eq!(b.scan(b"k", b"l").count(), 30, "{kind}");
        }
    }

    #[test]
    fn a_database_held_open_is_refused_with_a_clear_error() {
        for kind in kinds() {
            let dir = tempfile::tempdir().unwrap();
            let _held = Engine::open(dir.path(), kind).unwrap();
            let started = Instant::now();
            let err = Engine::open(dir.path(), kind).err().unwrap().to_string();
            assert!(
                err.contains("is in use by another process"),
                "{kind}: {err}"
            );
            assert!(started.elapsed() >= LOCK_WAIT, "{kind}: gave up early");
        }
    }

    #[test]
    fn names_parse_back() {
        for k in BackendKind::ALL {
            assert_eq!(k.name().parse::<BackendKind>(), Ok(k));
        }
        assert!("rocksdb".parse::<BackendKind>().is_err());
    }

    #[test]
    fn a_database_of_one_engine_is_refused_by_the_other_and_left_alone() {
        for (made, asked) in [
            (BackendKind::Fjall, BackendKind::Sled),
            (BackendKind::Sled, BackendKind::Fjall),
        ] {
            if !made.available() {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            {
                let e = Engine::open(dir.path(), made).unwrap();
                let mut wb = WriteBatch::new();
                wb.put(&b"k"[..], &b"v"[..]);
                e.write(wb).unwrap();
                e.flush().unwrap();
            }
            assert_eq!(BackendKind::detect(dir.path()).unwrap(), Some(made));
            let err = Engine::open(dir.path(), asked).err().unwrap().to_string();
            assert!(err.contains(&format!("holds a {made} database")), "{err}");
            let e = Engine::open(dir.path(), made).unwrap();
            assert_eq!(e.kind(), made);
            assert_eq!(e.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        }
    }

    #[test]
    fn an_empty_or_missing_directory_holds_no_database() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(BackendKind::detect(dir.path()).unwrap(), None);
        assert_eq!(BackendKind::detect(&dir.path().join("nope")).unwrap(), None);
    }
}
