//! Linearizability of registers: Wing & Gong's search with Lowe's
//! memoization (as Knossos and Porcupine do), one key at a time (a history
//! of independent registers is linearizable iff each key's is).
//!
//! Each operation is a call event and a return event on one time line. The
//! search walks the events in time order and, at every call, tries to
//! linearize that operation next: if the register model accepts it, the
//! operation is lifted out of the line and the search goes on from the
//! start; a return event whose operation is still pending means the choice
//! so far was wrong, and the last linearized operation is put back. The
//! cache of (linearized set, model state) pairs already explored keeps the
//! search from repeating itself.
//!
//! Operations of unknown outcome (a timeout: it may or may not have taken
//! effect, at any time after it was invoked) return at +∞: the history is
//! linearizable once every operation that did return has been linearized,
//! whatever happened to the unknown ones.
//!
//! A violation is reported as the smallest window of operations that still
//! cannot be linearized: cuts are instants no completed operation spans,
//! the window's end is moved down to the first cut where the prefix fails
//! and its start up to the last cut where the window, started in any
//! register state, still fails.

use std::collections::HashSet;

use crate::history::{Completed, Kind, Op};

/// A register operation as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegOp {
    Read(Option<u64>),
    Write(u64),
    /// `swapped`: None while the outcome is unknown.
    Cas {
        from: u64,
        to: u64,
        swapped: Option<bool>,
    },
}

/// One operation on one register.
#[derive(Clone, Debug)]
pub struct KeyOp {
    /// Index of the operation in the paired history (for reports).
    pub index: usize,
    pub call: u64,
    /// None: unknown outcome.
    pub ret: Option<u64>,
    pub op: RegOp,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum State {
    /// Any value (the start of a window that does not begin the history).
    Any,
    Is(Option<u64>),
}

fn step(s: State, op: &RegOp) -> Option<State> {
    use State::*;
    match (op, s) {
        (RegOp::Read(v), Any) => Some(Is(*v)),
        (RegOp::Read(v), Is(x)) => (x == *v).then_some(s),
        (RegOp::Write(v), _) => Some(Is(Some(*v))),
        (RegOp::Cas { to, swapped, .. }, Any) => match swapped {
            Some(true) => Some(Is(Some(*to))),
            // Any value but `from` is still any value, as far as we know;
            // an unknown CAS may have swapped or not.
            Some(false) | None => Some(Any),
        },
        (RegOp::Cas { from, to, swapped }, Is(x)) => {
            let matches = x == Some(*from);
            match swapped {
                Some(true) => matches.then_some(Is(Some(*to))),
                Some(false) => (!matches).then_some(s),
                None => Some(if matches { Is(Some(*to)) } else { s }),
            }
        }
    }
}

/// The verdict on one key.
#[derive(Clone, Debug)]
pub enum Verdict {
    Linearizable,
    /// The smallest window found that cannot be linearized (indices into
    /// the paired history, in call order), and the operation whose return
    /// the search could not get past in it.
    NotLinearizable {
        window: Vec<usize>,
        stuck_at: Option<usize>,
    },
    /// The search gave up (too many states).
    Unknown(String),
}

/// The verdict on one key.
#[derive(Clone, Debug)]
pub struct KeyVerdict {
    pub key: String,
    pub ops: usize,
    pub verdict: Verdict,
}

/// Verdicts for every register in a paired history.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub keys: Vec<KeyVerdict>,
}

impl Report {
    /// Some(true): every key linearizable; Some(false): a violation;
    /// None: no violation found, but some key's search gave up.
    pub fn valid(&self) -> Option<bool> {
        if self
            .keys
            .iter()
            .any(|k| matches!(k.verdict, Verdict::NotLinearizable { .. }))
        {
            Some(false)
        } else if self
            .keys
            .iter()
            .any(|k| matches!(k.verdict, Verdict::Unknown(_)))
        {
            None
        } else {
            Some(true)
        }
    }
}

/// The most (operation, state) steps one search may take.
pub const DEFAULT_BUDGET: u64 = 20_000_000;

