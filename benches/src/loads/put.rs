//! `put`: single-key puts of `--val-size` bytes over the key space.

use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::PutRequest;
use tonic::transport::Channel;

use crate::options::Common;
use crate::report::Report;
use crate::runner::{closed_loop, Pool, Worker};

struct Putter {
    kv: KvClient<Channel>,
    c: Arc<Common>,
    value: Bytes,
    rng: fastrand::Rng,
}

impl Worker for Putter {
    async fn call(&mut self, op: u64) -> Result<&'static str, tonic::Status> {
        let key = self.c.pick_key(op, &mut self.rng);
        self.kv
            .put(PutRequest {
                key,
                value: self.value.clone(),
                ..Default::default()
            })
            .await?;
        Ok("put")
    }
}

pub async fn run(c: &Common) -> Result<Report> {
    let pool = Pool::connect(c).await?;
    let shared = Arc::new(c.clone());
    let value = c.value();
    let workers = (0..c.clients)
        .map(|i| Putter {
            kv: pool.kv(i),
            c: shared.clone(),
            value: value.clone(),
            rng: fastrand::Rng::with_seed(i as u64 + 1),
        })
        .collect();
    closed_loop(c, "put", workers).await
}
