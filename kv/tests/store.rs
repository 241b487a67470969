//! The store's etcd semantics, case by case.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use cairn_kv::backend::ScanIter;
use cairn_kv::error::BackendError;
use cairn_kv::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(s: &Store<impl Backend>, k: &str, v: &str) -> Applied<PutResponse> {
    put_at(s, k, v, b"")
}

/// Puts `k` = `v`, recording `applied` as the applied position.
fn put_at(s: &Store<impl Backend>, k: &str, v: &str, applied: &[u8]) -> Applied<PutResponse> {
    s.put(
        &PutRequest {
            key: b(k),
            value: b(v),
            ..Default::default()
        },
        applied,
    )
    .unwrap()
}

fn get(s: &Store<impl Backend>, k: &str, rev: i64) -> Result<RangeResponse> {
    s.range(&RangeRequest {
        key: b(k),
        revision: rev,
        ..Default::default()
    })
}

#[test]
fn revisions_versions_and_events() {
    let s = Store::open_temporary().unwrap();
    assert_eq!(s.current_revision(), 1);
    let a = put(&s, "foo", "1");
    assert_eq!(a.revision, 2);
    assert_eq!(a.events[0].kv.create_revision, 2);
    assert_eq!(a.events[0].kv.version, 1);
    assert_eq!(a.events[0].prev_kv, None);
    let a = put(&s, "foo", "1");
    assert_eq!(
        (
            a.events[0].kv.version,
            a.events[0].kv.create_revision,
            a.events[0].kv.mod_revision
        ),
        (2, 2, 3)
    );
    let d = s
        .delete_range(
            &DeleteRangeRequest {
                key: b("foo"),
                prev_kv: true,
                ..Default::default()
            },
            b"",
        )
        .unwrap();
    assert_eq!(d.response.deleted, 1);
    assert_eq!(d.response.header_revision, 4);
    assert_eq!(d.events[0].kind, EventKind::Delete);
    assert_eq!(
        d.events[0].kv,
        KeyValue {
            key: b("foo"),
            mod_revision: 4,
            ..Default::default()
        }
    );
    assert_eq!(d.events[0].prev_kv.as_ref().unwrap().version, 2);
    // Deleting nothing does not bump the revision.
    let d = s
        .delete_range(
            &DeleteRangeRequest {
                key: b("foo"),
                ..Default::default()
            },
            b"",
        )
        .unwrap();
    assert_eq!(
        (d.response.deleted, d.revision, d.response.header_revision),
        (0, 4, 4)
    );
    // Recreated: new generation.
    let a = put(&s, "foo", "2");
    assert_eq!(
        (a.events[0].kv.version, a.events[0].kv.create_revision),
        (1, 5)
    );
    // History is still readable.
    assert_eq!(get(&s, "foo", 3).unwrap().kvs[0].version, 2);
    assert!(get(&s, "foo", 4).unwrap().kvs.is_empty());
    assert_eq!(get(&s, "foo", 3).unwrap().header_revision, 5);
    assert!(matches!(
        get(&s, "foo", 6),
        Err(Error::FutureRevision {
            requested: 6,
            current: 5
        })
    ));
}

#[test]
fn put_options() {
    let s = Store::open_temporary().unwrap();
    let r = s.put(
        &PutRequest {
            key: b("k"),
            ignore_value: true,
            ..Default::default()
        },
        b"",
    );
    assert!(matches!(r, Err(Error::KeyNotFound)));
    assert_eq!(s.current_revision(), 1);
    s.lease_grant(7, 60, b"").unwrap();
    s.put(
        &PutRequest {
            key: b("k"),
            value: b("v"),
            lease: 7,
            ..Default::default()
        },
        b"",
    )
    .unwrap();
    let r = s
        .put(
            &PutRequest {
                key: b("k"),
                ignore_value: true,
                ignore_lease: true,
                prev_kv: true,
                ..Default::default()
            },
            b"",
        )
        .unwrap();
    assert_eq!(r.events[0].kv.value, b("v"));
    assert_eq!(r.events[0].kv.lease, 7);
    assert_eq!(r.response.prev_kv.unwrap().version, 1);
    // A put without a lease detaches it.
    let r = put(&s, "k", "w");
    assert_eq!(r.events[0].kv.lease, 0);
    assert!(matches!(
        s.put(
            &PutRequest {
                key: b("k"),
                value: b("x"),
                ignore_value: true,
                ..Default::default()
            },
            b""
        ),
        Err(Error::ValueProvided)
    ));
    assert!(matches!(
        s.put(
            &PutRequest {
                key: b("k"),
                lease: 1,
                ignore_lease: true,
                ..Default::default()
            },
            b""
        ),
        Err(Error::LeaseProvided)
    ));
    assert!(matches!(
        s.put(&PutRequest::default(), b""),
        Err(Error::EmptyKey)
    ));
}

