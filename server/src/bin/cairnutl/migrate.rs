//! `cairnutl migrate`: an etcd backend into a new member's data dir, or
//! a Cairn keyspace (a stopped member's, or a backup's) into an etcd
//! snapshot file. The kv image passes between the two sides through a
//! pipe, so neither holds the keyspace in memory or on disk twice.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use cairn::kv::Restore;

use crate::restore::{make_member, NewMember};

/// `cairnutl migrate`'s flags.
#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// An etcd backend to import into a new member's --data-dir: an etcd
    /// snapshot file (`etcdctl snapshot save`) or a stopped etcd member's
    /// `member/snap/db`.
    #[arg(
        long,
        required_unless_present = "to_etcd_db",
        conflicts_with = "to_etcd_db"
    )]
    pub from_etcd_db: Option<PathBuf>,
    /// The etcd snapshot file to write, from the stopped member at
    /// --data-dir or from the backup file --snapshot; restore it with
    /// `etcdctl snapshot restore`.
    #[arg(long)]
    pub to_etcd_db: Option<PathBuf>,
    /// With --to-etcd-db: a Cairn backup file (`etcdctl snapshot save`
    /// against Cairn, or a scheduled backup) to convert.
    #[arg(long, requires = "to_etcd_db", conflicts_with = "data_dir")]
    pub snapshot: Option<PathBuf>,
    /// Does not check the SHA-256 at the end of the file read.
    #[arg(long)]
    pub skip_hash_check: bool,
    #[command(flatten)]
    pub member: NewMember,
}

/// Runs `cairnutl migrate`.
pub fn run(a: &MigrateArgs) -> Result<()> {
    match (&a.from_etcd_db, &a.to_etcd_db) {
        (Some(from), None) => from_etcd(from, a),
        (None, Some(to)) => to_etcd(to, a),
        _ => bail!("give one of --from-etcd-db and --to-etcd-db"),
    }
}

fn from_etcd(from: &Path, a: &MigrateArgs) -> Result<()> {
    let mut summary = None;
    let (identity, image) = make_member(&a.member, |store| {
        cairn::pipe::through(
            |w| {
                let (s, _) = cairn::migrate::from_etcd_db(from, a.skip_hash_check, w, b"")
                    .with_context(|| format!("reading {}", from.display()))?;
                summary = Some(s);
                Ok(())
            },
            |r| {
                let how = Restore {
                    applied: Some(Bytes::new()),
                    ..Restore::default()
                };
                Ok(store.import_with(&mut { r }, &how)?)
            },
        )
    })?;
    let s = summary.unwrap_or_default();
    println!(
        "migrated etcd backend {} at revision {} (compacted at {}; {} key revisions, {} leases, {} users, {} roles; {}) into {}: member {:x} of cluster {:x}",
        from.display(),
        image.revision,
        s.compacted,
        s.records,
        s.leases,
        s.users,
        s.roles,
        if s.hash_checked { "SHA-256 checked" } else { "no SHA-256 checked" },
        a.member.data_dir().display(),
        identity.member_id,
        identity.cluster_id
    );
    Ok(())
}

fn to_etcd(to: &Path, a: &MigrateArgs) -> Result<()> {
    if to.exists() {
        bail!("{} exists; not overwriting it", to.display());
    }
    let consume = |r: &mut dyn Read| -> Result<cairn::migrate::ExportSummary> {
        cairn::migrate::to_etcd_db(&mut { r }, to)
            .with_context(|| format!("writing {}", to.display()))
    };
    let s = match (&a.snapshot, &a.member.data_dir) {
        (Some(file), _) => {
            cairn::backup::with_image(file, a.skip_hash_check, consume)
                .with_context(|| format!("reading {}", file.display()))?
                .1
        }
        (None, Some(dir)) => {
            let (store, _) = crate::open_store(dir)?;
            cairn::pipe::through(
                |w| {
                    store.export(&mut { w })?;
                    Ok(())
                },
                consume,
            )?
        }
        (None, None) => {
            bail!("--to-etcd-db needs --data-dir (a stopped member) or --snapshot (a backup file)")
        }
    };
    println!(
        "wrote etcd snapshot {} at revision {} ({} key revisions, {} leases, {} users, {} roles, {} bytes); restore it with `etcdctl snapshot restore {}`",
        to.display(),
        s.etcd_revision,
        s.records,
        s.leases,
        s.users,
        s.roles,
        s.size,
        to.display()
    );
    if s.etcd_revision != s.revision {
        eprintln!(
            "warning: the keyspace is at revision {} but etcd will start at {}: a restore bumped its revision without marking it compacted, which etcd's file cannot say",
            s.revision, s.etcd_revision
        );
    }
    Ok(())
}
