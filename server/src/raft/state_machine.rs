//! openraft's `RaftStateMachine` over `cairn-kv`.
//!
//! Every applied entry is one kv write, or a batch of them
//! ([`cairnpb::CommandBatch`], each write its own revision), whose
//! *applied position* — the entry's log id and the membership in force —
//! is stored in the same atomic batch as the data. The store is not
//! fsynced per apply (the Raft log is the source of durability): after a
//! crash, `applied_state` names the last write that survived and openraft
//! applies the rest again.
//!
//! A snapshot is the store itself ([`super::snapshot`]): building one
//! makes the store durable, so the log below its applied position may be
//! purged, and the current snapshot is the store at its applied
//! position, exported as a follower reads it.
//!
//! Length: over 500 lines, as the apply path and the snapshots share the
//! applied position and must be read together.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use cairn_kv::{Store, Write as KvBatchWrite, Written};
use cairn_proto::cairnpb::{self, command::Op, command_response::Result as Res};
use futures::{Stream, StreamExt};
use openraft::storage::{ApplyResponder, EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::apply::{ApplyObserver, Unobserved};
use super::snapshot::SnapshotData;
use super::{decode, encode, CommandResponse, LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::alarm::Alarms;
use crate::auth::{perm, Auth, Need};
use crate::convert;
use crate::durable::sync_dir;
use crate::error::Error;
use crate::status::msg;

/// A snapshot: its meta and its [`SnapshotData`].
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// What is stored as the kv store's applied position.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    log_id: Option<LogId>,
    membership: StoredMembership,
}

/// The replicated state machine of one member.
pub struct StateMachine {
    store: Arc<Store>,
    applied: Applied,
    /// Told of each applied revision's events and of lease grants and
    /// revokes (watches and the lessor).
    observer: Arc<dyn ApplyObserver>,
    /// The auth state: changed by auth commands, and deciding whether
    /// each user's write may be applied.
    auth: Arc<Auth>,
    /// The raised alarms: changed by alarm commands; NOSPACE refuses
    /// writes that add data.
    alarms: Arc<Alarms>,
    /// Told how long each kv batch took to write.
    metrics: Arc<crate::metrics::Metrics>,
}

/// Most kv writes applied as one kv batch (a batch entry's all go into
/// one): bounds the batch (and the time the store's write lock is held)
/// when a long log is replayed.
const MAX_APPLY_BATCH: usize = 256;

/// A kv write decoded from a log entry.
enum KvWrite {
    Put(cairn_kv::PutRequest),
    DeleteRange(cairn_kv::DeleteRangeRequest),
    Txn(cairn_kv::TxnRequest),
}

impl KvWrite {
    fn of(cmd: &cairnpb::Command) -> Option<KvWrite> {
        Some(match &cmd.op {
            Some(Op::Put(p)) => KvWrite::Put(convert::put_request(p)),
            Some(Op::DeleteRange(d)) => KvWrite::DeleteRange(convert::delete_request(d)),
            Some(Op::Txn(t)) => KvWrite::Txn(convert::txn_request(t)),
            _ => return None,
        })
    }

    fn as_write(&self) -> KvBatchWrite<'_> {
        match self {
            KvWrite::Put(p) => KvBatchWrite::Put(p),
            KvWrite::DeleteRange(d) => KvBatchWrite::DeleteRange(d),
            KvWrite::Txn(t) => KvBatchWrite::Txn(t),
        }
    }
}

/// One kv write of a log entry: to apply, or answered without applying
/// (the user may not, or a batch may not carry it).
enum Slot {
    Write(KvWrite),
    Refused(cairnpb::ApplyError),
}

impl Slot {
    fn of(cmd: &cairnpb::Command, rules: &Rules) -> Slot {
        let Some(w) = KvWrite::of(cmd) else {
            return Slot::Refused(not_batchable_error());
        };
        match rules.refusal(cmd) {
            Some(e) => Slot::Refused(e),
            None => Slot::Write(w),
        }
    }

