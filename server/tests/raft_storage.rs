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

/// Applies blank entries `from..=to` (term 1) to `sm`.
async fn apply_blanks(sm: &mut StateMachine, from: u64, to: u64) -> std::io::Result<()> {
    use openraft::storage::RaftStateMachine;
    let entries: Vec<std::io::Result<_>> = (from..=to)
        .map(|i| {
            let entry = Entry {
                log_id: LogId::new_term_index(1, i),
                payload: openraft::EntryPayload::Blank,
            };
            Ok((entry, None))
        })
        .collect();
    sm.apply(futures::stream::iter(entries)).await
}

/// A member builds snapshots of its own while it installs the leader's
/// (a follower catching up): neither may remove the other's files under
/// it, and the newest snapshot stays the current one (a build exported
/// before an install finished must not replace the installed snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_built_while_others_are_installed() -> std::io::Result<()> {
    use openraft::storage::RaftStateMachine;
    use openraft::RaftSnapshotBuilder;

    let dir = tempfile::tempdir()?;
    let open = |name: &str| -> std::io::Result<StateMachine> {
        let store = cairn_kv::Store::open_path(dir.path().join(name).join("kv"))
            .map_err(std::io::Error::other)?;
        StateMachine::new(Arc::new(store), &dir.path().join(name).join("snap"))
    };
    // The leader's snapshots, one every 10 entries.
    let mut leader = open("leader")?;
    let mut sent = Vec::new();
    for step in 0..40u64 {
        apply_blanks(&mut leader, step * 10 + 1, step * 10 + 10).await?;
        let snap = leader.get_snapshot_builder().await.build_snapshot().await?;
        sent.push(snap);
    }
    // The follower installs them in order while it builds its own.
    let mut follower = open("follower")?;
    let mut builder = follower.get_snapshot_builder().await;
    let building = tokio::spawn(async move {
        for _ in 0..200 {
            builder.build_snapshot().await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let last = sent.last().map(|s| s.meta.clone()).expect("snapshots");
    for snap in sent {
        follower.install_snapshot(&snap.meta, snap.snapshot).await?;
        let current = follower.get_current_snapshot().await?.expect("a snapshot");
        assert!(
            current.meta.last_log_id >= snap.meta.last_log_id,
            "current snapshot {:?} is older than the one just installed {:?}",
            current.meta.last_log_id,
            snap.meta.last_log_id
        );
    }
    building.await.map_err(std::io::Error::other)??;
    let current = follower.get_current_snapshot().await?.expect("a snapshot");
    assert_eq!(current.meta.last_log_id, last.last_log_id);
    Ok(())
}
