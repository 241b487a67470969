//! Model test: random sequences of put / delete_range / txn / compact /
//! range-at-revision / lease grant / lease revoke / reopen run against the store and against a simple
//! in-memory model of etcd's semantics (a full copy of the key space at
//! every revision); every response, event and error must agree.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use cairn_kv::*;
use proptest::prelude::*;

/// The reference: `history[r]` is the key space at revision `r`.
struct Model {
    history: Vec<BTreeMap<Bytes, KeyValue>>,
    compacted: i64,
    leases: BTreeSet<i64>,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Range(RangeResponse),
    Put(PutResponse, Vec<Event>, i64),
    Delete(DeleteRangeResponse, Vec<Event>, i64),
    Txn(TxnResponse, Vec<Event>, i64),
    Compact(i64),
    Revoke(i64, Vec<Event>, i64),
    Granted,
    Err(String),
    Batch(Vec<Outcome>),
}

fn err_kind(e: &Error) -> String {
    match e {
        Error::Compacted { .. } => "compacted".into(),
        Error::FutureRevision { .. } => "future".into(),
        other => format!("{other}"),
    }
}

fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}

/// The working state of one model write.
struct Work {
    pre: BTreeMap<Bytes, KeyValue>,
    cur: BTreeMap<Bytes, KeyValue>,
    begin: i64,
    changed: bool,
    events: Vec<Event>,
}

impl Model {
    fn new() -> Self {
        Self {
            history: vec![BTreeMap::new(), BTreeMap::new()],
            compacted: -1,
            leases: BTreeSet::new(),
        }
    }

    fn current(&self) -> i64 {
        self.history.len() as i64 - 1
    }

    fn range_in(
        &self,
        snap: &BTreeMap<Bytes, KeyValue>,
        current: i64,
        req: &RangeRequest,
    ) -> Result<RangeResponse, String> {
        if req.revision > current {
            return Err("future".into());
        }
        let at = if req.revision <= 0 {
            current
        } else {
            req.revision
        };
        if at < self.compacted {
            return Err("compacted".into());
        }
        let view = if at == current {
            snap
        } else {
            &self.history[at as usize]
        };
        let all: Vec<KeyValue> = view
            .values()
            .filter(|kv| in_range(&kv.key, &req.key, &req.range_end))
            .cloned()
            .collect();
        let count = all.len() as i64;
        if req.count_only {
            return Ok(RangeResponse {
                header_revision: current,
                kvs: vec![],
                more: false,
                count,
            });
        }
        let filtered = req.sort_order != SortOrder::None
            || req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let mut kvs: Vec<KeyValue> = if !filtered && req.limit > 0 {
            all.into_iter().take(req.limit as usize + 1).collect()
        } else {
            all
        };
        kvs.retain(|kv| {
            (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        });
        let order = if req.sort_order == SortOrder::None && req.sort_target != SortTarget::Key {
            SortOrder::Ascend
        } else {
            req.sort_order
        };
        if order != SortOrder::None {
            let key_of = |kv: &KeyValue| -> (i64, Bytes) {
                match req.sort_target {
                    SortTarget::Key => (0, kv.key.clone()),
                    SortTarget::Version => (kv.version, Bytes::new()),
                    SortTarget::Create => (kv.create_revision, Bytes::new()),
                    SortTarget::Mod => (kv.mod_revision, Bytes::new()),
                    SortTarget::Value => (0, kv.value.clone()),
                }
            };
            kvs.sort_by(|a, b| {
                let o = key_of(a).cmp(&key_of(b));
                if order == SortOrder::Descend {
                    o.reverse()
                } else {
                    o
                }
            });
        }
        let more = req.limit > 0 && kvs.len() as i64 > req.limit;
        if more {
            kvs.truncate(req.limit as usize);
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value = Bytes::new());
        }
        Ok(RangeResponse {
            header_revision: current,
            kvs,
            more,
            count,
        })
    }

    fn work(&self) -> Work {
        let last = self.history.last().cloned().unwrap_or_default();
        Work {
            pre: last.clone(),
            cur: last,
            begin: self.current(),
            changed: false,
            events: vec![],
        }
    }

