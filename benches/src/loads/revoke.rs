//! `lease-revoke`: does revoking a lease with many keys stall writes?
//!
//! `--revokes` leases are granted and `--lease-keys` keys are attached to
//! each (puts in transactions of 100, before the measurement). Then
//! `--clients` clients put for `--duration` (default 6 s); from the middle
//! of it on, the leases are revoked one by one, evenly spaced over the
//! second half. Each put's latency lands in one of three series: `before`
//! (finished before the first revoke was sent), `during` (overlapping a
//! revoke call), `after` (any other, after the first revoke). Several
//! revokes give the `during` series enough puts for its p99 to be more
//! than its maximum. The report adds `during p99 / before p99` and the
//! slowest revoke call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    request_op, LeaseRevokeRequest, PutRequest, RequestOp, TxnRequest,
};

use crate::grpc::Kv;
use crate::loads::put::Putter;
use crate::loads::windows::{Timed, Windows};
use crate::options::Common;
use crate::report::Report;
use crate::runner::{closed_loop, Pool};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Keys attached to each revoked lease.
    #[arg(long, default_value_t = 10_000)]
    pub lease_keys: u64,
    /// Leases revoked, one after another, in the second half of the run.
    #[arg(long, default_value_t = 5)]
    pub revokes: u64,
}

pub async fn run(c: &Common, a: &Args) -> Result<Report> {
    let pool = Pool::connect(c).await?;
    let mut lease = LeaseClient::new(pool.channel(0));
    let value = c.value();
    let mut kv = pool.kv(0);
    let revokes = a.revokes.max(1);
    let mut ids = Vec::new();
    for r in 0..revokes {
        let id = super::lease::grant(&mut lease, 3600).await?;
        ids.push(id);
        let keys: Vec<Bytes> = (0..a.lease_keys)
            .map(|i| Bytes::from(format!("revoke/{r:02}/{i:08}")))
            .collect();
        attach(&mut kv, id, &keys, &value).await?;
    }

    let mut c = c.clone();
    let duration = *c.duration.get_or_insert(Duration::from_secs(6));
    let windows = Arc::new(Windows::new(revokes as usize));
    let revoker = {
        let windows = windows.clone();
        tokio::spawn(async move {
            let half = duration / 2;
            let gap = half / (revokes as u32 + 1);
            tokio::time::sleep(half).await;
            let mut slowest = Duration::ZERO;
            for (i, id) in ids.into_iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                windows.open(i);
                let t = Instant::now();
                let r = lease.lease_revoke(LeaseRevokeRequest { id }).await;
                windows.close(i);
                r?;
                slowest = slowest.max(t.elapsed());
            }
            Ok::<_, tonic::Status>(slowest)
        })
    };
    let workers = Putter::all(&c, &pool)
        .into_iter()
        .map(|putter| Timed::new(putter, windows.clone()))
        .collect();
    let mut report = closed_loop(&c, "lease-revoke", workers).await?;
    let slowest = revoker
        .await
        .context("revoke task")?
        .context("lease revoke")?;
    report
        .extra
        .push(("slowest revoke ms".into(), slowest.as_secs_f64() * 1000.0));
    if let (Some(b), Some(d)) = (report.latency("before"), report.latency("during")) {
        let ratio = d.p99_ms / b.p99_ms;
        report.extra.push(("during p99 / before p99".into(), ratio));
    }
    Ok(report)
}

/// Attaches `keys` to lease `id`, 100 puts per transaction.
async fn attach(kv: &mut Kv, id: i64, keys: &[Bytes], value: &Bytes) -> Result<()> {
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
    Ok(())
}
