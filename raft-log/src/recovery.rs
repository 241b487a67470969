//! Opening a log: reading every segment, cutting a torn tail, refusing
//! damage anywhere else, and finishing an interrupted purge.
//!
//! What a crash at each step of writing can leave, and what opening does:
//!
//! | crash during…                   | leaves                                   | on open                               |
//! |---------------------------------|------------------------------------------|---------------------------------------|
//! | a group-commit write            | a partial last record / batch at the end, then zeros | tail cut at the last valid record, fsynced |
//! | no write (clean stop)           | zeros preallocated after the last record | cut like a torn tail                  |
//! | segment creation                | a last segment shorter than its header   | header rewritten                      |
//! | truncate (later segs removed first, then cut) | extra un-acknowledged entries | kept: they were never acknowledged as gone |
//! | purge (meta written, then files removed) | segments wholly below the purge point | removed                         |
//! | vote / meta replace             | old or new `meta`, maybe `meta.tmp`      | `meta.tmp` removed                    |
//!
//! An invalid record in a non-last segment, or one followed by a valid
//! record in the last segment, is corruption, not a torn write: the log
//! refuses to open with [`Error::Corrupt`] naming the file and offset.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::io as lio;
use crate::meta::Meta;
use crate::record::{self, Record};
use crate::segment;
use crate::{Options, Slot};

/// Where each segment's entries start and end.
#[derive(Clone, Debug)]
pub(crate) struct SegRange {
    pub(crate) path: PathBuf,
    pub(crate) first: Option<u64>,
    pub(crate) last: Option<u64>,
}

/// The result of opening.
pub(crate) struct Recovered {
    pub(crate) first: u64,
    pub(crate) slots: VecDeque<Slot>,
    pub(crate) committed: Option<u64>,
    pub(crate) segs: BTreeMap<u64, SegRange>,
    pub(crate) files: BTreeMap<u64, Arc<File>>,
    pub(crate) active_seq: u64,
    pub(crate) active: File,
    pub(crate) active_len: u64,
}

