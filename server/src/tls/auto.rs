//! The self-signed certificates of `--auto-tls` and `--peer-auto-tls`.
//!
//! Made once per port under the data dir (`fixtures/client`,
//! `fixtures/peer`, as etcd keeps them: `cert.pem`, `key.pem`) and reused
//! at every start while both files are there: an ECDSA P-256 key, a
//! certificate valid for one year for the hosts of the port's listen
//! URLs, usable by a server and (for peers) a client. Written durably,
//! owner-only.

use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair};

use crate::durable;

/// The certificate and key files under `dir`, made for `hosts` if either
/// is missing.
pub(super) fn self_cert(dir: &Path, hosts: &[&str]) -> Result<(PathBuf, PathBuf), String> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let io = |e: std::io::Error| format!("auto TLS in {}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    let tls = |e: rcgen::Error| format!("auto TLS: cannot make a certificate: {e}");
    let mut sans: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    sans.sort();
    sans.dedup();
    let mut params = CertificateParams::new(sans).map_err(tls)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "cairn");
    params.distinguished_name = name;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::days(365);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(tls)?;
    let cert = params.self_signed(&key).map_err(tls)?;
    durable::write_file(&key_path, key.serialize_pem().as_bytes()).map_err(io)?;
    durable::write_file(&cert_path, cert.pem().as_bytes()).map_err(io)?;
    tracing::info!(dir = %dir.display(), "made a self-signed certificate (auto TLS)");
    Ok((cert_path, key_path))
}
