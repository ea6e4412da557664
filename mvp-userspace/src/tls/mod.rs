//! TLS for the front door: the serving side (the apiserver's own cert, reloaded from disk;
//! client certificates requested, judged after the handshake like kube-apiserver does) and the
//! upstream side (one client config without a client cert, one with mvp's front-proxy cert).
//!
//! Everything here is built once at start-up (and on a cert reload), never per request.
pub mod client_auth;
pub mod reload;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use client_auth::{ClientCertJudge, PeerCertAuth, RequestClientCert, X509User};
pub use reload::{Reload, ReloadingKeyPair, WatchedFiles, spawn_reloader};
pub use upstream::UpstreamTls;

/// Errors while loading TLS material or building TLS configs (start-up and reload boundary).
/// None of these is retryable by the client; the operator has to fix a file or a flag.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source} (check the flag that names this file and its permissions)")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file held no usable item.
    #[error("{path}: no {what} found in PEM (is this the right file?)")]
    Empty {
        /// Which file.
        path: PathBuf,
        /// What we looked for.
        what: &'static str,
    },
    /// A PEM file did not parse.
    #[error("{path}: bad PEM: {source}")]
    Pem {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refused the material (bad key, key not matching the cert, bad CA).
    #[error("{what}: {source}")]
    Rustls {
        /// What was being built.
        what: String,
        /// Why.
        source: rustls::Error,
    },
    /// A client-certificate verifier could not be built from a CA bundle.
    #[error("{what}: {source}")]
    Verifier {
        /// What was being built.
        what: String,
        /// Why.
        source: rustls::server::VerifierBuilderError,
    },
    /// An invalid server name for the upstream.
    #[error("--upstream-server-name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
}

/// The crypto provider of the whole daemon (ring, as the workspace pins it).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// All certificates of a PEM file, in order.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_owned(),
            what: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            path: path.to_owned(),
            what: "PRIVATE KEY",
        },
        source => TlsError::Pem {
            path: path.to_owned(),
            source,
        },
    })
}

/// A root store from a CA bundle file.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::Rustls {
            what: format!("CA bundle {}", path.display()),
            source,
        })?;
    }
    Ok(roots)
}

/// A certified key (chain + signing key) from a cert file and a key file, checked to match.
pub fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    rustls::sign::CertifiedKey::from_der(chain, key_der, provider).map_err(|source| {
        TlsError::Rustls {
            what: format!(
                "key pair {} / {} (does the key belong to the certificate?)",
                cert.display(),
                key.display()
            ),
            source,
        }
    })
}
