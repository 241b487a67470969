//! Whether a user's permissions cover what a request touches.
//!
//! A permission or a request names keys as etcd does: `key` alone (empty
//! `range_end`), `[key, range_end)`, or every key from `key` on
//! (`range_end` "\0"). A request is allowed when the union of the user's
//! permissions of the right kind covers every key it touches — several
//! grants may cover one range together. Root may do anything; with auth
//! off, anyone may.
//!
//! What each request touches ([`needs_of_*`](needs_of_txn)) is the whole
//! request, every branch and every nested txn, whichever runs: a put
//! with `prev_kv` also reads its key, a delete with `prev_kv` reads its
//! range, a compare reads its key or range (the fixes to etcd's
//! GHSA-rfx7-8w68-q57q and GHSA-x35m-3gp4-4fh5).

use std::cmp::Ordering;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::etcdserverpb::request_op::Request;

use super::state::{Access, AuthState, Permission};
use crate::error::Error;

/// What a request needs: `access` to keys `[key, range_end)` as etcd
/// names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    /// Read or Write.
    pub access: Access,
    /// The first key.
    pub key: Vec<u8>,
    /// The range end, as etcd gives it.
    pub range_end: Vec<u8>,
}

impl Need {
    fn read(key: &[u8], range_end: &[u8]) -> Need {
        Need {
            access: Access::Read,
            key: key.to_vec(),
            range_end: range_end.to_vec(),
        }
    }

    /// Read access to `[key, range_end)` as etcd names it.
    pub fn read_range(key: &[u8], range_end: &[u8]) -> Need {
        Need::read(key, range_end)
    }

    /// Read access to `key` alone.
    pub fn read_key(key: &[u8]) -> Need {
        Need::read(key, &[])
    }

    /// Write access to `key` alone.
    pub fn write_key(key: &[u8]) -> Need {
        Need::write(key, &[])
    }

    fn write(key: &[u8], range_end: &[u8]) -> Need {
        Need {
            access: Access::Write,
            key: key.to_vec(),
            range_end: range_end.to_vec(),
        }
    }
}

/// What a Range touches.
pub fn needs_of_range(r: &pb::RangeRequest) -> Vec<Need> {
    vec![Need::read(&r.key, &r.range_end)]
}

/// What a Put touches (a lease it attaches is checked where the lease's
/// keys are known, at apply).
pub fn needs_of_put(r: &pb::PutRequest) -> Vec<Need> {
    let mut out = vec![Need::write(&r.key, &[])];
    if r.prev_kv {
        out.push(Need::read(&r.key, &[]));
    }
    out
}

/// What a DeleteRange touches.
pub fn needs_of_delete(r: &pb::DeleteRangeRequest) -> Vec<Need> {
    let mut out = vec![Need::write(&r.key, &r.range_end)];
    if r.prev_kv {
        out.push(Need::read(&r.key, &r.range_end));
    }
    out
}

/// What a Txn touches: its compares and both branches, nested txns too.
pub fn needs_of_txn(r: &pb::TxnRequest) -> Vec<Need> {
    let mut out = Vec::new();
    txn_needs(r, &mut out);
    out
}

fn txn_needs(r: &pb::TxnRequest, out: &mut Vec<Need>) {
    for c in &r.compare {
        out.push(Need::read(&c.key, &c.range_end));
    }
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(Request::RequestRange(q)) => out.extend(needs_of_range(q)),
            Some(Request::RequestPut(q)) => out.extend(needs_of_put(q)),
            Some(Request::RequestDeleteRange(q)) => out.extend(needs_of_delete(q)),
            Some(Request::RequestTxn(t)) => txn_needs(t, out),
            None => {}
        }
    }
}

/// Allows `needs` for `user` under `state`, or answers etcd's
/// `permission denied`.
pub fn check(state: &AuthState, user: Option<&str>, needs: &[Need]) -> Result<(), Error> {
    if !state.enabled {
        return Ok(());
    }
    let Some(user) = user else {
        return Err(Error::UserEmpty);
    };
    if !state.users.contains_key(user) {
        return Err(Error::PermissionDenied);
    }
    if state.is_root(user) {
        return Ok(());
    }
    for n in needs {
        if !covers(state.permissions_of(user), n.access, &n.key, &n.range_end) {
            return Err(Error::PermissionDenied);
        }
    }
    Ok(())
}

/// The end of a span of keys: a key (excluded), or past every key.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    Before(Vec<u8>),
    Unbounded,
}

impl PartialOrd for End {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for End {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (End::Unbounded, End::Unbounded) => Ordering::Equal,
            (End::Unbounded, _) => Ordering::Greater,
            (_, End::Unbounded) => Ordering::Less,
            (End::Before(a), End::Before(b)) => a.cmp(b),
        }
    }
}

