//! The page: bbolt's unit of storage, its header, the meta page and the
//! elements of branch and leaf pages, decoded with every offset checked
//! and encoded the way bbolt lays them out.

use crate::error::{invalid, Result};

/// Bytes of a page header: id u64, flags u16, count u16, overflow u32.
pub const HEADER: usize = 16;
/// Bytes of a branch or leaf element.
pub const ELEMENT: usize = 16;
/// Bytes of a bucket's header in its parent: root page id, sequence.
pub const BUCKET_HEADER: usize = 16;

/// Page flag: a branch page.
pub const BRANCH: u16 = 0x01;
/// Page flag: a leaf page.
pub const LEAF: u16 = 0x02;
/// Page flag: a meta page.
pub const META: u16 = 0x04;
/// Page flag: the freelist page.
pub const FREELIST: u16 = 0x10;

/// Leaf element flag: the value is a bucket.
pub const BUCKET_LEAF: u32 = 0x01;

/// The meta page's magic number.
pub const MAGIC: u32 = 0xED0C_DAED;
/// The file format version this crate reads and writes.
pub const VERSION: u32 = 2;
/// The freelist page id of a file whose freelist is not stored.
pub const NO_FREELIST: u64 = u64::MAX;
/// Bytes of the meta structure, checksum included.
pub const META_LEN: usize = 64;

/// Smallest and largest page size accepted.
pub const MIN_PAGE: u32 = 1024;
/// See [`MIN_PAGE`].
pub const MAX_PAGE: u32 = 65536;

/// The largest key bbolt accepts.
pub const MAX_KEY: usize = 32768;
/// The largest value bbolt accepts.
pub const MAX_VALUE: usize = (1 << 31) - 2;

pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A page header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The page's id (its offset in the file divided by the page size).
    pub id: u64,
    /// What kind of page it is.
    pub flags: u16,
    /// How many elements it holds.
    pub count: u16,
    /// How many pages after the first it spans.
    pub overflow: u32,
}

impl Header {
    /// Decodes the header at the start of `b`.
    pub fn decode(b: &[u8]) -> Result<Header> {
        let short = || invalid("page shorter than its header");
        Ok(Header {
            id: u64_at(b, 0).ok_or_else(short)?,
            flags: u16_at(b, 8).ok_or_else(short)?,
            count: u16_at(b, 10).ok_or_else(short)?,
            overflow: u32_at(b, 12).ok_or_else(short)?,
        })
    }

    /// Encodes it into the first [`HEADER`] bytes of `b`.
    pub fn encode(&self, b: &mut [u8]) {
        b[0..8].copy_from_slice(&self.id.to_le_bytes());
        b[8..10].copy_from_slice(&self.flags.to_le_bytes());
        b[10..12].copy_from_slice(&self.count.to_le_bytes());
        b[12..16].copy_from_slice(&self.overflow.to_le_bytes());
    }
}

/// The meta structure (pages 0 and 1): where the tree starts and how far
/// the file is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The page size of the file.
    pub page_size: u32,
    /// The root bucket's root page.
    pub root: u64,
    /// The freelist page, or [`NO_FREELIST`].
    pub freelist: u64,
    /// The high water mark: pages `0..pgid` are in use.
    pub pgid: u64,
    /// The transaction that wrote it.
    pub txid: u64,
}

