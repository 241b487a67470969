//! Side-by-side benchmarks of Cairn and etcd.
//!
//! Not built yet: the `cairn-bench` load generator lands here. The storage
//! engines' micro-benchmarks live beside their crates (`kv/benches`,
//! `raft-log/benches`).
