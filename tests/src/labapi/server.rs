//! The lab apiserver's HTTP layer, in kube-apiserver's handler-chain order: TLS (h2 +
//! http/1.1, serving certificate reloaded in place), authentication, impersonation,
//! authorization, request classification, then discovery, OpenAPI, version, health,
//! SelfSubjectReview / SelfSubjectAccessReview, or the storage layer through
//! [`ResourceHandler`]; responses get kube's headers, gzip over 128 KiB and an audit line.
//! Shutdown follows kube-apiserver too (readiness first, then drain).
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::authn::{Authenticator, Authn, AuthnConfig, AuthnError};
use super::classify::{RequestInfo, ResourceInfo, classify};
use super::discovery::{Discovery, DiscoveryFormat, negotiate, parse_accept};
use super::openapi::OpenApi;
use super::status::{Status, qualified};
use super::surface::Surface;
use super::types::{Identity, LabResponse, ResourceHandler, ResourceRequest, full};
use super::wire::{http_date, json_bytes, rfc3339, uuid4, wants_pretty};

/// Failures starting the server (configuration, files, sockets); requests never fail this way.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Pem { path: PathBuf, why: String },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Authn(#[from] AuthnError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("opening audit log {path}: {source}")]
    Audit {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid --emulated-version {0:?}: expected <major>.<minor>[.<patch>]")]
    Version(String),
}

/// The release the server claims to be (`/version`, OpenAPI `info.version`, and whether
/// `apidiscovery.k8s.io/v2beta1` is still served).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmulatedVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl std::str::FromStr for EmulatedVersion {
    type Err = ServerError;
    fn from_str(s: &str) -> Result<Self, ServerError> {
        let bad = || ServerError::Version(s.to_string());
        // kube-apiserver's own form is `kube=1.35`; plain `1.35` and `v1.35.2` work too.
        let t = s.strip_prefix("kube=").unwrap_or(s).trim_start_matches('v');
        let mut it = t.split('.');
        let major = it.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let minor = it.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let patch = match it.next() {
            Some(p) => p.parse().map_err(|_| bad())?,
            None => 0,
        };
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(EmulatedVersion {
            major,
            minor,
            patch,
        })
    }
}

impl EmulatedVersion {
    /// `apidiscovery.k8s.io/v2beta1` stopped being served by default in 1.33 (feature gate
    /// AggregatedDiscoveryRemoveBetaType, beta and on in 1.33, locked in 1.35; the recorded
    /// 1.36 server answers 406), so only emulated releases before 1.33 serve it.
    pub fn serves_v2beta1(&self) -> bool {
        (self.major, self.minor) < (1, 33)
    }
}

/// Everything the server needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    /// Address written into `/api`'s `serverAddressByClientCIDRs` (port added); `None`:
    /// the bound address, or 127.0.0.1 when bound to an unspecified address.
    pub advertise_address: Option<std::net::IpAddr>,
    pub tls_cert_file: PathBuf,
    pub tls_private_key_file: PathBuf,
    pub authn: AuthnConfig,
    pub audit_log: Option<PathBuf>,
    pub surface: Surface,
    pub version: EmulatedVersion,
    /// The release of the "binary" when it differs from the emulated one (a 1.36 binary
    /// run with `--emulated-version=1.35`): `/version`'s major, minor and gitVersion.
    pub binary_version: Option<EmulatedVersion>,
    /// Users that authenticate but may only use discovery and self reviews, like a user with
    /// no RBAC bindings (the recorded `alice`).
    pub unprivileged_users: Vec<String>,
    /// etcd client URLs, for the `etcd` health check of `/healthz` and `/readyz`.
    pub etcd_servers: Vec<String>,
    /// Lab-only: anonymous callers may also read discovery and create self reviews (as if
    /// `system:discovery` and `system:basic-user` were bound to `system:unauthenticated`).
    pub anonymous_discovery: bool,
    /// `--shutdown-delay-duration`: after SIGTERM, keep serving (with `/readyz` failing)
    /// this long before closing the listener.
    pub shutdown_delay: Duration,
}

struct State {
    discovery: Discovery,
    openapi: OpenApi,
    authn: Authenticator,
    audit: Option<parking_lot::Mutex<std::fs::File>>,
    handler: Arc<dyn ResourceHandler>,
    version_body: Vec<u8>,
    started: SystemTime,
    version: EmulatedVersion,
    unprivileged_users: Vec<String>,
    etcd_servers: Vec<String>,
    anonymous_discovery: bool,
    /// Set at the shutdown signal: `/readyz` fails from then on.
    shutting_down: std::sync::atomic::AtomicBool,
    /// Cancelled when the listener closes: connections send GOAWAY / close after their
    /// current response, and watch streams end.
    drain: tokio_util::sync::CancellationToken,
    shutdown_delay: Duration,
}

/// A bound, not yet serving, lab apiserver.
pub struct LabServer {
    state: Arc<State>,
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::Read {
        path: path.clone(),
        source,
    })
}

/// Reads a PEM certificate chain and key into a rustls certified key, checking they match.
fn load_certified_key(
    cert_file: &PathBuf,
    key_file: &PathBuf,
) -> Result<rustls::sign::CertifiedKey, ServerError> {
    let cert_pem = read_file(cert_file)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Pem {
            path: cert_file.clone(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ServerError::Pem {
            path: cert_file.clone(),
            why: "no certificate".into(),
        });
    }
    let key_pem = read_file(key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| ServerError::Pem {
        path: key_file.clone(),
        why: e.to_string(),
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)?;
    let certified = rustls::sign::CertifiedKey::new(certs, signing);
    certified.keys_match()?;
    Ok(certified)
}

/// The serving certificate, re-read when its files change (kube-apiserver reloads
/// `--tls-cert-file`/`--tls-private-key-file` in place). A half-written or mismatched pair
/// keeps the previous certificate.
#[derive(Debug)]
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: parking_lot::Mutex<(FileStamps, Arc<rustls::sign::CertifiedKey>)>,
}

