//! [`ApplyObserver`]: what the state machine tells the rest of the member
//! about each entry it applies. Watches (the events of each revision) and
//! the lessor (grants and revokes) subscribe here; the state machine knows
//! neither.

use cairn_kv as kv;

/// Told, in log order and on the state machine's task, what was applied.
/// Calls must be quick (they hold up the applies behind them): hand the
/// data on, do not work on it.
pub trait ApplyObserver: Send + Sync + 'static {
    /// A kv write applied at `revision` produced `events` (never empty).
    fn revision_applied(&self, revision: i64, events: Vec<kv::Event>);

    /// Lease `id` was granted with `ttl` seconds.
    fn lease_granted(&self, id: i64, ttl: i64);

    /// Lease `id` was revoked at `revision`, deleting `deleted` (maybe
    /// none); its DELETE events are built from it when first needed.
    fn lease_revoked(&self, id: i64, revision: i64, deleted: kv::RevokedKeys);
}

/// An observer that wants nothing (a state machine on its own, as in the
/// storage conformance suite).
pub struct Unobserved;

impl ApplyObserver for Unobserved {
    fn revision_applied(&self, _revision: i64, _events: Vec<kv::Event>) {}
    fn lease_granted(&self, _id: i64, _ttl: i64) {}
    fn lease_revoked(&self, _id: i64, _revision: i64, _deleted: kv::RevokedKeys) {}
}