/// Checks every register (Read / Write / Cas) operation in `history`.
/// Failed operations are left out (they did not happen), unknown reads
/// too (they change nothing).
pub fn check(history: &[Completed], budget: u64) -> Report {
    let mut keys: std::collections::BTreeMap<&str, Vec<KeyOp>> = Default::default();
    for (index, c) in history.iter().enumerate() {
        if c.kind == Kind::Fail {
            continue;
        }
        let known = c.kind == Kind::Ok;
        let (key, op) = match &c.op {
            Op::Read { key, value } if known => (key, RegOp::Read(*value)),
            Op::Write { key, value } => (key, RegOp::Write(*value)),
            Op::Cas {
                key,
                from,
                to,
                swapped,
            } => (
                key,
                RegOp::Cas {
                    from: *from,
                    to: *to,
                    swapped: if known { *swapped } else { None },
                },
            ),
            _ => continue,
        };
        let ret = if known { c.complete } else { None };
        keys.entry(key).or_default().push(KeyOp {
            index,
            call: c.invoke,
            ret,
            op,
        });
    }
    Report {
        keys: keys
            .into_iter()
            .map(|(key, ops)| KeyVerdict {
                key: key.to_string(),
                ops: ops.len(),
                verdict: check_key(ops, budget),
            })
            .collect(),
    }
}

/// Checks one register's operations, starting from an absent key.
pub fn check_key(mut ops: Vec<KeyOp>, budget: u64) -> Verdict {
    ops.sort_by_key(|o| (o.call, o.index));
    match search(&ops, State::Is(None), budget) {
        Search::Ok => Verdict::Linearizable,
        Search::GaveUp => Verdict::Unknown(format!(
            "search gave up after {budget} steps on {} operations",
            ops.len()
        )),
        Search::Stuck(at) => smallest_window(&ops, budget).unwrap_or(Verdict::NotLinearizable {
            window: ops.iter().map(|o| o.index).collect(),
            stuck_at: Some(ops[at].index),
        }),
    }
}

enum Search {
    Ok,
    /// Could not get past the return of this operation (index into ops).
    Stuck(usize),
    GaveUp,
}

const NIL: usize = usize::MAX;

/// The value every unseen write of unknown outcome is taken to write
/// (clients write values below 2^63).
const UNSEEN: u64 = u64::MAX;

/// Wing & Gong / Lowe search over `ops` (sorted by call) from `init`.
fn search(ops: &[KeyOp], init: State, budget: u64) -> Search {
    let n = ops.len();
    if n == 0 {
        return Search::Ok;
    }
    // Nodes 0..2n: 2i is op i's call, 2i+1 its return; node 2n is the head.
    let head = 2 * n;
    let mut order: Vec<usize> = (0..2 * n).collect();
    let time = |node: usize| -> u64 {
        let o = &ops[node / 2];
        if node.is_multiple_of(2) {
            o.call
        } else {
            o.ret.unwrap_or(u64::MAX)
        }
    };
    // Calls before returns at the same instant: the more permissive order.
    order.sort_by_key(|&node| (time(node), node % 2, node));
    let mut next = vec![NIL; 2 * n + 1];
    let mut prev = vec![NIL; 2 * n + 1];
    let mut last = head;
    for &node in &order {
        next[last] = node;
        prev[node] = last;
        last = node;
    }

    // Writes of unknown outcome whose value nobody saw are
    // interchangeable once invoked: each sets the register to a value no
    // later read or compare names. They all write UNSEEN, and the search
    // only ever tries the earliest invoked one not yet linearized
    // (symmetry reduction: 2^k choices become k + 1).
    let observed: HashSet<u64> = ops
        .iter()
        .filter_map(|o| match o.op {
            RegOp::Read(v) => v,
            RegOp::Cas { from, .. } => Some(from),
            RegOp::Write(_) => None,
        })
        .collect();
    let unseen: Vec<bool> = ops
        .iter()
        .map(|o| o.ret.is_none() && matches!(o.op, RegOp::Write(v) if !observed.contains(&v)))
        .collect();
    let model: Vec<RegOp> = ops
        .iter()
        .zip(&unseen)
        .map(|(o, &u)| {
            if u {
                RegOp::Write(UNSEEN)
            } else {
                o.op.clone()
            }
        })
        .collect();

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    // (call linearized, state before, whether this walk had tried an
    // unseen write before reaching it).
    let mut calls: Vec<(usize, State, bool)> = Vec::new();
    let mut tried_unseen = false;
    let mut state = init;
    let mut entry = next[head];
    let mut steps = 0u64;
    let mut deepest = (0usize, 0usize);

    let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, call: usize| {
        for node in [call, call + 1] {
            let (p, nx) = (prev[node], next[node]);
            next[p] = nx;
            if nx != NIL {
                prev[nx] = p;
            }
        }
    };
    // Reinserts in the reverse order of lift: nodes kept their own links.
    let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, call: usize| {
        for node in [call + 1, call] {
            let (p, nx) = (prev[node], next[node]);
            next[p] = node;
            if nx != NIL {
                prev[nx] = node;
            }
        }
    };

    loop {
        if entry == NIL {
            return Search::Ok;
        }
        let op = entry / 2;
        if entry.is_multiple_of(2) {
            if unseen[op] && tried_unseen {
                entry = next[entry];
                continue;
            }
            steps += 1;
            if steps > budget {
                return Search::GaveUp;
            }
            if let Some(new_state) = step(state, &model[op]) {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), new_state)) {
                    calls.push((entry, state, tried_unseen));
                    state = new_state;
                    lift(&mut next, &mut prev, entry);
                    entry = next[head];
                    tried_unseen = false;
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            tried_unseen |= unseen[op];
            entry = next[entry];
        } else {
            if ops[op].ret.is_none() {
                // Only operations of unknown outcome are left.
                return Search::Ok;
            }
            if calls.len() >= deepest.0 {
                deepest = (calls.len(), op);
            }
            match calls.pop() {
                None => return Search::Stuck(deepest.1),
                Some((call, s, tried)) => {
                    state = s;
                    let undone = call / 2;
                    tried_unseen = tried || unseen[undone];
                    linearized[undone / 64] &= !(1 << (undone % 64));
                    unlift(&mut next, &mut prev, call);
                    entry = next[call];
                }
            }
        }
    }
}

