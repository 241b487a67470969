//! `cairn-jepsen`: one fault-injection run against a fresh Cairn cluster.
//! Needs root (network namespaces, nftables). Exits 0 when every checker
//! passes, 1 when one found a violation, 2 on a harness error.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_jepsen::nemesis::{Fault, NemesisOptions};
use cairn_jepsen::run::RunOptions;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "cairn-jepsen",
    about = "Fault-injection run against a Cairn cluster"
)]
struct Args {
    /// The cairn binary (default: `cairn` beside this program).
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// Members (3 or 5 make sense).
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// How long the workloads and faults run (Go duration: 2m, 90s).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    time: Duration,
    /// Workloads: register, watch, lease, append (comma-separated).
    #[arg(long, default_value = "register,watch,lease,append")]
    workloads: String,
    /// Faults: kill, pause, partition, loss, latency, member, all, none, or single
    /// faults (kill-leader, partition-one-way, member-replace, ...).
    #[arg(long, default_value = "kill,pause,partition")]
    nemesis: String,
    /// Quiet time between faults: MIN,MAX.
    #[arg(long, default_value = "1s,4s")]
    interval: String,
    /// How long a fault is held: MIN,MAX.
    #[arg(long, default_value = "2s,6s")]
    hold: String,
    /// Serializable reads in the register workload (not linearizable:
    /// the checker should say so under partitions).
    #[arg(long)]
    serializable: bool,
    /// Registers in use at a time.
    #[arg(long, default_value_t = 8)]
    keys: usize,
    /// Operations on one register before a fresh one replaces it.
    #[arg(long, default_value_t = 200)]
    ops_per_key: usize,
    /// Concurrent register clients.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Per-operation timeout.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    timeout: Duration,
    /// Pause between one client's operations.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    think: Duration,
    /// Random seed (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// The run's directory (default: jepsen-results/<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Raft heartbeat interval (ms), passed to the members.
    #[arg(long, default_value_t = 100)]
    heartbeat_interval: u64,
    /// Raft election timeout (ms), passed to the members.
    #[arg(long, default_value_t = 1000)]
    election_timeout: u64,
    /// Raft log entries between snapshots, passed to the members
    /// (`--snapshot-count`, with a fifth of it kept behind each snapshot):
    /// small values make members that fell behind catch up from
    /// snapshots under the faults. etcd's default when absent.
    #[arg(long)]
    snapshot_count: Option<u64>,
    /// Instead of a run: check the registers of a recorded history.jsonl.
    #[arg(long, value_name = "HISTORY")]
    check: Option<PathBuf>,
}

/// Re-checks a recorded history's registers; returns the exit code.
fn check(path: &std::path::Path) -> Result<i32> {
    let events = cairn_jepsen::history::load(path)?;
    let ops = cairn_jepsen::history::pair(&events);
    let t = std::time::Instant::now();
    let report =
        cairn_jepsen::checker::linear::check(&ops, cairn_jepsen::checker::linear::DEFAULT_BUDGET);
    for k in &report.keys {
        if !matches!(
            k.verdict,
            cairn_jepsen::checker::linear::Verdict::Linearizable
        ) {
            println!("{} ({} ops): {:?}", k.key, k.ops, k.verdict);
        }
    }
    println!(
        "{} operations, {} keys, checked in {:.2?}: {}",
        ops.len(),
        report.keys.len(),
        t.elapsed(),
        match report.valid() {
            Some(true) => "linearizable",
            Some(false) => "NOT linearizable",
            None => "unknown (search gave up)",
        }
    );
    Ok(if report.valid() == Some(true) { 0 } else { 1 })
}

/// Parses a duration ("2m", "90s", "500ms", "1m30s").
fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

fn range(s: &str) -> Result<(Duration, Duration)> {
    let (a, b) = s.split_once(',').unwrap_or((s, s));
    let a = parse_duration(a.trim()).map_err(anyhow::Error::msg)?;
    let b = parse_duration(b.trim()).map_err(anyhow::Error::msg)?;
    if b < a {
        bail!("{s}: MAX is below MIN");
    }
    Ok((a, b))
}

fn options(args: Args) -> Result<RunOptions> {
    let bin = match args.cairn {
        Some(b) => b,
        None => std::env::current_exe()
            .context("own path")?
            .with_file_name("cairn"),
    };
    if !bin.is_file() {
        bail!(
            "{} not found: build it (cargo build --release) or pass --cairn",
            bin.display()
        );
    }
    let mut register = false;
    let mut watch = false;
    let mut lease = false;
    let mut append = false;
    for w in args.workloads.split(',').map(str::trim) {
        match w {
            "register" => register = true,
            "watch" => watch = true,
            "lease" => lease = true,
            "append" => append = true,
            other => bail!("unknown workload {other:?}: register, watch, lease, append"),
        }
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default()
    });
    let out = args.out.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        PathBuf::from(format!("jepsen-results/{t}"))
    });
    Ok(RunOptions {
        bin,
        members: args.members,
        time: args.time,
        register,
        watch,
        lease,
        append,
        nemesis: NemesisOptions {
            faults: Fault::parse_list(&args.nemesis)?,
            interval: range(&args.interval)?,
            hold: range(&args.hold)?,
        },
        out,
        serializable: args.serializable,
        keys: args.keys.max(1),
        ops_per_key: args.ops_per_key.max(1),
        clients: args.clients.max(1),
        timeout: args.timeout,
        think: args.think,
        seed,
        heartbeat_ms: args.heartbeat_interval,
        election_ms: args.election_timeout,
        snapshot_count: args.snapshot_count,
    })
}

/// SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(path) = &args.check {
        std::process::exit(check(path).unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            2
        }));
    }
    let code = match options(args) {
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
        // On SIGINT or SIGTERM the run is dropped, which kills the
        // members and removes the network.
        Ok(opts) => match tokio::select! {
            r = cairn_jepsen::run::run(&opts) => r,
            _ = interrupted() => Err(anyhow::anyhow!("interrupted")),
        } {
            Ok(summary) => {
                println!("{}", summary.markdown());
                println!("run directory: {}", opts.out.display());
                if summary.valid() {
                    0
                } else {
                    1
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                eprintln!("run directory: {}", opts.out.display());
                2
            }
        },
    };
    std::process::exit(code);
}
