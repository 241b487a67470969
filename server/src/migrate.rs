//! Moving a keyspace between etcd and Cairn: etcd's backend layout read
//! into a kv image ([`from_etcd_db`]), and a kv image written out in
//! etcd's layout ([`to_etcd_db`]), so that `cairnutl migrate` moves a
//! cluster either way with every key, value, revision, version and lease
//! as it was (what Kubernetes' resourceVersions are made of).
//!
//! etcd's layout (its bbolt buckets; integers big-endian):
//!
//! ```text
//! key:        main u64 | '_' | sub u64 [| 't' for a deletion]
//!             → mvccpb.KeyValue (a deletion's holds only the key)
//! meta:       "finishedCompactRev", "scheduledCompactRev" → main | '_' | sub
//!             "consistent_index" → u64
//! lease:      id u64 → leasepb.Lease { ID = 1, TTL = 2, RemainingTTL = 3 }
//! auth:       "authEnabled" → 1 byte, "authRevision" → u64
//! authUsers:  name → authpb.User;  authRoles: name → authpb.Role
//! members, members_removed, cluster, alarm: the cluster's own, not moved
//! ```
//!
//! etcd's revision after a restart is the highest revision in `key`, or
//! its compaction revision if that is higher; both directions keep that
//! rule. A file this module does not understand (a key of another
//! length, a record that does not decode, a nested bucket) is refused
//! with what and where, never skipped.
//!
//! May not: touch a running member; it reads and writes files only.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::Path;

use bytes::Bytes;
use cairn_bbolt::{Db, Entry, Writer};
use cairn_kv::record::Record;
use cairn_kv::snapshot::{self, ImageEntry, ImageWriter};
use cairn_kv::{ImageInfo, KeyValue, Lease, Owned, Revision, NEVER_COMPACTED};
use cairn_proto::authpb;
use cairn_proto::mvccpb;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::auth::state::{Access, AuthState, Permission, Role, User};

/// Bytes of the SHA-256 etcd appends to a snapshot file.
const HASH_LEN: u64 = 32;

/// etcd's `leasepb.Lease`, as stored in its `lease` bucket.
#[derive(Clone, PartialEq, Message)]
struct LeasePb {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

/// Why a migration cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A file could not be read or written.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The etcd file is not a bbolt file, or a damaged one.
    #[error("{0}")]
    Bbolt(#[from] cairn_bbolt::Error),
    /// The etcd file is a bbolt file, but not one etcd wrote as expected.
    #[error("not an etcd backend: {0}")]
    Layout(String),
    /// The snapshot's SHA-256 does not match its contents.
    #[error(
        "snapshot file integrity check failed: the SHA-256 at its end does not match its contents"
    )]
    HashMismatch,
    /// The kv image could not be written or read.
    #[error("kv image: {0}")]
    Image(#[from] cairn_kv::Error),
}

fn layout(what: impl Into<String>) -> MigrateError {
    MigrateError::Layout(what.into())
}

/// What an etcd file held.
#[derive(Clone, Debug, Default)]
pub struct EtcdSummary {
    /// The revision etcd would start at.
    pub revision: i64,
    /// Its compaction revision ([`NEVER_COMPACTED`] if none).
    pub compacted: i64,
    /// Key revisions (puts and deletions).
    pub records: u64,
    /// Leases.
    pub leases: u64,
    /// Users.
    pub users: u64,
    /// Roles.
    pub roles: u64,
    /// Whether the file's SHA-256 was there and checked.
    pub hash_checked: bool,
}

fn etcd_revision(main: i64, sub: i64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..8].copy_from_slice(&(main as u64).to_be_bytes());
    k[8] = b'_';
    k[9..].copy_from_slice(&(sub as u64).to_be_bytes());
    k
}

/// An etcd `key` bucket key: the revision, and whether it is a deletion.
fn parse_key_bucket_key(k: &[u8]) -> Result<(Revision, bool), MigrateError> {
    let tombstone = match k.len() {
        17 => false,
        18 if k[17] == b't' => true,
        _ => {
            return Err(layout(format!(
                "a key bucket key of {} bytes: {k:?}",
                k.len()
            )))
        }
    };
    parse_revision(&k[..17]).map(|r| (r, tombstone))
}

