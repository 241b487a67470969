//! The watch workload: writers put unique values to a few keys under
//! `w/`; one watcher per member watches the prefix from revision 1 with
//! prev_kv, asks for progress every `progress_every`, and on any error
//! (including a stream cancelled for having no leader: it sends
//! `hasleader`) reconnects to its member and resumes from its last
//! revision + 1. What each watcher saw is checked by
//! [`crate::checker::watch`].

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{WatchCreateRequest, WatchProgressRequest, WatchRequest};
use cairn_proto::mvccpb::event::EventType;
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;

use crate::client::{parse, Client};
use crate::history::{History, Kind, Op};
use crate::workload::Processes;

pub const PREFIX: &str = "w/";
const PREFIX_END: &str = "w0";

#[derive(Clone, Debug)]
pub struct WatchOptions {
    pub keys: usize,
    pub writers: usize,
    pub timeout: Duration,
    pub think: Duration,
    pub progress_every: Duration,
}

/// One event as a watcher saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub revision: i64,
    pub key: String,
    /// None: a delete.
    pub value: Option<u64>,
    /// The previous value (prev_kv); None when the key did not exist.
    pub prev: Option<u64>,
}

/// Everything one watcher saw.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WatcherLog {
    pub endpoint: String,
    pub events: Vec<Seen>,
    /// Progress notifications: (revision, number of events received
    /// before it).
    pub progress: Vec<(i64, usize)>,
    pub reconnects: usize,
    /// Errors and cancellations, in order (at most the first 100).
    pub errors: Vec<String>,
    /// Whether it got a progress notification at or past the target
    /// revision before it was stopped.
    pub caught_up: bool,
}

/// Tells watchers when to stop: once `target` (> 0) is set, a watcher
/// stops at its first progress notification at or past it; `abort` stops
/// it at once.
#[derive(Default)]
pub struct Stop {
    pub target: AtomicI64,
    pub abort: AtomicBool,
}

/// Writers until `deadline`.
pub async fn write(
    history: History,
    endpoints: Vec<String>,
    opts: WatchOptions,
    deadline: Instant,
    seed: u64,
    processes: Arc<Processes>,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for w in 0..opts.writers {
        let client = Client::new(&endpoints[w % endpoints.len()], opts.timeout)?;
        let history = history.clone();
        let opts = opts.clone();
        let processes = processes.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed ^ 0x5157 ^ (w as u64));
            let mut process = processes.next();
            let mut seq = 0;
            while Instant::now() < deadline {
                seq += 1;
                let key = format!("{PREFIX}{}", rng.usize(..opts.keys));
                let value = (process << 24) | seq;
                let op = |revision| Op::Put {
                    key: key.clone(),
                    value,
                    revision,
                };
                history.record(process, Kind::Invoke, op(None), None);
                match client.write(&key, value).await {
                    Ok(rev) => {
                        history.record(process, Kind::Ok, op(Some(rev)), None);
                    }
                    Err(e) if e.never_sent() => {
                        history.record(
                            process,
                            Kind::Fail,
                            op(None),
                            Some(format!("{}: {e}", client.endpoint)),
                        );
                    }
                    Err(e) => {
                        history.record(
                            process,
                            Kind::Info,
                            op(None),
                            Some(format!("{}: {e}", client.endpoint)),
                        );
                        process = processes.next();
                    }
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

/// One watcher of `endpoint`, from revision 1 until told to stop.
pub async fn watcher(endpoint: String, opts: WatchOptions, stop: Arc<Stop>) -> WatcherLog {
    let mut log = WatcherLog {
        endpoint: endpoint.clone(),
        ..Default::default()
    };
    let mut next = 1i64;
    let err = |log: &mut WatcherLog, e: String| {
        if log.errors.len() < 100 {
            log.errors.push(e);
        }
    };
    'connect: while !stop.abort.load(Ordering::Relaxed) {
        if log.reconnects > 0 || !log.errors.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ch = match crate::cluster::channel(&endpoint, opts.timeout) {
            Ok(ch) => ch,
            Err(e) => {
                err(&mut log, e.to_string());
                continue;
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: PREFIX.as_bytes().to_vec().into(),
                range_end: PREFIX_END.as_bytes().to_vec().into(),
                start_revision: next,
                prev_kv: true,
                ..Default::default()
            })),
        };
        if tx.send(create).await.is_err() {
            continue;
        }
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        req.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        let mut stream =
            match tokio::time::timeout(opts.timeout, WatchClient::new(ch).watch(req)).await {
                Ok(Ok(s)) => s.into_inner(),
                Ok(Err(e)) => {
                    err(&mut log, format!("open: {e}"));
                    log.reconnects += 1;
                    continue;
                }
                Err(_) => {
                    err(&mut log, "open: timeout".into());
                    log.reconnects += 1;
                    continue;
                }
            };
        let mut tick = tokio::time::interval(opts.progress_every);
        let mut last_message = Instant::now();
        loop {
            if stop.abort.load(Ordering::Relaxed) {
                break 'connect;
            }
            tokio::select! {
                _ = tick.tick() => {
                    // A stream that has said nothing for long (a member
                    // partitioned away answers no progress) is reopened.
                    if last_message.elapsed() > opts.timeout * 4 {
                        err(&mut log, "no message for too long".into());
                        log.reconnects += 1;
                        continue 'connect;
                    }
                    let progress = WatchRequest {
                        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
                    };
                    if tx.send(progress).await.is_err() {
                        log.reconnects += 1;
                        continue 'connect;
                    }
                }
                msg = stream.message() => {
                    last_message = Instant::now();
                    let r = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => {
                            err(&mut log, "stream ended".into());
                            log.reconnects += 1;
                            continue 'connect;
                        }
                        Err(e) => {
                            err(&mut log, format!("{}: {}", e.code(), e.message()));
                            log.reconnects += 1;
                            continue 'connect;
                        }
                    };
                    if r.canceled {
                        err(&mut log, format!(
                            "canceled: {} (compact_revision {})",
                            r.cancel_reason, r.compact_revision
                        ));
                        log.reconnects += 1;
                        continue 'connect;
                    }
                    if r.created {
                        continue;
                    }
                    if r.events.is_empty() {
                        let rev = r.header.map(|h| h.revision).unwrap_or_default();
                        log.progress.push((rev, log.events.len()));
                        let target = stop.target.load(Ordering::Relaxed);
                        if target > 0 && rev >= target {
                            log.caught_up = true;
                            break 'connect;
                        }
                        continue;
                    }
                    for ev in r.events {
                        let Some(kv) = ev.kv else { continue };
                        let value = if ev.r#type == EventType::Delete as i32 {
                            None
                        } else {
                            Some(parse(&kv.value).unwrap_or(u64::MAX))
                        };
                        let prev = ev
                            .prev_kv
                            .map(|p| parse(&p.value).unwrap_or(u64::MAX));
                        next = next.max(kv.mod_revision + 1);
                        log.events.push(Seen {
                            revision: kv.mod_revision,
                            key: String::from_utf8_lossy(&kv.key).into_owned(),
                            value,
                            prev,
                        });
                    }
                }
            }
        }
    }
    log
}
