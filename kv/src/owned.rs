//! Entries the store keeps for its owner (the server) without reading
//! them: the auth state and the raised alarms ([`Owned`]), each one
//! metadata entry of bytes the owner encodes and decodes. Written with
//! the applied position in one batch, so a crash leaves each as of the
//! last applied entry; carried in images ([`crate::snapshot`]) with the
//! rest.

use bytes::Bytes;

use crate::backend::{Backend, WriteBatch};
use crate::error::{Error, Result};
use crate::record::Meta;
use crate::store::Store;

/// Which owned entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owned {
    /// Users, roles and whether authentication is on.
    Auth,
    /// The raised alarms (NOSPACE, CORRUPT).
    Alarms,
}

impl Owned {
    /// Every owned entry.
    pub const ALL: [Owned; 2] = [Owned::Auth, Owned::Alarms];

    pub(crate) fn meta(self) -> Meta {
        match self {
            Owned::Auth => Meta::Auth,
            Owned::Alarms => Meta::Alarms,
        }
    }

    /// Whether `key` is an owned entry's backend key.
    pub(crate) fn is_key(key: &[u8]) -> bool {
        Owned::ALL.iter().any(|o| o.meta().key() == key)
    }
}

impl<B: Backend> Store<B> {
    /// The entry `which` as last written, if ever.
    pub fn owned(&self, which: Owned) -> Result<Option<Bytes>> {
        let inner = self.inner();
        inner.check()?;
        inner.guard(
            inner
                .backend
                .get(which.meta().key())
                .map_err(Error::Backend),
        )
    }

    /// Replaces the entry `which` with `state`, recording `applied` as the
    /// applied position in the same batch. Changes no revision.
    pub fn put_owned(&self, which: Owned, state: Bytes, applied: &[u8]) -> Result<()> {
        let inner = self.inner();
        inner.check()?;
        let mut st = inner.write_state()?;
        let applied = Bytes::copy_from_slice(applied);
        let mut batch = WriteBatch::new();
        batch.put(which.meta().key(), state);
        batch.put(Meta::Applied.key(), applied.clone());
        inner.guard(inner.backend.write(batch).map_err(Error::Backend))?;
        st.applied = Some(applied);
        Ok(())
    }
}