#[test]
fn txn_ops_see_earlier_ops_and_nested_compares_see_the_start() {
    let s = Store::open_temporary().unwrap();
    put(&s, "a", "0");
    let t = TxnRequest {
        compare: vec![Compare {
            key: b("a"),
            target: CompareTarget::Value(b("0")),
            ..Default::default()
        }],
        success: vec![
            RequestOp::Put(PutRequest {
                key: b("a"),
                value: b("1"),
                ..Default::default()
            }),
            RequestOp::Range(RangeRequest {
                key: b("a"),
                ..Default::default()
            }),
            RequestOp::Txn(TxnRequest {
                // Evaluated before the outer put: a is still "0".
                compare: vec![Compare {
                    key: b("a"),
                    target: CompareTarget::Value(b("0")),
                    ..Default::default()
                }],
                success: vec![RequestOp::Put(PutRequest {
                    key: b("b"),
                    value: b("yes"),
                    ..Default::default()
                })],
                failure: vec![RequestOp::Put(PutRequest {
                    key: b("b"),
                    value: b("no"),
                    ..Default::default()
                })],
            }),
        ],
        failure: vec![],
    };
    let r = s.txn(&t, b"").unwrap();
    assert!(r.response.succeeded);
    assert_eq!(r.response.header_revision, 3);
    let ResponseOp::Range(rr) = &r.response.responses[1] else {
        panic!()
    };
    assert_eq!(rr.kvs[0].value, b("1"));
    assert_eq!(rr.header_revision, 3);
    let ResponseOp::Txn(nested) = &r.response.responses[2] else {
        panic!()
    };
    assert!(nested.succeeded);
    assert_eq!(nested.header_revision, 0);
    // Both changes share revision 3, sub-revisions 0 and 1.
    assert_eq!(get(&s, "b", 0).unwrap().kvs[0].mod_revision, 3);
    assert_eq!(r.events.len(), 2);
    // A missing key compares as zero; a value compare on it is false.
    let zero = |target| TxnRequest {
        compare: vec![Compare {
            key: b("missing"),
            target,
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(
        s.txn(&zero(CompareTarget::Version(0)), b"")
            .unwrap()
            .response
            .succeeded
    );
    assert!(
        !s.txn(&zero(CompareTarget::Value(Bytes::new())), b"")
            .unwrap()
            .response
            .succeeded
    );
    // A read-only txn does not bump the revision.
    assert_eq!(s.current_revision(), 3);
}

#[test]
fn failed_txn_changes_nothing() {
    let s = Store::open_temporary().unwrap();
    put(&s, "b", "0");
    // Passes the duplicate check ("\0" is literal there) but the put finds
    // b deleted by the earlier op: the whole txn fails, nothing applied.
    let t = TxnRequest {
        success: vec![
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b("a"),
                range_end: b("\0"),
                prev_kv: false,
            }),
            RequestOp::Put(PutRequest {
                key: b("b"),
                ignore_value: true,
                ..Default::default()
            }),
        ],
        ..Default::default()
    };
    assert!(matches!(s.txn(&t, b""), Err(Error::KeyNotFound)));
    assert_eq!(s.current_revision(), 2);
    assert_eq!(get(&s, "b", 0).unwrap().kvs[0].value, b("0"));
    // A txn reading a compacted revision fails before writing anything.
    put(&s, "c", "1");
    s.compact(3, b"").unwrap();
    let t = TxnRequest {
        success: vec![
            RequestOp::Put(PutRequest {
                key: b("d"),
                value: b("1"),
                ..Default::default()
            }),
            RequestOp::Range(RangeRequest {
                key: b("c"),
                revision: 2,
                ..Default::default()
            }),
        ],
        ..Default::default()
    };
    assert!(matches!(s.txn(&t, b""), Err(Error::Compacted { .. })));
    assert_eq!(s.current_revision(), 3);
}

#[test]
fn compaction_keeps_newest_and_removes_the_rest() {
    let s = Store::open_temporary().unwrap();
    for i in 0..10 {
        put(&s, "k", &i.to_string()); // revisions 2..=11
    }
    put(&s, "gone", "x"); // 12
    s.delete_range(
        &DeleteRangeRequest {
            key: b("gone"),
            ..Default::default()
        },
        b"",
    )
    .unwrap(); // 13
    let before = s.hash_kv(0).unwrap();
    assert!(matches!(
        s.compact(14, b""),
        Err(Error::FutureRevision { .. })
    ));
    assert_eq!(s.compact(13, b"").unwrap(), 13);
    s.wait_for_compaction().unwrap();
    assert!(matches!(
        get(&s, "k", 12),
        Err(Error::Compacted {
            requested: 12,
            compacted: 13
        })
    ));
    let r = get(&s, "k", 13).unwrap();
    assert_eq!((r.kvs[0].value.as_ref(), r.kvs[0].version), (&b"9"[..], 10));
    assert!(matches!(s.compact(13, b""), Err(Error::Compacted { .. })));
    // Only the newest record of k survives; the deleted key is gone.
    let after = s.hash_kv(0).unwrap();
    assert_eq!(after.compact_revision, 13);
    assert_ne!(before.hash, after.hash);
    // Versions continue after compaction.
    assert_eq!(put(&s, "k", "z").events[0].kv.version, 11);
}

#[test]
fn hash_kv_ignores_physical_progress() {
    let a = Store::open_temporary().unwrap();
    let b_ = Store::open_with(
        Engine::temporary(BackendKind::Fjall).unwrap(),
        Options {
            compaction_batch: 1,
            compaction_pause: std::time::Duration::from_millis(20),
            ..Options::default()
        },
    )
    .unwrap();
    for s in [&a, &b_] {
        for i in 0..50 {
            put(s, &format!("k{}", i % 5), "v");
        }
        s.compact(40, b"").unwrap();
    }
    a.wait_for_compaction().unwrap();
    // b_ is still deleting one record per 20 ms.
    assert_eq!(a.hash_kv(45).unwrap(), b_.hash_kv(45).unwrap());
    b_.wait_for_compaction().unwrap();
    assert_eq!(a.hash().unwrap(), b_.hash().unwrap());
}

#[test]
fn reopen_rebuilds_index_and_resumes_compaction() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open_with(
            FjallBackend::open(dir.path()).unwrap(),
            Options {
                compaction_batch: 1,
                compaction_pause: std::time::Duration::from_millis(50),
                ..Options::default()
            },
        )
        .unwrap();
        for i in 0..20 {
            put(&s, &format!("k{}", i % 3), &i.to_string());
        }
        s.delete_range(
            &DeleteRangeRequest {
                key: b("k1"),
                ..Default::default()
            },
            b"p",
        )
        .unwrap();
        s.compact(15, b"p").unwrap();
        s.flush().unwrap();
        // Dropped while physical compaction is far from done.
    }
    let s = Store::open_path(dir.path()).unwrap();
    assert_eq!(s.current_revision(), 22);
    assert_eq!(s.compacted_revision(), 15);
    assert_eq!(s.applied().as_deref(), Some(&b"p"[..]));
    s.wait_for_compaction().unwrap();
    let r = s
        .range(&RangeRequest {
            key: b("k"),
            range_end: b("l"),
            ..Default::default()
        })
        .unwrap();
    let got: Vec<_> = r
        .kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone(), kv.version))
        .collect();
    assert_eq!(got, vec![(b("k0"), b("18"), 7), (b("k2"), b("17"), 6)]);
    assert_eq!(get(&s, "k1", 15).unwrap().kvs[0].value, b("13"));
}

