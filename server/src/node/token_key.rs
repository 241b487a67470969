//! A signing key for simple tokens when the auth state has none: an
//! auth state imported from etcd (`cairnutl migrate`) is on but carries
//! no key, and every member of the new cluster was made from the file on
//! its own. The leader proposes a fresh random key once; every member
//! applies the same one, so a token any member issues verifies on all.
//!
//! May not: change a key that is set (tokens issued with it would stop
//! verifying).

use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairnpb::{self, auth_command, command::Op, AuthCommand};
use cairn_proto::etcdserverpb::AuthEnableRequest;
use rand::RngCore;
use tokio::sync::watch;

use super::Inner;

/// How often the leader looks.
const EVERY: Duration = Duration::from_millis(500);

impl Inner {
    /// Until the auth state has a token key (or auth is off and none is
    /// needed yet), proposes one whenever this member leads; returns
    /// when the member stops.
    pub(super) async fn ensure_token_key(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let st = self.auth.state();
            if st.enabled && st.token_key.is_empty() && self.leads() {
                let mut key = vec![0u8; 32];
                rand::rng().fill_bytes(&mut key);
                let cmd = cairnpb::Command {
                    op: Some(Op::Auth(AuthCommand {
                        op: Some(auth_command::Op::Enable(AuthEnableRequest {})),
                        token_key: key.into(),
                    })),
                    user: None,
                };
                match self.replicate(cmd).await {
                    Ok(_) => {
                        tracing::info!("auth was on without a token signing key: one was made")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "proposing a token signing key; trying again")
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
