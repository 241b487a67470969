//! Crash and damage tests.
//!
//! - A child process appends with concurrent appenders and is killed with
//!   SIGKILL at random moments: every acknowledged entry must survive, and
//!   everything served must be exactly what was written.
//! - Truncating the last segment at random offsets (a torn write): opening
//!   cuts the tail and serves a clean prefix.
//! - Flipping a bit at random offsets: opening either refuses, naming the
//!   segment and offset, or (damage inside the final record) cuts it; never
//!   serves a wrong entry.
//! - A failed fsync poisons the log.
//! - A batch larger than the write limit is written in parts, in order.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_raft_log::{Entry, Error, Fault, Options, RaftLog};

const CHILD_ENV: &str = "CAIRN_RAFT_LOG_CRASH_DIR";

fn payload(index: u64) -> Bytes {
    Bytes::from(format!(
        "entry-{index}-{}",
        "p".repeat((index % 97) as usize)
    ))
}

fn small_segments() -> Options {
    Options {
        max_segment_bytes: 16 << 10,
        cache_bytes: 4 << 10,
        fault: None,
        on_sync: None,
    }
}

/// The child: 8 appender threads; each takes the next index under a lock,
/// queues its entry, and reports it once durable.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let log = Arc::new(RaftLog::open(&dir, small_segments()).unwrap());
    let next = Arc::new(Mutex::new(log.last_log_id().map_or(1, |l| l.index + 1)));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let log = Arc::clone(&log);
            let next = Arc::clone(&next);
            std::thread::spawn(move || loop {
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                let index = {
                    let mut n = next.lock().unwrap();
                    let i = *n;
                    log.append_with(
                        vec![Entry {
                            index: i,
                            term: 1,
                            payload: payload(i),
                        }],
                        move |r| {
                            let _ = tx.send(r);
                        },
                    )
                    .unwrap();
                    *n += 1;
                    i
                };
                rx.recv().unwrap().unwrap();
                println!("acked {index}");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn check_clean(log: &RaftLog) -> u64 {
    let all = log.entries(..).unwrap();
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.index, i as u64 + 1, "entries not contiguous from 1");
        assert_eq!(
            e.payload,
            payload(e.index),
            "entry {} served wrong bytes",
            e.index
        );
    }
    all.len() as u64
}

#[test]
fn killed_appenders_lose_no_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    for round in 0..5u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let want = 50 + (round * 7919) % 400;
        let mut max_acked = 0u64;
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        for line in lines {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("acked ") {
                max_acked = max_acked.max(n.parse().unwrap());
                seen += 1;
                if seen >= want {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "child made no progress");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let log = RaftLog::open(dir.path(), small_segments()).unwrap();
        let n = check_clean(&log);
        assert!(
            n >= max_acked,
            "round {round}: acknowledged entry {max_acked} lost (log ends at {n})"
        );
    }
}

/// Writes `n` entries with small segments and returns the segment paths.
fn build(dir: &std::path::Path, n: u64) -> Vec<std::path::PathBuf> {
    let log = RaftLog::open(dir, small_segments()).unwrap();
    for chunk in (1..=n).collect::<Vec<_>>().chunks(7) {
        log.append(
            chunk
                .iter()
                .map(|&i| Entry {
                    index: i,
                    term: 1,
                    payload: payload(i),
                })
                .collect(),
        )
        .unwrap();
    }
    drop(log);
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    segs
}

/// Where a segment's records end: the zeros after them are preallocation.
fn records_end(raw: &[u8]) -> usize {
    raw.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
}

/// Small deterministic PRNG (no dependency needed for offsets).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn torn_tail_is_cut_at_any_offset() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for _ in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let segs = build(dir.path(), 300);
        let last = segs.last().unwrap();
        // Cut inside the records, not the preallocated zeros after them.
        let raw = std::fs::read(last).unwrap();
        let len = records_end(&raw) as u64;
        let cut = rng.next() % (len + 1);
        std::fs::OpenOptions::new()
            .write(true)
            .open(last)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let log = RaftLog::open(dir.path(), small_segments()).unwrap();
        let n = check_clean(&log);
        assert!(n <= 300);
        // The log continues cleanly after the cut.
        log.append(vec![Entry {
            index: n + 1,
            term: 1,
            payload: payload(n + 1),
        }])
        .unwrap();
        drop(log);
        let log = RaftLog::open(dir.path(), small_segments()).unwrap();
        assert_eq!(check_clean(&log), n + 1);
    }
}

