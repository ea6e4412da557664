//! Server checks: the local apiserver and each `--peer`, reached the way peers reach each
//! other (TLS verified against the peer CA with server name `kubernetes.default.svc`, the
//! front-proxy client cert, identity in requestheader headers), their aggregated discovery
//! (`GET /api`, `GET /apis`, `profile=nopeer`), and the skew between them.
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use super::pki::{Material, PEER_SERVER_NAME};
use super::{Check, DoctorConfig, ServerSeen};
use crate::admin::SkewRow;
use crate::detect::Detected;
use crate::discovery::model::parse_aggregated;
use crate::discovery::served::ServedSet;

/// What peers send for their own view (upstream-mvp.md §3.1), in that order.
pub const ACCEPT_NOPEER: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
/// The identity doctor asserts through the front-proxy hop: discovery is readable by every
/// authenticated user, so nothing more is claimed.
pub const DOCTOR_USER: &str = "system:mvp-doctor";
const DOCTOR_GROUP: &str = "system:authenticated";
/// Discovery documents are ~100 KB; anything past this is not discovery.
const MAX_BODY: usize = 16 << 20;

/// Why one server could not be examined.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TCP.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS handshake or record layer.
    #[error("TLS with {addr}: {source}")]
    Tls {
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// HTTP transport.
    #[error("HTTP to {addr}: {message}")]
    Http {
        /// Address.
        addr: SocketAddr,
        /// What failed (cause chain).
        message: String,
    },
    /// A non-200 answer.
    #[error("GET {path} answered {status}")]
    Status {
        /// Path.
        path: &'static str,
        /// Status.
        status: http::StatusCode,
    },
    /// Not aggregated discovery.
    #[error("GET {path}: {source}")]
    Document {
        /// Path.
        path: &'static str,
        /// Why.
        #[source]
        source: crate::discovery::model::DocumentError,
    },
    /// Nothing within the budget.
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout {
        /// Address.
        addr: SocketAddr,
        /// Budget.
        timeout: Duration,
    },
    /// The TLS client could not be set up.
    #[error("TLS client setup: {0}")]
    Setup(String),
}

fn find_rustls(err: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r.clone());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(r.clone());
        }
        cur = e.source();
    }
    None
}

fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    crate::app::one_line(err)
}

/// One examined server.
pub struct Fetched {
    /// gitVersion, if /version answered.
    pub version: Option<String>,
    /// What it serves.
    pub served: ServedSet,
}

/// Connect, verify, fetch /version, /api and /apis.
pub async fn fetch(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<Fetched, ServerError> {
    tokio::time::timeout(timeout, fetch_inner(addr, tls, headers))
        .await
        .unwrap_or(Err(ServerError::Timeout { addr, timeout }))
}

async fn fetch_inner(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    headers: &[(String, String)],
) -> Result<Fetched, ServerError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| ServerError::Connect { addr, source })?;
    let name =
        ServerName::try_from(PEER_SERVER_NAME).map_err(|e| ServerError::Setup(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| match find_rustls(&e) {
            Some(source) => ServerError::Tls { addr, source },
            None => ServerError::Connect { addr, source: e },
        })?;
    let http_err = |e: hyper::Error| match find_rustls(&e) {
        Some(source) => ServerError::Tls { addr, source },
        None => ServerError::Http {
            addr,
            message: chain_text(&e),
        },
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_err)?;
    let conn = tokio::spawn(conn);
    let mut get = async |path: &'static str, accept: &str| -> Result<Bytes, ServerError> {
        let mut req = http::Request::get(path)
            .header(http::header::HOST, PEER_SERVER_NAME)
            .header(http::header::ACCEPT, accept);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| ServerError::Setup(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(http_err)?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| ServerError::Http {
                addr,
                message: e.to_string(),
            })?
            .to_bytes();
        if status != http::StatusCode::OK {
            return Err(ServerError::Status { path, status });
        }
        Ok(body)
    };
    // A refusing /version is only a missing detail; a broken connection is the finding.
    let version = match get("/version", "application/json").await {
        Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
            .ok()
            .and_then(|v| v.get("gitVersion")?.as_str().map(str::to_owned)),
        Err(ServerError::Status { .. }) => None,
        Err(e) => return Err(e),
    };
    let mut docs = Vec::new();
    for path in ["/api", "/apis"] {
        let body = get(path, ACCEPT_NOPEER).await?;
        docs.push(
            parse_aggregated(&body).map_err(|source| ServerError::Document { path, source })?,
        );
    }
    conn.abort();
    Ok(Fetched {
        version,
        served: ServedSet::from_documents(&docs),
    })
}

