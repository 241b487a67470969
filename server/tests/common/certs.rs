//! Certificates made by the tests (rcgen): a CA and, signed by it, a
//! server certificate for 127.0.0.1 and localhost, client certificates,
//! one of them revoked in a CRL; and a second CA with a client of its
//! own. Made once per test binary into a temporary dir.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber,
};

/// Paths of the test certificates (PEM).
pub struct Pki {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

/// One certificate and its key.
pub struct Pair {
    pub cert: String,
    pub key: String,
}

impl Pki {
    /// The shared set, made on first use.
    pub fn get() -> &'static Pki {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(make)
    }

    pub fn path(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }

    /// `ca.pem`: the CA that signs the members' and clients' certificates
    /// (its key: `ca-key.pem`; the other CA's: `other-ca.pem`,
    /// `other-ca-key.pem`).
    pub fn ca(&self) -> String {
        self.path("ca.pem")
    }

    /// A certificate of the main CA by name: `server` (127.0.0.1 and
    /// localhost, server and client use; CN "member"), `client` (CN
    /// "client", no host names), `revoked` (CN "revoked", for 127.0.0.1
    /// and localhost, listed in `crl.pem`),
    /// `intruder` (CN "intruder", valid for 127.0.0.1 too), `other-client`
    /// (signed by the other CA, `other-ca.pem`).
    pub fn pair(&self, name: &str) -> Pair {
        Pair {
            cert: self.path(&format!("{name}.pem")),
            key: self.path(&format!("{name}-key.pem")),
        }
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("key");
    CertifiedIssuer::self_signed(p, key).expect("ca")
}

fn leaf(
    dir: &Path,
    name: &str,
    cn: &str,
    sans: &[&str],
    serial: u64,
    issuer: &Issuer<'_, KeyPair>,
) {
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("p");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.serial_number = Some(SerialNumber::from(serial));
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, issuer).expect("sign");
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write cert");
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).expect("write key");
}

fn make() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let main = ca("cairn test CA");
    std::fs::write(root.join("ca.pem"), main.pem()).expect("write");
    std::fs::write(root.join("ca-key.pem"), main.key().serialize_pem()).expect("write");
    let local = ["127.0.0.1", "localhost"];
    leaf(&root, "server", "member", &local, 10, &main);
    leaf(&root, "client", "client", &[], 11, &main);
    leaf(&root, "revoked", "revoked", &local, 12, &main);
    leaf(&root, "intruder", "intruder", &local, 13, &main);
    let other = ca("another CA");
    std::fs::write(root.join("other-ca.pem"), other.pem()).expect("write");
    std::fs::write(root.join("other-ca-key.pem"), other.key().serialize_pem()).expect("write");
    leaf(&root, "other-client", "client", &[], 20, &other);
    leaf(&root, "other-server", "member", &local, 21, &other);
    let now = time::OffsetDateTime::now_utc();
    let crl = CertificateRevocationListParams {
        this_update: now - time::Duration::minutes(1),
        next_update: now + time::Duration::days(1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(12u64),
            revocation_time: now - time::Duration::minutes(1),
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&main)
    .expect("crl");
    std::fs::write(root.join("crl.pem"), crl.pem().expect("crl pem")).expect("write");
    Pki { _dir: dir, root }
}
