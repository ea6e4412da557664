//! A small HTTPS client for test support: one request per connection, HTTP/1.1, TLS with
//! a given CA and optional client cert, run from inside a network namespace. For
//! readiness probes and set-up writes; tests drive the servers with real clients
//! (kubectl, the Python `kubernetes` client).
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::netns::Netns;
use crate::pki::CertKey;

/// An HTTPS request that did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("bad PEM for {what}: {detail}")]
    Pem { what: &'static str, detail: String },
    #[error("bad TLS client configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange with {addr} failed: {source}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("bad request: {0}")]
    Request(#[from] http::Error),
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("cannot start a runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot enter network namespace: {0}")]
    Netns(String),
}

/// A response: status and full body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A client trusting one CA, optionally presenting a client cert or a bearer token.
#[derive(Clone)]
pub struct HttpsClient {
    config: Arc<rustls::ClientConfig>,
    token: Option<String>,
    headers: Vec<(String, String)>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient").finish_non_exhaustive()
    }
}

impl HttpsClient {
    /// Trust `ca_pem`; present `client` when given.
    pub fn new(ca_pem: &str, client: Option<&CertKey>) -> Result<Self, HttpsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| HttpsError::Pem {
                what: "CA",
                detail: e.to_string(),
            })?;
            roots.add(cert)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match client {
            Some(ck) => {
                let chain = CertificateDer::pem_slice_iter(ck.cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| HttpsError::Pem {
                        what: "client cert",
                        detail: e.to_string(),
                    })?;
                let key = PrivateKeyDer::from_pem_slice(ck.key_pem.as_bytes()).map_err(|e| {
                    HttpsError::Pem {
                        what: "client key",
                        detail: e.to_string(),
                    }
                })?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(HttpsClient {
            config: Arc::new(config),
            token: None,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
        })
    }

    /// Send `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// Send this header with every request (e.g. `X-Remote-User` as a front proxy).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Send one request to `addr` from inside `ns` (verifying the server's cert for the
    /// address itself) and read the whole response.
    pub fn request(
        &self,
        ns: &Netns,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, HttpsError> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let method = method.to_string();
        let path = path.to_string();
        ns.try_run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(HttpsError::Runtime)?;
            rt.block_on(async {
                tokio::time::timeout(self.timeout, self.exchange(addr, &method, &path, body))
                    .await
                    .map_err(|_| HttpsError::Timeout {
                        addr,
                        timeout: self.timeout,
                    })?
            })
        })
        .map_err(|e| HttpsError::Netns(e.to_string()))?
    }

    /// The certificate chain `addr` serves (DER, leaf first), after a verified handshake.
    pub fn served_chain(&self, ns: &Netns, addr: SocketAddr) -> Result<Vec<Vec<u8>>, HttpsError> {
        ns.try_run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(HttpsError::Runtime)?;
            rt.block_on(async {
                let tcp = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|source| HttpsError::Connect { addr, source })?;
                let connector = tokio_rustls::TlsConnector::from(self.config.clone());
                let tls = connector
                    .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                    .await
                    .map_err(|source| HttpsError::Handshake { addr, source })?;
                Ok(tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .unwrap_or_default()
                    .iter()
                    .map(|c| c.to_vec())
                    .collect())
            })
        })
        .map_err(|e| HttpsError::Netns(e.to_string()))?
    }

    /// `GET path`.
    pub fn get(&self, ns: &Netns, addr: SocketAddr, path: &str) -> Result<Reply, HttpsError> {
        self.request(ns, addr, "GET", path, None)
    }

    async fn exchange(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: String,
    ) -> Result<Reply, HttpsError> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| HttpsError::Connect { addr, source })?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let tls = connector
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .map_err(|source| HttpsError::Handshake { addr, source })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|source| HttpsError::Http { addr, source })?;
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::ACCEPT, "application/json");
        if !body.is_empty() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|source| HttpsError::Http { addr, source })?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|source| HttpsError::Http { addr, source })?
            .to_bytes();
        Ok(Reply { status, body })
    }
}
