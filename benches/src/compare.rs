//! The side-by-side run: etcd and Cairn in the same topologies, on the
//! same machine, each load run against each in alternation (etcd, Cairn,
//! then Cairn, etcd, …) for `--rounds` rounds, and a table of medians with
//! the Cairn/etcd ratio per row.
//!
//! Both clusters of a topology stay up while its loads run (the idle one
//! only sends heartbeats). Connections are spread over the members with
//! the current leader's endpoint first, so a load over one connection
//! talks to the leader in both systems (which member that is depends on
//! the election; a follower would add the forward hop). The memory and restart rows use a fresh
//! single-member cluster per system and round: `--big-keys` keys of 256 B
//! are written (transactions of 100 puts, 16 in flight), the server's RSS
//! is read after 2 s, then it is stopped with SIGTERM and started again,
//! timed until it serves a linearizable read.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::cluster::{which, Cluster, System};
use crate::loads::{k8s, range, txn, watch, Load};
use crate::options::{parse_duration, Common, Consistency};
use crate::report::Report;
use crate::runner::{preload, Pool};

#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// etcd binary (default: `etcd` on PATH).
    #[arg(long)]
    pub etcd: Option<PathBuf>,
    /// cairn binary (default: `cairn` next to this program).
    #[arg(long)]
    pub cairn: Option<PathBuf>,
    /// Rounds; each load runs once per system per round.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// How long each load runs.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Topologies (members per cluster).
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub members: Vec<usize>,
    /// Keys written before the memory and restart rows (0 skips them).
    #[arg(long, default_value_t = 1_000_000)]
    pub big_keys: u64,
    /// Watchers in the watch-latency row.
    #[arg(long, default_value_t = 10_000)]
    pub watchers: u64,
    /// Puts per second in the watch-latency row.
    #[arg(long, default_value_t = 20)]
    pub watch_put_rate: u64,
    /// Where results.json and results.md go.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Where the servers' data dirs go (default: the system temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Print the tables of an earlier run's results.json instead of running.
    #[arg(long)]
    pub render: Option<PathBuf>,
}

/// One load of the table.
struct Case {
    label: &'static str,
    load: Load,
    clients: usize,
    conns: usize,
    consistency: Consistency,
}

fn cases(a: &Args) -> Vec<Case> {
    let case = |label, load, clients, conns, consistency| Case {
        label,
        load,
        clients,
        conns,
        consistency,
    };
    let l = Consistency::Linearizable;
    let s = Consistency::Serializable;
    let single = || Load::Range(range::Args { list_size: 0 });
    vec![
        case("put, 1 client", Load::Put, 1, 1, l),
        case("put, 256 clients / 32 conns", Load::Put, 256, 32, l),
        case("range l, 1 client", single(), 1, 1, l),
        case("range l, 256 clients / 32 conns", single(), 256, 32, l),
        case("range s, 1 client", single(), 1, 1, s),
        case("range s, 256 clients / 32 conns", single(), 256, 32, s),
        case(
            "txn-put, 256 clients / 32 conns",
            Load::TxnPut(txn::Args { txn_ops: 1 }),
            256,
            32,
            l,
        ),
        case(
            "watch latency, 10,000 watchers / 100 streams",
            Load::WatchLatency(watch::Args {
                watchers: a.watchers,
                streams: 100,
                put_rate: a.watch_put_rate,
                put_total: 0,
            }),
            1,
            10,
            l,
        ),
        case(
            "k8s mix, 64 clients / 8 conns, 10 watchers",
            Load::K8s(k8s::Args {
                watchers: 10,
                page_size: 500,
            }),
            64,
            8,
            l,
        ),
    ]
}

/// The memory and restart rows' label, after the key count.
const BIG: &str = "keys of 256 B, 1 member";

/// 1000000 → "1,000,000".
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Which way is better for a measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Better {
    Higher,
    Lower,
}

