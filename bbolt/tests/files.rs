//! Files written by the writer read back as written; a real etcd file
//! reads as etcd wrote it; damaged files are refused without a panic.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use cairn_bbolt::{Db, Entry, Writer};
use proptest::prelude::*;

type Buckets = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

fn write(buckets: &Buckets, page_size: u32) -> Vec<u8> {
    let mut w = Writer::new(Cursor::new(Vec::new()), page_size).unwrap();
    for (name, entries) in buckets {
        let mut b = w.bucket(name).unwrap();
        for (k, v) in entries {
            b.put(k, v).unwrap();
        }
        b.finish().unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn read(db: &Db) -> cairn_bbolt::Result<Buckets> {
    let mut out = Buckets::new();
    for b in db.buckets()? {
        let mut entries = BTreeMap::new();
        db.walk(&b, |e| {
            if let Entry::Value(k, v) = e {
                entries.insert(k.to_vec(), v.to_vec());
            }
            Ok(())
        })?;
        out.insert(b.name.clone(), entries);
    }
    Ok(out)
}

fn open_bytes(bytes: &[u8]) -> cairn_bbolt::Result<Db> {
    let f = tempfile::tempfile().unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, bytes, 0).unwrap();
    Db::from_file(f)
}

#[test]
fn a_real_etcd_snapshot_reads_as_etcd_wrote_it() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/etcd-3.4.23-snapshot.db");
    let db = Db::open(&path).unwrap();
    assert_eq!(db.meta().page_size, 4096);
    let got = read(&db).unwrap();
    let names: Vec<&[u8]> = got.keys().map(Vec::as_slice).collect();
    assert_eq!(
        names,
        [
            &b"alarm"[..],
            b"auth",
            b"authRoles",
            b"authUsers",
            b"cluster",
            b"key",
            b"lease",
            b"members",
            b"members_removed",
            b"meta"
        ]
    );
    // Revisions 2..=8, the tombstone of b at 5 marked with a 't'.
    let keys: Vec<&Vec<u8>> = got[&b"key"[..]].keys().collect();
    assert_eq!(keys.len(), 7);
    assert_eq!(keys[3][..8], 5u64.to_be_bytes());
    assert_eq!(keys[3].last(), Some(&b't'));
    assert_eq!(got[&b"cluster"[..]][&b"clusterVersion"[..]], b"3.4.0");
    assert_eq!(got[&b"lease"[..]].len(), 1);
}

#[test]
fn big_buckets_take_several_levels_and_overflow_pages() {
    let mut buckets = Buckets::new();
    let mut key = BTreeMap::new();
    for i in 0..20_000u64 {
        let v = if i % 1000 == 0 {
            vec![b'x'; 10_000]
        } else {
            i.to_string().into_bytes()
        };
        key.insert(i.to_be_bytes().to_vec(), v);
    }
    buckets.insert(b"key".to_vec(), key);
    buckets.insert(b"empty".to_vec(), BTreeMap::new());
    buckets.insert(
        b"meta".to_vec(),
        BTreeMap::from([(b"k".to_vec(), b"v".to_vec())]),
    );
    for ps in [1024, 4096] {
        let bytes = write(&buckets, ps);
        assert_eq!(bytes.len() % ps as usize, 0);
        let db = open_bytes(&bytes).unwrap();
        assert_eq!(read(&db).unwrap(), buckets, "page size {ps}");
    }
}

#[test]
fn keys_out_of_order_empty_or_twice_are_refused_by_the_writer() {
    let mut w = Writer::new(Cursor::new(Vec::new()), 4096).unwrap();
    let mut b = w.bucket(b"x").unwrap();
    b.put(b"b", b"1").unwrap();
    assert!(b.put(b"a", b"1").is_err());
    assert!(b.put(b"b", b"1").is_err());
    assert!(b.put(b"", b"1").is_err());
    b.finish().unwrap();
    assert!(w.bucket(b"x").is_err());
    assert!(Writer::new(Cursor::new(Vec::new()), 1000).is_err());
}

#[test]
fn a_file_cut_short_or_with_damaged_meta_pages_is_refused() {
    let mut buckets = Buckets::new();
    buckets.insert(
        b"b".to_vec(),
        BTreeMap::from([(b"k".to_vec(), b"v".to_vec())]),
    );
    let bytes = write(&buckets, 4096);
    assert!(open_bytes(&bytes[..bytes.len() - 1]).is_err());
    assert!(open_bytes(&bytes[..100]).is_err());
    // One damaged meta page: the other is used.
    let mut one = bytes.clone();
    one[16 + 20] ^= 0xff;
    assert_eq!(read(&open_bytes(&one).unwrap()).unwrap(), buckets);
    // Both: refused.
    one[4096 + 16 + 20] ^= 0xff;
    assert!(open_bytes(&one).is_err());
    // Not a bbolt file at all.
    assert!(open_bytes(&[0u8; 8192]).is_err());
}

#[test]
fn pages_reached_twice_are_refused() {
    // A root branch whose two children are the same leaf: a cycle-free
    // but shared tree, which bbolt never writes.
    let mut buckets = Buckets::new();
    let mut many = BTreeMap::new();
    for i in 0..2000u32 {
        many.insert(i.to_be_bytes().to_vec(), vec![0u8; 20]);
    }
    buckets.insert(b"b".to_vec(), many);
    let mut bytes = write(&buckets, 1024);
    let db = open_bytes(&bytes).unwrap();
    let bucket = db.buckets().unwrap().remove(0);
    // Point the second child of a branch page at its first.
    let ps = 1024;
    let pages = bytes.len() / ps;
    let mut patched = false;
    for id in (3..pages).rev() {
        let p = &bytes[id * ps..(id + 1) * ps];
        if u16::from_le_bytes([p[8], p[9]]) == 0x01 && u16::from_le_bytes([p[10], p[11]]) >= 2 {
            let first = p[16 + 8..16 + 16].to_vec();
            bytes[id * ps + 32 + 8..id * ps + 32 + 16].copy_from_slice(&first);
            patched = true;
            break;
        }
    }
    assert!(patched);
    let db = open_bytes(&bytes).unwrap();
    let err = db.walk(&bucket, |_| Ok(())).unwrap_err();
    assert!(
        err.to_string().contains("reached twice") || err.to_string().contains("out of order"),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn what_is_written_reads_back(
        buckets in prop::collection::btree_map(
            prop::collection::vec(any::<u8>(), 1..12),
            prop::collection::btree_map(
                prop::collection::vec(any::<u8>(), 1..40),
                prop::collection::vec(any::<u8>(), 0..3000),
                0..200,
            ),
            0..5,
        )
    ) {
        let bytes = write(&buckets, 1024);
        let db = open_bytes(&bytes).unwrap();
        prop_assert_eq!(read(&db).unwrap(), buckets);
    }

    #[test]
    fn damaged_files_are_read_or_refused_never_a_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..20),
        cut in any::<prop::sample::Index>(),
        cut_it in any::<bool>(),
        etcd_file in any::<bool>(),
    ) {
        let mut bytes = if etcd_file {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/etcd-3.4.23-snapshot.db");
            std::fs::read(path).unwrap()
        } else {
            let mut many = BTreeMap::new();
            for i in 0..300u32 {
                many.insert(i.to_be_bytes().to_vec(), vec![i as u8; (i as usize * 7) % 1500]);
            }
            write(&Buckets::from([(b"b".to_vec(), many)]), 1024)
        };
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        if cut_it {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok(db) = open_bytes(&bytes) {
            let _ = read(&db);
        }
    }
}