#[test]
fn bit_flips_are_refused_or_cut_never_served() {
    let mut rng = Rng(0x2545f4914f6cdd1d);
    let mut refused = 0;
    for _ in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        let segs = build(dir.path(), 300);
        let which = (rng.next() % segs.len() as u64) as usize;
        let path = &segs[which];
        let mut raw = std::fs::read(path).unwrap();
        // The last segment ends in preallocated zeros: flip a bit of the
        // records themselves (a flip in the zeros is checked below).
        let used = records_end(&raw);
        let off = (rng.next() % used as u64) as usize;
        raw[off] ^= 1 << (rng.next() % 8);
        std::fs::write(path, &raw).unwrap();
        match RaftLog::open(dir.path(), small_segments()) {
            Err(Error::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!(&segment, path);
                assert!(
                    offset <= off as u64,
                    "reported offset {offset} after the flip at {off}"
                );
                refused += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(log) => {
                // Only damage to the very last record can look torn.
                assert_eq!(
                    which,
                    segs.len() - 1,
                    "flip at {off} in a sealed segment went unnoticed"
                );
                let n = check_clean(&log);
                assert!(
                    n >= 299,
                    "a flip at {off} cut more than the last record ({n} left)"
                );
            }
        }
    }
    assert!(refused > 40, "only {refused} of 60 flips refused");
}

#[test]
fn flips_in_the_preallocated_tail_lose_nothing() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let segs = build(dir.path(), 300);
        let path = segs.last().unwrap();
        let mut raw = std::fs::read(path).unwrap();
        let used = records_end(&raw);
        assert!(raw.len() > used, "the last segment has no zero tail");
        let off = used + (rng.next() % (raw.len() - used) as u64) as usize;
        raw[off] ^= 1 << (rng.next() % 8);
        std::fs::write(path, &raw).unwrap();
        let log = RaftLog::open(dir.path(), small_segments()).unwrap();
        assert_eq!(check_clean(&log), 300, "flip at {off} after {used}");
        // Sealed segments carry no preallocated zeros.
        for p in &segs[..segs.len() - 1] {
            let len = std::fs::metadata(p).unwrap().len();
            assert!(len < 32 << 10, "{} is {len} bytes", p.display());
        }
    }
}

#[test]
fn failed_fsync_poisons_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let syncs = Arc::new(AtomicUsize::new(0));
    let fail_from = Arc::new(AtomicUsize::new(usize::MAX));
    let hook = {
        let (syncs, fail_from) = (syncs.clone(), fail_from.clone());
        Arc::new(move |f: Fault| {
            f == Fault::Sync
                && syncs.fetch_add(1, Ordering::SeqCst) >= fail_from.load(Ordering::SeqCst)
        })
    };
    let log = RaftLog::open(
        dir.path(),
        Options {
            fault: Some(hook),
            ..Options::default()
        },
    )
    .unwrap();
    log.append(vec![Entry {
        index: 1,
        term: 1,
        payload: payload(1),
    }])
    .unwrap();
    fail_from.store(syncs.load(Ordering::SeqCst), Ordering::SeqCst);
    assert!(matches!(
        log.append(vec![Entry {
            index: 2,
            term: 1,
            payload: payload(2)
        }]),
        Err(Error::Io { .. })
    ));
    // Nothing is retried: every later call fails.
    fail_from.store(usize::MAX, Ordering::SeqCst);
    assert!(matches!(
        log.append(vec![Entry {
            index: 3,
            term: 1,
            payload: payload(3)
        }]),
        Err(Error::Poisoned)
    ));
    assert!(matches!(log.save_vote(b"v"), Err(Error::Poisoned)));
    assert!(matches!(log.entries(..), Err(Error::Poisoned)));
    assert!(matches!(log.sync(), Err(Error::Poisoned)));
    drop(log);
    // Reopening re-reads the files: entry 1 is there; 2 may or may not be.
    let log = RaftLog::open(dir.path(), Options::default()).unwrap();
    assert_eq!(log.entries(1..2).unwrap()[0].payload, payload(1));
}