/// (modified time, length) of the certificate and key files.
type FileStamps = Option<[(SystemTime, u64); 2]>;

fn stamps(cert: &PathBuf, key: &PathBuf) -> FileStamps {
    let one = |p: &PathBuf| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    Some([one(cert)?, one(key)?])
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let now = stamps(&self.cert_file, &self.key_file);
        let mut current = self.current.lock();
        if now.is_some() && now != current.0 {
            match load_certified_key(&self.cert_file, &self.key_file) {
                Ok(k) => {
                    tracing::info!(file = %self.cert_file.display(), "serving certificate reloaded");
                    *current = (now, Arc::new(k));
                }
                Err(e) => tracing::warn!(error = %e, "keeping the previous serving certificate"),
            }
        }
        Some(current.1.clone())
    }
}

fn tls_config(
    cfg: &ServerConfig,
    authn: &Authenticator,
) -> Result<rustls::ServerConfig, ServerError> {
    let first_stamps = stamps(&cfg.tls_cert_file, &cfg.tls_private_key_file);
    let certified = load_certified_key(&cfg.tls_cert_file, &cfg.tls_private_key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(authn.tls_verifier()?)
        .with_cert_resolver(Arc::new(ReloadingCert {
            cert_file: cfg.tls_cert_file.clone(),
            key_file: cfg.tls_private_key_file.clone(),
            current: parking_lot::Mutex::new((first_stamps, Arc::new(certified))),
        }));
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

/// `/version`: the binary's version in major/minor/gitVersion, the emulated one in the
/// emulation fields (kube-apiserver with `--emulated-version`).
fn version_body(binary: &EmulatedVersion, v: &EmulatedVersion) -> Vec<u8> {
    let value = json!({
        "major": binary.major.to_string(),
        "minor": binary.minor.to_string(),
        "emulationMajor": v.major.to_string(),
        "emulationMinor": v.minor.to_string(),
        "minCompatibilityMajor": v.major.to_string(),
        "minCompatibilityMinor": v.minor.saturating_sub(1).to_string(),
        "gitVersion": format!("v{}.{}.{}", binary.major, binary.minor, binary.patch),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "go1.26.4",
        "compiler": "gc",
        "platform": "linux/amd64",
    });
    // kube-apiserver always indents /version and adds no trailing newline.
    json_bytes(&value, true)
}

impl LabServer {
    /// Reads certificates, binds the port and prepares every document.
    pub async fn bind(
        cfg: ServerConfig,
        handler: Arc<dyn ResourceHandler>,
    ) -> Result<LabServer, ServerError> {
        let authn = Authenticator::new(&cfg.authn)?;
        let acceptor = TlsAcceptor::from(Arc::new(tls_config(&cfg, &authn)?));
        let listener = TcpListener::bind(cfg.bind)
            .await
            .map_err(|source| ServerError::Bind {
                addr: cfg.bind,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: cfg.bind,
            source,
        })?;
        let advertise_ip = cfg
            .advertise_address
            .unwrap_or(if local.ip().is_unspecified() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                local.ip()
            });
        let advertise = SocketAddr::new(advertise_ip, local.port()).to_string();
        let audit = cfg
            .audit_log
            .as_ref()
            .map(|path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(parking_lot::Mutex::new)
                    .map_err(|source| ServerError::Audit {
                        path: path.clone(),
                        source,
                    })
            })
            .transpose()?;
        let openapi = OpenApi::new(
            &cfg.surface,
            &format!("{}.{}", cfg.version.major, cfg.version.minor),
        );
        let state = State {
            discovery: Discovery::new(cfg.surface, advertise, cfg.version.serves_v2beta1()),
            openapi,
            authn,
            audit,
            handler,
            version_body: version_body(
                cfg.binary_version.as_ref().unwrap_or(&cfg.version),
                &cfg.version,
            ),
            started: SystemTime::now(),
            version: cfg.version,
            unprivileged_users: cfg.unprivileged_users,
            etcd_servers: cfg.etcd_servers,
            anonymous_discovery: cfg.anonymous_discovery,
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            drain: tokio_util::sync::CancellationToken::new(),
            shutdown_delay: cfg.shutdown_delay,
        };
        Ok(LabServer {
            state: Arc::new(state),
            listener,
            acceptor,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then shuts down as kube-apiserver does: `/readyz`
    /// fails at once, requests are still served for the shutdown delay, then the listener
    /// closes, connections finish their in-flight requests (HTTP/2 gets GOAWAY), watches
    /// end, and this returns once they are gone (or after [`DRAIN_LIMIT`]).
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        let delay = tokio::time::sleep(Duration::MAX / 4);
        tokio::pin!(delay);
        let mut signalled = false;
        loop {
            tokio::select! {
                _ = &mut shutdown, if !signalled => {
                    signalled = true;
                    self.state.shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
                    tracing::info!(delay = ?self.state.shutdown_delay, "shutting down: /readyz fails from now on");
                    delay.as_mut().reset(tokio::time::Instant::now() + self.state.shutdown_delay);
                }
                _ = &mut delay, if signalled => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Transient (e.g. EMFILE): keep serving the other connections.
                            tracing::warn!(error = %e, "accept failed");
                            continue;
                        }
                    };
                    let state = self.state.clone();
                    let acceptor = self.acceptor.clone();
                    connections.spawn(serve_connection(state, acceptor, tcp, peer));
                }
            }
        }
        drop(self.listener);
        self.state.drain.cancel();
        let drained = tokio::time::timeout(DRAIN_LIMIT, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = connections.len(),
                "connections still open after the drain limit; closing them"
            );
            connections.abort_all();
        }
    }
}

