//! `pair`: two Cairn builds under the same load at the same time.
//!
//! On a shared machine the speed drifts by a quarter or more between runs
//! a minute apart (the load generator's own CPU per request, the same work
//! every time, moves as much), far more than most single changes to the
//! server are worth; runs one after the other cannot tell them apart. Two
//! clusters of the same build loaded together agree within a few percent
//! round after round, because whatever slows the machine slows both. So
//! `pair` starts a fresh cluster of each build per round, runs the same
//! closed-loop load (puts, or linearizable reads with `--load range-l`)
//! against both at once, and reports each round's
//! throughput and server CPU per request side by side, with the per-round
//! B/A ratios and their median.
//!
//! Both clusters share the cores, so the absolute rates are about half of
//! a run alone. Read the server CPU per request: how the scheduler splits
//! the cores between the two clusters moves their throughputs apart by up
//! to a fifth even for one binary against itself, while their CPU per
//! request stays within about 5% of each other per round, and the median
//! of five rounds within about 2.5%. Each load runs on its own
//! runtime, as two load generator processes would. `pair` compares Cairn
//! builds with each other; `compare` (alternating runs, each alone on the
//! machine) is the measurement against etcd.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::cluster::{Cluster, System};
use crate::compare::median;
use crate::loads::Load;
use crate::options::{parse_duration, Common};
use crate::report::Report;

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// The first cairn binary (A).
    #[arg(long)]
    pub a: PathBuf,
    /// The second cairn binary (B).
    #[arg(long)]
    pub b: PathBuf,
    /// Members per cluster.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// Rounds, each with fresh clusters.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// How long each round's load runs.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Clients per cluster.
    #[arg(long, default_value_t = 256)]
    pub clients: usize,
    /// Connections per cluster.
    #[arg(long, default_value_t = 32)]
    pub conns: usize,
    /// Where the servers' data dirs go (default: the system temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// The load: single-key puts, or linearizable single-key reads.
    #[arg(long, value_enum, default_value_t = PairLoad::Put)]
    pub load: PairLoad,
}

/// The loads `pair` runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairLoad {
    /// Single-key puts.
    Put,
    /// Linearizable reads of single keys (written first).
    RangeL,
}

impl PairLoad {
    fn load(self) -> Load {
        match self {
            PairLoad::Put => Load::Put,
            PairLoad::RangeL => Load::Range(crate::loads::range::Args { list_size: 0 }),
        }
    }

    fn name(self) -> &'static str {
        match self {
            PairLoad::Put => "put",
            PairLoad::RangeL => "range l",
        }
    }
}

/// What one cluster did in one round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Side {
    pub throughput: f64,
    /// Server CPU (all members) per successful request, in µs.
    pub cpu_us: f64,
}

/// How long both clusters are loaded before each measured run.
const WARM_UP: Duration = Duration::from_secs(1);

/// One round: A and B.
pub type Round = (Side, Side);

fn side(r: &Report) -> Result<Side> {
    if r.ops == 0 {
        bail!("no request succeeded: {:?}", r.first_error);
    }
    let cpu = r
        .servers
        .cpu_seconds
        .context("server CPU time not readable")?;
    Ok(Side {
        throughput: r.throughput,
        cpu_us: cpu * 1e6 / r.ops as f64,
    })
}

/// Runs `load` against `a` and `b` at the same time, each on a runtime
/// (and threads) of its own, as two load generator processes would: one
/// runtime driving both loads makes them wait on each other.
async fn both(load: PairLoad, a: Common, b: Common) -> Result<(Result<Report>, Result<Report>)> {
    fn spawn(load: Load, c: Common) -> std::thread::JoinHandle<Result<Report>> {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("load runtime")?;
            rt.block_on(load.run(&c))
        })
    }
    let (ha, hb) = (spawn(load.load(), a), spawn(load.load(), b));
    let joined = tokio::task::spawn_blocking(move || (ha.join(), hb.join()))
        .await
        .context("join the loads")?;
    match joined {
        (Ok(ra), Ok(rb)) => Ok((ra, rb)),
        _ => bail!("a load thread panicked"),
    }
}

