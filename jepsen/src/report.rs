//! What a run leaves in its directory: `summary.md` (the table of
//! operations, faults and verdicts), `results.json` (the same, for
//! tools), `latency.svg` (every operation's latency over time, fault
//! windows shaded), beside `history.jsonl` and the members' logs.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::Serialize;

use crate::history::{Completed, Kind, Op};

/// Violations printed in full in the summary.
const SHOWN: usize = 5;

/// Counts of one workload's operations by outcome.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub workload: String,
    pub ok: usize,
    pub fail: usize,
    pub unknown: usize,
}

/// The result of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub members: usize,
    pub seconds: f64,
    pub seed: u64,
    pub read_consistency: String,
    pub counts: Vec<Counts>,
    pub faults: Vec<(String, usize)>,
    /// None: the workload did not run.
    pub register_valid: Option<bool>,
    pub register_keys: usize,
    pub register_violations: Vec<String>,
    pub watch_valid: Option<bool>,
    pub watch_events: usize,
    pub watchers: usize,
    pub watch_violations: Vec<String>,
    pub lease_valid: Option<bool>,
    pub leases: usize,
    pub lease_alive_checks: usize,
    pub lease_abandoned_checks: usize,
    pub lease_violations: Vec<String>,
    pub append_valid: Option<bool>,
    pub append_txns: usize,
    pub append_keys: usize,
    pub append_violations: Vec<String>,
}

impl Summary {
    /// True when every checked workload passed; a register search that
    /// gave up counts as not passed.
    pub fn valid(&self) -> bool {
        self.register_valid != Some(false)
            && !(self.register_valid.is_none() && self.register_keys > 0)
            && self.watch_valid != Some(false)
            && self.lease_valid != Some(false)
            && self.append_valid != Some(false)
    }

    pub fn markdown(&self) -> String {
        let verdict = |v: Option<bool>, ran: bool| match (v, ran) {
            (_, false) => "not run",
            (Some(true), _) => "valid",
            (Some(false), _) => "**INVALID**",
            (None, _) => "unknown (search gave up)",
        };
        let mut s = format!(
            "# Run: {} members, {:.0} s, seed {}, {} reads\n\n\
             | workload | ok | failed | unknown |\n|---|---:|---:|---:|\n",
            self.members, self.seconds, self.seed, self.read_consistency
        );
        for c in &self.counts {
            s += &format!(
                "| {} | {} | {} | {} |\n",
                c.workload, c.ok, c.fail, c.unknown
            );
        }
        s += "\n| fault | injected |\n|---|---:|\n";
        for (f, n) in &self.faults {
            s += &format!("| {f} | {n} |\n");
        }
        s += &format!(
            "\n| checker | verdict | checked | violations |\n|---|---|---|---:|\n\
             | linearizable registers | {} | {} keys | {} |\n\
             | watch guarantees | {} | {} events, {} watchers | {} |\n\
             | lease guarantees | {} | {} leases, {} reads while provably alive, {} abandoned at the end | {} |\n\
             | list appends (atomic, ordered, nothing lost) | {} | {} transactions, {} lists | {} |\n",
            verdict(self.register_valid, self.register_keys > 0),
            self.register_keys,
            self.register_violations.len(),
            verdict(self.watch_valid, self.watchers > 0),
            self.watch_events,
            self.watchers,
            self.watch_violations.len(),
            verdict(self.lease_valid, self.lease_valid.is_some()),
            self.leases,
            self.lease_alive_checks,
            self.lease_abandoned_checks,
            self.lease_violations.len(),
            verdict(self.append_valid, self.append_valid.is_some()),
            self.append_txns,
            self.append_keys,
            self.append_violations.len(),
        );
        let all: Vec<&String> = self
            .register_violations
            .iter()
            .chain(&self.watch_violations)
            .chain(&self.lease_violations)
            .chain(&self.append_violations)
            .collect();
        for v in all.iter().take(SHOWN) {
            s += &format!("\n{v}\n");
        }
        if all.len() > SHOWN {
            s += &format!(
                "\n… and {} more violations (results.json has them all)\n",
                all.len() - SHOWN
            );
        }
        s += &format!("\n**{}**\n", if self.valid() { "VALID" } else { "INVALID" });
        s
    }
}

