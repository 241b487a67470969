//! The key index: for every key, the revisions at which it changed.
//!
//! A key's life is cut into *generations*: a generation starts with the put
//! that (re)creates the key and ends with the tombstone that deletes it. The
//! last generation is open (no tombstone yet) or empty (the key is deleted
//! now). Worked example:
//!
//! ```text
//! put(foo)@1.0  put(foo)@2.0  delete(foo)@3.0  put(foo)@4.0  put(foo)@5.0
//!
//! generations: {created 1.0, ver 3, revs [1.0, 2.0, 3.0(t)]}
//!              {created 4.0, ver 2, revs [4.0, 5.0]}
//! ```
//!
//! `get(foo, 2)` finds revision 2.0 (version 2), `get(foo, 3)` finds nothing
//! (deleted at 3), `get(foo, 4)` finds 4.0 (version 1, created 4).
//!
//! Compacting at revision `c` keeps, per key, the newest revision ≤ `c`
//! unless it is a tombstone, and everything after `c`. Compact at 4 leaves
//! `{created 4.0, ver 2, revs [4.0, 5.0]}`: the whole first generation goes,
//! its tombstone included. Compact at 2 leaves `{revs [2.0, 3.0(t)]}, {…}`.
//! A generation's `ver` counts every change ever made in it, compacted or
//! not, so versions stay right after compaction.
//!
//! The index lives in memory only; it is rebuilt from the backend's records
//! when a store opens (see [`crate::store`]).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::revision::Revision;

/// One life of a key, from creation to (optional) tombstone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Generation {
    /// Changes made in this generation (puts and the tombstone), compacted
    /// ones included.
    pub ver: i64,
    /// The revision that created the key in this generation.
    pub created: Revision,
    /// Revisions still held, ascending; a closed generation ends with its
    /// tombstone.
    pub revs: Vec<Revision>,
}

impl Generation {
    fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }
}

/// What the index knows about a key at one revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyAt {
    /// Revision of the record holding the key's value.
    pub modified: Revision,
    /// Revision that created the key's current generation.
    pub created: Revision,
    /// The key's version at that point.
    pub version: i64,
}

/// All generations of one key. Never holds zero generations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyIndex {
    generations: Vec<Generation>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyIndex {
    /// An index for a key that has never been written.
    pub fn new() -> Self {
        Self {
            generations: vec![Generation::default()],
        }
    }

    /// The generations, oldest first.
    pub fn generations(&self) -> &[Generation] {
        &self.generations
    }

    /// Newest revision held for the key, if any.
    pub fn last_revision(&self) -> Option<Revision> {
        self.generations
            .iter()
            .rev()
            .find_map(|g| g.revs.last().copied())
    }

    /// True when the key is live now (its last generation is open).
    pub fn is_live(&self) -> bool {
        self.generations.last().is_some_and(|g| !g.is_empty())
    }

    /// True when nothing is held for the key (it can be dropped).
    pub fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].is_empty()
    }

    /// Records a put at `rev`; `rev` must be newer than every held revision.
    pub fn put(&mut self, rev: Revision) {
        debug_assert!(self.last_revision().is_none_or(|last| rev > last));
        let g = self.open_generation();
        if g.revs.is_empty() {
            g.created = rev;
        }
        g.revs.push(rev);
        g.ver += 1;
    }

    /// Starts a generation from a record read back from disk, whose version
    /// and creation revision are known (older revisions may be compacted).
    pub fn restore(&mut self, created: Revision, modified: Revision, ver: i64) {
        let g = self.open_generation();
        if g.revs.is_empty() {
            g.created = created;
            g.ver = ver - 1;
        }
        g.revs.push(modified);
        g.ver += 1;
    }

    /// Records a delete at `rev`, closing the open generation. Returns false
    /// (and changes nothing) when the key is not live.
    pub fn tombstone(&mut self, rev: Revision) -> bool {
        if !self.is_live() {
            return false;
        }
        self.put(rev);
        self.generations.push(Generation::default());
        true
    }

    /// Reverts the latest [`KeyIndex::put`] (transaction rollback).
    pub fn undo_put(&mut self) {
        let g = self.open_generation();
        if g.revs.pop().is_some() {
            g.ver -= 1;
        }
    }

    /// Reverts the latest successful [`KeyIndex::tombstone`].
    pub fn undo_tombstone(&mut self) {
        if self.generations.len() > 1 && self.generations.last().is_some_and(Generation::is_empty) {
            self.generations.pop();
            self.undo_put();
        }
    }

    fn open_generation(&mut self) -> &mut Generation {
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        let last = self.generations.len() - 1;
        &mut self.generations[last]
    }

    /// The key as of revision `at` (main revision), or `None` when it did
    /// not exist then.
    pub fn get(&self, at: i64) -> Option<KeyAt> {
        let g = self.find_generation(at)?;
        let n = g.revs.iter().rposition(|r| r.main <= at)?;
        Some(KeyAt {
            modified: g.revs[n],
            created: g.created,
            version: g.ver - (g.revs.len() - n - 1) as i64,
        })
    }

    fn find_generation(&self, at: i64) -> Option<&Generation> {
        let last = self.generations.len() - 1;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let (Some(first), Some(newest)) = (g.revs.first(), g.revs.last()) else {
                continue;
            };
            if i != last && newest.main <= at {
                // Closed by a tombstone at or before `at`: deleted then.
                return None;
            }
            if first.main <= at {
                return Some(g);
            }
        }
        None
    }

    /// True when `rev` is still held for this key.
    pub fn contains(&self, rev: Revision) -> bool {
        self.generations
            .iter()
            .any(|g| g.revs.binary_search(&rev).is_ok())
    }

    /// Drops what compaction at `at` makes unreachable (see the module doc).
    pub fn compact(&mut self, at: i64) {
        let last = self.generations.len() - 1;
        // Skip generations whose tombstone is at or before `at`.
        let mut gi = 0;
        while gi < last {
            match self.generations[gi].revs.last() {
                Some(t) if t.main > at => break,
                _ => gi += 1,
            }
        }
        let g = &mut self.generations[gi];
        if let Some(n) = g.revs.iter().rposition(|r| r.main <= at) {
            g.revs.drain(..n);
        }
        self.generations.drain(..gi);
    }
}

