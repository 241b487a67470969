//! [`Writer`]: a new bbolt file written in one pass, bucket by bucket,
//! each bucket's keys given in ascending order. Leaves are filled and
//! written as keys arrive; only the first key and page id of each node
//! is kept until the level above it is built, so writing a file of any
//! size takes memory for its branch keys only.
//!
//! Layout of the file written: pages 0 and 1 the two meta pages (written
//! last), page 2 an empty freelist, then each bucket's pages, leaves
//! first and the levels above them after, then the root bucket's.

use std::io::{Seek, SeekFrom, Write};

use crate::error::{Error, Result};
use crate::page::{
    self, Meta, BRANCH, BUCKET_LEAF, ELEMENT, FREELIST, HEADER, LEAF, MAX_KEY, MAX_PAGE, MAX_VALUE,
    MIN_PAGE,
};

/// The page size etcd writes on Linux.
pub const DEFAULT_PAGE_SIZE: u32 = 4096;

/// Writes a new bbolt file.
#[derive(Debug)]
pub struct Writer<W: Write + Seek> {
    w: W,
    page_size: usize,
    /// The next page id to write.
    next: u64,
    /// The buckets written: name and root page.
    buckets: Vec<(Vec<u8>, u64)>,
}

impl<W: Write + Seek> Writer<W> {
    /// Starts a file in `w` (positioned at its start) with pages of
    /// `page_size` bytes.
    pub fn new(mut w: W, page_size: u32) -> Result<Self> {
        if !(MIN_PAGE..=MAX_PAGE).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(Error::Misuse(format!("page size {page_size}")));
        }
        let ps = page_size as usize;
        // Meta pages come last; the freelist is empty.
        w.write_all(&vec![0u8; 2 * ps])?;
        let mut free = vec![0u8; ps];
        page::Header {
            id: 2,
            flags: FREELIST,
            count: 0,
            overflow: 0,
        }
        .encode(&mut free);
        w.write_all(&free)?;
        Ok(Writer {
            w,
            page_size: ps,
            next: 3,
            buckets: Vec::new(),
        })
    }

    /// Starts the top-level bucket `name`; its entries are then given in
    /// ascending key order, and [`BucketWriter::finish`] ends it.
    pub fn bucket(&mut self, name: &[u8]) -> Result<BucketWriter<'_, W>> {
        check_key(name)?;
        if self.buckets.iter().any(|(n, _)| n == name) {
            return Err(Error::Misuse(format!(
                "bucket {:?} written twice",
                String::from_utf8_lossy(name)
            )));
        }
        Ok(BucketWriter {
            name: name.to_vec(),
            tree: Tree::default(),
            db: self,
        })
    }

    /// Writes a node of `flags` holding `items` as the next page(s).
    fn node(&mut self, flags: u16, items: &[(u32, &[u8], &[u8])]) -> Result<u64> {
        let id = self.next;
        let bytes = page::encode_node(id, flags, items, self.page_size);
        self.w.write_all(&bytes)?;
        self.next += (bytes.len() / self.page_size) as u64;
        Ok(id)
    }

    /// Writes the root bucket and the meta pages, flushes, and returns
    /// the writer, positioned at the end of the file.
    pub fn finish(mut self) -> Result<W> {
        let mut buckets = std::mem::take(&mut self.buckets);
        buckets.sort();
        let mut root = Tree::default();
        for (name, id) in &buckets {
            let mut header = [0u8; page::BUCKET_HEADER];
            header[..8].copy_from_slice(&id.to_le_bytes());
            root.add(&mut self, BUCKET_LEAF, name, &header)?;
        }
        let root = root.finish(&mut self)?;
        let end = self.next * self.page_size as u64;
        for id in 0..2u64 {
            let meta = Meta {
                page_size: self.page_size as u32,
                root,
                freelist: 2,
                pgid: self.next,
                txid: id,
            };
            self.w.seek(SeekFrom::Start(id * self.page_size as u64))?;
            self.w.write_all(&meta.encode(id))?;
        }
        self.w.seek(SeekFrom::Start(end))?;
        self.w.flush()?;
        Ok(self.w)
    }
}

fn check_key(k: &[u8]) -> Result<()> {
    if k.is_empty() {
        return Err(Error::Misuse("an empty key".into()));
    }
    if k.len() > MAX_KEY {
        return Err(Error::Misuse(format!("a key of {} bytes", k.len())));
    }
    Ok(())
}

/// One bucket being written.
#[derive(Debug)]
pub struct BucketWriter<'a, W: Write + Seek> {
    db: &'a mut Writer<W>,
    name: Vec<u8>,
    tree: Tree,
}

