//! [`ClientTls`]: how a member dials peers whose URLs are `https://`.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::reload::Reloading;
use super::verify::SelfSignedPeer;
use super::{pem, TlsInfo, TlsSettings};

/// The peer port's TLS as a client: this member's certificate (peers may
/// require it) and the CA that peers' certificates are checked against,
/// reloaded when a file changes.
pub struct ClientTls {
    config: Reloading<ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Loads `info` (already resolved for auto TLS). Without a trusted CA
    /// file peers cannot be verified, which is refused unless the
    /// certificates are the self-signed ones of auto TLS.
    pub fn new(info: &TlsInfo, settings: &TlsSettings) -> Result<Self, String> {
        if info.trusted_ca_file.is_none() && !info.is_self_signed() {
            return Err(
                "https peer URLs need --peer-trusted-ca-file to verify other members \
                 (or --peer-auto-tls)"
                    .to_string(),
            );
        }
        let files = [&info.cert_file, &info.key_file, &info.trusted_ca_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let info = info.clone();
        let settings = settings.clone();
        let config = Reloading::new("peer (dialing)", files, move || build(&info, &settings))?;
        Ok(Self { config })
    }

    /// Runs the client side of a handshake with the peer at `host` over
    /// `tcp`, within [`super::HANDSHAKE_TIMEOUT`].
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?
            .to_owned();
        let connector = tokio_rustls::TlsConnector::from(self.config.get());
        super::within_timeout(connector.connect(name, tcp)).await
    }
}

fn build(info: &TlsInfo, settings: &TlsSettings) -> Result<ClientConfig, String> {
    let provider = settings.provider()?;
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&settings.versions()?)
        .map_err(|e| e.to_string())?;
    let builder = match &info.trusted_ca_file {
        Some(ca) if !info.is_self_signed() => builder.with_root_certificates(pem::roots(ca)?),
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SelfSignedPeer { provider })),
    };
    let mut config = match (&info.cert_file, &info.key_file) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(pem::certs(cert)?, pem::key(key)?)
            .map_err(|e| {
                format!(
                    "certificate {} and key {}: {e}",
                    cert.display(),
                    key.display()
                )
            })?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
