//! Histories of real runs that found bugs in Cairn, kept so the checkers
//! go on catching what they caught.

use std::path::Path;

use cairn_jepsen::checker::lease;
use cairn_jepsen::history::{load, pair};

fn history(name: &str) -> Vec<cairn_jepsen::history::Completed> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/histories")
        .join(name);
    pair(&load(&path).expect("history"))
}

/// 3 members, the leader paused for 4.2 s while two leases were renewed
/// through the leader elected meanwhile; the paused leader woke up with
/// stale deadlines and its revokes were forwarded to the new leader and
/// applied (fixed: expiry revokes are only proposed by a leader itself,
/// and renewals confirm leadership first; see the server's lease test
/// `a_paused_leader_waking_up_does_not_revoke_leases_renewed_elsewhere`).
#[test]
fn lease_early_expiry_after_a_leader_pause() {
    let r = lease::check(&history("lease-early-expiry-after-pause.jsonl"));
    assert!(!r.valid());
    assert!(
        r.violations.iter().all(|v| v.contains("expired early")),
        "{:?}",
        r.violations
    );
    // Both leases, from the first keep-alive after the leader woke up.
    assert!(
        r.violations[0].contains("lease 17daa205eb364b01 expired early: a keep-alive at 7.070s"),
        "{}",
        r.violations[0]
    );
    assert!(r
        .violations
        .iter()
        .any(|v| v.contains("lease 20ba205eb364901")));
}