/// How long shutdown waits for in-flight requests (kube-apiserver's default request
/// timeout).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// A response body that ends cleanly when the server drains, as kube-apiserver ends its
/// watch streams at shutdown (clients then re-watch elsewhere).
struct EndOnDrain {
    inner: super::types::Body,
    drained: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl http_body::Body for EndOnDrain {
    type Data = Bytes;
    type Error = super::types::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.drained.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(None);
        }
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }
}

/// Asks the connection task to send GOAWAY, and confirms it did (so the GOAWAY goes out
/// before the response, as Go's server does on `Connection: close`).
#[derive(Default)]
struct CloseSignal {
    requested: tokio::sync::Notify,
    started: tokio::sync::Notify,
}

struct ConnInfo {
    peer: SocketAddr,
    certs: Vec<CertificateDer<'static>>,
}

async fn serve_connection(
    state: Arc<State>,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let tls = match acceptor.accept(tcp).await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
    };
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let conn = Arc::new(ConnInfo { peer, certs });
    let state_drain = state.drain.clone();
    // kube-apiserver limits an anonymous HTTP/2 connection to one request: it sends GOAWAY
    // as it answers (its HTTP/2 DoS mitigation); proxies in front must cope with that.
    let close = Arc::new(CloseSignal::default());
    let close_for_requests = close.clone();
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let state = state.clone();
        let conn = conn.clone();
        let close = close_for_requests.clone();
        async move { Ok::<_, Infallible>(handle(state, conn, close, req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // Go writes canonical header names on HTTP/1.1 (`Audit-Id`).
    builder.http1().title_case_headers(true);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let drain = state_drain;
    let result = tokio::select! {
        r = connection.as_mut() => r,
        _ = close.requested.notified() => {
            connection.as_mut().graceful_shutdown();
            close.started.notify_one();
            connection.await
        }
        _ = drain.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// `404 page not found`, Go's plain-text NotFound for paths nothing serves.
fn text_not_found() -> LabResponse {
    text_response(http::StatusCode::NOT_FOUND, "404 page not found\n")
}

fn text_response(code: http::StatusCode, body: impl Into<Bytes>) -> LabResponse {
    http::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("x-content-type-options", "nosniff")
        .body(full(body))
        .expect("valid response")
}

fn json_response(code: http::StatusCode, body: Vec<u8>) -> LabResponse {
    http::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(full(body))
        .expect("valid response")
}

/// Flow-schema/priority-level uids kube-apiserver's priority-and-fairness filter adds to
/// every authenticated response (fixed: the lab has one exempt flow).
const PF_FLOWSCHEMA_UID: &str = "6e1f0a3c-5c1d-4b8e-9a1e-1a2b3c4d5e6f";
const PF_PRIORITYLEVEL_UID: &str = "7f2e1b4d-6d2e-4c9f-8b2f-2b3c4d5e6f70";

async fn handle(
    state: Arc<State>,
    conn: Arc<ConnInfo>,
    close: Arc<CloseSignal>,
    req: http::Request<Incoming>,
) -> LabResponse {
    // kube-apiserver keeps a client-supplied Audit-ID (so a proxy can correlate).
    let audit_id = req
        .headers()
        .get("audit-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(uuid4);
    let method = req.method().clone();
    let uri = req.uri().clone();
    let path_and_query = uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    let info = classify(&method, uri.path(), uri.query());
    let authn = state.authn.authenticate(&conn.certs, req.headers());
    let pretty = wants_pretty(req.headers(), uri.query());
    let mut impersonated = None;
    let (mut resp, identity) = match authn {
        Authn::Unauthorized => (
            drained(req, Status::unauthorized().response_with(pretty)).await,
            None,
        ),
        Authn::User(requester) => 'user: {
            // Impersonation runs after authentication and before authorization.
            let id = match impersonate(&state, &requester, req.headers()) {
                Ok(Some(target)) => {
                    impersonated = Some(target.clone());
                    target
                }
                Ok(None) => requester.clone(),
                Err(status) => {
                    break 'user (
                        drained(req, status.response_with(pretty)).await,
                        Some(requester),
                    );
                }
            };
            if requester.is_anonymous() && req.version() == http::Version::HTTP_2 {
                close.requested.notify_one();
                close.started.notified().await;
            }
            let gzip_ok = accepts_gzip(req.headers());
            let mut resp = serve(&state, &id, &info, req).await;
            if gzip_ok {
                resp = compress(resp).await;
            }
            if matches!(&info, RequestInfo::Resource(r) if r.verb == "watch") {
                let drained = Box::pin(state.drain.clone().cancelled_owned());
                resp = resp.map(|inner| {
                    http_body_util::BodyExt::boxed_unsync(EndOnDrain { inner, drained })
                });
            }
            (resp, Some(requester))
        }
    };
    let code = resp.status().as_u16();
    let headers = resp.headers_mut();
    headers.insert(
        "audit-id",
        audit_id.parse().expect("uuid is a header value"),
    );
    if !headers.contains_key(http::header::CACHE_CONTROL) {
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache, private"),
        );
    }
    // Authentication runs before priority and fairness, so 401s carry no pf headers.
    if identity.is_some() {
        headers.insert(
            "x-kubernetes-pf-flowschema-uid",
            http::HeaderValue::from_static(PF_FLOWSCHEMA_UID),
        );
        headers.insert(
            "x-kubernetes-pf-prioritylevel-uid",
            http::HeaderValue::from_static(PF_PRIORITYLEVEL_UID),
        );
    }
    tracing::debug!(
        method = %method,
        path = %path_and_query,
        user = identity.as_ref().map(|i| i.user.as_str()).unwrap_or(""),
        code,
        "request"
    );
    audit(
        &state,
        AuditEntry {
            audit_id: &audit_id,
            info: &info,
            path: &path_and_query,
            identity: identity.as_ref(),
            impersonated: impersonated.as_ref(),
            peer: conn.peer,
            code,
        },
    );
    resp
}

/// Applies `Impersonate-*` headers as kube-apiserver's impersonation filter does: every
/// impersonated attribute must be authorized (`impersonate` on users/groups/uids/
/// userextras); `Ok(None)` when the request impersonates no one.
fn impersonate(
    state: &State,
    requester: &Identity,
    headers: &http::HeaderMap,
) -> Result<Option<Identity>, Box<Status>> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let user = values("impersonate-user").into_iter().next();
    let uid = values("impersonate-uid").into_iter().next();
    let groups = values("impersonate-group");
    let mut extra: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix("impersonate-extra-")
            && let Ok(v) = value.to_str()
        {
            let key = percent_encoding::percent_decode_str(key)
                .decode_utf8_lossy()
                .into_owned();
            extra.entry(key).or_default().push(v.to_string());
        }
    }
    let Some(user) = user else {
        if uid.is_some() || !groups.is_empty() || !extra.is_empty() {
            return Err(Box::new(Status::new(
                500,
                "InternalError",
                "Internal error occurred: requested impersonation of groups, uid or extra without impersonating a user",
            )
            .with_details(json!({"causes": [{"message": "requested impersonation without impersonating a user"}]}))));
        }
        return Ok(None);
    };
    let check =
        |resource: &str, name: &str, subresource: Option<&str>| -> Result<(), Box<Status>> {
            let info = RequestInfo::Resource(ResourceInfo {
                path: String::new(),
                group: String::new(),
                version: "v1".into(),
                namespace: None,
                resource: resource.to_string(),
                name: Some(name.to_string()),
                subresource: subresource.map(str::to_string),
                verb: "impersonate".into(),
            });
            // Impersonation is an administrative right: never for anonymous or RBAC-less users.
            if requester.is_anonymous() || !authorized(state, requester, &info) {
                return Err(Box::new(forbidden(requester, &info)));
            }
            Ok(())
        };
    check("users", &user, None)?;
    for g in &groups {
        check("groups", g, None)?;
    }
    if let Some(u) = &uid {
        check("uids", u, None)?;
    }
    for (key, vals) in &extra {
        for v in vals {
            check("userextras", v, Some(key))?;
        }
    }
    let mut target = Identity {
        user: user.clone(),
        uid: uid.unwrap_or_default(),
        groups,
        extra,
    };
    let marker = if user == "system:anonymous" {
        "system:unauthenticated"
    } else {
        "system:authenticated"
    };
    if !target.groups.iter().any(|g| g == marker) {
        target.groups.push(marker.to_string());
    }
    Ok(Some(target))
}