fn parse_revision(b: &[u8]) -> Result<Revision, MigrateError> {
    if b.len() != 17 || b[8] != b'_' {
        return Err(layout(format!("a revision that is not main_sub: {b:?}")));
    }
    let word = |r: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(r);
        u64::from_be_bytes(a)
    };
    let (main, sub) = (word(&b[..8]), word(&b[9..]));
    if main == 0 || main > i64::MAX as u64 || sub > i64::MAX as u64 {
        return Err(layout(format!("revision {main}_{sub} out of range")));
    }
    Ok(Revision::new(main as i64, sub as i64))
}

/// Checks the SHA-256 etcd appends to a snapshot (a file whose size is
/// 32 past a multiple of 512); a file without one (`member/snap/db`) is
/// taken as it is. Whether a hash was there.
fn check_hash(path: &Path, skip_hash_check: bool) -> Result<bool, MigrateError> {
    let size = std::fs::metadata(path)?.len();
    if size % 512 != HASH_LEN {
        return Ok(false);
    }
    if skip_hash_check {
        return Ok(false);
    }
    let mut f = File::open(path)?;
    let mut sha = Sha256::new();
    io::copy(&mut (&mut f).take(size - HASH_LEN), &mut sha)?;
    let mut want = [0u8; HASH_LEN as usize];
    f.read_exact(&mut want)?;
    if sha.finalize().as_slice() != want {
        return Err(MigrateError::HashMismatch);
    }
    Ok(true)
}

/// The top-level bucket `name`, or `None`; a nested bucket inside any
/// bucket this module reads is refused.
fn bucket(db: &Db, name: &str) -> Result<Option<cairn_bbolt::Bucket>, MigrateError> {
    Ok(db.bucket(name.as_bytes())?)
}

fn each_value(
    db: &Db,
    name: &str,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), MigrateError>,
) -> Result<(), MigrateError> {
    let Some(b) = bucket(db, name)? else {
        return Ok(());
    };
    let mut failed = None;
    db.walk(&b, |e| match e {
        Entry::Value(k, v) => f(k, v).map_err(|e| {
            failed = Some(e);
            cairn_bbolt::Error::Invalid("stopped".into())
        }),
        Entry::Bucket(n) => {
            failed = Some(layout(format!(
                "a bucket {:?} nested in {name}",
                String::from_utf8_lossy(&n.name)
            )));
            Err(cairn_bbolt::Error::Invalid("stopped".into()))
        }
    })
    .map_err(|e| failed.take().unwrap_or(MigrateError::Bbolt(e)))
}

