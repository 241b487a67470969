//! `watch-latency`: `--watchers` watchers of one key, spread over
//! `--streams` watch streams (and the connections), while one client puts
//! that key `--put-rate` times a second. Measures the put-to-event delay
//! of every event at every watcher ("delivery"), the puts' own latency
//! ("put"), and — with `--pid` — the server memory each idle watcher
//! costs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{PutRequest, WatchCreateRequest, WatchRequest};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::options::Common;
use crate::process;
use crate::report::{histogram, record, Latency, Report};
use crate::runner::{progress, Pool};

const KEY: &[u8] = b"watch-latency";

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Watchers in all.
    #[arg(long, default_value_t = 10_000)]
    pub watchers: u64,
    /// Watch streams the watchers are spread over.
    #[arg(long, default_value_t = 10)]
    pub streams: u64,
    /// Puts per second.
    #[arg(long, default_value_t = 100)]
    pub put_rate: u64,
    /// Puts in all (ignored when --duration is given).
    #[arg(long, default_value_t = 1000)]
    pub put_total: u64,
}

/// One stream's reader: what it received.
struct Received {
    delivery: Histogram<u64>,
    events: u64,
    out_of_order: u64,
}

pub async fn run(c: &Common, a: &Args) -> Result<Report> {
    if a.streams == 0 || a.watchers < a.streams || a.put_rate == 0 {
        bail!("need --streams ≥ 1, --watchers ≥ --streams and --put-rate ≥ 1");
    }
    let puts = match c.duration {
        Some(d) => (d.as_secs_f64() * a.put_rate as f64).ceil() as u64,
        None => a.put_total,
    };
    let pool = Pool::connect(c).await?;
    let started = Instant::now();
    // Send time of put number n, in µs since `started` (+1, so 0 = unsent).
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..puts).map(|_| AtomicU64::new(0)).collect());
    let created = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let rss_before = process::servers(&c.pids, &[]).rss_mib;

    let mut readers = Vec::new();
    let mut senders = Vec::new();
    for s in 0..a.streams {
        let n = a.watchers / a.streams + u64::from(s < a.watchers % a.streams);
        let (tx, rx) = mpsc::channel(n as usize + 1);
        for _ in 0..n {
            tx.send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: Bytes::from_static(KEY),
                    ..Default::default()
                })),
            })
            .await
            .context("queue watch create")?;
        }
        let mut stream = WatchClient::new(pool.channel(s as usize))
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .context("open watch stream")?
            .into_inner();
        senders.push(tx);
        let (sent, created, received) = (sent.clone(), created.clone(), received.clone());
        let mut stop = stop_rx.clone();
        readers.push(tokio::spawn(async move {
            let mut r = Received {
                delivery: histogram(),
                events: 0,
                out_of_order: 0,
            };
            let mut last_rev = std::collections::HashMap::<i64, i64>::new();
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    _ = stop.changed() => break,
                };
                let Ok(Some(resp)) = msg else { break };
                if resp.created {
                    created.fetch_add(1, Ordering::Relaxed);
                }
                let now = started.elapsed().as_micros() as u64 + 1;
                for ev in &resp.events {
                    let Some(kv) = &ev.kv else { continue };
                    let seq: Option<usize> = std::str::from_utf8(&kv.value)
                        .ok()
                        .and_then(|s| s.parse().ok());
                    if let Some(at) = seq.and_then(|n| sent.get(n)) {
                        let t = at.load(Ordering::Acquire);
                        if t > 0 {
                            let us = now.saturating_sub(t).max(1);
                            r.delivery.saturating_record(us);
                        }
                    }
                    let last = last_rev.entry(resp.watch_id).or_insert(0);
                    if kv.mod_revision <= *last {
                        r.out_of_order += 1;
                    }
                    *last = kv.mod_revision;
                    r.events += 1;
                }
                received.fetch_add(resp.events.len() as u64, Ordering::Relaxed);
            }
            r
        }));
    }
    let create_deadline = Instant::now() + Duration::from_secs(120);
    while created.load(Ordering::Relaxed) < a.watchers {
        if Instant::now() > create_deadline {
            bail!(
                "only {} of {} watchers were created in 120 s",
                created.load(Ordering::Relaxed),
                a.watchers
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the server settle before reading its memory with idle watchers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = process::servers(&c.pids, &[]).rss_mib;

    let mut kv = pool.kv(0);
    let mut put_lat = histogram();
    let mut errors = 0u64;
    let mut first_error = None;
    let bar = progress(c, "watch-latency", puts);
    let interval = Duration::from_secs_f64(1.0 / a.put_rate as f64);
    let put_start = Instant::now();
    for n in 0..puts {
        let due = put_start + interval * n as u32;
        tokio::time::sleep_until(due.into()).await;
        sent[n as usize].store(started.elapsed().as_micros() as u64 + 1, Ordering::Release);
        let t0 = Instant::now();
        match kv
            .put(PutRequest {
                key: Bytes::from_static(KEY),
                value: Bytes::from(n.to_string()),
                ..Default::default()
            })
            .await
        {
            Ok(_) => record(&mut put_lat, t0.elapsed()),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{:?}: {}", e.code(), e.message()));
            }
        }
        bar.set_position(n + 1);
    }
    let put_seconds = put_start.elapsed().as_secs_f64();
    let expected = (puts - errors) * a.watchers;
    let wait_deadline = Instant::now() + Duration::from_secs(60);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < wait_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bar.finish_and_clear();
    let _ = stop_tx.send(true);
    drop(senders);
    let mut delivery = histogram();
    let (mut events, mut out_of_order) = (0u64, 0u64);
    for r in readers {
        let r = r.await.context("watch reader")?;
        delivery.add(&r.delivery).context("merge histograms")?;
        events += r.events;
        out_of_order += r.out_of_order;
    }
    let missing = expected.saturating_sub(events);
    if missing > 0 && first_error.is_none() {
        first_error = Some(format!("{missing} events never arrived"));
    }
    if out_of_order > 0 && first_error.is_none() {
        first_error = Some(format!("{out_of_order} events out of revision order"));
    }
    let mut extra = vec![
        ("watchers".to_string(), a.watchers as f64),
        ("events".to_string(), events as f64),
        ("events/s".to_string(), events as f64 / put_seconds),
    ];
    if let (Some(b), Some(after)) = (rss_before, rss_after) {
        extra.push((
            "server KiB per idle watcher".to_string(),
            (after - b) * 1024.0 / a.watchers as f64,
        ));
    }
    Ok(Report {
        load: "watch-latency".into(),
        endpoints: c.endpoints.clone(),
        clients: 1,
        conns: c.conns,
        ops: puts - errors,
        errors: errors + missing + out_of_order,
        first_error,
        seconds: put_seconds,
        throughput: (puts - errors) as f64 / put_seconds,
        latencies: vec![
            Latency::of("delivery", &delivery),
            Latency::of("put", &put_lat),
        ],
        extra,
        servers: process::servers(&c.pids, &c.data_dirs),
    })
}
