//! openraft's storage conformance suite run against Cairn's log store
//! (over `cairn-raft-log`) and state machine (over `cairn-kv`).

use std::sync::Arc;

use cairn::raft::log_store::LogStore;
use cairn::raft::state_machine::StateMachine;
use cairn::raft::TypeConfig;
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