/// Reads the etcd backend at `path` (a snapshot file, its SHA-256 checked
/// unless `skip_hash_check`, or a member's `member/snap/db`) and writes
/// it to `out` as a kv image: every key revision not compacted, the
/// leases, users and roles, at etcd's revision. `applied` is the image's
/// applied position.
pub fn from_etcd_db(
    path: &Path,
    skip_hash_check: bool,
    out: impl Write,
    applied: &[u8],
) -> Result<(EtcdSummary, ImageInfo), MigrateError> {
    let hash_checked = check_hash(path, skip_hash_check)?;
    let db = Db::open(path)?;
    let mut sum = EtcdSummary {
        hash_checked,
        compacted: NEVER_COMPACTED,
        ..Default::default()
    };

    // The compaction revision: the scheduled one if it is past the one
    // finished (etcd finishes it when it starts).
    each_value(&db, "meta", |k, v| {
        if k == b"finishedCompactRev" || k == b"scheduledCompactRev" {
            sum.compacted = sum.compacted.max(parse_revision(v)?.main);
        }
        Ok(())
    })?;
    // First pass over the keys: the highest revision (the image's header
    // comes first).
    let mut highest = 0;
    each_value(&db, "key", |k, _| {
        let (rev, _) = parse_key_bucket_key(k)?;
        highest = highest.max(rev.main);
        Ok(())
    })?;
    sum.revision = highest.max(sum.compacted).max(1);

    let mut image = ImageWriter::new(out, sum.revision, sum.compacted, applied)?;
    each_value(&db, "key", |k, v| {
        let (rev, tombstone) = parse_key_bucket_key(k)?;
        let kv =
            mvccpb::KeyValue::decode(v).map_err(|e| layout(format!("the record at {rev}: {e}")))?;
        if kv.key.is_empty() {
            return Err(layout(format!("the record at {rev} has no key")));
        }
        let record = if tombstone {
            Record::Tombstone(kv.key)
        } else {
            if kv.mod_revision != rev.main || kv.create_revision < 1 || kv.version < 1 {
                return Err(layout(format!(
                    "the record at {rev} says mod revision {}, create revision {}, version {}",
                    kv.mod_revision, kv.create_revision, kv.version
                )));
            }
            Record::Put(KeyValue {
                key: kv.key,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
                value: kv.value,
                lease: kv.lease,
            })
        };
        image.record(rev, &record)?;
        sum.records += 1;
        Ok(())
    })?;
    each_value(&db, "lease", |k, v| {
        let l = LeasePb::decode(v).map_err(|e| layout(format!("lease {k:?}: {e}")))?;
        let id = <[u8; 8]>::try_from(k)
            .map(i64::from_be_bytes)
            .map_err(|_| layout(format!("a lease key of {} bytes", k.len())))?;
        if id != l.id || id <= 0 {
            return Err(layout(format!("lease {id} says it is lease {}", l.id)));
        }
        image.lease(&Lease {
            id,
            ttl: l.ttl,
            remaining_ttl: l.remaining_ttl,
        })?;
        sum.leases += 1;
        Ok(())
    })?;
    if let Some(auth) = read_auth(&db)? {
        sum.users = auth.users.len() as u64;
        sum.roles = auth.roles.len() as u64;
        let raw = auth.to_bytes().map_err(layout)?;
        image.owned(Owned::Auth, &raw)?;
    }
    let info = image.finish()?;
    Ok((sum, info))
}

/// etcd's users, roles and auth switch as Cairn's auth state; `None` if
/// auth was never used.
fn read_auth(db: &Db) -> Result<Option<AuthState>, MigrateError> {
    let mut st = AuthState::default();
    let mut used = false;
    each_value(db, "auth", |k, v| {
        match k {
            b"authEnabled" => st.enabled = v == [1],
            b"authRevision" => {
                let r = <[u8; 8]>::try_from(v)
                    .map_err(|_| layout("an authRevision that is not 8 bytes"))?;
                st.revision = u64::from_be_bytes(r);
            }
            _ => {}
        }
        Ok(())
    })?;
    each_value(db, "authUsers", |k, v| {
        used = true;
        let u = authpb::User::decode(v).map_err(|e| layout(format!("user {k:?}: {e}")))?;
        let name = String::from_utf8(u.name.to_vec())
            .map_err(|_| layout(format!("a user name that is not UTF-8: {k:?}")))?;
        let no_password = u.options.is_some_and(|o| o.no_password);
        let password_hash = if no_password || u.password.is_empty() {
            None
        } else {
            Some(
                String::from_utf8(u.password.to_vec())
                    .map_err(|_| layout(format!("user {name}'s password hash is not text")))?,
            )
        };
        st.users.insert(
            name,
            User {
                password_hash,
                roles: u.roles.into_iter().collect::<BTreeSet<_>>(),
                generation: st.revision,
            },
        );
        Ok(())
    })?;
    each_value(db, "authRoles", |k, v| {
        used = true;
        let r = authpb::Role::decode(v).map_err(|e| layout(format!("role {k:?}: {e}")))?;
        let name = String::from_utf8(r.name.to_vec())
            .map_err(|_| layout(format!("a role name that is not UTF-8: {k:?}")))?;
        let mut permissions: Vec<Permission> = r
            .key_permission
            .into_iter()
            .map(|p| Permission {
                access: Access::from_pb(p.perm_type),
                key: p.key.to_vec(),
                range_end: p.range_end.to_vec(),
            })
            .collect();
        permissions.sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
        st.roles.insert(name, Role { permissions });
        Ok(())
    })?;
    if !(used || st.enabled) {
        return Ok(None);
    }
    // No token signing key: every member is made from the file on its
    // own, so the new cluster's leader makes the one they share.
    Ok(Some(st))
}