fn fix_for(err: &ServerError, local: bool, has_identity: bool) -> String {
    use rustls::CertificateError as C;
    match err {
        ServerError::Connect { addr, .. } | ServerError::Timeout { addr, .. } if local => format!(
            "start kube-apiserver on this node (it must listen on {addr}), or pass --upstream with its address"
        ),
        ServerError::Connect { addr, .. } | ServerError::Timeout { addr, .. } => format!(
            "check the peer address and that TCP {} is open between control-plane nodes",
            addr.port()
        ),
        ServerError::Tls { source, .. } => match source {
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) if local => {
                "its serving cert is not signed by the CA mvp verifies it with: pass --upstream-ca-file (default --client-ca-file), and --peer-ca-file for peers, with the CA that signs apiserver certs".into()
            }
            rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
                "its serving cert is not signed by the peer CA: pass --peer-ca-file with the CA that signs apiserver certs".into()
            }
            rustls::Error::InvalidCertificate(
                C::NotValidForName | C::NotValidForNameContext { .. },
            ) => format!("reissue its serving cert with the SAN {PEER_SERVER_NAME}"),
            rustls::Error::InvalidCertificate(
                C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
            ) => "renew its serving cert (or fix the clock on either node)".into(),
            rustls::Error::AlertReceived(_) => {
                "it rejected mvp's front-proxy client cert: issue it from that server's --requestheader-client-ca-file".into()
            }
            _ => "check the server's TLS configuration (kube-apiserver --tls-cert-file)".into(),
        },
        // Anonymous: 401 without anonymous auth, 403 (system:anonymous) with it.
        ServerError::Status { status, .. }
            if !has_identity
                && matches!(
                    *status,
                    http::StatusCode::UNAUTHORIZED | http::StatusCode::FORBIDDEN
                ) =>
        {
            "doctor had no front-proxy client cert to present: fix --proxy-client-cert-file/--proxy-client-key-file (file checks above)".into()
        }
        ServerError::Status { status, .. } if *status == http::StatusCode::UNAUTHORIZED => {
            "the front-proxy identity was not accepted: its --requestheader-client-ca-file and --requestheader-allowed-names must cover this node's front-proxy cert".into()
        }
        ServerError::Status { status, .. } if *status == http::StatusCode::FORBIDDEN => {
            "RBAC denies discovery to system:authenticated: restore the system:discovery ClusterRoleBinding".into()
        }
        ServerError::Status { .. } | ServerError::Http { .. } => {
            "check the server's health (GET /readyz) and logs".into()
        }
        ServerError::Document { .. } => {
            "the server does not serve aggregated discovery (kube-apiserver >= 1.27 does): upgrade it, mvp converts legacy discovery but doctor does not yet".into()
        }
        ServerError::Setup(_) => "check the CA and front-proxy files reported above".into(),
    }
}

/// A `--peer` value: `https://IP[:PORT]` or `IP:PORT` (DNS names are not resolved).
pub fn parse_peer(value: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(a) = value.parse::<SocketAddr>() {
        return Ok(a);
    }
    let uri: http::Uri = value
        .parse()
        .map_err(|_| format!("--peer {value:?}: not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("--peer {value:?}: must be https://IP[:PORT]"));
    }
    let host = uri.host().unwrap_or_default();
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("--peer {value:?}: host must be an IP address"))?;
    Ok(SocketAddr::new(ip, uri.port_u16().unwrap_or(default_port)))
}

