//! Model test: random appends, truncations, purges, vote/committed saves,
//! reads and reopens against a plain `Vec` model. Small segments and a tiny
//! cache make every path (rotation, disk reads, segment removal) run.

use bytes::Bytes;
use cairn_raft_log::{Entry, LogId, Options, RaftLog};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append { n: u8, term_bump: bool, size: u16 },
    Truncate(u8),
    Purge(u8),
    Vote(u8),
    Committed(u8),
    Read(u8, u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..6, any::<bool>(), 0u16..300).prop_map(|(n, term_bump, size)| Op::Append { n, term_bump, size }),
        1 => any::<u8>().prop_map(Op::Truncate),
        1 => any::<u8>().prop_map(Op::Purge),
        1 => any::<u8>().prop_map(Op::Vote),
        1 => any::<u8>().prop_map(Op::Committed),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Read(a, b)),
        2 => Just(Op::Reopen),
    ]
}

fn payload(index: u64, term: u64, size: u16) -> Bytes {
    Bytes::from(format!("{index}/{term}/{}", "x".repeat(size as usize)))
}

struct Model {
    /// Entries held, in order.
    entries: Vec<Entry>,
    /// Where the next append goes when `entries` is empty.
    next: u64,
    purged: Option<LogId>,
    vote: Option<Bytes>,
    term: u64,
}

impl Model {
    fn next_index(&self) -> u64 {
        self.entries.last().map_or(self.next, |e| e.index + 1)
    }
}

fn opts() -> Options {
    Options {
        max_segment_bytes: 700,
        cache_bytes: 300,
        fault: None,
        on_sync: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_vec_model(ops in prop::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RaftLog::open(dir.path(), opts()).unwrap();
        let mut m = Model { entries: vec![], next: 1, purged: None, vote: None, term: 1 };
        for op in &ops {
            match op {
                Op::Append { n, term_bump, size } => {
                    if *term_bump { m.term += 1; }
                    let start = m.next_index();
                    let batch: Vec<Entry> = (start..start + u64::from(*n))
                        .map(|i| Entry { index: i, term: m.term, payload: payload(i, m.term, *size) })
                        .collect();
                    log.append(batch.clone()).unwrap();
                    m.entries.extend(batch);
                }
                Op::Truncate(x) => {
                    if m.entries.is_empty() { continue; }
                    let first = m.entries[0].index;
                    let after = first - 1 + u64::from(*x) % (m.entries.len() as u64 + 1);
                    if m.purged.is_some_and(|p| after < p.index) { continue; }
                    if after + 1 == first && x % 2 == 0 {
                        log.truncate_all().unwrap();
                    } else {
                        log.truncate_after(after).unwrap();
                    }
                    m.entries.retain(|e| e.index <= after);
                    if m.entries.is_empty() { m.next = after + 1; }
                }
                Op::Purge(x) => {
                    // Up to a held entry, or past the end (snapshot install).
                    let last = m.next_index() - 1;
                    let upto = last.saturating_sub(u64::from(*x) % 8) + u64::from(*x % 3 == 0) * 3;
                    if upto == 0 || m.purged.is_some_and(|p| upto <= p.index) { continue; }
                    let term = m.entries.iter().find(|e| e.index == upto).map_or(m.term, |e| e.term);
                    let id = LogId { index: upto, term };
                    log.purge(id).unwrap();
                    m.entries.retain(|e| e.index > upto);
                    if m.entries.is_empty() { m.next = upto + 1; }
                    m.purged = Some(id);
                }
                Op::Vote(v) => {
                    log.save_vote(&[*v]).unwrap();
                    m.vote = Some(Bytes::copy_from_slice(&[*v]));
                }
                Op::Committed(c) => {
                    log.save_committed(u64::from(*c)).unwrap();
                    prop_assert_eq!(log.committed(), Some(u64::from(*c)));
                }
                Op::Read(a, b) => {
                    let lo = u64::from(*a) % (m.next_index() + 2);
                    let hi = lo + u64::from(*b) % 20;
                    let got = log.entries(lo..hi).unwrap();
                    let want: Vec<Entry> = m.entries.iter().filter(|e| e.index >= lo && e.index < hi).cloned().collect();
                    // The cache-only read answers exactly the same or not at all.
                    if let Some(cached) = log.cached_entries(lo..hi).unwrap() {
                        prop_assert_eq!(&cached, &want);
                    }
                    prop_assert_eq!(got, want);
                }
                Op::Reopen => {
                    drop(log);
                    log = RaftLog::open(dir.path(), opts()).unwrap();
                }
            }
            prop_assert_eq!(log.len(), m.entries.len());
            prop_assert_eq!(log.vote(), m.vote.clone());
            prop_assert_eq!(log.purged(), m.purged);
            let last = m.entries.last().map(|e| LogId { index: e.index, term: e.term }).or(m.purged);
            prop_assert_eq!(log.last_log_id(), last);
        }
        drop(log);
        let log = RaftLog::open(dir.path(), opts()).unwrap();
        prop_assert_eq!(log.entries(..).unwrap(), m.entries);
    }
}

/// The cache-only read serves the newest entries and declines, rather than
/// reads a file, for entries the cache no longer holds.
#[test]
fn cached_entries_serve_the_newest_and_decline_evicted_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = RaftLog::open(dir.path(), opts()).unwrap();
    let entries: Vec<Entry> = (1..=20)
        .map(|i| Entry {
            index: i,
            term: 1,
            payload: payload(i, 1, 40),
        })
        .collect();
    log.append(entries.clone()).unwrap();
    // 300 cache bytes hold the last few 45-byte payloads, not all 20.
    let last = log.cached_entries(19..=20).unwrap();
    assert_eq!(last.as_deref(), Some(&entries[18..20]));
    assert_eq!(log.cached_entries(1..=20).unwrap(), None);
    assert_eq!(log.entries(1..=20).unwrap(), entries);
    // Past the end: what is held of the range.
    assert_eq!(
        log.cached_entries(20..30).unwrap().as_deref(),
        Some(&entries[19..20])
    );
}