#[test]
fn cache_stays_bounded_and_old_entries_come_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        max_segment_bytes: 1 << 20,
        cache_bytes: 64 << 10,
        fault: None,
        on_sync: None,
    };
    let log = RaftLog::open(dir.path(), opts).unwrap();
    let big = Bytes::from(vec![7u8; 4096]);
    for i in 1..=2000u64 {
        log.append(vec![Entry {
            index: i,
            term: 1,
            payload: big.clone(),
        }])
        .unwrap();
    }
    assert!(
        log.cached_bytes() <= 64 << 10,
        "cache holds {} bytes",
        log.cached_bytes()
    );
    let e = log.entry(1).unwrap().unwrap();
    assert_eq!(e.payload, big);
    assert_eq!(log.entries(500..1500).unwrap().len(), 1000);
}

#[test]
fn second_open_of_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _log = RaftLog::open(dir.path(), Options::default()).unwrap();
    assert!(matches!(
        RaftLog::open(dir.path(), Options::default()),
        Err(Error::Io { op: "lock", .. })
    ));
}

#[test]
fn concurrent_blocking_appends_share_leaders_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(RaftLog::open(dir.path(), small_segments()).unwrap());
    let next = Arc::new(Mutex::new(1u64));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (log, next) = (Arc::clone(&log), Arc::clone(&next));
            std::thread::spawn(move || {
                for _ in 0..200 {
                    // The index lock orders the queue; `append` then leads or
                    // waits for the current leader.
                    let mut n = next.lock().unwrap();
                    let i = *n;
                    *n += 1;
                    let (tx, rx) = std::sync::mpsc::sync_channel(1);
                    log.append_with(
                        vec![Entry {
                            index: i,
                            term: 1,
                            payload: payload(i),
                        }],
                        move |r| {
                            let _ = tx.send(r);
                        },
                    )
                    .unwrap();
                    drop(n);
                    log.sync().unwrap();
                    rx.recv().unwrap().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(check_clean(&log), 1600);
    drop(log);
    let log = RaftLog::open(dir.path(), small_segments()).unwrap();
    assert_eq!(check_clean(&log), 1600);
}

#[test]
fn a_batch_past_the_write_limit_is_written_in_parts_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // The first sync of an append batch stalls, so the later appends queue
    // behind it and the next batch holds all of them (up to 6 × 3 MiB):
    // written in parts of at most three entries (9 MiB), never 18 MiB at
    // once, so the 7 entries take 3 batches in all.
    let syncs = Arc::new(AtomicUsize::new(0));
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (hook_syncs, hook_armed) = (Arc::clone(&syncs), Arc::clone(&armed));
    let opts = Options {
        max_segment_bytes: 64 << 20,
        cache_bytes: 1 << 20,
        fault: Some(Arc::new(move |f| {
            if f == Fault::Sync
                && hook_armed.load(Ordering::SeqCst)
                && hook_syncs.fetch_add(1, Ordering::SeqCst) == 0
            {
                std::thread::sleep(Duration::from_millis(300));
            }
            false
        })),
        on_sync: None,
    };
    let log = RaftLog::open(dir.path(), opts).unwrap();
    armed.store(true, Ordering::SeqCst);
    let big = |i: u64| Bytes::from(vec![i as u8; 3 << 20]);
    let done = Arc::new(Mutex::new(Vec::new()));
    for i in 1..=7u64 {
        let done = Arc::clone(&done);
        log.append_with(
            vec![Entry {
                index: i,
                term: 1,
                payload: big(i),
            }],
            move |r| done.lock().unwrap().push((i, r.is_ok())),
        )
        .unwrap();
    }
    log.sync().unwrap();
    let done = done.lock().unwrap().clone();
    assert_eq!(done, (1..=7).map(|i| (i, true)).collect::<Vec<_>>());
    assert_eq!(log.stats().batches, 3, "{:?}", log.stats());
    drop(log);
    let log = RaftLog::open(dir.path(), Options::default()).unwrap();
    for i in 1..=7u64 {
        assert_eq!(log.entry(i).unwrap().unwrap().payload, big(i));
    }
}