/// A backend whose writes start failing on demand.
struct Flaky {
    inner: FjallBackend,
    fail: Arc<AtomicBool>,
}

impl Backend for Flaky {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, BackendError> {
        self.inner.get(key)
    }
    fn scan<'a>(&'a self, start: &[u8], end: &[u8]) -> ScanIter<'a> {
        self.inner.scan(start, end)
    }
    fn write(&self, batch: WriteBatch) -> Result<(), BackendError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err("injected write failure".into());
        }
        self.inner.write(batch)
    }
    fn flush(&self) -> Result<(), BackendError> {
        self.inner.flush()
    }
    fn size_on_disk(&self) -> Result<u64, BackendError> {
        self.inner.size_on_disk()
    }
    fn defragment(&self) -> Result<(), BackendError> {
        self.inner.defragment()
    }
}

#[test]
fn backend_failure_poisons_and_shows_nothing() {
    let fail = Arc::new(AtomicBool::new(false));
    let s = Store::open(Flaky {
        inner: FjallBackend::temporary().unwrap(),
        fail: fail.clone(),
    })
    .unwrap();
    put(&s, "a", "1");
    fail.store(true, Ordering::SeqCst);
    let r = s.put(
        &PutRequest {
            key: b("a"),
            value: b("2"),
            ..Default::default()
        },
        b"",
    );
    assert!(matches!(r, Err(Error::Backend(_))));
    fail.store(false, Ordering::SeqCst);
    // Poisoned: nothing is retried or served.
    assert!(matches!(get(&s, "a", 0), Err(Error::Poisoned)));
    assert!(matches!(
        s.put(
            &PutRequest {
                key: b("a"),
                value: b("3"),
                ..Default::default()
            },
            b""
        ),
        Err(Error::Poisoned)
    ));
    assert!(matches!(s.flush(), Err(Error::Poisoned)));
    assert_eq!(s.current_revision(), 2);
}

