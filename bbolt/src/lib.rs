//! A small reader and writer of bbolt files: the format of etcd's
//! backend (`member/snap/db`, and what `etcdctl snapshot save` writes
//! before its hash). Cairn reads one to import an etcd keyspace and
//! writes one to hand a keyspace back to etcd. No unsafe code; a file
//! is read with positioned reads, never mapped.
//!
//! - [`page`]: the page header, the meta page, branch and leaf elements.
//! - [`read`]: [`Db`], a file walked bucket by bucket in key order, every
//!   offset and page id checked; what it does not understand it refuses.
//! - [`mod@write`]: [`Writer`], a new file written in one pass.
//!
//! # The format (bbolt version 2, little-endian)
//!
//! ```text
//! file:    page 0, page 1, … each `page_size` bytes (4096 on etcd's Linux)
//! page:    id u64 | flags u16 | count u16 | overflow u32 | body
//!          flags: 0x01 branch, 0x02 leaf, 0x04 meta, 0x10 freelist;
//!          a node larger than a page takes `overflow` more pages
//! meta:    (pages 0 and 1, the valid one of higher txid is in use)
//!          magic 0xED0CDAED u32 | version 2 u32 | page_size u32 | flags u32
//!          | root bucket: root page u64, sequence u64 | freelist page u64
//!          | high water mark (pages in use) u64 | txid u64
//!          | FNV-1a 64 of the 56 bytes before
//! branch:  count × (pos u32 | key size u32 | child page u64), then keys;
//!          each key is the first key under its child
//! leaf:    count × (flags u32 | pos u32 | key size u32 | value size u32),
//!          then key, value, key, value…; `pos` counts from the element
//! bucket:  a leaf value with flags 0x01: root page u64 | sequence u64,
//!          and, if the root page is 0, the bucket's one leaf page inline
//! ```
//!
//! The top-level buckets are the entries of the root bucket; keys ascend
//! bytewise in every bucket.
//!
//! # Crash behaviour
//!
//! [`Writer`] writes a new file front to back and its meta pages last,
//! so a file cut short by a crash has no valid meta page and [`Db`]
//! refuses it; the caller writes to a temporary name and renames after
//! syncing. Nothing here changes an existing file.

pub mod error;
pub mod page;
pub mod read;
pub mod write;

pub use error::{Error, Result};
pub use read::{Bucket, Db, Entry};
pub use write::{BucketWriter, Writer, DEFAULT_PAGE_SIZE};