/// Runs every round; returns them in order.
pub async fn rounds(a: &Args) -> Result<Vec<Round>> {
    if a.members == 0 || a.rounds == 0 || a.clients == 0 || a.conns == 0 {
        bail!("--members, --rounds, --clients and --conns must be at least 1");
    }
    for bin in [&a.a, &a.b] {
        if !bin.is_file() {
            bail!("{} does not exist", bin.display());
        }
    }
    let work = a.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let mut out = Vec::new();
    for round in 0..a.rounds {
        // Started in turn, so neither build is always the one started first.
        let (first, second) = if round % 2 == 0 {
            (&a.a, &a.b)
        } else {
            (&a.b, &a.a)
        };
        let c1 = Cluster::start(System::Cairn, first, a.members, &work)
            .await
            .with_context(|| format!("start {}", first.display()))?;
        let c2 = Cluster::start(System::Cairn, second, a.members, &work)
            .await
            .with_context(|| format!("start {}", second.display()))?;
        let (ca, cb) = if round % 2 == 0 { (c1, c2) } else { (c2, c1) };
        let (ea, eb) = (
            ca.leader_first_endpoints().await,
            cb.leader_first_endpoints().await,
        );
        // A short warm-up of both, then the measured run of both at once.
        let (wa, wb) = both(
            a.load,
            ca.load(ea.clone(), 16, a.conns.min(16), WARM_UP),
            cb.load(eb.clone(), 16, a.conns.min(16), WARM_UP),
        )
        .await?;
        wa.context("warm-up of A")?;
        wb.context("warm-up of B")?;
        let conns = a.conns.min(a.clients);
        let (ra, rb) = both(
            a.load,
            ca.load(ea, a.clients, conns, a.duration),
            cb.load(eb, a.clients, conns, a.duration),
        )
        .await?;
        let ra = side(&ra.context("load on A")?).context("A")?;
        let rb = side(&rb.context("load on B")?).context("B")?;
        out.push((ra, rb));
    }
    Ok(out)
}

/// The rounds as a markdown table, with the medians of the per-round B/A
/// ratios.
pub fn markdown(a: &Args, rounds: &[Round]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "A: `{}`  \nB: `{}`  \n{} member(s) each, {}, {} clients / {} conns per cluster, {:?} per round, both at once\n",
        a.a.display(),
        a.b.display(),
        a.members,
        a.load.name(),
        a.clients,
        a.conns,
        a.duration
    );
    let _ = writeln!(
        s,
        "| round | A ops/s | B ops/s | B/A | A server CPU µs/req | B server CPU µs/req | B/A |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|");
    for (i, (ra, rb)) in rounds.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.3} | {:.1} | {:.1} | {:.3} |",
            i + 1,
            ra.throughput,
            rb.throughput,
            rb.throughput / ra.throughput,
            ra.cpu_us,
            rb.cpu_us,
            rb.cpu_us / ra.cpu_us
        );
    }
    let ratio = |of: fn(&Side) -> f64| {
        median(rounds.iter().map(|(a, b)| of(b) / of(a)).collect())
            .map_or_else(|| "–".to_string(), |m| format!("{m:.3}"))
    };
    let _ = writeln!(
        s,
        "\nmedian B/A: throughput {}, server CPU per request {}",
        ratio(|s| s.throughput),
        ratio(|s| s.cpu_us)
    );
    s
}

pub async fn run(a: &Args) -> Result<()> {
    let r = rounds(a).await?;
    println!("{}", markdown(a, &r));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_carries_each_round_and_the_median_ratios() {
        let a = Args {
            a: "a".into(),
            b: "b".into(),
            members: 3,
            rounds: 2,
            duration: Duration::from_secs(1),
            clients: 256,
            conns: 32,
            work_dir: None,
            load: PairLoad::Put,
        };
        let s = |t, c| Side {
            throughput: t,
            cpu_us: c,
        };
        let md = markdown(
            &a,
            &[
                (s(100.0, 50.0), s(110.0, 45.0)),
                (s(200.0, 40.0), s(240.0, 30.0)),
            ],
        );
        assert!(
            md.contains("| 1 | 100 | 110 | 1.100 | 50.0 | 45.0 | 0.900 |"),
            "{md}"
        );
        assert!(
            md.contains("| 2 | 200 | 240 | 1.200 | 40.0 | 30.0 | 0.750 |"),
            "{md}"
        );
        assert!(
            md.contains("throughput 1.150, server CPU per request 0.825"),
            "{md}"
        );
    }
}
