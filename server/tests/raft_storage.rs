//! openraft's storage conformance suite run against Cairn's log store
//! (over `cairn-raft-log`) and state machine (over `cairn-kv`).

use std::sync::Arc;

use cairn::raft::log_store::LogStore;
use cairn::raft::state_machine::StateMachine;
use cairn::raft::{Entry, LogId, TypeConfig};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;

struct Builder;

fn se(e: impl std::error::Error + 'static) -> StorageError<TypeConfig> {
    StorageError::read(openraft::errors::ErrorSource::from_error(&e))
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(se)?;
        let log = LogStore::open(&dir.path().join("log")).map_err(se)?;
        let store = cairn_kv::Store::open_path(dir.path().join("kv")).map_err(se)?;
        let sm = StateMachine::new(Arc::new(store), &dir.path().join("snap")).map_err(se)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Builder).await
}

/// Applies entries `from..=to` (term 1) to `sm`, each a put of
/// `key-<index>`.
async fn apply_puts(sm: &mut StateMachine, from: u64, to: u64) -> std::io::Result<()> {
    use cairn_proto::cairnpb;
    use cairn_proto::etcdserverpb::PutRequest;
    use openraft::storage::RaftStateMachine;
    let entries: Vec<std::io::Result<_>> = (from..=to)
        .map(|i| {
            let put = PutRequest {
                key: format!("key-{i:06}").into_bytes().into(),
                value: b"v".to_vec().into(),
                ..Default::default()
            };
            let entry = Entry {
                log_id: LogId::new_term_index(1, i),
                payload: openraft::EntryPayload::Normal(cairn::raft::Command(cairnpb::Command {
                    op: Some(cairnpb::command::Op::Put(put)),
                    ..Default::default()
                })),
            };
            Ok((entry, None))
        })
        .collect();
    sm.apply(futures::stream::iter(entries)).await
}

fn open_sm(dir: &std::path::Path, name: &str) -> std::io::Result<StateMachine> {
    let store =
        cairn_kv::Store::open_path(dir.join(name).join("kv")).map_err(std::io::Error::other)?;
    StateMachine::new(Arc::new(store), &dir.join(name).join("snap"))
}

/// A leader's snapshot is its store, exported as a follower reads it:
/// each image holds exactly the entries its meta names even while the
/// leader goes on applying before it is read, and a follower that
/// installs them (while it builds snapshots of its own) ends where each
/// says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_hold_what_their_meta_says_while_the_leader_applies() -> std::io::Result<()> {
    use openraft::storage::RaftStateMachine;
    use openraft::RaftSnapshotBuilder;

    let dir = tempfile::tempdir()?;
    let mut leader = open_sm(dir.path(), "leader")?;
    assert!(
        leader.get_current_snapshot().await?.is_none(),
        "nothing applied, no snapshot"
    );
    let mut follower = open_sm(dir.path(), "follower")?;
    let mut builder = follower.get_snapshot_builder().await;
    let building = tokio::spawn(async move {
        for _ in 0..100 {
            builder.build_snapshot().await?;
        }
        Ok::<_, std::io::Error>(())
    });
    for step in 0..20u64 {
        apply_puts(&mut leader, step * 20 + 1, step * 20 + 10).await?;
        let snap = leader.get_current_snapshot().await?.expect("a snapshot");
        let at = LogId::new_term_index(1, step * 20 + 10);
        assert_eq!(snap.meta.last_log_id, Some(at));
        // Applied after the export started, before it is read.
        apply_puts(&mut leader, step * 20 + 11, step * 20 + 20).await?;
        follower.install_snapshot(&snap.meta, snap.snapshot).await?;
        let (applied, _) = follower.applied_state().await?;
        assert_eq!(applied, Some(at));
        assert_eq!(
            follower.store().current_revision(),
            (step * 20 + 11) as i64,
            "the image holds the puts up to its meta's entry, none after"
        );
        let current = follower.get_current_snapshot().await?.expect("a snapshot");
        assert_eq!(current.meta.last_log_id, Some(at));
    }
    building.await.map_err(std::io::Error::other)??;
    Ok(())
}

/// Building a snapshot copies nothing (the store is the snapshot), and
/// the files an earlier format kept (an image and its meta per snapshot)
/// are removed when the member opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_take_no_files() -> std::io::Result<()> {
    use openraft::storage::RaftStateMachine;
    use openraft::RaftSnapshotBuilder;

    let dir = tempfile::tempdir()?;
    let snap = dir.path().join("m").join("snap");
    std::fs::create_dir_all(&snap)?;
    for old in ["snapshot-2-300.img", "snapshot-2-300.meta", "building.img"] {
        std::fs::write(snap.join(old), b"an earlier format's snapshot")?;
    }
    let mut sm = open_sm(dir.path(), "m")?;
    let left: Vec<_> = std::fs::read_dir(&snap)?.collect::<Result<_, _>>()?;
    assert!(left.is_empty(), "left behind: {left:?}");
    apply_puts(&mut sm, 1, 50).await?;
    let built = sm.get_snapshot_builder().await.build_snapshot().await?;
    assert_eq!(built.meta.last_log_id, Some(LogId::new_term_index(1, 50)));
    let left: Vec<_> = std::fs::read_dir(&snap)?.collect::<Result<_, _>>()?;
    assert!(left.is_empty(), "a build wrote: {left:?}");
    Ok(())
}
