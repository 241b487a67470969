//! The `meta` file: the vote and the last purged log id.
//!
//! ```text
//! "CAIRNMT1" | version u32 LE (1) | body length u32 LE | body | CRC32 of everything before, u32 LE
//! body: vote length u32 LE (u32::MAX = none) | vote bytes | purged flag u8 | purged index u64 LE | purged term u64 LE
//! ```
//!
//! Replaced atomically: written to `meta.tmp`, fsynced, renamed over `meta`,
//! then the directory is fsynced. A crash leaves the old or the new file,
//! never a mix; a leftover `meta.tmp` is removed on open.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use bytes::{BufMut, Bytes};

use crate::error::{Error, Result};
use crate::io::{self as lio, FaultHook};
use crate::LogId;

const MAGIC: &[u8; 8] = b"CAIRNMT1";
const VERSION: u32 = 1;
pub(crate) const FILE: &str = "meta";
const TMP: &str = "meta.tmp";

/// What the meta file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) vote: Option<Bytes>,
    pub(crate) purged: Option<LogId>,
}

impl Meta {
    fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        match &self.vote {
            Some(v) => {
                body.put_u32_le(v.len() as u32);
                body.put_slice(v);
            }
            None => body.put_u32_le(u32::MAX),
        }
        match self.purged {
            Some(p) => {
                body.put_u8(1);
                body.put_u64_le(p.index);
                body.put_u64_le(p.term);
            }
            None => {
                body.put_u8(0);
                body.put_u64_le(0);
                body.put_u64_le(0);
            }
        }
        let mut out = Vec::with_capacity(body.len() + 20);
        out.put_slice(MAGIC);
        out.put_u32_le(VERSION);
        out.put_u32_le(body.len() as u32);
        out.put_slice(&body);
        let crc = crc32fast::hash(&out);
        out.put_u32_le(crc);
        out
    }

    fn decode(path: &Path, buf: &[u8]) -> Result<Self> {
        let corrupt = |offset: usize, reason: &str| Error::Corrupt {
            segment: path.to_path_buf(),
            offset: offset as u64,
            reason: reason.to_string(),
        };
        if buf.len() < 20 || &buf[..8] != MAGIC {
            return Err(corrupt(0, "bad magic or short file"));
        }
        let (data, crc) = buf.split_at(buf.len() - 4);
        if crc32fast::hash(data) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(corrupt(0, "meta checksum mismatch"));
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        if u32_at(8) != VERSION {
            return Err(corrupt(8, "unknown meta version"));
        }
        let body = &data[16..];
        if body.len() != u32_at(12) as usize || body.len() < 4 {
            return Err(corrupt(12, "meta length mismatch"));
        }
        let vote_len = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
        let (vote, rest) = if vote_len == u32::MAX {
            (None, &body[4..])
        } else {
            let end = 4 + vote_len as usize;
            if body.len() < end {
                return Err(corrupt(16, "vote past end"));
            }
            (Some(Bytes::copy_from_slice(&body[4..end])), &body[end..])
        };
        if rest.len() != 17 {
            return Err(corrupt(16, "bad purged field"));
        }
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&rest[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let purged = (rest[0] == 1).then(|| LogId {
            index: u64_at(1),
            term: u64_at(9),
        });
        Ok(Meta { vote, purged })
    }

    /// Reads the meta file of `dir` (default when absent).
    pub(crate) fn load(dir: &Path) -> Result<Self> {
        let tmp = dir.join(TMP);
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(|e| Error::io("remove", &tmp, e))?;
        }
        let path = dir.join(FILE);
        match fs::read(&path) {
            Ok(buf) => Self::decode(&path, &buf),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Meta::default()),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    /// Durably replaces the meta file of `dir` with `self`.
    pub(crate) fn store(&self, dir: &Path, fault: &Option<FaultHook>) -> Result<()> {
        let tmp = dir.join(TMP);
        let path = dir.join(FILE);
        let mut f: File = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        lio::check(fault, lio::Fault::Write, &tmp)?;
        f.write_all(&self.encode())
            .map_err(|e| Error::io("write", &tmp, e))?;
        // The new contents must be on disk before the rename makes them
        // the meta file, or a crash could leave an empty `meta`.
        lio::sync_data(&f, &tmp, fault)?;
        fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
        // Make the rename itself durable.
        lio::sync_dir(dir, fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Meta::load(dir.path()).unwrap(), Meta::default());
        let m = Meta {
            vote: Some(Bytes::from_static(b"v1")),
            purged: Some(LogId { index: 9, term: 2 }),
        };
        m.store(dir.path(), &None).unwrap();
        assert_eq!(Meta::load(dir.path()).unwrap(), m);
        let path = dir.path().join(FILE);
        let mut raw = fs::read(&path).unwrap();
        raw[18] ^= 4;
        fs::write(&path, &raw).unwrap();
        assert!(matches!(Meta::load(dir.path()), Err(Error::Corrupt { .. })));
    }
}