/// One audit record's facts.
struct AuditEntry<'a> {
    audit_id: &'a str,
    info: &'a RequestInfo,
    path: &'a str,
    identity: Option<&'a Identity>,
    impersonated: Option<&'a Identity>,
    peer: SocketAddr,
    code: u16,
}

fn audit(state: &State, e: AuditEntry<'_>) {
    let AuditEntry {
        audit_id,
        info,
        path,
        identity,
        impersonated,
        peer,
        code,
    } = e;
    let Some(file) = &state.audit else { return };
    let verb = match info {
        RequestInfo::NonResource { verb, .. } => verb.as_str(),
        RequestInfo::Resource(r) => r.verb.as_str(),
    };
    let line = json!({
        "time": rfc3339(SystemTime::now()),
        "auditID": audit_id,
        "verb": verb,
        "path": path,
        "user": identity.map(|i| i.user.as_str()),
        "uid": identity.map(|i| i.uid.as_str()),
        "groups": identity.map(|i| i.groups.clone()).unwrap_or_default(),
        "impersonatedUser": impersonated.map(|i| json!({"username": i.user, "groups": i.groups})),
        "sourceAddress": peer.to_string(),
        "code": code,
    });
    let mut bytes = serde_json::to_vec(&line).expect("serialises");
    bytes.push(b'\n');
    // One write per line so concurrent requests never interleave within a line.
    if let Err(e) = file.lock().write_all(&bytes) {
        tracing::warn!(error = %e, "audit log write failed");
    }
}

