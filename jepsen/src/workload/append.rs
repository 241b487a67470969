//! The append workload: transactions of one to three micro-operations on
//! distinct lists, each an append of a unique value or a read. A list is
//! a key whose value is its elements, comma-separated. A transaction reads
//! every key it touches (one read-only Txn), then commits with one Txn
//! that compares each key's mod_revision with what it read (0: absent)
//! and puts the appended lists: all of it or nothing. A failed compare is
//! a failed transaction (nothing happened); an error in the commit leaves
//! it of unknown outcome. Slots move on to fresh keys after
//! `ops_per_key` operations, as in the register workload.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};

use crate::client::{Client, Error};
use crate::history::{History, Kind, Mop, Op};
use crate::workload::{Processes, Slots};

#[derive(Clone, Debug)]
pub struct AppendOptions {
    pub keys: usize,
    pub ops_per_key: usize,
    pub clients: usize,
    pub timeout: Duration,
    pub think: Duration,
}

pub const PREFIX: &str = "a/";

/// A list as stored.
pub fn encode(list: &[u64]) -> String {
    list.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A stored list; None when it does not parse.
pub fn decode(v: &[u8]) -> Option<Vec<u64>> {
    let s = std::str::from_utf8(v).ok()?;
    if s.is_empty() {
        return Some(Vec::new());
    }
    s.split(',').map(|x| x.parse().ok()).collect()
}

pub async fn run(
    history: History,
    endpoints: Vec<String>,
    opts: AppendOptions,
    deadline: Instant,
    seed: u64,
    processes: Arc<Processes>,
) -> anyhow::Result<()> {
    let slots = Arc::new(Slots::new(opts.keys, opts.ops_per_key));
    let mut tasks = Vec::new();
    for w in 0..opts.clients {
        let client = Client::new(&endpoints[w % endpoints.len()], opts.timeout)?;
        let history = history.clone();
        let opts = opts.clone();
        let processes = processes.clone();
        let slots = slots.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed ^ 0xa99e ^ (w as u64));
            let mut process = processes.next();
            let mut seq = 0u64;
            while Instant::now() < deadline {
                let n = rng.usize(1..=3.min(opts.keys));
                let mut chosen: Vec<usize> = Vec::new();
                while chosen.len() < n {
                    let s = rng.usize(..opts.keys);
                    if !chosen.contains(&s) {
                        chosen.push(s);
                    }
                }
                let mops: Vec<Mop> = chosen
                    .into_iter()
                    .map(|slot| {
                        let key = slots.key(PREFIX, slot);
                        if rng.bool() {
                            seq += 1;
                            Mop::Append {
                                key,
                                value: (process << 24) | seq,
                            }
                        } else {
                            Mop::Read { key, list: None }
                        }
                    })
                    .collect();
                if transact(&history, process, &client, mops).await {
                    process = processes.next();
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

/// Runs one transaction and records it; returns whether its outcome is
/// unknown.
pub async fn transact(h: &History, p: u64, c: &Client, mops: Vec<Mop>) -> bool {
    h.record(p, Kind::Invoke, Op::Txn { mops: mops.clone() }, None);
    let note = |e: Option<&Error>| {
        Some(match e {
            None => c.endpoint.clone(),
            Some(e) => format!("{}: {e}", c.endpoint),
        })
    };
    let keys: Vec<String> = mops
        .iter()
        .map(|m| match m {
            Mop::Append { key, .. } | Mop::Read { key, .. } => key.clone(),
        })
        .collect();
    // Read everything the transaction touches, at one revision.
    let read = TxnRequest {
        compare: vec![],
        success: keys
            .iter()
            .map(|k| RequestOp {
                request: Some(Request::RequestRange(RangeRequest {
                    key: k.clone().into_bytes().into(),
                    ..Default::default()
                })),
            })
            .collect(),
        failure: vec![],
    };
    let r = match c.txn(read).await {
        Ok(r) => r,
        Err(e) => {
            // Nothing was written yet.
            h.record(p, Kind::Fail, Op::Txn { mops }, note(Some(&e)));
            return false;
        }
    };
    let mut seen: Vec<(Vec<u64>, i64)> = Vec::new();
    for resp in r.responses {
        let Some(Response::ResponseRange(range)) = resp.response else {
            h.record(
                p,
                Kind::Fail,
                Op::Txn { mops },
                Some("odd read response".into()),
            );
            return false;
        };
        match range.kvs.first() {
            None => seen.push((Vec::new(), 0)),
            Some(kv) => match decode(&kv.value) {
                Some(list) => seen.push((list, kv.mod_revision)),
                None => {
                    // A value no transaction wrote: record it as read, as
                    // a list holding a value nobody appended.
                    seen.push((vec![u64::MAX], kv.mod_revision));
                }
            },
        }
    }
    let done: Vec<Mop> = mops
        .iter()
        .zip(&seen)
        .map(|(m, (list, _))| match m {
            Mop::Read { key, .. } => Mop::Read {
                key: key.clone(),
                list: Some(list.clone()),
            },
            a => a.clone(),
        })
        .collect();
    if !mops.iter().any(|m| matches!(m, Mop::Append { .. })) {
        h.record(p, Kind::Ok, Op::Txn { mops: done }, note(None));
        return false;
    }
    let commit = TxnRequest {
        compare: keys
            .iter()
            .zip(&seen)
            .map(|(k, (_, rev))| Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: k.clone().into_bytes().into(),
                target_union: Some(TargetUnion::ModRevision(*rev)),
                ..Default::default()
            })
            .collect(),
        success: mops
            .iter()
            .zip(&seen)
            .filter_map(|(m, (list, _))| match m {
                Mop::Append { key, value } => {
                    let mut next = list.clone();
                    next.push(*value);
                    Some(RequestOp {
                        request: Some(Request::RequestPut(PutRequest {
                            key: key.clone().into_bytes().into(),
                            value: encode(&next).into_bytes().into(),
                            ..Default::default()
                        })),
                    })
                }
                Mop::Read { .. } => None,
            })
            .collect(),
        failure: vec![],
    };
    match c.txn(commit).await {
        Ok(r) if r.succeeded => {
            h.record(p, Kind::Ok, Op::Txn { mops: done }, note(None));
            false
        }
        Ok(_) => {
            h.record(p, Kind::Fail, Op::Txn { mops }, Some("conflict".into()));
            false
        }
        Err(e) if e.never_sent() => {
            h.record(p, Kind::Fail, Op::Txn { mops }, note(Some(&e)));
            false
        }
        Err(e) => {
            h.record(p, Kind::Info, Op::Txn { mops }, note(Some(&e)));
            true
        }
    }
}

/// The final read of list `key`, recorded as a one-read transaction
/// (note "final read"); retried until it succeeds or 30 s pass.
pub async fn final_read(h: &History, p: u64, c: &Client, key: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mops = vec![Mop::Read {
            key: key.to_string(),
            list: None,
        }];
        h.record(p, Kind::Invoke, Op::Txn { mops: mops.clone() }, None);
        match c.read_raw(key).await {
            Ok(v) => {
                let list = match v {
                    None => Vec::new(),
                    Some(v) => decode(&v).unwrap_or_else(|| vec![u64::MAX]),
                };
                let mops = vec![Mop::Read {
                    key: key.to_string(),
                    list: Some(list),
                }];
                h.record(p, Kind::Ok, Op::Txn { mops }, Some("final read".into()));
                return Ok(());
            }
            Err(e) => {
                h.record(p, Kind::Fail, Op::Txn { mops }, Some(e.to_string()));
                if Instant::now() > deadline {
                    anyhow::bail!("final read of {key}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Every list key the history touched.
pub fn keys(events: &[crate::history::Event]) -> Vec<String> {
    let mut out: HashMap<String, ()> = HashMap::new();
    for e in events {
        if let Op::Txn { mops } = &e.op {
            for m in mops {
                let (Mop::Append { key, .. } | Mop::Read { key, .. }) = m;
                out.insert(key.clone(), ());
            }
        }
    }
    let mut v: Vec<String> = out.into_keys().collect();
    v.sort();
    v
}
