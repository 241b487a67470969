//! Fault-injection runs of real 3-member clusters (cairn-jepsen), each in
//! network namespaces of its own (needs root, iproute2 and nftables,
//! which scripts/test installs). One run at a time: they share 2 cores.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use cairn_jepsen::nemesis::{Fault, NemesisOptions};
use cairn_jepsen::report::Summary;
use cairn_jepsen::run::{run, RunOptions};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn options(out: PathBuf, secs: u64, nemesis: &str, seed: u64) -> RunOptions {
    RunOptions {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_cairn")),
        members: 3,
        time: Duration::from_secs(secs),
        register: true,
        watch: true,
        lease: true,
        append: true,
        nemesis: NemesisOptions {
            faults: Fault::parse_list(nemesis).expect("faults"),
            interval: (Duration::from_secs(1), Duration::from_secs(3)),
            hold: (Duration::from_secs(2), Duration::from_secs(5)),
        },
        out,
        serializable: false,
        keys: 8,
        ops_per_key: 200,
        clients: 10,
        timeout: Duration::from_secs(1),
        think: Duration::from_millis(10),
        seed,
        heartbeat_ms: 50,
        election_ms: 500,
        // Members killed, paused or cut off fall more than 200 entries
        // behind and catch up from the leader's snapshots.
        snapshot_count: Some(1000),
    }
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// Runs and returns the summary; the run's directory is kept (and named)
/// when `keep` says so for the result.
fn go(opts: RunOptions, dir: tempfile::TempDir, keep: impl Fn(&Summary) -> bool) -> Summary {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let result = rt.block_on(run(&opts));
    match result {
        Ok(summary) => {
            println!("{}", summary.markdown());
            if keep(&summary) {
                println!("run directory kept: {}", dir.keep().display());
            }
            summary
        }
        Err(e) => {
            panic!(
                "run failed: {e:#}; run directory kept: {}",
                dir.keep().display()
            );
        }
    }
}

#[test]
fn short_run_with_kills_pauses_and_partitions_is_linearizable_and_keeps_watch_guarantees() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let seed = seed();
    let opts = options(dir.path().join("run"), 90, "kill,pause,partition", seed);
    let s = go(opts, dir, |s| !s.valid());
    assert!(s.valid(), "seed {seed}: violations found (see above)");
    // Every kind of fault ran, and the workloads got work done under them.
    for (fault, n) in &s.faults {
        assert!(*n > 0, "{fault} never injected: {:?}", s.faults);
    }
    assert_eq!(s.faults.len(), 9);
    assert_eq!(s.register_valid, Some(true));
    assert_eq!(s.watch_valid, Some(true));
    assert!(s.register_keys >= 8, "{}", s.register_keys);
    assert!(s.watch_events > 100, "{}", s.watch_events);
    assert_eq!(s.watchers, 3);
    let ok: usize = s.counts.iter().map(|c| c.ok).sum();
    assert!(ok > 10_000, "{:?}", s.counts);
}

/// The checker must be able to fail on a real cluster: serializable reads
/// are answered from a member's own state, so a leader cut off from the
/// others keeps answering with values the majority has overwritten.
#[test]
fn serializable_reads_under_leader_partitions_are_caught_and_linearizable_ones_pass() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for serializable in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let seed = seed();
        let mut opts = options(dir.path().join("run"), 20, "partition-leader", seed);
        opts.serializable = serializable;
        opts.watch = false;
        opts.lease = false;
        opts.append = false;
        let s = go(opts, dir, |s| s.valid() == serializable);
        assert!(s.faults[0].1 >= 2, "{:?}", s.faults);
        if serializable {
            assert_eq!(
                s.register_valid,
                Some(false),
                "seed {seed}: stale serializable reads not reported"
            );
        } else {
            assert_eq!(
                s.register_valid,
                Some(true),
                "seed {seed}: violations (see above)"
            );
        }
    }
}

/// Members further apart than the heartbeat interval (but within a quarter
/// of the election timeout) still commit writes and answer linearizable
/// reads, as etcd does: with the leader it had when the delay began, and
/// with one elected under it, which has to open its connections to the
/// followers over the slow links. (openraft gives up on a heartbeat after
/// one heartbeat interval; once none was answered for an election
/// timeout, an idle leader refused every write until the delay went away.
/// And opening a heartbeat connection takes two round trips: a round
/// that had to open one, cancelled at the interval, must not throw the
/// half-opened connection away, or no heartbeat is ever answered.)
#[test]
fn members_further_apart_than_the_heartbeat_interval_still_commit() {
    use cairn_jepsen::cluster::{leader_among, Cluster, ClusterOptions};
    use cairn_jepsen::delay::Latency;

    async fn writes_and_reads(endpoints: &[String], pass: &str, failures: &mut Vec<String>) {
        for (i, endpoint) in endpoints.iter().enumerate() {
            let client = cairn_jepsen::client::Client::new(endpoint, Duration::from_secs(3))
                .expect("client");
            for n in 0..5u64 {
                let key = format!("far-{pass}-{i}-{n}");
                if let Err(e) = client.write(&key, n).await {
                    failures.push(format!("put {key} on n{}: {e:?}", i + 1));
                    continue;
                }
                match client.read(&key, false).await {
                    Ok(Some(v)) if v == n => {}
                    other => failures.push(format!("get {key} on n{}: {other:?}", i + 1)),
                }
            }
        }
    }

    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut cluster = Cluster::start(&ClusterOptions {
            bin: PathBuf::from(env!("CARGO_BIN_EXE_cairn")),
            members: 3,
            heartbeat_ms: 50,
            election_ms: 1000,
            snapshot_count: None,
            log_dir: dir.path().join("logs"),
        })
        .await
        .expect("cluster");
        // Round trips between members of about 120 ms: over twice the
        // heartbeat interval.
        let latency = Latency {
            delay: Duration::from_millis(60),
            jitter: Duration::from_millis(5),
        };
        cluster
            .net()
            .delay(&[0, 1, 2], latency, seed())
            .expect("delay");
        let endpoints = cluster.endpoints().to_vec();
        let mut failures = Vec::new();
        writes_and_reads(&endpoints, "a", &mut failures).await;

        // A leader elected while the delay lasts.
        let old = leader_among(&cluster.answering()).await.expect("a leader");
        cluster.kill(old).expect("kill the leader");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let new = loop {
            if let Some(l) = leader_among(&cluster.answering()).await {
                break l;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no leader elected under the delay; logs in {}",
                dir.keep().display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_ne!(new, old);
        cluster.restart(old).expect("restart the old leader");
        // Every member, the restarted one too, answers a linearizable
        // read before the second pass.
        if let Err(e) = cluster.wait_ready(Duration::from_secs(30)).await {
            panic!("{e:#}; logs in {}", dir.keep().display());
        }
        writes_and_reads(&endpoints, "b", &mut failures).await;
        cluster.net().heal().expect("heal");
        if !failures.is_empty() {
            panic!(
                "{} of 60 operations failed: {failures:#?}; logs in {}",
                failures.len(),
                dir.keep().display()
            );
        }
    });
}