/// bbolt's meta checksum: FNV-1a, 64 bits.
pub fn fnv1a64(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Meta {
    /// Decodes and checks the meta page in `page` (header included).
    pub fn decode(page: &[u8]) -> Result<Meta> {
        let h = Header::decode(page)?;
        if h.flags != META {
            return Err(invalid(format!("page {} is not a meta page", h.id)));
        }
        let m = page
            .get(HEADER..HEADER + META_LEN)
            .ok_or_else(|| invalid("meta page too short"))?;
        let f32 = |at| u32_at(m, at).unwrap_or(0);
        let f64 = |at| u64_at(m, at).unwrap_or(0);
        if f32(0) != MAGIC {
            return Err(invalid("bad magic number (not a bbolt file)"));
        }
        if f32(4) != VERSION {
            return Err(invalid(format!("unsupported format version {}", f32(4))));
        }
        if fnv1a64(&m[..56]) != f64(56) {
            return Err(invalid("meta page checksum mismatch"));
        }
        let page_size = f32(8);
        if !(MIN_PAGE..=MAX_PAGE).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(invalid(format!("unsupported page size {page_size}")));
        }
        Ok(Meta {
            page_size,
            root: f64(16),
            freelist: f64(32),
            pgid: f64(40),
            txid: f64(48),
        })
    }

    /// The meta page with id `id` holding this meta, one page long.
    pub fn encode(&self, id: u64) -> Vec<u8> {
        let mut page = vec![0u8; self.page_size as usize];
        Header {
            id,
            flags: META,
            count: 0,
            overflow: 0,
        }
        .encode(&mut page);
        let m = &mut page[HEADER..HEADER + META_LEN];
        m[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        m[4..8].copy_from_slice(&VERSION.to_le_bytes());
        m[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        // flags (12..16) stay 0; the root bucket's sequence (24..32) too.
        m[16..24].copy_from_slice(&self.root.to_le_bytes());
        m[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        m[40..48].copy_from_slice(&self.pgid.to_le_bytes());
        m[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let sum = fnv1a64(&m[..56]);
        m[56..64].copy_from_slice(&sum.to_le_bytes());
        page
    }
}

/// One element of a leaf page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafElement<'a> {
    /// 0 for a value, [`BUCKET_LEAF`] for a bucket.
    pub flags: u32,
    /// Its key.
    pub key: &'a [u8],
    /// Its value (for a bucket: its header, then its inline page if any).
    pub value: &'a [u8],
}

/// One element of a branch page: the first key of a child and its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BranchElement<'a> {
    /// The first key under the child.
    pub key: &'a [u8],
    /// The child's page id.
    pub pgid: u64,
}

/// The `i`th element's bytes and where its key starts, checked against
/// the page's length (positions are relative to the element itself).
fn element(page: &[u8], i: usize) -> Result<(&[u8], usize)> {
    let at = HEADER + i * ELEMENT;
    let e = page
        .get(at..at + ELEMENT)
        .ok_or_else(|| invalid("element past the end of its page"))?;
    Ok((e, at))
}

fn slice(page: &[u8], start: usize, len: usize) -> Result<&[u8]> {
    start
        .checked_add(len)
        .and_then(|end| page.get(start..end))
        .ok_or_else(|| invalid("key or value past the end of its page"))
}

/// The elements of the leaf page `page` (header included).
pub fn leaf_elements(page: &[u8]) -> Result<Vec<LeafElement<'_>>> {
    let h = Header::decode(page)?;
    if h.flags != LEAF {
        return Err(invalid(format!(
            "page {} has flags {:#x} where a leaf was expected",
            h.id, h.flags
        )));
    }
    let mut out = Vec::with_capacity(usize::from(h.count));
    for i in 0..usize::from(h.count) {
        let (e, at) = element(page, i)?;
        let flags = u32_at(e, 0).unwrap_or(0);
        let pos = u32_at(e, 4).unwrap_or(0) as usize;
        let ksize = u32_at(e, 8).unwrap_or(0) as usize;
        let vsize = u32_at(e, 12).unwrap_or(0) as usize;
        if flags & !BUCKET_LEAF != 0 {
            return Err(invalid(format!("unknown leaf element flags {flags:#x}")));
        }
        let start = at
            .checked_add(pos)
            .ok_or_else(|| invalid("element position overflows"))?;
        let key = slice(page, start, ksize)?;
        let value = slice(page, start + ksize, vsize)?;
        out.push(LeafElement { flags, key, value });
    }
    Ok(out)
}

/// The elements of the branch page `page` (header included).
pub fn branch_elements(page: &[u8]) -> Result<Vec<BranchElement<'_>>> {
    let h = Header::decode(page)?;
    if h.flags != BRANCH {
        return Err(invalid(format!(
            "page {} has flags {:#x} where a branch was expected",
            h.id, h.flags
        )));
    }
    if h.count == 0 {
        return Err(invalid(format!("branch page {} has no elements", h.id)));
    }
    let mut out = Vec::with_capacity(usize::from(h.count));
    for i in 0..usize::from(h.count) {
        let (e, at) = element(page, i)?;
        let pos = u32_at(e, 0).unwrap_or(0) as usize;
        let ksize = u32_at(e, 4).unwrap_or(0) as usize;
        let pgid = u64_at(e, 8).unwrap_or(0);
        let start = at
            .checked_add(pos)
            .ok_or_else(|| invalid("element position overflows"))?;
        out.push(BranchElement {
            key: slice(page, start, ksize)?,
            pgid,
        });
    }
    Ok(out)
}