/// The numbers a run contributes to the table: (measure, value, better).
fn measures(r: &Report) -> Vec<(String, f64, Better)> {
    if let Some(d) = r.latency("delivery") {
        let mut m = vec![
            ("delivery p50 (ms)".into(), d.p50_ms, Better::Lower),
            ("delivery p99 (ms)".into(), d.p99_ms, Better::Lower),
        ];
        if let Some(p) = r.latency("put") {
            m.push(("put p99 (ms)".into(), p.p99_ms, Better::Lower));
        }
        return m;
    }
    let mut m = vec![("throughput (ops/s)".into(), r.throughput, Better::Higher)];
    if let Some(l) = r.latencies.first() {
        m.push(("p50 (ms)".into(), l.p50_ms, Better::Lower));
        m.push(("p99 (ms)".into(), l.p99_ms, Better::Lower));
    }
    if let (Some(cpu), true) = (r.servers.cpu_seconds, r.ops > 0) {
        m.push((
            "server CPU per request (µs)".into(),
            cpu * 1e6 / r.ops as f64,
            Better::Lower,
        ));
    }
    m
}

/// The bar a row is held to: Cairn/etcd must be ≥ (Higher) or ≤ (Lower)
/// this ratio.
fn target(members: usize, case: &str, measure: &str) -> Option<f64> {
    match (case, measure) {
        ("put, 256 clients / 32 conns", "throughput (ops/s)") if members == 3 => Some(2.0),
        ("put, 1 client", "p50 (ms)") => Some(1.0),
        (c, "throughput (ops/s)") if c.starts_with("range l,") => Some(1.5),
        (c, "delivery p99 (ms)") if c.starts_with("watch latency") => Some(1.0),
        (c, "RSS after writing (MiB)") if c.ends_with(BIG) => Some(0.5),
        (c, "restart until serving (s)") if c.ends_with(BIG) => Some(1.0),
        _ => None,
    }
}

/// One run of one case against one system.
#[derive(Serialize, Deserialize)]
struct Run {
    members: usize,
    case: String,
    system: System,
    round: usize,
    report: Option<Report>,
    measures: Vec<(String, f64)>,
    error: Option<String>,
}

/// A row of the table.
#[derive(Serialize, Deserialize)]
struct Row {
    members: usize,
    case: String,
    measure: String,
    better: Better,
    etcd: Option<f64>,
    cairn: Option<f64>,
    ratio: Option<f64>,
    target: Option<f64>,
    met: Option<bool>,
    errors: u64,
}

#[derive(Serialize, Deserialize)]
struct Results {
    date: String,
    machine: String,
    command: String,
    rounds: usize,
    seconds_per_load: f64,
    runs: Vec<Run>,
    rows: Vec<Row>,
    wall_seconds: f64,
}

pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn shell(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine(work: &Path) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = shell(
        "sh",
        &[
            "-c",
            "awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo",
        ],
    );
    let disk = shell(
        "sh",
        &[
            "-c",
            &format!(
                "df --output=source,fstype {} | tail -1 | awk '{{print $1 \" (\" $2 \")\"}}'",
                work.display()
            ),
        ],
    );
    format!(
        "{cores} cores, {mem}, {}, disk {disk}",
        shell("uname", &["-sr"])
    )
}

/// The order of the two systems in round `r` for case `i`.
fn order(r: usize, i: usize) -> [System; 2] {
    if (r + i).is_multiple_of(2) {
        [System::Etcd, System::Cairn]
    } else {
        [System::Cairn, System::Etcd]
    }
}

