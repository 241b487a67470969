//! The backup file: what `Maintenance.Snapshot` streams (so what
//! `etcdctl snapshot save` writes), what scheduled backups write, and
//! what `cairnutl snapshot status` and `cairnutl snapshot restore` read.
//!
//! A backup is an etcd snapshot file, as etcd's own Snapshot streams: a
//! bbolt file with etcd's buckets and key encoding (every key revision
//! not compacted, the leases, users and roles, the compaction revision;
//! see [`crate::migrate`]), its SHA-256 appended. So `etcdctl snapshot
//! status` and `etcdctl snapshot restore` take a Cairn backup, and a
//! backup of a Cairn cluster restores into etcd as into Cairn.
//!
//! Files written by earlier versions of Cairn, in Cairn's own format, are
//! still read:
//!
//! ```text
//! "CAIRNBK1" | cluster id u64 BE
//! kv image (cairn-kv's format, its own CRC32 at its end)
//! zero bytes up to a multiple of 512 bytes
//! SHA-256 of every byte before it (32 bytes)
//! ```
//!
//! A backup is taken from a point-in-time view of the store while writes
//! go on: the kv image is exported on one thread and written as a bbolt
//! file by another, through a pipe, into a scratch file in the data dir
//! that is unlinked at once (a crash leaves nothing behind); the file is
//! then streamed in [`CHUNK`]-byte pieces through a bounded channel. A
//! member holds a few pieces and the bbolt file's branch keys in memory,
//! never the keyspace. A file that is truncated, altered or not a backup
//! is refused before anything is restored from it; a backup must end
//! with its SHA-256 unless the caller skips the check.
//!
//! May not: start, stop or change a running member.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use cairn_kv::{ImageInfo, Restore, Store};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"CAIRNBK1";

/// Bytes before the kv image.
const HEADER_LEN: u64 = 16;

/// Bytes of the SHA-256 at the end.
const HASH_LEN: u64 = 32;

/// Bytes per streamed piece.
pub const CHUNK: usize = 64 << 10;

/// The hashed part of a file is a multiple of this many bytes.
const ALIGN: u64 = 512;

/// Pieces in flight between the exporting thread and the stream.
const IN_FLIGHT: usize = 8;

/// Why a backup file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file could not be read.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The file is not a backup, or not whole.
    #[error("{0}")]
    Invalid(String),
    /// The file's SHA-256 does not match its contents.
    #[error(
        "snapshot file integrity check failed: the SHA-256 at its end does not match its contents"
    )]
    HashMismatch,
    /// The kv image inside is damaged.
    #[error("snapshot file's kv image: {0}")]
    Image(#[from] cairn_kv::Error),
}

/// Streams a backup of `store`: pieces of at most [`CHUNK`] bytes, the
/// last ending with the SHA-256. Made on a thread of its own, at a lower
/// priority than the member's requests, in a scratch file in
/// `scratch_dir`; dropping the receiver stops it.
pub fn stream(store: Arc<Store>, scratch_dir: PathBuf) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let failed = tx.clone();
    let spawned = crate::background::spawn("cairn-backup", move || {
        let pieces = tx.clone();
        let send = move |piece: Vec<u8>| {
            pieces.blocking_send(Ok(Bytes::from(piece))).map_err(|_| {
                io::Error::new(io::ErrorKind::BrokenPipe, "the snapshot's receiver is gone")
            })
        };
        if let Err(e) = write_backup(&store, &scratch_dir, send) {
            // The receiver may be gone: nothing to tell then.
            let _ = tx.blocking_send(Err(e));
        }
    });
    if let Err(e) = spawned {
        let _ = failed.try_send(Err(e));
    }
    rx
}

/// Writes a backup of `store` to `path`, durably: to `path` with `.part`
/// appended, fsynced, then renamed (a crash leaves the old file or the
/// new one, never half of one). Blocking.
pub fn write_file(store: &Store, path: &Path) -> io::Result<ImageInfo> {
    let mut info = None;
    crate::pipe::through(
        |w| {
            info = Some(store.export(&mut { w }).map_err(io::Error::other)?);
            Ok(())
        },
        |r| {
            crate::migrate::to_etcd_db(&mut { r }, path)
                .map(|_| ())
                .map_err(io::Error::other)
        },
    )?;
    info.ok_or_else(|| io::Error::other("the export ended without its summary"))
}

