//! Authentication as kube-apiserver's union authenticator does it: request-header
//! (front-proxy) first, then x509 client certificates, then static bearer tokens; no
//! credentials at all means anonymous (when enabled), while credentials that fail every
//! authenticator mean 401.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};

use super::types::Identity;

/// Failures configuring authentication (bad files), never per-request failures.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no certificates found")]
    NoCerts { path: PathBuf },
    #[error("{path}: {source}")]
    Pem {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("CA bundle {path}: {source}")]
    Verifier {
        path: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
    #[error("{path}:{line}: {why}")]
    TokenFile {
        path: PathBuf,
        line: usize,
        why: &'static str,
    },
}

/// The `--requestheader-*` settings.
#[derive(Debug, Clone)]
pub struct RequestHeaderConfig {
    pub client_ca: PathBuf,
    /// Empty: any CN signed by the requestheader CA is allowed.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub uid_headers: Vec<String>,
    pub extra_headers_prefixes: Vec<String>,
}

/// Everything authentication needs.
#[derive(Debug, Clone, Default)]
pub struct AuthnConfig {
    pub client_ca: Option<PathBuf>,
    pub requestheader: Option<RequestHeaderConfig>,
    pub token_file: Option<PathBuf>,
    pub anonymous: bool,
}

/// One static token's user.
#[derive(Debug, Clone)]
struct TokenUser {
    user: String,
    uid: String,
    groups: Vec<String>,
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authn {
    User(Identity),
    /// 401: credentials were presented and none was accepted (or anonymous is off).
    Unauthorized,
}

/// Authenticates requests; built once per server.
pub struct Authenticator {
    client_ca: Option<Arc<dyn ClientCertVerifier>>,
    requestheader: Option<(Arc<dyn ClientCertVerifier>, RequestHeaderConfig)>,
    tokens: BTreeMap<String, TokenUser>,
    anonymous: bool,
    /// Every CA root, for the TLS handshake's verifier.
    all_roots: rustls::RootCertStore,
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, AuthnError> {
    let bytes = std::fs::read(path).map_err(|source| AuthnError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| AuthnError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(AuthnError::NoCerts {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn verifier_for(
    path: &Path,
    roots: &mut rustls::RootCertStore,
) -> Result<Arc<dyn ClientCertVerifier>, AuthnError> {
    let mut own = rustls::RootCertStore::empty();
    for c in read_certs(path)? {
        // A non-CA certificate in a bundle is skipped, as Go's x509.CertPool would keep it
        // but never chain to it.
        let _ = own.add(c.clone());
        let _ = roots.add(c);
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(own), provider())
        .build()
        .map_err(|source| AuthnError::Verifier {
            path: path.to_path_buf(),
            source,
        })
}

/// Splits one CSV line, honouring double quotes (kube's token file uses encoding/csv).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                out.last_mut().expect("non-empty").push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().expect("non-empty").push(c),
        }
    }
    out
}

fn read_tokens(path: &Path) -> Result<BTreeMap<String, TokenUser>, AuthnError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthnError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut tokens = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let f = csv_fields(line);
        let bad = |why| AuthnError::TokenFile {
            path: path.to_path_buf(),
            line: i + 1,
            why,
        };
        if f.len() < 3 {
            return Err(bad("expected token,user,uid[,\"group1,group2\"]"));
        }
        if f[0].is_empty() || f[1].is_empty() {
            return Err(bad("empty token or user"));
        }
        let groups = f
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        tokens.insert(
            f[0].clone(),
            TokenUser {
                user: f[1].clone(),
                uid: f[2].clone(),
                groups,
            },
        );
    }
    Ok(tokens)
}

/// Subject CN and O values of a DER certificate.
fn subject(cert: &CertificateDer<'_>) -> Option<(String, Vec<String>)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subj = parsed.subject();
    let cn = subj
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let orgs = subj
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_string)
        .collect();
    Some((cn, orgs))
}

/// Adds `system:authenticated` as kube-apiserver's group adder does.
fn authenticated(mut id: Identity) -> Identity {
    if !id.groups.iter().any(|g| g == "system:authenticated") {
        id.groups.push("system:authenticated".into());
    }
    id
}

