//! The watch hub: applied events, published for watchers.
//!
//! Events come from the state machine as each write is applied (through
//! [`crate::raft::apply::ApplyObserver`]): one [`RevEvents`] per
//! revision, broadcast on a bounded channel. Each gRPC stream is served by
//! one task (`crate::grpc::watch_stream`) holding all its watchers: those
//! caught up (*synced*) take each revision from the broadcast as it
//! arrives; those behind — starting in the past, or after a gap (the
//! broadcast overflowed, or a snapshot was installed) — read history from
//! the store ([`cairn_kv::Store::history`]) until they reach it. So writes
//! never wait for watchers, memory stays bounded, and a slow client slows
//! only its own stream. Every revision that changed the store has at
//! least one event, so a jump in revisions is a gap.
//!
//! Modules: [`filter`] (what a watcher selects). This module knows
//! nothing of Raft or gRPC.

pub mod filter;

use std::sync::Arc;

use cairn_kv as kv;
use tokio::sync::broadcast;

/// The events of one applied revision.
#[derive(Debug)]
pub struct RevEvents {
    /// The revision.
    pub revision: i64,
    /// As the write produced them: most without `prev_kv` (see
    /// [`kv::Event`]); for a revoke, built from `deferred` when first
    /// asked for.
    events: std::sync::OnceLock<Vec<kv::Event>>,
    deferred: Option<kv::RevokedKeys>,
    /// The same events with every `prev_kv` read, by the first watcher
    /// that needs them, for all.
    with_prev: tokio::sync::OnceCell<Result<Arc<Vec<kv::Event>>, Arc<kv::Error>>>,
}

impl RevEvents {
    /// A revision's events as the write produced them.
    pub fn new(revision: i64, events: Vec<kv::Event>) -> Self {
        Self {
            revision,
            events: std::sync::OnceLock::from(events),
            deferred: None,
            with_prev: tokio::sync::OnceCell::new(),
        }
    }

    /// A revoke's events, built by the first reader.
    pub fn deferred(revision: i64, deleted: kv::RevokedKeys) -> Self {
        Self {
            revision,
            events: std::sync::OnceLock::new(),
            deferred: Some(deleted),
            with_prev: tokio::sync::OnceCell::new(),
        }
    }

    /// The events, in order.
    pub fn events(&self) -> &[kv::Event] {
        self.events.get_or_init(|| {
            self.deferred
                .as_ref()
                .map(kv::RevokedKeys::events)
                .unwrap_or_default()
        })
    }

    /// The events with `prev_kv` filled in, read from `store` once.
    pub async fn with_prev_kv(
        &self,
        store: &Arc<kv::Store>,
    ) -> Result<Arc<Vec<kv::Event>>, Arc<kv::Error>> {
        self.with_prev
            .get_or_init(|| async {
                let store = Arc::clone(store);
                let mut events = self.events().to_vec();
                let read = tokio::task::spawn_blocking(move || {
                    store.fill_prev_kv(&mut events).map(|()| events)
                })
                .await;
                match read {
                    Ok(Ok(events)) => Ok(Arc::new(events)),
                    Ok(Err(e)) => Err(Arc::new(e)),
                    Err(e) => Err(Arc::new(kv::Error::Backend(Box::new(e)))),
                }
            })
            .await
            .clone()
    }
}

/// Where applied events are published.
pub type EventSender = broadcast::Sender<Arc<RevEvents>>;

/// Revisions kept for watchers that are briefly behind; further behind,
/// they read history.
pub const BROADCAST_REVISIONS: usize = 4096;

/// Publishes applied revisions on the broadcast.
pub fn publish(tx: &EventSender, revision: i64, events: Vec<kv::Event>) {
    // No receivers is fine: nobody watches.
    let _ = tx.send(Arc::new(RevEvents::new(revision, events)));
}

/// Publishes a revoke's events, to be built by the first watcher that
/// looks at them.
pub fn publish_revoke(tx: &EventSender, revision: i64, deleted: kv::RevokedKeys) {
    if !deleted.is_empty() {
        let _ = tx.send(Arc::new(RevEvents::deferred(revision, deleted)));
    }
}