impl<W: Write + Seek> BucketWriter<'_, W> {
    /// Adds `key` = `value`; `key` must be above every key added before.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree.add(self.db, 0, key, value)
    }

    /// Ends the bucket: writes its last leaf and the levels above.
    pub fn finish(mut self) -> Result<()> {
        let tree = std::mem::take(&mut self.tree);
        let root = tree.finish(self.db)?;
        self.db.buckets.push((std::mem::take(&mut self.name), root));
        Ok(())
    }
}

/// A tree being built bottom-up as its keys arrive: the leaf being
/// filled, and above it one branch page being filled per level. A page
/// is written as soon as it is full, so memory holds one page per level
/// whatever the tree's size.
#[derive(Debug, Default)]
struct Tree {
    leaf: Vec<(u32, Vec<u8>, Vec<u8>)>,
    /// Bytes the leaf's elements take (headers, keys, values).
    leaf_bytes: usize,
    /// The branch page being filled at each level above the leaves
    /// (level 0 points to leaves).
    levels: Vec<Level>,
    last: Option<Vec<u8>>,
}

/// A branch page being filled: (first key, page id) of each page below
/// it, and how many pages this level has had in all.
#[derive(Debug, Default)]
struct Level {
    group: Vec<(Vec<u8>, [u8; 8])>,
    bytes: usize,
    total: usize,
}

impl Tree {
    fn add<W: Write + Seek>(
        &mut self,
        db: &mut Writer<W>,
        flags: u32,
        key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        check_key(key)?;
        if value.len() > MAX_VALUE {
            return Err(Error::Misuse(format!("a value of {} bytes", value.len())));
        }
        if self.last.as_deref().is_some_and(|l| l >= key) {
            return Err(Error::Misuse("keys not in ascending order".into()));
        }
        self.last = Some(key.to_vec());
        let size = ELEMENT + key.len() + value.len();
        if !self.leaf.is_empty() && HEADER + self.leaf_bytes + size > db.page_size {
            self.flush(db)?;
        }
        self.leaf.push((flags, key.to_vec(), value.to_vec()));
        self.leaf_bytes += size;
        Ok(())
    }

    /// Writes the leaf being filled and records it in the level above.
    fn flush<W: Write + Seek>(&mut self, db: &mut Writer<W>) -> Result<()> {
        let items: Vec<(u32, &[u8], &[u8])> = self
            .leaf
            .iter()
            .map(|(f, k, v)| (*f, k.as_slice(), v.as_slice()))
            .collect();
        let id = db.node(LEAF, &items)?;
        let first = self.leaf.first().map(|e| e.1.clone()).unwrap_or_default();
        self.leaf.clear();
        self.leaf_bytes = 0;
        self.point(db, 0, first, id)
    }

    /// Adds a page (its first key and id) to the branch being filled at
    /// `level`, writing that branch first if the page does not fit in it.
    fn point<W: Write + Seek>(
        &mut self,
        db: &mut Writer<W>,
        level: usize,
        key: Vec<u8>,
        id: u64,
    ) -> Result<()> {
        if self.levels.len() == level {
            self.levels.push(Level::default());
        }
        let size = ELEMENT + key.len();
        let l = &mut self.levels[level];
        if !l.group.is_empty() && HEADER + l.bytes + size > db.page_size {
            let full = std::mem::take(&mut l.group);
            l.bytes = 0;
            let (first, above) = branch(db, &full)?;
            self.point(db, level + 1, first, above)?;
        }
        let l = &mut self.levels[level];
        l.group.push((key, id.to_le_bytes()));
        l.bytes += size;
        l.total += 1;
        Ok(())
    }

    /// Writes what is left and every branch level; the root page id.
    fn finish<W: Write + Seek>(mut self, db: &mut Writer<W>) -> Result<u64> {
        if !self.leaf.is_empty() || self.levels.is_empty() {
            // An empty bucket is one empty leaf.
            self.flush(db)?;
        }
        let mut level = 0;
        loop {
            let l = &mut self.levels[level];
            if l.total == 1 {
                // The one page of the top level is the root.
                let id = l.group.first().map(|(_, id)| u64::from_le_bytes(*id));
                return id.ok_or_else(|| Error::Misuse("a tree level without pages".into()));
            }
            let rest = std::mem::take(&mut l.group);
            let (first, above) = branch(db, &rest)?;
            self.point(db, level + 1, first, above)?;
            level += 1;
        }
    }
}

fn branch<W: Write + Seek>(
    db: &mut Writer<W>,
    group: &[(Vec<u8>, [u8; 8])],
) -> Result<(Vec<u8>, u64)> {
    let items: Vec<(u32, &[u8], &[u8])> = group
        .iter()
        .map(|(k, id)| (0, k.as_slice(), &id[..]))
        .collect();
    let id = db.node(BRANCH, &items)?;
    Ok((group[0].0.clone(), id))
}
