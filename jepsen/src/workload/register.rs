//! The register workload: per-key reads, writes and compare-and-sets
//! (a Txn comparing the value) over a few keys, every written value
//! unique. Reads are linearizable unless `serializable` is set, which
//! lets a member answer from its own, possibly stale, state.
//!
//! Each of the `keys` slots moves on to a fresh key after `ops_per_key`
//! operations (`r/<slot>/<generation>`), as Jepsen's independent keys do:
//! the checker's search grows with the number of concurrent operations of
//! unknown outcome on one key, so keys must stay short-lived.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{Client, Error};
use crate::history::{History, Kind, Op};
use crate::workload::{Processes, Slots};

#[derive(Clone, Debug)]
pub struct RegisterOptions {
    /// Registers in use at a time.
    pub keys: usize,
    /// Operations on one register before its slot moves to a new one.
    pub ops_per_key: usize,
    /// Concurrent clients, spread over the members.
    pub clients: usize,
    pub serializable: bool,
    pub timeout: Duration,
    /// Pause between one client's operations.
    pub think: Duration,
}

/// What a read of a value that does not parse is recorded as (no client
/// writes it).
pub const GARBLED: u64 = u64::MAX - 1;

/// Runs until `deadline`; every operation is in `history`.
pub async fn run(
    history: History,
    endpoints: Vec<String>,
    opts: RegisterOptions,
    deadline: Instant,
    seed: u64,
    processes: Arc<Processes>,
) -> anyhow::Result<()> {
    let slots = Arc::new(Slots::new(opts.keys, opts.ops_per_key));
    let mut tasks = Vec::new();
    for worker in 0..opts.clients {
        let client = Client::new(&endpoints[worker % endpoints.len()], opts.timeout)?;
        let history = history.clone();
        let opts = opts.clone();
        let processes = processes.clone();
        let slots = slots.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed ^ (worker as u64).wrapping_mul(0x9e37));
            let mut process = processes.next();
            let mut seq = 0u64;
            // The last value this client saw in each register it used.
            let mut known: HashMap<String, Option<u64>> = HashMap::new();
            while Instant::now() < deadline {
                let slot = rng.usize(..opts.keys);
                let key = slots.key("r/", slot);
                let last = known.entry(key.clone()).or_default();
                let roll = rng.u32(..100);
                let unknown = if roll < 45 || (roll >= 80 && last.is_none()) {
                    read(&history, process, &client, &key, opts.serializable, last).await
                } else if roll < 80 {
                    seq += 1;
                    let value = (process << 24) | seq;
                    write(&history, process, &client, &key, value, last).await
                } else {
                    seq += 1;
                    let to = (process << 24) | seq;
                    let from = last.unwrap_or_default();
                    cas(&history, process, &client, &key, from, to, last).await
                };
                if unknown {
                    process = processes.next();
                    known.clear();
                }
                tokio::time::sleep(opts.think).await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}

fn note(client: &Client, e: Option<&Error>) -> Option<String> {
    Some(match e {
        None => client.endpoint.clone(),
        Some(e) => format!("{}: {e}", client.endpoint),
    })
}

/// Returns whether the outcome is unknown.
async fn read(
    h: &History,
    p: u64,
    c: &Client,
    key: &str,
    serializable: bool,
    known: &mut Option<u64>,
) -> bool {
    let op = |value| Op::Read {
        key: key.to_string(),
        value,
    };
    h.record(p, Kind::Invoke, op(None), None);
    match c.read(key, serializable).await {
        Ok(v) => {
            h.record(p, Kind::Ok, op(v), note(c, None));
            *known = v;
        }
        // A value nobody wrote: recorded as read, for the checker to
        // reject.
        Err(e @ Error::Garbled(_)) => {
            h.record(p, Kind::Ok, op(Some(GARBLED)), note(c, Some(&e)));
        }
        // A read changes nothing: whatever went wrong, it failed.
        Err(e) => {
            h.record(p, Kind::Fail, op(None), note(c, Some(&e)));
        }
    }
    false
}

async fn write(
    h: &History,
    p: u64,
    c: &Client,
    key: &str,
    value: u64,
    known: &mut Option<u64>,
) -> bool {
    let op = Op::Write {
        key: key.to_string(),
        value,
    };
    h.record(p, Kind::Invoke, op.clone(), None);
    match c.write(key, value).await {
        Ok(_) => {
            h.record(p, Kind::Ok, op, note(c, None));
            *known = Some(value);
            false
        }
        Err(e) if e.never_sent() => {
            h.record(p, Kind::Fail, op, note(c, Some(&e)));
            false
        }
        Err(e) => {
            h.record(p, Kind::Info, op, note(c, Some(&e)));
            true
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn cas(
    h: &History,
    p: u64,
    c: &Client,
    key: &str,
    from: u64,
    to: u64,
    known: &mut Option<u64>,
) -> bool {
    let op = |swapped| Op::Cas {
        key: key.to_string(),
        from,
        to,
        swapped,
    };
    h.record(p, Kind::Invoke, op(None), None);
    match c.cas(key, from, to).await {
        Ok(swapped) => {
            h.record(p, Kind::Ok, op(Some(swapped)), note(c, None));
            *known = if swapped { Some(to) } else { None };
            false
        }
        Err(e) if e.never_sent() => {
            h.record(p, Kind::Fail, op(None), note(c, Some(&e)));
            false
        }
        Err(e) => {
            h.record(p, Kind::Info, op(None), note(c, Some(&e)));
            true
        }
    }
}
