//! `lease-keepalive`: each client grants a lease and then renews it over
//! its own keep-alive stream, one renewal in flight; latency is the round
//! trip of one renewal.

use anyhow::{Context, Result};
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::options::Common;
use crate::report::Report;
use crate::runner::{closed_loop, Pool, Worker};

struct Renewer {
    id: i64,
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
    rx: Streaming<LeaseKeepAliveResponse>,
}

impl Worker for Renewer {
    async fn call(&mut self, _op: u64) -> Result<&'static str, tonic::Status> {
        self.tx
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| tonic::Status::cancelled("keep-alive stream closed"))?;
        let r = self
            .rx
            .message()
            .await?
            .ok_or_else(|| tonic::Status::cancelled("keep-alive stream ended"))?;
        if r.ttl <= 0 {
            return Err(tonic::Status::not_found(format!(
                "lease {:x} expired",
                self.id
            )));
        }
        Ok("keepalive")
    }
}

/// Grants a lease of `ttl` seconds with a server-chosen id; its id.
pub(crate) async fn grant(lease: &mut LeaseClient<Channel>, ttl: i64) -> Result<i64> {
    Ok(lease
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .context("lease grant")?
        .into_inner()
        .id)
}

/// Grants a lease and opens its keep-alive stream (the first renewal is
/// queued before the stream opens: etcd reads it before answering).
async fn renewer(pool: &Pool, i: usize) -> Result<Renewer> {
    let mut lease = LeaseClient::new(pool.channel(i));
    let id = grant(&mut lease, 60).await?;
    let (tx, rx) = mpsc::channel(4);
    tx.send(LeaseKeepAliveRequest { id })
        .await
        .context("queue renewal")?;
    let mut rx = lease
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .context("open keep-alive stream")?
        .into_inner();
    rx.message().await.context("first renewal")?;
    Ok(Renewer { id, tx, rx })
}

pub async fn run(c: &Common) -> Result<Report> {
    let pool = Pool::connect(c).await?;
    let mut workers = Vec::with_capacity(c.clients);
    for i in 0..c.clients {
        workers.push(renewer(&pool, i).await?);
    }
    closed_loop(c, "lease-keepalive", workers).await
}
