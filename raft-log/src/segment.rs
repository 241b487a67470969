//! Segment files: the log is a sequence of files named by a sequence number
//! (`00000000000000000001.seg`, …), each a 16-byte header followed by
//! records (see [`crate::record`]).
//!
//! ```text
//! header: "CAIRNSG1" | version u32 LE (1) | CRC32 of the first 12 bytes, u32 LE
//! ```
//!
//! Only the last segment is written to. A new segment is created with its
//! header, fdatasynced, and the directory fsynced before any record goes in.
//!
//! The last segment is extended with zeros 1 MiB ahead of its records, in
//! the same write-and-sync as the batch that needs the room; records then
//! overwrite the zeros, so most syncs change no file metadata. On open the
//! zeros after the last record are cut like any torn tail. Before the next
//! segment is created the zeros are cut off and the cut synced, so every
//! segment but the last ends exactly at its last record.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::BufMut;

use crate::error::{Error, Result};
use crate::io::{self as lio, FaultHook};

const MAGIC: &[u8; 8] = b"CAIRNSG1";
const VERSION: u32 = 1;
/// Bytes of the segment header.
pub const HEADER_LEN: u64 = 16;

/// The header bytes of every segment.
pub fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = Vec::with_capacity(HEADER_LEN as usize);
    h.put_slice(MAGIC);
    h.put_u32_le(VERSION);
    let crc = crc32fast::hash(&h);
    h.put_u32_le(crc);
    let mut out = [0u8; HEADER_LEN as usize];
    out.copy_from_slice(&h);
    out
}

/// Path of segment `seq` in `dir`.
pub fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

/// Segments in `dir`, by sequence number.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for ent in fs::read_dir(dir).map_err(|e| Error::io("read dir", dir, e))? {
        let ent = ent.map_err(|e| Error::io("read dir", dir, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(num) = name.strip_suffix(".seg") else {
            continue;
        };
        if let Ok(seq) = num.parse::<u64>() {
            out.push((seq, ent.path()));
        }
    }
    out.sort_by_key(|(s, _)| *s);
    Ok(out)
}

/// Creates segment `seq` durably: header written and synced, directory
/// entry synced. Returns the file opened for writing.
pub fn create(dir: &Path, seq: u64, hook: &Option<FaultHook>) -> Result<File> {
    let p = path(dir, seq);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .map_err(|e| Error::io("create", &p, e))?;
    lio::check(hook, lio::Fault::Write, &p)?;
    f.write_all(&header())
        .map_err(|e| Error::io("write", &p, e))?;
    // Header durable before the segment is used…
    lio::sync_data(&f, &p, hook)?;
    // …and the new directory entry too, or a crash could lose the file.
    lio::sync_dir(dir, hook)?;
    Ok(f)
}

/// Opens an existing segment for appending at `len`.
pub fn open_for_append(p: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .map_err(|e| Error::io("open", p, e))
}

/// Opens a segment for reads.
pub fn open_for_read(p: &Path) -> Result<File> {
    File::open(p).map_err(|e| Error::io("open", p, e))
}