#[test]
fn range_options() {
    let s = Store::open_temporary().unwrap();
    for (k, v) in [("a", "3"), ("b", "1"), ("c", "2"), ("d", "1")] {
        put(&s, k, v);
    }
    put(&s, "b", "9");
    let all = |f: &dyn Fn(&mut RangeRequest)| {
        let mut r = RangeRequest {
            key: b("a"),
            range_end: b("\0"),
            ..Default::default()
        };
        f(&mut r);
        s.range(&r).unwrap()
    };
    let keys = |r: &RangeResponse| {
        r.kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.to_vec()).unwrap())
            .collect::<Vec<_>>()
            .join("")
    };
    let r = all(&|r| r.limit = 2);
    assert_eq!((keys(&r), r.more, r.count), ("ab".into(), true, 4));
    let r = all(&|r| r.count_only = true);
    assert_eq!((r.kvs.len(), r.count), (0, 4));
    let r = all(&|r| {
        r.sort_target = SortTarget::Value;
        r.sort_order = SortOrder::Descend;
    });
    assert_eq!(keys(&r), "bacd");
    let r = all(&|r| r.sort_target = SortTarget::Mod);
    assert_eq!(keys(&r), "acdb");
    let r = all(&|r| r.min_mod_revision = 4);
    assert_eq!((keys(&r), r.count), ("bcd".into(), 4));
    let r = all(&|r| r.keys_only = true);
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    let r = s
        .range(&RangeRequest {
            key: b("b"),
            range_end: b("d"),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(keys(&r), "bc");
    let r = s
        .range(&RangeRequest {
            key: b("d"),
            range_end: b("b"),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((keys(&r), r.count), ("".into(), 0));
    assert!(matches!(
        s.range(&RangeRequest::default()),
        Err(Error::EmptyKey)
    ));
}

#[test]
fn export_import_round_trip() {
    let a = Store::open_temporary().unwrap();
    for i in 0..40 {
        a.put(
            &PutRequest {
                key: b(&format!("k{}", i % 7)),
                value: b(&i.to_string()),
                ..Default::default()
            },
            format!("p{i}").as_bytes(),
        )
        .unwrap();
    }
    a.delete_range(
        &DeleteRangeRequest {
            key: b("k3"),
            ..Default::default()
        },
        b"p40",
    )
    .unwrap();
    a.compact(30, b"p41").unwrap();
    let mut image = Vec::new();
    let info = a.export(&mut image).unwrap();
    assert_eq!((info.revision, info.compacted), (42, 30));

    let dir = tempfile::tempdir().unwrap();
    let bstore = Store::open_path(dir.path()).unwrap();
    put(&bstore, "other", "data");
    bstore.import(&mut image.as_slice()).unwrap();
    assert_eq!(bstore.current_revision(), 42);
    assert_eq!(bstore.compacted_revision(), 30);
    assert_eq!(bstore.applied(), a.applied());
    assert_eq!(bstore.hash_kv(0).unwrap().hash, a.hash_kv(0).unwrap().hash);
    for rev in 30..=42 {
        let req = RangeRequest {
            key: b("\0"),
            range_end: b("\0"),
            revision: rev,
            ..Default::default()
        };
        assert_eq!(
            bstore.range(&req).unwrap().kvs,
            a.range(&req).unwrap().kvs,
            "rev {rev}"
        );
    }
    assert!(get(&bstore, "other", 0).unwrap().kvs.is_empty());
    drop(bstore);
    let bstore = Store::open_path(dir.path()).unwrap();
    assert_eq!(bstore.current_revision(), 42);
    assert_eq!(get(&bstore, "k0", 0).unwrap().kvs[0].value, b("35"));
}

/// Writes through to a `Vec`, putting a key into the store at its first
/// write: a write landing while an image is being written.
struct WritesDuring<'a> {
    store: &'a Store,
    image: Vec<u8>,
    wrote: bool,
}

impl std::io::Write for WritesDuring<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.wrote {
            self.wrote = true;
            put_at(self.store, "late", "during the export", b"position after");
        }
        self.image.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_image_is_described_by_the_position_fixed_before_it_is_written() {
    let a = Store::open_temporary().unwrap();
    for i in 0..10 {
        put_at(&a, &format!("k{i}"), "v", b"position before");
    }
    let mut fixed = None;
    let mut w = WritesDuring {
        store: &a,
        image: Vec::new(),
        wrote: false,
    };
    let info = a
        .export_fixed(&mut w, |applied| fixed = Some(applied.cloned()))
        .unwrap();
    assert!(w.wrote, "the store was written while the image was");
    assert_eq!(fixed, Some(Some(b("position before"))));
    assert_eq!(info.applied, Some(b("position before")));
    assert_eq!(info.revision, 11);
    assert_eq!(a.current_revision(), 12);
    let image = w.image;
    let restored = Store::open_temporary().unwrap();
    restored.import(&mut image.as_slice()).unwrap();
    assert_eq!(restored.current_revision(), 11);
    assert_eq!(restored.applied(), Some(b("position before")));
    assert!(get(&restored, "late", 0).unwrap().kvs.is_empty());
}

#[test]
fn an_image_read_entry_by_entry_and_written_again_imports_the_same_store() {
    let a = Store::open_temporary().unwrap();
    a.lease_grant(7, 30, b"g").unwrap();
    for i in 0..30 {
        a.put(
            &PutRequest {
                key: b(&format!("k{}", i % 5)),
                value: b(&i.to_string()),
                lease: if i % 5 == 4 { 7 } else { 0 },
                ..Default::default()
            },
            b"p",
        )
        .unwrap();
    }
    let range_all = |rev| DeleteRangeRequest {
        key: b("k1"),
        range_end: b("k4"),
        prev_kv: rev,
    };
    a.delete_range(&range_all(false), b"d").unwrap();
    a.compact(20, b"c").unwrap();
    let mut image = Vec::new();
    let info = a.export(&mut image).unwrap();

    let mut again = Vec::new();
    let mut w =
        snapshot::ImageWriter::new(&mut again, info.revision, info.compacted, b"applied").unwrap();
    let mut seen = (0, 0);
    let read = snapshot::read(&mut image.as_slice(), |e| match e {
        snapshot::ImageEntry::Record(rev, rec) => {
            seen.0 += 1;
            w.record(rev, &rec)
        }
        snapshot::ImageEntry::Lease(l) => {
            seen.1 += 1;
            w.lease(&l)
        }
        snapshot::ImageEntry::Owned(o, v) => w.owned(o, &v),
    })
    .unwrap();
    assert_eq!(read.checksum, info.checksum);
    w.finish().unwrap();
    // The range delete's three tombstones came one by one.
    assert!(seen.0 > info.records as usize && seen.1 == 1, "{seen:?}");

    let c = Store::open_temporary().unwrap();
    c.import(&mut again.as_slice()).unwrap();
    // (The stores' hashes differ: a tombstone run is stored as one entry
    // in `a` and as one entry per tombstone in `c`.)
    assert_eq!(c.current_revision(), a.current_revision());
    for rev in 20..=a.current_revision() {
        let req = RangeRequest {
            key: b("\0"),
            range_end: b("\0"),
            revision: rev,
            ..Default::default()
        };
        assert_eq!(
            c.range(&req).unwrap().kvs,
            a.range(&req).unwrap().kvs,
            "rev {rev}"
        );
    }
    assert_eq!(c.compacted_revision(), 20);
    assert_eq!(c.lease_keys(7), a.lease_keys(7));
    assert!(!a.lease_keys(7).is_empty());
    // A record above the image's revision, or a put whose mod revision
    // is not its own, is refused.
    let mut w = snapshot::ImageWriter::new(Vec::new(), 3, 0, b"").unwrap();
    let kv = KeyValue {
        key: b("x"),
        create_revision: 2,
        mod_revision: 2,
        version: 1,
        ..Default::default()
    };
    assert!(w
        .record(Revision::new(4, 0), &record::Record::Put(kv.clone()))
        .is_err());
    assert!(w
        .record(Revision::new(3, 0), &record::Record::Put(kv.clone()))
        .is_err());
    w.record(Revision::new(2, 0), &record::Record::Put(kv))
        .unwrap();
}

#[test]
fn damaged_import_leaves_a_store_that_opens_empty() {
    let a = Store::open_temporary().unwrap();
    for i in 0..10 {
        put(&a, &format!("k{i}"), "v");
    }
    let mut image = Vec::new();
    a.export(&mut image).unwrap();
    for damage in ["truncate", "flip"] {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_path(dir.path()).unwrap();
        put(&s, "old", "x");
        let mut bad = image.clone();
        if damage == "truncate" {
            bad.truncate(bad.len() - 10);
        } else {
            let n = bad.len() / 2;
            bad[n] ^= 1;
        }
        assert!(s.import(&mut bad.as_slice()).is_err(), "{damage}");
        assert!(matches!(get(&s, "old", 0), Err(Error::Poisoned)));
        drop(s);
        let s = Store::open_path(dir.path()).unwrap();
        assert_eq!(s.current_revision(), 1, "{damage}");
        assert_eq!(s.key_count(), 0, "{damage}");
    }
}

/// History replays exactly the events the writes produced, in order, with
/// prev kvs; chunking never splits a revision; compaction cuts it off.
#[test]
fn history_matches_the_events_of_the_writes() {
    let s = Store::open_temporary().unwrap();
    let mut produced: Vec<(i64, Event)> = Vec::new();
    for i in 0..60 {
        let k = format!("k{}", i % 7);
        let a = match i % 5 {
            0..=2 => {
                let a = put(&s, &k, &format!("v{i}"));
                (a.revision, a.events)
            }
            3 => {
                let a = s
                    .delete_range(
                        &DeleteRangeRequest {
                            key: b(&k),
                            ..Default::default()
                        },
                        b"",
                    )
                    .unwrap();
                (a.revision, a.events)
            }
            _ => {
                // A txn writing two keys in one revision.
                let a = s
                    .txn(
                        &TxnRequest {
                            success: vec![
                                RequestOp::Put(PutRequest {
                                    key: b("t1"),
                                    value: b(&format!("{i}")),
                                    ..Default::default()
                                }),
                                RequestOp::DeleteRange(DeleteRangeRequest {
                                    key: b("k"),
                                    range_end: b("l"),
                                    ..Default::default()
                                }),
                            ],
                            ..Default::default()
                        },
                        b"",
                    )
                    .unwrap();
                (a.revision, a.events)
            }
        };
        produced.extend(filled(&s, a.1).into_iter().map(|e| (a.0, e)));
    }
    let current = s.current_revision();
    let all = s.history(2, current, usize::MAX).unwrap();
    assert_eq!(all.next, current + 1);
    assert_eq!(filled_history(&s, all.events), produced);

    // In chunks of at most ~3 events: same sequence, revisions whole.
    let mut chunked = Vec::new();
    let mut from = 2;
    while from <= current {
        let h = s.history(from, current, 3).unwrap();
        assert!(h.next > from);
        if let (Some(last), true) = (h.events.last(), h.next <= current) {
            assert!(last.0 < h.next);
            assert!(
                produced.iter().filter(|(r, _)| *r == last.0).count()
                    <= h.events.iter().filter(|(r, _)| *r == last.0).count()
            );
        }
        chunked.extend(filled_history(&s, h.events));
        from = h.next;
    }
    assert_eq!(chunked, produced);
    // Bounded by bytes instead (a byte: every chunk is one revision):
    // the same sequence again, revisions whole.
    let mut by_bytes = Vec::new();
    let mut from = 2;
    while from <= current {
        let h = s.history_within(from, current, usize::MAX, 1).unwrap();
        assert!(h.next > from);
        let revs: std::collections::BTreeSet<i64> = h.events.iter().map(|(r, _)| *r).collect();
        assert!(revs.len() <= 1, "one revision per chunk: {revs:?}");
        by_bytes.extend(filled_history(&s, h.events));
        from = h.next;
    }
    assert_eq!(by_bytes, produced);

    s.compact(current - 10, b"").unwrap();
    s.wait_for_compaction().unwrap();
    assert!(matches!(
        s.history(current - 11, current, 10),
        Err(Error::Compacted { .. })
    ));
    // From the compacted revision itself, as etcd: its events whole, the
    // deletes too (physical compaction keeps its tombstones), with no
    // previous version to show.
    let at = s.history(current - 10, current - 10, usize::MAX).unwrap();
    let want: Vec<_> = produced
        .iter()
        .filter(|(r, _)| *r == current - 10)
        .map(|(r, e)| {
            let mut e = e.clone();
            e.prev_kv = None;
            e.prev_revision = None;
            (*r, e)
        })
        .collect();
    assert!(!want.is_empty());
    assert_eq!(filled_history(&s, at.events), want);
    let tail = s.history(current - 9, current, usize::MAX).unwrap();
    let want: Vec<_> = produced
        .iter()
        .filter(|(r, _)| *r >= current - 9)
        .cloned()
        .collect();
    assert_eq!(filled_history(&s, tail.events), want);
}

/// Events with every `prev_kv` read in.
fn filled(s: &Store<impl Backend>, mut events: Vec<Event>) -> Vec<Event> {
    s.fill_prev_kv(&mut events).unwrap();
    events
}

fn filled_history(s: &Store<impl Backend>, events: Vec<(i64, Event)>) -> Vec<(i64, Event)> {
    let (revs, events): (Vec<i64>, Vec<Event>) = events.into_iter().unzip();
    revs.into_iter().zip(filled(s, events)).collect()
}

fn put_leased(s: &Store<impl Backend>, k: &str, lease: i64) -> Result<Applied<PutResponse>> {
    s.put(
        &PutRequest {
            key: b(k),
            value: b("v"),
            lease,
            ..Default::default()
        },
        b"",
    )
}

#[test]
fn leases_attach_detach_revoke_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_path(dir.path()).unwrap();
    assert!(matches!(put_leased(&s, "a", 7), Err(Error::LeaseNotFound)));
    s.lease_grant(7, 60, b"g7").unwrap();
    s.lease_grant(8, 30, b"g8").unwrap();
    assert!(matches!(s.lease_grant(7, 5, b""), Err(Error::LeaseExists)));
    assert_eq!(s.current_revision(), 1, "grants change no revision");
    for k in ["c", "a", "b"] {
        put_leased(&s, k, 7).unwrap();
    }
    put_leased(&s, "d", 8).unwrap();
    put_leased(&s, "b", 0).unwrap(); // detaches b
    put_leased(&s, "d", 7).unwrap(); // moves d from 8 to 7
    s.delete_range(
        &DeleteRangeRequest {
            key: b("c"),
            ..Default::default()
        },
        b"",
    )
    .unwrap();
    assert_eq!(s.lease_keys(7), vec![b("a"), b("d")]);
    assert!(s.lease_keys(8).is_empty());
    s.lease_checkpoint(&[(7, 42), (99, 1)], b"cp").unwrap();
    s.flush().unwrap();
    drop(s);

    let s = Store::open_path(dir.path()).unwrap();
    assert_eq!(s.lease_keys(7), vec![b("a"), b("d")]);
    assert_eq!(
        s.leases(),
        vec![
            Lease {
                id: 7,
                ttl: 60,
                remaining_ttl: 42
            },
            Lease {
                id: 8,
                ttl: 30,
                remaining_ttl: 0
            }
        ]
    );
    let before = s.current_revision();
    let r = s.lease_revoke(7, b"r7").unwrap();
    assert_eq!(r.response, 2);
    assert_eq!(r.revision, before + 1, "one revision for every key");
    let deleted: Vec<_> = r.events.iter().map(|e| e.kv.key.clone()).collect();
    assert_eq!(deleted, vec![b("a"), b("d")]);
    assert!(r.events.iter().all(|e| e.prev_kv.is_none()));
    assert!(filled(&s, r.events)
        .iter()
        .all(|e| e.kind == EventKind::Delete && e.prev_kv.as_ref().is_some_and(|p| p.lease == 7)));
    assert!(s.lease(7).is_none());
    assert!(matches!(s.lease_revoke(7, b""), Err(Error::LeaseNotFound)));
    let empty = s.lease_revoke(8, b"r8").unwrap();
    assert_eq!(
        (empty.response, empty.revision),
        (0, before + 1),
        "revoking a lease without keys changes no revision"
    );
    assert_eq!(get(&s, "b", 0).unwrap().kvs.len(), 1);
    s.flush().unwrap();
    drop(s);
    let s = Store::open_path(dir.path()).unwrap();
    assert!(s.leases().is_empty());
    assert_eq!(s.applied().as_deref(), Some(&b"r8"[..]));
}

/// Opens the store at `path`, waiting for the previous instance to let go
/// of the directory's lock.
fn reopen(path: &std::path::Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open_path(path) {
            Ok(s) => return s,
            Err(e) if e.to_string().contains("lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("reopen: {e}"),
        }
    }
}

/// A delete of many keys in one revision (stored as one run of
/// tombstones) reads back the same after reopen and compacts away.
#[test]
fn a_large_range_delete_survives_reopen_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv");
    let (deleted_at, hash_before) = {
        let s = Store::open_path(&path).unwrap();
        for i in 0..500 {
            put(&s, &format!("d/{i:04}"), "v");
        }
        put(&s, "e", "kept");
        let d = s
            .delete_range(
                &DeleteRangeRequest {
                    key: b("d/"),
                    range_end: b("d0"),
                    ..Default::default()
                },
                b"",
            )
            .unwrap();
        assert_eq!(d.response.deleted, 500);
        assert_eq!(d.events.len(), 500);
        s.flush().unwrap();
        (d.revision, s.hash_kv(d.revision).unwrap())
    };
    let s = reopen(&path);
    assert_eq!(s.hash_kv(deleted_at).unwrap(), hash_before);
    let all = |rev| {
        s.range(&RangeRequest {
            key: b("d/"),
            range_end: b("d0"),
            revision: rev,
            count_only: true,
            ..Default::default()
        })
        .unwrap()
        .count
    };
    assert_eq!(all(deleted_at - 1), 500);
    assert_eq!(all(deleted_at), 0);
    let h = s.history(deleted_at, deleted_at, usize::MAX).unwrap();
    assert_eq!(h.events.len(), 500);
    assert!(filled_history(&s, h.events)
        .iter()
        .enumerate()
        .all(|(i, (r, e))| *r == deleted_at
            && e.kind == EventKind::Delete
            && e.kv.key == b(&format!("d/{i:04}"))
            && e.prev_kv.as_ref().is_some_and(|p| p.value == b("v"))));
    // A deleted key starts a new life.
    let again = put(&s, "d/0007", "w");
    assert_eq!(again.events[0].kv.version, 1);
    assert_eq!(again.events[0].kv.create_revision, again.revision);
    s.compact(deleted_at, b"").unwrap();
    s.wait_for_compaction().unwrap();
    assert_eq!(all(0), 1);
    assert_eq!(get(&s, "e", 0).unwrap().kvs[0].value, b("kept"));
    drop(s);
    let s = reopen(&path);
    assert_eq!(get(&s, "d/0007", 0).unwrap().kvs[0].value, b("w"));
    assert_eq!(get(&s, "d/0008", 0).unwrap().kvs.len(), 0);
}

