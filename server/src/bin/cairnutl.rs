//! `cairnutl`: offline operations on a member's data dir (etcd's
//! `etcdutl`). The member must be stopped: the tools open its store
//! directly, and a store held open by a running member is refused.
//!
//! - `cairnutl status --data-dir DIR [-w table|json]`: who the member is,
//!   which engine its store runs on, its revisions, keys, hash and size.
//! - `cairnutl hashkv --data-dir DIR [--rev N] [-w table|json]`: etcd's
//!   HashKV of the kv history up to a revision, to compare members.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use cairn::kv::{BackendKind, Store};
use cairn::node::identity::Identity;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(
    name = "cairnutl",
    version,
    about = "Offline operations on a Cairn data dir"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// What a stopped member's data dir holds.
    Status {
        /// The member's data dir (as given to `cairn --data-dir`).
        #[arg(long)]
        data_dir: PathBuf,
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = Format::Table)]
        write_out: Format,
    },
    /// etcd's HashKV of the kv history up to a revision.
    Hashkv {
        /// The member's data dir.
        #[arg(long)]
        data_dir: PathBuf,
        /// Hash up to this revision (0: the current one).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = Format::Table)]
        write_out: Format,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// A data dir's store, opened over the engine that made it.
fn open_store(data_dir: &Path) -> Result<(Store, BackendKind)> {
    let kv = data_dir.join("member").join("kv");
    let kind = BackendKind::detect(&kv)
        .with_context(|| format!("reading {}", kv.display()))?
        .with_context(|| format!("{} holds no Cairn store", data_dir.display()))?;
    let store = Store::open_path_with(&kv, kind)
        .with_context(|| format!("opening the store in {}", kv.display()))?;
    Ok((store, kind))
}

fn print(format: Format, rows: &[(&str, String)], value: serde_json::Value) {
    match format {
        Format::Json => println!("{value}"),
        Format::Table => {
            let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in rows {
                println!("{k:<width$}  {v}");
            }
        }
    }
}

fn status(data_dir: &Path, format: Format) -> Result<()> {
    let Some(id) = Identity::read(data_dir)? else {
        bail!("{} holds no Cairn member", data_dir.display());
    };
    let (store, kind) = open_store(data_dir)?;
    let applied = cairn::raft::state_machine::applied_log_id(&store)
        .context("reading the store's applied position")?;
    let (term, index) = applied.map_or((0, 0), |l| (l.leader_id.term, l.index));
    let revision = store.current_revision();
    let compacted = store.compacted_revision();
    let keys = store.key_count();
    let hash = store.hash()?;
    let size = store.size_on_disk()?;
    let rows = [
        ("name", id.name.clone()),
        ("member id", format!("{:x}", id.member_id)),
        ("cluster id", format!("{:x}", id.cluster_id)),
        ("backend", kind.to_string()),
        ("revision", revision.to_string()),
        ("compacted revision", compacted.to_string()),
        ("keys", keys.to_string()),
        ("hash", hash.to_string()),
        ("applied index", index.to_string()),
        ("applied term", term.to_string()),
        ("size on disk", size.to_string()),
    ];
    let value = json!({
        "name": id.name,
        "memberId": id.member_id,
        "clusterId": id.cluster_id,
        "backend": kind.name(),
        "revision": revision,
        "compactRevision": compacted,
        "totalKey": keys,
        "hash": hash,
        "appliedIndex": index,
        "appliedTerm": term,
        "sizeOnDisk": size,
    });
    print(format, &rows, value);
    Ok(())
}

fn hashkv(data_dir: &Path, rev: i64, format: Format) -> Result<()> {
    let (store, _) = open_store(data_dir)?;
    let h = store.hash_kv(rev)?;
    let rows = [
        ("hash", h.hash.to_string()),
        ("compact revision", h.compact_revision.to_string()),
        ("revision", store.current_revision().to_string()),
    ];
    let value = json!({
        "hash": h.hash,
        "compactRevision": h.compact_revision,
        "revision": store.current_revision(),
    });
    print(format, &rows, value);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Status {
            data_dir,
            write_out,
        } => status(&data_dir, write_out),
        Command::Hashkv {
            data_dir,
            rev,
            write_out,
        } => hashkv(&data_dir, rev, write_out),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
