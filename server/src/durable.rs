//! Writing small files durably: a crash leaves either the old file or the
//! new one whole, never a mix, and a file reported written survives.
//! The one helper for the member's identity and snapshot metadata.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to `path`: to a temporary file beside it, fsynced, then
/// renamed over `path`, then the directory fsynced.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        // Owner only: a member's files are its own (etcd's 0600).
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        // Contents on disk before the rename publishes them.
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    // The rename itself is durable only once the directory is.
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes the directory entries of `dir` (creations, renames, removals)
/// durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("meta");
        write_file(&p, b"one").expect("write");
        write_file(&p, b"two, longer").expect("rewrite");
        assert_eq!(fs::read(&p).expect("read"), b"two, longer");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["meta"]);
    }
}
