//! Alarms, as etcd has them: NOSPACE (a member's store went over
//! `--quota-backend-bytes`) and CORRUPT (a member's data differs from the
//! leader's at the same revision: every kv call is refused then, on every
//! member, until an operator clears it). Raised and cleared through Raft
//! and kept in the store (an owned entry, carried in snapshots), so every
//! member sees the same alarms from the same log entry on: while NOSPACE
//! is raised, every member refuses, at apply, the puts, txns that put and
//! lease grants of the entries after it; reads, deletes and compactions
//! go on.
//!
//! Owns: the alarm list, its encoding, the NOSPACE rule at apply, and the
//! quota check before a write is proposed ([`Quota`]).
//!
//! May not: decide when to raise NOSPACE (the member whose store is over
//! its quota proposes it; see [`Quota`]).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

use bytes::Bytes;
use cairn_kv::{Owned, Store};
use cairn_proto::cairnpb::{self, command::Op};
use cairn_proto::etcdserverpb::{
    alarm_request::AlarmAction, request_op::Request, AlarmMember, AlarmRequest, AlarmResponse,
    AlarmType, TxnRequest,
};
use prost::Message;

/// etcd's default `--quota-backend-bytes` (2 GiB), used when it is 0.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

/// The raised alarms of a member's cluster.
#[derive(Default)]
pub struct Alarms {
    list: RwLock<Vec<AlarmMember>>,
    /// Whether NOSPACE is among them (read on every write).
    nospace: AtomicBool,
    /// Whether CORRUPT is among them (read on every kv call).
    corrupt: AtomicBool,
}

impl Alarms {
    /// The alarms kept in `store`.
    pub fn open(store: &Store) -> io::Result<Alarms> {
        let me = Alarms::default();
        me.reload(store)?;
        Ok(me)
    }

    /// Reads the alarms again (after a snapshot replaced the store's
    /// contents).
    pub fn reload(&self, store: &Store) -> io::Result<()> {
        let list = match store.owned(Owned::Alarms).map_err(io::Error::other)? {
            Some(raw) => {
                AlarmResponse::decode(raw)
                    .map_err(|e| {
                        io::Error::other(format!("the stored alarms are unreadable: {e}"))
                    })?
                    .alarms
            }
            None => Vec::new(),
        };
        self.set(list);
        Ok(())
    }

    fn set(&self, list: Vec<AlarmMember>) {
        let raised = |t: AlarmType| list.iter().any(|a| a.alarm == t as i32);
        let nospace = raised(AlarmType::Nospace);
        let corrupt = raised(AlarmType::Corrupt);
        if let Ok(mut l) = self.list.write() {
            *l = list;
        }
        self.nospace.store(nospace, Ordering::Release);
        self.corrupt.store(corrupt, Ordering::Release);
    }

    /// Whether CORRUPT is raised.
    pub fn corrupt(&self) -> bool {
        self.corrupt.load(Ordering::Acquire)
    }

    /// Whether NOSPACE is raised.
    pub fn nospace(&self) -> bool {
        self.nospace.load(Ordering::Acquire)
    }

    /// The raised alarms of type `alarm` (all of them for NONE).
    pub fn list(&self, alarm: i32) -> Vec<AlarmMember> {
        let l = self.list.read().map(|l| l.clone()).unwrap_or_default();
        l.into_iter()
            .filter(|a| alarm == AlarmType::None as i32 || a.alarm == alarm)
            .collect()
    }

    /// Applies `req` (at the applied position `applied`): raises, clears
    /// or lists, with etcd's answers (a raise or clear answers the alarm
    /// it changed, nothing if it changed nothing).
    pub fn apply(
        &self,
        req: &AlarmRequest,
        store: &Store,
        applied: &[u8],
    ) -> io::Result<AlarmResponse> {
        let mut list = self.list(AlarmType::None as i32);
        let this = AlarmMember {
            member_id: req.member_id,
            alarm: req.alarm,
        };
        let changed = match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => {
                store.record_applied(applied).map_err(io::Error::other)?;
                return Ok(AlarmResponse {
                    header: None,
                    alarms: self.list(req.alarm),
                });
            }
            Ok(AlarmAction::Activate) => {
                if req.alarm == AlarmType::None as i32 || list.contains(&this) {
                    None
                } else {
                    list.push(this);
                    Some(this)
                }
            }
            Ok(AlarmAction::Deactivate) => {
                let before = list.len();
                list.retain(|a| *a != this);
                (list.len() < before).then_some(this)
            }
            Err(_) => None,
        };
        if changed.is_some() {
            let raw = AlarmResponse {
                header: None,
                alarms: list.clone(),
            }
            .encode_to_vec();
            store
                .put_owned(Owned::Alarms, Bytes::from(raw), applied)
                .map_err(io::Error::other)?;
            self.set(list);
        } else {
            store.record_applied(applied).map_err(io::Error::other)?;
        }
        Ok(AlarmResponse {
            header: None,
            alarms: changed.into_iter().collect(),
        })
    }
}