fn compare(key: &str, target: CompareTarget) -> Compare {
    Compare {
        key: b(key),
        range_end: Bytes::new(),
        result: CompareResult::Equal,
        target,
    }
}

/// A store whose revoked keys reach the index only when touched.
fn touch_only(dir: &std::path::Path) -> Store<FjallBackend> {
    Store::open_with(
        FjallBackend::open(dir).unwrap(),
        Options {
            revoke_step: 0,
            ..Options::default()
        },
    )
    .unwrap()
}

/// Leases 1 (five keys: p/a, p/b (version 2), p/c, q/a, q/b) and 2 (r/a),
/// a plain p/x; revokes lease 1. Returns the revoke's revision.
fn revoke_five(s: &Store<FjallBackend>) -> i64 {
    s.lease_grant(1, 60, b"").unwrap();
    s.lease_grant(2, 60, b"").unwrap();
    for k in ["p/a", "p/b", "p/c", "q/a", "q/b"] {
        put_leased(s, k, 1).unwrap();
    }
    put_leased(s, "p/b", 1).unwrap();
    put(s, "p/x", "plain");
    put_leased(s, "r/a", 2).unwrap();
    let r = s.lease_revoke(1, b"revoked").unwrap();
    assert_eq!(r.response, 5);
    let keys: Vec<_> = r.events.iter().map(|e| e.kv.key.clone()).collect();
    assert_eq!(keys, vec![b("p/a"), b("p/b"), b("p/c"), b("q/a"), b("q/b")]);
    assert!(r
        .events
        .iter()
        .all(|e| e.kind == EventKind::Delete && e.kv.mod_revision == r.revision));
    // p/b's latest put is the second one, at revision 7.
    assert_eq!(r.events[1].prev_revision.map(|p| p.main), Some(7));
    r.revision
}

