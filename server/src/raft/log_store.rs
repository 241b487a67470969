//! openraft's `RaftLogStorage` over `cairn-raft-log`.
//!
//! Each openraft entry is stored whole (postcard-encoded) as the payload of
//! a raft-log entry with the same index and term. The vote is stored as
//! opaque bytes in raft-log's `meta`, durable before `save_vote` returns;
//! appends complete their `IOFlushed` callback from raft-log's group commit,
//! once fdatasynced. Calls that fsync on the caller's thread (vote,
//! truncate, purge) run on tokio's blocking pool.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

use cairn_raft_log::{Options, RaftLog};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{EntryPayload, Membership, RaftLogReader};

use super::{decode, encode, Entry, LogId, Member, TypeConfig, Vote};

/// The Raft log of one member.
#[derive(Clone)]
pub struct LogStore {
    log: Arc<RaftLog>,
}

fn io_err(e: cairn_raft_log::Error) -> io::Error {
    io::Error::other(e)
}

fn to_raft_log(id: &LogId) -> cairn_raft_log::LogId {
    cairn_raft_log::LogId {
        index: id.index,
        term: id.leader_id.term,
    }
}

fn from_raft_log(id: cairn_raft_log::LogId) -> LogId {
    LogId::new_term_index(id.term, id.index)
}

impl LogStore {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path) -> Result<Self, cairn_raft_log::Error> {
        Self::open_with(dir, None)
    }

    /// [`LogStore::open`], telling `on_sync` how long each fsync took.
    pub fn open_with(
        dir: &Path,
        on_sync: Option<cairn_raft_log::SyncObserver>,
    ) -> Result<Self, cairn_raft_log::Error> {
        let opts = Options {
            on_sync,
            ..Options::default()
        };
        Ok(Self {
            log: Arc::new(RaftLog::open(dir, opts)?),
        })
    }

    /// Appends a membership entry of `members` at `log_id` and marks it
    /// committed, durably, while no Raft runs over the log: the first
    /// entry of a member restored from a backup, or the entry that makes
    /// a forced new cluster. Every entry after `log_id.index - 1` is
    /// removed first.
    pub fn commit_membership(
        &self,
        log_id: LogId,
        members: &BTreeMap<u64, Member>,
    ) -> io::Result<()> {
        let voters: BTreeSet<u64> = members
            .iter()
            .filter(|(_, m)| !m.learner)
            .map(|(id, _)| *id)
            .collect();
        let membership =
            Membership::new(vec![voters], members.clone()).map_err(io::Error::other)?;
        let entry = Entry {
            log_id,
            payload: EntryPayload::Membership(membership),
        };
        let index = log_id.index;
        match index.checked_sub(1) {
            Some(prev) if self.log.last_log_id().is_some_and(|l| l.index > prev) => {
                self.log.truncate_after(prev).map_err(io_err)?
            }
            None if !self.log.is_empty() => self.log.truncate_all().map_err(io_err)?,
            _ => {}
        }
        self.log
            .append(vec![cairn_raft_log::Entry {
                index,
                term: log_id.leader_id.term,
                payload: encode(&entry)?.into(),
            }])
            .map_err(io_err)?;
        self.log.save_committed(index).map_err(io_err)?;
        self.log.sync().map_err(io_err)
    }

    /// The last membership in the log up to `upto` (inclusive), if any.
    pub fn last_membership(&self, upto: u64) -> io::Result<Option<Membership<u64, Member>>> {
        let entries = self
            .log
            .entries(self.log.first_index()..=upto)
            .map_err(io_err)?;
        let mut found = None;
        for raw in entries {
            if let EntryPayload::Membership(m) = decode::<Entry>(&raw.payload)?.payload {
                found = Some(m);
            }
        }
        Ok(found)
    }

    /// The underlying log (for metrics).
    pub fn raft_log(&self) -> &Arc<RaftLog> {
        &self.log
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&RaftLog) -> Result<T, cairn_raft_log::Error> + Send + 'static,
    ) -> io::Result<T> {
        let log = Arc::clone(&self.log);
        tokio::task::spawn_blocking(move || f(&log))
            .await
            .map_err(io::Error::other)?
            .map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        // What was just appended is still cached: no blocking hop for it.
        let raw = match self.log.cached_entries((start, end)).map_err(io_err)? {
            Some(raw) => raw,
            None => self.blocking(move |log| log.entries((start, end))).await?,
        };
        raw.iter().map(|e| decode::<Entry>(&e.payload)).collect()
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.log.vote().map(|v| decode(&v)).transpose()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        Ok(LogState {
            last_purged_log_id: self.log.purged().map(from_raft_log),
            last_log_id: self.log.last_log_id().map(from_raft_log),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let raw = encode(vote)?;
        self.blocking(move |log| log.save_vote(&raw)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        if let Some(c) = committed {
            self.log.save_committed(c.index).map_err(io_err)?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        let Some(index) = self.log.committed() else {
            return Ok(None);
        };
        // Only the index is stored; the term comes from the log (or the
        // purge point). If neither knows it, report nothing: safe.
        if let Some(term) = self.log.term(index) {
            return Ok(Some(LogId::new_term_index(term, index)));
        }
        Ok(self
            .log
            .purged()
            .filter(|p| p.index == index)
            .map(from_raft_log))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = Vec::new();
        for e in entries {
            batch.push(cairn_raft_log::Entry {
                index: e.log_id.index,
                term: e.log_id.leader_id.term,
                payload: encode(&e)?.into(),
            });
        }
        self.log
            .append_with(batch, move |r| callback.io_completed(r.map_err(io_err)))
            .map_err(io_err)
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> io::Result<()> {
        self.blocking(move |log| match last {
            Some(id) => log.truncate_after(id.index),
            None => log.truncate_all(),
        })
        .await
    }

    async fn purge(&mut self, upto: LogId) -> io::Result<()> {
        let id = to_raft_log(&upto);
        self.blocking(move |log| log.purge(id)).await
    }
}
