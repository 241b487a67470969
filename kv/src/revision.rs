//! Revisions: the MVCC clock.
//!
//! A revision is `(main, sub)`: `main` is the store-wide revision a write
//! transaction produced, `sub` numbers the changes inside that transaction
//! from 0. On disk a revision is 16 bytes, `main` then `sub`, each a
//! big-endian `u64`, so byte order equals revision order and a backend scan
//! visits history oldest first.

use std::fmt;

/// A point in the store's history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    /// The store revision of the write transaction (etcd's `mod_revision`).
    pub main: i64,
    /// The change's position inside its transaction.
    pub sub: i64,
}

impl Revision {
    /// Bytes of [`Revision::to_bytes`].
    pub const ENCODED_LEN: usize = 16;

    /// A revision from its parts.
    pub const fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }

    /// The ordered 16-byte encoding. Both parts are non-negative in a store.
    pub fn to_bytes(self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        out[8..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        out
    }

    /// Decodes [`Revision::to_bytes`]; `None` unless exactly 16 bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != Self::ENCODED_LEN {
            return None;
        }
        let mut main = [0u8; 8];
        let mut sub = [0u8; 8];
        main.copy_from_slice(&b[..8]);
        sub.copy_from_slice(&b[8..]);
        Some(Self {
            main: u64::from_be_bytes(main) as i64,
            sub: u64::from_be_bytes(sub) as i64,
        })
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.main, self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encoding_round_trips_and_keeps_order(a in (0i64..i64::MAX, 0i64..i64::MAX), b in (0i64..i64::MAX, 0i64..i64::MAX)) {
            let ra = Revision::new(a.0, a.1);
            let rb = Revision::new(b.0, b.1);
            prop_assert_eq!(Revision::from_bytes(&ra.to_bytes()), Some(ra));
            prop_assert_eq!(ra.cmp(&rb), ra.to_bytes().cmp(&rb.to_bytes()));
        }
    }

    #[test]
    fn rejects_wrong_length() {
        assert_eq!(Revision::from_bytes(&[0u8; 15]), None);
        assert_eq!(Revision::from_bytes(&[0u8; 17]), None);
    }
}