/// What [`to_etcd_db`] wrote.
#[derive(Clone, Debug, Default)]
pub struct ExportSummary {
    /// The image's revision.
    pub revision: i64,
    /// The revision etcd will start at: the highest key revision or the
    /// compaction revision (below the image's after a `--bump-revision`
    /// restore without `--mark-compacted`, which etcd cannot express).
    pub etcd_revision: i64,
    /// The compaction revision.
    pub compacted: i64,
    /// Key revisions written.
    pub records: u64,
    /// Leases written.
    pub leases: u64,
    /// Users and roles written.
    pub users: u64,
    /// See `users`.
    pub roles: u64,
    /// Bytes of the file, its hash included.
    pub size: u64,
}

/// Writes the kv image read from `image` as an etcd snapshot file at
/// `path` (a bbolt file with etcd's buckets, its SHA-256 appended), as
/// `etcdctl snapshot restore` takes it. Written to `path.part`, synced,
/// then renamed: `path` is whole or absent.
pub fn to_etcd_db(image: &mut impl Read, path: &Path) -> Result<ExportSummary, MigrateError> {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let r = write_etcd_db(image, &part).and_then(|sum| {
        std::fs::rename(&part, path)?;
        // The rename is durable once the directory is.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(sum)
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    r
}

fn write_etcd_db(image: &mut impl Read, part: &Path) -> Result<ExportSummary, MigrateError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(part)?;
    let (file, sum) = write_etcd_file(image, file, true)?;
    file.sync_all()?;
    Ok(sum)
}

/// Writes the kv image read from `image` into `file` (empty, opened for
/// reading and writing) as an etcd snapshot file, its SHA-256 appended
/// if `append_hash` (a caller that reads the file back whole may hash it
/// then instead); answers the file, not synced, and what was written.
pub fn write_etcd_file(
    image: &mut impl Read,
    file: File,
    append_hash: bool,
) -> Result<(File, ExportSummary), MigrateError> {
    let mut db = Writer::new(BufWriter::new(file), cairn_bbolt::DEFAULT_PAGE_SIZE)?;
    let mut sum = ExportSummary::default();
    let mut leases = BTreeMap::new();
    let mut auth = None;
    let mut highest = 0;
    let mut keys = db.bucket(b"key")?;
    let mut failed = None;
    let info = snapshot::read(image, |e| {
        let r = (|| -> Result<(), MigrateError> {
            match e {
                ImageEntry::Record(rev, rec) => {
                    let mut k = etcd_revision(rev.main, rev.sub).to_vec();
                    let kv = match rec {
                        Record::Put(kv) => mvccpb::KeyValue {
                            key: kv.key,
                            create_revision: kv.create_revision,
                            mod_revision: kv.mod_revision,
                            version: kv.version,
                            value: kv.value,
                            lease: kv.lease,
                        },
                        Record::Tombstone(key) => {
                            k.push(b't');
                            mvccpb::KeyValue {
                                key,
                                ..Default::default()
                            }
                        }
                    };
                    keys.put(&k, &kv.encode_to_vec())?;
                    highest = highest.max(rev.main);
                    sum.records += 1;
                }
                ImageEntry::Lease(l) => {
                    let pb = LeasePb {
                        id: l.id,
                        ttl: l.ttl,
                        remaining_ttl: l.remaining_ttl,
                    };
                    leases.insert((l.id as u64).to_be_bytes(), pb.encode_to_vec());
                }
                ImageEntry::Owned(Owned::Auth, raw) => {
                    auth = Some(AuthState::from_bytes(&raw).map_err(layout)?);
                }
                ImageEntry::Owned(Owned::Alarms, _) => {}
            }
            Ok(())
        })();
        r.map_err(|e| {
            failed = Some(e);
            cairn_kv::Error::Corrupt {
                location: "etcd file".into(),
                reason: "stopped".into(),
            }
        })
    });
    let info = info.map_err(|e| failed.take().unwrap_or(MigrateError::Image(e)))?;
    keys.finish()?;
    sum.revision = info.revision;
    sum.compacted = info.compacted;
    sum.etcd_revision = highest.max(info.compacted).max(1);

    let mut lease = db.bucket(b"lease")?;
    for (k, v) in &leases {
        lease.put(k, v)?;
    }
    lease.finish()?;
    sum.leases = leases.len() as u64;

    let mut meta = db.bucket(b"meta")?;
    meta.put(b"consistent_index", &0u64.to_be_bytes())?;
    if info.compacted > 0 {
        let c = etcd_revision(info.compacted, 0);
        meta.put(b"finishedCompactRev", &c)?;
        meta.put(b"scheduledCompactRev", &c)?;
    }
    meta.finish()?;

    let auth = auth.unwrap_or_default();
    let mut a = db.bucket(b"auth")?;
    a.put(b"authEnabled", &[u8::from(auth.enabled)])?;
    a.put(b"authRevision", &auth.revision.to_be_bytes())?;
    a.finish()?;
    let mut users = db.bucket(b"authUsers")?;
    for (name, u) in &auth.users {
        let pb = authpb::User {
            name: Bytes::copy_from_slice(name.as_bytes()),
            password: Bytes::from(u.password_hash.clone().unwrap_or_default()),
            roles: u.roles.iter().cloned().collect(),
            options: Some(authpb::UserAddOptions {
                no_password: u.password_hash.is_none(),
            }),
        };
        users.put(name.as_bytes(), &pb.encode_to_vec())?;
    }
    users.finish()?;
    let mut roles = db.bucket(b"authRoles")?;
    for (name, r) in &auth.roles {
        let pb = authpb::Role {
            name: Bytes::copy_from_slice(name.as_bytes()),
            key_permission: r
                .permissions
                .iter()
                .map(|p| authpb::Permission {
                    perm_type: p.access.to_pb() as i32,
                    key: Bytes::copy_from_slice(&p.key),
                    range_end: Bytes::copy_from_slice(&p.range_end),
                })
                .collect(),
        };
        roles.put(name.as_bytes(), &pb.encode_to_vec())?;
    }
    roles.finish()?;
    sum.users = auth.users.len() as u64;
    sum.roles = auth.roles.len() as u64;
    // The cluster's own buckets start empty: `etcdctl snapshot restore`
    // writes the new cluster's members.
    for name in ["alarm", "cluster", "members", "members_removed"] {
        db.bucket(name.as_bytes())?.finish()?;
    }

    // The SHA-256 of the bbolt file, appended as etcd does.
    let mut file = db
        .finish()?
        .into_inner()
        .map_err(|e| MigrateError::Io(e.into_error()))?;
    if append_hash {
        file.rewind()?;
        let mut sha = Sha256::new();
        io::copy(&mut file, &mut sha)?;
        file.write_all(sha.finalize().as_slice())?;
    }
    sum.size = file.metadata()?.len();
    Ok((file, sum))
}

#[cfg(test)]
mod tests {
    //! The importer fed etcd files damaged at random and bbolt files of
    //! random contents (proptest, a bounded number of cases for the test
    //! command): every one is imported whole or refused, never a panic,
    //! and what is imported is an image a store takes.

    use super::*;
    use cairn_kv::Store;
    use proptest::prelude::*;

    fn fixture() -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../bbolt/tests/data/etcd-3.4.23-snapshot.db");
        std::fs::read(path).expect("the etcd fixture")
    }

    /// Imports `bytes` as an etcd file; an image made is imported into a
    /// store, which must take it.
    fn import(bytes: &[u8], skip_hash_check: bool) -> Result<EtcdSummary, MigrateError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("etcd.db");
        std::fs::write(&path, bytes).expect("write");
        let mut image = Vec::new();
        let (sum, _) = from_etcd_db(&path, skip_hash_check, &mut image, b"")?;
        let store = Store::open_temporary().expect("store");
        store
            .import(&mut image.as_slice())
            .expect("an image the importer made is one a store takes");
        assert_eq!(store.current_revision(), sum.revision);
        Ok(sum)
    }

    #[test]
    fn the_etcd_fixture_imports_and_exports_back_to_the_same_buckets() {
        let sum = import(&fixture(), false).expect("import");
        assert_eq!(
            (sum.revision, sum.compacted, sum.records, sum.leases),
            (8, 3, 7, 1)
        );
        assert!(sum.hash_checked);
        // Back out: the key and lease buckets are etcd's, byte for byte.
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("etcd.db");
        std::fs::write(&src, fixture()).expect("write");
        let mut image = Vec::new();
        from_etcd_db(&src, false, &mut image, b"").expect("import");
        let out = dir.path().join("back.db");
        let exported = to_etcd_db(&mut image.as_slice(), &out).expect("export");
        assert_eq!(exported.etcd_revision, 8);
        assert_eq!(std::fs::metadata(&out).expect("out").len() % 512, 32);
        let bucket = |path: &Path, name: &str| {
            let db = Db::open(path).expect("open");
            let mut all = Vec::new();
            each_value(&db, name, |k, v| {
                all.push((k.to_vec(), v.to_vec()));
                Ok(())
            })
            .expect("walk");
            all
        };
        for name in ["key", "lease"] {
            assert_eq!(bucket(&src, name), bucket(&out, name), "{name}");
        }
        // The hash etcd checks is there and right.
        check_hash(&out, false).expect("hash");
    }

    #[test]
    fn a_changed_byte_is_caught_by_the_hash() {
        let mut bytes = fixture();
        bytes[9000] ^= 1;
        assert!(matches!(
            import(&bytes, false),
            Err(MigrateError::HashMismatch)
        ));
    }

    fn bucket_entries() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
        // Records shaped like etcd's most of the time (a key of few
        // names, revisions that may disagree with each other), anything
        // otherwise.
        let record = (
            1u64..50,
            0u64..3,
            any::<bool>(),
            0u8..4,
            0i64..60,
            0i64..4,
            prop::option::of(0i64..60),
            -2i64..3,
        )
            .prop_map(|(main, sub, t, k, create, version, other_mod, lease)| {
                let mut key = etcd_revision(main as i64, sub as i64).to_vec();
                if t {
                    key.push(b't');
                }
                let kv = mvccpb::KeyValue {
                    key: vec![b'a' + k].into(),
                    create_revision: create,
                    mod_revision: other_mod.unwrap_or(main as i64),
                    version,
                    value: vec![1, 2, 3].into(),
                    lease,
                };
                (key, kv.encode_to_vec())
            });
        let junk = (
            prop::collection::vec(any::<u8>(), 1..20),
            prop::collection::vec(any::<u8>(), 0..30),
        );
        prop::collection::vec(prop_oneof![4 => record, 1 => junk], 0..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn damaged_etcd_files_are_imported_or_refused(
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
            cut in prop::option::of(any::<prop::sample::Index>()),
        ) {
            let mut bytes = fixture();
            for (at, x) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= x;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            let _ = import(&bytes, true);
        }

        #[test]
        fn bbolt_files_of_any_contents_are_imported_or_refused(
            keys in bucket_entries(),
            leases in prop::collection::vec((any::<i64>(), prop::collection::vec(any::<u8>(), 0..12)), 0..5),
            meta in prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("etcd.db");
            {
                let file = File::create(&path).expect("create");
                let mut w = Writer::new(BufWriter::new(file), 4096).expect("writer");
                let mut b = w.bucket(b"key").expect("bucket");
                let keys: BTreeMap<_, _> = keys.into_iter().collect();
                for (k, v) in &keys {
                    b.put(k, v).expect("put");
                }
                b.finish().expect("finish");
                let mut b = w.bucket(b"lease").expect("bucket");
                let leases: BTreeMap<_, _> =
                    leases.into_iter().map(|(id, v)| ((id as u64).to_be_bytes(), v)).collect();
                for (k, v) in &leases {
                    b.put(k, v).expect("put");
                }
                b.finish().expect("finish");
                let mut b = w.bucket(b"meta").expect("bucket");
                if let Some(m) = &meta {
                    b.put(b"finishedCompactRev", m).expect("put");
                }
                b.finish().expect("finish");
                w.finish().expect("finish");
            }
            let bytes = std::fs::read(&path).expect("read");
            let _ = import(&bytes, true);
        }
    }
}