fn header_values(headers: &http::HeaderMap, names: &[String]) -> Vec<String> {
    names
        .iter()
        .flat_map(|n| headers.get_all(n.as_str()).iter())
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

impl Authenticator {
    /// Reads the CA bundles and token file.
    pub fn new(cfg: &AuthnConfig) -> Result<Authenticator, AuthnError> {
        let mut all_roots = rustls::RootCertStore::empty();
        let client_ca = cfg
            .client_ca
            .as_deref()
            .map(|p| verifier_for(p, &mut all_roots))
            .transpose()?;
        let requestheader = cfg
            .requestheader
            .as_ref()
            .map(|rh| verifier_for(&rh.client_ca, &mut all_roots).map(|v| (v, rh.clone())))
            .transpose()?;
        let tokens = cfg
            .token_file
            .as_deref()
            .map(read_tokens)
            .transpose()?
            .unwrap_or_default();
        Ok(Authenticator {
            client_ca,
            requestheader,
            tokens,
            anonymous: cfg.anonymous,
            all_roots,
        })
    }

    /// The TLS client-certificate verifier: certificates are requested, not required, and a
    /// presented certificate that chains to none of the CAs fails the handshake.
    pub fn tls_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, AuthnError> {
        if self.all_roots.is_empty() {
            return Ok(WebPkiClientVerifier::no_client_auth());
        }
        WebPkiClientVerifier::builder_with_provider(Arc::new(self.all_roots.clone()), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|source| AuthnError::Verifier {
                path: PathBuf::from("client CA bundles"),
                source,
            })
    }

    fn verifies(verifier: &Arc<dyn ClientCertVerifier>, chain: &[CertificateDer<'static>]) -> bool {
        let Some((leaf, rest)) = chain.split_first() else {
            return false;
        };
        verifier
            .verify_client_cert(leaf, rest, UnixTime::now())
            .is_ok()
    }

    /// Authenticates one request from its TLS peer chain and headers.
    pub fn authenticate(
        &self,
        chain: &[CertificateDer<'static>],
        headers: &http::HeaderMap,
    ) -> Authn {
        let mut failed = false;
        if !chain.is_empty() {
            if let Some((verifier, rh)) = &self.requestheader {
                if Self::verifies(verifier, chain) {
                    let cn = subject(&chain[0]).map(|(cn, _)| cn).unwrap_or_default();
                    if (rh.allowed_names.is_empty() || rh.allowed_names.contains(&cn))
                        && let Some(id) = Self::from_headers(rh, headers)
                    {
                        return Authn::User(authenticated(id));
                    }
                }
                failed = true;
            }
            if let Some(verifier) = &self.client_ca {
                if Self::verifies(verifier, chain)
                    && let Some((cn, orgs)) = subject(&chain[0])
                {
                    let mut extra = BTreeMap::new();
                    extra.insert(
                        "authentication.kubernetes.io/credential-id".to_string(),
                        vec![format!(
                            "X509SHA256={}",
                            hex::encode(Sha256::digest(chain[0].as_ref()))
                        )],
                    );
                    return Authn::User(authenticated(Identity {
                        user: cn,
                        uid: String::new(),
                        groups: orgs,
                        extra,
                    }));
                }
                failed = true;
            }
        }
        if let Some(auth) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            // kube-apiserver's bearer authenticator only looks at "Bearer <token>".
            if let Some(token) = auth.strip_prefix("Bearer ").map(str::trim) {
                match self.tokens.get(token) {
                    Some(t) if !token.is_empty() => {
                        return Authn::User(authenticated(Identity {
                            user: t.user.clone(),
                            uid: t.uid.clone(),
                            groups: t.groups.clone(),
                            extra: BTreeMap::new(),
                        }));
                    }
                    _ => failed = true,
                }
            }
        }
        if failed || !self.anonymous {
            return Authn::Unauthorized;
        }
        Authn::User(Identity {
            user: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
            extra: BTreeMap::new(),
        })
    }

    fn from_headers(rh: &RequestHeaderConfig, headers: &http::HeaderMap) -> Option<Identity> {
        let user = header_values(headers, &rh.username_headers)
            .into_iter()
            .find(|u| !u.is_empty())?;
        let uid = header_values(headers, &rh.uid_headers)
            .into_iter()
            .find(|u| !u.is_empty())
            .unwrap_or_default();
        let groups = header_values(headers, &rh.group_headers);
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in headers {
            let lname = name.as_str().to_ascii_lowercase();
            for prefix in &rh.extra_headers_prefixes {
                let lprefix = prefix.to_ascii_lowercase();
                if let Some(key) = lname.strip_prefix(&lprefix) {
                    if key.is_empty() {
                        continue;
                    }
                    let key = percent_encoding::percent_decode_str(key)
                        .decode_utf8_lossy()
                        .into_owned();
                    if let Ok(v) = value.to_str() {
                        extra.entry(key).or_default().push(v.to_string());
                    }
                }
            }
        }
        Some(Identity {
            user,
            uid,
            groups,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes() {
        assert_eq!(
            csv_fields(r#"tok,token-admin,uid-1,"system:masters,team-a""#),
            ["tok", "token-admin", "uid-1", "system:masters,team-a"]
        );
        assert_eq!(csv_fields("a,b,c"), ["a", "b", "c"]);
    }
}