fn prefix(p: &str, rev: i64) -> RangeRequest {
    RangeRequest {
        key: b(p),
        range_end: b(&format!("{}0", &p[..p.len() - 1])),
        revision: rev,
        ..Default::default()
    }
}

/// With the background revoker off, a revoke's keys stay pending in the
/// index; reads and writes elsewhere go on, and every way of touching the
/// keys sees them deleted at the revoke's revision.
#[test]
fn revoked_keys_pending_in_the_index_read_as_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let s = touch_only(dir.path());
    let r = revoke_five(&s);
    assert_eq!(s.key_count(), 2, "p/x and r/a live");
    put(&s, "z", "1");
    assert_eq!(get(&s, "r/a", 0).unwrap().count, 1);
    // Before the revoke the keys are there; at and after it, not.
    assert_eq!(s.range(&prefix("p/", r - 1)).unwrap().count, 4);
    assert_eq!(s.range(&prefix("p/", r)).unwrap().count, 1);
    assert_eq!(s.range(&prefix("q/", 0)).unwrap().kvs, vec![]);
    let hash = s.hash_kv(0).unwrap();
    s.flush().unwrap();
    drop(s);
    let s = reopen(dir.path());
    assert_eq!(s.hash_kv(0).unwrap(), hash, "same as the index rebuilt");
    assert_eq!(s.range(&prefix("p/", r)).unwrap().count, 1);

    // Compares (version, create revision, lease) see them gone.
    let dir = tempfile::tempdir().unwrap();
    let s = touch_only(dir.path());
    revoke_five(&s);
    let txn = TxnRequest {
        compare: vec![
            compare("p/a", CompareTarget::Version(0)),
            compare("p/b", CompareTarget::CreateRevision(0)),
            compare("q/a", CompareTarget::Lease(0)),
        ],
        success: vec![],
        failure: vec![],
    };
    assert!(s.txn(&txn, b"").unwrap().response.succeeded);

    // A put to a revoked key starts a new life of it.
    let dir = tempfile::tempdir().unwrap();
    let s = touch_only(dir.path());
    let r = revoke_five(&s);
    let p = s
        .put(
            &PutRequest {
                key: b("p/b"),
                value: b("new"),
                prev_kv: true,
                ..Default::default()
            },
            b"",
        )
        .unwrap();
    assert_eq!((p.response.prev_kv, p.revision), (None, r + 1));
    let kv = &get(&s, "p/b", 0).unwrap().kvs[0];
    assert_eq!((kv.version, kv.create_revision, kv.lease), (1, r + 1, 0));

    // A delete over them deletes nothing.
    let dir = tempfile::tempdir().unwrap();
    let s = touch_only(dir.path());
    let r = revoke_five(&s);
    let d = s
        .delete_range(
            &DeleteRangeRequest {
                key: b("q/"),
                range_end: b("q0"),
                ..Default::default()
            },
            b"",
        )
        .unwrap();
    assert_eq!((d.response.deleted, d.revision), (0, r));

    // Compaction at the revoke keeps only what a read there sees.
    let dir = tempfile::tempdir().unwrap();
    let s = touch_only(dir.path());
    let r = revoke_five(&s);
    s.compact(r, b"").unwrap();
    s.wait_for_compaction().unwrap();
    assert_eq!(s.range(&prefix("p/", r)).unwrap().count, 1);
    assert_eq!(s.key_count(), 2);

    // A store closed with the revoke pending opens with it done.
    let dir = tempfile::tempdir().unwrap();
    let s = touch_only(dir.path());
    let r = revoke_five(&s);
    s.flush().unwrap();
    drop(s);
    let s = reopen(dir.path());
    assert_eq!(s.current_revision(), r);
    assert_eq!(s.range(&prefix("q/", 0)).unwrap().count, 0);
    assert_eq!(s.key_count(), 2);
    assert_eq!(s.lease_keys(2), vec![b("r/a")]);
    assert!(s.lease(1).is_none());
}

