//! Work that must yield to the member's requests: copying the whole store
//! (Raft snapshots, backups) and writing files of its size.
//!
//! Such work runs on a thread of its own at a lower priority, so that it
//! takes the CPU the requests leave, and its files reach the disk a few
//! MiB at a time ([`PacedFile`]): a gigabyte made durable by one fsync
//! holds the Raft log's fsyncs behind it for as long as the disk takes
//! (1,040 MiB written in one second each time a 1.5 GB Raft snapshot was
//! made, on this design's test machine).
//!
//! Files are not removed a few MiB at a time (truncated in steps) even
//! though freeing a gigabyte at once stalls the disk too: a replaced
//! snapshot image or an old backup may still be read through an open
//! handle, and a truncation would cut it short under its reader.
//!
//! Owns: the priority of those threads and the pace of their writes.
//!
//! May not: decide what is copied or when.

use std::fs::File;
use std::io::{self, Write};

/// Nice value of the threads that copy the store, so that a copy takes
/// the CPU the member's requests leave: at the default priority, a
/// backup of a 1 GiB store on 2 cores took put p99 from 1.7 to 5.2 ms
/// (`cairn-bench snapshot-save`).
const NICE: i32 = 10;

/// Bytes written between two `fdatasync`s of a [`PacedFile`].
const PACE: u64 = 8 << 20;

/// Runs `f` on a new thread of lower priority (`NICE`; Linux keeps a
/// nice value per thread, threads it starts inherit it, and the thread
/// ends with `f`, so no pooled thread is left slowed).
pub fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let me = rustix::thread::gettid();
            if let Err(e) = rustix::process::setpriority_process(Some(me), NICE) {
                tracing::debug!(error = %e, "lowering a background thread's priority");
            }
            f()
        })
}

/// Runs `f` (blocking) on a thread of its own at the lower priority, and
/// waits for it.
pub async fn run<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn(name, move || {
        let _ = tx.send(f());
    })?;
    rx.await
        .map_err(|_| io::Error::other("a background thread ended without an answer"))?
}

/// A file being written that is made durable `PACE` bytes at a time,
/// so its final `sync_all` has little left to write.
pub struct PacedFile {
    file: File,
    unsynced: u64,
}

impl PacedFile {
    /// Paces writes to `file`.
    pub fn new(file: File) -> PacedFile {
        PacedFile { file, unsynced: 0 }
    }

    /// Makes everything written durable and hands the file back.
    pub fn finish(self) -> io::Result<File> {
        self.file.sync_all()?;
        Ok(self.file)
    }
}

impl Write for PacedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= PACE {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_paced_file_holds_every_byte_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut w = PacedFile::new(File::create(&path).expect("create"));
        let piece: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        for _ in 0..(PACE / (1 << 20) * 2 + 3) {
            w.write_all(&piece).expect("write");
        }
        w.finish().expect("finish");
        let mut back = Vec::new();
        File::open(&path)
            .expect("open")
            .read_to_end(&mut back)
            .expect("read");
        assert_eq!(back.len() as u64, (PACE / (1 << 20) * 2 + 3) << 20);
        assert!(back.chunks(1 << 20).all(|c| c == piece.as_slice()));
    }
}
