//! Memory and disk readings of server processes, from Linux's `/proc`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::report::Servers;

/// A `kB` field of `/proc/<pid>/status` ("VmRSS", "VmHWM"), in MiB.
pub fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The summed resident memory of `pids`, in MiB.
pub fn rss_mib(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| status_mib(*p, "VmRSS")).sum()
}

/// Samples the resident memory of some processes every `every` until
/// stopped, keeping the most seen, and what it was at the start.
pub struct RssPeak {
    base: f64,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<f64>,
}

impl RssPeak {
    /// Starts sampling `pids`.
    pub fn start(pids: &[u32], every: std::time::Duration) -> RssPeak {
        use std::sync::atomic::{AtomicBool, Ordering};
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let (flag, pids) = (done.clone(), pids.to_vec());
        RssPeak {
            base: rss_mib(&pids),
            done,
            task: tokio::spawn(async move {
                let mut most: f64 = 0.0;
                while !flag.load(Ordering::Acquire) {
                    most = most.max(rss_mib(&pids));
                    tokio::time::sleep(every).await;
                }
                most
            }),
        }
    }

    /// Stops sampling: how far the memory rose above its start, in MiB.
    pub async fn growth(self) -> anyhow::Result<f64> {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        Ok(self.task.await? - self.base)
    }
}

/// CPU time (user + system) a process has used so far, in seconds
/// (`/proc/<pid>/stat`, in clock ticks of 1/100 s as Linux reports them).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14, stime 15.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Summed CPU seconds of `pids`, if any could be read.
pub fn total_cpu_seconds(pids: &[u32]) -> Option<f64> {
    let v: Vec<f64> = pids.iter().filter_map(|p| cpu_seconds(*p)).collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

/// Space a directory tree takes on disk (allocated blocks, as `du`
/// counts them: etcd preallocates its WAL files), in MiB.
pub fn dir_mib(dir: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        if meta.is_dir() {
            let Ok(entries) = std::fs::read_dir(p) else {
                return 0;
            };
            entries.flatten().map(|e| walk(&e.path())).sum()
        } else {
            meta.blocks() * 512
        }
    }
    walk(dir) as f64 / (1024.0 * 1024.0)
}

/// Readings for the given processes and data directories.
pub fn servers(pids: &[u32], dirs: &[std::path::PathBuf]) -> Servers {
    let sum = |field: &str| -> Option<f64> {
        let v: Vec<f64> = pids.iter().filter_map(|p| status_mib(*p, field)).collect();
        (!v.is_empty()).then(|| v.iter().sum())
    };
    let peak = pids
        .iter()
        .filter_map(|p| status_mib(*p, "VmHWM"))
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    Servers {
        rss_mib: sum("VmRSS"),
        peak_rss_mib: peak,
        data_dir_mib: (!dirs.is_empty()).then(|| dirs.iter().map(|d| dir_mib(d)).sum()),
        cpu_seconds: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_a_dir() {
        let rss = status_mib(std::process::id(), "VmRSS").expect("own VmRSS");
        assert!(rss > 0.0);
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let cpu = cpu_seconds(std::process::id()).expect("own CPU time");
        assert!(cpu >= 0.2, "{cpu} s after spinning 0.3 s ({x})");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), vec![1u8; 2 << 20]).expect("write");
        let mib = dir_mib(dir.path());
        assert!((2.0..2.1).contains(&mib), "{mib}");
    }
}