/// Whether CORRUPT refuses `cmd` (etcd's rule: every kv call, compaction,
/// lease grant and revoke; alarms, auth and lease checkpoints go on).
pub fn corrupt_refuses(cmd: &cairnpb::Command) -> bool {
    matches!(
        cmd.op,
        Some(
            Op::Put(_)
                | Op::DeleteRange(_)
                | Op::Txn(_)
                | Op::Batch(_)
                | Op::Compact(_)
                | Op::LeaseGrant(_)
                | Op::LeaseRevoke(_)
        )
    )
}

/// Whether `cmd` adds data: what NOSPACE refuses (etcd's rule: puts, txns
/// with a put in either branch, lease grants; deletes and compactions
/// free space and go on).
pub fn adds_data(cmd: &cairnpb::Command) -> bool {
    fn txn(t: &TxnRequest) -> bool {
        t.success
            .iter()
            .chain(&t.failure)
            .any(|op| match &op.request {
                Some(Request::RequestPut(_)) => true,
                Some(Request::RequestTxn(t)) => txn(t),
                _ => false,
            })
    }
    match &cmd.op {
        Some(Op::Put(_) | Op::LeaseGrant(_)) => true,
        Some(Op::Txn(t)) => txn(t),
        Some(Op::Batch(b)) => b.commands.iter().any(adds_data),
        _ => false,
    }
}

/// This member's space quota: its store's size, sampled in the
/// background, against `--quota-backend-bytes`.
pub struct Quota {
    /// The quota in bytes.
    pub bytes: u64,
    size: AtomicU64,
    /// Whether this member has proposed NOSPACE and not seen it applied.
    raising: AtomicBool,
}

impl Quota {
    /// A quota of `bytes` (0: etcd's default).
    pub fn new(bytes: u64) -> Quota {
        Quota {
            bytes: if bytes == 0 {
                DEFAULT_QUOTA_BYTES
            } else {
                bytes
            },
            size: AtomicU64::new(0),
            raising: AtomicBool::new(false),
        }
    }

    /// Records the store's size as last measured.
    pub fn sampled(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }

    /// The store's size as last measured.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Whether a write of `cost` bytes would go over the quota.
    pub fn exceeded_by(&self, cost: u64) -> bool {
        self.size().saturating_add(cost) > self.bytes
    }

    /// Admits a write of `cost` bytes unless it would go over the quota;
    /// an admitted write counts in the size until the next measurement,
    /// so writes between two measurements cannot pass the quota
    /// together.
    pub fn admit(&self, cost: u64) -> bool {
        if self.exceeded_by(cost) {
            return false;
        }
        self.size.fetch_add(cost, Ordering::AcqRel);
        true
    }

    /// Whether this call is the one to propose NOSPACE (the first since
    /// the last [`Quota::raised`]).
    pub fn start_raising(&self) -> bool {
        !self.raising.swap(true, Ordering::AcqRel)
    }

    /// NOSPACE was applied (or could not be proposed): a later excess
    /// proposes it again.
    pub fn raised(&self) {
        self.raising.store(false, Ordering::Release);
    }
}

/// The data dir's disk: its free space, sampled often, against
/// `--disk-reserve-bytes`. Below the reserve this member raises NOSPACE
/// (so every member refuses writes that add data, before a write finds
/// the disk full and the store must stop); with twice the reserve free
/// again it clears the NOSPACE it raised. A NOSPACE raised for the quota,
/// or before a restart, waits for an operator, as in etcd.
pub struct DiskRoom {
    /// The reserve in bytes (0: no check).
    pub reserve: u64,
    /// Free bytes as last sampled, less what writes accepted since may
    /// take (u64::MAX until the first sample).
    free: AtomicU64,
    /// Whether NOSPACE is raised because of this disk, by this member.
    raised: AtomicBool,
}