/// Whether `Accept-Encoding` allows gzip (a `q=0` refuses it).
fn accepts_gzip(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let refused =
                parts.any(|p| p.replace(' ', "") == "q=0" || p.replace(' ', "") == "q=0.0");
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// kube-apiserver gzips a response whose first write exceeds 128 KiB when the client
/// accepts gzip. Lab handlers hand over complete bodies for non-streaming answers, so the
/// body's exact size stands in for the first write; streams (watch, logs, exec) are left
/// alone.
const GZIP_THRESHOLD: u64 = 128 * 1024;

async fn compress(resp: LabResponse) -> LabResponse {
    use http_body::Body as _;
    let eligible = resp.status() == http::StatusCode::OK
        && !resp.headers().contains_key(http::header::CONTENT_ENCODING)
        && resp
            .body()
            .size_hint()
            .exact()
            .is_some_and(|n| n > GZIP_THRESHOLD);
    if !eligible {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Status::new(500, "InternalError", format!("reading the response: {e}"))
                .response();
        }
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let compressed = std::io::Write::write_all(&mut gz, &bytes).and_then(|()| gz.finish());
    match compressed {
        Ok(out) => {
            parts.headers.remove(http::header::CONTENT_LENGTH);
            parts.headers.insert(
                http::header::CONTENT_ENCODING,
                http::HeaderValue::from_static("gzip"),
            );
            parts.headers.append(
                http::header::VARY,
                http::HeaderValue::from_static("Accept-Encoding"),
            );
            http::Response::from_parts(parts, full(out))
        }
        // Compression into memory cannot fail short of allocation failure; answer plainly.
        Err(_) => http::Response::from_parts(parts, full(bytes)),
    }
}

/// Non-resource paths kube-apiserver's `system:public-info-viewer` opens to everyone.
const PUBLIC_PATHS: [&str; 5] = ["/healthz", "/livez", "/readyz", "/version", "/version/"];

/// Non-resource paths `system:discovery` and `system:basic-user` open to every
/// authenticated user.
fn is_discovery_path(p: &str) -> bool {
    PUBLIC_PATHS.contains(&p)
        || ["/api", "/apis", "/openapi", "/healthz", "/livez", "/readyz"]
            .iter()
            .any(|prefix| p == *prefix || p.starts_with(&format!("{prefix}/")))
}

fn is_self_review(r: &ResourceInfo) -> bool {
    r.verb == "create"
        && matches!(
            (r.group.as_str(), r.resource.as_str()),
            ("authentication.k8s.io", "selfsubjectreviews")
                | ("authorization.k8s.io", "selfsubjectaccessreviews")
                | ("authorization.k8s.io", "selfsubjectrulesreviews")
        )
}

/// kube-apiserver's Forbidden Status for a denied request.
fn forbidden(id: &Identity, info: &RequestInfo) -> Status {
    match info {
        RequestInfo::NonResource { path, verb } => Status::new(
            403,
            "Forbidden",
            format!("forbidden: User {:?} cannot {verb} path {path:?}", id.user),
        )
        .with_details(json!({})),
        RequestInfo::Resource(r) => {
            let mut resource = r.resource.clone();
            if let Some(sub) = &r.subresource {
                resource = format!("{resource}/{sub}");
            }
            let scope = match &r.namespace {
                Some(ns) => format!("in the namespace {ns:?}"),
                None => "at the cluster scope".to_string(),
            };
            let why = format!(
                "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
                id.user, r.verb, r.group
            );
            let q = qualified(&r.group, &r.resource);
            let message = match &r.name {
                Some(n) => format!("{q} {n:?} is forbidden: {why}"),
                None => format!("{q} is forbidden: {why}"),
            };
            let mut details = serde_json::Map::new();
            if let Some(n) = &r.name {
                details.insert("name".into(), json!(n));
            }
            if !r.group.is_empty() {
                details.insert("group".into(), json!(r.group));
            }
            details.insert("kind".into(), json!(r.resource));
            Status::new(403, "Forbidden", message).with_details(serde_json::Value::Object(details))
        }
    }
}

fn authorized(state: &State, id: &Identity, info: &RequestInfo) -> bool {
    if id.is_anonymous() && !state.anonymous_discovery {
        return matches!(info, RequestInfo::NonResource { path, .. } if PUBLIC_PATHS.contains(&path.as_str()));
    }
    if id.is_anonymous() || state.unprivileged_users.contains(&id.user) {
        return match info {
            RequestInfo::NonResource { path, .. } => is_discovery_path(path),
            RequestInfo::Resource(r) => is_self_review(r),
        };
    }
    true
}

async fn serve(
    state: &State,
    id: &Identity,
    info: &RequestInfo,
    req: http::Request<Incoming>,
) -> LabResponse {
    let pretty = wants_pretty(req.headers(), req.uri().query());
    if !authorized(state, id, info) {
        return drained(req, forbidden(id, info).response_with(pretty)).await;
    }
    match info {
        RequestInfo::NonResource { path, .. } => {
            let resp = serve_non_resource(state, path, &req, pretty).await;
            drained(req, resp).await
        }
        RequestInfo::Resource(r) => serve_resource(state, id, r, req, pretty).await,
    }
}

/// Reads (and drops) what the client is still sending before answering without the
/// body: answering an HTTP/2 request mid-upload resets the stream, which clients report
/// as a transport error instead of the answer. Bounded, like kube-apiserver's body limit.
async fn drained(req: http::Request<Incoming>, resp: LabResponse) -> LabResponse {
    let _ = Limited::new(req.into_body(), 3 << 20).collect().await;
    resp
}

async fn serve_non_resource(
    state: &State,
    path: &str,
    req: &http::Request<Incoming>,
    pretty: bool,
) -> LabResponse {
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        // Discovery, health and version only answer GET; Go's mux answers others 404 here.
        return text_not_found();
    }
    let d = &state.discovery;
    let trimmed = path.trim_end_matches('/');
    let parts: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        // `/`: kube-apiserver's index of the paths it serves (always indented).
        [""] => json_response(http::StatusCode::OK, json_bytes(&root_paths(state), true)),
        ["api"] => discovery_root(state, req, pretty, true),
        ["apis"] => discovery_root(state, req, pretty, false),
        ["api", version] => match d.resource_list("", version, pretty) {
            Some(body) => json_response(http::StatusCode::OK, body),
            None => text_not_found(),
        },
        ["apis", group] => match d.group(group) {
            Some(g) => json_response(http::StatusCode::OK, json_bytes(&g, pretty)),
            None => text_not_found(),
        },
        ["apis", group, version] => match d.resource_list(group, version, pretty) {
            Some(body) => json_response(http::StatusCode::OK, body),
            None if d.surface.group(group).is_some() => {
                Status::path_not_found().response_with(pretty)
            }
            None => text_not_found(),
        },
        ["version"] => json_response(http::StatusCode::OK, state.version_body.clone()),
        ["healthz" | "livez" | "readyz", rest @ ..] => {
            // kube-apiserver's liveness does not depend on etcd; health and readiness do.
            let etcd = if parts[0] == "livez" {
                None
            } else {
                Some(etcd_healthy(&state.etcd_servers).await)
            };
            // Only readiness reports the shutdown in progress.
            let shutting_down = parts[0] == "readyz"
                && state
                    .shutting_down
                    .load(std::sync::atomic::Ordering::SeqCst);
            health(parts[0], rest, req.uri().query(), etcd, shutting_down)
        }
        ["openapi", "v3", rest @ ..] => openapi(state, &rest.join("/"), req),
        _ => text_not_found(),
    }
}