/// A new file in `dir`, removed from the directory at once: it takes
/// space only while open, and a crash leaves nothing behind.
fn scratch_file(dir: &Path) -> io::Result<File> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".backup-{}-{n}.tmp", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// Writes a whole backup of `store` (the bbolt file and its SHA-256) in
/// pieces handed to `send`, which may block: the stream is
/// [`IN_FLIGHT`] pieces behind.
fn write_backup(
    store: &Store,
    scratch_dir: &Path,
    mut send: impl FnMut(Vec<u8>) -> io::Result<()>,
) -> io::Result<ImageInfo> {
    let scratch = scratch_file(scratch_dir)?;
    let mut info = None;
    let mut file = crate::pipe::through(
        |w| {
            info = Some(store.export(&mut { w }).map_err(io::Error::other)?);
            Ok(())
        },
        |r| {
            crate::migrate::write_etcd_file(&mut { r }, scratch, false)
                .map(|(f, _)| f)
                .map_err(io::Error::other)
        },
    )?;
    // Hashed as it is read back and sent, the SHA-256 last.
    file.rewind()?;
    let mut sha = Sha256::new();
    loop {
        let mut piece = vec![0u8; CHUNK];
        let mut n = 0;
        while n < CHUNK {
            match file.read(&mut piece[n..])? {
                0 => break,
                m => n += m,
            }
        }
        if n == 0 {
            break;
        }
        piece.truncate(n);
        sha.update(&piece);
        send(piece)?;
    }
    send(sha.finalize().to_vec())?;
    info.ok_or_else(|| io::Error::other("the export ended without its summary"))
}

/// What a backup file holds, read and checked without restoring it.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The cluster it was taken from (known for files in Cairn's own
    /// format only: etcd's has no cluster id).
    pub cluster_id: Option<u64>,
    /// The kv image's header and counts.
    pub image: ImageInfo,
    /// The file's size in bytes.
    pub size: u64,
}

/// The two formats a backup file may have.
enum Format {
    /// etcd's snapshot file.
    Etcd,
    /// Cairn's own, of earlier versions.
    Cairn,
}

/// bbolt's meta page magic, after the page header.
const BBOLT_MAGIC: u32 = 0xED0C_DAED;

/// Tells the format of the file at `path` from its first bytes.
fn format_of(path: &Path) -> Result<Format, BackupError> {
    let mut head = [0u8; 24];
    let mut f = File::open(path)?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            m => n += m,
        }
    }
    if n >= 8 && &head[..8] == MAGIC {
        return Ok(Format::Cairn);
    }
    if n >= 8 && head[..7] == MAGIC[..7] {
        return Err(BackupError::Invalid(format!(
            "{} is a Cairn snapshot file of format {:?}, which this version does not read (it reads {:?} and etcd's): use the cairnutl of the Cairn that wrote it",
            path.display(),
            char::from(head[7]),
            char::from(MAGIC[7])
        )));
    }
    if n == head.len()
        && u32::from_le_bytes([head[16], head[17], head[18], head[19]]) == BBOLT_MAGIC
    {
        return Ok(Format::Etcd);
    }
    Err(BackupError::Invalid(format!(
        "{} is not a snapshot file (neither etcd's nor Cairn's)",
        path.display()
    )))
}

/// Refuses an etcd snapshot file without its SHA-256 unless the check
/// is skipped (as `etcdctl snapshot restore` does): such a file may be a
/// truncated one.
fn require_hash(path: &Path, size: u64, skip_hash_check: bool) -> Result<(), BackupError> {
    if skip_hash_check || size % ALIGN == HASH_LEN {
        return Ok(());
    }
    Err(BackupError::Invalid(format!(
        "snapshot file integrity check failed: {} does not end with its SHA-256 (a truncated file?); --skip-hash-check takes it as it is",
        path.display()
    )))
}

