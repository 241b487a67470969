//! `put`: single-key puts of `--val-size` bytes over the key space.

use std::sync::Arc;

use anyhow::Result;
use bytes::Bytes;
use cairn_proto::etcdserverpb::PutRequest;

use crate::grpc::Kv;
use crate::options::Common;
use crate::report::Report;
use crate::runner::{closed_loop, Pool, Worker};

/// One client putting keys of the key space.
pub(crate) struct Putter {
    kv: Kv,
    c: Arc<Common>,
    value: Bytes,
    rng: fastrand::Rng,
}

impl Putter {
    /// One putter per client of `c`, over `pool`.
    pub(crate) fn all(c: &Common, pool: &Pool) -> Vec<Putter> {
        let shared = Arc::new(c.clone());
        let value = c.value();
        (0..c.clients)
            .map(|i| Putter {
                kv: pool.kv(i),
                c: shared.clone(),
                value: value.clone(),
                rng: fastrand::Rng::with_seed(i as u64 + 1),
            })
            .collect()
    }

    /// Puts the `op`-th key.
    pub(crate) async fn put(&mut self, op: u64) -> Result<(), tonic::Status> {
        let key = self.c.pick_key(op, &mut self.rng);
        self.kv
            .put(PutRequest {
                key,
                value: self.value.clone(),
                ..Default::default()
            })
            .await?;
        Ok(())
    }
}

impl Worker for Putter {
    async fn call(&mut self, op: u64) -> Result<&'static str, tonic::Status> {
        self.put(op).await.map(|()| "put")
    }
}

pub async fn run(c: &Common) -> Result<Report> {
    let pool = Pool::connect(c).await?;
    closed_loop(c, "put", Putter::all(c, &pool)).await
}