/// With the default revoker, the index catches up on its own.
#[test]
fn revoker_settles_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_with(
        FjallBackend::open(dir.path()).unwrap(),
        Options {
            revoke_step: 2,
            ..Options::default()
        },
    )
    .unwrap();
    revoke_five(&s);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.pending_revoked_keys() > 0 {
        assert!(std::time::Instant::now() < deadline, "revoker stuck");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(s.key_count(), 2);
}

/// Physical compaction keeps the tombstones of the compaction revision
/// (a watch may start there and must see the deletes), and the next
/// compaction removes them.
#[test]
fn tombstones_at_the_compaction_revision_last_until_the_next_compaction() {
    for kind in BackendKind::ALL.into_iter().filter(|k| k.available()) {
        let s = Store::open_temporary_with(kind).unwrap();
        put(&s, "k", "1");
        let del = s
            .delete_range(
                &DeleteRangeRequest {
                    key: b("k"),
                    ..Default::default()
                },
                b"",
            )
            .unwrap()
            .revision;
        put(&s, "other", "1");
        let records = |s: &Store| s.export(&mut Vec::new()).unwrap().records;
        s.compact(del, b"").unwrap();
        s.wait_for_compaction().unwrap();
        // The put of "k" is gone, its tombstone stays, "other" stays.
        assert_eq!(records(&s), 2, "{kind}");
        let h = s.history(del, del, usize::MAX).unwrap();
        assert_eq!(h.events.len(), 1, "{kind}");
        assert_eq!(h.events[0].1.kind, EventKind::Delete, "{kind}");
        assert_eq!(h.events[0].1.kv.key, b("k"));
        s.compact(del + 1, b"").unwrap();
        s.wait_for_compaction().unwrap();
        assert_eq!(records(&s), 1, "{kind}");
        assert!(matches!(
            s.history(del, del + 1, usize::MAX),
            Err(Error::Compacted { .. })
        ));
    }
}