    fn write(&self) -> Option<&KvWrite> {
        match self {
            Slot::Write(w) => Some(w),
            Slot::Refused(_) => None,
        }
    }
}

/// What decides, as of an entry, whether its command may be applied.
struct Rules<'a> {
    auth: &'a Auth,
    alarms: &'a Alarms,
    store: &'a Store,
}

impl Rules<'_> {
    /// Why `cmd` may not be applied as of this entry: it adds data while
    /// NOSPACE is raised, or its user may not make it; `None` if it may
    /// (or, for the auth rule, the command is the member's own).
    fn refusal(&self, cmd: &cairnpb::Command) -> Option<cairnpb::ApplyError> {
        if self.alarms.corrupt() && crate::alarm::corrupt_refuses(cmd) {
            return Error::to_apply_error(&Error::Corrupt);
        }
        if self.alarms.nospace() && crate::alarm::adds_data(cmd) {
            return Error::to_apply_error(&Error::NoSpace);
        }
        auth_refusal(cmd, self.auth, self.store)
    }
}

/// Why `cmd`'s user may not make its write, under the auth state as of
/// this entry; `None` if it may (or the command is the member's own).
fn auth_refusal(cmd: &cairnpb::Command, auth: &Auth, store: &Store) -> Option<cairnpb::ApplyError> {
    let user = cmd.user.as_deref()?;
    if !auth.is_enabled() {
        return None;
    }
    let state = auth.state();
    let user = Some(user).filter(|u| !u.is_empty());
    let needs = match &cmd.op {
        Some(Op::Put(p)) => perm::needs_of_put(p),
        Some(Op::DeleteRange(d)) => perm::needs_of_delete(d),
        Some(Op::Txn(t)) => perm::needs_of_txn(t),
        Some(Op::LeaseRevoke(_)) => Vec::new(),
        _ => return None,
    };
    let mut verdict = perm::check(&state, user, &needs);
    // A lease a put attaches, or a revoke deletes with, must hold only
    // keys the user may write: it could revoke them (etcd's rule,
    // CVE-2026-44283).
    if verdict.is_ok() && !user.is_some_and(|u| state.is_root(u)) {
        for lease in leases_touched(cmd) {
            for key in store.lease_keys(lease) {
                verdict = perm::check(&state, user, &[Need::write_key(&key)]);
                if verdict.is_err() {
                    break;
                }
            }
        }
    }
    verdict.err().and_then(|e| Error::to_apply_error(&e))
}

