//! The lease workload: each client grants a lease every second (TTL
//! `ttl`), attaches a key `l/<lease>` to it, and either keeps it alive
//! with keep-alives every quarter TTL until told to stop (at most three
//! at a time), or abandons it; it reads the keys of its leases all along
//! (an abandoned one's until three TTLs after its grant). Checked by
//! [`crate::checker::lease`]: a key never disappears while its lease is
//! provably alive, and an abandoned lease's key is gone at the end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest};
use tonic::transport::Channel;

use crate::client::{Client, Error};
use crate::history::{History, Kind, Op};
use crate::workload::Processes;

pub const PREFIX: &str = "l/";

#[derive(Clone, Debug)]
pub struct LeaseOptions {
    pub clients: usize,
    /// Lease TTL in seconds.
    pub ttl: i64,
    pub timeout: Duration,
}

/// The key attached to `lease`.
pub fn key(lease: i64) -> String {
    format!("{PREFIX}{lease:x}")
}

/// Leases one client keeps alive at once.
const RENEWED: usize = 3;

struct Held {
    granted: Instant,
    id: i64,
    key: String,
    renewed: bool,
    last_renew: Instant,
}

/// Grants leases until `deadline`; renews and reads until `stop`.
pub async fn run(
    history: History,
    endpoints: Vec<String>,
    opts: LeaseOptions,
    deadline: Instant,
    stop: Arc<AtomicBool>,
    processes: Arc<Processes>,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for w in 0..opts.clients {
        let endpoint = endpoints[w % endpoints.len()].clone();
        let client = Client::new(&endpoint, opts.timeout)?;
        let leases = LeaseClient::new(crate::cluster::channel(&endpoint, opts.timeout)?);
        let history = history.clone();
        let opts = opts.clone();
        let stop = stop.clone();
        let processes = processes.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = LeaseWorker {
                history,
                client,
                leases,
                opts,
                process: processes.next(),
                processes,
            };
            let mut held: Vec<Held> = Vec::new();
            let mut next_grant = Instant::now();
            let mut granted = 0u64;
            let mut read_turn = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                // Abandoned leases are let go of (read no more) a while
                // after their TTL; at most RENEWED are kept alive at once.
                let forget = Duration::from_millis(3 * opts_ttl_ms(&c.opts));
                held.retain(|h| h.renewed || h.granted.elapsed() < forget);
                if now < deadline && now >= next_grant {
                    next_grant = now + Duration::from_secs(1);
                    granted += 1;
                    let renewed = granted.is_multiple_of(2)
                        && held.iter().filter(|h| h.renewed).count() < RENEWED;
                    if let Some(h) = c.grant_and_attach(renewed).await {
                        held.push(h);
                    }
                }
                let quarter = Duration::from_millis(opts_ttl_ms(&c.opts) / 4);
                for h in held.iter_mut().filter(|h| h.renewed) {
                    if h.last_renew.elapsed() >= quarter {
                        h.last_renew = Instant::now();
                        c.renew(h.id).await;
                    }
                }
                if !held.is_empty() {
                    read_turn = (read_turn + 1) % held.len();
                    let h = &held[read_turn];
                    c.read(&h.key, h.id).await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}

fn opts_ttl_ms(o: &LeaseOptions) -> u64 {
    (o.ttl.max(1) as u64) * 1000
}

struct LeaseWorker {
    history: History,
    client: Client,
    leases: LeaseClient<Channel>,
    opts: LeaseOptions,
    process: u64,
    processes: Arc<Processes>,
}

impl LeaseWorker {
    fn note(&self, e: Option<&Error>) -> Option<String> {
        Some(match e {
            None => self.client.endpoint.clone(),
            Some(e) => format!("{}: {e}", self.client.endpoint),
        })
    }

    /// Records an unknown outcome and moves on as a new process.
    fn unknown(&mut self, op: Op, e: &Error) {
        let kind = if e.never_sent() {
            Kind::Fail
        } else {
            Kind::Info
        };
        self.history
            .record(self.process, kind, op, self.note(Some(e)));
        if kind == Kind::Info {
            self.process = self.processes.next();
        }
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.opts.timeout, f).await {
            Err(_) => Err(Error::Timeout),
            Ok(Err(s)) => Err(Error::Status(s.code(), s.message().to_string())),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }

    async fn grant_and_attach(&mut self, renewed: bool) -> Option<Held> {
        let p = self.process;
        let invoke = Op::Grant {
            lease: 0,
            ttl: self.opts.ttl,
        };
        self.history.record(p, Kind::Invoke, invoke.clone(), None);
        let mut leases = self.leases.clone();
        let r = self
            .timed(leases.lease_grant(LeaseGrantRequest {
                ttl: self.opts.ttl,
                id: 0,
            }))
            .await;
        let (id, ttl) = match r {
            Ok(r) => (r.id, r.ttl),
            Err(e) => {
                self.unknown(invoke, &e);
                return None;
            }
        };
        self.history
            .record(p, Kind::Ok, Op::Grant { lease: id, ttl }, self.note(None));
        let key = key(id);
        let op = Op::Attach {
            key: key.clone(),
            lease: id,
            renewed,
        };
        self.history.record(p, Kind::Invoke, op.clone(), None);
        let mut kv = self.client.kv();
        let r = self
            .timed(kv.put(PutRequest {
                key: key.clone().into_bytes().into(),
                value: b"leased".to_vec().into(),
                lease: id,
                ..Default::default()
            }))
            .await;
        match r {
            Ok(_) => {
                self.history.record(p, Kind::Ok, op, self.note(None));
                Some(Held {
                    granted: Instant::now(),
                    id,
                    key,
                    renewed,
                    last_renew: Instant::now(),
                })
            }
            Err(e) => {
                self.unknown(op, &e);
                None
            }
        }
    }

    async fn renew(&mut self, lease: i64) {
        let p = self.process;
        let op = |ttl| Op::Renew { lease, ttl };
        self.history.record(p, Kind::Invoke, op(None), None);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let _ = tx.send(LeaseKeepAliveRequest { id: lease }).await;
        let mut leases = self.leases.clone();
        let call = async {
            let mut stream = leases
                .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            match stream.message().await? {
                Some(r) => Ok(tonic::Response::new(r)),
                None => Err(tonic::Status::unavailable("keep-alive stream ended")),
            }
        };
        match self.timed(call).await {
            Ok(r) => {
                self.history
                    .record(p, Kind::Ok, op(Some(r.ttl)), self.note(None));
            }
            // A keep-alive that failed may still have renewed the lease;
            // it promises nothing, so the checker ignores it.
            Err(e) => self.unknown(op(None), &e),
        }
    }

    async fn read(&mut self, key: &str, lease: i64) {
        read(&self.history, self.process, &self.client, key, lease, false).await;
    }
}

/// Reads a leased key (linearizable) and records it.
pub async fn read(h: &History, p: u64, c: &Client, key: &str, lease: i64, last: bool) -> bool {
    let op = |present| Op::ReadLeased {
        key: key.to_string(),
        lease,
        present,
        last,
    };
    h.record(p, Kind::Invoke, op(None), None);
    match c.read_raw(key).await {
        Ok(v) => {
            h.record(p, Kind::Ok, op(Some(v.is_some())), Some(c.endpoint.clone()));
            true
        }
        Err(e) => {
            h.record(
                p,
                Kind::Fail,
                op(None),
                Some(format!("{}: {e}", c.endpoint)),
            );
            false
        }
    }
}