/// Compacts every key's index at `rev`, dropping keys left with nothing.
pub(crate) fn compact_index(index: &mut BTreeMap<Bytes, KeyIndex>, rev: i64) {
    index.retain(|_, ki| {
        ki.compact(rev);
        !ki.is_empty()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// The module doc's example.
    fn example() -> KeyIndex {
        let mut ki = KeyIndex::new();
        ki.put(r(1));
        ki.put(r(2));
        assert!(ki.tombstone(r(3)));
        ki.put(r(4));
        ki.put(r(5));
        ki
    }

    #[test]
    fn get_walks_generations() {
        let ki = example();
        assert_eq!(ki.get(0), None);
        assert_eq!(
            ki.get(2),
            Some(KeyAt {
                modified: r(2),
                created: r(1),
                version: 2
            })
        );
        assert_eq!(ki.get(3), None);
        assert_eq!(
            ki.get(4),
            Some(KeyAt {
                modified: r(4),
                created: r(4),
                version: 1
            })
        );
        assert_eq!(ki.get(100).map(|k| k.version), Some(2));
    }

    #[test]
    fn tombstone_on_deleted_key_is_refused() {
        let mut ki = KeyIndex::new();
        assert!(!ki.tombstone(r(1)));
        ki.put(r(2));
        assert!(ki.tombstone(r(3)));
        assert!(!ki.tombstone(r(4)));
        assert!(!ki.is_live());
    }

    #[test]
    fn compact_keeps_newest_at_or_below() {
        let mut ki = example();
        ki.compact(2);
        assert_eq!(ki.generations()[0].revs, vec![r(2), r(3)]);
        assert_eq!(ki.get(2).map(|k| k.version), Some(2));
        assert!(!ki.contains(r(1)));

        let mut ki = example();
        ki.compact(4);
        assert_eq!(ki.generations().len(), 1);
        assert_eq!(ki.generations()[0].revs, vec![r(4), r(5)]);
        assert_eq!(ki.get(5).map(|k| k.version), Some(2));
    }

    #[test]
    fn compact_drops_deleted_key_entirely() {
        let mut ki = KeyIndex::new();
        ki.put(r(5));
        ki.tombstone(r(7));
        ki.compact(6);
        assert_eq!(ki.generations()[0].revs, vec![r(5), r(7)]);
        ki.compact(7);
        assert!(ki.is_empty());
    }

    #[test]
    fn undo_reverts_put_and_tombstone() {
        let before = example();
        let mut ki = before.clone();
        ki.put(r(6));
        ki.undo_put();
        assert_eq!(ki, before);
        assert!(ki.tombstone(r(6)));
        ki.undo_tombstone();
        assert_eq!(ki, before);
    }

    #[test]
    fn restore_keeps_versions() {
        let mut ki = KeyIndex::new();
        ki.restore(r(3), r(9), 4);
        ki.put(r(10));
        assert_eq!(
            ki.get(10),
            Some(KeyAt {
                modified: r(10),
                created: r(3),
                version: 5
            })
        );
    }
}
