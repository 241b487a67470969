//! The backup file: what `Maintenance.Snapshot` streams (so what
//! `etcdctl snapshot save` writes) and what `cairnutl snapshot status`
//! and `cairnutl snapshot restore` read.
//!
//! ```text
//! "CAIRNBK1" | cluster id u64 BE
//! kv image (cairn-kv's format: every revision not compacted, the leases,
//!           the auth state, the applied position with the membership;
//!           its own CRC32 at its end)
//! zero bytes up to a multiple of 512 bytes
//! SHA-256 of every byte before it (32 bytes), as etcd appends one
//! ```
//!
//! The padding is for etcdctl, which takes a file whose size is not 32
//! more than a multiple of 512 for one without its hash and refuses it.
//!
//! The image is exported while writes go on (a point-in-time view of the
//! store) and streamed in [`CHUNK`]-byte pieces through a bounded
//! channel, so a member holds a few chunks of a backup, never all of it.
//! A file that is truncated, altered or not a backup is refused before
//! anything is restored from it.
//!
//! May not: start, stop or change a running member.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
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

/// Nice value of the threads that export backups, so that an export
/// takes the CPU the member's requests leave: at the default priority, a
/// save of a 1 GiB store on 2 cores took put p99 from 1.7 to 5.2 ms
/// (`cairn-bench snapshot-save`).
const EXPORT_NICE: i32 = 10;

/// Runs `f` on a new thread of lower priority ([`EXPORT_NICE`]; Linux
/// keeps a nice value per thread, and the thread ends with `f`, so no
/// pooled thread is left slowed).
fn spawn_export<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new()
        .name("cairn-backup".into())
        .spawn(move || {
            let me = rustix::thread::gettid();
            if let Err(e) = rustix::process::setpriority_process(Some(me), EXPORT_NICE) {
                tracing::debug!(error = %e, "lowering the backup thread's priority");
            }
            f()
        })
}

/// Runs `f` (a blocking export) as [`spawn_export`] does and waits for it.
pub async fn in_background<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn_export(move || {
        let _ = tx.send(f());
    })?;
    rx.await
        .map_err(|_| io::Error::other("the backup thread ended without an answer"))?
}

/// Streams a backup of `store` (of cluster `cluster_id`): pieces of at
/// most [`CHUNK`] bytes, the last one the SHA-256. Exported on a thread
/// of its own, at a lower priority than the member's requests; dropping
/// the receiver stops the export.
pub fn stream(store: Arc<Store>, cluster_id: u64) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let failed = tx.clone();
    let spawned = spawn_export(move || {
        let pieces = tx.clone();
        let send = move |piece: Vec<u8>| {
            pieces.blocking_send(Ok(Bytes::from(piece))).map_err(|_| {
                io::Error::new(io::ErrorKind::BrokenPipe, "the snapshot's receiver is gone")
            })
        };
        if let Err(e) = write_backup(&store, cluster_id, send) {
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
pub fn write_file(store: &Store, cluster_id: u64, path: &Path) -> io::Result<ImageInfo> {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let mut f = File::create(&part)?;
    let info = {
        let out = &mut f;
        write_backup(store, cluster_id, |piece: Vec<u8>| out.write_all(&piece))
    };
    let info = match info.and_then(|i| f.sync_all().map(|()| i)) {
        Ok(i) => i,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    drop(f);
    std::fs::rename(&part, path)?;
    if let Some(dir) = path.parent() {
        crate::durable::sync_dir(dir)?;
    }
    Ok(info)
}

/// Writes a whole backup of `store`, padded and hashed, in pieces handed
/// to `send`.
fn write_backup(
    store: &Store,
    cluster_id: u64,
    send: impl FnMut(Vec<u8>) -> io::Result<()>,
) -> io::Result<ImageInfo> {
    let mut w = ChunkWriter {
        send,
        buf: Vec::with_capacity(CHUNK),
        sha: Sha256::new(),
        written: 0,
    };
    w.write_all(MAGIC)?;
    w.write_all(&cluster_id.to_be_bytes())?;
    let info = store.export(&mut w).map_err(io::Error::other)?;
    w.finish()?;
    Ok(info)
}

/// Cuts what is written into pieces, hashing them, and hands them to
/// `send` (which may block: the stream is [`IN_FLIGHT`] pieces behind).
struct ChunkWriter<F: FnMut(Vec<u8>) -> io::Result<()>> {
    send: F,
    buf: Vec<u8>,
    sha: Sha256,
    /// Bytes written so far.
    written: u64,
}

impl<F: FnMut(Vec<u8>) -> io::Result<()>> ChunkWriter<F> {
    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.sha.update(&piece);
        (self.send)(piece)
    }

    /// Pads, sends what is buffered, then the hash.
    fn finish(mut self) -> io::Result<()> {
        let pad = (ALIGN - self.written % ALIGN) % ALIGN;
        self.write_all(&vec![0u8; pad as usize])?;
        self.send_buffered()?;
        let digest = self.sha.clone().finalize().to_vec();
        (self.send)(digest)
    }
}

impl<F: FnMut(Vec<u8>) -> io::Result<()>> Write for ChunkWriter<F> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = b.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&b[..n]);
        self.written += n as u64;
        if self.buf.len() == CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a backup file holds, read and checked without restoring it.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The cluster it was taken from.
    pub cluster_id: u64,
    /// The kv image's header and counts.
    pub image: ImageInfo,
    /// The file's size in bytes.
    pub size: u64,
}

/// Reads the header of the backup at `path` and checks its SHA-256
/// (unless `skip_hash_check`): the file's size and cluster id, with the
/// reader positioned at the kv image and limited to it.
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
    if &header[..8] != MAGIC {
        if header[..7] == MAGIC[..7] {
            return Err(BackupError::Invalid(format!(
                "{} is a Cairn snapshot file of format {:?}, which this version does not read (it reads {:?}): use the cairnutl of the Cairn that wrote it",
                path.display(),
                char::from(header[7]),
                char::from(MAGIC[7])
            )));
        }
        return Err(BackupError::Invalid(format!(
            "{} is not a Cairn snapshot file",
            path.display()
        )));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&header[8..]);
    let cluster_id = u64::from_be_bytes(id);
    if !skip_hash_check {
        let mut sha = Sha256::new();
        sha.update(header);
        let mut body = (&mut r).take(size - HEADER_LEN - HASH_LEN);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = body.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
        }
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

/// Reads the backup at `path` whole and checks it: the SHA-256 and the
/// kv image's own checksum.
pub fn inspect(path: &Path) -> Result<Summary, BackupError> {
    let (size, cluster_id, mut image) = open_checked(path, false)?;
    let info = cairn_kv::snapshot::inspect(&mut image)?;
    Ok(Summary {
        cluster_id,
        image: info,
        size,
    })
}

/// The kv image inside the backup at `path`, its SHA-256 checked first
/// unless `skip_hash_check` (the image's own checksum is checked by its
/// reader), with the cluster it was taken from.
pub fn open_image(path: &Path, skip_hash_check: bool) -> Result<(u64, impl Read), BackupError> {
    let (_, cluster_id, image) = open_checked(path, skip_hash_check)?;
    Ok((cluster_id, image))
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
    let (size, cluster_id, mut image) = open_checked(path, skip_hash_check)?;
    let info = store.import_with(&mut image, how)?;
    Ok(Summary {
        cluster_id,
        image: info,
        size,
    })
}
