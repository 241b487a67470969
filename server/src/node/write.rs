//! Writes: a command replicated through Raft on the leader — proposed
//! here if this member leads, forwarded otherwise — answered with what
//! applying it produced.
//!
//! Owns: [`Inner::write`], the one durable-write path every client write,
//! lease operation and checkpoint takes, and [`apply_result`]. Batching
//! of concurrent writes into one entry is [`super::propose`]'s.
//!
//! May not: read (see `read`), or pick the leader itself (see `route`).

use std::time::Instant;

use cairn_proto::cairnpb::{self, command::Op, command_response::Result as Res};

use super::route::{unexpected, Resend};
use super::Inner;
use crate::error::Error;
use crate::raft::forward::{ForwardRequest, ForwardResponse};
use crate::raft::{batchable, Command};

/// Unwraps an apply result into the response or its typed error.
pub fn apply_result(r: cairnpb::CommandResponse) -> Result<Res, Error> {
    match r.result {
        Some(Res::Error(e)) => Err(Error::from_apply(&e)),
        Some(other) => Ok(other),
        None => Err(Error::Internal("empty apply result".into())),
    }
}

impl Inner {
    /// Replicates `cmd` and answers what applying it produced, forwarding
    /// to the leader if this member is not it.
    pub async fn write(&self, cmd: cairnpb::Command) -> Result<cairnpb::CommandResponse, Error> {
        if self.alarms.corrupt() && crate::alarm::corrupt_refuses(&cmd) {
            return Err(Error::Corrupt);
        }
        self.check_space(&cmd).await?;
        self.replicate(cmd).await
    }

    /// [`Inner::write`] without the space check.
    pub(super) async fn replicate(
        &self,
        cmd: cairnpb::Command,
    ) -> Result<cairnpb::CommandResponse, Error> {
        let deadline = Instant::now() + self.timeout();
        let batch = batchable(&cmd);
        let cmd = &cmd;
        self.route(
            deadline,
            Resend::IfNotSent,
            || ForwardRequest::Write(Command(cmd.clone())),
            || async move {
                if !batch {
                    self.write_local(cmd.clone(), deadline).await
                } else if self.leads() {
                    self.proposer.propose(cmd.clone(), deadline).await
                } else {
                    // Not the leader as far as this member knows: forward.
                    Ok(None)
                }
            },
            |r| match r {
                ForwardResponse::Write(r) => Ok(r.0),
                other => Err(unexpected(other)),
            },
        )
        .await
    }

    /// [`Inner::write`] of `op`, unwrapped into its result.
    pub(crate) async fn propose(&self, op: Op) -> Result<Res, Error> {
        // The member's own command: no user.
        self.propose_as(op, None).await
    }

    /// [`Inner::propose`] as `user` (see `cairnpb::Command::user`).
    pub(crate) async fn propose_as(&self, op: Op, user: Option<String>) -> Result<Res, Error> {
        let cmd = cairnpb::Command { op: Some(op), user };
        apply_result(self.write(cmd).await?)
    }

    /// Proposes on this member. `Ok(None)`: not the leader, nothing was
    /// proposed.
    pub(crate) async fn write_local(
        &self,
        cmd: cairnpb::Command,
        deadline: Instant,
    ) -> Result<Option<cairnpb::CommandResponse>, Error> {
        super::propose::propose(&self.raft, cmd, deadline).await
    }
}