/// The smallest window of `ops` (sorted by call) that cannot be
/// linearized, or None when no window fails (the search gave up).
fn smallest_window(ops: &[KeyOp], budget: u64) -> Option<Verdict> {
    let done: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].ret.is_some()).collect();
    // cuts[c] = position in `done` where a window may start or end: no
    // completed operation spans the instant before done[cuts[c]].
    let mut cuts = vec![0];
    let mut max_ret = 0u64;
    for (p, &i) in done.iter().enumerate() {
        if p > 0 && max_ret < ops[i].call {
            cuts.push(p);
        }
        max_ret = max_ret.max(ops[i].ret.unwrap_or(u64::MAX));
    }
    cuts.push(done.len());
    let last = cuts.len() - 1;

    let window = |a: usize, b: usize| -> Vec<KeyOp> {
        let end = if b == last {
            u64::MAX
        } else {
            ops[done[cuts[b]]].call
        };
        let mut w: Vec<KeyOp> = done[cuts[a]..cuts[b]]
            .iter()
            .map(|&i| ops[i].clone())
            .collect();
        // Unknown operations invoked before the window's end may have
        // taken effect inside it.
        w.extend(
            ops.iter()
                .filter(|o| o.ret.is_none() && o.call < end)
                .cloned(),
        );
        w.sort_by_key(|o| (o.call, o.index));
        w
    };
    let fails = |a: usize, b: usize| -> Option<(bool, Option<usize>)> {
        let w = window(a, b);
        let init = if a == 0 { State::Is(None) } else { State::Any };
        match search(&w, init, budget) {
            Search::Ok => Some((false, None)),
            Search::Stuck(at) => Some((true, Some(w[at].index))),
            Search::GaveUp => None,
        }
    };

    // Smallest end b with the prefix [0, b) failing (failing is monotone
    // in b).
    let (mut lo, mut hi) = (1, last);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(0, mid)?.0 {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let b = hi;
    // Largest start a with [a, b) failing (monotone in a the other way).
    let (mut lo, mut hi) = (0, b - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fails(mid, b)?.0 {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let a = lo;
    let (failed, stuck_at) = fails(a, b)?;
    if !failed {
        return None;
    }
    Some(Verdict::NotLinearizable {
        window: window(a, b).iter().map(|o| o.index).collect(),
        stuck_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op(index: usize, call: u64, ret: Option<u64>, op: RegOp) -> KeyOp {
        KeyOp {
            index,
            call,
            ret,
            op,
        }
    }
    use RegOp::*;

    fn cas(from: u64, to: u64, swapped: Option<bool>) -> RegOp {
        RegOp::Cas { from, to, swapped }
    }

    fn linearizable(ops: Vec<KeyOp>) -> bool {
        match check_key(ops, DEFAULT_BUDGET) {
            Verdict::Linearizable => true,
            Verdict::NotLinearizable { .. } => false,
            Verdict::Unknown(e) => panic!("{e}"),
        }
    }

    #[test]
    fn stale_read_is_not_linearizable() {
        // w1; w2 completes; then a read returns 1.
        let ops = vec![
            op(0, 0, Some(10), Write(1)),
            op(1, 20, Some(30), Write(2)),
            op(2, 40, Some(50), Read(Some(1))),
        ];
        assert!(!linearizable(ops));
    }

    #[test]
    fn lost_write_is_not_linearizable() {
        let ops = vec![
            op(0, 0, Some(10), Write(1)),
            op(1, 20, Some(30), Read(None)),
        ];
        assert!(!linearizable(ops));
    }

    #[test]
    fn lost_update_is_not_linearizable() {
        // Two CASes from 1 both succeed, one after the other.
        let ops = vec![
            op(0, 0, Some(10), Write(1)),
            op(1, 20, Some(30), cas(1, 2, Some(true))),
            op(2, 40, Some(50), cas(1, 3, Some(true))),
        ];
        assert!(!linearizable(ops));
    }

    #[test]
    fn concurrent_read_may_see_either_value() {
        for seen in [Some(1), Some(2)] {
            let ops = vec![
                op(0, 0, Some(10), Write(1)),
                op(1, 20, Some(40), Write(2)),
                op(2, 25, Some(35), Read(seen)),
            ];
            assert!(linearizable(ops), "{seen:?}");
        }
        // But not a value never written.
        let ops = vec![
            op(0, 0, Some(10), Write(1)),
            op(1, 20, Some(40), Write(2)),
            op(2, 25, Some(35), Read(Some(3))),
        ];
        assert!(!linearizable(ops));
    }

    #[test]
    fn read_may_not_go_back_to_an_older_value_seen_concurrently() {
        // Both reads overlap the write of 2, but the first saw 2 and ended
        // before the second began, which then saw 1.
        let ops = vec![
            op(0, 0, Some(10), Write(1)),
            op(1, 20, Some(100), Write(2)),
            op(2, 30, Some(40), Read(Some(2))),
            op(3, 50, Some(60), Read(Some(1))),
        ];
        assert!(!linearizable(ops));
    }

    #[test]
    fn unknown_writes_may_or_may_not_have_happened() {
        // Seen later: fine.
        let ops = vec![
            op(0, 0, None, Write(7)),
            op(1, 100, Some(110), Read(Some(7))),
        ];
        assert!(linearizable(ops));
        // Never seen: fine.
        let ops = vec![op(0, 0, None, Write(7)), op(1, 100, Some(110), Read(None))];
        assert!(linearizable(ops));
        // Seen before it was invoked: not fine.
        let ops = vec![
            op(0, 0, Some(10), Read(Some(7))),
            op(1, 100, None, Write(7)),
        ];
        assert!(!linearizable(ops));
        // An unknown CAS that must have swapped for a later read.
        let ops = vec![
            op(0, 0, Some(10), Write(1)),
            op(1, 20, None, cas(1, 5, None)),
            op(2, 100, Some(110), Read(Some(5))),
            op(3, 120, Some(130), Read(Some(5))),
        ];
        assert!(linearizable(ops));
    }

    #[test]
    fn many_concurrent_unknown_writes_are_checked_quickly() {
        // 200 writes that timed out, nobody saw, then reads of a value
        // written after them: 2^200 subsets without the symmetry
        // reduction.
        let mut ops: Vec<KeyOp> = (0..200)
            .map(|i| op(i, i as u64, None, Write(1000 + i as u64)))
            .collect();
        ops.push(op(200, 300, Some(310), Write(7)));
        for i in 0..50 {
            ops.push(op(
                201 + i,
                320 + 10 * i as u64,
                Some(325 + 10 * i as u64),
                Read(Some(7)),
            ));
        }
        match check_key(ops.clone(), 1_000_000) {
            Verdict::Linearizable => {}
            v => panic!("{v:?}"),
        }
        // One of them must have taken effect for a failed CAS from 7.
        ops.push(op(300, 900, Some(910), cas(7, 8, Some(false))));
        match check_key(ops.clone(), 1_000_000) {
            Verdict::Linearizable => {}
            v => panic!("{v:?}"),
        }
        // But none can explain reading 7 again after that.
        ops.push(op(301, 920, Some(930), Read(Some(7))));
        match check_key(ops, 1_000_000) {
            Verdict::NotLinearizable { .. } => {}
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn failed_cas_needs_a_different_value() {
        let ops = vec![
            op(0, 0, Some(10), Write(1)),
            op(1, 20, Some(30), cas(1, 2, Some(false))),
        ];
        assert!(!linearizable(ops));
        let ops = vec![
            op(0, 0, Some(10), Write(3)),
            op(1, 20, Some(30), cas(1, 2, Some(false))),
            op(2, 40, Some(50), Read(Some(3))),
        ];
        assert!(linearizable(ops));
    }

    #[test]
    fn window_is_the_stale_read_and_what_it_contradicts() {
        // 200 sequential writes and reads; a stale read in the middle.
        let mut ops = Vec::new();
        let mut t = 0;
        for v in 1..=100u64 {
            ops.push(op(ops.len(), t, Some(t + 5), Write(v)));
            t += 10;
            let seen = if v == 50 { 49 } else { v };
            ops.push(op(ops.len(), t, Some(t + 5), Read(Some(seen))));
            t += 10;
        }
        match check_key(ops, DEFAULT_BUDGET) {
            Verdict::NotLinearizable { window, stuck_at } => {
                // The write of 50 and the read that missed it.
                assert_eq!(window, vec![98, 99], "{window:?}");
                assert_eq!(stuck_at, Some(99));
            }
            v => panic!("{v:?}"),
        }
    }

    /// A history of a real register: each operation takes effect at an
    /// instant inside its call..return interval, in the order of those
    /// instants; operations that time out take effect or not.
    fn real_history(plan: &[(u8, u64, u64, u64, bool)]) -> (Vec<KeyOp>, Vec<(u64, usize)>) {
        let mut ops = Vec::new();
        let mut points = Vec::new();
        let mut clock = [0u64; 4];
        for (i, &(kind, process, len, at, lost)) in plan.iter().enumerate() {
            let p = process as usize % 4;
            let call = clock[p];
            let ret = call + len + 1;
            clock[p] = ret + 1;
            let point = call + at % (len + 1);
            let value = i as u64 + 1;
            let o = match kind % 3 {
                0 => Read(None),
                1 => Write(value),
                _ => cas((at % 4) + 1, value, None),
            };
            // Unknown outcome: a write or CAS whose reply was lost; it
            // takes effect only when `at` is even.
            let unknown = lost && !matches!(o, Read(_));
            if !unknown || at % 2 == 0 {
                points.push((point, i));
            }
            ops.push(op(i, call, (!unknown).then_some(ret), o));
        }
        points.sort();
        let mut reg = None;
        for &(_, i) in &points {
            let known = ops[i].ret.is_some();
            match &mut ops[i].op {
                Read(v) => *v = reg,
                Write(v) => reg = Some(*v),
                Cas { from, to, swapped } => {
                    let hit = reg == Some(*from);
                    if hit {
                        reg = Some(*to);
                    }
                    if known {
                        *swapped = Some(hit);
                    }
                }
            }
        }
        (ops, points)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn histories_of_a_real_register_are_linearizable(
            plan in prop::collection::vec((0u8..3, 0u64..4, 0u64..30, 0u64..1000, prop::bool::weighted(0.1)), 1..60)
        ) {
            let (ops, _) = real_history(&plan);
            prop_assert!(linearizable(ops));
        }

        #[test]
        fn a_read_of_a_value_never_written_is_caught(
            plan in prop::collection::vec((0u8..3, 0u64..4, 0u64..30, 0u64..1000, prop::bool::weighted(0.1)), 1..60),
            pick in 0usize..1000,
        ) {
            let (mut ops, _) = real_history(&plan);
            let reads: Vec<usize> = (0..ops.len()).filter(|&i| matches!(ops[i].op, Read(_))).collect();
            prop_assume!(!reads.is_empty());
            let r = reads[pick % reads.len()];
            ops[r].op = Read(Some(1_000_000));
            prop_assert!(!linearizable(ops));
        }
    }
}
