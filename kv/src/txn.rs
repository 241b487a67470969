//! Writes: request validation with etcd's rules, and the write transaction
//! that executes puts, deletes and txns against the key index.
//!
//! A `WriteTxn` mutates the key index as it goes, so later operations see
//! earlier ones, and keeps an undo log: if an operation fails midway or the
//! backend refuses the batch, the index is rolled back and nothing of the
//! transaction is visible. All changes of one transaction share one main
//! revision and are written in one backend batch.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use crate::backend::{Backend, WriteBatch};
use crate::error::{Error, Result};
use crate::key_index::{KeyAt, KeyIndex};
use crate::lease;
use crate::range;
use crate::record::{self, Meta, Record};
use crate::request::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventKind, KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseOp, TxnRequest, TxnResponse,
};
use crate::revision::Revision;
use crate::state::State;

/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Checks a range request as etcd's API layer does.
pub fn validate_range(req: &RangeRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// Checks a put request as etcd's API layer does.
pub fn validate_put(req: &PutRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

/// Checks a delete request as etcd's API layer does.
pub fn validate_delete(req: &DeleteRangeRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// Checks a txn as etcd's API layer does, in etcd's order: op counts and
/// keys (recursively, nested txns sharing the op budget), then duplicate
/// writes in each branch.
pub fn validate_txn(req: &TxnRequest, max_ops: usize) -> Result<()> {
    check_txn_shape(req, i64::try_from(max_ops).unwrap_or(i64::MAX), max_ops)?;
    check_duplicates(&req.success)?;
    check_duplicates(&req.failure)?;
    Ok(())
}

fn check_txn_shape(req: &TxnRequest, budget: i64, configured: usize) -> Result<()> {
    let opc = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len()) as i64;
    if opc > budget {
        return Err(Error::TooManyOps { max: configured });
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp::Range(r) => validate_range(r)?,
            RequestOp::Put(p) => validate_put(p)?,
            RequestOp::DeleteRange(d) => validate_delete(d)?,
            RequestOp::Txn(t) => check_txn_shape(t, budget - opc, configured)?,
            RequestOp::Empty => return Err(Error::KeyNotFound),
        }
    }
    Ok(())
}

/// A deleted interval `[begin, end)` as etcd compares it: byte-wise, with
/// `range_end` taken literally (so `"\0"` makes an empty interval, exactly as
/// etcd's duplicate check treats it).
struct DelInterval {
    begin: Bytes,
    end: Option<Bytes>,
}

impl DelInterval {
    fn contains(&self, k: &[u8]) -> bool {
        match &self.end {
            None => self.begin.as_ref() == k,
            Some(end) => self.begin.as_ref() <= k && k < end.as_ref(),
        }
    }
}

fn check_duplicates(ops: &[RequestOp]) -> Result<()> {
    collect_writes(ops).map(|_| ())
}

/// Puts and deletes of one branch, with nested txns folded in; errors on a
/// key written twice (the rules of etcd's `checkIntervals`).
fn collect_writes(ops: &[RequestOp]) -> Result<(HashSet<Bytes>, Vec<DelInterval>)> {
    let mut dels: Vec<DelInterval> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(DelInterval {
                begin: d.key.clone(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.clone()),
            }),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[DelInterval], k: &[u8]| dels.iter().any(|d| d.contains(k));
    let mut puts: HashSet<Bytes> = HashSet::new();
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = collect_writes(&t.success)?;
        let (puts_else, dels_else) = collect_writes(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            // The same key in both branches of one nested txn is fine: only
            // one branch runs.
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

/// True when no branch of `req` (nested txns count as writes) can write.
pub fn is_read_only(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| matches!(op, RequestOp::Range(_)))
}

/// How to undo one index change.
enum Undo {
    /// A put was added to an existing key.
    Put(Bytes),
    /// A key new to the index was created by a put.
    Created(Bytes),
    /// A tombstone was added.
    Tombstone(Bytes),
}

/// One write transaction over the locked store state.
pub(crate) struct WriteTxn<'a, B: Backend> {
    backend: &'a B,
    state: &'a mut State,
    /// Store revision before the transaction.
    begin: i64,
    /// Records of this transaction; a record's `sub` is its position.
    changes: Vec<Record>,
    events: Vec<Event>,
    undo: Vec<Undo>,
    /// Put records of earlier transactions of the same batch, staged but
    /// not yet in the backend (see [`WriteTxn::stage`]).
    staged: Option<&'a HashMap<Revision, KeyValue>>,
}

/// What [`WriteTxn::stage`] moved into a batch.
pub(crate) struct Staged {
    pub(crate) revision: i64,
    pub(crate) events: Vec<Event>,
    /// The put records, for later transactions of the batch to read.
    pub(crate) puts: Vec<(Revision, KeyValue)>,
}

impl<'a, B: Backend> WriteTxn<'a, B> {
    pub(crate) fn new(backend: &'a B, state: &'a mut State) -> Self {
        let begin = state.current;
        Self {
            backend,
            state,
            begin,
            changes: Vec::new(),
            events: Vec::new(),
            undo: Vec::new(),
            staged: None,
        }
    }

    /// Reads records of earlier transactions of the batch from `staged`.
    pub(crate) fn with_staged(mut self, staged: &'a HashMap<Revision, KeyValue>) -> Self {
        self.staged = Some(staged);
        self
    }

    /// The revision this transaction's reads see.
    fn rev(&self) -> i64 {
        if self.changes.is_empty() {
            self.begin
        } else {
            self.begin + 1
        }
    }

    fn fetch(&self, rev: Revision) -> Result<KeyValue> {
        if rev.main == self.begin + 1 {
            if let Some(Record::Put(kv)) = self.changes.get(rev.sub as usize) {
                return Ok(kv.clone());
            }
        }
        if let Some(kv) = self.staged.and_then(|m| m.get(&rev)) {
            return Ok(kv.clone());
        }
        fetch_put(self.backend, rev)
    }

    fn fetch_all(&self, revs: &[Revision]) -> Result<Vec<KeyValue>> {
        revs.iter().map(|r| self.fetch(*r)).collect()
    }

    /// A range at this transaction's current view.
    pub(crate) fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let current = self.rev();
        let plan = range::plan(&self.state.index, current, self.state.compacted, req)?;
        let kvs = self.fetch_all(&plan.revs)?;
        Ok(range::finish(req, &plan, kvs, current))
    }

    /// All live keys of `[key, range_end)` with their values, at the view.
    /// All live keys of `[key, range_end)` at the view, with what the index
    /// knows of them (no value is read).
    fn current_keys(&self, key: &[u8], range_end: &[u8]) -> Vec<(Bytes, KeyAt)> {
        let mut keys = Vec::new();
        range::visit(&self.state.index, key, range_end, self.rev(), |k, at| {
            keys.push((k.clone(), at));
            true
        });
        keys
    }

    fn next_revision(&self) -> Revision {
        Revision::new(self.begin + 1, self.changes.len() as i64)
    }

    pub(crate) fn put(&mut self, req: &PutRequest) -> Result<PutResponse> {
        let rev = self.next_revision();
        // The key as the index holds it, shared by the record, the event
        // and the lease tables; a key new to the index gets a copy of its
        // own (the request's key is a slice of a buffer holding its value
        // too, which it would keep alive).
        let (key, prev) = match self.state.index.get_key_value(&req.key) {
            Some((k, ki)) => (k.clone(), ki.get(rev.main)),
            None => (Bytes::copy_from_slice(&req.key), None),
        };
        // The previous value is read only for a request that uses it; the
        // event just says where it is.
        let prev_kv = match prev {
            Some(p) if req.prev_kv || req.ignore_value || req.ignore_lease => {
                Some(self.fetch(p.modified)?)
            }
            _ => None,
        };
        if req.lease != 0 && !self.state.leases.contains_key(&req.lease) {
            // etcd checks a plain put's lease before its key.
            return Err(Error::LeaseNotFound);
        }
        let (value, lease) = match (&prev_kv, req.ignore_value, req.ignore_lease) {
            (None, true, _) | (None, _, true) => return Err(Error::KeyNotFound),
            (p, iv, il) => (
                if iv {
                    p.as_ref().map(|p| p.value.clone()).unwrap_or_default()
                } else {
                    req.value.clone()
                },
                if il {
                    p.as_ref().map(|p| p.lease).unwrap_or_default()
                } else {
                    req.lease
                },
            ),
        };
        let kv = KeyValue {
            key: key.clone(),
            create_revision: prev.map_or(rev.main, |p| p.created.main),
            mod_revision: rev.main,
            version: prev.map_or(0, |p| p.version) + 1,
            value,
            lease,
        };
        match self.state.index.get_mut(&key) {
            Some(ki) => {
                ki.put(rev);
                self.undo.push(Undo::Put(key));
            }
            None => {
                let mut ki = KeyIndex::new();
                ki.put(rev);
                self.state.index.insert(key.clone(), ki);
                self.undo.push(Undo::Created(key));
            }
        }
        self.changes.push(Record::Put(kv.clone()));
        self.events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: prev_kv.clone().map(Box::new),
            prev_revision: prev.map(|p| p.modified),
        });
        Ok(PutResponse {
            header_revision: rev.main,
            prev_kv: if req.prev_kv { prev_kv } else { None },
        })
    }

    pub(crate) fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let doomed = self.current_keys(&req.key, &req.range_end);
        // Values are read only when the response carries them.
        let prev_kvs = if req.prev_kv {
            doomed
                .iter()
                .map(|(_, at)| self.fetch(at.modified))
                .collect::<Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        for (i, (key, at)) in doomed.iter().enumerate() {
            let rev = self.next_revision();
            let Some(ki) = self.state.index.get_mut(key) else {
                continue;
            };
            if ki.tombstone(rev) {
                self.tombstoned(key, rev, at.modified, prev_kvs.get(i).cloned());
            }
        }
        Ok(DeleteRangeResponse {
            header_revision: self.rev(),
            deleted: doomed.len() as i64,
            prev_kvs,
        })
    }

    /// Records the tombstone just put in the index for `key` at `rev`: its
    /// undo, its record and its DELETE event.
    fn tombstoned(
        &mut self,
        key: &Bytes,
        rev: Revision,
        prev: Revision,
        prev_kv: Option<KeyValue>,
    ) {
        self.undo.push(Undo::Tombstone(key.clone()));
        self.changes.push(Record::Tombstone(key.clone()));
        self.events.push(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: key.clone(),
                mod_revision: rev.main,
                ..Default::default()
            },
            prev_kv: prev_kv.map(Box::new),
            prev_revision: Some(prev),
        });
    }

    /// Runs a whole txn request: compares and request checks against the
    /// state before any of its ops, then the chosen branches.
    pub(crate) fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse> {
        let mut path = Vec::new();
        self.compare_path(req, &mut path)?;
        if !is_read_only(req) {
            self.check_path(req, &path, &mut 0, &|t, op| t.check_put(op))?;
        }
        self.check_path(req, &path, &mut 0, &|t, op| t.check_range(op))?;
        let mut resp = self.run_txn(req, &path, &mut 0)?;
        resp.header_revision = self.rev();
        Ok(resp)
    }

    /// Evaluates the compares of `req` and of every nested txn on the chosen
    /// branches, all against the state before the txn (etcd's txn path).
    fn compare_path(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
        let mut ok = true;
        for c in &req.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in if ok { &req.success } else { &req.failure } {
            if let RequestOp::Txn(t) = op {
                self.compare_path(t, path)?;
            }
        }
        Ok(())
    }

    fn compare(&self, c: &Compare) -> Result<bool> {
        let keys = self.current_keys(&c.key, &c.range_end);
        if keys.is_empty() {
            if matches!(c.target, CompareTarget::Value(_)) {
                // A missing key has no value to compare.
                return Ok(false);
            }
            return Ok(compare_kv(c, &KeyValue::default()));
        }
        for (key, at) in keys {
            // Only a value compare reads the record; revisions, version
            // and lease are known in memory.
            let kv = match c.target {
                CompareTarget::Value(_) => self.fetch(at.modified)?,
                _ => KeyValue {
                    lease: self.state.key_lease.get(&key).copied().unwrap_or(0),
                    key,
                    create_revision: at.created.main,
                    mod_revision: at.modified.main,
                    version: at.version,
                    value: Bytes::new(),
                },
            };
            if !compare_kv(c, &kv) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn check_path(
        &self,
        req: &TxnRequest,
        path: &[bool],
        pos: &mut usize,
        check: &dyn Fn(&Self, &RequestOp) -> Result<()>,
    ) -> Result<()> {
        let ok = path.get(*pos).copied().unwrap_or(false);
        *pos += 1;
        for op in if ok { &req.success } else { &req.failure } {
            match op {
                RequestOp::Txn(t) => self.check_path(t, path, pos, check)?,
                op => check(self, op)?,
            }
        }
        Ok(())
    }

    fn check_put(&self, op: &RequestOp) -> Result<()> {
        if let RequestOp::Put(p) = op {
            if (p.ignore_value || p.ignore_lease) && !self.exists(&p.key) {
                return Err(Error::KeyNotFound);
            }
            if p.lease != 0 && !self.state.leases.contains_key(&p.lease) {
                return Err(Error::LeaseNotFound);
            }
        }
        Ok(())
    }

    fn check_range(&self, op: &RequestOp) -> Result<()> {
        if let RequestOp::Range(r) = op {
            // etcd checks the reads of the branches that run against the
            // revision before the txn: a negative revision passes while
            // nothing was compacted (the compacted revision is then -1) and
            // reads the current revision, as a plain range does.
            if r.revision == 0 {
                return Ok(());
            }
            if r.revision > self.rev() {
                return Err(Error::FutureRevision {
                    requested: r.revision,
                    current: self.rev(),
                });
            }
            if r.revision < self.state.compacted {
                return Err(Error::Compacted {
                    requested: r.revision,
                    compacted: self.state.compacted,
                });
            }
        }
        Ok(())
    }

    fn exists(&self, key: &[u8]) -> bool {
        self.state
            .index
            .get(key)
            .is_some_and(|ki| ki.get(self.rev()).is_some())
    }

    fn run_txn(&mut self, req: &TxnRequest, path: &[bool], pos: &mut usize) -> Result<TxnResponse> {
        let ok = path.get(*pos).copied().unwrap_or(false);
        *pos += 1;
        let ops = if ok { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range(r)?),
                RequestOp::Put(p) => ResponseOp::Put(self.put(p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_range(d)?),
                RequestOp::Txn(t) => ResponseOp::Txn(self.run_txn(t, path, pos)?),
                RequestOp::Empty => return Err(Error::KeyNotFound),
            });
        }
        // etcd leaves a nested txn's header revision at 0; the caller sets
        // the top-level one.
        Ok(TxnResponse {
            header_revision: 0,
            succeeded: ok,
            responses,
        })
    }

    /// Rolls the index back to where it was before the transaction.
    pub(crate) fn rollback(mut self) {
        self.undo_all();
    }

    fn undo_all(&mut self) {
        while let Some(u) = self.undo.pop() {
            match u {
                Undo::Put(k) => {
                    if let Some(ki) = self.state.index.get_mut(&k) {
                        ki.undo_put();
                    }
                }
                Undo::Created(k) => {
                    self.state.index.remove(&k);
                }
                Undo::Tombstone(k) => {
                    if let Some(ki) = self.state.index.get_mut(&k) {
                        ki.undo_tombstone();
                    }
                }
            }
        }
        self.changes.clear();
        self.events.clear();
    }

    /// Writes the transaction's records, the new store revision and
    /// `applied` in one batch, then publishes the revision. On a backend
    /// failure the index is rolled back and the error returned.
    pub(crate) fn commit(self, applied: &[u8]) -> Result<(i64, Vec<Event>)> {
        self.commit_with(applied, WriteBatch::new())
    }

    /// [`WriteTxn::commit`] with `extra` operations in the same batch.
    pub(crate) fn commit_with(
        mut self,
        applied: &[u8],
        extra: WriteBatch,
    ) -> Result<(i64, Vec<Event>)> {
        let mut batch = WriteBatch::new();
        let rev = self.begin + 1;
        self.add_records(&mut batch, |_, _| {});
        if !self.changes.is_empty() {
            batch.put(Meta::Current.key(), record::encode_i64(rev));
        }
        for (k, v) in extra.into_ops() {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        let applied = Bytes::copy_from_slice(applied);
        batch.put(Meta::Applied.key(), applied.clone());
        if let Err(e) = self.backend.write(batch) {
            self.undo_all();
            return Err(Error::Backend(e));
        }
        if !self.changes.is_empty() {
            self.state.current = rev;
        }
        self.state.applied = Some(applied);
        self.undo.clear();
        lease::track(
            &mut self.state.leases,
            &mut self.state.key_lease,
            &self.events,
        );
        Ok((self.state.current, std::mem::take(&mut self.events)))
    }
}

