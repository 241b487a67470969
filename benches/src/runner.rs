//! Closed-loop clients: each client keeps one request in flight, the
//! clients share `--conns` HTTP/2 connections, and each records its own
//! latencies (merged at the end, so recording never contends).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use cairn_proto::etcdserverpb::{request_op, PutRequest, RequestOp, TxnRequest};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tonic::transport::{Channel, Endpoint};

use crate::grpc::{Conn, Kv};
use crate::options::Common;
use crate::report::{histogram, record, Latency, Report};

/// Connections to the endpoints, handed to clients in turn: `--conns`
/// lean HTTP/2 connections for unary KV calls, and as many tonic channels
/// for the streaming calls, opened on their first use.
#[derive(Clone)]
pub struct Pool {
    conns: Vec<Conn>,
    channels: Vec<Channel>,
}

impl Pool {
    /// Opens `conns` connections, spread over the endpoints in turn.
    pub async fn connect(c: &Common) -> Result<Pool> {
        let mut conns = Vec::with_capacity(c.conns);
        let mut channels = Vec::with_capacity(c.conns);
        let tls = if c.tls.enabled() {
            Some((c.tls.connector()?, c.tls.tonic()?))
        } else {
            None
        };
        for i in 0..c.conns {
            let ep = &c.endpoints[i % c.endpoints.len()];
            let host = ep.split("://").last().unwrap_or(ep);
            let url = match &tls {
                Some(_) => format!("https://{host}"),
                None => format!("http://{host}"),
            };
            let mut ch = Endpoint::from_shared(url.clone())
                .with_context(|| format!("endpoint {ep:?}"))?
                .connect_timeout(Duration::from_secs(5));
            if let Some((_, config)) = &tls {
                ch = ch.tls_config(config.clone()).context("TLS settings")?;
            }
            channels.push(ch.connect_lazy());
            conns.push(Conn::connect(&url, tls.as_ref().map(|(c, _)| c)).await?);
        }
        Ok(Pool { conns, channels })
    }

    /// The connection for client `i`.
    pub fn channel(&self, i: usize) -> Channel {
        self.channels[i % self.channels.len()].clone()
    }

    /// The KV client for client `i`.
    pub fn kv(&self, i: usize) -> Kv {
        self.conns[i % self.conns.len()].kv()
    }
}

/// How long a run waits with no call answered before it fails.
const STALL: Duration = Duration::from_secs(60);

/// One client's request loop body.
pub trait Worker: Send + 'static {
    /// Sends the `op`-th request of the run and waits for its answer; names
    /// the latency series it belongs to ("put", "get", …).
    fn call(&mut self, op: u64)
        -> impl Future<Output = Result<&'static str, tonic::Status>> + Send;
}

/// What one client measured.
struct Tally {
    series: BTreeMap<&'static str, Histogram<u64>>,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
}

/// A progress bar on the terminal (hidden when stderr is not one, or with
/// `--quiet`), counting requests or seconds.
pub fn progress(c: &Common, label: &str, len: u64) -> ProgressBar {
    if c.quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>14} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// When the `op`-th request of a run started at `started` is due at
/// `rate` requests per second (none when the rate is unlimited).
fn scheduled(started: Instant, rate: u64, op: u64) -> Option<Instant> {
    (rate > 0).then(|| started + Duration::from_secs_f64(op as f64 / rate as f64))
}

