//! The lease table: which leases exist, their TTLs and the keys attached.
//! (The store's lease calls — grant, revoke, checkpoint, queries — are
//! `crate::lease_ops`.)
//!
//! A lease is granted with an id and a TTL in seconds. A put naming a lease
//! attaches its key; a put naming another lease (or none) and a delete
//! detach it. Revoking a lease deletes every key attached to it in ONE
//! revision, in key order, producing DELETE events — the only change to the
//! key space a lease makes. The store does not keep time: deciding that a
//! lease expired is the owner's job (for Cairn, the Raft leader's lessor,
//! which then proposes a revoke).
//!
//! # Layout and durability
//!
//! A lease is one backend entry (see [`crate::record`]):
//!
//! ```text
//! key:   'l' | id i64 BE (8 B)
//! value: ttl i64 BE | remaining_ttl i64 BE
//! ```
//!
//! `remaining_ttl` is the last checkpointed remaining TTL (0 = none: the
//! lease has its whole TTL). Grants, revokes and checkpoints are written in
//! the same atomic batch as the applied position (and, for a revoke, the
//! tombstones of its keys), like every other write. Which keys a lease
//! holds is not stored separately: opening the store derives it from the
//! latest record of each live key.
//!
//! A revoke is durable and visible with its batch; only the in-memory key
//! index lags behind it for a while (see `crate::revoke`). A crash in
//! that window loses nothing: the index is rebuilt from the records,
//! tombstones included.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::record::Record;
use crate::request::{Event, EventKind, KeyValue};
use crate::revision::Revision;

/// Prefix of lease entries.
pub const LEASE_PREFIX: u8 = b'l';

/// A lease as the store keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lease {
    /// The lease id (never 0).
    pub id: i64,
    /// The granted TTL in seconds.
    pub ttl: i64,
    /// The last checkpointed remaining TTL in seconds; 0 = not checkpointed.
    pub remaining_ttl: i64,
}

/// A lease and the keys attached to it, in memory.
#[derive(Clone, Debug, Default)]
pub(crate) struct LeaseEntry {
    pub(crate) ttl: i64,
    pub(crate) remaining_ttl: i64,
    /// Attached key → revision of its latest put (the one that attached
    /// it): a revoke's events name it without asking the index.
    pub(crate) keys: BTreeMap<Bytes, Revision>,
}

/// What [`crate::Store::lease_revoke_deferred`] did.
#[derive(Clone, Debug)]
pub struct Revoked {
    /// The store revision after the revoke (unchanged if no key was
    /// attached).
    pub revision: i64,
    /// The keys deleted, all at `revision`.
    pub deleted: RevokedKeys,
}

/// The keys one revoke deleted, in key order, and where their DELETE
/// events come from: the revoke's tombstone run (keys are slices of it)
/// and the revision of each key's last put.
#[derive(Clone, Debug)]
pub struct RevokedKeys {
    pub(crate) revision: i64,
    /// The tombstone run as stored (see [`crate::record`]).
    pub(crate) run: Bytes,
    pub(crate) prev: Vec<Revision>,
}

impl RevokedKeys {
    /// Number of keys deleted.
    pub fn len(&self) -> usize {
        self.prev.len()
    }

    /// True when the revoke deleted nothing.
    pub fn is_empty(&self) -> bool {
        self.prev.is_empty()
    }

    /// The revoke's DELETE events, in key order (without `prev_kv`; see
    /// [`Event::needs_prev_kv`]). Each key shares the run's one buffer.
    pub fn events(&self) -> Vec<Event> {
        let mut events = Vec::with_capacity(self.prev.len());
        if self.prev.is_empty() {
            return events;
        }
        let mut prev = self.prev.iter().copied();
        // The run was encoded by the revoke itself, from the keys `prev`
        // was collected with: it decodes, one key per revision.
        let _ = Record::decode_each(Revision::new(self.revision, 0), &self.run, |_, rec| {
            events.push(Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: rec.key().clone(),
                    mod_revision: self.revision,
                    ..Default::default()
                },
                prev_kv: None,
                prev_revision: prev.next(),
            });
            Ok(())
        });
        events
    }
}

/// The lease table in memory.
pub(crate) type Leases = BTreeMap<i64, LeaseEntry>;

/// Live key → the lease it is attached to (keys without a lease are not
/// in it).
pub(crate) type KeyLeases = std::collections::HashMap<Bytes, i64>;