/// Defragment gives back the space of compacted revisions (fjall: every
/// table merged; measured, not assumed): afterwards the store takes about
/// what a store holding only the live data does, and the data left reads
/// the same.
#[test]
fn defragment_returns_compacted_space() {
    let big = "x".repeat(32 << 10);
    // The live data alone, for comparison.
    let lean_dir = tempfile::tempdir().unwrap();
    let lean = Store::open_path(lean_dir.path()).unwrap();
    for k in 0..100 {
        put(&lean, &format!("k{k:03}"), &big);
    }
    lean.flush().unwrap();
    lean.defragment().unwrap();
    let live = lean.size_on_disk().unwrap();
    drop(lean);

    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_path(dir.path()).unwrap();
    // 40 versions of 100 keys of 32 KiB: 125 MiB (more than fjall's
    // journal, so most of it goes to tables), of which 3.1 MiB live.
    for _ in 0..40 {
        for k in 0..100 {
            put(&s, &format!("k{k:03}"), &big);
        }
    }
    s.flush().unwrap();
    let rev = s.current_revision();
    s.compact(rev, b"").unwrap();
    s.wait_for_compaction().unwrap();
    s.flush().unwrap();
    let before = s.size_on_disk().unwrap();
    s.defragment().unwrap();
    let after = s.size_on_disk().unwrap();
    eprintln!("defragment: {before} -> {after} bytes on disk; live data alone: {live}");
    assert!(
        after < before,
        "defragment freed nothing: {before} -> {after}"
    );
    assert!(
        after <= live + (8 << 20),
        "defragment kept {after} bytes; the live data alone takes {live}"
    );
    let r = s
        .range(&RangeRequest {
            key: b("k"),
            range_end: b("l"),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.kvs.len(), 100);
    assert!(r.kvs.iter().all(|kv| kv.value.len() == big.len()));
}
