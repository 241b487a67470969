//! `k8s`: traffic shaped like kube-apiserver's. `--key-space-size` pods
//! under `/registry/pods/` are written first; then each client, per
//! request:
//!
//! - 50% **update**: a pod's optimistic update — a Txn comparing the
//!   mod_revision it last saw, putting on success and reading the current
//!   object on failure, retried (up to 5 times) on conflict, like
//!   GuaranteedUpdate;
//! - 30% **get**: one pod;
//! - 5% **list**: every pod, in pages of `--page-size`, later pages read at
//!   the first page's revision;
//! - 8% **create**: a new event object (Txn: create_revision = 0 → put);
//! - 7% **delete**: the client's oldest event (Txn: mod_revision = seen →
//!   delete).
//!
//! Meanwhile `--watchers` watchers follow `/registry/` with prev_kv and
//! progress notifications, like the watch cache; the events they get are
//! counted and checked for revision order. `--key-size` does not apply:
//! keys have Kubernetes' shape.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    request_op, response_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, WatchCreateRequest, WatchRequest,
};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::grpc::Kv;
use crate::options::{prefix_end, Common, Consistency};
use crate::report::Report;
use crate::runner::{closed_loop, preload, Pool, Worker};

const PODS: &str = "/registry/pods/default/";
const EVENTS: &str = "/registry/events/default/";

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Watchers of `/registry/` (prev_kv, progress_notify) during the load.
    #[arg(long, default_value_t = 10)]
    pub watchers: u64,
    /// Objects per page of a list.
    #[arg(long, default_value_t = 500)]
    pub page_size: i64,
}

fn pod(n: u64) -> Bytes {
    Bytes::from(format!("{PODS}pod-{n:06}"))
}

fn compare_mod(key: Bytes, rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key,
        target_union: Some(TargetUnion::ModRevision(rev)),
        range_end: Bytes::new(),
    }
}

fn get_op(key: Bytes) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key,
            ..Default::default()
        })),
    }
}

fn put_op(key: Bytes, value: Bytes) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key,
            value,
            ..Default::default()
        })),
    }
}

struct ApiServer {
    kv: Kv,
    c: Arc<Common>,
    page_size: i64,
    value: Bytes,
    rng: fastrand::Rng,
    client: usize,
    /// mod_revision last seen per pod.
    seen: HashMap<u64, i64>,
    /// This client's events (key, mod_revision), oldest first.
    events: VecDeque<(Bytes, i64)>,
    next_event: u64,
}

impl ApiServer {
    async fn update(&mut self) -> Result<(), tonic::Status> {
        let n = self.rng.u64(..self.c.key_space_size);
        let key = pod(n);
        for _ in 0..5 {
            let rev = self.seen.get(&n).copied().unwrap_or(0);
            let r = self
                .kv
                .txn(TxnRequest {
                    compare: vec![compare_mod(key.clone(), rev)],
                    success: vec![put_op(key.clone(), self.value.clone())],
                    failure: vec![get_op(key.clone())],
                })
                .await?;
            if r.succeeded {
                let rev = r.header.map(|h| h.revision).unwrap_or(0);
                self.seen.insert(n, rev);
                return Ok(());
            }
            let current = r.responses.into_iter().find_map(|op| match op.response {
                Some(response_op::Response::ResponseRange(rr)) => rr.kvs.into_iter().next(),
                _ => None,
            });
            self.seen
                .insert(n, current.map(|kv| kv.mod_revision).unwrap_or(0));
        }
        Err(tonic::Status::aborted("update conflicted 5 times"))
    }

