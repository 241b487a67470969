//! Making a new member's data dir from a keyspace brought in whole (a
//! backup, an etcd backend): the new cluster's flags checked, the store
//! filled, the identity and a committed membership written. What fails
//! leaves no data dir behind for a member to start from.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use cairn::config::Config;
use cairn::kv::{BackendKind, ImageInfo, Restore, Store};
use cairn::node::identity::{new_cluster, Identity};
use cairn::raft::log_store::LogStore;
use cairn::raft::LogId;

/// The new member and cluster: etcd's `snapshot restore` flags.
#[derive(clap::Args, Debug)]
pub struct NewMember {
    /// The data dir (restore: the one to create, which must not exist or
    /// be empty).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The member's name in the new cluster.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// The new cluster's members: name=peer-url,...
    #[arg(long, default_value = "default=http://localhost:2380")]
    pub initial_cluster: String,
    /// The new cluster's token.
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// This member's peer URLs.
    #[arg(long, default_value = "http://localhost:2380")]
    pub initial_advertise_peer_urls: String,
    /// The storage engine of the new data dir.
    #[arg(long, default_value = "fjall")]
    pub backend: String,
}

impl NewMember {
    /// The data dir: as given, or `<name>.cairn` as etcd names it.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.cairn", self.name)))
    }
}

/// Makes the data dir of `m`, its store filled by `fill` (given the new,
/// empty store); the identity of the member made.
pub fn make_member(
    m: &NewMember,
    fill: impl FnOnce(&Store) -> Result<ImageInfo>,
) -> Result<(Identity, ImageInfo)> {
    let initial_cluster =
        Config::parse_initial_cluster(&m.initial_cluster).map_err(anyhow::Error::msg)?;
    let advertise: Vec<String> = m
        .initial_advertise_peer_urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect();
    let mut mine = match initial_cluster.iter().find(|(n, _)| *n == m.name) {
        Some((_, urls)) => urls.clone(),
        None => bail!(
            "member {:?} is not in --initial-cluster {:?}",
            m.name,
            m.initial_cluster
        ),
    };
    let mut want = advertise.clone();
    mine.sort();
    want.sort();
    if mine != want {
        bail!(
            "--initial-cluster has {}={} but --initial-advertise-peer-urls is {}",
            m.name,
            mine.join(","),
            want.join(",")
        );
    }
    let kind: BackendKind = m.backend.parse().map_err(anyhow::Error::msg)?;
    let data_dir = m.data_dir();
    let empty = match std::fs::read_dir(&data_dir) {
        Ok(mut it) => it.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => bail!("data-dir {data_dir:?} could not be read: {e}"),
    };
    if !empty {
        bail!("data-dir {data_dir:?} not empty or could not be read");
    }
    let made = fill_member(m, &data_dir, kind, &initial_cluster, &advertise, fill);
    if made.is_err() {
        // Nothing half-made is left for a member to start from.
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    made
}

fn fill_member(
    m: &NewMember,
    data_dir: &Path,
    kind: BackendKind,
    initial_cluster: &[(String, Vec<String>)],
    advertise: &[String],
    fill: impl FnOnce(&Store) -> Result<ImageInfo>,
) -> Result<(Identity, ImageInfo)> {
    let member = data_dir.join("member");
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&member)
            .with_context(|| format!("creating {}", data_dir.display()))?;
    }
    let store = Store::open_path_with(member.join("kv"), kind)
        .with_context(|| format!("creating the store in {}", member.display()))?;
    let info = fill(&store)?;
    drop(store);
    let (identity, members) = new_cluster(
        &m.name,
        initial_cluster,
        &m.initial_cluster_token,
        advertise,
    );
    let log = LogStore::open(&member.join("wal")).context("creating the raft log")?;
    log.commit_membership(LogId::new_term_index(0, 0), &members)
        .context("writing the new cluster's membership")?;
    drop(log);
    identity.write(data_dir)?;
    Ok((identity, info))
}

/// `cairnutl snapshot restore`.
pub fn snapshot_restore(
    file: &Path,
    m: &NewMember,
    bump_revision: i64,
    mark_compacted: bool,
    skip_hash_check: bool,
) -> Result<()> {
    if bump_revision < 0 {
        bail!("--bump-revision must not be negative");
    }
    if mark_compacted && bump_revision == 0 {
        bail!("--mark-compacted requires --bump-revision > 0");
    }
    let how = Restore {
        bump_revision,
        mark_compacted,
        // The new cluster starts from its own first entry.
        applied: Some(Bytes::new()),
    };
    let (identity, image) = make_member(m, |store| {
        let summary = cairn::backup::restore(file, store, &how, skip_hash_check)
            .with_context(|| format!("restoring {}", file.display()))?;
        Ok(summary.image)
    })?;
    let taken_at = image.revision - bump_revision;
    let bumped = if bump_revision > 0 {
        format!(
            "; revisions continue above {}{}",
            image.revision,
            if mark_compacted {
                ", all below it compacted"
            } else {
                ""
            }
        )
    } else {
        String::new()
    };
    println!(
        "restored snapshot at revision {taken_at} ({} key revisions){bumped} into {}: member {:x} of cluster {:x}",
        image.records,
        m.data_dir().display(),
        identity.member_id,
        identity.cluster_id
    );
    Ok(())
}
