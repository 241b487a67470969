//! The store's lease calls: grant, revoke (all attached keys deleted in
//! one revision, the index catching up later: `crate::revoke`),
//! checkpoint, and the queries over the lease table ([`crate::lease`]).

use crate::backend::{Backend, WriteBatch};
use crate::error::{Error, Result};
use crate::lease::*;
use crate::record::{self, Meta, Record};
use crate::request::Applied;
use crate::revision::Revision;
use crate::revoke::PendingRevoke;
use crate::revoker;
use crate::store::Store;
use bytes::Bytes;
use std::collections::BTreeMap;

impl<B: Backend> Store<B> {
    /// Grants lease `id` (≠ 0) with `ttl` seconds. Fails with
    /// [`Error::LeaseExists`] if the id is taken. Changes no revision.
    pub fn lease_grant(&self, id: i64, ttl: i64, applied: &[u8]) -> Result<()> {
        let inner = self.inner();
        inner.check()?;
        if id == 0 {
            return Err(Error::LeaseNotFound);
        }
        let mut st = inner.write_state()?;
        if st.leases.contains_key(&id) {
            return Err(Error::LeaseExists);
        }
        let applied = Bytes::copy_from_slice(applied);
        let mut batch = WriteBatch::new();
        batch.put(lease_key(id), encode(ttl, 0));
        batch.put(Meta::Applied.key(), applied.clone());
        inner.guard(inner.backend.write(batch).map_err(Error::Backend))?;
        st.leases.insert(
            id,
            LeaseEntry {
                ttl,
                remaining_ttl: 0,
                keys: BTreeMap::new(),
            },
        );
        st.applied = Some(applied);
        Ok(())
    }

    /// Revokes lease `id`: deletes every key attached to it in one revision
    /// (key order) and forgets the lease. The response is the number of keys
    /// deleted. Fails with [`Error::LeaseNotFound`] for an unknown lease.
    pub fn lease_revoke(&self, id: i64, applied: &[u8]) -> Result<Applied<i64>> {
        let r = self.lease_revoke_deferred(id, applied)?;
        Ok(Applied {
            response: r.deleted.len() as i64,
            events: r.deleted.events(),
            revision: r.revision,
        })
    }

    /// [`Store::lease_revoke`] leaving the DELETE events to be built later
    /// ([`RevokedKeys::events`]), by whoever needs them, off the writer's
    /// path.
    ///
    /// The tombstones (one run) are made from the lease's own key map and
    /// the key index catches up afterwards, in bounded steps (see
    /// `crate::revoke`): the revoke holds the store for a copy of each key,
    /// not an index update per key.
    pub fn lease_revoke_deferred(&self, id: i64, applied: &[u8]) -> Result<Revoked> {
        let inner = self.inner();
        inner.check()?;
        let mut st = inner.write_state()?;
        let Some(lease) = st.leases.get(&id) else {
            return Err(Error::LeaseNotFound);
        };
        let rev = st.current + 1;
        let n = lease.keys.len();
        let run = Record::encode_tombstones(lease.keys.keys());
        let deleted = RevokedKeys {
            revision: rev,
            run: run.clone(),
            prev: lease.keys.values().copied().collect(),
        };
        let mut batch = WriteBatch::new();
        let first = record::record_key(Revision::new(rev, 0));
        match lease.keys.keys().next() {
            None => {}
            Some(one) if n == 1 => batch.put(first, Record::Tombstone(one.clone()).encode()),
            Some(_) => batch.put(first, run),
        }
        if n > 0 {
            batch.put(Meta::Current.key(), record::encode_i64(rev));
        }
        batch.delete(lease_key(id));
        let applied = Bytes::copy_from_slice(applied);
        batch.put(Meta::Applied.key(), applied.clone());
        // Nothing in memory changed yet: a failed write leaves it as is.
        inner.guard(inner.backend.write(batch).map_err(Error::Backend))?;
        let lease = st.leases.remove(&id);
        if let Some(lease) = lease.filter(|_| n > 0) {
            st.current = rev;
            st.revokes.push_back(PendingRevoke {
                rev,
                keys: lease.keys,
                next_sub: 0,
            });
        }
        st.applied = Some(applied);
        let revision = st.current;
        drop(st);
        if n > 0 {
            revoker::kick(inner);
        }
        Ok(Revoked { revision, deleted })
    }

    /// Records the remaining TTLs of leases (id, seconds; 0 clears a
    /// checkpoint). Unknown ids are skipped. Changes no revision.
    pub fn lease_checkpoint(&self, checkpoints: &[(i64, i64)], applied: &[u8]) -> Result<()> {
        let inner = self.inner();
        inner.check()?;
        let mut st = inner.write_state()?;
        let applied = Bytes::copy_from_slice(applied);
        let mut batch = WriteBatch::new();
        for (id, remaining) in checkpoints {
            if let Some(l) = st.leases.get(id) {
                batch.put(lease_key(*id), encode(l.ttl, *remaining));
            }
        }
        batch.put(Meta::Applied.key(), applied.clone());
        inner.guard(inner.backend.write(batch).map_err(Error::Backend))?;
        for (id, remaining) in checkpoints {
            if let Some(l) = st.leases.get_mut(id) {
                l.remaining_ttl = *remaining;
            }
        }
        st.applied = Some(applied);
        Ok(())
    }

    /// Lease `id`, if it exists.
    pub fn lease(&self, id: i64) -> Option<Lease> {
        let st = self.inner().read_state().ok()?;
        st.leases.get(&id).map(|l| Lease {
            id,
            ttl: l.ttl,
            remaining_ttl: l.remaining_ttl,
        })
    }

    /// The keys attached to lease `id`, in key order (empty if unknown).
    pub fn lease_keys(&self, id: i64) -> Vec<Bytes> {
        self.inner()
            .read_state()
            .ok()
            .and_then(|st| st.leases.get(&id).map(|l| l.keys.keys().cloned().collect()))
            .unwrap_or_default()
    }

    /// Every lease, by id.
    pub fn leases(&self) -> Vec<Lease> {
        self.inner()
            .read_state()
            .map(|st| {
                st.leases
                    .iter()
                    .map(|(id, l)| Lease {
                        id: *id,
                        ttl: l.ttl,
                        remaining_ttl: l.remaining_ttl,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
