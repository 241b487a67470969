//! Store images (Raft snapshots, backups) from arbitrary bytes: an import
//! of anything but an intact image fails, never panics, and leaves a
//! store that reopens empty; nothing damaged is ever served.
//!
//! A bounded number of cases for the test command; inputs that
//! found a bug are kept in `fuzz.proptest-regressions` beside this file.

use bytes::Bytes;
use cairn_kv::*;
use proptest::prelude::*;

fn image() -> Vec<u8> {
    let s = Store::open_temporary().unwrap();
    for i in 0..20u32 {
        let req = PutRequest {
            key: Bytes::from(format!("k{}", i % 7)),
            value: Bytes::from(vec![b'v'; (i * 13 % 50) as usize]),
            ..Default::default()
        };
        s.put(&req, b"").unwrap();
    }
    let del = DeleteRangeRequest {
        key: Bytes::from_static(b"k3"),
        ..Default::default()
    };
    s.delete_range(&del, b"").unwrap();
    let mut out = Vec::new();
    s.export(&mut out).unwrap();
    out
}

/// Imports `bytes` into a fresh store; returns whether it was accepted,
/// after checking that a refused import leaves a store that reopens empty.
fn import(bytes: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open_path(dir.path()).unwrap();
    let ok = s.import(&mut &bytes[..]).is_ok();
    drop(s);
    let s = Store::open_path(dir.path()).unwrap();
    if !ok {
        assert_eq!(s.key_count(), 0);
        assert_eq!(s.current_revision(), 1);
    }
    ok
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arbitrary_bytes_are_refused(mut bytes in proptest::collection::vec(any::<u8>(), 0..512), magic: bool) {
        if magic {
            // Past the magic, so the decoder itself is exercised.
            let mut b = b"CAIRNKV1".to_vec();
            b.append(&mut bytes);
            bytes = b;
        }
        prop_assert!(!import(&bytes));
    }

    #[test]
    fn damaged_images_are_refused(at in any::<prop::sample::Index>(), with in any::<u8>(), cut: bool) {
        let good = image();
        let mut bad = good.clone();
        let i = at.index(bad.len());
        if cut {
            bad.truncate(i);
        } else {
            bad[i] = with;
        }
        prop_assert_eq!(import(&bad), bad == good);
    }
}

#[test]
fn a_length_field_of_gigabytes_does_not_allocate_them() {
    // The applied-position length says 4 GiB, and nothing follows.
    let mut b = b"CAIRNKV1".to_vec();
    b.extend_from_slice(&2i64.to_be_bytes());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&(u32::MAX - 1).to_be_bytes());
    assert!(!import(&b));
}
