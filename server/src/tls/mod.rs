//! TLS on the client and peer ports, with etcd's flags and meanings, over
//! rustls (with ring: no OpenSSL, no C++ build).
//!
//! - [`TlsInfo`]: one port's files and checks, as etcd's `TLSInfo`
//!   (`--cert-file`, `--trusted-ca-file`, `--client-cert-auth`, … and their
//!   `--peer-*` twins); [`TlsSettings`]: what both ports share
//!   (`--cipher-suites`, `--tls-min-version`, `--tls-max-version`), in
//!   `settings`.
//! - [`ServerTls`] (`server`): a port's acceptor; [`ClientTls`]
//!   (`client`): how a member dials its peers. Both re-read their files
//!   when one changes (checked at each handshake), so certificates rotate
//!   without a restart; a file that fails to load keeps the last good
//!   configuration and says so in the log (`reload`).
//! - `verify`: the checks rustls does not make itself — a peer's common
//!   name or host name (`--peer-cert-allowed-cn`,
//!   `--peer-cert-allowed-hostname`), and the self-signed peers of
//!   `--peer-auto-tls`, whose certificates no one can verify.
//! - `auto`: the self-signed certificates of `--auto-tls` and
//!   `--peer-auto-tls`, kept under the data dir as etcd keeps them;
//!   `pem`: reading certificates, keys and revocation lists.
//!
//! Rules, as etcd: a URL's scheme decides, so `http://` and `https://`
//! listeners can serve side by side and an `https://` listener never
//! answers plaintext; a trusted CA file makes client certificates
//! required; a certificate revocation list refuses the end-entity
//! certificates it lists.

mod auto;
mod client;
mod pem;
mod reload;
mod server;
mod settings;
mod verify;

use std::path::{Path, PathBuf};

pub use self::client::ClientTls;
pub use self::server::ServerTls;
pub use self::settings::{TlsSettings, TlsVersion};
pub use self::verify::common_name;

/// How long a TLS handshake may take before the connection is dropped
/// (etcd has no such bound; a client that opens connections and never
/// finishes them would hold them forever).
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs a handshake, failing it if it does not finish within
/// [`HANDSHAKE_TIMEOUT`] (both sides of both ports use this).
async fn within_timeout<T>(
    handshake: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("TLS handshake not finished within {HANDSHAKE_TIMEOUT:?}"),
        )),
    }
}

/// One port's TLS configuration, as etcd's flags give it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The certificate chain presented (PEM).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// CA certificates that client (or peer) certificates are checked
    /// against; when given, a certificate is required (etcd's rule).
    pub trusted_ca_file: Option<PathBuf>,
    /// Require a certificate signed by the trusted CA.
    pub client_cert_auth: bool,
    /// Revoked certificates (PEM or DER): a client certificate listed
    /// there is refused.
    pub crl_file: Option<PathBuf>,
    /// Generate and use a self-signed certificate (`--auto-tls`).
    pub auto_tls: bool,
    /// Only certificates with this common name are accepted.
    pub allowed_cn: Option<String>,
    /// Only certificates valid for this host name or IP are accepted.
    pub allowed_hostname: Option<String>,
}

impl TlsInfo {
    /// Whether no certificate is configured, given or automatic.
    pub fn is_empty(&self) -> bool {
        self.cert_file.is_none() && self.key_file.is_none() && !self.auto_tls
    }

    /// Whether presenting a certificate is required of the other side.
    pub fn requires_client_cert(&self) -> bool {
        self.client_cert_auth || self.trusted_ca_file.is_some()
    }

    /// With `auto_tls` and no certificate given, the self-signed
    /// certificate under `dir` (made for `hosts` if not there yet) in
    /// place of the files; otherwise `self` as it is.
    pub fn resolve_auto(&self, dir: &Path, hosts: &[&str]) -> Result<TlsInfo, String> {
        if !self.auto_tls {
            return Ok(self.clone());
        }
        if self.cert_file.is_some() || self.key_file.is_some() {
            // etcd's rule: given files win over the automatic certificate.
            tracing::warn!("auto TLS is ignored: certificate files are given");
            return Ok(TlsInfo {
                auto_tls: false,
                ..self.clone()
            });
        }
        let (cert, key) = auto::self_cert(dir, hosts)?;
        // etcd's auto TLS replaces the whole TLS setting, so certificate
        // authentication without a CA to check against is dropped there
        // too (said here rather than silently).
        let client_cert_auth = self.client_cert_auth && self.trusted_ca_file.is_some();
        if self.client_cert_auth && !client_cert_auth {
            tracing::warn!(
                "auto TLS without a trusted CA file: client certificate authentication is off"
            );
        }
        Ok(TlsInfo {
            cert_file: Some(cert),
            key_file: Some(key),
            client_cert_auth,
            ..self.clone()
        })
    }

    /// Whether the certificate is the generated self-signed one (after
    /// [`TlsInfo::resolve_auto`]), which the other side cannot verify and
    /// does not try to.
    pub fn is_self_signed(&self) -> bool {
        self.auto_tls
    }
}
