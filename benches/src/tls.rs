//! Client TLS for the loads, with etcdctl's flags (`--cacert`, `--cert`,
//! `--key`): the lean HTTP/2 connections get a rustls connector, the
//! tonic channels tonic's own TLS settings from the same files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The certificate files a TLS run uses.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsFiles {
    /// Verify the servers with this CA bundle (PEM); turns TLS on.
    #[arg(long, global = true)]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM), for servers that ask for one.
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether connections use TLS.
    pub fn enabled(&self) -> bool {
        self.cacert.is_some()
    }

    /// A connector for the lean HTTP/2 connections (ALPN `h2`).
    pub fn connector(&self) -> Result<TlsConnector> {
        let Some(ca) = &self.cacert else {
            bail!("TLS needs --cacert");
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(ca)? {
            roots.add(cert).context("CA certificate")?;
        }
        // ring, as the server uses (aws-lc-rs, the provider with
        // post-quantum key exchange, compiles a large C library).
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_root_certificates(roots);
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let key = PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("key file {}", key.display()))?;
                builder
                    .with_client_auth_cert(certs(cert)?, key)
                    .context("client certificate")?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => bail!("--cert and --key go together"),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsConnector::from(Arc::new(config)))
    }

    /// The same settings for a tonic channel.
    pub fn tonic(&self) -> Result<tonic::transport::ClientTlsConfig> {
        let Some(ca) = &self.cacert else {
            bail!("TLS needs --cacert");
        };
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("read {}", p.display()));
        let mut config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            config = config.identity(tonic::transport::Identity::from_pem(
                read(cert)?,
                read(key)?,
            ));
        }
        Ok(config)
    }
}

/// TLS over `tcp` to `host`.
pub async fn connect(
    connector: &TlsConnector,
    host: &str,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_string()).context("server name")?;
    connector
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {host}"))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .with_context(|| format!("certificate file {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("certificate file {}", path.display()))
}
