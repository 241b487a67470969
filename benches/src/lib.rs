//! Side-by-side benchmarks of Cairn and etcd.
//!
//! `cairn-bench` speaks only the etcd v3 gRPC API, so the same load runs
//! against Cairn and against etcd. Modules:
//!
//! - [`options`]: the flags every load shares (etcd's benchmark tool's
//!   names) and how keys and values are made from them.
//! - [`grpc`]: a lean unary gRPC client straight over HTTP/2, for the KV
//!   calls of the closed loops (the generator's own CPU per request is
//!   taken from the servers it measures).
//! - [`runner`]: closed-loop clients over a pool of connections, a
//!   latency histogram per client, a progress bar.
//! - [`report`]: what a run measured — throughput, latency percentiles,
//!   errors, server memory and data size — as JSON and markdown.
//! - [`loads`]: the loads (`put`, `range`, `txn-put`, `watch-latency`,
//!   `lease-keepalive`, `k8s`, `lease-revoke`).
//! - [`process`]: memory and disk readings of server processes (Linux
//!   `/proc`).
//! - [`cluster`]: starts etcd or Cairn members on free 127.0.0.1 ports.
//! - [`compare`]: the side-by-side run — both systems, same topologies,
//!   loads in alternation, a table of medians.
//! - [`pair`]: two Cairn builds under the same put load at the same time,
//!   for telling apart changes smaller than the machine's drift.
//!
//! The storage engines' micro-benchmarks live beside their crates
//! (`kv/benches`, `raft-log/benches`).

pub mod cluster;
pub mod compare;
pub mod grpc;
pub mod loads;
pub mod options;
pub mod pair;
pub mod process;
pub mod report;
pub mod runner;
pub mod tls;
