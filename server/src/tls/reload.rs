//! A TLS configuration rebuilt when one of its files changes.
//!
//! Each handshake asks for the configuration; the files are looked at
//! (one `stat` each) and the configuration is rebuilt only when one of
//! them differs from when it was last built — by inode (a rotation that
//! renames a new file into place), modification time or length. A
//! rebuild that fails (a file half-written, a key that does not match)
//! keeps the last good configuration and logs why, once per change seen.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What identifies one version of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp(Option<(u64, i64, i64, u64)>);

fn stamp(path: &PathBuf) -> Stamp {
    Stamp(
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.ino(), m.mtime(), m.mtime_nsec(), m.len())),
    )
}

/// A configuration of type `T` built from `files` by `build`.
pub(super) struct Reloading<T> {
    files: Vec<PathBuf>,
    build: Box<dyn Fn() -> Result<T, String> + Send + Sync>,
    /// The files' stamps when last looked at, and the configuration last
    /// built successfully.
    current: Mutex<(Vec<Stamp>, Arc<T>)>,
    /// Names the configuration in the log.
    what: &'static str,
}

impl<T> Reloading<T> {
    /// Builds the first configuration; its failure is the caller's (a
    /// member does not start with TLS it cannot load).
    pub(super) fn new(
        what: &'static str,
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let stamps = files.iter().map(stamp).collect();
        let first = build()?;
        Ok(Self {
            files,
            build: Box::new(build),
            current: Mutex::new((stamps, Arc::new(first))),
            what,
        })
    }

    /// The configuration for the next handshake.
    pub(super) fn get(&self) -> Arc<T> {
        let stamps: Vec<Stamp> = self.files.iter().map(stamp).collect();
        let mut cur = match self.current.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if cur.0 != stamps {
            cur.0 = stamps;
            match (self.build)() {
                Ok(t) => {
                    tracing::info!(what = self.what, "TLS files changed; reloaded");
                    cur.1 = Arc::new(t);
                }
                Err(e) => tracing::warn!(
                    what = self.what,
                    error = %e,
                    "TLS files changed but cannot be loaded; keeping the previous ones"
                ),
            }
        }
        Arc::clone(&cur.1)
    }
}