/// Whether any etcd endpoint answers `/health` with `"health":"true"` (etcd's own HTTP
/// health endpoint on its client URL).
async fn etcd_healthy(endpoints: &[String]) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    for ep in endpoints {
        let hostport = ep
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let probe = async {
            let mut s = tokio::net::TcpStream::connect(hostport).await.ok()?;
            s.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
                .await
                .ok()?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.ok()?;
            Some(String::from_utf8_lossy(&out).contains("\"health\":\"true\""))
        };
        // A hung etcd must fail the check, not hang the health endpoint.
        if let Ok(Some(true)) = tokio::time::timeout(Duration::from_secs(2), probe).await {
            return true;
        }
    }
    false
}

/// The paths listed at `/`, sorted as kube-apiserver lists them.
fn root_paths(state: &State) -> serde_json::Value {
    let mut paths: std::collections::BTreeSet<String> = [
        "/api",
        "/apis",
        "/healthz",
        "/livez",
        "/readyz",
        "/version",
        "/openapi/v3",
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    for g in state.discovery.surface.all_groups() {
        let name = &g.metadata.name;
        if !name.is_empty() {
            paths.insert(format!("/apis/{name}"));
        }
        for v in &g.versions {
            paths.insert(if name.is_empty() {
                format!("/api/{}", v.version)
            } else {
                format!("/apis/{name}/{}", v.version)
            });
        }
    }
    for check in ["ping", "log", "etcd", "shutdown"] {
        for endpoint in ["healthz", "livez", "readyz"] {
            paths.insert(format!("/{endpoint}/{check}"));
        }
    }
    json!({ "paths": paths })
}

/// `/healthz`, `/livez`, `/readyz` and their per-check paths; `etcd` is the etcd check's
/// result where the endpoint includes it. Like kube-apiserver, a failing endpoint answers
/// 500 with the full check list and the reason withheld.
fn health(
    endpoint: &str,
    rest: &[&str],
    query: Option<&str>,
    etcd: Option<bool>,
    shutting_down: bool,
) -> LabResponse {
    let mut checks: Vec<(&str, bool)> = vec![("ping", true), ("log", true)];
    if let Some(ok) = etcd {
        checks.push(("etcd", ok));
    }
    checks.push(("shutdown", !shutting_down));
    match rest {
        [] => {
            let verbose = query.is_some_and(|q| {
                q.split('&')
                    .any(|kv| kv == "verbose" || kv.starts_with("verbose="))
            });
            let healthy = checks.iter().all(|(_, ok)| *ok);
            if healthy && !verbose {
                return text_response(http::StatusCode::OK, "ok");
            }
            let mut body = String::new();
            for (name, ok) in &checks {
                if *ok {
                    body.push_str(&format!("[+]{name} ok\n"));
                } else {
                    body.push_str(&format!("[-]{name} failed: reason withheld\n"));
                }
            }
            if healthy {
                body.push_str(&format!("{endpoint} check passed\n"));
                text_response(http::StatusCode::OK, body)
            } else {
                body.push_str(&format!("{endpoint} check failed\n"));
                text_response(http::StatusCode::INTERNAL_SERVER_ERROR, body)
            }
        }
        [check] => match checks.iter().find(|(name, _)| name == check) {
            Some((_, true)) => text_response(http::StatusCode::OK, "ok"),
            Some((name, false)) => text_response(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal server error: {name} check failed\n"),
            ),
            None => text_not_found(),
        },
        _ => text_not_found(),
    }
}

fn discovery_root(
    state: &State,
    req: &http::Request<Incoming>,
    pretty: bool,
    core: bool,
) -> LabResponse {
    let d = &state.discovery;
    let ranges = parse_accept(req.headers());
    let Some(format) = negotiate(&ranges, state.version.serves_v2beta1()) else {
        // kube-apiserver's discovery 406: always indented, no details.
        return Status::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        )
        .response_with(true);
    };
    let (agg, api_version, body) = match format {
        DiscoveryFormat::Legacy => {
            let body = if core {
                json_bytes(&d.api_versions(), pretty)
            } else {
                json_bytes(&d.group_list(), pretty)
            };
            return json_response(http::StatusCode::OK, body);
        }
        DiscoveryFormat::AggregatedV2 => {
            let agg = if core { &d.api } else { &d.apis };
            (agg, "v2", agg.v2.clone())
        }
        DiscoveryFormat::AggregatedV2Beta1 => {
            let agg = if core { &d.api } else { &d.apis };
            let body = agg.v2beta1.clone().unwrap_or_else(|| agg.v2.clone());
            (agg, "v2beta1", body)
        }
    };
    let not_modified = req
        .headers()
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == agg.etag);
    let builder = http::Response::builder()
        .header(http::header::CACHE_CONTROL, "public")
        .header(http::header::ETAG, agg.etag.as_str())
        .header(http::header::VARY, "Accept");
    if not_modified {
        return builder
            .status(http::StatusCode::NOT_MODIFIED)
            .body(full(Bytes::new()))
            .expect("valid response");
    }
    let body = if pretty {
        Bytes::from(agg.pretty(if api_version == "v2" {
            "apidiscovery.k8s.io/v2"
        } else {
            "apidiscovery.k8s.io/v2beta1"
        }))
    } else {
        body
    };
    builder
        .status(http::StatusCode::OK)
        .header(
            http::header::CONTENT_TYPE,
            format!(
                "application/json;g=apidiscovery.k8s.io;v={api_version};as=APIGroupDiscoveryList"
            ),
        )
        .body(full(body))
        .expect("valid response")
}

