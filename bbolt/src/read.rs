//! [`Db`]: a bbolt file opened for reading, walked bucket by bucket in
//! key order. Pages are read from the file as the walk reaches them
//! (positioned reads; no mapping), so a file of any size is read in a
//! few pages of memory.
//!
//! Nothing in the file is trusted: every page id must lie below the high
//! water mark of the newest valid meta page, every page is reached at
//! most once per walk (a file whose pages form a cycle or share a child
//! is refused, so a walk costs at most one read per page), trees are at
//! most [`MAX_DEPTH`] deep, and keys must ascend strictly.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{invalid, Result};
use crate::page::{
    self, Header, Meta, BRANCH, BUCKET_HEADER, BUCKET_LEAF, HEADER, LEAF, MAX_PAGE, MIN_PAGE,
};

/// The deepest tree walked (a bbolt tree of 4 KiB pages holding a
/// terabyte is under ten levels).
pub const MAX_DEPTH: usize = 64;

/// A bucket: its name and where its tree starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// The bucket's key in its parent.
    pub name: Vec<u8>,
    root: Root,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Root {
    /// The tree starts at this page.
    Page(u64),
    /// A small bucket stored inside its parent's leaf: one leaf page.
    Inline(Vec<u8>),
}

impl Bucket {
    fn from_value(name: &[u8], value: &[u8]) -> Result<Bucket> {
        if value.len() < BUCKET_HEADER {
            return Err(invalid("bucket value shorter than its header"));
        }
        let root = page::u64_at(value, 0).unwrap_or(0);
        let root = if root == 0 {
            let inline = &value[BUCKET_HEADER..];
            if inline.len() < HEADER {
                return Err(invalid("inline bucket shorter than a page header"));
            }
            Root::Inline(inline.to_vec())
        } else {
            Root::Page(root)
        };
        Ok(Bucket {
            name: name.to_vec(),
            root,
        })
    }
}

/// An entry of a bucket.
#[derive(Debug)]
pub enum Entry<'a> {
    /// A key and its value.
    Value(&'a [u8], &'a [u8]),
    /// A bucket nested in this one.
    Bucket(Bucket),
}

/// A bbolt file opened for reading.
#[derive(Debug)]
pub struct Db {
    file: File,
    meta: Meta,
}

impl Db {
    /// Opens the bbolt file at `path`. Bytes after the pages in use (an
    /// etcd snapshot's appended hash) are ignored.
    pub fn open(path: &Path) -> Result<Db> {
        Db::from_file(File::open(path)?)
    }

    /// Opens the bbolt file `file`.
    pub fn from_file(file: File) -> Result<Db> {
        let len = file.metadata()?.len();
        let read = |at: u64, n: usize| -> Option<Vec<u8>> {
            let mut b = vec![0u8; n];
            file.read_exact_at(&mut b, at).ok().map(|_| b)
        };
        let first =
            read(0, MIN_PAGE as usize).ok_or_else(|| invalid("file shorter than a page"))?;
        let meta0 = Meta::decode(&first);
        // The second meta page is one page in; its page size comes from
        // the first, or, if the first is damaged, from trying each size.
        let sizes: Vec<u32> = match &meta0 {
            Ok(m) => vec![m.page_size],
            Err(_) => (MIN_PAGE.trailing_zeros()..=MAX_PAGE.trailing_zeros())
                .map(|s| 1u32 << s)
                .collect(),
        };
        let meta1 = sizes
            .iter()
            .filter_map(|&ps| Some((ps, read(u64::from(ps), MIN_PAGE as usize)?)))
            .map(|(ps, b)| (ps, Meta::decode(&b)))
            .find(|(ps, m)| m.as_ref().is_ok_and(|m| m.page_size == *ps))
            .map(|(_, m)| m);
        let meta = match (meta0, meta1) {
            (Ok(a), Some(Ok(b))) => {
                if a.page_size != b.page_size {
                    return Err(invalid("the two meta pages disagree on the page size"));
                }
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(a), _) => a,
            (Err(_), Some(Ok(b))) => b,
            (Err(e), _) => return Err(e),
        };
        let in_use = meta
            .pgid
            .checked_mul(u64::from(meta.page_size))
            .ok_or_else(|| invalid("high water mark overflows"))?;
        if meta.pgid < 3 || in_use > len {
            return Err(invalid(format!(
                "high water mark of {} pages does not fit a file of {len} bytes",
                meta.pgid
            )));
        }
        if meta.root < 2 || meta.root >= meta.pgid {
            return Err(invalid(format!("root page {} out of range", meta.root)));
        }
        Ok(Db { file, meta })
    }

