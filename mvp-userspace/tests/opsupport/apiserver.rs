//! A fake kube-apiserver for doctor's server checks: TLS with the generated serving cert,
//! optional client certs judged against the front-proxy CA and allowed names like
//! kube-apiserver's requestheader authenticator (else 401), and discovery from the
//! recorded documents of one release.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The minimal core-group aggregated document a real server puts on /api.
const CORE: &str = r#"{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","metadata":{},"items":[{"metadata":{"name":"","creationTimestamp":null},"versions":[{"version":"v1","resources":[{"resource":"pods","responseKind":{"group":"","version":"v1","kind":"Pod"},"scope":"Namespaced","singularResource":"pod","verbs":["get","list"]}],"freshness":"Current"}]}]}"#;

/// Serve as a `release` (`k8s-1.33`, `k8s-1.36`) apiserver from `pki_dir`; returns the
/// bound address. Runs until the test's runtime ends.
pub async fn start(pki_dir: &Path, release: &str, git_version: &str) -> SocketAddr {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(pki_dir.join("apiserver.crt"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki_dir.join("apiserver.key")).unwrap();
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki_dir.join("front-proxy-ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let apis = Bytes::from(
        std::fs::read(
            super::fixtures_dir()
                .join("discovery")
                .join(release)
                .join("aggregated_v2.json"),
        )
        .unwrap(),
    );
    let version = Bytes::from(format!(r#"{{"gitVersion":"{git_version}"}}"#));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let (apis, version) = (apis.clone(), version.clone());
            tokio::spawn(async move {
                // A rejected client cert ends the handshake here, as in kube-apiserver.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let front_proxy_cn = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| {
                        let (_, x) = x509_parser::parse_x509_certificate(c).ok()?;
                        let cn = x
                            .subject()
                            .iter_common_name()
                            .next()?
                            .as_str()
                            .ok()?
                            .to_owned();
                        Some(cn)
                    });
                let service = hyper::service::service_fn(move |req: Request<_>| {
                    let authed = front_proxy_cn.as_deref() == Some("front-proxy-client")
                        && req.headers().contains_key("x-remote-user");
                    let (status, body) = match req.uri().path() {
                        "/version" => (StatusCode::OK, version.clone()),
                        _ if !authed => (StatusCode::UNAUTHORIZED, Bytes::from_static(b"{}")),
                        "/api" => (StatusCode::OK, Bytes::from_static(CORE.as_bytes())),
                        "/apis" => (StatusCode::OK, apis.clone()),
                        _ => (StatusCode::NOT_FOUND, Bytes::from_static(b"{}")),
                    };
                    let mut resp = Response::new(Full::new(body));
                    *resp.status_mut() = status;
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}
