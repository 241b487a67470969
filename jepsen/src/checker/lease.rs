//! Lease guarantees, from the lease workload's operations:
//!
//! - a lease is alive at least until TTL seconds after the invocation of
//!   its grant or of any keep-alive that answered with a TTL (the leader
//!   starts the countdown no earlier); a read of its key that saw the key
//!   gone, or a keep-alive that answered "not found", completing before
//!   that, means the lease expired early — a renewed lease lost its key;
//! - an abandoned lease (never renewed) has expired, and its key is gone,
//!   by the final reads, which come after every fault was healed and the
//!   TTL plus two election timeouts passed.

use std::collections::HashMap;

use crate::history::{Completed, Kind, Op};

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub leases: usize,
    /// Reads and keep-alives that fell inside a provably alive window.
    pub alive_checks: usize,
    /// Final reads of abandoned leases' keys.
    pub abandoned_checks: usize,
    pub violations: Vec<String>,
}

impl Report {
    pub fn valid(&self) -> bool {
        self.violations.is_empty()
    }
}

#[derive(Default)]
struct Lease {
    /// (invoke, complete, ttl seconds) of the grant and of every
    /// keep-alive that answered with a TTL.
    promises: Vec<(u64, u64, i64)>,
    attached: Option<u64>,
    renewed: Option<bool>,
}

pub fn check(history: &[Completed]) -> Report {
    let mut leases: HashMap<i64, Lease> = HashMap::new();
    for c in history.iter().filter(|c| c.kind == Kind::Ok) {
        let Some(done) = c.complete else { continue };
        match &c.op {
            Op::Grant { lease, ttl } => {
                leases
                    .entry(*lease)
                    .or_default()
                    .promises
                    .push((c.invoke, done, *ttl));
            }
            Op::Renew {
                lease,
                ttl: Some(ttl),
            } if *ttl > 0 => {
                leases
                    .entry(*lease)
                    .or_default()
                    .promises
                    .push((c.invoke, done, *ttl));
            }
            _ => {}
        }
    }
    for c in history {
        if let Op::Attach { lease, renewed, .. } = &c.op {
            let l = leases.entry(*lease).or_default();
            l.renewed = Some(*renewed);
            if c.kind == Kind::Ok {
                l.attached = c.complete;
            }
        }
    }
    let mut report = Report {
        leases: leases.len(),
        ..Default::default()
    };
    let alive_until = |l: &Lease, before: u64| -> Option<(u64, u64, i64)> {
        l.promises
            .iter()
            .filter(|p| p.1 < before)
            .max_by_key(|p| p.0 + p.2 as u64 * 1_000_000_000)
            .copied()
    };
    let secs = |t: u64| t as f64 / 1e9;
    for c in history.iter().filter(|c| c.kind == Kind::Ok) {
        let Some(done) = c.complete else { continue };
        let (lease, gone, what) = match &c.op {
            Op::ReadLeased {
                lease,
                present: Some(p),
                key,
                ..
            } => (*lease, !p, format!("a read of {key}")),
            Op::Renew {
                lease,
                ttl: Some(t),
            } => (*lease, *t <= 0, "a keep-alive".to_string()),
            _ => continue,
        };
        let Some(l) = leases.get(&lease) else {
            continue;
        };
        let Some((invoke, _, ttl)) = alive_until(l, c.invoke) else {
            continue;
        };
        let bound = invoke + ttl as u64 * 1_000_000_000;
        if done >= bound {
            continue;
        }
        // A read before the key was attached sees nothing either way.
        if what.starts_with("a read") && l.attached.is_none_or(|a| a >= c.invoke) {
            continue;
        }
        report.alive_checks += 1;
        if gone {
            push(
                &mut report.violations,
                format!(
                    "lease {lease:x} expired early: {what} at {:.3}s..{:.3}s found it gone, but it was granted or renewed at {:.3}s with TTL {ttl}s (alive until at least {:.3}s)",
                    secs(c.invoke),
                    secs(done),
                    secs(invoke),
                    secs(bound)
                ),
            );
        }
    }
    for c in history.iter().filter(|c| c.kind == Kind::Ok) {
        if let Op::ReadLeased {
            key,
            lease,
            present: Some(true),
            last: true,
        } = &c.op
        {
            if leases.get(lease).and_then(|l| l.renewed) == Some(false) {
                push(
                    &mut report.violations,
                    format!(
                        "abandoned lease {lease:x} never expired: {key} still there at the end"
                    ),
                );
            }
        }
        if let Op::ReadLeased {
            lease, last: true, ..
        } = &c.op
        {
            if leases.get(lease).and_then(|l| l.renewed) == Some(false) {
                report.abandoned_checks += 1;
            }
        }
    }
    report
}

fn push(v: &mut Vec<String>, s: String) {
    if v.len() < 20 {
        v.push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// A history built by hand with explicit times.
    fn op(process: u64, invoke: u64, complete: u64, op: Op) -> Completed {
        Completed {
            process,
            invoke,
            complete: Some(complete),
            kind: Kind::Ok,
            op,
            note: None,
        }
    }

    fn base(renewed: bool) -> Vec<Completed> {
        vec![
            op(1, 0, S / 10, Op::Grant { lease: 7, ttl: 3 }),
            op(
                1,
                S / 5,
                S / 4,
                Op::Attach {
                    key: "l/7".into(),
                    lease: 7,
                    renewed,
                },
            ),
        ]
    }

    fn read(invoke: u64, present: bool, last: bool) -> Completed {
        op(
            2,
            invoke,
            invoke + S / 100,
            Op::ReadLeased {
                key: "l/7".into(),
                lease: 7,
                present: Some(present),
                last,
            },
        )
    }

    #[test]
    fn a_key_gone_after_its_ttl_and_an_abandoned_lease_gone_at_the_end_pass() {
        let mut h = base(false);
        h.push(read(S, true, false));
        h.push(read(4 * S, false, false));
        h.push(read(10 * S, false, true));
        let r = check(&h);
        assert!(r.valid(), "{:?}", r.violations);
        assert_eq!(r.alive_checks, 1);
        assert_eq!(r.abandoned_checks, 1);
    }

    /// A keep-alive invoked at `at`, answered with `ttl`.
    fn renew(at: u64, ttl: i64) -> Completed {
        op(
            1,
            at,
            at + S / 10,
            Op::Renew {
                lease: 7,
                ttl: Some(ttl),
            },
        )
    }

    #[test]
    fn early_expiry_is_caught() {
        let mut h = base(true);
        h.push(renew(2 * S, 3));
        // Alive until at least 5 s: gone at 4 s is early.
        h.push(read(4 * S, false, false));
        assert!(!check(&h).valid());
        // And a keep-alive saying "not found" at 4 s, likewise.
        let mut h = base(true);
        h.push(renew(2 * S, 3));
        h.push(renew(4 * S, 0));
        assert!(!check(&h).valid());
        // Gone at 6 s, after a 1 s gap in renewals: no promise broken.
        let mut h = base(true);
        h.push(renew(2 * S, 3));
        h.push(read(6 * S, false, false));
        assert!(check(&h).valid());
    }

    #[test]
    fn an_abandoned_lease_that_never_expires_is_caught() {
        let mut h = base(false);
        h.push(read(10 * S, true, true));
        assert!(!check(&h).valid());
    }
}
