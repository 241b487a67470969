//! `snapshot-save`: does streaming a backup (`Maintenance.Snapshot`, what
//! `etcdctl snapshot save` calls) stall writes, and what does it cost the
//! server in memory?
//!
//! `--clients` clients put for `--duration` (default 20 s); a quarter of
//! the way in, one snapshot is streamed and its bytes counted (written to
//! `--save-to` if given, else dropped). Put latencies are filed `before`,
//! `during` and `after` the stream ([`crate::loads::windows`]); the
//! report adds `during p99 / before p99`, the save's seconds and bytes,
//! and, for the servers given with `--pid`, the most their resident
//! memory grew over what it was when the save started (sampled every
//! 20 ms). Fill the key space first (a `put` run with `--key-space-size`
//! and `--sequential-keys`) to back up a keyspace of the size wanted.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::SnapshotRequest;

use crate::loads::put::Putter;
use crate::loads::windows::{Timed, Windows};
use crate::options::Common;
use crate::process::RssPeak;
use crate::report::Report;
use crate::runner::{closed_loop, Pool};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Write the snapshot to this file (default: count its bytes only).
    #[arg(long)]
    pub save_to: Option<PathBuf>,
}

pub async fn run(c: &Common, a: &Args) -> Result<Report> {
    let pool = Pool::connect(c).await?;
    let mut maintenance =
        MaintenanceClient::new(pool.channel(0)).max_decoding_message_size(usize::MAX);
    let mut c = c.clone();
    let duration = *c.duration.get_or_insert(Duration::from_secs(20));
    let windows = Arc::new(Windows::new(1));
    let pids = c.pids.clone();
    let save_to = a.save_to.clone();
    let saver = {
        let windows = windows.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration / 4).await;
            let peak = RssPeak::start(&pids, Duration::from_millis(20));
            let mut file = match &save_to {
                Some(p) => Some(std::io::BufWriter::new(
                    std::fs::File::create(p).with_context(|| format!("create {}", p.display()))?,
                )),
                None => None,
            };
            windows.open(0);
            let t = Instant::now();
            let mut stream = maintenance
                .snapshot(SnapshotRequest {})
                .await
                .context("snapshot")?
                .into_inner();
            let mut bytes = 0u64;
            while let Some(piece) = stream.message().await.context("snapshot stream")? {
                bytes += piece.blob.len() as u64;
                if let Some(f) = &mut file {
                    f.write_all(&piece.blob).context("write the snapshot")?;
                }
            }
            if let Some(f) = &mut file {
                f.flush().context("write the snapshot")?;
            }
            let took = t.elapsed();
            windows.close(0);
            let grew = peak.growth().await.context("rss sampler")?;
            let growth = (!pids.is_empty()).then_some(grew);
            anyhow::Ok((took, bytes, growth))
        })
    };
    let workers = Putter::all(&c, &pool)
        .into_iter()
        .map(|putter| Timed::new(putter, windows.clone()))
        .collect();
    let mut report = closed_loop(&c, "snapshot-save", workers).await?;
    let (took, bytes, growth) = saver.await.context("snapshot task")??;
    report
        .extra
        .push(("save seconds".into(), took.as_secs_f64()));
    report
        .extra
        .push(("save MiB".into(), bytes as f64 / (1 << 20) as f64));
    if let Some(g) = growth {
        report
            .extra
            .push(("server RSS growth during the save MiB".into(), g));
    }
    if let (Some(b), Some(d)) = (report.latency("before"), report.latency("during")) {
        let ratio = d.p99_ms / b.p99_ms;
        report.extra.push(("during p99 / before p99".into(), ratio));
    }
    Ok(report)
}
