//! `range`: reads at `--consistency`, either single keys drawn from the
//! key space (`--list-size 0`) or a whole prefix of `--list-size` keys.
//! The keys are written first.

use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use cairn_proto::etcdserverpb::RangeRequest;

use crate::grpc::Kv;
use crate::options::{prefix_end, Common, Consistency};
use crate::report::Report;
use crate::runner::{closed_loop, preload, Pool, Worker};

/// Where the prefix lists live.
pub const LIST_PREFIX: &[u8] = b"list/";

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Keys per read: 0 reads one key of the key space, N > 0 reads a
    /// prefix holding N keys.
    #[arg(long, default_value_t = 0)]
    pub list_size: u64,
}

struct Reader {
    kv: Kv,
    c: Arc<Common>,
    list: bool,
    rng: fastrand::Rng,
}

impl Worker for Reader {
    async fn call(&mut self, op: u64) -> Result<&'static str, tonic::Status> {
        let serializable = self.c.consistency == Consistency::Serializable;
        let (key, range_end, name) = if self.list {
            (
                Bytes::from_static(LIST_PREFIX),
                Bytes::from(prefix_end(LIST_PREFIX)),
                "list",
            )
        } else {
            (self.c.pick_key(op, &mut self.rng), Bytes::new(), "get")
        };
        self.kv
            .range(RangeRequest {
                key,
                range_end,
                serializable,
                ..Default::default()
            })
            .await?;
        Ok(name)
    }
}

/// The keys a range load reads.
pub fn keys(c: &Common, a: &Args) -> Vec<Bytes> {
    if a.list_size > 0 {
        (0..a.list_size)
            .map(|i| {
                let mut k = LIST_PREFIX.to_vec();
                k.extend_from_slice(format!("{i:06}").as_bytes());
                Bytes::from(k)
            })
            .collect()
    } else {
        (0..c.key_space_size).map(|n| c.key(n)).collect()
    }
}

pub async fn run(c: &Common, a: &Args) -> Result<Report> {
    let pool = Pool::connect(c).await?;
    preload(&pool, keys(c, a), c.value()).await?;
    let shared = Arc::new(c.clone());
    let workers = (0..c.clients)
        .map(|i| Reader {
            kv: pool.kv(i),
            c: shared.clone(),
            list: a.list_size > 0,
            rng: fastrand::Rng::with_seed(i as u64 + 1),
        })
        .collect();
    let name = if a.list_size > 0 {
        "range-list"
    } else {
        "range"
    };
    closed_loop(c, name, workers).await
}