/// Encodes a node's elements as one page (or a page and its overflow
/// pages): `items` are (leaf flags, key, value) for a leaf, (0, key,
/// child page id LE) for a branch. The result is a whole number of
/// pages long; its header's overflow says how many past the first.
pub fn encode_node(
    id: u64,
    flags: u16,
    items: &[(u32, &[u8], &[u8])],
    page_size: usize,
) -> Vec<u8> {
    let data: usize = items
        .iter()
        .map(|(_, k, v)| k.len() + if flags == BRANCH { 0 } else { v.len() })
        .sum();
    let len = HEADER + items.len() * ELEMENT + data;
    let pages = len.div_ceil(page_size).max(1);
    let mut page = vec![0u8; pages * page_size];
    Header {
        id,
        flags,
        count: items.len() as u16,
        overflow: (pages - 1) as u32,
    }
    .encode(&mut page);
    let mut data_at = HEADER + items.len() * ELEMENT;
    for (i, (eflags, k, v)) in items.iter().enumerate() {
        let at = HEADER + i * ELEMENT;
        let pos = (data_at - at) as u32;
        let e = &mut page[at..at + ELEMENT];
        if flags == BRANCH {
            e[0..4].copy_from_slice(&pos.to_le_bytes());
            e[4..8].copy_from_slice(&(k.len() as u32).to_le_bytes());
            e[8..16].copy_from_slice(&v[..8]);
        } else {
            e[0..4].copy_from_slice(&eflags.to_le_bytes());
            e[4..8].copy_from_slice(&pos.to_le_bytes());
            e[8..12].copy_from_slice(&(k.len() as u32).to_le_bytes());
            e[12..16].copy_from_slice(&(v.len() as u32).to_le_bytes());
        }
        page[data_at..data_at + k.len()].copy_from_slice(k);
        data_at += k.len();
        if flags != BRANCH {
            page[data_at..data_at + v.len()].copy_from_slice(v);
            data_at += v.len();
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_checks_its_checksum() {
        let m = Meta {
            page_size: 4096,
            root: 7,
            freelist: 2,
            pgid: 9,
            txid: 3,
        };
        let mut page = m.encode(1);
        assert_eq!(Meta::decode(&page).unwrap(), m);
        page[HEADER + 40] ^= 1;
        assert!(Meta::decode(&page).is_err());
    }

    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn leaf_and_branch_pages_round_trip() {
        let items: Vec<(u32, &[u8], &[u8])> = vec![(0, b"a", b"1"), (BUCKET_LEAF, b"bb", b"22")];
        let page = encode_node(5, LEAF, &items, 1024);
        let got = leaf_elements(&page).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[1].flags, got[1].key, got[1].value),
            (BUCKET_LEAF, &b"bb"[..], &b"22"[..])
        );
        let child = 9u64.to_le_bytes();
        let page = encode_node(6, BRANCH, &[(0, b"k", &child)], 1024);
        let got = branch_elements(&page).unwrap();
        assert_eq!((got[0].key, got[0].pgid), (&b"k"[..], 9));
    }

    #[test]
    fn a_big_value_spans_overflow_pages() {
        let v = vec![7u8; 3000];
        let page = encode_node(3, LEAF, &[(0, b"k", &v)], 1024);
        assert_eq!(page.len(), 3 * 1024);
        assert_eq!(Header::decode(&page).unwrap().overflow, 2);
        assert_eq!(leaf_elements(&page).unwrap()[0].value, &v[..]);
    }

    #[test]
    fn elements_pointing_outside_the_page_are_refused() {
        let mut page = encode_node(5, LEAF, &[(0, b"a", b"1")], 1024);
        page[HEADER + 12..HEADER + 16].copy_from_slice(&5000u32.to_le_bytes());
        assert!(leaf_elements(&page).is_err());
        let mut page = encode_node(5, LEAF, &[(0, b"a", b"1")], 1024);
        page[10..12].copy_from_slice(&500u16.to_le_bytes());
        assert!(leaf_elements(&page).is_err());
    }
}