/// The leases a command attaches keys to or revokes.
fn leases_touched(cmd: &cairnpb::Command) -> Vec<i64> {
    use cairn_proto::etcdserverpb::request_op::Request;
    fn txn(t: &cairn_proto::etcdserverpb::TxnRequest, out: &mut Vec<i64>) {
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(Request::RequestPut(p)) if p.lease != 0 => out.push(p.lease),
                Some(Request::RequestTxn(t)) => txn(t, out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    match &cmd.op {
        Some(Op::Put(p)) if p.lease != 0 => out.push(p.lease),
        Some(Op::Txn(t)) => txn(t, &mut out),
        Some(Op::LeaseRevoke(r)) => out.push(r.id),
        _ => {}
    }
    out
}

/// Whether applying `cmd` depends on the lease table as of this entry
/// (so the writes before it must be applied first).
fn reads_leases(cmd: &cairnpb::Command, auth: &Auth) -> bool {
    auth.is_enabled() && touches_leases(cmd)
}

fn touches_leases(cmd: &cairnpb::Command) -> bool {
    match &cmd.op {
        Some(Op::Batch(b)) => b.commands.iter().any(touches_leases),
        _ => cmd.user.is_some() && !leases_touched(cmd).is_empty(),
    }
}

/// The kv writes of one log entry: one, or a [`cairnpb::CommandBatch`]'s.
enum EntryWrites {
    One(Slot),
    Batch(Vec<Slot>),
}

impl EntryWrites {
    fn of(cmd: &cairnpb::Command, rules: &Rules) -> Option<EntryWrites> {
        match &cmd.op {
            Some(Op::Batch(b)) => Some(EntryWrites::Batch(
                b.commands.iter().map(|c| Slot::of(c, rules)).collect(),
            )),
            _ => {
                let w = KvWrite::of(cmd)?;
                Some(EntryWrites::One(match rules.refusal(cmd) {
                    Some(e) => Slot::Refused(e),
                    None => Slot::Write(w),
                }))
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            EntryWrites::One(_) => 1,
            EntryWrites::Batch(b) => b.len(),
        }
    }

    fn writes(&self) -> impl Iterator<Item = KvBatchWrite<'_>> {
        let slots: &[Slot] = match self {
            EntryWrites::One(w) => std::slice::from_ref(w),
            EntryWrites::Batch(b) => b,
        };
        slots.iter().filter_map(Slot::write).map(KvWrite::as_write)
    }
}

/// An entry's writes waiting for their kv batch: its log id, the writes,
/// who to answer.
type PendingWrite = (LogId, EntryWrites, Option<ApplyResponder<TypeConfig>>);

/// The result of a command a [`cairnpb::CommandBatch`] may not carry.
fn not_batchable_error() -> cairnpb::ApplyError {
    cairnpb::ApplyError {
        kind: "batch".into(),
        message: msg::NOT_BATCHABLE.into(),
    }
}

fn kv_err(e: cairn_kv::Error) -> io::Error {
    io::Error::other(e)
}

/// The log id of the last entry `store` applied, read from its applied
/// position (`None` for a store that applied nothing).
pub fn applied_log_id(store: &Store) -> io::Result<Option<LogId>> {
    Ok(decode_applied(store.applied().as_ref())?.log_id)
}

/// The membership a store's applied position records (the default, empty
/// one if none).
pub fn applied_membership(store: &Store) -> io::Result<StoredMembership> {
    Ok(decode_applied(store.applied().as_ref())?.membership)
}

impl StateMachine {
    /// A state machine over `store`. `snap_dir` is where snapshots are
    /// received; what an earlier format kept there is removed.
    pub fn new(store: Arc<Store>, snap_dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(snap_dir)?;
        remove_leftovers(snap_dir)?;
        let applied = decode_applied(store.applied().as_ref())?;
        let auth = Auth::open(
            &store,
            "simple",
            crate::config::DEFAULT_AUTH_TOKEN_TTL,
            crate::config::DEFAULT_BCRYPT_COST,
        )
        .map_err(io::Error::other)?;
        Ok(Self {
            applied,
            observer: Arc::new(Unobserved),
            auth: Arc::new(auth),
            alarms: Arc::new(Alarms::open(&store)?),
            metrics: Arc::default(),
            store,
        })
    }

    /// Reports to `metrics` (the member's).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Applies alarm commands to, and refuses writes under NOSPACE with,
    /// `alarms` (the member's).
    pub fn with_alarms(mut self, alarms: Arc<Alarms>) -> Self {
        self.alarms = alarms;
        self
    }

    fn rules(&self) -> Rules<'_> {
        Rules {
            auth: &self.auth,
            alarms: &self.alarms,
            store: &self.store,
        }
    }

    /// Applies auth commands to, and checks users' writes against,
    /// `auth` (the member's).
    pub fn with_auth(mut self, auth: Arc<Auth>) -> Self {
        self.auth = auth;
        self
    }

    /// Tells `observer` what every apply did from now on.
    pub fn with_observer(mut self, observer: Arc<dyn ApplyObserver>) -> Self {
        self.observer = observer;
        self
    }

    fn publish(&self, revision: i64, events: Vec<cairn_kv::Event>) {
        if !events.is_empty() {
            self.observer.revision_applied(revision, events);
        }
    }

    /// The kv store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn position(&self) -> io::Result<Vec<u8>> {
        encode(&self.applied)
    }

    /// Applies `writes` as one kv batch recording the last one's position,
    /// then publishes their events and answers them, in log order.
    fn apply_writes(&mut self, writes: &mut Vec<PendingWrite>) -> io::Result<()> {
        let Some((last, _, _)) = writes.last() else {
            return Ok(());
        };
        self.applied.log_id = Some(*last);
        let pos = self.position()?;
        let batch: Vec<KvBatchWrite<'_>> = writes.iter().flat_map(|(_, w, _)| w.writes()).collect();
        let results = if batch.is_empty() {
            // Only commands a batch may not carry: nothing but the position.
            self.store.record_applied(&pos).map_err(kv_err)?;
            Vec::new()
        } else {
            let t = std::time::Instant::now();
            let r = self.store.write_batch(&batch, &pos).map_err(kv_err)?;
            if crate::metrics::ON {
                self.metrics
                    .backend_commit
                    .observe(t.elapsed().as_secs_f64());
            }
            r
        };
        drop(batch);
        let mut results = results.into_iter();
        let mut next = |this: &Self| -> io::Result<Res> {
            let r = results
                .next()
                .ok_or_else(|| io::Error::other("kv batch answered fewer writes"))?;
            this.result(r)
        };
        for (_, w, responder) in writes.drain(..) {
            let result = match w {
                EntryWrites::One(Slot::Write(_)) => next(self)?,
                EntryWrites::One(Slot::Refused(e)) => Res::Error(e),
                EntryWrites::Batch(b) => {
                    let mut out = Vec::with_capacity(b.len());
                    for w in b {
                        let result = match w {
                            Slot::Write(_) => next(self)?,
                            Slot::Refused(e) => Res::Error(e),
                        };
                        out.push(cairnpb::CommandResponse {
                            result: Some(result),
                        });
                    }
                    Res::Batch(cairnpb::CommandResponseBatch { results: out })
                }
            };
            if let Some(r) = responder {
                r.send(CommandResponse(cairnpb::CommandResponse {
                    result: Some(result),
                }));
            }
        }
        Ok(())
    }

    /// One kv write's result as its command answers it, its events
    /// published.
    fn result(&self, r: cairn_kv::Result<cairn_kv::Applied<Written>>) -> io::Result<Res> {
        Ok(match r {
            Ok(a) => {
                self.publish(a.revision, a.events);
                match a.response {
                    Written::Put(p) => Res::Put(convert::put_response(p)),
                    Written::DeleteRange(d) => Res::DeleteRange(convert::delete_response(d)),
                    Written::Txn(t) => Res::Txn(convert::txn_response(t)),
                }
            }
            Err(e) => match Error::to_apply(&e) {
                Some(a) => Res::Error(a),
                None => return Err(kv_err(e)),
            },
        })
    }

    /// Applies one command other than a kv write, recording
    /// `self.applied` with it.
    fn execute(&self, cmd: &cairnpb::Command) -> io::Result<CommandResponse> {
        let pos = self.position()?;
        if let Some(e) = self.rules().refusal(cmd) {
            // Deterministic: nothing written but the position.
            self.store.record_applied(&pos).map_err(kv_err)?;
            return Ok(CommandResponse(cairnpb::CommandResponse {
                result: Some(Res::Error(e)),
            }));
        }
        let result = match &cmd.op {
            // `apply` hands every kv write to `apply_writes`.
            Some(Op::Put(_) | Op::DeleteRange(_) | Op::Txn(_) | Op::Batch(_)) => {
                return Err(io::Error::other(
                    "kv writes are applied through apply_writes",
                ))
            }
            Some(Op::Compact(c)) => self.store.compact(c.revision, &pos).map(|rev| {
                Res::Compact(cairn_proto::etcdserverpb::CompactionResponse {
                    header: convert::header(rev),
                })
            }),
            Some(Op::LeaseGrant(g)) => self.store.lease_grant(g.id, g.ttl, &pos).map(|()| {
                self.observer.lease_granted(g.id, g.ttl);
                Res::LeaseGrant(cairn_proto::etcdserverpb::LeaseGrantResponse {
                    header: convert::header(self.store.current_revision()),
                    id: g.id,
                    ttl: g.ttl,
                    error: String::new(),
                })
            }),
            Some(Op::Auth(a)) => {
                let r = self.auth.apply(a, &self.store, &pos).map_err(kv_err)?;
                let result = match r {
                    Ok(rev) => Res::Auth(cairnpb::AuthCommandResponse { auth_revision: rev }),
                    Err(e) => {
                        // Deterministic: nothing written but the position.
                        self.store.record_applied(&pos).map_err(kv_err)?;
                        Res::Error(Error::to_apply_error(&e).unwrap_or_else(|| {
                            cairnpb::ApplyError {
                                kind: "auth".into(),
                                message: e.to_string(),
                            }
                        }))
                    }
                };
                return Ok(CommandResponse(cairnpb::CommandResponse {
                    result: Some(result),
                }));
            }
            Some(Op::Alarm(a)) => {
                let r = self.alarms.apply(a, &self.store, &pos)?;
                return Ok(CommandResponse(cairnpb::CommandResponse {
                    result: Some(Res::Alarm(r)),
                }));
            }
            Some(Op::LeaseRevoke(r)) => self.store.lease_revoke_deferred(r.id, &pos).map(|a| {
                // Its events are built by the first watcher that looks at
                // them, not here, holding up the applies behind.
                self.observer.lease_revoked(r.id, a.revision, a.deleted);
                Res::LeaseRevoke(cairn_proto::etcdserverpb::LeaseRevokeResponse {
                    header: convert::header(a.revision),
                })
            }),
            Some(Op::LeaseCheckpoint(c)) => {
                let cps: Vec<(i64, i64)> = c
                    .checkpoints
                    .iter()
                    .map(|c| (c.id, c.remaining_ttl))
                    .collect();
                self.store.lease_checkpoint(&cps, &pos).map(|()| {
                    Res::LeaseCheckpoint(cairn_proto::etcdserverpb::LeaseCheckpointResponse {
                        header: convert::header(self.store.current_revision()),
                    })
                })
            }
            None => self.store.record_applied(&pos).map(|()| {
                Res::Error(cairnpb::ApplyError {
                    kind: "empty".into(),
                    message: "empty command".into(),
                })
            }),
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => match Error::to_apply(&e) {
                Some(a) => {
                    // Deterministic failure: nothing written but the
                    // position, so a restart does not apply it again.
                    self.store.record_applied(&pos).map_err(kv_err)?;
                    Res::Error(a)
                }
                None => return Err(kv_err(e)),
            },
        };
        Ok(CommandResponse(cairnpb::CommandResponse {
            result: Some(result),
        }))
    }
}

