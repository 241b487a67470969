//! Reading certificates, private keys and revocation lists from files,
//! with errors that name the file.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::RootCertStore;

/// Every certificate in the PEM file at `path` (at least one).
pub(super) fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read certificate file {}: {e}", path.display()))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate file {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "certificate file {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key in the PEM file at `path`.
pub(super) fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("key file {}: {e}", path.display()))
}

/// The CA certificates in `path`, as trust roots.
pub(super) fn roots(path: &Path) -> Result<Arc<RootCertStore>, String> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store
            .add(c)
            .map_err(|e| format!("trusted CA file {}: {e}", path.display()))?;
    }
    Ok(Arc::new(store))
}

/// The revocation lists in `path`: PEM (`X509 CRL` blocks) or one DER
/// list, as Go's parser takes them.
pub(super) fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let raw =
        std::fs::read(path).map_err(|e| format!("cannot read CRL file {}: {e}", path.display()))?;
    if raw.trim_ascii_start().starts_with(b"-----BEGIN") {
        let crls = CertificateRevocationListDer::pem_slice_iter(&raw)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("CRL file {}: {e}", path.display()))?;
        if crls.is_empty() {
            return Err(format!(
                "CRL file {}: no PEM X509 CRL in it",
                path.display()
            ));
        }
        Ok(crls)
    } else {
        Ok(vec![CertificateRevocationListDer::from(raw)])
    }
}