fn client_config(
    cas: Option<&Vec<rustls_pki_types::CertificateDer<'static>>>,
    m: &Material,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for c in cas.ok_or("no CA to verify servers with (see the file checks)")? {
        let _ = roots.add(c.clone());
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let mut cfg = match (m.proxy_cert.get(), m.proxy_key.get()) {
        (Some(chain), Some(key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| e.to_string())?,
        // Without the front-proxy identity the servers answer 401 or 403; that is reported.
        _ => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Examine the local apiserver and every peer.
pub async fn checks(
    cfg: &DoctorConfig,
    d: &Detected,
    m: &Material,
) -> (Vec<Check>, Vec<ServerSeen>, Vec<SkewRow>) {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    let mut served: Vec<(String, ServedSet)> = Vec::new();

    let has_identity = m.proxy_cert.get().is_some() && m.proxy_key.get().is_some();
    let mut headers = Vec::new();
    if let Some(h) = d.requestheader_username_headers.value.first() {
        headers.push((h.clone(), DOCTOR_USER.to_owned()));
    }
    if let Some(h) = d.requestheader_group_headers.value.first() {
        headers.push((h.clone(), DOCTOR_GROUP.to_owned()));
    }
    let port = d.secure_port.value;
    let local_addr = cfg
        .upstream
        .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    let mut targets = vec![("local".to_owned(), Ok(local_addr), true)];
    for p in &cfg.peers {
        let addr = parse_peer(p, port);
        // Named by address: that is how the skew table and status show peers.
        let name = addr
            .as_ref()
            .map_or_else(|_| p.clone(), SocketAddr::to_string);
        targets.push((name, addr, false));
    }
    // mvp verifies its local upstream with the client CA (kubeadm's ca.crt) and peers
    // with the peer CA; with kubeadm defaults they are the same file.
    let upstream_ca = cfg.upstream_ca_file.as_ref().map(|p| {
        super::pki::load_certs(Some(&crate::detect::Sourced {
            value: p.clone(),
            source: crate::detect::Source::Flag,
        }))
    });
    let local_tls = match &upstream_ca {
        Some(super::pki::FileState::Ok(_, cas)) => client_config(Some(cas), m),
        Some(other) => Err(format!(
            "--upstream-ca-file {}: unusable",
            other
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        )),
        None => client_config(m.client_ca.get().or(m.peer_ca.get()), m),
    };
    let peer_tls = client_config(m.peer_ca.get(), m);

    // All servers at once: an unreachable peer costs one timeout, not one per peer.
    let results = futures_util::future::join_all(targets.into_iter().map(|(name, addr, local)| {
        let tls = if local { &local_tls } else { &peer_tls };
        let headers = &headers;
        async move {
            let addr = match addr {
                Ok(a) => a,
                Err(e) => return (name, None, local, Err(Err(e))),
            };
            let tls = match tls {
                Ok(t) => t.clone(),
                Err(e) => {
                    return (
                        name,
                        Some(addr),
                        local,
                        Err(Err(format!("cannot build the TLS client: {e}"))),
                    );
                }
            };
            let r = fetch(addr, tls, headers, cfg.timeout).await.map_err(Ok);
            (name, Some(addr), local, r)
        }
    }))
    .await;
    for (name, addr, local, result) in results {
        let id = format!("server/{name}");
        let address = addr.map(|a| a.to_string()).unwrap_or_default();
        match result {
            Ok(f) => {
                out.push(Check::pass(
                    id,
                    format!(
                        "{address}: TLS verified as {PEER_SERVER_NAME}, discovery fetched ({})",
                        f.version.as_deref().unwrap_or("version unknown")
                    ),
                ));
                seen.push(ServerSeen {
                    name: name.clone(),
                    address,
                    version: f.version,
                    ok: true,
                });
                served.push((name, f.served));
                continue;
            }
            Err(Ok(e)) => out.push(Check::fail(
                id,
                e.to_string(),
                fix_for(&e, local, has_identity),
            )),
            Err(Err(e)) if addr.is_none() => {
                out.push(Check::fail(id, e, "give peers as https://IP:PORT"));
                continue;
            }
            Err(Err(e)) => out.push(Check::fail(
                id,
                e,
                "fix the CA and front-proxy files reported above",
            )),
        }
        seen.push(ServerSeen {
            name,
            address,
            version: None,
            ok: false,
        });
    }

    if cfg.peers.is_empty() {
        out.push(Check::warn(
            "peers",
            "no --peer given: peer TLS, discovery and skew not checked",
            "pass --peer https://<IP>:<port> for each other control-plane apiserver",
        ));
    }
    let refs: Vec<(String, &ServedSet)> = served.iter().map(|(n, s)| (n.clone(), s)).collect();
    let skew = if refs.len() >= 2 {
        crate::admin::report::skew_of(&refs)
    } else {
        Vec::new()
    };
    if refs.len() >= 2 {
        out.push(Check::pass(
            "skew",
            if skew.is_empty() {
                format!("{} servers serve the same resources", refs.len())
            } else {
                format!(
                    "{} resource entries not served by every one of {} servers (mvp routes them to a server that has them)",
                    skew.len(),
                    refs.len()
                )
            },
        ));
    }
    (out, seen, skew)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_values() {
        assert_eq!(
            parse_peer("https://10.0.0.2", 6443).unwrap(),
            "10.0.0.2:6443".parse().unwrap()
        );
        assert_eq!(
            parse_peer("https://[fd00::2]:7443", 6443).unwrap(),
            "[fd00::2]:7443".parse().unwrap()
        );
        assert_eq!(
            parse_peer("10.0.0.3:6443", 1).unwrap(),
            "10.0.0.3:6443".parse().unwrap()
        );
        for bad in ["http://10.0.0.2", "https://node2:6443", "node2"] {
            assert!(
                parse_peer(bad, 6443).unwrap_err().contains("--peer"),
                "{bad}"
            );
        }
    }
}