pub(crate) fn recover(dir: &Path, opts: &Options, meta: &Meta) -> Result<Recovered> {
    let hook = &opts.fault;
    let mut list = segment::list(dir)?;
    if list.is_empty() {
        segment::create(dir, 1, hook)?;
        list = segment::list(dir)?;
    }
    let purged = meta.purged;
    let mut slots: VecDeque<Slot> = VecDeque::new();
    let mut first: Option<u64> = None;
    let mut committed: Option<u64> = None;
    let mut segs = BTreeMap::new();
    let mut active_len = segment::HEADER_LEN;
    let n = list.len();
    for (i, (seq, path)) in list.iter().enumerate() {
        let is_last = i + 1 == n;
        let buf = Bytes::from(fs::read(path).map_err(|e| Error::io("read", path, e))?);
        let corrupt = |offset: u64, reason: String| Error::Corrupt {
            segment: path.clone(),
            offset,
            reason,
        };
        let mut range = SegRange {
            path: path.clone(),
            first: None,
            last: None,
        };
        if (buf.len() as u64) < segment::HEADER_LEN
            || buf[..segment::HEADER_LEN as usize] != segment::header()
        {
            if is_last && buf.len() as u64 <= segment::HEADER_LEN {
                // Crash while the segment was being created.
                drop(segment::create(dir, *seq, hook)?);
                segs.insert(*seq, range);
                active_len = segment::HEADER_LEN;
                continue;
            }
            return Err(corrupt(0, "bad segment header".into()));
        }
        let mut off = segment::HEADER_LEN as usize;
        while off < buf.len() {
            match record::decode(&buf.slice(off..)) {
                Ok((rec, len)) => {
                    match rec {
                        Record::Entry { index, term, .. } => {
                            let last = first.map(|f| f + slots.len() as u64 - 1);
                            if purged.is_some_and(|p| index <= p.index) {
                                if last.is_some() {
                                    return Err(corrupt(
                                        off as u64,
                                        format!("purged entry {index} after retained entries"),
                                    ));
                                }
                            } else {
                                let expected = match (last, purged) {
                                    (Some(l), _) => Some(l + 1),
                                    (None, Some(p)) => Some(p.index + 1),
                                    (None, None) => None,
                                };
                                if let Some(e) = expected {
                                    if index != e {
                                        return Err(corrupt(
                                            off as u64,
                                            format!("entry {index} where {e} was expected"),
                                        ));
                                    }
                                }
                                first.get_or_insert(index);
                                slots.push_back(Slot {
                                    term,
                                    seq: *seq,
                                    offset: off as u64,
                                    len: len as u32,
                                });
                                range.first.get_or_insert(index);
                                range.last = Some(index);
                            }
                        }
                        Record::Committed(c) => committed = Some(committed.map_or(c, |x| x.max(c))),
                    }
                    off += len;
                }
                Err(why) => {
                    let last_index = first.map(|f| f + slots.len() as u64 - 1);
                    if !is_last || !is_torn_tail(&buf, off, last_index) {
                        return Err(corrupt(off as u64, format!("invalid record ({why:?})")));
                    }
                    // Torn tail: cut it off and make the cut durable before
                    // anything is appended after it.
                    let f = segment::open_for_append(path)?;
                    f.set_len(off as u64)
                        .map_err(|e| Error::io("truncate", path, e))?;
                    lio::sync_data(&f, path, hook)?;
                    break;
                }
            }
        }
        if is_last {
            active_len = off.min(buf.len()) as u64;
        }
        segs.insert(*seq, range);
    }
    // Finish an interrupted purge: segments (but the last) holding only
    // purged entries.
    let (&active_seq, _) = segs.iter().next_back().ok_or_else(|| Error::Corrupt {
        segment: dir.to_path_buf(),
        offset: 0,
        reason: "no segment".into(),
    })?;
    let doomed: Vec<u64> = segs
        .iter()
        .filter(|(s, r)| **s != active_seq && r.last.is_none())
        .map(|(s, _)| *s)
        .collect();
    for s in &doomed {
        if let Some(r) = segs.remove(s) {
            fs::remove_file(&r.path).map_err(|e| Error::io("remove", &r.path, e))?;
        }
    }
    if !doomed.is_empty() {
        lio::sync_dir(dir, hook)?;
    }
    let mut files = BTreeMap::new();
    for (s, r) in &segs {
        files.insert(*s, Arc::new(segment::open_for_read(&r.path)?));
    }
    let active_path = segment::path(dir, active_seq);
    let active = segment::open_for_append(&active_path)?;
    let first = first.unwrap_or_else(|| purged.map_or(0, |p| p.index + 1));
    Ok(Recovered {
        first,
        slots,
        committed,
        segs,
        files,
        active_seq,
        active,
        active_len,
    })
}

/// Decides whether invalid bytes at `off` in the last segment are a torn
/// write (only un-synced data, safe to cut) or damage to synced data.
///
/// Only the last group-commit batch can be torn, and the kernel may have
/// persisted its pages in any order. So: torn if no valid newer entry
/// follows, or if one does but the damaged stretch before it holds an
/// all-zero 512-byte sector — a page that never reached the disk, which a
/// flipped bit in synced data does not produce.
fn is_torn_tail(buf: &Bytes, off: usize, last_index: Option<u64>) -> bool {
    let next_valid = (off + 1..buf.len().saturating_sub(record::HEADER_LEN)).find(|&p| {
        matches!(record::decode(&buf.slice(p..)),
            Ok((Record::Entry { index, .. }, _)) if last_index.is_none_or(|l| index > l))
    });
    let Some(next) = next_valid else { return true };
    const SECTOR: usize = 512;
    let mut s = off.div_ceil(SECTOR) * SECTOR;
    while s + SECTOR <= next {
        if buf[s..s + SECTOR].iter().all(|&b| b == 0) {
            return true;
        }
        s += SECTOR;
    }
    false
}