/// Counts operations per workload.
pub fn counts(ops: &[Completed]) -> Vec<Counts> {
    let mut out: Vec<Counts> = Vec::new();
    for c in ops {
        let name = match c.op {
            Op::Read { .. } | Op::Write { .. } | Op::Cas { .. } => "register",
            Op::Put { .. } => "watch (puts)",
            Op::Txn { .. } => "append",
            Op::Grant { .. } | Op::Attach { .. } | Op::Renew { .. } | Op::ReadLeased { .. } => {
                "lease"
            }
            _ => continue,
        };
        let i = match out.iter().position(|x| x.workload == name) {
            Some(i) => i,
            None => {
                out.push(Counts {
                    workload: name.into(),
                    ..Default::default()
                });
                out.len() - 1
            }
        };
        match c.kind {
            Kind::Ok => out[i].ok += 1,
            Kind::Fail => out[i].fail += 1,
            Kind::Info | Kind::Invoke => out[i].unknown += 1,
        }
    }
    out
}

/// One operation, for a violation report.
pub fn describe(c: &Completed) -> String {
    let secs = |t: u64| t as f64 / 1e9;
    let what = match &c.op {
        Op::Read { key, value } => format!("read {key} -> {value:?}"),
        Op::Write { key, value } => format!("write {key} {value}"),
        Op::Cas {
            key,
            from,
            to,
            swapped,
        } => format!("cas {key} {from} -> {to}: {swapped:?}"),
        Op::Put {
            key,
            value,
            revision,
        } => format!("put {key} {value} @ {revision:?}"),
        Op::Txn { mops } => format!("txn {mops:?}"),
        Op::Grant { lease, ttl } => format!("grant {lease:x} ttl {ttl}"),
        Op::Attach { key, lease, .. } => format!("put {key} lease {lease:x}"),
        Op::Renew { lease, ttl } => format!("keep-alive {lease:x}: {ttl:?}"),
        Op::ReadLeased { key, present, .. } => format!("read {key} -> {present:?}"),
        other => format!("{other:?}"),
    };
    format!(
        "{:>9.3}s..{} p{} {what} [{:?}] {}",
        secs(c.invoke),
        c.complete
            .map(|t| format!("{:.3}s", secs(t)))
            .unwrap_or_else(|| "?".into()),
        c.process,
        c.kind,
        c.note.as_deref().unwrap_or("")
    )
}

/// Latency of every completed operation over time, fault windows shaded.
pub fn plot(path: &Path, ops: &[Completed], faults: &[(String, u64, u64)], end: u64) -> Result<()> {
    let secs = |t: u64| t as f64 / 1e9;
    let end_s = secs(end).max(1.0);
    let points: Vec<(f64, f64, Kind)> = ops
        .iter()
        .filter_map(|c| {
            let done = c.complete?;
            Some((
                secs(c.invoke),
                (done.saturating_sub(c.invoke)) as f64 / 1e6,
                c.kind,
            ))
        })
        .collect();
    let max_ms = points.iter().map(|p| p.1).fold(10.0f64, f64::max) * 1.5;
    let root = SVGBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE).context("plot")?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "operation latency over time (shaded: faults)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end_s, (0.05f64..max_ms).log_scale())
        .context("plot")?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("latency (ms)")
        .draw()
        .context("plot")?;
    let palette = [
        RGBColor(230, 100, 100),
        RGBColor(100, 100, 230),
        RGBColor(100, 180, 100),
        RGBColor(200, 150, 50),
        RGBColor(160, 90, 200),
    ];
    let mut names: Vec<&str> = Vec::new();
    for (name, a, b) in faults {
        let i = match names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                names.push(name);
                names.len() - 1
            }
        };
        let color = palette[i % palette.len()];
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(secs(*a), 0.05), (secs(*b), max_ms)],
                color.mix(0.15).filled(),
            )))
            .context("plot")?;
        chart
            .draw_series(std::iter::once(Text::new(
                name.clone(),
                (secs(*a), max_ms / 1.3),
                ("sans-serif", 12).into_font().color(&color),
            )))
            .context("plot")?;
    }
    for (kind, color, label) in [
        (Kind::Ok, RGBColor(40, 120, 40), "ok"),
        (Kind::Fail, RGBColor(230, 140, 0), "failed"),
        (Kind::Info, RGBColor(200, 0, 0), "unknown"),
    ] {
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|p| p.2 == kind)
                    .map(|p| Circle::new((p.0, p.1.max(0.05)), 2, color.filled())),
            )
            .context("plot")?
            .label(label)
            .legend(move |(x, y)| Circle::new((x, y), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .context("plot")?;
    root.present().context("write plot")?;
    Ok(())
}
