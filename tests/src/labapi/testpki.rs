//! A minimal PKI for lab apiserver tests (rcgen): CAs, server and client certificates as
//! PEM files. Deliberately small; the kubeadm-layout lab PKI lives in `crate::pki`.
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// Failures creating or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum TestPkiError {
    #[error("generating a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A certificate and its key, PEM-encoded, plus the certificate's DER.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
}

impl Issued {
    /// Writes `<stem>.crt` and `<stem>.key` into `dir`, returning both paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), TestPkiError> {
        let crt = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        write(&crt, &self.cert_pem)?;
        write(&key, &self.key_pem)?;
        Ok((crt, key))
    }
}

fn write(path: &Path, text: &str) -> Result<(), TestPkiError> {
    std::fs::write(path, text).map_err(|source| TestPkiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// A self-signed certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    /// A new CA with the given common name.
    pub fn new(cn: &str) -> Result<Ca, TestPkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Ca { cert, key })
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes the CA certificate to `<dir>/<stem>.crt`.
    pub fn write_cert(&self, dir: &Path, stem: &str) -> Result<PathBuf, TestPkiError> {
        let path = dir.join(format!("{stem}.crt"));
        write(&path, &self.cert_pem())?;
        Ok(path)
    }

    fn issue(&self, mut params: CertificateParams) -> Result<Issued, TestPkiError> {
        let key = KeyPair::generate()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        })
    }

    /// A client certificate: CN = user, O = groups (kube-apiserver's x509 mapping).
    pub fn client(&self, cn: &str, orgs: &[&str]) -> Result<Issued, TestPkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    /// A server certificate for the given IPs and DNS names.
    pub fn server(&self, cn: &str, ips: &[IpAddr], dns: &[&str]) -> Result<Issued, TestPkiError> {
        let names: Vec<String> = ips
            .iter()
            .map(IpAddr::to_string)
            .chain(dns.iter().map(|d| d.to_string()))
            .collect();
        // rcgen turns names that parse as IP addresses into IP SANs.
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }
}
