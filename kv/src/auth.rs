//! Where the auth state lives in the store: one metadata entry
//! ([`Meta::Auth`]) whose bytes its owner (the server) encodes and
//! decodes. Written with the applied position in one batch, so a crash
//! leaves the auth state of the last applied entry; carried in images
//! ([`crate::snapshot`]) with the rest.

use bytes::Bytes;

use crate::backend::{Backend, WriteBatch};
use crate::error::{Error, Result};
use crate::record::Meta;
use crate::store::Store;

impl<B: Backend> Store<B> {
    /// The auth state as last written, if ever.
    pub fn auth_state(&self) -> Result<Option<Bytes>> {
        let inner = self.inner();
        inner.check()?;
        inner.guard(inner.backend.get(Meta::Auth.key()).map_err(Error::Backend))
    }

    /// Replaces the auth state with `state`, recording `applied` as the
    /// applied position in the same batch. Changes no revision.
    pub fn put_auth_state(&self, state: Bytes, applied: &[u8]) -> Result<()> {
        let inner = self.inner();
        inner.check()?;
        let mut st = inner.write_state()?;
        let applied = Bytes::copy_from_slice(applied);
        let mut batch = WriteBatch::new();
        batch.put(Meta::Auth.key(), state);
        batch.put(Meta::Applied.key(), applied.clone());
        inner.guard(inner.backend.write(batch).map_err(Error::Backend))?;
        st.applied = Some(applied);
        Ok(())
    }
}
