//! One run: start the cluster, run the workloads and the nemesis for the
//! run's time, heal, let watchers catch up, read every register one last
//! time, check, and write the report.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::checker::{append as append_check, lease as lease_check, linear, watch as watch_check};
use crate::client::Client;
use crate::cluster::{Cluster, ClusterOptions};
use crate::history::{self, History, Kind, Op};
use crate::nemesis::{self, NemesisOptions};
use crate::report::{self, Summary};
use crate::workload::append::{self, AppendOptions};
use crate::workload::lease::{self, LeaseOptions};
use crate::workload::register::{self, RegisterOptions};
use crate::workload::watch::{self, Stop, WatchOptions};
use crate::workload::Processes;

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub bin: PathBuf,
    pub members: usize,
    pub time: Duration,
    pub register: bool,
    pub watch: bool,
    pub lease: bool,
    pub append: bool,
    pub nemesis: NemesisOptions,
    /// The run's directory (history, logs, report).
    pub out: PathBuf,
    /// Serializable reads in the register workload (expected to fail the
    /// linearizability check under partitions).
    pub serializable: bool,
    pub keys: usize,
    pub ops_per_key: usize,
    pub clients: usize,
    pub timeout: Duration,
    pub think: Duration,
    pub seed: u64,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// Entries between Raft snapshots (see [`ClusterOptions`]).
    pub snapshot_count: Option<u64>,
}

/// TTL of the lease workload's leases, in seconds.
pub const LEASE_TTL: i64 = 3;

