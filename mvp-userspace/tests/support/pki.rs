//! A generated PKI shaped like kubeadm's: a cluster CA (client CA and the apiserver's serving
//! CA), a front-proxy CA, and the certs the front-door tests need.
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// A CA that can sign leaves.
pub struct Ca {
    pub cert: Certificate,
    pub key: KeyPair,
}

/// A cert/key pair written to disk.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn dn(cn: &str, orgs: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    for (i, o) in orgs.iter().enumerate() {
        // rcgen keeps one value per DnType; a custom type with O's OID adds more O values.
        if i == 0 {
            dn.push(DnType::OrganizationName, *o);
        } else {
            dn.push(DnType::CustomDnType(vec![2, 5, 4, 10]), *o);
        }
    }
    dn
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = dn(cn, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.crt"));
        std::fs::write(&path, self.cert.pem()).unwrap();
        path
    }

    fn sign(&self, mut params: CertificateParams) -> (Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert, key)
    }

    /// A client cert (CN = user, O = groups).
    pub fn client(&self, dir: &Path, name: &str, cn: &str, orgs: &[&str], expired: bool) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = dn(cn, orgs);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let (cert, key) = self.sign(params);
        write_pair(dir, name, &cert, &key)
    }

    /// A serving cert like kubeadm's apiserver.crt.
    pub fn serving(&self, dir: &Path, name: &str, cn: &str) -> Pair {
        let mut params = CertificateParams::new(vec![
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .unwrap();
        params.distinguished_name = dn(cn, &[]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (cert, key) = self.sign(params);
        write_pair(dir, name, &cert, &key)
    }
}

fn write_pair(dir: &Path, name: &str, cert: &Certificate, key: &KeyPair) -> Pair {
    let pair = Pair {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&pair.cert, cert.pem()).unwrap();
    std::fs::write(&pair.key, key.serialize_pem()).unwrap();
    pair
}

/// Everything the tests use, on disk in a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub cluster_ca: Ca,
    pub cluster_ca_file: PathBuf,
    pub front_proxy_ca_file: PathBuf,
    /// The apiserver's serving cert (mvp presents it; the test upstream too).
    pub serving: Pair,
    /// mvp's front-proxy client cert (CN front-proxy-client).
    pub proxy_client: Pair,
    /// An x509 admin: CN admin, O system:masters + team-b.
    pub admin: Pair,
    /// Another front proxy in front of mvp, allowed (CN front-proxy-client).
    pub outer_front_proxy: Pair,
    /// A front-proxy-CA cert whose CN is not allowed.
    pub bad_front_proxy: Pair,
    /// A cert from a CA nobody trusts (yet).
    pub unknown: Pair,
    /// That CA.
    pub unknown_ca_file: PathBuf,
    /// The front-proxy CA (to issue renewed front-proxy client certs).
    pub front_proxy_ca: Ca,
    /// An expired cert from the client CA.
    pub expired: Pair,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cluster_ca = Ca::new("kubernetes");
        let front_proxy_ca = Ca::new("front-proxy-ca");
        let unknown_ca = Ca::new("mallory-ca");
        Pki {
            cluster_ca_file: cluster_ca.write(d, "ca"),
            front_proxy_ca_file: front_proxy_ca.write(d, "front-proxy-ca"),
            serving: cluster_ca.serving(d, "apiserver", "kube-apiserver"),
            proxy_client: front_proxy_ca.client(
                d,
                "front-proxy-client",
                "front-proxy-client",
                &[],
                false,
            ),
            admin: cluster_ca.client(d, "admin", "admin", &["system:masters", "team-b"], false),
            outer_front_proxy: front_proxy_ca.client(
                d,
                "outer-front-proxy",
                "front-proxy-client",
                &[],
                false,
            ),
            bad_front_proxy: front_proxy_ca.client(d, "bad-front-proxy", "not-allowed", &[], false),
            unknown: unknown_ca.client(d, "unknown", "admin", &["system:masters"], false),
            unknown_ca_file: unknown_ca.write(d, "unknown-ca"),
            expired: cluster_ca.client(d, "expired", "admin", &["system:masters"], true),
            cluster_ca,
            front_proxy_ca,
            dir,
        }
    }
}
