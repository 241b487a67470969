//! Serving what other members forward to this one while it leads:
//! writes (proposed together, see [`super::propose`]), read indexes,
//! membership changes, lease renewals and time-to-live questions, the
//! cluster info a joining member asks for, and (any member) its HashKV.
//!
//! Owns: the node's [`ForwardHandler`]. A request this member cannot
//! serve as leader is answered [`ForwardResponse::NotLeader`], so the
//! sender asks again.
//!
//! May not: forward anything itself (a forwarded request is served here
//! or answered NotLeader, never passed on), or build etcd's statuses.

use std::time::Instant;

use openraft::errors::RaftError;

use super::Inner;
use crate::error::Error;
use crate::raft::forward::{ForwardHandler, ForwardRequest, ForwardResponse};
use crate::raft::{Command, CommandResponse};

#[tonic::async_trait]
impl ForwardHandler for Inner {
    async fn handle_writes(&self, cmds: Vec<Command>) -> Vec<ForwardResponse> {
        let n = cmds.len();
        let deadline = Instant::now() + self.timeout();
        let cmds = cmds.into_iter().map(|c| c.0).collect();
        match self.proposer.propose_many(cmds, deadline).await {
            Ok(Some(rs)) => rs
                .into_iter()
                .map(|r| ForwardResponse::Write(CommandResponse(r)))
                .collect(),
            Ok(None) => vec![ForwardResponse::NotLeader; n],
            Err(e) => vec![ForwardResponse::Error(e); n],
        }
    }

    async fn handle(&self, req: ForwardRequest) -> ForwardResponse {
        match req {
            ForwardRequest::Write(cmd) => {
                let deadline = Instant::now() + self.timeout();
                match self.write_local(cmd.0, deadline).await {
                    Ok(Some(r)) => ForwardResponse::Write(CommandResponse(r)),
                    Ok(None) => ForwardResponse::NotLeader,
                    Err(e) => ForwardResponse::Error(e),
                }
            }
            ForwardRequest::ReadIndex => match self.local_read_index().await {
                Ok(r) => ForwardResponse::ReadIndex(r),
                Err(RaftError::APIError(_)) => ForwardResponse::NotLeader,
                Err(e) => ForwardResponse::Error(Error::Raft(e.to_string())),
            },
            ForwardRequest::Membership(change) => {
                if self.leader() != Some(self.id) {
                    return ForwardResponse::NotLeader;
                }
                match self.change_local(change).await {
                    Ok(Some(())) => ForwardResponse::Membership,
                    Ok(None) => ForwardResponse::NotLeader,
                    Err(e) => ForwardResponse::Error(e),
                }
            }
            ForwardRequest::HashKv { revision } => {
                let store = std::sync::Arc::clone(&self.store);
                let revision = revision.min(store.current_revision());
                match tokio::task::spawn_blocking(move || store.hash_kv(revision)).await {
                    Ok(Ok(h)) => ForwardResponse::HashKv {
                        hash: h.hash,
                        compact_revision: h.compact_revision,
                        revision,
                    },
                    Ok(Err(e)) => ForwardResponse::Error(Error::from(e)),
                    Err(e) => ForwardResponse::Error(Error::Internal(e.to_string())),
                }
            }
            r @ (ForwardRequest::LeaseRenew(_) | ForwardRequest::LeaseTimeToLive { .. }) => {
                self.handle_lease_forward(r).await
            }
            ForwardRequest::ClusterInfo => {
                // Linearizable: a member added by MemberAdd (which returns
                // once the change is committed) is in the answer even if
                // this member had not applied it yet.
                if let Err(e) = self.read_barrier().await {
                    return ForwardResponse::Error(e);
                }
                ForwardResponse::ClusterInfo {
                    cluster_id: self.cluster_id,
                    members: self
                        .members()
                        .into_iter()
                        .map(|m| (m.id, m.member))
                        .collect(),
                    membership_index: self.membership_index(),
                }
            }
        }
    }
}