/// Runs and checks; the report is in `opts.out`.
pub async fn run(opts: &RunOptions) -> Result<Summary> {
    std::fs::create_dir_all(&opts.out).with_context(|| format!("create {}", opts.out.display()))?;
    let history = History::create(&opts.out.join("history.jsonl"))?;
    let cluster = Cluster::start(&ClusterOptions {
        bin: opts.bin.clone(),
        members: opts.members,
        heartbeat_ms: opts.heartbeat_ms,
        election_ms: opts.election_ms,
        snapshot_count: opts.snapshot_count,
        log_dir: opts.out.join("logs"),
    })
    .await?;
    let endpoints = cluster.endpoints().to_vec();
    let processes = Arc::new(Processes::default());
    let deadline = Instant::now() + opts.time;

    let reg_task = opts.register.then(|| {
        tokio::spawn(register::run(
            history.clone(),
            endpoints.clone(),
            RegisterOptions {
                keys: opts.keys,
                ops_per_key: opts.ops_per_key,
                clients: opts.clients,
                serializable: opts.serializable,
                timeout: opts.timeout,
                think: opts.think,
            },
            deadline,
            opts.seed,
            processes.clone(),
        ))
    });
    let watch_opts = WatchOptions {
        keys: 4,
        writers: 2,
        timeout: opts.timeout,
        think: opts.think,
        progress_every: Duration::from_millis(500),
    };
    let stop = Arc::new(Stop::default());
    let (writer_task, watcher_tasks) = if opts.watch {
        let w = tokio::spawn(watch::write(
            history.clone(),
            endpoints.clone(),
            watch_opts.clone(),
            deadline,
            opts.seed,
            processes.clone(),
        ));
        let ws: Vec<_> = endpoints
            .iter()
            .map(|e| tokio::spawn(watch::watcher(e.clone(), watch_opts.clone(), stop.clone())))
            .collect();
        (Some(w), ws)
    } else {
        (None, Vec::new())
    };

    let append_task = opts.append.then(|| {
        tokio::spawn(append::run(
            history.clone(),
            endpoints.clone(),
            AppendOptions {
                keys: opts.keys,
                ops_per_key: opts.ops_per_key,
                clients: opts.clients.div_ceil(2),
                timeout: opts.timeout,
                think: opts.think,
            },
            deadline,
            opts.seed,
            processes.clone(),
        ))
    });
    let lease_opts = LeaseOptions {
        clients: 2,
        ttl: LEASE_TTL,
        timeout: opts.timeout,
    };
    let stop_leases = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lease_task = opts.lease.then(|| {
        tokio::spawn(lease::run(
            history.clone(),
            endpoints.clone(),
            lease_opts.clone(),
            deadline,
            stop_leases.clone(),
            processes.clone(),
        ))
    });

    let shared = tokio::sync::Mutex::new(cluster);
    let faults = nemesis::run(
        &shared,
        history.clone(),
        opts.nemesis.clone(),
        deadline,
        opts.seed,
    )
    .await;
    let mut cluster = shared.into_inner();
    // Heal before looking at the result, so the clients finish.
    nemesis::heal_all(&mut cluster).await?;
    let faults = faults?;
    if let Some(t) = reg_task {
        t.await??;
    }
    if let Some(t) = writer_task {
        t.await??;
    }
    if let Some(t) = append_task {
        t.await??;
    }
    cluster
        .wait_ready(Duration::from_secs(60))
        .await
        .context("cluster after healing")?;

    // Final linearizable reads of every register.
    if opts.register {
        let client = Client::new(&endpoints[0], Duration::from_secs(5))?;
        let p = processes.next();
        let mut keys: Vec<String> = history.scan(|events| {
            events
                .iter()
                .filter_map(|e| match &e.op {
                    Op::Read { key, .. } | Op::Write { key, .. } | Op::Cas { key, .. } => {
                        Some(key.clone())
                    }
                    _ => None,
                })
                .collect()
        });
        keys.sort();
        keys.dedup();
        for key in keys {
            let op = |value| Op::Read {
                key: key.clone(),
                value,
            };
            history.record(p, Kind::Invoke, op(None), None);
            match retry(|| client.read(&key, false)).await {
                Ok(v) => history.record(p, Kind::Ok, op(v), Some("final read".into())),
                Err(e) => bail!("final read of {key}: {e}"),
            };
        }
    }

    if opts.append {
        let client = Client::new(&endpoints[0], Duration::from_secs(5))?;
        let p = processes.next();
        for key in history.scan(append::keys) {
            append::final_read(&history, p, &client, &key).await?;
        }
    }

    // Abandoned leases must be gone once their TTL and two election
    // timeouts (a new leader's grace) have passed since healing; renewed
    // ones, still renewed, must not.
    if let Some(t) = lease_task {
        tokio::time::sleep(Duration::from_millis(
            LEASE_TTL as u64 * 1000 + 2 * opts.election_ms + 2000,
        ))
        .await;
        let client = Client::new(&endpoints[0], Duration::from_secs(5))?;
        let p = processes.next();
        let attached: Vec<(String, i64)> = history.scan(|events| {
            events
                .iter()
                .filter_map(|e| match &e.op {
                    Op::Attach { key, lease, .. } if e.kind == Kind::Invoke => {
                        Some((key.clone(), *lease))
                    }
                    _ => None,
                })
                .collect()
        });
        for (key, id) in attached {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !lease::read(&history, p, &client, &key, id, true).await {
                if Instant::now() > deadline {
                    bail!("final read of {key} kept failing");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        stop_leases.store(true, Ordering::Relaxed);
        t.await??;
    }

    let mut truth = Vec::new();
    let mut logs = Vec::new();
    if opts.watch {
        let client = Client::new(&endpoints[0], Duration::from_secs(5))?;
        let target = retry(|| client.revision())
            .await
            .context("final revision")?;
        stop.target.store(target, Ordering::Relaxed);
        let waiting = async {
            let mut logs = Vec::new();
            for t in watcher_tasks {
                logs.push(t.await?);
            }
            anyhow::Ok(logs)
        };
        let abort = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            abort.abort.store(true, Ordering::Relaxed);
        });
        logs = waiting.await?;
        // The final history: a new watch from revision 1.
        let fresh = Arc::new(Stop::default());
        fresh.target.store(target, Ordering::Relaxed);
        let f2 = fresh.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            f2.abort.store(true, Ordering::Relaxed);
        });
        let final_log = watch::watcher(endpoints[0].clone(), watch_opts.clone(), fresh).await;
        if !final_log.caught_up {
            bail!(
                "the final watch from revision 1 did not reach revision {target}: {:?}",
                final_log.errors
            );
        }
        truth = final_log.events;
        std::fs::write(
            opts.out.join("watches.json"),
            serde_json::to_vec(&serde_json::json!({ "final": truth, "watchers": logs }))?,
        )
        .context("write watches.json")?;
    }
    history.flush()?;
    let end = history.now();
    drop(cluster);

    let events = history.events();
    let ops = history::pair(&events);
    let mut summary = Summary {
        members: opts.members,
        seconds: opts.time.as_secs_f64(),
        seed: opts.seed,
        read_consistency: if opts.serializable {
            "serializable".into()
        } else {
            "linearizable".into()
        },
        counts: report::counts(&ops),
        faults: faults
            .iter()
            .map(|(f, n)| (f.name().to_string(), *n))
            .collect(),
        ..Default::default()
    };
    if opts.register {
        let r = linear::check(&ops, linear::DEFAULT_BUDGET);
        summary.register_valid = r.valid();
        summary.register_keys = r.keys.len();
        for k in &r.keys {
            match &k.verdict {
                linear::Verdict::Linearizable => {}
                linear::Verdict::Unknown(why) => summary
                    .register_violations
                    .push(format!("key {}: unknown: {why}", k.key)),
                linear::Verdict::NotLinearizable { window, stuck_at } => {
                    let mut s = format!(
                        "key {} is not linearizable; smallest failing window ({} ops){}:\n```\n",
                        k.key,
                        window.len(),
                        stuck_at
                            .map(|i| format!(", cannot get past {}", report::describe(&ops[i])))
                            .unwrap_or_default()
                    );
                    for &i in window.iter().take(40) {
                        s += &report::describe(&ops[i]);
                        s += "\n";
                    }
                    s += "```";
                    summary.register_violations.push(s);
                }
            }
        }
    }
    if opts.append {
        let r = append_check::check(&ops);
        summary.append_valid = Some(r.valid());
        summary.append_txns = r.txns;
        summary.append_keys = r.keys;
        summary.append_violations = r.violations;
    }
    if opts.lease {
        let r = lease_check::check(&ops);
        summary.lease_valid = Some(r.valid());
        summary.leases = r.leases;
        summary.lease_alive_checks = r.alive_checks;
        summary.lease_abandoned_checks = r.abandoned_checks;
        summary.lease_violations = r.violations;
    }
    if opts.watch {
        let r = watch_check::check(&ops, &truth, &logs);
        summary.watch_valid = Some(r.valid());
        summary.watch_events = r.events;
        summary.watchers = r.watchers;
        summary.watch_violations = r.violations;
    }
    std::fs::write(opts.out.join("summary.md"), summary.markdown()).context("write summary")?;
    std::fs::write(
        opts.out.join("results.json"),
        serde_json::to_vec_pretty(&summary)?,
    )
    .context("write results")?;
    report::plot(
        &opts.out.join("latency.svg"),
        &ops,
        &history::faults(&events, end),
        end,
    )?;
    Ok(summary)
}

/// Retries a client call for up to 30 s (the cluster may still be
/// electing a leader after healing).
async fn retry<T, F, Fut>(mut f: F) -> crate::client::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::client::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