impl<B: Backend> WriteTxn<'_, B> {
    /// Puts this transaction's records into `batch` (each at revision
    /// `begin + 1`, sub = position), showing each put record to `on_put`.
    /// Consecutive tombstones go in as one run (see [`crate::record`]).
    fn add_records(&self, batch: &mut WriteBatch, mut on_put: impl FnMut(Revision, &KeyValue)) {
        let rev = self.begin + 1;
        let mut sub = 0;
        while sub < self.changes.len() {
            let at = Revision::new(rev, sub as i64);
            let run = self.changes[sub..]
                .iter()
                .take_while(|r| matches!(r, Record::Tombstone(_)))
                .count();
            if run >= 2 {
                let keys = self.changes[sub..sub + run].iter().map(Record::key);
                batch.put(record::record_key(at), Record::encode_tombstones(keys));
                sub += run;
                continue;
            }
            let rec = &self.changes[sub];
            batch.put(record::record_key(at), rec.encode());
            if let Record::Put(kv) = rec {
                on_put(at, kv);
            }
            sub += 1;
        }
    }

    /// Adds this transaction's records to `batch` and makes its revision
    /// current in memory, without writing: the caller writes the batch
    /// before it releases the state lock, so no reader sees the revision
    /// before its records are in the backend. If that write fails the
    /// memory is ahead of the backend, so the caller must poison the store.
    pub(crate) fn stage(mut self, batch: &mut WriteBatch) -> Staged {
        let mut puts = Vec::new();
        self.add_records(batch, |at, kv| puts.push((at, kv.clone())));
        if !self.changes.is_empty() {
            self.state.current = self.begin + 1;
        }
        self.undo.clear();
        lease::track(
            &mut self.state.leases,
            &mut self.state.key_lease,
            &self.events,
        );
        Staged {
            revision: self.state.current,
            events: std::mem::take(&mut self.events),
            puts,
        }
    }
}