pub async fn run(a: &Args) -> Result<()> {
    if let Some(path) = &a.render {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let results: Results = serde_json::from_str(&text).context("decode results")?;
        println!("{}", markdown(&results));
        return Ok(());
    }
    let started = Instant::now();
    let etcd = match &a.etcd {
        Some(p) => p.clone(),
        None => which("etcd").context("etcd not found: install Debian's etcd-server")?,
    };
    let cairn = match &a.cairn {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("own path")?
            .with_file_name("cairn"),
    };
    for bin in [&etcd, &cairn] {
        if !bin.is_file() {
            bail!("{} does not exist", bin.display());
        }
    }
    let work = match &a.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&a.out).context("create --out")?;
    let bin = |s: System| match s {
        System::Etcd => etcd.clone(),
        System::Cairn => cairn.clone(),
    };
    let cases = cases(a);
    let big = a.big_keys > 0;
    let total_runs =
        a.members.len() * a.rounds * cases.len() * 2 + if big { a.rounds * 2 } else { 0 };
    let bar = ProgressBar::new(total_runs as u64);
    bar.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut runs = Vec::new();

    for &members in &a.members {
        let mut clusters = Vec::new();
        for s in [System::Etcd, System::Cairn] {
            clusters.push(
                Cluster::start(s, &bin(s), members, &work)
                    .await
                    .with_context(|| format!("start {} × {members}", s.name()))?,
            );
        }
        for round in 0..a.rounds {
            for (i, case) in cases.iter().enumerate() {
                for system in order(round, i) {
                    let cluster = clusters
                        .iter()
                        .find(|c| c.system == system)
                        .context("cluster")?;
                    bar.set_message(format!(
                        "{members} member(s): {} on {}",
                        case.label,
                        system.name()
                    ));
                    // Leader first: a one-connection load measures the
                    // same path in both systems.
                    let endpoints = cluster.leader_first_endpoints().await;
                    let common = Common {
                        key_space_size: if matches!(case.load, Load::K8s(_)) {
                            1000
                        } else {
                            10_000
                        },
                        consistency: case.consistency,
                        ..cluster.load(endpoints, case.clients, case.conns, a.duration)
                    };
                    let result = case.load.run(&common).await;
                    runs.push(record_run(members, case.label, system, round, result));
                    bar.inc(1);
                }
            }
        }
    }

    if big {
        for round in 0..a.rounds {
            for system in order(round, 0) {
                bar.set_message(format!("{} keys on {}", a.big_keys, system.name()));
                let result = big_run(system, &bin(system), a.big_keys, &work).await;
                let label = format!("{} {BIG}", thousands(a.big_keys));
                runs.push(match result {
                    Ok(m) => Run {
                        members: 1,
                        case: label.clone(),
                        system,
                        round,
                        report: None,
                        measures: m,
                        error: None,
                    },
                    Err(e) => Run {
                        members: 1,
                        case: label.clone(),
                        system,
                        round,
                        report: None,
                        measures: vec![],
                        error: Some(format!("{e:#}")),
                    },
                });
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();

    let rows = rows(&runs);
    let results = Results {
        date: shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        machine: machine(&work),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        rounds: a.rounds,
        seconds_per_load: a.duration.as_secs_f64(),
        runs,
        rows,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    let md = markdown(&results);
    std::fs::write(
        a.out.join("results.json"),
        serde_json::to_string_pretty(&results).context("encode results")?,
    )
    .context("write results.json")?;
    std::fs::write(a.out.join("results.md"), &md).context("write results.md")?;
    println!("{md}");
    println!(
        "results: {} and {}",
        a.out.join("results.json").display(),
        a.out.join("results.md").display()
    );
    Ok(())
}

fn record_run(members: usize, case: &str, system: System, round: usize, r: Result<Report>) -> Run {
    match r {
        Ok(report) => Run {
            members,
            case: case.into(),
            system,
            round,
            measures: measures(&report)
                .into_iter()
                .map(|(m, v, _)| (m, v))
                .collect(),
            report: Some(report),
            error: None,
        },
        Err(e) => Run {
            members,
            case: case.into(),
            system,
            round,
            report: None,
            measures: vec![],
            error: Some(format!("{e:#}")),
        },
    }
}

/// Writes `keys` keys into a fresh single-member cluster; returns its
/// memory, data size, write time and restart time.
async fn big_run(system: System, bin: &Path, keys: u64, work: &Path) -> Result<Vec<(String, f64)>> {
    let mut cluster = Cluster::start(system, bin, 1, work).await?;
    let c = Common {
        endpoints: cluster.endpoints(),
        conns: 16,
        clients: 16,
        total: 0,
        duration: None,
        rate: 0,
        key_size: 8,
        val_size: 256,
        key_space_size: keys.max(1),
        sequential_keys: true,
        consistency: Consistency::Linearizable,
        pids: vec![],
        data_dirs: vec![],
        quiet: true,
        tls: Default::default(),
    };
    let pool = Pool::connect(&c).await?;
    let t = Instant::now();
    preload(
        &pool,
        (0..keys).map(|n| c.key(n)).collect::<Vec<Bytes>>(),
        c.value(),
    )
    .await?;
    let write_s = t.elapsed().as_secs_f64();
    drop(pool);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = crate::process::servers(&cluster.pids(), &cluster.data_dirs());
    let restart = cluster.restart().await?;
    let mut m = vec![("write time (s)".to_string(), write_s)];
    if let Some(v) = s.rss_mib {
        m.push(("RSS after writing (MiB)".into(), v));
    }
    if let Some(v) = s.data_dir_mib {
        m.push(("data dir (MiB)".into(), v));
    }
    m.push(("restart until serving (s)".into(), restart.as_secs_f64()));
    Ok(m)
}

fn better_of(measure: &str) -> Better {
    if measure.starts_with("throughput") {
        Better::Higher
    } else {
        Better::Lower
    }
}

fn rows(runs: &[Run]) -> Vec<Row> {
    // Keys in first-seen order.
    let mut keys: Vec<(usize, String, String)> = Vec::new();
    for r in runs {
        for (m, _) in &r.measures {
            let k = (r.members, r.case.clone(), m.clone());
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys.into_iter()
        .map(|(members, case, measure)| {
            let pick = |s: System| -> Vec<f64> {
                runs.iter()
                    .filter(|r| r.members == members && r.case == case && r.system == s)
                    .flat_map(|r| {
                        r.measures
                            .iter()
                            .filter(|(m, _)| *m == measure)
                            .map(|(_, v)| *v)
                    })
                    .collect()
            };
            let errors = runs
                .iter()
                .filter(|r| r.members == members && r.case == case)
                .map(|r| {
                    r.report
                        .as_ref()
                        .map_or(u64::from(r.error.is_some()), |p| p.errors)
                })
                .sum();
            let etcd = median(pick(System::Etcd));
            let cairn = median(pick(System::Cairn));
            let ratio = match (etcd, cairn) {
                (Some(e), Some(c)) if e > 0.0 => Some(c / e),
                _ => None,
            };
            let better = better_of(&measure);
            let target = target(members, &case, &measure);
            let met = match (target, ratio) {
                (Some(t), Some(r)) => Some(match better {
                    Better::Higher => r >= t,
                    Better::Lower => r <= t,
                }),
                _ => None,
            };
            Row {
                members,
                case,
                measure,
                better,
                etcd,
                cairn,
                ratio,
                target,
                met,
                errors,
            }
        })
        .collect()
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v >= 1000.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

/// The target of `row` as "≥ 2× met" (empty without one).
fn target_text(row: &Row) -> String {
    match (row.target, row.met) {
        (Some(t), Some(met)) => {
            let op = if row.better == Better::Higher {
                "≥"
            } else {
                "≤"
            };
            format!("{op} {t}× {}", if met { "met" } else { "**missed**" })
        }
        _ => String::new(),
    }
}

/// One line per request load (throughput, p99, CPU per request), then the
/// other measures that carry a target or have no throughput.
fn summary(rows: &[Row]) -> String {
    let find = |m: usize, case: &str, measure: &str| {
        rows.iter()
            .find(|r| r.members == m && r.case == case && r.measure == measure)
    };
    let pair = |r: Option<&Row>| match r {
        Some(r) => format!("{} / {}", fmt(r.etcd), fmt(r.cairn)),
        None => "—".into(),
    };
    let mut s = String::from(
        "| members | load | etcd ops/s | Cairn ops/s | Cairn/etcd | p99 ms, etcd / Cairn | server CPU µs per request, etcd / Cairn |\n|---:|---|---:|---:|---:|---:|---:|\n",
    );
    let mut rest = String::from(
        "\n| members | load | measure | etcd | Cairn | Cairn/etcd |\n|---:|---|---|---:|---:|---:|\n",
    );
    for row in rows {
        let has_throughput = find(row.members, &row.case, "throughput (ops/s)").is_some();
        let ratio = row.ratio.map_or("—".into(), |v| format!("{v:.2}"));
        let target = target_text(row);
        let target = if target.is_empty() {
            target
        } else {
            format!(" (target {target})")
        };
        if row.measure == "throughput (ops/s)" {
            let errors = if row.errors > 0 {
                format!(" ({} errors)", row.errors)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "| {} | {}{} | {} | {} | {}{} | {} | {} |",
                row.members,
                row.case,
                errors,
                fmt(row.etcd),
                fmt(row.cairn),
                ratio,
                target,
                pair(find(row.members, &row.case, "p99 (ms)")),
                pair(find(row.members, &row.case, "server CPU per request (µs)")),
            );
        } else if !has_throughput || row.target.is_some() {
            let _ = writeln!(
                rest,
                "| {} | {} | {} | {} | {} | {}{} |",
                row.members,
                row.case,
                row.measure,
                fmt(row.etcd),
                fmt(row.cairn),
                ratio,
                target
            );
        }
    }
    s + &rest
}

fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Medians of {} rounds, {} s per load, etcd and Cairn in alternation on the same machine.\n\n- date: {}\n- machine: {}\n- command: `{}`\n- wall time: {:.0} s\n",
        r.rounds, r.seconds_per_load, r.date, r.machine, r.command, r.wall_seconds
    );
    s.push_str(&summary(&r.rows));
    let _ = writeln!(s, "\nEvery measure:\n");
    let _ = writeln!(
        s,
        "| members | load | measure | etcd 3.4 | Cairn | Cairn/etcd | target |\n|---:|---|---|---:|---:|---:|---|"
    );
    for row in &r.rows {
        let target = target_text(row);
        let errors = if row.errors > 0 {
            format!(" ({} errors)", row.errors)
        } else {
            String::new()
        };
        let ratio = row.ratio.map_or("—".into(), |v| format!("{v:.2}"));
        let _ = writeln!(
            s,
            "| {} | {}{} | {} | {} | {} | {} | {} |",
            row.members,
            row.case,
            errors,
            row.measure,
            fmt(row.etcd),
            fmt(row.cairn),
            ratio,
            target
        );
    }
    let failed: Vec<&Run> = r.runs.iter().filter(|x| x.error.is_some()).collect();
    if !failed.is_empty() {
        let _ = writeln!(s, "\nFailed runs:");
        for f in failed {
            let _ = writeln!(
                s,
                "- {} member(s), {}, {} round {}: {}",
                f.members,
                f.case,
                f.system.name(),
                f.round,
                f.error.as_deref().unwrap_or("")
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_targets() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(thousands(999), "999");
        let run = |system, v: f64| Run {
            members: 3,
            case: "put, 256 clients / 32 conns".into(),
            system,
            round: 0,
            report: None,
            measures: vec![("throughput (ops/s)".into(), v)],
            error: None,
        };
        let rows = rows(&[
            run(System::Etcd, 100.0),
            run(System::Cairn, 150.0),
            run(System::Etcd, 120.0),
            run(System::Cairn, 250.0),
            run(System::Etcd, 110.0),
            run(System::Cairn, 230.0),
        ]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].etcd, Some(110.0));
        assert_eq!(rows[0].cairn, Some(230.0));
        assert_eq!(rows[0].target, Some(2.0));
        assert_eq!(rows[0].met, Some(true));
    }
}