    async fn get(&mut self) -> Result<(), tonic::Status> {
        let n = self.rng.u64(..self.c.key_space_size);
        self.kv
            .range(RangeRequest {
                key: pod(n),
                serializable: self.c.consistency == Consistency::Serializable,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    async fn list(&mut self) -> Result<(), tonic::Status> {
        let end = Bytes::from(prefix_end(b"/registry/pods/"));
        let mut key = Bytes::from_static(b"/registry/pods/");
        let mut revision = 0;
        loop {
            let r = self
                .kv
                .range(RangeRequest {
                    key: key.clone(),
                    range_end: end.clone(),
                    limit: self.page_size,
                    revision,
                    serializable: self.c.consistency == Consistency::Serializable,
                    ..Default::default()
                })
                .await?;
            if revision == 0 {
                revision = r.header.map(|h| h.revision).unwrap_or(0);
            }
            match (r.more, r.kvs.last()) {
                (true, Some(last)) => {
                    let mut next = last.key.to_vec();
                    next.push(0);
                    key = Bytes::from(next);
                }
                _ => return Ok(()),
            }
        }
    }

    async fn create(&mut self) -> Result<(), tonic::Status> {
        let key = Bytes::from(format!("{EVENTS}c{}-{}", self.client, self.next_event));
        self.next_event += 1;
        let r = self
            .kv
            .txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Create as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::CreateRevision(0)),
                    range_end: Bytes::new(),
                }],
                success: vec![put_op(key.clone(), self.value.clone())],
                failure: vec![],
            })
            .await?;
        if r.succeeded {
            self.events
                .push_back((key, r.header.map(|h| h.revision).unwrap_or(0)));
        }
        Ok(())
    }

    async fn delete(&mut self) -> Result<(), tonic::Status> {
        let Some((key, rev)) = self.events.pop_front() else {
            return self.create().await;
        };
        self.kv
            .txn(TxnRequest {
                compare: vec![compare_mod(key.clone(), rev)],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestDeleteRange(
                        DeleteRangeRequest {
                            key: key.clone(),
                            ..Default::default()
                        },
                    )),
                }],
                failure: vec![get_op(key)],
            })
            .await?;
        Ok(())
    }
}

impl Worker for ApiServer {
    async fn call(&mut self, _op: u64) -> Result<&'static str, tonic::Status> {
        let dice = self.rng.u32(..100);
        match dice {
            0..50 => self.update().await.map(|_| "update"),
            50..80 => self.get().await.map(|_| "get"),
            80..85 => self.list().await.map(|_| "list"),
            85..93 => self.create().await.map(|_| "create"),
            _ => self.delete().await.map(|_| "delete"),
        }
    }
}

/// A watch-cache-like watcher; returns (events, out-of-order events).
async fn watcher(
    channel: Channel,
    start: i64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(u64, u64)> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: Bytes::from_static(b"/registry/"),
            range_end: Bytes::from(prefix_end(b"/registry/")),
            start_revision: start,
            prev_kv: true,
            progress_notify: true,
            ..Default::default()
        })),
    })
    .await
    .context("queue watch create")?;
    let mut stream = WatchClient::new(channel)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .context("open watch")?
        .into_inner();
    let (mut events, mut bad, mut last) = (0u64, 0u64, 0i64);
    loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            _ = stop.changed() => break,
        };
        let Some(resp) = msg.context("watch stream")? else {
            break;
        };
        for ev in resp.events {
            let rev = ev.kv.map(|kv| kv.mod_revision).unwrap_or(0);
            if rev < last {
                bad += 1;
            }
            last = rev;
            events += 1;
        }
    }
    drop(tx);
    Ok((events, bad))
}

pub async fn run(c: &Common, a: &Args) -> Result<Report> {
    let pool = Pool::connect(c).await?;
    let value = c.value();
    preload(
        &pool,
        (0..c.key_space_size).map(pod).collect(),
        value.clone(),
    )
    .await?;
    let head = pool
        .kv(0)
        .range(RangeRequest {
            key: pod(0),
            ..Default::default()
        })
        .await
        .context("read head revision")?
        .header
        .map(|h| h.revision)
        .unwrap_or(0);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watchers: Vec<_> = (0..a.watchers)
        .map(|i| tokio::spawn(watcher(pool.channel(i as usize), head + 1, stop_rx.clone())))
        .collect();
    let shared = Arc::new(c.clone());
    let workers = (0..c.clients)
        .map(|i| ApiServer {
            kv: pool.kv(i),
            c: shared.clone(),
            page_size: a.page_size.max(1),
            value: value.clone(),
            rng: fastrand::Rng::with_seed(i as u64 + 1),
            client: i,
            seen: HashMap::new(),
            events: VecDeque::new(),
            next_event: 0,
        })
        .collect();
    let mut report = closed_loop(c, "k8s", workers).await?;
    // Give the watchers a moment to receive the last writes.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let _ = stop_tx.send(true);
    let (mut events, mut bad) = (0, 0);
    for w in watchers {
        let (e, b) = w.await.context("watcher task")??;
        events += e;
        bad += b;
    }
    report.extra.push(("watch events".into(), events as f64));
    if bad > 0 {
        report.errors += bad;
        report
            .first_error
            .get_or_insert_with(|| format!("{bad} watch events out of revision order"));
    }
    Ok(report)
}
