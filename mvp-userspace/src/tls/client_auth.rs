//! Client certificates, the way kube-apiserver treats them.
//!
//! kube-apiserver serves with Go's `tls.RequestClientCert` (k8s.io/apiserver
//! `SecureServingInfo.tlsConfig`): a certificate is requested, never required, and **not
//! verified during the handshake**; the authenticators judge it per request (front-proxy
//! verifier against the requestheader CA + allowed names, then x509 against the client CA). A
//! certificate from an unknown CA or an expired one therefore does not fail the handshake: the
//! request gets 401 unless another credential (a bearer token) authenticates it. mvp must do
//! the same or a client would notice the difference.
//!
//! So the handshake side ([`RequestClientCert`]) only checks that the client holds the key of
//! the certificate it presented (the CertificateVerify signature), and advertises both CAs as
//! acceptable issuers. [`ClientCertJudge`] then verifies the chain once per connection against
//! each CA separately and records what the certificate may be used for ([`PeerCertAuth`]).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use parking_lot::RwLock;

use super::reload::{Reload, WatchedFiles};
use super::{TlsError, load_roots};

/// The handshake half: request a client cert, accept any whose key the client proves to hold.
#[derive(Debug)]
pub struct RequestClientCert {
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl RequestClientCert {
    /// Advertise the subjects of `roots` as acceptable issuers (as Go's `ClientCAs` does).
    pub fn new(hints: Vec<DistinguishedName>, provider: &CryptoProvider) -> Self {
        RequestClientCert {
            hints,
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deliberately deferred: see the module docs. The chain is judged by ClientCertJudge
        // before any request on this connection is authenticated.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// An x509 user as kube-apiserver's x509 authenticator derives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509User {
    /// The subject CN (the last one, as Go's `pkix.Name.CommonName`).
    pub name: String,
    /// Every subject O, in order.
    pub groups: Vec<String>,
    /// `X509SHA256=<hex of the DER>`: the `authentication.kubernetes.io/credential-id` extra.
    pub credential_id: String,
}

/// What the certificate presented on a connection may authenticate, judged once per connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertAuth {
    /// A certificate was presented.
    pub presented: bool,
    /// The cert chains to the requestheader CA and its CN is allowed: the CN.
    pub front_proxy: Option<String>,
    /// The cert chains to the client CA: the user it names.
    pub x509: Option<X509User>,
    /// Why neither applied, for logs (empty when one did or no cert was presented).
    pub rejected_because: Vec<String>,
}

/// Verifies presented chains against the client CA and the requestheader CA; the CA bundles
/// are reloaded when their files change (as kube-apiserver does).
#[derive(Debug)]
pub struct ClientCertJudge {
    client_ca_file: Option<PathBuf>,
    requestheader_ca_file: Option<PathBuf>,
    allowed_names: Vec<String>,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Verifiers>>,
    files: WatchedFiles,
}

#[derive(Debug)]
struct Verifiers {
    client_ca: Option<Arc<dyn ClientCertVerifier>>,
    requestheader_ca: Option<Arc<dyn ClientCertVerifier>>,
    hints: Vec<DistinguishedName>,
}

fn verifier(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
    what: &str,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|source| TlsError::Verifier {
            what: what.to_owned(),
            source,
        })
}

fn load_verifiers(
    client_ca_file: Option<&Path>,
    requestheader_ca_file: Option<&Path>,
    provider: &Arc<CryptoProvider>,
) -> Result<Verifiers, TlsError> {
    let client_ca = client_ca_file.map(load_roots).transpose()?;
    let requestheader_ca = requestheader_ca_file.map(load_roots).transpose()?;
    let mut hints = Vec::new();
    for roots in client_ca.iter().chain(requestheader_ca.iter()) {
        hints.extend(roots.subjects());
    }
    Ok(Verifiers {
        client_ca: client_ca
            .map(|roots| verifier(roots, provider, "--client-ca-file"))
            .transpose()?,
        requestheader_ca: requestheader_ca
            .map(|roots| verifier(roots, provider, "--requestheader-client-ca-file"))
            .transpose()?,
        hints,
    })
}

impl ClientCertJudge {
    /// Load the two CA bundles (either may be absent, as on kube-apiserver).
    pub fn load(
        client_ca_file: Option<&Path>,
        requestheader_ca_file: Option<&Path>,
        allowed_names: Vec<String>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let files = WatchedFiles::new(
            client_ca_file
                .iter()
                .chain(requestheader_ca_file.iter())
                .map(|p| p.to_path_buf())
                .collect(),
        );
        let verifiers = load_verifiers(client_ca_file, requestheader_ca_file, provider)?;
        Ok(ClientCertJudge {
            client_ca_file: client_ca_file.map(Path::to_path_buf),
            requestheader_ca_file: requestheader_ca_file.map(Path::to_path_buf),
            allowed_names,
            provider: provider.clone(),
            current: RwLock::new(Arc::new(verifiers)),
            files,
        })
    }