    /// The meta page in use.
    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// The page `id` (and its overflow pages), checked to be a page in
    /// use that says it is page `id`.
    fn page(&self, id: u64) -> Result<Vec<u8>> {
        let ps = u64::from(self.meta.page_size);
        if id < 2 || id >= self.meta.pgid {
            return Err(invalid(format!(
                "page {id} out of range (pages in use: {})",
                self.meta.pgid
            )));
        }
        let mut buf = vec![0u8; ps as usize];
        self.file.read_exact_at(&mut buf, id * ps)?;
        let h = Header::decode(&buf)?;
        if h.id != id {
            return Err(invalid(format!("page {id} says it is page {}", h.id)));
        }
        let pages = u64::from(h.overflow) + 1;
        if id + pages > self.meta.pgid {
            return Err(invalid(format!(
                "page {id} overflows past the pages in use"
            )));
        }
        if pages > 1 {
            buf.resize((pages * ps) as usize, 0);
            self.file
                .read_exact_at(&mut buf[ps as usize..], (id + 1) * ps)?;
        }
        Ok(buf)
    }

    /// The root bucket: the top-level buckets are its entries.
    pub fn root(&self) -> Bucket {
        Bucket {
            name: Vec::new(),
            root: Root::Page(self.meta.root),
        }
    }

    /// The top-level buckets, by name.
    pub fn buckets(&self) -> Result<Vec<Bucket>> {
        let mut out = Vec::new();
        self.walk(&self.root(), |e| match e {
            Entry::Bucket(b) => {
                out.push(b);
                Ok(())
            }
            Entry::Value(k, _) => Err(invalid(format!(
                "a value {:?} at the top level, where only buckets are",
                String::from_utf8_lossy(k)
            ))),
        })?;
        Ok(out)
    }

    /// The top-level bucket named `name`, if there is one.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket>> {
        Ok(self.buckets()?.into_iter().find(|b| b.name == name))
    }

    /// Hands every entry of `bucket` to `f`, in key order. An error from
    /// `f` ends the walk and is returned.
    pub fn walk<E>(&self, bucket: &Bucket, mut f: E) -> Result<()>
    where
        E: FnMut(Entry<'_>) -> Result<()>,
    {
        let mut w = Walk {
            db: self,
            seen: HashSet::new(),
            last: None,
            f: &mut f,
        };
        match &bucket.root {
            Root::Page(id) => w.node(*id, 0),
            Root::Inline(p) => {
                let h = Header::decode(p)?;
                if h.flags != LEAF || h.overflow != 0 {
                    return Err(invalid("an inline bucket that is not one leaf page"));
                }
                w.leaf(p)
            }
        }
    }
}

struct Walk<'a, E> {
    db: &'a Db,
    seen: HashSet<u64>,
    last: Option<Vec<u8>>,
    f: &'a mut E,
}

impl<E> Walk<'_, E>
where
    E: FnMut(Entry<'_>) -> Result<()>,
{
    fn node(&mut self, id: u64, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(invalid(format!("tree deeper than {MAX_DEPTH} levels")));
        }
        if !self.seen.insert(id) {
            return Err(invalid(format!("page {id} is reached twice")));
        }
        let p = self.db.page(id)?;
        match Header::decode(&p)?.flags {
            BRANCH => {
                let children: Vec<u64> =
                    page::branch_elements(&p)?.iter().map(|e| e.pgid).collect();
                for c in children {
                    self.node(c, depth + 1)?;
                }
                Ok(())
            }
            LEAF => self.leaf(&p),
            f => Err(invalid(format!("page {id} has flags {f:#x} inside a tree"))),
        }
    }

    fn leaf(&mut self, p: &[u8]) -> Result<()> {
        for e in page::leaf_elements(p)? {
            if e.key.is_empty() {
                return Err(invalid("an empty key"));
            }
            if self.last.as_deref().is_some_and(|l| l >= e.key) {
                return Err(invalid("keys out of order"));
            }
            self.last = Some(e.key.to_vec());
            let entry = if e.flags & BUCKET_LEAF != 0 {
                Entry::Bucket(Bucket::from_value(e.key, e.value)?)
            } else {
                Entry::Value(e.key, e.value)
            };
            (self.f)(entry)?;
        }
        Ok(())
    }
}
