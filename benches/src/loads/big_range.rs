//! `big-range`: what one very large Range costs the server in memory
//! (kube-apiserver listing every object of a kind at once).
//!
//! Writes `--list-size` keys of `--val-size` bytes under one prefix
//! (200,000 × 1 KiB by default: about 200 MiB of answer), lets the
//! servers settle for `--settle`, then reads the whole prefix `--reads`
//! times in a row, one read at a time, at `--consistency`. While each read
//! is answered the resident memory of the servers given with `--pid` is
//! sampled every 10 ms; the report gives the most it grew over what it
//! was when the read was sent, for the first read (which also fills the
//! servers' caches) and the most over the later ones, and the reads'
//! times and answer size (each checked against the list size: a short
//! answer is an error).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::RangeRequest;
use prost::Message;

use crate::loads::range;
use crate::options::{prefix_end, Common, Consistency};
use crate::process::{self, RssPeak};
use crate::report::{histogram, record, Latency, Report};
use crate::runner::{preload, Pool};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Keys under the prefix.
    #[arg(long, default_value_t = 200_000)]
    pub list_size: u64,
    /// Reads of the whole prefix.
    #[arg(long, default_value_t = 5)]
    pub reads: u32,
    /// Pause between the writes and the first read.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
}

pub async fn run(c: &Common, a: &Args) -> Result<Report> {
    let pool = Pool::connect(c).await?;
    let ranges = range::Args {
        list_size: a.list_size,
    };
    preload(&pool, range::keys(c, &ranges), c.value()).await?;
    tokio::time::sleep(a.settle).await;
    let mut kv = KvClient::new(pool.channel(0)).max_decoding_message_size(usize::MAX);
    let mut lat = histogram();
    let mut growth = Vec::new();
    let mut answer_mib = 0.0;
    let started = Instant::now();
    for _ in 0..a.reads {
        let peak = RssPeak::start(&c.pids, Duration::from_millis(10));
        let t = Instant::now();
        let resp = kv
            .range(RangeRequest {
                key: Bytes::from_static(range::LIST_PREFIX),
                range_end: Bytes::from(prefix_end(range::LIST_PREFIX)),
                serializable: c.consistency == Consistency::Serializable,
                ..Default::default()
            })
            .await
            .context("range")?
            .into_inner();
        record(&mut lat, t.elapsed());
        let grew = peak.growth().await.context("rss sampler")?;
        if resp.kvs.len() as u64 != a.list_size || resp.count as u64 != a.list_size {
            bail!(
                "read {} keys (count {}), wrote {}",
                resp.kvs.len(),
                resp.count,
                a.list_size
            );
        }
        answer_mib = resp.encoded_len() as f64 / (1 << 20) as f64;
        growth.push(grew);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut extra = vec![("answer MiB".into(), answer_mib)];
    if !c.pids.is_empty() {
        // The first read also fills the servers' caches (fjall's block
        // cache, bbolt's mapped pages) up to their bounds.
        extra.push(("server RSS growth, first read MiB".into(), growth[0]));
        if let Some(later) = growth[1..].iter().copied().reduce(f64::max) {
            extra.push(("server RSS growth, later reads (most) MiB".into(), later));
        }
    }
    Ok(Report {
        load: "big-range".into(),
        endpoints: c.endpoints.clone(),
        clients: 1,
        conns: 1,
        ops: u64::from(a.reads),
        errors: 0,
        first_error: None,
        seconds,
        throughput: f64::from(a.reads) / seconds,
        latencies: vec![Latency::of("list", &lat)],
        extra,
        servers: process::servers(&c.pids, &c.data_dirs),
    })
}