fn openapi(state: &State, rel: &str, req: &http::Request<Incoming>) -> LabResponse {
    let last_modified = http_date(state.started);
    if rel.is_empty() {
        // Recorded quirk: the index is JSON served as text/plain, without an ETag.
        return http::Response::builder()
            .status(http::StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(http::header::ACCEPT_RANGES, "bytes")
            .header(http::header::LAST_MODIFIED, last_modified)
            .body(full(state.openapi.index.clone()))
            .expect("valid response");
    }
    let Some(doc) = state.openapi.docs.get(rel) else {
        return text_not_found();
    };
    let etag = format!("\"{}\"", doc.hash);
    let pinned = req
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .any(|kv| kv == format!("hash={}", doc.hash));
    let not_modified = req
        .headers()
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    if not_modified {
        // Recorded: the 304 repeats etag and vary only.
        return http::Response::builder()
            .status(http::StatusCode::NOT_MODIFIED)
            .header(http::header::ETAG, etag.as_str())
            .header(http::header::VARY, "Accept")
            .body(full(Bytes::new()))
            .expect("valid response");
    }
    let mut builder = http::Response::builder()
        .header(http::header::ACCEPT_RANGES, "bytes")
        .header(http::header::ETAG, etag.as_str())
        .header(http::header::LAST_MODIFIED, last_modified)
        .header(http::header::VARY, "Accept");
    if pinned {
        builder = builder
            .header(http::header::CACHE_CONTROL, "public, immutable")
            .header(
                http::header::EXPIRES,
                http_date(SystemTime::now() + Duration::from_secs(365 * 24 * 3600)),
            );
    }
    builder
        .status(http::StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(full(doc.body.clone()))
        .expect("valid response")
}

/// Media types kube-apiserver can produce for resources (parameters such as `as=Table`
/// are left for the storage layer to honour).
fn resource_accept_ok(headers: &http::HeaderMap) -> bool {
    let ranges = parse_accept(headers);
    ranges.is_empty()
        || ranges.iter().any(|r| {
            matches!(
                r.essence.as_str(),
                "application/json"
                    | "application/yaml"
                    | "application/vnd.kubernetes.protobuf"
                    | "*/*"
                    | "application/*"
            )
        })
}

/// Finds the resource and checks scope, subresource, verb and `Accept`; the error is the
/// answer kube-apiserver gives instead.
fn route_resource(
    state: &State,
    info: &ResourceInfo,
    headers: &http::HeaderMap,
    pretty: bool,
) -> Result<(super::types::ResourceMeta, Option<String>), Box<LabResponse>> {
    let surface = &state.discovery.surface;
    if surface.group(&info.group).is_none() {
        return Err(Box::new(text_not_found()));
    }
    let not_found = || Status::path_not_found().response_with(pretty);
    let Some(meta) = surface.lookup(&info.group, &info.version, &info.resource) else {
        return Err(Box::new(not_found()));
    };
    let mut namespace = info.namespace.clone();
    if !meta.namespaced && namespace.is_some() {
        // `namespaces/<ns>` carries its own name as namespace; anything else cluster-scoped
        // under a namespace does not exist.
        if meta.resource == "namespaces" && namespace == info.name {
            namespace = None;
        } else {
            return Err(Box::new(not_found()));
        }
    }
    if meta.namespaced && namespace.is_none() && info.name.is_some() {
        return Err(Box::new(not_found()));
    }
    // The all-namespaces path of a namespaced resource only lists and watches.
    if meta.namespaced && namespace.is_none() && !matches!(info.verb.as_str(), "list" | "watch") {
        return Err(Box::new(Status::method_not_allowed().response_with(pretty)));
    }
    let verbs = match &info.subresource {
        None => meta.verbs.clone(),
        Some(sub) => {
            match surface.subresource_verbs(&info.group, &info.version, &info.resource, sub) {
                Some(v) => v,
                None => return Err(Box::new(not_found())),
            }
        }
    };
    let verb_ok = verbs.contains(&info.verb)
        // Collections of subresources do not exist; a subresource's `get` covers watch-less reads.
        || (info.verb == "proxy" && verbs.iter().any(|v| v == "get"));
    if !verb_ok {
        return Err(Box::new(Status::method_not_allowed().response_with(pretty)));
    }
    if !resource_accept_ok(headers) {
        // Recorded: the resource 406 is always indented and has empty details.
        return Err(Box::new(
            Status::new(
            406,
            "NotAcceptable",
            "406: Not Acceptable\n\nAvailable representations: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/json;stream=watch, application/vnd.kubernetes.protobuf;stream=watch",
        )
        .with_details(json!({}))
        .response_with(true),
        ));
    }
    Ok((meta, namespace))
}

async fn serve_resource(
    state: &State,
    id: &Identity,
    info: &ResourceInfo,
    req: http::Request<Incoming>,
    pretty: bool,
) -> LabResponse {
    let (meta, namespace) = match route_resource(state, info, req.headers(), pretty) {
        Ok(found) => found,
        Err(resp) => return drained(req, *resp).await,
    };
    if meta.group == "authentication.k8s.io"
        && meta.resource == "selfsubjectreviews"
        && info.subresource.is_none()
    {
        return self_subject_review(id, &meta.api_version(), req, pretty).await;
    }
    if meta.group == "authorization.k8s.io"
        && meta.resource == "selfsubjectaccessreviews"
        && info.subresource.is_none()
    {
        return self_subject_access_review(state, id, &meta.api_version(), req, pretty).await;
    }
    let request = ResourceRequest {
        meta,
        verb: info.lab_verb(),
        namespace,
        name: info.name.clone(),
        subresource: info.subresource.clone(),
        identity: id.clone(),
    };
    state.handler.handle(request, req).await
}

/// `POST .../selfsubjectaccessreviews` (`kubectl auth can-i`): answered by the lab's own
/// authorizer, never stored.
async fn self_subject_access_review(
    state: &State,
    id: &Identity,
    api_version: &str,
    req: http::Request<Incoming>,
    pretty: bool,
) -> LabResponse {
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Status::new(400, "BadRequest", format!("reading request body: {e}"))
                .response_with(pretty);
        }
    };
    let attrs = match super::review::parse(&content_type, &body) {
        Ok(a) => a,
        Err(e) => return Status::new(400, "BadRequest", e.to_string()).response_with(pretty),
    };
    let some = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let info = match &attrs {
        super::review::Attributes::Resource {
            namespace,
            verb,
            group,
            version,
            resource,
            subresource,
            name,
        } => RequestInfo::Resource(ResourceInfo {
            path: String::new(),
            group: group.clone(),
            version: version.clone(),
            namespace: some(namespace),
            resource: resource.clone(),
            name: some(name),
            subresource: some(subresource),
            verb: verb.clone(),
        }),
        super::review::Attributes::NonResource { path, verb } => RequestInfo::NonResource {
            path: path.clone(),
            verb: verb.clone(),
        },
    };
    let review = json!({
        "kind": "SelfSubjectAccessReview",
        "apiVersion": api_version,
        "metadata": {"creationTimestamp": rfc3339(SystemTime::now())},
        "spec": attrs.spec(),
        "status": {"allowed": authorized(state, id, &info)},
    });
    json_response(http::StatusCode::CREATED, json_bytes(&review, pretty))
}