    fn commit(&mut self, w: Work) -> (Vec<Event>, i64) {
        if w.changed {
            self.history.push(w.cur);
        }
        (w.events, self.current())
    }

    fn put(&self, w: &mut Work, req: &PutRequest) -> Result<PutResponse, String> {
        let rev = w.begin + 1;
        let prev = w.cur.get(&req.key).cloned();
        if req.lease != 0 && !self.leases.contains(&req.lease) {
            return Err("requested lease not found".into());
        }
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err("key not found".into());
        }
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(0, |p| p.version) + 1,
            value: if req.ignore_value {
                prev.as_ref().map(|p| p.value.clone()).unwrap_or_default()
            } else {
                req.value.clone()
            },
            lease: if req.ignore_lease {
                prev.as_ref().map_or(0, |p| p.lease)
            } else {
                req.lease
            },
        };
        w.cur.insert(req.key.clone(), kv.clone());
        w.changed = true;
        w.events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: prev.clone().map(Box::new),
            prev_revision: None,
        });
        Ok(PutResponse {
            header_revision: rev,
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn delete(&self, w: &mut Work, req: &DeleteRangeRequest) -> DeleteRangeResponse {
        let doomed: Vec<KeyValue> = w
            .cur
            .values()
            .filter(|kv| in_range(&kv.key, &req.key, &req.range_end))
            .cloned()
            .collect();
        for kv in &doomed {
            w.cur.remove(&kv.key);
            w.changed = true;
            w.events.push(Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: kv.key.clone(),
                    mod_revision: w.begin + 1,
                    ..Default::default()
                },
                prev_kv: Some(Box::new(kv.clone())),
                prev_revision: None,
            });
        }
        DeleteRangeResponse {
            header_revision: w.begin + i64::from(w.changed),
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv { doomed } else { vec![] },
        }
    }

    fn compare(pre: &BTreeMap<Bytes, KeyValue>, c: &Compare) -> bool {
        let kvs: Vec<&KeyValue> = pre
            .values()
            .filter(|kv| in_range(&kv.key, &c.key, &c.range_end))
            .collect();
        let test = |kv: &KeyValue| {
            let o = match &c.target {
                CompareTarget::Value(v) => kv.value.cmp(v),
                CompareTarget::Version(v) => kv.version.cmp(v),
                CompareTarget::CreateRevision(v) => kv.create_revision.cmp(v),
                CompareTarget::ModRevision(v) => kv.mod_revision.cmp(v),
                CompareTarget::Lease(v) => kv.lease.cmp(v),
            };
            match c.result {
                CompareResult::Equal => o.is_eq(),
                CompareResult::NotEqual => o.is_ne(),
                CompareResult::Greater => o.is_gt(),
                CompareResult::Less => o.is_lt(),
            }
        };
        if kvs.is_empty() {
            return !matches!(c.target, CompareTarget::Value(_)) && test(&KeyValue::default());
        }
        kvs.into_iter().all(test)
    }

    /// Branch choices of `req` and its nested txns, against the pre-state.
    fn path(pre: &BTreeMap<Bytes, KeyValue>, req: &TxnRequest, out: &mut Vec<bool>) {
        let ok = req.compare.iter().all(|c| Self::compare(pre, c));
        out.push(ok);
        for op in if ok { &req.success } else { &req.failure } {
            if let RequestOp::Txn(t) = op {
                Self::path(pre, t, out);
            }
        }
    }

    fn chosen<'a>(
        req: &'a TxnRequest,
        path: &[bool],
        pos: &mut usize,
        out: &mut Vec<&'a RequestOp>,
    ) {
        let ok = path[*pos];
        *pos += 1;
        for op in if ok { &req.success } else { &req.failure } {
            match op {
                RequestOp::Txn(t) => Self::chosen(t, path, pos, out),
                op => out.push(op),
            }
        }
    }

    fn run(
        &self,
        w: &mut Work,
        req: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
    ) -> Result<TxnResponse, String> {
        let ok = path[*pos];
        *pos += 1;
        let mut responses = vec![];
        for op in if ok { &req.success } else { &req.failure } {
            responses.push(match op {
                RequestOp::Range(r) => {
                    let cur_rev = w.begin + i64::from(w.changed);
                    let snap = w.cur.clone();
                    ResponseOp::Range(self.range_in(&snap, cur_rev, r)?)
                }
                RequestOp::Put(p) => ResponseOp::Put(self.put(w, p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete(w, d)),
                RequestOp::Txn(t) => ResponseOp::Txn(self.run(w, t, path, pos)?),
                RequestOp::Empty => return Err("key not found".into()),
            });
        }
        Ok(TxnResponse {
            header_revision: 0,
            succeeded: ok,
            responses,
        })
    }

    fn txn(&mut self, req: &TxnRequest) -> Outcome {
        if let Err(e) = validate_txn(req, usize::MAX) {
            return Outcome::Err(err_kind(&e));
        }
        let mut w = self.work();
        let mut path = vec![];
        Self::path(&w.pre, req, &mut path);
        let mut ops = vec![];
        Self::chosen(req, &path, &mut 0, &mut ops);
        if !is_read_only(req) {
            for op in &ops {
                if let RequestOp::Put(p) = op {
                    if (p.ignore_value || p.ignore_lease) && !w.pre.contains_key(&p.key) {
                        return Outcome::Err("key not found".into());
                    }
                    if p.lease != 0 && !self.leases.contains(&p.lease) {
                        return Outcome::Err("requested lease not found".into());
                    }
                }
            }
        }
        for op in &ops {
            if let RequestOp::Range(r) = op {
                if r.revision != 0 {
                    if r.revision > w.begin {
                        return Outcome::Err("future".into());
                    }
                    if r.revision < self.compacted {
                        return Outcome::Err("compacted".into());
                    }
                }
            }
        }
        match self.run(&mut w, req, &path, &mut 0) {
            Ok(mut resp) => {
                resp.header_revision = w.begin + i64::from(w.changed);
                let (events, rev) = self.commit(w);
                Outcome::Txn(resp, events, rev)
            }
            Err(e) => Outcome::Err(e),
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(i64),
    Grant(i64),
    Revoke(i64),
    Reopen,
    /// Puts, deletes and txns applied as one backend batch.
    Batch(Vec<Op>),
    /// Export an image and import it into a fresh store, which replaces it.
    Image,
}

fn key() -> impl Strategy<Value = Bytes> {
    prop_oneof![Just("a"), Just("b"), Just("c"), Just("d"), Just("ab")]
        .prop_map(|s: &'static str| Bytes::from_static(s.as_bytes()))
}

fn range_end() -> impl Strategy<Value = Bytes> {
    prop_oneof![3 => Just(""), 1 => Just("\0"), 1 => Just("b"), 1 => Just("c"), 1 => Just("e")]
        .prop_map(|s: &'static str| Bytes::from_static(s.as_bytes()))
}

fn range_req() -> impl Strategy<Value = RangeRequest> {
    (
        key(),
        range_end(),
        0i64..4,
        prop_oneof![3 => Just(0i64), 1 => -1i64..30],
        0u8..3,
        0u8..5,
        any::<bool>(),
        prop_oneof![4 => Just(false), 1 => Just(true)],
        prop::array::uniform4(prop_oneof![3 => Just(0i64), 1 => 1i64..25]),
    )
        .prop_map(
            |(key, range_end, limit, revision, so, st, keys_only, count_only, f)| RangeRequest {
                key,
                range_end,
                limit,
                revision,
                sort_order: [SortOrder::None, SortOrder::Ascend, SortOrder::Descend][so as usize],
                sort_target: [
                    SortTarget::Key,
                    SortTarget::Version,
                    SortTarget::Create,
                    SortTarget::Mod,
                    SortTarget::Value,
                ][st as usize],
                keys_only,
                count_only,
                min_mod_revision: f[0],
                max_mod_revision: f[1],
                min_create_revision: f[2],
                max_create_revision: f[3],
            },
        )
}

fn put_req() -> impl Strategy<Value = PutRequest> {
    (
        key(),
        prop_oneof![Just("x"), Just("y"), Just("")],
        0i64..3,
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(key, v, lease, prev_kv, ignore_value, ignore_lease)| PutRequest {
                key,
                value: if ignore_value {
                    Bytes::new()
                } else {
                    Bytes::from_static(v.as_bytes())
                },
                lease: if ignore_lease { 0 } else { lease },
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
}

fn delete_req() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), range_end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn compare() -> impl Strategy<Value = Compare> {
    (
        prop_oneof![4 => key(), 1 => Just(Bytes::from_static(b"zz"))],
        prop_oneof![4 => Just(""), 1 => Just("\0"), 1 => Just("c")],
        0u8..4,
        0u8..5,
        0i64..12,
        prop_oneof![Just("x"), Just("y"), Just("")],
    )
        .prop_map(|(key, end, res, tgt, n, v)| Compare {
            key,
            range_end: Bytes::from_static(end.as_bytes()),
            result: [
                CompareResult::Equal,
                CompareResult::Greater,
                CompareResult::Less,
                CompareResult::NotEqual,
            ][res as usize],
            target: match tgt {
                0 => CompareTarget::Version(n % 4),
                1 => CompareTarget::CreateRevision(n),
                2 => CompareTarget::ModRevision(n),
                3 => CompareTarget::Value(Bytes::from_static(v.as_bytes())),
                _ => CompareTarget::Lease(n % 3),
            },
        })
}

fn flat_op() -> impl Strategy<Value = RequestOp> {
    prop_oneof![
        range_req().prop_map(RequestOp::Range),
        put_req().prop_map(RequestOp::Put),
        delete_req().prop_map(RequestOp::DeleteRange),
    ]
}

fn txn_req() -> impl Strategy<Value = TxnRequest> {
    let inner = (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(flat_op(), 0..3),
        prop::collection::vec(flat_op(), 0..3),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        });
    let op = prop_oneof![5 => flat_op(), 1 => inner.prop_map(RequestOp::Txn)];
    (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(op.clone(), 0..4),
        prop::collection::vec(op, 0..4),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
}

fn batch_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => put_req().prop_map(Op::Put),
        2 => delete_req().prop_map(Op::Delete),
        4 => txn_req().prop_map(Op::Txn),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::collection::vec(batch_op(), 1..6).prop_map(Op::Batch),
        4 => range_req().prop_map(Op::Range),
        5 => put_req().prop_map(Op::Put),
        2 => delete_req().prop_map(Op::Delete),
        4 => txn_req().prop_map(Op::Txn),
        1 => (0i64..30).prop_map(Op::Compact),
        1 => (1i64..3).prop_map(Op::Grant),
        1 => (1i64..3).prop_map(Op::Revoke),
        1 => Just(Op::Reopen),
        1 => Just(Op::Image),
    ]
}

/// A write's events as the model states them: every `prev_kv` read (the
/// store leaves most for watchers to read), and `prev_revision` checked
/// against it, then dropped.
fn settle(store: &Store, mut events: Vec<Event>) -> Vec<Event> {
    store.fill_prev_kv(&mut events).unwrap();
    for e in &mut events {
        assert_eq!(
            e.prev_revision.map(|r| r.main),
            e.prev_kv.as_ref().map(|p| p.mod_revision),
            "prev_revision names the prev_kv read: {e:?}"
        );
        e.prev_revision = None;
    }
    events
}

fn store_outcome(store: &Store, op: &Op, pos: &[u8]) -> Outcome {
    match store_outcome_raw(store, op, pos) {
        Outcome::Put(r, ev, rev) => Outcome::Put(r, settle(store, ev), rev),
        Outcome::Delete(r, ev, rev) => Outcome::Delete(r, settle(store, ev), rev),
        Outcome::Txn(r, ev, rev) => Outcome::Txn(r, settle(store, ev), rev),
        Outcome::Revoke(r, ev, rev) => Outcome::Revoke(r, settle(store, ev), rev),
        Outcome::Batch(outs) => Outcome::Batch(
            outs.into_iter()
                .map(|o| match o {
                    Outcome::Put(r, ev, rev) => Outcome::Put(r, settle(store, ev), rev),
                    Outcome::Delete(r, ev, rev) => Outcome::Delete(r, settle(store, ev), rev),
                    Outcome::Txn(r, ev, rev) => Outcome::Txn(r, settle(store, ev), rev),
                    o => o,
                })
                .collect(),
        ),
        o => o,
    }
}

fn store_outcome_raw(store: &Store, op: &Op, pos: &[u8]) -> Outcome {
    let e = |e: Error| Outcome::Err(err_kind(&e));
    match op {
        Op::Range(r) => store.range(r).map_or_else(e, Outcome::Range),
        Op::Put(p) => store
            .put(p, pos)
            .map_or_else(e, |a| Outcome::Put(a.response, a.events, a.revision)),
        Op::Delete(d) => store
            .delete_range(d, pos)
            .map_or_else(e, |a| Outcome::Delete(a.response, a.events, a.revision)),
        Op::Txn(t) => store
            .txn(t, pos)
            .map_or_else(e, |a| Outcome::Txn(a.response, a.events, a.revision)),
        Op::Compact(r) => store.compact(*r, pos).map_or_else(e, Outcome::Compact),
        Op::Grant(id) => store
            .lease_grant(*id, 10, pos)
            .map_or_else(e, |()| Outcome::Granted),
        Op::Revoke(id) => store
            .lease_revoke(*id, pos)
            .map_or_else(e, |a| Outcome::Revoke(a.response, a.events, a.revision)),
        Op::Batch(ops) => {
            let writes: Vec<Write<'_>> = ops
                .iter()
                .map(|op| match op {
                    Op::Put(p) => Write::Put(p),
                    Op::Delete(d) => Write::DeleteRange(d),
                    Op::Txn(t) => Write::Txn(t),
                    _ => unreachable!("batches hold writes only"),
                })
                .collect();
            match store.write_batch(&writes, pos) {
                Ok(results) => Outcome::Batch(
                    results
                        .into_iter()
                        .map(|r| match r {
                            Ok(a) => match a.response {
                                Written::Put(p) => Outcome::Put(p, a.events, a.revision),
                                Written::DeleteRange(d) => Outcome::Delete(d, a.events, a.revision),
                                Written::Txn(t) => Outcome::Txn(t, a.events, a.revision),
                            },
                            Err(err) => e(err),
                        })
                        .collect(),
                ),
                Err(err) => e(err),
            }
        }
        Op::Reopen | Op::Image => unreachable!(),
    }
}

/// The store's leases and their keys, as the model sees them.
fn leases_of(store: &Store) -> Vec<(i64, Vec<Bytes>)> {
    store
        .leases()
        .iter()
        .map(|l| (l.id, store.lease_keys(l.id)))
        .collect()
}

fn model_leases(m: &Model) -> Vec<(i64, Vec<Bytes>)> {
    let cur = &m.history[m.current() as usize];
    m.leases
        .iter()
        .map(|id| {
            let keys = cur
                .values()
                .filter(|kv| kv.lease == *id)
                .map(|kv| kv.key.clone());
            (*id, keys.collect())
        })
        .collect()
}

fn model_outcome(m: &mut Model, op: &Op) -> Outcome {
    match op {
        Op::Range(r) => {
            if let Err(e) = validate_range(r) {
                return Outcome::Err(err_kind(&e));
            }
            let cur = m.current();
            let snap = m.history[cur as usize].clone();
            m.range_in(&snap, cur, r)
                .map_or_else(Outcome::Err, Outcome::Range)
        }
        Op::Put(p) => {
            if let Err(e) = validate_put(p) {
                return Outcome::Err(err_kind(&e));
            }
            let mut w = m.work();
            match m.put(&mut w, p) {
                Ok(r) => {
                    let (ev, rev) = m.commit(w);
                    Outcome::Put(r, ev, rev)
                }
                Err(e) => Outcome::Err(e),
            }
        }
        Op::Delete(d) => {
            let mut w = m.work();
            let r = m.delete(&mut w, d);
            let (ev, rev) = m.commit(w);
            Outcome::Delete(r, ev, rev)
        }
        Op::Txn(t) => m.txn(t),
        Op::Compact(r) => {
            if *r <= m.compacted {
                Outcome::Err("compacted".into())
            } else if *r > m.current() {
                Outcome::Err("future".into())
            } else {
                m.compacted = *r;
                Outcome::Compact(m.current())
            }
        }
        Op::Grant(id) => {
            if m.leases.insert(*id) {
                Outcome::Granted
            } else {
                Outcome::Err("lease already exists".into())
            }
        }
        Op::Revoke(id) => {
            if !m.leases.remove(id) {
                return Outcome::Err("requested lease not found".into());
            }
            let mut w = m.work();
            let mut deleted = 0;
            let doomed: Vec<Bytes> = w
                .cur
                .values()
                .filter(|kv| kv.lease == *id)
                .map(|kv| kv.key.clone())
                .collect();
            for key in doomed {
                let req = DeleteRangeRequest {
                    key,
                    ..Default::default()
                };
                deleted += m.delete(&mut w, &req).deleted;
            }
            let (ev, rev) = m.commit(w);
            Outcome::Revoke(deleted, ev, rev)
        }
        Op::Batch(ops) => Outcome::Batch(ops.iter().map(|op| model_outcome(m, op)).collect()),
        Op::Reopen | Op::Image => unreachable!(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Every operation sequence runs over each backend this build has.
    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        for kind in backends() {
            check_model(&ops, &Options::default(), kind)?;
        }
    }

    /// Revoked keys reach the index only when a read or write touches
    /// them: every other operation runs with revokes pending.
    #[test]
    fn store_matches_model_with_revokes_pending(ops in prop::collection::vec(op(), 1..60)) {
        let opts = Options { revoke_step: 0, ..Options::default() };
        for kind in backends() {
            check_model(&ops, &opts, kind)?;
        }
    }
}

/// The backends this build carries (both, with the default features).
fn backends() -> impl Iterator<Item = BackendKind> {
    BackendKind::ALL.into_iter().filter(|k| k.available())
}

#[test]
fn both_backends_are_built_for_the_tests() {
    assert!(
        BackendKind::Sled.available(),
        "the kv tests must run over sled too (build with the `sled` feature)"
    );
}

fn open(path: &std::path::Path, opts: &Options, kind: BackendKind) -> Store {
    Store::open_with(Engine::open(path, kind).unwrap(), opts.clone()).unwrap()
}

fn check_model(ops: &[Op], opts: &Options, kind: BackendKind) -> Result<(), TestCaseError> {
    {
        let dir = tempfile::tempdir().unwrap();
        let open = |path: &std::path::Path, opts: &Options| open(path, opts, kind);
        let mut store = open(dir.path(), opts);
        let mut model = Model::new();
        let mut images = Vec::new();
        let mut path = dir.path().to_path_buf();
        for (i, op) in ops.iter().enumerate() {
            if let Op::Reopen = op {
                store.flush().unwrap();
                drop(store);
                store = open(&path, opts);
                prop_assert_eq!(store.current_revision(), model.current());
                prop_assert_eq!(store.compacted_revision(), model.compacted);
                prop_assert_eq!(leases_of(&store), model_leases(&model));
                continue;
            }
            if let Op::Image = op {
                let mut img = Vec::new();
                store.export(&mut img).unwrap();
                let d = tempfile::tempdir().unwrap();
                let fresh = open(d.path(), opts);
                fresh.import(&mut img.as_slice()).unwrap();
                path = d.path().to_path_buf();
                images.push(d);
                prop_assert_eq!(fresh.current_revision(), model.current());
                prop_assert_eq!(leases_of(&fresh), model_leases(&model));
                store = fresh;
                continue;
            }
            let pos = format!("pos-{i}");
            let got = store_outcome(&store, op, pos.as_bytes());
            let want = model_outcome(&mut model, op);
            prop_assert_eq!(&got, &want, "op #{} {:?}", i, op);
            prop_assert_eq!(store.current_revision(), model.current());
        }
        prop_assert_eq!(leases_of(&store), model_leases(&model));
        // Every revision still readable matches the model, key for key.
        store.wait_for_compaction().unwrap();
        for rev in model.compacted.max(1)..=model.current() {
            let req = RangeRequest {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
                revision: rev,
                ..Default::default()
            };
            let got = store.range(&req).unwrap().kvs;
            let want: Vec<KeyValue> = model.history[rev as usize].values().cloned().collect();
            prop_assert_eq!(got, want, "full read at {}", rev);
        }
    }
    Ok(())
}
