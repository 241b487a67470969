//! On-disk layout of the store inside its backend.
//!
//! The backend is one ordered keyspace; tables are key prefixes:
//!
//! | backend key            | value                                      |
//! |------------------------|--------------------------------------------|
//! | `r` ++ revision (16 B) | a [`Record`]: one put or tombstone          |
//! | `m` ++ name            | store metadata ([`Meta`]), see below        |
//! | `l` ++ id (8 B)        | a lease (layout in [`crate::lease`])        |
//!
//! A record's value:
//!
//! ```text
//! put:        0x00 | key_len u32 BE | key | create_rev i64 BE | version i64 BE | lease i64 BE | value…
//! tombstone:  0x01 | key_len u32 BE | key
//! tombstones: 0x02 | count u32 BE | (key_len u32 BE | key) × count
//! ```
//!
//! A record's `mod_revision` is the `main` part of its backend key, so it is
//! not stored again. `tombstones` is a run of deletions of one revision
//! stored as one backend entry: stored at `(main, sub)`, it stands for the
//! tombstones at `(main, sub)`, `(main, sub + 1)`, … in order, exactly as if
//! each had its own entry (a lease revoke or a range delete of thousands
//! of keys then costs the backend one insert, not thousands). Every reader
//! of records expands it ([`Record::decode_each`]).

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::request::KeyValue;
use crate::revision::Revision;

/// Prefix of history records.
pub const RECORD_PREFIX: u8 = b'r';
/// Prefix of metadata entries.
pub const META_PREFIX: u8 = b'm';

/// Named metadata entries. Every write batch updates `Current` and
/// `Applied` together with its records.
#[derive(Clone, Copy, Debug)]
pub enum Meta {
    /// The store revision (i64 BE).
    Current,
    /// The caller's applied position (opaque bytes), e.g. a Raft log id.
    Applied,
    /// The revision the latest compaction was asked for (i64 BE).
    CompactScheduled,
    /// The revision whose compaction has physically finished (i64 BE).
    CompactFinished,
    /// Present while a snapshot image is being imported: a store opened
    /// with it holds a partial import and is wiped.
    Importing,
    /// The auth state (users, roles, whether auth is on), as the caller
    /// encodes it: opaque here, replicated and imaged with the rest.
    Auth,
    /// The raised alarms, as the caller encodes them: opaque here,
    /// replicated and imaged with the rest.
    Alarms,
}

impl Meta {
    /// This entry's backend key.
    pub fn key(self) -> &'static [u8] {
        match self {
            Meta::Current => b"mcurrent",
            Meta::Applied => b"mapplied",
            Meta::CompactScheduled => b"mcompact_scheduled",
            Meta::CompactFinished => b"mcompact_finished",
            Meta::Importing => b"mimporting",
            Meta::Auth => b"mauth",
            Meta::Alarms => b"malarms",
        }
    }
}

/// Backend key of the record at `rev`.
pub fn record_key(rev: Revision) -> Bytes {
    let mut k = BytesMut::with_capacity(1 + Revision::ENCODED_LEN);
    k.put_u8(RECORD_PREFIX);
    k.put_slice(&rev.to_bytes());
    k.freeze()
}

/// First backend key of the records table.
pub fn records_start() -> [u8; 1] {
    [RECORD_PREFIX]
}

/// The key just past every record with `main <= rev`.
pub fn records_end_after(main: i64) -> Bytes {
    record_key(Revision::new(main.saturating_add(1), 0))
}

/// Decodes the revision of a record's backend key.
pub fn revision_of(key: &[u8]) -> Result<Revision> {
    match key.split_first() {
        Some((&RECORD_PREFIX, rest)) => Revision::from_bytes(rest).ok_or_else(|| Error::Corrupt {
            location: format!("record key {key:?}"),
            reason: "bad revision length".into(),
        }),
        _ => Err(Error::Corrupt {
            location: format!("record key {key:?}"),
            reason: "not a record key".into(),
        }),
    }
}

/// Encodes an i64 meta value.
pub fn encode_i64(v: i64) -> Bytes {
    Bytes::copy_from_slice(&v.to_be_bytes())
}

