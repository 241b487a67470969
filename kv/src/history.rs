//! Reading the store's history as events, for watches that start in the
//! past or fall behind: every change with a main revision in a range, in
//! revision order, each naming the key's previous version; and reading
//! those previous versions for the watchers that want them.

use bytes::Bytes;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::record::{self, Record};
use crate::request::{Event, EventKind, KeyValue};
use crate::revision::Revision;
use crate::store::Store;
use crate::txn;

/// Events read from history.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Every event with `from <= main revision <= until`, in order; all
    /// events of one revision are included together.
    pub events: Vec<(i64, Event)>,
    /// The first revision not included (`until + 1` when complete).
    pub next: i64,
}

impl<B: Backend> Store<B> {
    /// The events of revisions `from..=until` (`until` capped at the
    /// current revision), stopping after the revision in which
    /// `max_events` is reached. Fails with [`Error::Compacted`] when
    /// `from` is below the compacted revision; from the compacted revision
    /// itself, its events are all there (physical compaction keeps its
    /// tombstones), as etcd serves them.
    pub fn history(&self, from: i64, until: i64, max_events: usize) -> Result<History> {
        self.history_within(from, until, max_events, usize::MAX)
    }

    /// [`Store::history`], also stopping after the revision in which the
    /// records read reach `max_bytes` (keys and values as stored), so a
    /// chunk of large values stays small: at most `max_bytes` and one
    /// revision's records (one request's, itself bounded).
    pub fn history_within(
        &self,
        from: i64,
        until: i64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<History> {
        let _reading = self.inner.reading()?;
        let (current, compacted) = {
            let st = self.inner.read_state()?;
            (st.current, st.compacted)
        };
        if from < compacted {
            return Err(Error::Compacted {
                requested: from,
                compacted,
            });
        }
        let until = until.min(current);
        let mut out = History {
            events: Vec::new(),
            next: from,
        };
        if from > until {
            return Ok(out);
        }
        let start = record::record_key(Revision::new(from, 0));
        let end = record::records_end_after(until);
        let mut last_main = None;
        let mut bytes = 0usize;
        for item in self.inner.backend.scan(&start, &end) {
            let (k, v) = self.inner.guard(item.map_err(Error::Backend))?;
            let rev = record::revision_of(&k)?;
            let full = out.events.len() >= max_events || bytes >= max_bytes;
            if full && last_main != Some(rev.main) {
                out.next = rev.main;
                return self.recheck(out, from);
            }
            last_main = Some(rev.main);
            bytes = bytes.saturating_add(k.len() + v.len());
            Record::decode_each(rev, &v, |rev, rec| {
                let (kind, kv) = match rec {
                    Record::Put(kv) => (EventKind::Put, kv),
                    Record::Tombstone(key) => (
                        EventKind::Delete,
                        KeyValue {
                            key,
                            mod_revision: rev.main,
                            ..Default::default()
                        },
                    ),
                };
                // A PUT that creates the key (again) has no previous
                // version to show, as in etcd, even when an older
                // generation of the key lies before its tombstone.
                let creates = kind == EventKind::Put && kv.create_revision == kv.mod_revision;
                // At the compacted revision the version before is gone, as
                // etcd's read of it fails: no `prev_kv` either.
                let prev_revision = if creates || rev.main <= compacted {
                    None
                } else {
                    self.version_before(&kv.key, rev.main)?
                };
                out.events.push((
                    rev.main,
                    Event {
                        kind,
                        kv,
                        prev_kv: None,
                        prev_revision,
                    },
                ));
                Ok(())
            })?;
        }
        out.next = until + 1;
        self.recheck(out, from)
    }

    /// The revision of the key's record just before revision `main`, if
    /// the key existed then.
    fn version_before(&self, key: &Bytes, main: i64) -> Result<Option<Revision>> {
        let st = self.inner.read_state()?;
        Ok(st
            .index
            .get(key)
            .and_then(|ki| ki.get(main - 1))
            .map(|at| at.modified))
    }

    /// Reads `prev_kv` of every event that lacks it (see [`Event`]). Fails
    /// with [`Error::Compacted`] when a compaction removed a previous
    /// version meanwhile (only possible for events at or below the
    /// compacted revision: the newest version before any later revision is
    /// always kept).
    pub fn fill_prev_kv(&self, events: &mut [Event]) -> Result<()> {
        let _reading = self.inner.reading()?;
        for e in events.iter_mut() {
            let Some(at) = e.prev_revision.filter(|_| e.prev_kv.is_none()) else {
                continue;
            };
            match txn::fetch_put(&self.inner.backend, at) {
                Ok(kv) => e.prev_kv = Some(Box::new(kv)),
                Err(err) => {
                    let compacted = self.inner.read_state()?.compacted;
                    if e.kv.mod_revision <= compacted {
                        return Err(Error::Compacted {
                            requested: e.kv.mod_revision,
                            compacted,
                        });
                    }
                    return self.inner.guard(Err(err));
                }
            }
        }
        Ok(())
    }

    /// A compaction that overtook the read may have cut what was read.
    fn recheck(&self, out: History, from: i64) -> Result<History> {
        let compacted = self.inner.read_state()?.compacted;
        if from < compacted {
            return Err(Error::Compacted {
                requested: from,
                compacted,
            });
        }
        Ok(out)
    }
}