/// Fetches the put record at `rev` from the backend.
pub(crate) fn fetch_put<B: Backend>(backend: &B, rev: Revision) -> Result<KeyValue> {
    let raw = backend
        .get(&record::record_key(rev))
        .map_err(Error::Backend)?
        .ok_or_else(|| Error::Corrupt {
            location: format!("record {rev}"),
            reason: "indexed record missing from backend".into(),
        })?;
    match Record::decode(rev, &raw)? {
        Record::Put(kv) => Ok(kv),
        Record::Tombstone(_) => Err(Error::Corrupt {
            location: format!("record {rev}"),
            reason: "indexed as a value but stored as a tombstone".into(),
        }),
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Value(v) => kv.value.as_ref().cmp(v.as_ref()),
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::CreateRevision(v) => kv.create_revision.cmp(v),
        CompareTarget::ModRevision(v) => kv.mod_revision.cmp(v),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
    };
    match c.result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> RequestOp {
        RequestOp::Put(PutRequest {
            key: Bytes::copy_from_slice(k.as_bytes()),
            ..Default::default()
        })
    }
    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: Bytes::copy_from_slice(k.as_bytes()),
            range_end: Bytes::copy_from_slice(end.as_bytes()),
            prev_kv: false,
        })
    }
    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    #[test]
    fn duplicate_rules() {
        let ok = |t: TxnRequest| validate_txn(&t, 128).is_ok();
        assert!(!ok(txn(vec![put("a"), put("a")], vec![])));
        assert!(ok(txn(vec![put("a")], vec![put("a")])));
        assert!(!ok(txn(vec![del("a", "c"), put("b")], vec![])));
        assert!(ok(txn(vec![del("a", "b"), put("b")], vec![])));
        // etcd takes "\0" literally in this check: no conflict.
        assert!(ok(txn(vec![del("a", "\0"), put("b")], vec![])));
        // nested: same key in both branches of one nested txn is fine...
        assert!(ok(txn(
            vec![RequestOp::Txn(txn(vec![put("a")], vec![put("a")]))],
            vec![]
        )));
        // ...but not beside a put of the same key on the outer level.
        assert!(!ok(txn(
            vec![RequestOp::Txn(txn(vec![put("a")], vec![])), put("a")],
            vec![]
        )));
        assert!(!ok(txn(
            vec![del("a", ""), RequestOp::Txn(txn(vec![put("a")], vec![]))],
            vec![]
        )));
    }

    #[test]
    fn shape_rules() {
        let many = txn((0..3).map(|i| put(&i.to_string())).collect(), vec![]);
        assert!(matches!(
            validate_txn(&many, 2),
            Err(Error::TooManyOps { max: 2 })
        ));
        assert!(validate_txn(&many, 3).is_ok());
        // Nested txns share the budget.
        let nested = txn(
            vec![put("x"), RequestOp::Txn(txn(vec![put("y")], vec![]))],
            vec![],
        );
        assert!(matches!(
            validate_txn(&nested, 2),
            Err(Error::TooManyOps { .. })
        ));
        assert!(matches!(
            validate_txn(&txn(vec![RequestOp::Empty], vec![]), 128),
            Err(Error::KeyNotFound)
        ));
        assert!(matches!(
            validate_txn(&txn(vec![put("")], vec![]), 128),
            Err(Error::EmptyKey)
        ));
        let mut c = txn(vec![], vec![]);
        c.compare.push(Compare::default());
        assert!(matches!(validate_txn(&c, 128), Err(Error::EmptyKey)));
    }
}