/// Decodes an i64 meta value.
pub fn decode_i64(what: &str, v: &[u8]) -> Result<i64> {
    let arr: [u8; 8] = v.try_into().map_err(|_| Error::Corrupt {
        location: format!("meta {what}"),
        reason: format!("expected 8 bytes, found {}", v.len()),
    })?;
    Ok(i64::from_be_bytes(arr))
}

/// One entry of a key's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The key was set; the value's `mod_revision` is the record's revision.
    Put(KeyValue),
    /// The key was deleted.
    Tombstone(Bytes),
}

impl Record {
    /// The key this record is about.
    pub fn key(&self) -> &Bytes {
        match self {
            Record::Put(kv) => &kv.key,
            Record::Tombstone(k) => k,
        }
    }

    /// The value bytes stored in the backend.
    pub fn encode(&self) -> Bytes {
        match self {
            Record::Put(kv) => {
                let mut b = BytesMut::with_capacity(1 + 4 + kv.key.len() + 24 + kv.value.len());
                b.put_u8(0);
                b.put_u32(kv.key.len() as u32);
                b.put_slice(&kv.key);
                b.put_i64(kv.create_revision);
                b.put_i64(kv.version);
                b.put_i64(kv.lease);
                b.put_slice(&kv.value);
                b.freeze()
            }
            Record::Tombstone(key) => {
                let mut b = BytesMut::with_capacity(1 + 4 + key.len());
                b.put_u8(1);
                b.put_u32(key.len() as u32);
                b.put_slice(key);
                b.freeze()
            }
        }
    }

    /// The stored value of a run of tombstones of `keys`, in order (see
    /// the module docs).
    pub fn encode_tombstones<'a, I>(keys: I) -> Bytes
    where
        I: IntoIterator<Item = &'a Bytes>,
        I::IntoIter: Clone + ExactSizeIterator,
    {
        let keys = keys.into_iter();
        let len = 5 + keys.clone().map(|k| 4 + k.len()).sum::<usize>();
        let mut b = BytesMut::with_capacity(len);
        b.put_u8(2);
        b.put_u32(keys.len() as u32);
        for k in keys {
            b.put_u32(k.len() as u32);
            b.put_slice(k);
        }
        b.freeze()
    }

