//! `cairnutl`: offline operations on a member's data dir (etcd's
//! `etcdutl`). The member must be stopped: the tools open its store
//! directly, and a store held open by a running member is refused.
//!
//! - `cairnutl status --data-dir DIR [-w table|json]`: who the member is,
//!   which engine its store runs on, its revisions, keys, hash and size.
//! - `cairnutl hashkv --data-dir DIR [--rev N] [-w table|json]`: etcd's
//!   HashKV of the kv history up to a revision, to compare members.
//! - `cairnutl snapshot status FILE [-w table|json]`: what a backup file
//!   (`etcdctl snapshot save`) holds, its checksums checked.
//! - `cairnutl snapshot restore FILE --data-dir DIR --name N
//!   --initial-cluster ... --initial-cluster-token T
//!   --initial-advertise-peer-urls U [--bump-revision N --mark-compacted]
//!   [--skip-hash-check]`: a member's data dir for a new cluster made from
//!   a backup (etcd's `etcdutl snapshot restore`); every member of the new
//!   cluster is restored from the same file.
//! - `cairnutl migrate --from-etcd-db FILE --data-dir DIR [--name …
//!   (as restore)]`: a new member's data dir from an etcd backend (an
//!   etcd snapshot file or `member/snap/db`), every key revision, lease,
//!   user and role as etcd had them.
//! - `cairnutl migrate --to-etcd-db FILE (--data-dir DIR | --snapshot
//!   BACKUP)`: an etcd snapshot file of a stopped member's keyspace or of
//!   a backup, for `etcdctl snapshot restore`.

mod migrate;
mod restore;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use cairn::kv::{BackendKind, Store};
use cairn::node::identity::Identity;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use self::restore::NewMember;

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
    /// Backup files: their status, and restoring a member from one.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Moves a keyspace between etcd and Cairn: an etcd backend into a
    /// new member's data dir, or a Cairn keyspace into an etcd snapshot.
    Migrate(migrate::MigrateArgs),
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// What a backup file holds: its hash, revision, keys and size.
    Status {
        /// The backup file (written by `etcdctl snapshot save`).
        file: PathBuf,
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = Format::Table)]
        write_out: Format,
    },
    /// Makes a member's data dir of a new cluster from a backup file.
    Restore {
        /// The backup file.
        file: PathBuf,
        #[command(flatten)]
        member: NewMember,
        /// Added to the backup's revision, so that every revision after
        /// the restore is above any a client saw before it.
        #[arg(long, default_value_t = 0)]
        bump_revision: i64,
        /// Marks the bumped revision compacted: watchers and readers of
        /// older revisions are told to start over (Kubernetes informers
        /// re-list instead of missing events).
        #[arg(long)]
        mark_compacted: bool,
        /// Does not check the file's SHA-256 (the kv image's own checksum
        /// still is).
        #[arg(long)]
        skip_hash_check: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// A data dir's store, opened over the engine that made it.
pub(crate) fn open_store(data_dir: &Path) -> Result<(Store, BackendKind)> {
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

fn snapshot_status(file: &Path, format: Format) -> Result<()> {
    let s = cairn::backup::inspect(file).with_context(|| format!("checking {}", file.display()))?;
    let hash = format!("{:08x}", s.image.checksum);
    let mut rows = vec![
        ("hash", hash.clone()),
        ("revision", s.image.revision.to_string()),
        ("compacted revision", s.image.compacted.to_string()),
        ("total keys", s.image.records.to_string()),
        ("total size", s.size.to_string()),
    ];
    if let Some(id) = s.cluster_id {
        rows.push(("cluster id", format!("{id:x}")));
    }
    let value = json!({
        "hash": s.image.checksum,
        "revision": s.image.revision,
        "compactRevision": s.image.compacted,
        "totalKey": s.image.records,
        "totalSize": s.size,
        "clusterId": s.cluster_id,
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
        Command::Snapshot {
            command: SnapshotCommand::Status { file, write_out },
        } => snapshot_status(&file, write_out),
        Command::Snapshot {
            command:
                SnapshotCommand::Restore {
                    file,
                    member,
                    bump_revision,
                    mark_compacted,
                    skip_hash_check,
                },
        } => restore::snapshot_restore(
            &file,
            &member,
            bump_revision,
            mark_compacted,
            skip_hash_check,
        ),
        Command::Migrate(m) => migrate::run(&m),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