/// An etcd snapshot file's error, as a backup's.
fn etcd_error(e: crate::migrate::MigrateError) -> BackupError {
    match e {
        crate::migrate::MigrateError::HashMismatch => BackupError::HashMismatch,
        crate::migrate::MigrateError::Io(e) => BackupError::Io(e),
        e => BackupError::Invalid(e.to_string()),
    }
}

/// Reads the header of a backup in Cairn's format at `path` and checks
/// its SHA-256 (unless `skip_hash_check`): the file's size and cluster
/// id, with the reader positioned at the kv image and limited to it.
fn open_checked(
    path: &Path,
    skip_hash_check: bool,
) -> Result<(u64, u64, io::Take<BufReader<File>>), BackupError> {
    let size = std::fs::metadata(path)?.len();
    if size < HEADER_LEN + HASH_LEN {
        return Err(BackupError::Invalid(format!(
            "{} is too short to be a snapshot file ({size} bytes)",
            path.display()
        )));
    }
    let mut r = BufReader::new(File::open(path)?);
    let mut header = [0u8; HEADER_LEN as usize];
    r.read_exact(&mut header)?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&header[8..]);
    let cluster_id = u64::from_be_bytes(id);
    if !skip_hash_check {
        let mut sha = Sha256::new();
        sha.update(header);
        let mut body = (&mut r).take(size - HEADER_LEN - HASH_LEN);
        io::copy(&mut body, &mut sha)?;
        let mut want = [0u8; HASH_LEN as usize];
        r.read_exact(&mut want)?;
        if sha.finalize().as_slice() != want {
            return Err(BackupError::HashMismatch);
        }
        r = BufReader::new(File::open(path)?);
        r.read_exact(&mut header)?;
    }
    Ok((size, cluster_id, r.take(size - HEADER_LEN - HASH_LEN)))
}

/// Hands the kv image of the backup at `path` to `consume`, the SHA-256
/// checked first unless `skip_hash_check`; answers the cluster it was
/// taken from, if the file says, and what `consume` answered. An etcd
/// file is converted on another thread as it is read; its error, if
/// any, is the one answered.
pub fn with_image<T, E>(
    path: &Path,
    skip_hash_check: bool,
    consume: impl FnOnce(&mut dyn Read) -> Result<T, E> + Send,
) -> Result<(Option<u64>, T), E>
where
    T: Send,
    E: From<BackupError> + From<io::Error> + Send,
{
    match format_of(path)? {
        Format::Etcd => {
            let size = std::fs::metadata(path)?.len();
            require_hash(path, size, skip_hash_check)?;
            let out = crate::pipe::through(
                |w| {
                    crate::migrate::from_etcd_db(path, skip_hash_check, w, b"")
                        .map(|_| ())
                        .map_err(|e| E::from(etcd_error(e)))
                },
                consume,
            )?;
            Ok((None, out))
        }
        Format::Cairn => {
            let (_, cluster_id, mut image) = open_checked(path, skip_hash_check)?;
            Ok((Some(cluster_id), consume(&mut image)?))
        }
    }
}

/// Reads the backup at `path` whole and checks it: the SHA-256 and the
/// kv image's own checksum.
pub fn inspect(path: &Path) -> Result<Summary, BackupError> {
    let size = std::fs::metadata(path)?.len();
    let (cluster_id, info) = with_image(path, false, |image| {
        Ok::<_, BackupError>(cairn_kv::snapshot::inspect(&mut { image })?)
    })?;
    Ok(Summary {
        cluster_id,
        image: info,
        size,
    })
}

/// Replaces `store`'s contents with the backup at `path`, changed as
/// `how` says; the SHA-256 is checked first unless `skip_hash_check`
/// (the kv image's own checksum always is).
pub fn restore(
    path: &Path,
    store: &Store,
    how: &Restore,
    skip_hash_check: bool,
) -> Result<Summary, BackupError> {
    let size = std::fs::metadata(path)?.len();
    let (cluster_id, info) = with_image(path, skip_hash_check, |image| {
        Ok::<_, BackupError>(store.import_with(&mut { image }, how)?)
    })?;
    Ok(Summary {
        cluster_id,
        image: info,
        size,
    })
}
