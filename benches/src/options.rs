//! Flags shared by every load, named as in etcd's `benchmark` tool, and the
//! keys and values they describe.

use std::time::Duration;

use anyhow::{bail, Result};
use bytes::Bytes;
use clap::{Args, ValueEnum};

/// Read consistency, etcd's `--consistency l|s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum Consistency {
    /// Linearizable: the member confirms it is current through Raft.
    #[value(name = "l")]
    Linearizable,
    /// Serializable: the member answers from its own store.
    #[value(name = "s")]
    Serializable,
}

/// What every load takes.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Client endpoints (host:port), comma separated; connections are
    /// spread over them in turn.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// gRPC connections (HTTP/2 channels) shared by the clients.
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,
    /// Requests to send in all (ignored when --duration is given).
    #[arg(long, global = true, default_value_t = 10_000)]
    pub total: u64,
    /// Run for this long instead of a fixed total ("10s", "500ms", "2m").
    #[arg(long, global = true, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Requests per second in all, sent on a fixed schedule (0: each
    /// client sends its next request as soon as the last is answered). A
    /// request's latency counts from when the schedule meant to send it,
    /// so a server that falls behind is charged for the wait.
    #[arg(long, global = true, default_value_t = 0)]
    pub rate: u64,
    /// Key size in bytes.
    #[arg(long, global = true, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, global = true, default_value_t = 256)]
    pub val_size: usize,
    /// Distinct keys the load touches.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub key_space_size: u64,
    /// Walk the key space in order instead of at random.
    #[arg(long, global = true)]
    pub sequential_keys: bool,
    /// Consistency of reads.
    #[arg(long, global = true, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Server process ids whose memory to report (repeatable).
    #[arg(long = "pid", global = true)]
    pub pids: Vec<u32>,
    /// Server data directories whose size to report (repeatable).
    #[arg(long = "data-dir", global = true)]
    pub data_dirs: Vec<std::path::PathBuf>,
    /// No progress bar.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// TLS to the endpoints.
    #[command(flatten)]
    pub tls: crate::tls::TlsFiles,
}

impl Common {
    /// Checks the flags against each other.
    pub fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            bail!("--endpoints is empty");
        }
        if self.conns == 0 || self.clients == 0 {
            bail!("--conns and --clients must be at least 1");
        }
        if self.key_space_size == 0 {
            bail!("--key-space-size must be at least 1");
        }
        let digits = (self.key_space_size - 1).to_string().len();
        if self.key_size < digits {
            bail!(
                "--key-size {} is too small for --key-space-size {} (needs {digits} bytes)",
                self.key_size,
                self.key_space_size
            );
        }
        Ok(())
    }

    /// The key with number `n` (zero-padded decimal, `key_size` bytes).
    pub fn key(&self, n: u64) -> Bytes {
        Bytes::from(format!("{n:0width$}", width = self.key_size))
    }

    /// The key for the `op`-th request: in order, or drawn from `rng`.
    pub fn pick_key(&self, op: u64, rng: &mut fastrand::Rng) -> Bytes {
        let n = if self.sequential_keys {
            op % self.key_space_size
        } else {
            rng.u64(..self.key_space_size)
        };
        self.key(n)
    }

    /// A value of `val_size` random printable bytes.
    pub fn value(&self) -> Bytes {
        let mut rng = fastrand::Rng::with_seed(7);
        Bytes::from(
            (0..self.val_size)
                .map(|_| rng.alphanumeric() as u8)
                .collect::<Vec<u8>>(),
        )
    }
}

/// Parses durations ("10s", "500ms", "1m30s", by `humantime`); a bare
/// number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Ok(Duration::from_secs_f64(secs)),
        _ => humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}")),
    }
}

/// The first key after every key that starts with `prefix` (etcd's
/// `--prefix` range end).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn keys_are_fixed_width() {
        let c = Common {
            endpoints: vec!["x".into()],
            conns: 1,
            clients: 1,
            total: 1,
            duration: None,
            rate: 0,
            key_size: 6,
            val_size: 4,
            key_space_size: 1000,
            sequential_keys: true,
            consistency: Consistency::Linearizable,
            pids: vec![],
            data_dirs: vec![],
            quiet: true,
            tls: Default::default(),
        };
        c.validate().expect("valid");
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(&c.pick_key(1001, &mut rng)[..], b"000001");
        assert_eq!(c.value().len(), 4);
        let small = Common {
            key_size: 2,
            ..c.clone()
        };
        assert!(small.validate().is_err());
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }
}