/// `POST .../selfsubjectreviews`: the caller's identity, as `kubectl auth whoami` reads it.
async fn self_subject_review(
    id: &Identity,
    api_version: &str,
    req: http::Request<Incoming>,
    pretty: bool,
) -> LabResponse {
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Status::new(400, "BadRequest", format!("reading request body: {e}"))
                .response_with(pretty);
        }
    };
    // The review has no input fields; client-go's typed clients send it as protobuf (only
    // the `k8s\0` envelope is checked), kubectl's raw calls as JSON.
    let protobuf = content_type.starts_with("application/vnd.kubernetes.protobuf");
    if protobuf && !body.starts_with(b"k8s\0") {
        return Status::new(
            400,
            "BadRequest",
            "the object provided is unrecognized or invalid: not a Kubernetes protobuf envelope",
        )
        .response_with(pretty);
    }
    if !protobuf && !body.is_empty() {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) if v.is_object() => {}
            Ok(_) | Err(_) => {
                return Status::new(
                    400,
                    "BadRequest",
                    "the object provided is unrecognized or invalid: expected a SelfSubjectReview JSON object",
                )
                .response_with(pretty);
            }
        }
    }
    let mut user = serde_json::Map::new();
    user.insert("username".into(), json!(id.user));
    if !id.uid.is_empty() {
        user.insert("uid".into(), json!(id.uid));
    }
    user.insert("groups".into(), json!(id.groups));
    if !id.extra.is_empty() {
        user.insert("extra".into(), json!(id.extra));
    }
    let review = json!({
        "kind": "SelfSubjectReview",
        "apiVersion": api_version,
        "metadata": {"creationTimestamp": rfc3339(SystemTime::now())},
        "status": {"userInfo": user},
    });
    json_response(http::StatusCode::CREATED, json_bytes(&review, pretty))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulated_versions() {
        let v: EmulatedVersion = "1.33.4".parse().unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 33, 4));
        assert!(!v.serves_v2beta1());
        let v: EmulatedVersion = "v1.32".parse().unwrap();
        assert!(v.serves_v2beta1());
        let v: EmulatedVersion = "kube=1.35".parse().unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 35, 0));
        assert!("1".parse::<EmulatedVersion>().is_err());
        assert!("1.x.2".parse::<EmulatedVersion>().is_err());
    }

    #[test]
    fn forbidden_messages_match_recordings() {
        let anon = Identity {
            user: "system:anonymous".into(),
            ..Default::default()
        };
        let info = classify(&http::Method::GET, "/api/v1/namespaces/fx/configmaps", None);
        assert_eq!(
            forbidden(&anon, &info).to_value(),
            json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps is forbidden: User \"system:anonymous\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"fx\"","reason":"Forbidden","details":{"kind":"configmaps"},"code":403})
        );
        let info = classify(
            &http::Method::POST,
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            None,
        );
        assert_eq!(
            forbidden(&anon, &info).message,
            "selfsubjectreviews.authentication.k8s.io is forbidden: User \"system:anonymous\" cannot create resource \"selfsubjectreviews\" in API group \"authentication.k8s.io\" at the cluster scope"
        );
    }
}
