//! What a run measured, as JSON and as a markdown table.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, 1 µs .. 100 s, 3 significant
/// digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds")
}

/// Records `d` into `h`, clamping to the histogram's range.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_micros() as u64).clamp(1, 100_000_000);
    h.saturating_record(us);
}

/// Percentiles of one latency series, in milliseconds.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Latency {
    /// What was timed ("put", "delivery", …).
    pub name: String,
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(name: &str, h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            name: name.to_string(),
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Memory and disk of the servers a run was pointed at.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Servers {
    /// Sum over the given processes of their resident memory at the end.
    pub rss_mib: Option<f64>,
    /// Largest peak resident memory (VmHWM) among the given processes.
    pub peak_rss_mib: Option<f64>,
    /// Sum over the given data directories of the space they use.
    pub data_dir_mib: Option<f64>,
    /// CPU time the given processes used during the run, in seconds.
    pub cpu_seconds: Option<f64>,
}

/// One load's result.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Report {
    pub load: String,
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub conns: usize,
    /// Requests that succeeded.
    pub ops: u64,
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    pub seconds: f64,
    /// Successful requests per second.
    pub throughput: f64,
    pub latencies: Vec<Latency>,
    /// Load-specific numbers (watch events received, memory per watcher, …).
    pub extra: Vec<(String, f64)>,
    pub servers: Servers,
}

impl Report {
    /// The latency series called `name`.
    pub fn latency(&self, name: &str) -> Option<&Latency> {
        self.latencies.iter().find(|l| l.name == name)
    }

    /// The extra number called `name`.
    pub fn extra(&self, name: &str) -> Option<f64> {
        self.extra.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// A markdown summary of this one run.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "**{}** — {} clients over {} conns to {}: {} ok, {} errors in {:.2} s, **{:.0} ops/s**\n",
            self.load,
            self.clients,
            self.conns,
            self.endpoints.join(","),
            self.ops,
            self.errors,
            self.seconds,
            self.throughput
        );
        if let Some(e) = &self.first_error {
            let _ = writeln!(s, "first error: `{e}`\n");
        }
        let _ = writeln!(
            s,
            "| latency (ms) | count | mean | p50 | p90 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for l in &self.latencies {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                l.name, l.count, l.mean_ms, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            );
        }
        let mut tail = Vec::new();
        for (k, v) in &self.extra {
            tail.push(format!("{k} = {v:.3}"));
        }
        if let Some(v) = self.servers.rss_mib {
            tail.push(format!("server RSS = {v:.1} MiB"));
        }
        if let Some(v) = self.servers.peak_rss_mib {
            tail.push(format!("server peak RSS = {v:.1} MiB"));
        }
        if let Some(v) = self.servers.data_dir_mib {
            tail.push(format!("data dir = {v:.1} MiB"));
        }
        if let Some(v) = self.servers.cpu_seconds {
            tail.push(format!("server CPU = {v:.2} s"));
            if self.ops > 0 {
                tail.push(format!(
                    "server CPU per request = {:.1} µs",
                    v * 1e6 / self.ops as f64
                ));
            }
        }
        if !tail.is_empty() {
            let _ = writeln!(s, "\n{}", tail.join("; "));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_milliseconds() {
        let mut h = histogram();
        for ms in 1..=100u64 {
            record(&mut h, Duration::from_millis(ms));
        }
        let l = Latency::of("put", &h);
        assert_eq!(l.count, 100);
        assert!((l.p50_ms - 50.0).abs() < 0.1, "{l:?}");
        assert!((l.p99_ms - 99.0).abs() < 0.1, "{l:?}");
        assert!((l.max_ms - 100.0).abs() < 0.1, "{l:?}");
    }
}