/// Runs one worker per client until `--total` requests were sent or
/// `--duration` has passed, and reports.
pub async fn closed_loop<W: Worker>(c: &Common, load: &str, workers: Vec<W>) -> Result<Report> {
    let cpu_before = crate::process::total_cpu_seconds(&c.pids);
    let started = Instant::now();
    let deadline = c.duration.map(|d| started + d);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let total = if deadline.is_some() {
        u64::MAX
    } else {
        c.total
    };
    let bar = match c.duration {
        Some(d) => progress(c, load, d.as_secs().max(1)),
        None => progress(c, load, c.total),
    };
    let rate = c.rate;
    let mut tasks = Vec::new();
    for mut w in workers {
        let next = next.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = Tally {
                series: BTreeMap::new(),
                ops: 0,
                errors: 0,
                first_error: None,
            };
            loop {
                let op = next.fetch_add(1, Ordering::Relaxed);
                if op >= total || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let due = scheduled(started, rate, op);
                if due.zip(deadline).is_some_and(|(at, d)| at >= d) {
                    break;
                }
                let t0 = match due {
                    Some(at) => {
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    None => Instant::now(),
                };
                match w.call(op).await {
                    Ok(name) => {
                        record(t.series.entry(name).or_insert_with(histogram), t0.elapsed());
                        t.ops += 1;
                    }
                    Err(e) => {
                        t.errors += 1;
                        if t.first_error.is_none() {
                            t.first_error = Some(format!("{:?}: {}", e.code(), e.message()));
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            t
        }));
    }
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let ticker = {
        let bar = bar.clone();
        let done = done.clone();
        let timed = c.duration.is_some();
        tokio::spawn(async move {
            let (mut last, mut since) = (0, Instant::now());
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = done.load(Ordering::Relaxed);
                if timed {
                    bar.set_position(started.elapsed().as_secs());
                    bar.set_message(format!("{now} requests"));
                } else {
                    bar.set_position(now);
                }
                // Calls carry no deadline of their own; a server that stops
                // answering ends the run here instead of hanging it.
                if now != last {
                    (last, since) = (now, Instant::now());
                } else if since.elapsed() >= STALL {
                    aborts.iter().for_each(|a| a.abort());
                    return;
                }
            }
        })
    };
    let mut series: BTreeMap<&'static str, Histogram<u64>> = BTreeMap::new();
    let (mut ops, mut errors, mut first_error) = (0, 0, None);
    for task in tasks {
        let t = match task.await {
            Ok(t) => t,
            Err(e) if e.is_cancelled() => {
                ticker.abort();
                bar.finish_and_clear();
                bail!("no answer to any client for {} s", STALL.as_secs());
            }
            Err(e) => return Err(e).context("client task"),
        };
        for (name, h) in t.series {
            series
                .entry(name)
                .or_insert_with(histogram)
                .add(&h)
                .context("merge histograms")?;
        }
        ops += t.ops;
        errors += t.errors;
        first_error = first_error.or(t.first_error);
    }
    let seconds = started.elapsed().as_secs_f64();
    ticker.abort();
    bar.finish_and_clear();
    let mut latencies: Vec<Latency> = series.iter().map(|(n, h)| Latency::of(n, h)).collect();
    if series.len() > 1 {
        let mut all = histogram();
        for h in series.values() {
            all.add(h).context("merge histograms")?;
        }
        latencies.insert(0, Latency::of("all", &all));
    }
    let mut servers = crate::process::servers(&c.pids, &c.data_dirs);
    servers.cpu_seconds = crate::process::total_cpu_seconds(&c.pids)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    Ok(Report {
        load: load.to_string(),
        endpoints: c.endpoints.clone(),
        clients: c.clients,
        conns: c.conns,
        ops,
        errors,
        first_error,
        seconds,
        throughput: ops as f64 / seconds,
        latencies,
        extra: Vec::new(),
        servers,
    })
}

/// Writes `keys` (all with `value`) in transactions of up to 100 puts, 16
/// at a time: filling a key space before a read load, quickly.
pub async fn preload(pool: &Pool, keys: Vec<Bytes>, value: Bytes) -> Result<()> {
    let chunks: Vec<Vec<Bytes>> = keys.chunks(100).map(|c| c.to_vec()).collect();
    let queue = Arc::new(std::sync::Mutex::new(chunks));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let queue = queue.clone();
        let mut kv = pool.kv(i);
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let chunk = match queue.lock() {
                    Ok(mut q) => q.pop(),
                    Err(_) => None,
                };
                let Some(chunk) = chunk else {
                    return Ok::<(), tonic::Status>(());
                };
                let success = chunk
                    .into_iter()
                    .map(|key| RequestOp {
                        request: Some(request_op::Request::RequestPut(PutRequest {
                            key,
                            value: value.clone(),
                            ..Default::default()
                        })),
                    })
                    .collect();
                kv.txn(TxnRequest {
                    success,
                    ..Default::default()
                })
                .await?;
            }
        }));
    }
    for t in tasks {
        t.await.context("preload task")?.context("preload txn")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_due_on_the_rate_schedule() {
        let t = Instant::now();
        assert_eq!(scheduled(t, 0, 7), None);
        assert_eq!(scheduled(t, 100, 0), Some(t));
        assert_eq!(
            scheduled(t, 100, 250),
            Some(t + Duration::from_millis(2500))
        );
    }
}