    /// The subjects of both CAs as loaded at start-up (advertised in the handshake; clients
    /// such as client-go send their configured cert regardless).
    pub fn hints(&self) -> Vec<DistinguishedName> {
        self.current.read().hints.clone()
    }

    /// Whether any client CA is configured (else no client cert is requested at all).
    pub fn requests_certs(&self) -> bool {
        self.client_ca_file.is_some() || self.requestheader_ca_file.is_some()
    }

    /// Judge the chain a client presented (`chain[0]` is the end entity).
    pub fn judge(&self, chain: Option<&[CertificateDer<'_>]>, now: UnixTime) -> PeerCertAuth {
        let Some((end_entity, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return PeerCertAuth::default();
        };
        let mut auth = PeerCertAuth {
            presented: true,
            ..PeerCertAuth::default()
        };
        let verifiers = self.current.read().clone();
        let subject = match subject_of(end_entity) {
            Ok(subject) => subject,
            Err(why) => {
                auth.rejected_because.push(why);
                return auth;
            }
        };
        if let Some(verifier) = &verifiers.requestheader_ca {
            match verifier.verify_client_cert(end_entity, intermediates, now) {
                Ok(_) => {
                    let allowed =
                        self.allowed_names.is_empty() || self.allowed_names.contains(&subject.name);
                    if allowed {
                        auth.front_proxy = Some(subject.name.clone());
                    } else {
                        auth.rejected_because.push(format!(
                            "requestheader CA: CN {:?} is not in --requestheader-allowed-names",
                            subject.name
                        ));
                    }
                }
                Err(error) => auth
                    .rejected_because
                    .push(format!("requestheader CA: {error}")),
            }
        }
        if let Some(verifier) = &verifiers.client_ca {
            match verifier.verify_client_cert(end_entity, intermediates, now) {
                Ok(_) => auth.x509 = Some(subject),
                Err(error) => auth.rejected_because.push(format!("client CA: {error}")),
            }
        }
        if auth.front_proxy.is_some() || auth.x509.is_some() {
            auth.rejected_because.clear();
        }
        auth
    }
}

impl Reload for ClientCertJudge {
    fn what(&self) -> &str {
        "--client-ca-file/--requestheader-client-ca-file"
    }

    fn reload_if_changed(&self) -> Result<bool, TlsError> {
        self.files.reload_with(|| {
            let verifiers = load_verifiers(
                self.client_ca_file.as_deref(),
                self.requestheader_ca_file.as_deref(),
                &self.provider,
            )?;
            *self.current.write() = Arc::new(verifiers);
            Ok(())
        })
    }
}

fn subject_of(cert: &CertificateDer<'_>) -> Result<X509User, String> {
    use sha2::Digest;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("unparsable client certificate: {e}"))?;
    let subject = parsed.subject();
    let name = subject
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .last()
        .unwrap_or_default()
        .to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_owned)
        .collect();
    let credential_id = format!("X509SHA256={}", hex::encode(sha2::Sha256::digest(cert)));
    Ok(X509User {
        name,
        groups,
        credential_id,
    })
}
