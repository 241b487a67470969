//! Checks on the other side's certificate beyond a CA's signature.
//!
//! - [`ClientCerts`]: a client certificate verified against the trusted
//!   CAs (a trusted CA's own certificate taken too), then, where a port
//!   names one, only one with the allowed common name
//!   (`--peer-cert-allowed-cn`) or valid for the allowed host
//!   (`--peer-cert-allowed-hostname`, `--client-cert-allowed-hostname`).
//! - [`SelfSignedPeer`]: a member with `--peer-auto-tls` dials peers
//!   whose certificates are self-signed, so it verifies only that the
//!   handshake is signed by the certificate presented (as etcd, which
//!   skips verification there).
//! - [`common_name`]: a certificate's subject common name.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

/// The subject common name of a DER certificate, if it has one.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// What a verified client certificate must also be.
#[derive(Debug)]
pub(super) enum Identity {
    CommonName(String),
    Host(ServerName<'static>),
}

impl Identity {
    /// The check for `allowed_cn` or `allowed_hostname` (etcd refuses
    /// both at once).
    pub(super) fn from_flags(
        allowed_cn: Option<&str>,
        allowed_hostname: Option<&str>,
    ) -> Result<Option<Self>, String> {
        match (allowed_cn, allowed_hostname) {
            (Some(cn), Some(host)) => Err(format!(
                "AllowedCN and AllowedHostname are mutually exclusive (cn={cn:?}, hostname={host:?})"
            )),
            (Some(cn), None) => Ok(Some(Self::CommonName(cn.to_string()))),
            (None, Some(host)) => ServerName::try_from(host.to_string())
                .map(|n| Some(Self::Host(n)))
                .map_err(|e| format!("allowed hostname {host:?}: {e}")),
            (None, None) => Ok(None),
        }
    }

    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), Error> {
        let ok = match self {
            Self::CommonName(cn) => common_name(cert).as_deref() == Some(cn.as_str()),
            Self::Host(name) => webpki::EndEntityCert::try_from(cert)
                .and_then(|c| c.verify_is_valid_for_subject_name(name))
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
}

/// The client verifier of a port that requires client certificates:
/// webpki's verification against the trusted CAs, except that one of the
/// trusted CA certificates itself is also taken as a client's while it is
/// valid (a self-signed CA used as the client's own certificate, as
/// etcd's tests and some small deployments do; Go accepts it, webpki
/// refuses a CA as an end entity). Whoever holds a trusted CA's key can
/// issue any client certificate anyway, so this trusts no one new, and
/// the handshake must still be signed with that certificate's key. Then,
/// if the port names one, the certificate must have the allowed
/// [`Identity`].
#[derive(Debug)]
pub(super) struct ClientCerts {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    /// The trusted CA certificates, DER.
    pub(super) roots: Vec<CertificateDer<'static>>,
    pub(super) identity: Option<Identity>,
}

impl ClientCerts {
    fn is_valid_root(&self, cert: &CertificateDer<'_>, now: UnixTime) -> bool {
        if !self.roots.iter().any(|r| r.as_ref() == cert.as_ref()) {
            return false;
        }
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
            return false;
        };
        let Ok(now) = i64::try_from(now.as_secs()) else {
            return false;
        };
        let validity = parsed.validity();
        validity.not_before.timestamp() <= now && now <= validity.not_after.timestamp()
    }
}

impl ClientCertVerifier for ClientCerts {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(_) if self.is_valid_root(end_entity, now) => ClientCertVerified::assertion(),
            r => r?,
        };
        if let Some(identity) = &self.identity {
            identity.check(end_entity)?;
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any server certificate, but only a handshake signed by it.
#[derive(Debug)]
pub(super) struct SelfSignedPeer {
    pub(super) provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SelfSignedPeer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
