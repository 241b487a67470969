//! Checks of the append workload's list transactions against the final
//! read of every list (after the faults were healed):
//!
//! - no lost append: every acknowledged append is in its final list;
//! - no phantom: every element of a final list was appended by some
//!   transaction that was invoked (acknowledged or of unknown outcome);
//! - no duplicate, in a final list or in any read;
//! - one order: every acknowledged read of a list is a prefix of its
//!   final list (no element reordered, lost then found, or diverging);
//! - atomic: a transaction of unknown outcome has all of its appends in
//!   the final lists or none;
//! - real time: a read sees every append acknowledged before it was
//!   invoked, and appends acknowledged one before the other was invoked
//!   are in that order in the final list.

use std::collections::{HashMap, HashSet};

use crate::history::{Completed, Kind, Mop, Op};

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub txns: usize,
    pub keys: usize,
    pub violations: Vec<String>,
}

impl Report {
    pub fn valid(&self) -> bool {
        self.violations.is_empty()
    }
}

fn push(v: &mut Vec<String>, s: String) {
    if v.len() < 20 {
        v.push(s);
    }
}

pub fn check(history: &[Completed]) -> Report {
    let txns: Vec<&Completed> = history
        .iter()
        .filter(|c| matches!(c.op, Op::Txn { .. }))
        .collect();
    let mops = |c: &Completed| -> Vec<Mop> {
        match &c.op {
            Op::Txn { mops } => mops.clone(),
            _ => Vec::new(),
        }
    };
    let mut v = Vec::new();
    // Final lists: the reads recorded as such.
    let mut finals: HashMap<String, Vec<u64>> = HashMap::new();
    for c in &txns {
        if c.kind == Kind::Ok && c.note.as_deref() == Some("final read") {
            for m in mops(c) {
                if let Mop::Read {
                    key,
                    list: Some(list),
                } = m
                {
                    finals.insert(key, list);
                }
            }
        }
    }
    // Appends: (key, value) → (txn index, acknowledged).
    let mut appended: HashMap<(String, u64), usize> = HashMap::new();
    for (i, c) in txns.iter().enumerate() {
        if c.kind == Kind::Fail {
            continue;
        }
        for m in mops(c) {
            if let Mop::Append { key, value } = m {
                appended.insert((key, value), i);
            }
        }
    }
    let position: HashMap<&str, HashMap<u64, usize>> = finals
        .iter()
        .map(|(k, l)| {
            (
                k.as_str(),
                l.iter().enumerate().map(|(i, x)| (*x, i)).collect(),
            )
        })
        .collect();
    for (key, list) in &finals {
        let mut set = HashSet::new();
        for x in list {
            if !set.insert(*x) {
                push(
                    &mut v,
                    format!("{key}: {x} appears twice in the final list"),
                );
            }
            if !appended.contains_key(&(key.clone(), *x)) {
                push(
                    &mut v,
                    format!("{key}: {x} is in the final list but was never appended (phantom)"),
                );
            }
        }
    }
    for (i, c) in txns.iter().enumerate() {
        let ms = mops(c);
        match c.kind {
            Kind::Ok => {
                for m in &ms {
                    match m {
                        Mop::Append { key, value } => {
                            match position.get(key.as_str()) {
                                Some(p) if p.contains_key(value) => {}
                                Some(_) => push(&mut v, format!(
                                    "{key}: acknowledged append of {value} is not in the final list (lost)"
                                )),
                                None => push(&mut v, format!("{key}: no final read")),
                            }
                        }
                        Mop::Read {
                            key,
                            list: Some(list),
                        } => {
                            if let Some(f) = finals.get(key) {
                                if list.len() > f.len() || f[..list.len()] != list[..] {
                                    push(&mut v, format!(
                                        "{key}: read {list:?} is not a prefix of the final list {f:?}"
                                    ));
                                }
                            }
                            let mut seen = HashSet::new();
                            if !list.iter().all(|x| seen.insert(*x)) {
                                push(&mut v, format!("{key}: read {list:?} has a duplicate"));
                            }
                        }
                        Mop::Read { .. } => {}
                    }
                }
            }
            Kind::Info | Kind::Invoke => {
                let appends: Vec<(&String, &u64)> = ms
                    .iter()
                    .filter_map(|m| match m {
                        Mop::Append { key, value } => Some((key, value)),
                        _ => None,
                    })
                    .collect();
                let present: Vec<bool> = appends
                    .iter()
                    .map(|(k, x)| position.get(k.as_str()).is_some_and(|p| p.contains_key(x)))
                    .collect();
                if present.iter().any(|p| *p) && !present.iter().all(|p| *p) {
                    push(&mut v, format!(
                        "transaction {i} of unknown outcome took effect in part: {appends:?} present {present:?} (not atomic)"
                    ));
                }
            }
            Kind::Fail => {}
        }
    }
    // Real time.
    let mut acked: HashMap<&str, Vec<(u64, u64, u64)>> = HashMap::new(); // key → (invoke, complete, value)
    for c in txns.iter().filter(|c| c.kind == Kind::Ok) {
        let Some(done) = c.complete else { continue };
        if let Op::Txn { mops } = &c.op {
            for m in mops {
                if let Mop::Append { key, value } = m {
                    acked.entry(key).or_default().push((c.invoke, done, *value));
                }
            }
        }
    }
    for c in txns.iter().filter(|c| c.kind == Kind::Ok) {
        if let Op::Txn { mops } = &c.op {
            for m in mops {
                if let Mop::Read {
                    key,
                    list: Some(list),
                } = m
                {
                    let got: HashSet<u64> = list.iter().copied().collect();
                    if let Some(a) = acked.get(key.as_str()) {
                        if let Some(missed) = a
                            .iter()
                            .find(|(_, done, x)| *done < c.invoke && !got.contains(x))
                        {
                            push(&mut v, format!(
                                "{key}: a read invoked at {:.3}s misses {}, acknowledged at {:.3}s (stale read)",
                                c.invoke as f64 / 1e9,
                                missed.2,
                                missed.1 as f64 / 1e9
                            ));
                        }
                    }
                }
            }
        }
    }
    for (key, a) in &acked {
        let Some(p) = position.get(key) else { continue };
        let mut by_done = a.clone();
        by_done.sort_by_key(|x| x.1);
        // The latest position among appends acknowledged so far, swept in
        // invocation order.
        let mut by_invoke = a.clone();
        by_invoke.sort_by_key(|x| x.0);
        let mut j = 0;
        let mut max_pos: Option<(usize, u64)> = None;
        for &(invoke, _, x) in &by_invoke {
            while j < by_done.len() && by_done[j].1 < invoke {
                if let Some(&pos) = p.get(&by_done[j].2) {
                    if max_pos.is_none_or(|(m, _)| pos > m) {
                        max_pos = Some((pos, by_done[j].2));
                    }
                }
                j += 1;
            }
            if let (Some(&pos), Some((m, before))) = (p.get(&x), max_pos) {
                if pos < m {
                    push(&mut v, format!(
                        "{key}: {x} comes before {before} in the final list, but {before} was acknowledged before {x} was invoked"
                    ));
                }
            }
        }
    }
    Report {
        txns: txns.len(),
        keys: finals.len(),
        violations: v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(invoke: u64, complete: u64, kind: Kind, mops: Vec<Mop>) -> Completed {
        Completed {
            process: 0,
            invoke,
            complete: Some(complete),
            kind,
            op: Op::Txn { mops },
            note: None,
        }
    }
    fn app(k: &str, x: u64) -> Mop {
        Mop::Append {
            key: k.into(),
            value: x,
        }
    }
    fn read(k: &str, l: &[u64]) -> Mop {
        Mop::Read {
            key: k.into(),
            list: Some(l.to_vec()),
        }
    }
    fn fin(k: &str, l: &[u64]) -> Completed {
        Completed {
            note: Some("final read".into()),
            ..txn(1000, 1001, Kind::Ok, vec![read(k, l)])
        }
    }

    fn good() -> Vec<Completed> {
        vec![
            txn(0, 10, Kind::Ok, vec![app("a", 1), app("b", 1)]),
            txn(20, 30, Kind::Ok, vec![app("a", 2), read("b", &[1])]),
            txn(25, 40, Kind::Info, vec![app("a", 3), app("b", 3)]),
            txn(50, 60, Kind::Ok, vec![read("a", &[1, 2, 3])]),
        ]
    }

    #[test]
    fn a_good_history_passes() {
        let mut h = good();
        h.push(fin("a", &[1, 2, 3]));
        h.push(fin("b", &[1, 3]));
        let r = check(&h);
        assert!(r.valid(), "{:?}", r.violations);
    }

    #[test]
    fn lost_phantom_duplicate_reordered_partial_and_stale_are_caught() {
        let cases: Vec<(&str, Vec<Completed>)> = vec![
            ("lost", vec![fin("a", &[1, 3]), fin("b", &[1, 3])]),
            ("phantom", vec![fin("a", &[1, 2, 3, 9]), fin("b", &[1, 3])]),
            (
                "duplicate",
                vec![fin("a", &[1, 2, 3, 2]), fin("b", &[1, 3])],
            ),
            ("reordered", vec![fin("a", &[2, 1, 3]), fin("b", &[1, 3])]),
            ("partial", vec![fin("a", &[1, 2, 3]), fin("b", &[1])]),
            (
                "stale",
                vec![
                    fin("a", &[1, 2, 3]),
                    fin("b", &[1, 3]),
                    txn(70, 80, Kind::Ok, vec![read("a", &[1])]),
                ],
            ),
        ];
        for (name, extra) in cases {
            let mut h = good();
            h.extend(extra);
            assert!(!check(&h).valid(), "{name} passed");
        }
    }
}
