//! cairn-kv micro-benchmarks: apply rate of single-key puts (256-byte
//! values), range latency over a 1M-key store, reopen time with 1M keys.
//!
//! Run: `cargo bench -p cairn-kv` (over fjall, the default) and
//! `CAIRN_KV_BENCH_BACKEND=sled cargo bench -p cairn-kv`. The 1M-key store
//! is built once per run (a minute or so) in the target directory.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_kv::{BackendKind, PutRequest, RangeRequest, RequestOp, Store, TxnRequest};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const VALUE: usize = 256;
const KEYS: u64 = 1_000_000;

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").into());
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// The engine benchmarked: `CAIRN_KV_BENCH_BACKEND` (fjall by default).
fn backend() -> BackendKind {
    std::env::var("CAIRN_KV_BENCH_BACKEND")
        .map(|s| s.parse().unwrap())
        .unwrap_or_default()
}

fn open(path: &std::path::Path) -> Store {
    Store::open_path_with(path, backend()).unwrap()
}

fn key(i: u64) -> Bytes {
    Bytes::from(format!("/registry/pods/ns{:03}/pod-{:08}", i % 100, i))
}

fn puts(c: &mut Criterion) {
    let mut g = c.benchmark_group("kv_put_256B");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    let dir = bench_dir();
    let store = open(dir.path());
    let value = Bytes::from(vec![b'v'; VALUE]);
    let mut i = 0u64;
    g.bench_function("single_key_put", |b| {
        b.iter(|| {
            i += 1;
            let pos = i.to_be_bytes();
            store
                .put(
                    &PutRequest {
                        key: key(i % 100_000),
                        value: value.clone(),
                        ..Default::default()
                    },
                    &pos,
                )
                .unwrap();
        })
    });
    g.finish();
}

fn big_store(c: &mut Criterion) {
    let dir = bench_dir();
    let value = Bytes::from(vec![b'v'; VALUE]);
    {
        let store = open(dir.path());
        let mut n = 0u64;
        while n < KEYS {
            let ops = (n..(n + 128).min(KEYS))
                .map(|i| {
                    RequestOp::Put(PutRequest {
                        key: key(i),
                        value: value.clone(),
                        ..Default::default()
                    })
                })
                .collect();
            store
                .txn(
                    &TxnRequest {
                        compare: vec![],
                        success: ops,
                        failure: vec![],
                    },
                    &n.to_be_bytes(),
                )
                .unwrap();
            n += 128;
        }
        store.flush().unwrap();
    }
    let mut g = c.benchmark_group("kv_1M_keys");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    let store = open(dir.path());
    let mut i = 0u64;
    g.bench_function("range_single_key", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            let r = store
                .range(&RangeRequest {
                    key: key(i),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(r.kvs.len(), 1);
        })
    });
    g.bench_function("range_prefix_limit_1000", |b| {
        b.iter(|| {
            i = (i + 1) % 100;
            let prefix = format!("/registry/pods/ns{i:03}/");
            let mut end = prefix.clone().into_bytes();
            *end.last_mut().unwrap() += 1;
            let r = store
                .range(&RangeRequest {
                    key: Bytes::from(prefix),
                    range_end: Bytes::from(end),
                    limit: 1000,
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(r.kvs.len(), 1000);
        })
    });
    drop(store);
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("reopen", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let s = open(dir.path());
                total += t.elapsed();
                assert_eq!(s.key_count() as u64, KEYS);
            }
            total
        })
    });
    g.finish();
}

/// Revoking a lease with 10,000 keys (256 B values): one write that
/// deletes them all in one revision, and holds up the writes behind it.
fn lease_revoke(c: &mut Criterion) {
    let mut g = c.benchmark_group("kv_lease_revoke");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let dir = bench_dir();
    let store = open(dir.path());
    let value = Bytes::from(vec![b'v'; VALUE]);
    let mut id = 0i64;
    let mut case = |name: &str, revoke: &dyn Fn(&Store, i64) -> usize| {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    id += 1;
                    attach(&store, id, &value);
                    let t = Instant::now();
                    let deleted = revoke(&store, id);
                    total += t.elapsed();
                    assert_eq!(deleted, 10_000);
                }
                total
            })
        });
    };
    case("10k_keys", &|s, id| {
        s.lease_revoke(id, b"").unwrap().response as usize
    });
    // What the server's apply does: the events are built later, by the
    // first watcher that wants them.
    case("10k_keys_events_deferred", &|s, id| {
        s.lease_revoke_deferred(id, b"").unwrap().deleted.len()
    });
    g.finish();
}

/// Grants lease `id` and attaches 10,000 keys to it.
fn attach(store: &Store, id: i64, value: &Bytes) {
    store.lease_grant(id, 60, b"").unwrap();
    for chunk in 0..100u64 {
        let ops = (0..100u64)
            .map(|j| {
                RequestOp::Put(PutRequest {
                    key: key(chunk * 100 + j),
                    value: value.clone(),
                    lease: id,
                    ..Default::default()
                })
            })
            .collect();
        let txn = TxnRequest {
            success: ops,
            ..Default::default()
        };
        store.txn(&txn, b"").unwrap();
    }
}

criterion_group!(benches, puts, big_store, lease_revoke);
criterion_main!(benches);
