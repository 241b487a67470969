//! Records: the unit written to a segment.
//!
//! ```text
//! offset  size  field
//! 0       4     body length n, u32 little-endian (n ≥ 1)
//! 4       4     CRC32 (IEEE, crc32fast) of the body, u32 little-endian
//! 8       n     body: kind u8, then
//!                 kind 1 (entry):     index u64 LE | term u64 LE | payload (n - 17 bytes)
//!                 kind 2 (committed): index u64 LE                 (n = 9)
//! ```
//!
//! A record is valid only if its whole body is present and its CRC matches;
//! anything else at the end of the last segment is a torn write.

use bytes::{BufMut, Bytes};

/// Bytes before the body.
pub const HEADER_LEN: usize = 8;
/// Largest body accepted when reading (guards against a corrupt length).
pub const MAX_BODY: usize = 256 << 20;

const KIND_ENTRY: u8 = 1;
const KIND_COMMITTED: u8 = 2;

/// A decoded record body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A Raft log entry.
    Entry {
        /// Its index.
        index: u64,
        /// Its term.
        term: u64,
        /// What it carries.
        payload: Bytes,
    },
    /// The committed index, as known when written.
    Committed(u64),
}

/// Appends the encoding of an entry to `out`; returns the record's length.
pub fn encode_entry(out: &mut Vec<u8>, index: u64, term: u64, payload: &[u8]) -> usize {
    let body_len = 1 + 8 + 8 + payload.len();
    let start = out.len();
    out.put_u32_le(body_len as u32);
    out.put_u32_le(0);
    out.put_u8(KIND_ENTRY);
    out.put_u64_le(index);
    out.put_u64_le(term);
    out.put_slice(payload);
    finish(out, start)
}

/// Appends the encoding of a committed-index record to `out`.
pub fn encode_committed(out: &mut Vec<u8>, index: u64) -> usize {
    let start = out.len();
    out.put_u32_le(9);
    out.put_u32_le(0);
    out.put_u8(KIND_COMMITTED);
    out.put_u64_le(index);
    finish(out, start)
}

fn finish(out: &mut [u8], start: usize) -> usize {
    let crc = crc32fast::hash(&out[start + HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// Why bytes at some offset are not a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer bytes remain than the record needs.
    Short,
    /// The length field is impossible.
    BadLength(u32),
    /// The body's CRC does not match.
    BadCrc,
    /// Unknown kind or a body of the wrong size for its kind.
    BadBody,
}

/// Parses the record at the start of `buf` (which is `file[offset..]`).
/// Returns the record and its total length.
pub fn decode(buf: &Bytes) -> Result<(Record, usize), Invalid> {
    if buf.len() < HEADER_LEN {
        return Err(Invalid::Short);
    }
    let n = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let body_len = n as usize;
    if body_len == 0 || body_len > MAX_BODY {
        return Err(Invalid::BadLength(n));
    }
    if buf.len() < HEADER_LEN + body_len {
        return Err(Invalid::Short);
    }
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let body = buf.slice(HEADER_LEN..HEADER_LEN + body_len);
    if crc32fast::hash(&body) != crc {
        return Err(Invalid::BadCrc);
    }
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&body[i..i + 8]);
        u64::from_le_bytes(a)
    };
    let rec = match body[0] {
        KIND_ENTRY if body_len >= 17 => Record::Entry {
            index: u64_at(1),
            term: u64_at(9),
            payload: body.slice(17..),
        },
        KIND_COMMITTED if body_len == 9 => Record::Committed(u64_at(1)),
        _ => return Err(Invalid::BadBody),
    };
    Ok((rec, HEADER_LEN + body_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_damage_detected() {
        let mut buf = Vec::new();
        let n = encode_entry(&mut buf, 7, 3, b"hello");
        let m = encode_committed(&mut buf, 6);
        let bytes = Bytes::from(buf);
        let (r, len) = decode(&bytes).unwrap();
        assert_eq!(len, n);
        assert_eq!(
            r,
            Record::Entry {
                index: 7,
                term: 3,
                payload: Bytes::from_static(b"hello")
            }
        );
        assert_eq!(
            decode(&bytes.slice(n..)).unwrap(),
            (Record::Committed(6), m)
        );
        for cut in 0..n {
            assert!(decode(&bytes.slice(..cut)).is_err(), "cut {cut}");
        }
        for bit in 0..n * 8 {
            let mut v = bytes.to_vec();
            v[bit / 8] ^= 1 << (bit % 8);
            let v = Bytes::from(v);
            match decode(&v) {
                Err(_) => {}
                // A flip in the length field can still parse if the new
                // length happens to frame a valid record: it cannot here.
                Ok(r) => panic!("bit {bit} undetected: {r:?}"),
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any bytes: refused, or a record whose encoding is exactly the
        /// bytes it was read from.
        #[test]
        fn any_bytes_decode_to_nothing_or_to_their_own_encoding(
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128),
            valid_crc: bool,
        ) {
            let mut raw = raw;
            if valid_crc && raw.len() >= HEADER_LEN {
                // Make the checksum right so the body checks are reached.
                let n = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
                let body = HEADER_LEN..(HEADER_LEN + n).min(raw.len());
                let crc = crc32fast::hash(&raw[body]);
                raw[4..8].copy_from_slice(&crc.to_le_bytes());
            }
            let bytes = Bytes::from(raw);
            if let Ok((rec, len)) = decode(&bytes) {
                let mut again = Vec::new();
                match rec {
                    Record::Entry { index, term, payload } => {
                        encode_entry(&mut again, index, term, &payload)
                    }
                    Record::Committed(index) => encode_committed(&mut again, index),
                };
                proptest::prop_assert_eq!(&again[..], &bytes[..len]);
            }
        }
    }
}