/// Backend key of lease `id`.
pub fn lease_key(id: i64) -> Bytes {
    let mut k = BytesMut::with_capacity(9);
    k.put_u8(LEASE_PREFIX);
    k.put_i64(id);
    k.freeze()
}

/// Encodes a lease entry's value.
pub(crate) fn encode(ttl: i64, remaining_ttl: i64) -> Bytes {
    let mut v = BytesMut::with_capacity(16);
    v.put_i64(ttl);
    v.put_i64(remaining_ttl);
    v.freeze()
}

/// Decodes a lease entry.
pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<Lease> {
    let corrupt = |reason: &str| Error::Corrupt {
        location: format!("lease entry {key:?}"),
        reason: reason.into(),
    };
    let id: [u8; 8] = key
        .get(1..)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("bad key length"))?;
    if value.len() != 16 {
        return Err(corrupt("bad value length"));
    }
    let field = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&value[i * 8..i * 8 + 8]);
        i64::from_be_bytes(a)
    };
    Ok(Lease {
        id: i64::from_be_bytes(id),
        ttl: field(0),
        remaining_ttl: field(1),
    })
}

/// True for a backend key of the lease table.
pub(crate) fn is_lease_key(key: &[u8]) -> bool {
    key.len() == 9 && key[0] == LEASE_PREFIX
}

/// Reads the lease table (without keys) from the backend.
pub(crate) fn load<B: Backend>(backend: &B) -> Result<Leases> {
    let mut leases = Leases::new();
    for item in backend.scan(&[LEASE_PREFIX], &[LEASE_PREFIX + 1]) {
        let (k, v) = item.map_err(Error::Backend)?;
        let l = decode(&k, &v)?;
        leases.insert(
            l.id,
            LeaseEntry {
                ttl: l.ttl,
                remaining_ttl: l.remaining_ttl,
                keys: BTreeMap::new(),
            },
        );
    }
    Ok(leases)
}

/// Moves keys between leases as `events` say (in order; the events of ONE
/// revision, so an event's position is its sub-revision). `key_lease`
/// maps each live key attached to a lease to that lease (the reverse of
/// the leases' key sets), so a write learns a key's old lease without
/// reading its previous value.
pub(crate) fn track(leases: &mut Leases, key_lease: &mut KeyLeases, events: &[Event]) {
    for (sub, ev) in events.iter().enumerate() {
        let attach = ev.kind == EventKind::Put && ev.kv.lease != 0;
        // The event's key is the index's (see `WriteTxn::put`): cloning
        // shares it.
        let old = if attach {
            key_lease.insert(ev.kv.key.clone(), ev.kv.lease)
        } else {
            key_lease.remove(&ev.kv.key)
        };
        if let Some(old) = old {
            if let Some(l) = leases.get_mut(&old) {
                l.keys.remove(&ev.kv.key);
            }
        }
        if attach {
            if let Some(l) = leases.get_mut(&ev.kv.lease) {
                let at = Revision::new(ev.kv.mod_revision, sub as i64);
                l.keys.insert(ev.kv.key.clone(), at);
            }
        }
    }
}

/// Attaches keys to their leases on open, from each key's latest lease
/// (`key_lease`: key → lease of its latest put); returns the key → lease
/// map of the keys attached. `live_key` gives, for a key that is live, the
/// index's own copy of it and the revision of its latest put.
pub(crate) fn attach(
    leases: &mut Leases,
    key_lease: BTreeMap<Bytes, i64>,
    live_key: impl Fn(&Bytes) -> Option<(Bytes, Revision)>,
) -> KeyLeases {
    let mut attached = KeyLeases::new();
    for (key, id) in key_lease {
        if let Some(l) = leases.get_mut(&id) {
            if let Some((key, at)) = live_key(&key) {
                l.keys.insert(key.clone(), at);
                attached.insert(key, id);
            }
        }
    }
    attached
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        for id in [1, -5, i64::MAX] {
            let k = lease_key(id);
            assert!(is_lease_key(&k));
            let l = decode(&k, &encode(60, 17)).unwrap();
            assert_eq!(
                l,
                Lease {
                    id,
                    ttl: 60,
                    remaining_ttl: 17
                }
            );
        }
        assert!(decode(&lease_key(1), &[0; 15]).is_err());
        assert!(decode(b"l1", &[0; 16]).is_err());
        assert!(!is_lease_key(&crate::record::record_key(
            crate::Revision::new(1, 0)
        )));
    }
}
