//! `lease-revoke`: does revoking a lease with many keys stall writes?
//!
//! A lease is granted and `--lease-keys` keys are attached to it (puts in
//! transactions of 100, before the measurement). Then `--clients` clients
//! put for `--duration` (default 6 s); at the middle of it the lease is
//! revoked. Each put's latency lands in one of three series: `before`
//! (finished before the revoke was sent), `during` (overlapping the revoke
//! call), `after` (sent after it returned). The report adds
//! `during p99 / before p99`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    request_op, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RequestOp, TxnRequest,
};

use crate::loads::put::Putter;
use crate::options::Common;
use crate::report::Report;
use crate::runner::{closed_loop, Pool, Worker};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Keys attached to the revoked lease.
    #[arg(long, default_value_t = 10_000)]
    pub lease_keys: u64,
}

/// Revoke window, µs since the run's start (+1; 0 = not yet).
struct Window {
    start: Instant,
    sent: AtomicU64,
    returned: AtomicU64,
}

/// A putter whose latencies are filed by when they ran relative to the
/// revoke.
struct Timed {
    putter: Putter,
    window: Arc<Window>,
}

impl Worker for Timed {
    async fn call(&mut self, op: u64) -> Result<&'static str, tonic::Status> {
        let t0 = self.window.start.elapsed().as_micros() as u64 + 1;
        self.putter.put(op).await?;
        let t1 = self.window.start.elapsed().as_micros() as u64 + 1;
        let sent = self.window.sent.load(Ordering::Acquire);
        let returned = self.window.returned.load(Ordering::Acquire);
        Ok(if sent == 0 || t1 < sent {
            "before"
        } else if returned != 0 && t0 > returned {
            "after"
        } else {
            "during"
        })
    }
}

pub async fn run(c: &Common, a: &Args) -> Result<Report> {
    let pool = Pool::connect(c).await?;
    let mut lease = LeaseClient::new(pool.channel(0));
    let id = lease
        .lease_grant(LeaseGrantRequest { ttl: 3600, id: 0 })
        .await
        .context("lease grant")?
        .into_inner()
        .id;
    let value = c.value();
    let mut kv = pool.kv(0);
    let keys: Vec<Bytes> = (0..a.lease_keys)
        .map(|i| Bytes::from(format!("revoke/{i:08}")))
        .collect();
    for chunk in keys.chunks(100) {
        let success = chunk
            .iter()
            .map(|k| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: k.clone(),
                    value: value.clone(),
                    lease: id,
                    ..Default::default()
                })),
            })
            .collect();
        kv.txn(TxnRequest {
            success,
            ..Default::default()
        })
        .await
        .context("attach keys")?;
    }

    let mut c = c.clone();
    let duration = *c.duration.get_or_insert(Duration::from_secs(6));
    let window = Arc::new(Window {
        start: Instant::now(),
        sent: AtomicU64::new(0),
        returned: AtomicU64::new(0),
    });
    let revoker = {
        let window = window.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration / 2).await;
            window.sent.store(
                window.start.elapsed().as_micros() as u64 + 1,
                Ordering::Release,
            );
            let t = Instant::now();
            let r = lease.lease_revoke(LeaseRevokeRequest { id }).await;
            window.returned.store(
                window.start.elapsed().as_micros() as u64 + 1,
                Ordering::Release,
            );
            r.map(|_| t.elapsed())
        })
    };
    let workers = Putter::all(&c, &pool)
        .into_iter()
        .map(|putter| Timed {
            putter,
            window: window.clone(),
        })
        .collect();
    let mut report = closed_loop(&c, "lease-revoke", workers).await?;
    let took = revoker
        .await
        .context("revoke task")?
        .context("lease revoke")?;
    report
        .extra
        .push(("revoke ms".into(), took.as_secs_f64() * 1000.0));
    if let (Some(b), Some(d)) = (report.latency("before"), report.latency("during")) {
        let ratio = d.p99_ms / b.p99_ms;
        report.extra.push(("during p99 / before p99".into(), ratio));
    }
    Ok(report)
}