/// `[start, end)` for etcd's `key`/`range_end`. A range that ends at or
/// before its start selects no key; it is taken as the key alone, so it
/// needs at least that.
fn span(key: &[u8], range_end: &[u8]) -> (Vec<u8>, End) {
    let point = || {
        let mut next = key.to_vec();
        next.push(0);
        End::Before(next)
    };
    let end = match range_end {
        [] => point(),
        [0] => End::Unbounded,
        e if e <= key => point(),
        e => End::Before(e.to_vec()),
    };
    (key.to_vec(), end)
}

/// Whether the permissions allowing `access` cover `[key, range_end)`
/// together.
pub fn covers<'a>(
    perms: impl Iterator<Item = &'a Permission>,
    access: Access,
    key: &[u8],
    range_end: &[u8],
) -> bool {
    let mut spans: Vec<(Vec<u8>, End)> = perms
        .filter(|p| p.access.allows(access))
        .map(|p| span(&p.key, &p.range_end))
        .collect();
    spans.sort_by(|a, b| a.0.cmp(&b.0));
    let (start, want_end) = span(key, range_end);
    // Everything below `reached` (from `start`) is covered so far.
    let mut reached = End::Before(start);
    for (s, e) in spans {
        let gap = match &reached {
            End::Before(r) => s.as_slice() > r.as_slice(),
            End::Unbounded => false,
        };
        if gap {
            break;
        }
        if e > reached {
            reached = e;
        }
        if reached >= want_end {
            return true;
        }
    }
    reached >= want_end
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn perm(access: Access, key: &[u8], range_end: &[u8]) -> Permission {
        Permission {
            access,
            key: key.to_vec(),
            range_end: range_end.to_vec(),
        }
    }

    #[test]
    fn ranges_prefixes_points_and_the_open_end() {
        let p = [
            perm(Access::Read, b"a", b"c"),
            perm(Access::Read, b"c", b"d"),
            perm(Access::Write, b"k", b""),
            perm(Access::ReadWrite, b"z", b"\0"),
        ];
        let c = |a, k: &[u8], e: &[u8]| covers(p.iter(), a, k, e);
        assert!(c(Access::Read, b"a", b"d"), "two grants together");
        assert!(c(Access::Read, b"b", b""));
        assert!(!c(Access::Read, b"a", b"e"));
        assert!(!c(Access::Write, b"a", b"b"));
        assert!(c(Access::Write, b"k", b""));
        assert!(!c(Access::Read, b"k", b""));
        // A point grant is not a prefix grant.
        assert!(!c(Access::Write, b"k", b"l"));
        assert!(!c(Access::Write, b"k\0", b""));
        // "\0" as range end: every key from there on.
        assert!(c(Access::Read, b"zz", b"\0"));
        assert!(c(Access::Write, b"z", b"\0"));
        // GHSA-xg4h-6gfc-h4m8: a watch from an exactly granted key with
        // range end "\0" asks for every later key.
        assert!(!c(Access::Read, b"k", b"\0"));
        assert!(!c(Access::Read, b"a", b"\0"));
    }

    /// The reference model: coverage changes only at the bounds of the
    /// grants, so a span is covered when the first key of the span and
    /// every grant bound inside it are each inside some grant.
    fn model(perms: &[Permission], access: Access, key: &[u8], range_end: &[u8]) -> bool {
        let grants: Vec<(Vec<u8>, End)> = perms
            .iter()
            .filter(|p| p.access.allows(access))
            .map(|p| span(&p.key, &p.range_end))
            .collect();
        let (start, end) = span(key, range_end);
        let inside = |k: &Vec<u8>| End::Before(k.clone()) < end && k >= &start;
        let mut points = vec![start.clone()];
        for (s, e) in &grants {
            points.push(s.clone());
            if let End::Before(e) = e {
                points.push(e.clone());
            }
        }
        points.iter().filter(|p| inside(p)).all(|p| {
            grants
                .iter()
                .any(|(s, e)| s <= p && End::Before(p.clone()) < *e)
        })
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![Just(0u8), Just(b'a'), Just(b'b'), Just(0xff)],
            0..3,
        )
    }

    fn access() -> impl Strategy<Value = Access> {
        prop_oneof![
            Just(Access::Read),
            Just(Access::Write),
            Just(Access::ReadWrite)
        ]
    }

    fn range_end() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![Just(vec![]), Just(vec![0]), key()]
    }

    /// A random request: a range, put (maybe with prev_kv), delete, or a
    /// txn of such ops and compares, nested up to `depth`.
    fn op(depth: u32) -> BoxedStrategy<Request> {
        let leaf = prop_oneof![
            (key(), range_end()).prop_map(|(k, e)| Request::RequestRange(pb::RangeRequest {
                key: k.into(),
                range_end: e.into(),
                ..Default::default()
            })),
            (key(), any::<bool>()).prop_map(|(k, prev)| Request::RequestPut(pb::PutRequest {
                key: k.into(),
                prev_kv: prev,
                ..Default::default()
            })),
            (key(), range_end(), any::<bool>()).prop_map(|(k, e, prev)| {
                Request::RequestDeleteRange(pb::DeleteRangeRequest {
                    key: k.into(),
                    range_end: e.into(),
                    prev_kv: prev,
                })
            }),
        ];
        if depth == 0 {
            return leaf.boxed();
        }
        prop_oneof![leaf, txn(depth - 1).prop_map(Request::RequestTxn)].boxed()
    }

    fn txn(depth: u32) -> impl Strategy<Value = pb::TxnRequest> {
        let ops = || proptest::collection::vec(op(depth), 0..3);
        (
            proptest::collection::vec((key(), range_end()), 0..2),
            ops(),
            ops(),
        )
            .prop_map(|(compares, success, failure)| {
                let wrap = |v: Vec<Request>| {
                    v.into_iter()
                        .map(|r| pb::RequestOp { request: Some(r) })
                        .collect()
                };
                pb::TxnRequest {
                    compare: compares
                        .into_iter()
                        .map(|(k, e)| pb::Compare {
                            key: k.into(),
                            range_end: e.into(),
                            ..Default::default()
                        })
                        .collect(),
                    success: wrap(success),
                    failure: wrap(failure),
                }
            })
    }

    /// The model's verdict on a request: every key it could read or
    /// write, whichever branch runs, allowed by the coverage model.
    fn model_allows(perms: &[Permission], r: &Request) -> bool {
        let m = |a, k: &[u8], e: &[u8]| model(perms, a, k, e);
        match r {
            Request::RequestRange(q) => m(Access::Read, &q.key, &q.range_end),
            Request::RequestPut(q) => {
                m(Access::Write, &q.key, b"") && (!q.prev_kv || m(Access::Read, &q.key, b""))
            }
            Request::RequestDeleteRange(q) => {
                m(Access::Write, &q.key, &q.range_end)
                    && (!q.prev_kv || m(Access::Read, &q.key, &q.range_end))
            }
            Request::RequestTxn(t) => {
                t.compare
                    .iter()
                    .all(|c| m(Access::Read, &c.key, &c.range_end))
                    && t.success
                        .iter()
                        .chain(&t.failure)
                        .filter_map(|o| o.request.as_ref())
                        .all(|r| model_allows(perms, r))
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Random grants to a user and random requests, nested txns
        /// included: `check` agrees with the model (and root may do
        /// anything, and with auth off anyone).
        #[test]
        fn requests_agree_with_the_model(
            grants in proptest::collection::vec((access(), key(), range_end()), 0..5),
            req in txn(2),
        ) {
            use crate::auth::state::{Role, User};
            let perms: Vec<Permission> =
                grants.iter().map(|(a, k, e)| perm(*a, k, e)).collect();
            let mut st = AuthState { enabled: true, ..AuthState::default() };
            st.roles.insert("r".into(), Role { permissions: perms.clone() });
            let user = |roles: &[&str]| User {
                password_hash: None,
                roles: roles.iter().map(|r| r.to_string()).collect(),
                generation: 1,
            };
            st.users.insert("u".into(), user(&["r"]));
            st.users.insert("root".into(), user(&["root"]));
            let r = Request::RequestTxn(req.clone());
            let got = check(&st, Some("u"), &needs_of_txn(&req)).is_ok();
            prop_assert_eq!(got, model_allows(&perms, &r));
            prop_assert!(check(&st, Some("root"), &needs_of_txn(&req)).is_ok());
            prop_assert_eq!(check(&st, None, &needs_of_txn(&req)), Err(Error::UserEmpty));
            st.enabled = false;
            prop_assert!(check(&st, Some("u"), &needs_of_txn(&req)).is_ok());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn coverage_agrees_with_the_model(
            grants in proptest::collection::vec((access(), key(), range_end()), 0..5),
            want in prop_oneof![Just(Access::Read), Just(Access::Write)],
            key in key(),
            end in range_end(),
        ) {
            let perms: Vec<Permission> =
                grants.iter().map(|(a, k, e)| perm(*a, k, e)).collect();
            prop_assert_eq!(
                covers(perms.iter(), want, &key, &end),
                model(&perms, want, &key, &end)
            );
        }
    }
}
