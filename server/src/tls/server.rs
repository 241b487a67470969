//! [`ServerTls`]: the TLS side of a listener (client or peer port).

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::reload::Reloading;
use super::verify::{ClientCerts, Identity};
use super::{pem, TlsInfo, TlsSettings};

/// A port's TLS: the certificate it presents and what it requires of the
/// other side, reloaded when a file changes.
pub struct ServerTls {
    config: Reloading<ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// Loads `info` (already resolved for auto TLS) with `settings`;
    /// `what` names the port in errors and logs (`client`, `peer`).
    /// Fails if a file cannot be read or does not fit.
    pub fn new(info: &TlsInfo, settings: &TlsSettings, what: &'static str) -> Result<Self, String> {
        let (Some(_), Some(_)) = (&info.cert_file, &info.key_file) else {
            return Err(format!(
                "{what} TLS needs both a certificate and a key file"
            ));
        };
        if info.client_cert_auth && info.trusted_ca_file.is_none() {
            return Err(format!(
                "{what} certificate authentication needs a trusted CA file to check certificates against"
            ));
        }
        let files = [
            &info.cert_file,
            &info.key_file,
            &info.trusted_ca_file,
            &info.crl_file,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        let info = info.clone();
        let settings = settings.clone();
        let config = Reloading::new(what, files, move || build(&info, &settings))?;
        Ok(Self { config })
    }

    /// Runs the server side of a handshake on `tcp`, within
    /// [`super::HANDSHAKE_TIMEOUT`].
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.get());
        super::within_timeout(acceptor.accept(tcp)).await
    }
}

fn build(info: &TlsInfo, settings: &TlsSettings) -> Result<ServerConfig, String> {
    let provider = settings.provider()?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&settings.versions()?)
        .map_err(|e| e.to_string())?;
    let builder = match &info.trusted_ca_file {
        Some(ca) if info.requires_client_cert() => {
            let mut v = WebPkiClientVerifier::builder_with_provider(pem::roots(ca)?, provider);
            if let Some(crl) = &info.crl_file {
                // etcd checks the client's own certificate against the
                // list, and lists need not cover every issuer.
                v = v
                    .with_crls(pem::crls(crl)?)
                    .only_check_end_entity_revocation()
                    .allow_unknown_revocation_status();
            }
            let v = v
                .build()
                .map_err(|e| format!("trusted CA file {}: {e}", ca.display()))?;
            let identity =
                Identity::from_flags(info.allowed_cn.as_deref(), info.allowed_hostname.as_deref())?;
            builder.with_client_cert_verifier(Arc::new(ClientCerts {
                inner: v,
                roots: pem::certs(ca)?,
                identity,
            }))
        }
        _ => builder.with_no_client_auth(),
    };
    let (Some(cert), Some(key)) = (&info.cert_file, &info.key_file) else {
        return Err("TLS needs both a certificate and a key file".into());
    };
    let mut config = builder
        .with_single_cert(pem::certs(cert)?, pem::key(key)?)
        .map_err(|e| {
            format!(
                "certificate {} and key {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
