//! fsync helpers and the fault-injection hook used by tests.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

/// An I/O step a [`FaultHook`] can make fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Writing records or a file.
    Write,
    /// fdatasync of a file.
    Sync,
    /// fsync of the log directory.
    SyncDir,
}

/// Called before each I/O step; returning true makes the step fail with an
/// injected error (for tests of failure handling).
pub type FaultHook = Arc<dyn Fn(Fault) -> bool + Send + Sync>;

pub(crate) fn check(hook: &Option<FaultHook>, fault: Fault, path: &Path) -> Result<()> {
    if let Some(h) = hook {
        if h(fault) {
            let op = match fault {
                Fault::Write => "write",
                Fault::Sync => "fdatasync",
                Fault::SyncDir => "fsync dir",
            };
            return Err(Error::io(op, path, std::io::Error::other("injected fault")));
        }
    }
    Ok(())
}

/// fdatasync: file data (and the size) on stable storage.
pub(crate) fn sync_data(f: &File, path: &Path, hook: &Option<FaultHook>) -> Result<()> {
    check(hook, Fault::Sync, path)?;
    f.sync_data().map_err(|e| Error::io("fdatasync", path, e))
}

/// fsync of a directory: makes creations, renames and removals in it durable.
pub(crate) fn sync_dir(dir: &Path, hook: &Option<FaultHook>) -> Result<()> {
    check(hook, Fault::SyncDir, dir)?;
    let d = File::open(dir).map_err(|e| Error::io("open dir", dir, e))?;
    d.sync_all().map_err(|e| Error::io("fsync dir", dir, e))
}