    /// Decodes the backend entry stored at `rev` and hands each record it
    /// holds to `f` with its own revision: one, or a run of tombstones.
    pub fn decode_each(
        rev: Revision,
        buf: &Bytes,
        mut f: impl FnMut(Revision, Record) -> Result<()>,
    ) -> Result<()> {
        if buf.first() != Some(&2) {
            return f(rev, Record::decode(rev, buf)?);
        }
        let corrupt = |reason: &str| Error::Corrupt {
            location: format!("record {rev}"),
            reason: reason.to_string(),
        };
        let u32_at = |at: usize| -> Result<usize> {
            let b = buf
                .get(at..at + 4)
                .ok_or_else(|| corrupt("short tombstone run"))?;
            Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let count = u32_at(1)?;
        if count == 0 {
            return Err(corrupt("empty tombstone run"));
        }
        let mut at = 5;
        for i in 0..count {
            let len = u32_at(at)?;
            let start = at + 4;
            let end = start
                .checked_add(len)
                .filter(|&e| e <= buf.len())
                .ok_or_else(|| corrupt("key past end"))?;
            f(
                Revision::new(rev.main, rev.sub + i as i64),
                Record::Tombstone(buf.slice(start..end)),
            )?;
            at = end;
        }
        if at != buf.len() {
            return Err(corrupt("trailing bytes after tombstone run"));
        }
        Ok(())
    }

    /// Decodes the value of the single record stored at `rev` (a put or
    /// one tombstone). Zero-copy: key and value share `buf`.
    pub fn decode(rev: Revision, buf: &Bytes) -> Result<Self> {
        let corrupt = |reason: &str| Error::Corrupt {
            location: format!("record {rev}"),
            reason: reason.to_string(),
        };
        let (&kind, rest) = buf.split_first().ok_or_else(|| corrupt("empty"))?;
        if kind == 2 {
            return Err(corrupt("a run of tombstones where one record was expected"));
        }
        if rest.len() < 4 {
            return Err(corrupt("short key length"));
        }
        let key_len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let key_start: usize = 5;
        let key_end = key_start
            .checked_add(key_len)
            .filter(|&e| e <= buf.len())
            .ok_or_else(|| corrupt("key past end"))?;
        let key = buf.slice(key_start..key_end);
        match kind {
            0 => {
                let fixed = buf
                    .get(key_end..key_end + 24)
                    .ok_or_else(|| corrupt("short put header"))?;
                let field = |i: usize| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(&fixed[i * 8..i * 8 + 8]);
                    i64::from_be_bytes(a)
                };
                Ok(Record::Put(KeyValue {
                    key,
                    create_revision: field(0),
                    mod_revision: rev.main,
                    version: field(1),
                    lease: field(2),
                    value: buf.slice(key_end + 24..),
                }))
            }
            1 if key_end == buf.len() => Ok(Record::Tombstone(key)),
            1 => Err(corrupt("trailing bytes after tombstone")),
            _ => Err(corrupt("unknown record kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let kv = KeyValue {
            key: Bytes::from_static(b"foo"),
            create_revision: 3,
            mod_revision: 7,
            version: 2,
            value: Bytes::from_static(b"bar"),
            lease: 99,
        };
        let rev = Revision::new(7, 1);
        let put = Record::Put(kv);
        assert_eq!(Record::decode(rev, &put.encode()).unwrap(), put);
        let tomb = Record::Tombstone(Bytes::from_static(b"foo"));
        assert_eq!(Record::decode(rev, &tomb.encode()).unwrap(), tomb);
    }

    #[test]
    fn damaged_records_are_errors() {
        let rev = Revision::new(1, 0);
        let put = Record::Put(KeyValue {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        })
        .encode();
        for n in 0..put.len() - 24 {
            assert!(Record::decode(rev, &put.slice(..n)).is_err(), "prefix {n}");
        }
        assert!(Record::decode(rev, &Bytes::from_static(&[7, 0, 0, 0, 0])).is_err());
    }

    fn expand(rev: Revision, buf: &Bytes) -> Result<Vec<(Revision, Record)>> {
        let mut out = Vec::new();
        Record::decode_each(rev, buf, |r, rec| {
            out.push((r, rec));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn a_tombstone_run_stands_for_one_tombstone_per_sub_revision() {
        let keys: Vec<Bytes> = ["a", "", "ccc"]
            .iter()
            .map(|k| Bytes::copy_from_slice(k.as_bytes()))
            .collect();
        let run = Record::encode_tombstones(&keys);
        let got = expand(Revision::new(9, 2), &run).unwrap();
        let want: Vec<(Revision, Record)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (Revision::new(9, 2 + i as i64), Record::Tombstone(k.clone())))
            .collect();
        assert_eq!(got, want);
        // A single record expands to itself.
        let one = Record::Tombstone(Bytes::from_static(b"x"));
        assert_eq!(
            expand(Revision::new(4, 1), &one.encode()).unwrap(),
            vec![(Revision::new(4, 1), one)]
        );
        // Where one record is expected, a run is an error, not a guess.
        assert!(Record::decode(Revision::new(9, 2), &run).is_err());
    }

    #[test]
    fn damaged_tombstone_runs_are_errors() {
        let rev = Revision::new(1, 0);
        let run =
            Record::encode_tombstones(&[Bytes::from_static(b"key"), Bytes::from_static(b"k2")]);
        for n in 0..run.len() {
            assert!(expand(rev, &run.slice(..n)).is_err(), "prefix {n}");
        }
        let mut longer = run.to_vec();
        longer.push(0);
        assert!(expand(rev, &Bytes::from(longer)).is_err());
        assert!(expand(rev, &Record::encode_tombstones(&[])).is_err());
    }

    #[test]
    fn record_keys_order_by_revision() {
        let a = record_key(Revision::new(2, 5));
        let b = record_key(Revision::new(3, 0));
        assert!(a < b);
        assert_eq!(revision_of(&a).unwrap(), Revision::new(2, 5));
        assert!(records_end_after(2) > a && records_end_after(2) <= b);
    }
}
