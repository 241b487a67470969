//! Authentication and role-based access control, as etcd has them.
//!
//! - [`state`]: the replicated auth state (users, roles, permissions,
//!   whether auth is on) and how each Raft command changes it.
//! - [`perm`]: whether a user's permissions cover what a request touches.
//! - [`token`]: the tokens `Authenticate` hands out (simple or JWT).
//! - [`Auth`] (here): one member's view — the state as applied so far,
//!   kept in memory and in the kv store (one entry, written with the
//!   applied position, carried in snapshots), the token maker, bcrypt.
//!
//! Who is asking is decided where a request arrives: its token, else the
//! common name of the client certificate the port verified. Writes are
//! checked twice: early, where they arrive, and authoritatively at apply,
//! where every member decides alike on the auth state as of that log
//! entry — so a revoke committed before a write denies it everywhere,
//! whichever member the write came through. Reads are checked after the
//! read barrier, against a state at least as new as the read.

pub mod perm;
pub mod state;
pub mod token;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use cairn_kv::{Owned, Store};
use cairn_proto::cairnpb::AuthCommand;

pub use self::perm::Need;
pub use self::state::{AuthState, ROOT};
use self::token::Tokens;
use crate::error::Error;

/// One member's auth: the state as applied, tokens, passwords.
pub struct Auth {
    /// Replaced whole at each change (readers keep the `Arc` they took).
    state: RwLock<Arc<AuthState>>,
    /// `state.enabled`, readable without the lock: with auth off (the
    /// common case) a request costs one atomic load here.
    enabled: AtomicBool,
    tokens: Tokens,
    bcrypt_cost: u32,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth({:?})", self.tokens)
    }
}

fn decode_state(raw: Option<Bytes>) -> Result<AuthState, String> {
    match raw {
        None => Ok(AuthState::default()),
        Some(b) => AuthState::from_bytes(&b),
    }
}

impl Auth {
    /// The auth state stored in `store`, with `--auth-token`,
    /// `--auth-token-ttl` and `--bcrypt-cost`.
    pub fn open(
        store: &Store,
        token_spec: &str,
        token_ttl: Duration,
        bcrypt_cost: u32,
    ) -> Result<Self, String> {
        if !(4..=31).contains(&bcrypt_cost) {
            return Err(format!(
                "--bcrypt-cost {bcrypt_cost} is out of range (4 to 31)"
            ));
        }
        let state = decode_state(store.owned(Owned::Auth).map_err(|e| e.to_string())?)?;
        Ok(Self {
            enabled: AtomicBool::new(state.enabled),
            state: RwLock::new(Arc::new(state)),
            tokens: Tokens::parse(token_spec, token_ttl)?,
            bcrypt_cost,
        })
    }

    /// The state as applied so far.
    pub fn state(&self) -> Arc<AuthState> {
        match self.state.read() {
            Ok(s) => Arc::clone(&s),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Whether authentication is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    fn replace(&self, next: AuthState) {
        let enabled = next.enabled;
        let next = Arc::new(next);
        match self.state.write() {
            Ok(mut s) => *s = next,
            Err(p) => *p.into_inner() = next,
        }
        self.enabled.store(enabled, Ordering::Release);
    }

    /// Reads the state again from `store` (after a snapshot replaced its
    /// contents).
    pub fn reload(&self, store: &Store) -> std::io::Result<()> {
        let raw = store.owned(Owned::Auth).map_err(std::io::Error::other)?;
        let state = decode_state(raw).map_err(std::io::Error::other)?;
        self.replace(state);
        Ok(())
    }

    /// Applies `cmd` as the log entry at `applied`: the new revision, or
    /// etcd's error for the command (the outer error is the store's own
    /// failure).
    pub fn apply(
        &self,
        cmd: &AuthCommand,
        store: &Store,
        applied: &[u8],
    ) -> Result<Result<u64, Error>, cairn_kv::Error> {
        let current = self.state();
        let next = match current.apply(cmd) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        if next == *current {
            store.record_applied(applied)?;
            return Ok(Ok(next.revision));
        }
        let raw = next.to_bytes().map_err(|reason| cairn_kv::Error::Corrupt {
            location: "auth state".into(),
            reason,
        })?;
        store.put_owned(Owned::Auth, Bytes::from(raw), applied)?;
        let revision = next.revision;
        if next.enabled != current.enabled {
            tracing::info!(
                enabled = next.enabled,
                "authentication turned {}",
                if next.enabled { "on" } else { "off" }
            );
        }
        self.replace(next);
        Ok(Ok(revision))
    }

    /// Who a request is from: its token if it carries one, else the
    /// common name of its verified client certificate. `None` with auth
    /// off (and for a request that names no one).
    pub fn identify(
        &self,
        token: Option<&str>,
        common_name: Option<&str>,
    ) -> Result<Option<String>, Error> {
        let state = self.state();
        if !state.enabled {
            return Ok(None);
        }
        if let Some(t) = token {
            return self.tokens.verify(&state, t).map(Some);
        }
        Ok(common_name.map(str::to_string))
    }

    /// A token for `user` after its password was checked.
    pub fn token_for(&self, user: &str) -> Result<String, Error> {
        self.tokens.assign(&self.state(), user)
    }

    /// Checks `password` for `user` (bcrypt: slow on purpose; call off
    /// the async threads).
    pub fn check_password(&self, user: &str, password: &str) -> Result<(), Error> {
        let state = self.state();
        if !state.enabled {
            return Err(Error::AuthNotEnabled);
        }
        let hash = state
            .users
            .get(user)
            .and_then(|u| u.password_hash.clone())
            .ok_or(Error::AuthFailed)?;
        match bcrypt::verify(password, &hash) {
            Ok(true) => Ok(()),
            _ => Err(Error::AuthFailed),
        }
    }

    /// The bcrypt hash of `password` (slow on purpose; call off the async
    /// threads).
    pub fn hash_password(&self, password: &str) -> Result<String, Error> {
        bcrypt::hash(password, self.bcrypt_cost).map_err(|e| Error::Internal(e.to_string()))
    }

    /// Allows `needs` for `user`, or answers etcd's error.
    pub fn check(&self, user: Option<&str>, needs: &[Need]) -> Result<(), Error> {
        if !self.is_enabled() {
            return Ok(());
        }
        perm::check(&self.state(), user, needs)
    }

    /// Allows only root (anyone with auth off).
    pub fn require_root(&self, user: Option<&str>) -> Result<(), Error> {
        if !self.is_enabled() {
            return Ok(());
        }
        let state = self.state();
        if !state.enabled {
            return Ok(());
        }
        match user {
            None => Err(Error::UserEmpty),
            Some(u) if state.is_root(u) => Ok(()),
            Some(_) => Err(Error::PermissionDenied),
        }
    }

    /// Allows any existing user (anyone with auth off): for calls that
    /// touch no key but must not be open to strangers (member list,
    /// leases, status; GHSA-q8m4-xhhv-38mg).
    pub fn require_user(&self, user: Option<&str>) -> Result<(), Error> {
        if !self.is_enabled() {
            return Ok(());
        }
        let state = self.state();
        if !state.enabled {
            return Ok(());
        }
        match user {
            None => Err(Error::UserEmpty),
            Some(u) if state.users.contains_key(u) => Ok(()),
            Some(_) => Err(Error::PermissionDenied),
        }
    }
}
