//! Append throughput and latency of 256-byte entries, fsync on, beside the
//! raw write+fdatasync rate of the same disk (the physical limit a single
//! appender could reach).
//!
//! Run: `cargo bench -p cairn-raft-log`.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_raft_log::{Entry, Options, RaftLog};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The allocator the `cairn` server runs with, so the numbers are the
/// log's inside a member.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PAYLOAD: usize = 256;

fn bench_dir() -> tempfile::TempDir {
    // Inside the target dir: the same disk the project lives on (not tmpfs).
    let base = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").into());
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

fn raw(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_256B");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    let dir = bench_dir();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("raw"))
        .unwrap();
    let buf = vec![7u8; PAYLOAD + 25];
    g.bench_function("raw_write_fdatasync", |b| {
        b.iter(|| {
            f.write_all(&buf).unwrap();
            f.sync_data().unwrap();
        })
    });

    let dir = bench_dir();
    let log = RaftLog::open(dir.path(), Options::default()).unwrap();
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    let mut next = 1u64;
    g.bench_function("single_blocking_append", |b| {
        b.iter(|| {
            log.append(vec![Entry {
                index: next,
                term: 1,
                payload: payload.clone(),
            }])
            .unwrap();
            next += 1;
        })
    });
    drop(log);

    for appenders in [1usize, 16, 256] {
        let dir = bench_dir();
        let log = Arc::new(RaftLog::open(dir.path(), Options::default()).unwrap());
        let next = Arc::new(Mutex::new(1u64));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        g.bench_function(format!("concurrent_async/{appenders}"), |b| {
            b.iter_custom(|iters| {
                let per_task = iters.div_ceil(appenders as u64);
                let start = Instant::now();
                rt.block_on(async {
                    let tasks: Vec<_> = (0..appenders)
                        .map(|_| {
                            let (log, next, payload) =
                                (Arc::clone(&log), Arc::clone(&next), payload.clone());
                            tokio::spawn(async move {
                                for _ in 0..per_task {
                                    let fut = {
                                        let mut n = next.lock().unwrap();
                                        let f = log.append_async(vec![Entry {
                                            index: *n,
                                            term: 1,
                                            payload: payload.clone(),
                                        }]);
                                        *n += 1;
                                        f
                                    };
                                    fut.await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                });
                if std::env::var_os("CAIRN_BENCH_STATS").is_some() {
                    let st = log.stats();
                    eprintln!(
                        "stats {appenders}: {st:?} entries/batch {:.1} sync us {:.1}",
                        st.entries as f64 / st.batches.max(1) as f64,
                        st.sync_nanos as f64 / st.batches.max(1) as f64 / 1000.0
                    );
                }
                // Scale to the number of appends criterion asked for.
                let done = per_task * appenders as u64;
                start.elapsed().mul_f64(iters as f64 / done as f64)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, raw);
criterion_main!(benches);
