//! A torn write at the end of a stopped member's Raft log: the record that
//! was being written when the machine lost power, only partly on disk. It
//! goes right after the last valid record of the last segment, so it was
//! never fsynced and never acknowledged; the member must cut it on open
//! and carry on (see `cairn_raft_log::recovery`).

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result};
use bytes::Bytes;
use cairn_raft_log::{record, segment};

/// Writes a partial record after the last valid one in the last segment
/// of the log under `data_dir`; returns what it wrote, for the history.
pub fn tear(data_dir: &Path, rng: &mut fastrand::Rng) -> Result<String> {
    let wal = data_dir.join("member").join("wal");
    if !wal.exists() {
        // A member removed meanwhile: its data is gone.
        return Ok("no log".into());
    }
    let segments = segment::list(&wal).context("list segments")?;
    let Some((_, last)) = segments.last() else {
        return Ok("no log yet".into());
    };
    let bytes = Bytes::from(std::fs::read(last).context("read last segment")?);
    let mut end = segment::HEADER_LEN as usize;
    while end < bytes.len() {
        match record::decode(&bytes.slice(end..)) {
            Ok((_, len)) => end += len,
            Err(_) => break,
        }
    }
    // A header announcing a body of `claimed` bytes, and only part of it.
    let claimed = rng.usize(32..4096);
    let written = rng.usize(0..claimed);
    let mut torn = Vec::with_capacity(8 + written);
    torn.extend_from_slice(&(claimed as u32).to_le_bytes());
    torn.extend_from_slice(&rng.u32(..).to_le_bytes());
    torn.extend((0..written).map(|_| rng.u8(..)));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .context("open last segment")?;
    f.seek(SeekFrom::Start(end as u64)).context("seek")?;
    f.write_all(&torn).context("write torn record")?;
    // The harness' own write: synced so the member reads it back as is.
    f.sync_all().context("sync torn record")?;
    Ok(format!(
        "{} of a {}-byte record at offset {end} of {}",
        torn.len(),
        claimed + 8,
        last.file_name().and_then(|n| n.to_str()).unwrap_or("?")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_raft_log::{Entry, Options, RaftLog};

    #[test]
    fn a_torn_tail_is_cut_and_every_entry_survives() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("member").join("wal");
        {
            let log = RaftLog::open(&wal, Options::default()).unwrap();
            let entries = (1..=100)
                .map(|i| Entry {
                    index: i,
                    term: 1,
                    payload: Bytes::from(vec![i as u8; 100]),
                })
                .collect();
            log.append(entries).unwrap();
        }
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..5 {
            let what = tear(dir.path(), &mut rng).unwrap();
            assert!(what.contains("record at offset"), "{what}");
            let log = RaftLog::open(&wal, Options::default()).unwrap();
            assert_eq!(log.last_log_id().map(|l| l.index), Some(100));
        }
    }
}
