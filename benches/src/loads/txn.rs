//! `txn-put`: transactions of `--txn-ops` puts on distinct keys, no
//! compares (etcd's `benchmark txn-put`).

use std::sync::Arc;

use anyhow::{bail, Result};
use bytes::Bytes;
use cairn_proto::etcdserverpb::{request_op, PutRequest, RequestOp, TxnRequest};

use crate::grpc::Kv;
use crate::options::Common;
use crate::report::Report;
use crate::runner::{closed_loop, Pool, Worker};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Puts per transaction.
    #[arg(long, default_value_t = 1)]
    pub txn_ops: u64,
}

struct TxnPutter {
    kv: Kv,
    c: Arc<Common>,
    ops: u64,
    value: Bytes,
    rng: fastrand::Rng,
}

impl Worker for TxnPutter {
    async fn call(&mut self, op: u64) -> Result<&'static str, tonic::Status> {
        // Consecutive keys from a random (or sequential) start: distinct
        // within the transaction, as etcd requires.
        let first = if self.c.sequential_keys {
            op * self.ops
        } else {
            self.rng.u64(..self.c.key_space_size)
        };
        let success = (0..self.ops)
            .map(|i| RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: self.c.key((first + i) % self.c.key_space_size),
                    value: self.value.clone(),
                    ..Default::default()
                })),
            })
            .collect();
        self.kv
            .txn(TxnRequest {
                success,
                ..Default::default()
            })
            .await?;
        Ok("txn")
    }
}

pub async fn run(c: &Common, a: &Args) -> Result<Report> {
    if a.txn_ops == 0 || a.txn_ops > c.key_space_size {
        bail!("--txn-ops must be between 1 and --key-space-size");
    }
    let pool = Pool::connect(c).await?;
    let shared = Arc::new(c.clone());
    let value = c.value();
    let workers = (0..c.clients)
        .map(|i| TxnPutter {
            kv: pool.kv(i),
            c: shared.clone(),
            ops: a.txn_ops,
            value: value.clone(),
            rng: fastrand::Rng::with_seed(i as u64 + 1),
        })
        .collect();
    closed_loop(c, "txn-put", workers).await
}
