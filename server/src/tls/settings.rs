//! What the client and peer ports share: the cipher suites and protocol
//! versions offered (`--cipher-suites`, `--tls-min-version`,
//! `--tls-max-version`).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::SupportedProtocolVersion;

/// A TLS protocol version as etcd's flags name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `TLS1.2`.
    Tls12,
    /// `TLS1.3`.
    Tls13,
}

impl std::str::FromStr for TlsVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "TLS1.2" => Ok(Self::Tls12),
            "TLS1.3" => Ok(Self::Tls13),
            "TLS1.0" | "TLS1.1" => Err(format!(
                "{s} is not supported: TLS1.2 and TLS1.3 are (older versions are broken)"
            )),
            other => Err(format!(
                "unexpected TLS version {other:?} (supported versions: TLS1.2, TLS1.3)"
            )),
        }
    }
}

/// The cipher suites and versions both ports offer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// TLS 1.2 cipher suites by their IANA (Go) names, in order of
    /// preference; empty: every suite rustls has. TLS 1.3's suites are
    /// not configurable (as in Go).
    pub cipher_suites: Vec<String>,
    /// The oldest version accepted; default TLS1.2.
    pub min_version: Option<TlsVersion>,
    /// The newest version accepted; default TLS1.3.
    pub max_version: Option<TlsVersion>,
}

impl TlsSettings {
    /// Checks the settings, with etcd's messages where etcd has one.
    pub fn validate(&self) -> Result<(), String> {
        self.provider().map(|_| ())?;
        self.versions().map(|_| ())
    }

    /// The versions offered, oldest first.
    pub(super) fn versions(&self) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
        let min = self.min_version.unwrap_or(TlsVersion::Tls12);
        let max = self.max_version.unwrap_or(TlsVersion::Tls13);
        if min > max {
            return Err(format!(
                "min version ({}) is greater than max version ({})",
                name(min),
                name(max)
            ));
        }
        if !self.cipher_suites.is_empty() && min == TlsVersion::Tls13 {
            return Err(
                "cipher suites cannot be configured when only TLS1.3 is enabled".to_string(),
            );
        }
        let mut out = Vec::new();
        if min <= TlsVersion::Tls12 {
            out.push(&rustls::version::TLS12);
        }
        if max >= TlsVersion::Tls13 {
            out.push(&rustls::version::TLS13);
        }
        Ok(out)
    }

    /// ring's provider, with the TLS 1.2 suites narrowed to
    /// `cipher_suites` when given.
    pub(super) fn provider(&self) -> Result<Arc<CryptoProvider>, String> {
        // ring's provider has no post-quantum key exchange (hence the
        // deprecation); the one that has it, aws-lc-rs, compiles a large C
        // library, which this project's builds avoid.
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        if self.cipher_suites.is_empty() {
            return Ok(Arc::new(provider));
        }
        let all = std::mem::take(&mut provider.cipher_suites);
        let mut chosen: Vec<_> = all
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        for want in &self.cipher_suites {
            let want = want.trim();
            let canonical = canonical_suite_name(want);
            let found = all.iter().find(|s| {
                s.version() == &rustls::version::TLS12 && format!("{:?}", s.suite()) == canonical
            });
            match found {
                Some(s) => {
                    if !chosen.iter().any(|c| c.suite() == s.suite()) {
                        chosen.push(*s);
                    }
                }
                None if want.starts_with("TLS_") => {
                    return Err(format!(
                        "cipher suite {want:?} is not supported: only ECDHE suites with AES-GCM \
                         or ChaCha20-Poly1305 are ({})",
                        supported_names(&all).join(", ")
                    ))
                }
                None => return Err(format!("unexpected TLS cipher suite {want:?}")),
            }
        }
        provider.cipher_suites = chosen;
        Ok(Arc::new(provider))
    }
}

fn name(v: TlsVersion) -> &'static str {
    match v {
        TlsVersion::Tls12 => "TLS1.2",
        TlsVersion::Tls13 => "TLS1.3",
    }
}

/// Go names ChaCha20 suites without their hash (`…_CHACHA20_POLY1305`);
/// IANA (and rustls) with it.
fn canonical_suite_name(go: &str) -> String {
    if go.ends_with("_CHACHA20_POLY1305") {
        format!("{go}_SHA256")
    } else {
        go.to_string()
    }
}

fn supported_names(all: &[rustls::SupportedCipherSuite]) -> Vec<String> {
    all.iter()
        .filter(|s| s.version() == &rustls::version::TLS12)
        .map(|s| format!("{:?}", s.suite()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_by_go_and_iana_names() {
        let s = TlsSettings {
            cipher_suites: vec![
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305".into(),
            ],
            ..TlsSettings::default()
        };
        let p = s.provider().expect("suites");
        let tls12: Vec<String> = p
            .cipher_suites
            .iter()
            .filter(|c| c.version() == &rustls::version::TLS12)
            .map(|c| format!("{:?}", c.suite()))
            .collect();
        assert_eq!(
            tls12,
            [
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
            ]
        );
        // TLS 1.3's suites stay.
        assert!(p
            .cipher_suites
            .iter()
            .any(|c| c.version() == &rustls::version::TLS13));
    }

    #[test]
    fn bad_suites_and_versions_are_refused() {
        let bad = |suite: &str| TlsSettings {
            cipher_suites: vec![suite.into()],
            ..TlsSettings::default()
        };
        let e = bad("TLS_RSA_WITH_3DES_EDE_CBC_SHA").validate().unwrap_err();
        assert!(e.contains("is not supported"), "{e}");
        let e = bad("nonsense").validate().unwrap_err();
        assert_eq!(e, "unexpected TLS cipher suite \"nonsense\"");
        assert!("TLS1.0".parse::<TlsVersion>().is_err());
        let inverted = TlsSettings {
            min_version: Some(TlsVersion::Tls13),
            max_version: Some(TlsVersion::Tls12),
            ..TlsSettings::default()
        };
        assert_eq!(
            inverted.validate().unwrap_err(),
            "min version (TLS1.3) is greater than max version (TLS1.2)"
        );
        let only13 = TlsSettings {
            min_version: Some(TlsVersion::Tls13),
            ..bad("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
        };
        assert!(only13.validate().is_err());
    }
}
