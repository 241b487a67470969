//! Scheduled backups (`--snapshot-interval`, `--snapshot-dir`,
//! `--snapshot-retention`): every interval, a backup file of this
//! member's store (the format `etcdctl snapshot save` gets, see
//! [`crate::backup`]), written atomically, named after the member and the
//! time it was taken (`backup-<name>-<UTC time>.db`), the newest N of the
//! member's kept (members may share a directory).
//!
//! Owns: the schedule, the file names and the pruning.
//!
//! May not: write or remove anything but this member's `backup-*.db`
//! files (and their `.part` while one is written) in the directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::Inner;

const PREFIX: &str = "backup-";
const SUFFIX: &str = ".db";

impl Inner {
    /// Where scheduled backups go.
    pub(crate) fn backup_dir(&self) -> PathBuf {
        self.config
            .backups
            .dir
            .clone()
            .unwrap_or_else(|| self.config.data_dir.join("backups"))
    }

    /// Writes a backup every `every` until the member stops.
    pub(super) async fn run_backups(
        self: Arc<Self>,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let dir = self.backup_dir();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let me = Arc::clone(&self);
            let into = dir.clone();
            let r = crate::background::run("cairn-backup", move || me.write_backup(&into)).await;
            match r {
                Ok((path, revision)) => tracing::info!(
                    path = %path.display(),
                    revision,
                    "scheduled backup written"
                ),
                Err(e) => {
                    tracing::error!(error = %e, dir = %dir.display(), "scheduled backup failed")
                }
            }
        }
    }

    /// Writes one backup into `dir` and prunes the old ones; answers the
    /// file and the revision it holds. Blocking.
    fn write_backup(&self, dir: &Path) -> std::io::Result<(PathBuf, i64)> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let prefix = format!("{PREFIX}{}-", self.config.name);
        let path = dir.join(format!("{prefix}{}{SUFFIX}", stamp(SystemTime::now())));
        let info = crate::backup::write_file(&self.store, &path)?;
        prune(dir, &prefix, self.config.backups.keep.max(1))?;
        Ok((path, info.revision))
    }
}

/// `2026-12-07T04-20-00.123Z`: UTC, sorts as it reads.
fn stamp(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}-{:02}-{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Removes all but the newest `keep` backups named `prefix...` in `dir`,
/// and any of their `.part` left by a crash.
fn prune(dir: &Path, prefix: &str, keep: usize) -> std::io::Result<()> {
    let mut backups = Vec::new();
    for ent in std::fs::read_dir(dir)? {
        let name = ent?.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        if name.ends_with(SUFFIX) {
            backups.push(name);
        } else if name.ends_with(".part") {
            std::fs::remove_file(dir.join(&name))?;
        }
    }
    backups.sort();
    let excess = backups.len().saturating_sub(keep);
    for name in &backups[..excess] {
        std::fs::remove_file(dir.join(name))?;
    }
    crate::durable::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_sort_as_time_goes() {
        let a = stamp(SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_615_291_005));
        let b = stamp(SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_615_291_010));
        assert_eq!(a, "2026-12-07T03-48-11.005Z");
        assert!(a < b);
    }

    #[test]
    fn prune_keeps_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..5 {
            std::fs::write(dir.path().join(format!("backup-m0-{i}{SUFFIX}")), b"x").expect("write");
        }
        std::fs::write(dir.path().join(format!("backup-m0-9{SUFFIX}.part")), b"x").expect("write");
        // Another member's, and a file of someone else: left alone.
        std::fs::write(dir.path().join(format!("backup-m1-0{SUFFIX}")), b"x").expect("write");
        std::fs::write(dir.path().join("other.db"), b"x").expect("write");
        prune(dir.path(), "backup-m0-", 2).expect("prune");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "backup-m0-3.db",
                "backup-m0-4.db",
                "backup-m1-0.db",
                "other.db"
            ]
        );
    }
}