impl DiskRoom {
    /// A reserve of `reserve` bytes.
    pub fn new(reserve: u64) -> DiskRoom {
        DiskRoom {
            reserve,
            free: AtomicU64::new(u64::MAX),
            raised: AtomicBool::new(false),
        }
    }

    /// Records the free space as measured.
    pub fn sampled(&self, free: u64) {
        self.free.store(free, Ordering::Release);
    }

    /// Free bytes as last known.
    pub fn free(&self) -> u64 {
        self.free.load(Ordering::Acquire)
    }

    /// Counts `bytes` a write accepted may take before the next sample.
    pub fn spend(&self, bytes: u64) {
        let _ = self
            .free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| {
                Some(f.saturating_sub(bytes))
            });
    }

    /// Whether the free space is under the reserve.
    pub fn low(&self) -> bool {
        self.reserve > 0 && self.free() < self.reserve
    }

    /// Whether there is room again: twice the reserve free.
    pub fn roomy(&self) -> bool {
        self.free() >= self.reserve.saturating_mul(2)
    }

    /// Whether this member raised NOSPACE for its disk.
    pub fn raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    /// Records that this member raised (true) or cleared (false) it.
    pub fn set_raised(&self, raised: bool) {
        self.raised.store(raised, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::etcdserverpb::{PutRequest, RequestOp};

    fn req(action: AlarmAction, member: u64, alarm: AlarmType) -> AlarmRequest {
        AlarmRequest {
            action: action as i32,
            member_id: member,
            alarm: alarm as i32,
        }
    }

    #[test]
    fn raise_clear_list_and_reload() {
        let store = Store::open_temporary().expect("store");
        let alarms = Alarms::open(&store).expect("alarms");
        assert!(!alarms.nospace());
        let r = alarms
            .apply(
                &req(AlarmAction::Activate, 7, AlarmType::Nospace),
                &store,
                b"p1",
            )
            .expect("raise");
        assert_eq!(r.alarms.len(), 1);
        assert!(alarms.nospace());
        // Raising it again changes nothing and answers nothing.
        let r = alarms
            .apply(
                &req(AlarmAction::Activate, 7, AlarmType::Nospace),
                &store,
                b"p2",
            )
            .expect("raise again");
        assert!(r.alarms.is_empty());
        alarms
            .apply(
                &req(AlarmAction::Activate, 8, AlarmType::Corrupt),
                &store,
                b"p3",
            )
            .expect("corrupt");
        let all = alarms
            .apply(&req(AlarmAction::Get, 0, AlarmType::None), &store, b"p4")
            .expect("get");
        assert_eq!(all.alarms.len(), 2);
        assert_eq!(store.applied().as_deref(), Some(&b"p4"[..]));
        assert_eq!(alarms.list(AlarmType::Corrupt as i32).len(), 1);
        // Kept in the store: a reopened member sees them.
        let again = Alarms::open(&store).expect("reload");
        assert!(again.nospace());
        assert_eq!(again.list(AlarmType::None as i32).len(), 2);
        let r = alarms
            .apply(
                &req(AlarmAction::Deactivate, 7, AlarmType::Nospace),
                &store,
                b"p5",
            )
            .expect("clear");
        assert_eq!(r.alarms.len(), 1);
        assert!(!alarms.nospace());
        assert_eq!(store.applied().as_deref(), Some(&b"p5"[..]));
    }

    #[test]
    fn what_nospace_refuses() {
        let put = cairnpb::Command {
            op: Some(Op::Put(PutRequest::default())),
            user: None,
        };
        assert!(adds_data(&put));
        let nested_put = TxnRequest {
            failure: vec![RequestOp {
                request: Some(Request::RequestTxn(TxnRequest {
                    success: vec![RequestOp {
                        request: Some(Request::RequestPut(PutRequest::default())),
                    }],
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        let txn = cairnpb::Command {
            op: Some(Op::Txn(nested_put)),
            user: None,
        };
        assert!(adds_data(&txn));
        let deletes_only = cairnpb::Command {
            op: Some(Op::Txn(TxnRequest::default())),
            user: None,
        };
        assert!(!adds_data(&deletes_only));
    }
}
