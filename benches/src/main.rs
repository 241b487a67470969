//! `cairn-bench`: a load generator for the etcd v3 API (Cairn or etcd),
//! and the side-by-side comparison of the two.
//!
//! ```text
//! cairn-bench --endpoints 127.0.0.1:2379 --clients 256 --conns 32 --duration 10s put
//! cairn-bench --consistency s --clients 64 range --list-size 1000
//! cairn-bench watch-latency --watchers 10000 --streams 100 --put-rate 50
//! cairn-bench compare --rounds 3
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use cairn_bench::loads::Load;
use cairn_bench::options::Common;
use cairn_bench::{compare, pair};
use clap::{Parser, Subcommand};

/// mimalloc, as the server uses: the generator allocates a request and an
/// answer per call, on the same cores as the servers it measures.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "cairn-bench",
    version,
    about = "Load generator for the etcd v3 API, and a side-by-side run of Cairn and etcd"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    /// Also write the report as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    #[command(flatten)]
    Load(Load),
    /// Starts etcd and Cairn in the same topologies and runs every load
    /// against each in alternation; prints a table of medians.
    Compare(compare::Args),
    /// Starts a cluster of each of two Cairn builds per round and loads
    /// both at the same time; prints each round and the B/A ratios.
    Pair(pair::Args),
}

async fn run(cli: Cli) -> Result<()> {
    match &cli.cmd {
        Cmd::Load(load) => {
            let report = load.run(&cli.common).await?;
            println!("{}", report.markdown());
            if let Some(path) = &cli.json {
                let json = serde_json::to_string_pretty(&report).context("encode report")?;
                std::fs::write(path, json).with_context(|| format!("write {}", path.display()))?;
            }
            Ok(())
        }
        Cmd::Compare(a) => compare::run(a).await,
        Cmd::Pair(a) => pair::run(a).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairn-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