/// Removes what snapshots of an earlier format left in `dir` (a copy of
/// the store per snapshot, and the files of one being made or received
/// when the member stopped): snapshots are now the store itself.
fn remove_leftovers(dir: &Path) -> io::Result<()> {
    let mut removed = 0;
    for ent in fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name().to_string_lossy().to_string();
        let image_or_meta = name.ends_with(".img") || name.ends_with(".meta");
        if image_or_meta && !ent.file_type()?.is_dir() {
            fs::remove_file(ent.path())?;
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(files = removed, dir = %dir.display(), "removed earlier snapshot files");
        sync_dir(dir)?;
    }
    Ok(())
}

/// The meta of the snapshot an applied position describes.
fn meta_of(applied: Applied) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: applied.log_id,
        last_membership: applied.membership,
    }
}

/// Builds snapshots of a live store: makes it durable, copies nothing.
pub struct SnapshotBuilder {
    store: Arc<Store>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || -> io::Result<Snapshot> {
            // The position first: the flush after it makes durable
            // everything up to it (and maybe more), so the log below it
            // may be purged.
            let applied = decode_applied(store.applied().as_ref())?;
            store.flush().map_err(kv_err)?;
            Ok(Snapshot {
                meta: meta_of(applied),
                snapshot: SnapshotData::in_store(),
            })
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// An applied position as stored (none stored: the default).
fn decode_applied(raw: Option<&bytes::Bytes>) -> io::Result<Applied> {
    match raw {
        Some(raw) if !raw.is_empty() => decode(raw),
        _ => Ok(Applied::default()),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok((self.applied.log_id, self.applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        // Consecutive puts, deletes and txns are applied as one kv batch
        // (one backend write, one applied position); anything else is
        // applied alone, after the writes before it.
        let mut writes: Vec<PendingWrite> = Vec::new();
        let mut batched = 0;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let payload = match entry.payload {
                EntryPayload::Normal(cmd) => {
                    // A user's write whose permission depends on a lease's
                    // keys is decided after the writes before it.
                    if !writes.is_empty() && reads_leases(&cmd.0, &self.auth) {
                        self.apply_writes(&mut writes)?;
                        batched = 0;
                    }
                    match EntryWrites::of(&cmd.0, &self.rules()) {
                        Some(w) => {
                            batched += w.len();
                            writes.push((entry.log_id, w, responder));
                            if batched >= MAX_APPLY_BATCH {
                                self.apply_writes(&mut writes)?;
                                batched = 0;
                            }
                            continue;
                        }
                        None => EntryPayload::Normal(cmd),
                    }
                }
                other => other,
            };
            self.apply_writes(&mut writes)?;
            batched = 0;
            self.applied.log_id = Some(entry.log_id);
            let resp = match payload {
                EntryPayload::Normal(cmd) => self.execute(&cmd.0)?,
                EntryPayload::Blank => {
                    self.store
                        .record_applied(&self.position()?)
                        .map_err(kv_err)?;
                    CommandResponse::default()
                }
                EntryPayload::Membership(m) => {
                    self.applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    self.store
                        .record_applied(&self.position()?)
                        .map_err(kv_err)?;
                    CommandResponse::default()
                }
            };
            if let Some(r) = responder {
                r.send(resp);
            }
        }
        self.apply_writes(&mut writes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: Arc::clone(&self.store),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> io::Result<()> {
        let store = Arc::clone(&self.store);
        let applied = tokio::task::spawn_blocking(move || -> io::Result<Applied> {
            let mut r = snapshot;
            let info = store.import(&mut r).map_err(kv_err)?;
            decode_applied(info.applied.as_ref())
        })
        .await
        .map_err(io::Error::other)??;
        // The image is the store as of its meta: anything else is a
        // leader's error, and the state below openraft would not be what
        // it believes.
        if applied.log_id != meta.last_log_id {
            return Err(io::Error::other(format!(
                "a snapshot image holds entries up to {:?}, its meta says {:?}",
                applied.log_id, meta.last_log_id
            )));
        }
        tracing::info!(last = ?meta.last_log_id, "installed a snapshot from the leader");
        self.auth.reload(&self.store)?;
        self.alarms.reload(&self.store)?;
        self.applied = applied;
        Ok(())
    }

    /// The store as it stands, exported as it is read: a snapshot at the
    /// current applied position (openraft reads only the meta at startup,
    /// and the data when it sends the snapshot to a follower).
    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        if self.applied.log_id.is_none() {
            return Ok(None);
        }
        // Durable first: openraft may purge the log below this position.
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.flush().map_err(kv_err))
            .await
            .map_err(io::Error::other)??;
        let (data, applied) = SnapshotData::export(Arc::clone(&self.store)).await?;
        Ok(Some(Snapshot {
            meta: meta_of(decode_applied(applied.as_ref())?),
            snapshot: data,
        }))
    }
}
