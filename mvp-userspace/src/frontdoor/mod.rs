//! The L7 front door: accept TCP, terminate TLS with the apiserver's own cert, authenticate the
//! caller as kube-apiserver would, forward through a [`Route`].
//!
//! ```text
//! TcpStream ─▶ TLS (tls::) ─▶ PeerCertAuth (once per connection)
//!           ─▶ HTTP/1.1 | h2 (hyper auto) ─▶ per request: authenticate (identity::)
//!           ─▶ header hygiene + identity ─▶ Route ─▶ Upstream pool (proxy::) ─▶ apiserver
//! ```
//!
//! Limits follow kube-apiserver's server (k8s.io/apiserver `SecureServingInfo.Serve`):
//! 1 MiB of request headers (bigger → 431), 32 s to read request headers (slowloris),
//! h2 streams per connection as `--http2-max-streams-per-connection` (100).
//! No timeout once a request is forwarded.
//!
//! Wiring (what `mvp run` does; tests do the same with a plain listener):
//!
//! ```no_run
//! # async fn wire(args: mvp::frontdoor::FrontDoorArgs) -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use mvp::frontdoor::FrontDoor;
//! use mvp::steer::DirectConnector; // under steering: BypassConnector
//!
//! let config = args.to_config()?;
//! let door = FrontDoor::new(&config, Arc::new(DirectConnector::default()))?;
//! let _reloader = door.spawn_cert_reloader();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:6443").await?;
//! door.serve(listener).await?; // or door.serve_connection(tcp, client) per accepted socket
//! # Ok(()) }
//! ```
//!
//! A router replaces [`LocalOnly`] through [`FrontDoor::with_route`]: it gets each request
//! after authentication and returns the [`Upstream`] (local or a peer) to forward it to.
pub mod config;
pub mod stats;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use rustls_pki_types::UnixTime;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub use config::{ConfigError, FrontDoorArgs, FrontDoorConfig};
pub use stats::FrontDoorStats;

use crate::addr::ClientAddr;
use crate::identity::{self, CallerIdentity, RequestHeaderNames};
use crate::proxy::{
    self, ConnectionAffinity, Dial, LocalOnly, NotSent, Outcome, ProxyError, Route, Routed,
    TargetKind, Upstream,
};
use crate::status::Status;
use crate::tls::{
    self, ClientCertJudge, PeerCertAuth, Reload, ReloadingKeyPair, RequestClientCert, TlsError,
    UpstreamTls,
};

/// kube-apiserver's `MaxHeaderBytes` (1 MiB) plus Go's 4 KiB slack.
const MAX_HEADER_BYTES: usize = (1 << 20) + 4096;
/// kube-apiserver's `ReadHeaderTimeout`.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(32);
/// Time a client gets to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Go has no header-count limit (only the byte limit); hyper's default is 100.
pub(crate) const MAX_HEADERS: usize = 16 * 1024;

/// The response body: streamed from upstream, or a Status mvp wrote.
pub type Body = Either<Incoming, Full<Bytes>>;

/// Building the front door failed (start-up boundary; fix the named file or flag).
#[derive(Debug, thiserror::Error)]
pub enum FrontDoorError {
    /// Flags.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Per-connection facts, computed once after the handshake.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's address (the apiserver will see it in X-Forwarded-For).
    pub client: SocketAddr,
    /// What the client certificate authenticates.
    pub peer: PeerCertAuth,
    /// This connection's upstream connections.
    pub upstreams: ConnectionAffinity,
}

struct Shared {
    tls: Arc<ServerConfig>,
    /// The upstream dialer, for the loop guard (is a client one of our own upstream sockets?).
    dial: Arc<dyn Dial>,
    judge: Arc<ClientCertJudge>,
    names: RequestHeaderNames,
    route: Arc<dyn Route>,
    stats: Arc<FrontDoorStats>,
}

/// The front door. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct FrontDoor {
    shared: Arc<Shared>,
    reload: Vec<Arc<dyn Reload>>,
    reload_interval: Duration,
    drain: CancellationToken,
    h2_max_streams: u32,
}

impl std::fmt::Debug for FrontDoor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontDoor").finish_non_exhaustive()
    }
}

impl FrontDoor {
    /// Build from a config: load certs, build TLS configs and the local upstream (reached
    /// through `dial`), routing everything to it.
    pub fn new(config: &FrontDoorConfig, dial: Arc<dyn Dial>) -> Result<Self, FrontDoorError> {
        let provider = tls::provider();
        let upstream_tls = UpstreamTls::new(
            &config.upstream_ca_file,
            &config.upstream_server_name,
            config
                .proxy_client
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path())),
            &provider,
        )?;
        let local = Arc::new(Upstream::new(
            TargetKind::Local,
            config.upstream,
            &upstream_tls,
            dial.clone(),
        ));
        Self::with_route(config, Arc::new(LocalOnly(local)), &upstream_tls, dial)
    }

    /// Build with a caller-supplied router (peers, tests). `upstream_tls` and `dial` are
    /// what the router's upstreams were built with: the front-proxy pair is reloaded with
    /// the rest, and `dial` knows mvp's own upstream sockets (loop guard).
    pub fn with_route(
        config: &FrontDoorConfig,
        route: Arc<dyn Route>,
        upstream_tls: &UpstreamTls,
        dial: Arc<dyn Dial>,
    ) -> Result<Self, FrontDoorError> {
        let provider = tls::provider();
        let judge = Arc::new(ClientCertJudge::load(
            config.client_ca_file.as_deref(),
            config.requestheader_client_ca_file.as_deref(),
            config.requestheader_allowed_names.clone(),
            &provider,
        )?);
        let serving_cert = Arc::new(ReloadingKeyPair::load(
            "--tls-cert-file/--tls-private-key-file",
            &config.tls_cert_file,
            &config.tls_private_key_file,
            provider.clone(),
        )?);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls {
                what: "serving TLS config".into(),
                source,
            })?;
        let builder = if judge.requests_certs() {
            builder.with_client_cert_verifier(Arc::new(RequestClientCert::new(
                judge.hints(),
                &provider,
            )))
        } else {
            builder.with_no_client_auth()
        };
        let mut server = builder.with_cert_resolver(serving_cert.clone());
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut reload: Vec<Arc<dyn Reload>> = vec![serving_cert, judge.clone()];
        if let Some(pair) = &upstream_tls.proxy_client {
            reload.push(pair.clone());
        }
        Ok(FrontDoor {
            shared: Arc::new(Shared {
                tls: Arc::new(server),
                dial,
                judge,
                names: config.header_names.clone(),
                route,
                stats: Arc::default(),
            }),
            reload,
            reload_interval: config.tls_reload_interval,
            drain: CancellationToken::new(),
            h2_max_streams: config.http2_max_streams_per_connection,
        })
    }

    /// Counters for the admin endpoint.
    pub fn stats(&self) -> Arc<FrontDoorStats> {
        self.shared.stats.clone()
    }

    /// Start polling the TLS files (serving pair, client CAs, front-proxy client pair);
    /// abort the handle to stop.
    pub fn spawn_cert_reloader(&self) -> tokio::task::JoinHandle<()> {
        tls::spawn_reloader(self.reload.clone(), self.reload_interval)
    }

    /// Accept connections from `listener` forever (spawns a task per connection).
    /// Returns only if accepting fails persistently.
    pub async fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        loop {
            match listener.accept().await {
                Ok((tcp, client)) => self.spawn_connection(tcp, client),
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning; the listener stays.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Serve one accepted connection in its own task (for listeners mvp does not own, e.g.
    /// the steered one).
    pub fn spawn_connection(&self, tcp: TcpStream, client: SocketAddr) {
        let this = self.clone();
        tokio::spawn(async move { this.serve_connection(tcp, client).await });
    }

    /// Serve one connection to completion.
    pub async fn serve_connection(&self, tcp: TcpStream, client: SocketAddr) {
        let client = crate::addr::canonical(client);
        if self.shared.dial.is_own(ClientAddr::new(client)) {
            self.shared
                .stats
                .refused_loop
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                %client,
                "refusing a connection from mvp's own upstream socket (loop guard; is the bypass map working?)"
            );
            return;
        }
        let _ = tcp.set_nodelay(true);
        set_keepalive(&tcp);
        let acceptor = tokio_rustls::TlsAcceptor::from(self.shared.tls.clone());
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!(%client, %error, "TLS handshake failed");
                self.shared
                    .stats
                    .handshake_failed
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                tracing::debug!(%client, "TLS handshake timed out");
                self.shared
                    .stats
                    .handshake_failed
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        self.shared
            .stats
            .connections
            .fetch_add(1, Ordering::Relaxed);
        let peer = self
            .shared
            .judge
            .judge(tls.get_ref().1.peer_certificates(), UnixTime::now());
        if !peer.rejected_because.is_empty() {
            tracing::debug!(%client, why = ?peer.rejected_because, "client certificate authenticates nothing");
        }
        let conn = Arc::new(ConnInfo {
            client,
            peer,
            upstreams: ConnectionAffinity::default(),
        });
        let shared = self.shared.clone();
        let service = service_fn(move |req| {
            let shared = shared.clone();
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(shared.handle(&conn, req).await) }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES)
            .max_headers(MAX_HEADERS);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.h2_max_streams)
            .max_header_list_size(MAX_HEADER_BYTES as u32);
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = self.drain.cancelled() => {
                // HTTP/1.1: close after the current response; h2: GOAWAY, finish open streams.
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(%client, %error, "connection ended with an error");
        }
    }

    /// Start draining: idle keep-alive connections close now, HTTP/1.1 connections after
    /// their current response, h2 connections get GOAWAY and finish their open streams.
    /// Call after the listener left the SOCKMAP (new connections fail open to the
    /// apiserver); long watches end at the caller's drain deadline and clients re-watch.
    pub fn begin_drain(&self) {
        self.drain.cancel();
    }
}

/// kube-apiserver's listener enables TCP keep-alive with a 3 minute period (Go's
/// `tcpKeepAliveListener`): a client that vanished mid-watch is noticed and its streams end.
fn set_keepalive(tcp: &TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    const PERIOD_SECS: u32 = 180;
    let result = setsockopt(tcp, sockopt::KeepAlive, &true)
        .and_then(|()| setsockopt(tcp, sockopt::TcpKeepIdle, &PERIOD_SECS))
        .and_then(|()| setsockopt(tcp, sockopt::TcpKeepInterval, &PERIOD_SECS));
    if let Err(error) = result {
        tracing::debug!(%error, "cannot enable TCP keep-alive on a client connection");
    }
}

/// The client's authority: `:authority`/absolute URI, else `Host`.
fn client_authority(req: &Request<Incoming>) -> Result<Option<Authority>, ProxyError> {
    if let Some(authority) = req.uri().authority() {
        return Ok(Some(authority.clone()));
    }
    match req.headers().get(header::HOST) {
        None => Ok(None),
        Some(host) => Authority::try_from(host.as_bytes())
            .map(Some)
            .map_err(|_| ProxyError::BadRequest("malformed Host header".into())),
    }
}

/// Bytes of the request head as Go counts them against `MaxHeaderBytes` (request line and
/// `name: value\r\n` per field). hyper's buffer limit is only checked while a head is
/// incomplete, so a head that arrives in one read could exceed it; this check is exact.
fn head_bytes(req: &Request<Incoming>) -> usize {
    let line = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + 12;
    req.headers().iter().fold(line, |n, (name, value)| {
        n + name.as_str().len() + value.len() + 4
    })
}

impl Shared {
    async fn handle(&self, conn: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
        if head_bytes(&req) > MAX_HEADER_BYTES {
            // Per request: debug only (counted in mvp_frontdoor_answered_requests_total).
            tracing::debug!(client = %conn.client, "request headers over 1 MiB: 431");
            self.stats.answered(431);
            let close = req.version() <= http::Version::HTTP_11;
            return crate::status::header_fields_too_large(close).map(Either::Right);
        }
        let method = req.method().clone();
        let uri = req.uri().clone();
        let pretty = crate::status::wants_pretty(req.headers(), uri.query());
        match self.forward(conn, req).await {
            Ok(response) => response,
            Err(error) => {
                let status = error.to_status();
                self.stats.answered(status.code.as_u16());
                // Per request, so debug: an apiserver restart must not flood the log; the
                // answered-requests counters and `mvp status` show the rate.
                tracing::debug!(
                    client = %conn.client,
                    %method,
                    path = uri.path(),
                    side = ?error.side(),
                    retryable = error.retryable(),
                    code = status.code.as_u16(),
                    %error,
                    "request not forwarded"
                );
                status.into_response_for(pretty).map(Either::Right)
            }
        }
    }

    async fn forward(
        &self,
        conn: &ConnInfo,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, ProxyError> {
        let identity = identity::authenticate(&conn.peer, req.headers(), &self.names)?;
        let authority = client_authority(&req)?;
        let upgrade =
            req.version() <= http::Version::HTTP_11 && proxy::headers::is_upgrade(req.headers());
        let headers = req.headers_mut();
        proxy::headers::remove_hop_by_hop(headers, upgrade);
        identity::apply(&identity, conn.peer.x509.as_ref(), headers, &self.names)?;
        proxy::headers::append_forwarded_for(headers, conn.client.ip().to_canonical());
        if !matches!(identity, CallerIdentity::FrontProxy { .. }) {
            // Only a verified front proxy (a peer's mvp or apiserver) may say "already
            // forwarded once"; from anyone else the marker is dropped and ignored.
            req.headers_mut().remove(PEER_PROXIED);
        }
        let (plan, mut answer) = match self.route.route(&req, &identity) {
            Routed::Forward(plan) => (plan, None),
            Routed::Respond(status) => return Err(ProxyError::Answered(status)),
            Routed::Answer { probe, response } => {
                // The probe asks for the cheapest form of the same document (legacy JSON,
                // no If-None-Match): only its status matters.
                let headers = req.headers_mut();
                headers.remove(header::IF_NONE_MATCH);
                headers.insert(
                    header::ACCEPT,
                    http::HeaderValue::from_static("application/json"),
                );
                (probe, Some(response))
            }
            Routed::Reply(response) => {
                self.stats.answered(response.status().as_u16());
                return Ok(response.map(Either::Right));
            }
        };
        self.stats.forwarded(&identity);
        let mut last_error = None;
        let caller_marked = req.headers().contains_key(PEER_PROXIED);
        for upstream in &plan.targets {
            if matches!(upstream.kind(), TargetKind::Peer(_)) {
                req.headers_mut()
                    .insert(PEER_PROXIED, http::HeaderValue::from_static("true"));
            } else if !caller_marked {
                // After a peer attempt: the local apiserver gets the request as sent.
                req.headers_mut().remove(PEER_PROXIED);
            }
            tracing::debug!(
                client = %conn.client,
                caller = identity.kind(),
                upstream = ?upstream.kind(),
                method = %req.method(),
                path = %req.uri().path(),
                upgrade,
                "forwarding"
            );
            let result = if upgrade {
                upstream.forward_upgrade(req, &identity).await
            } else {
                let authority = match &authority {
                    Some(authority) => authority.clone(),
                    None => Authority::try_from(upstream.addr().to_string())
                        .map_err(|e| ProxyError::BadRequest(e.to_string()))?,
                };
                upstream
                    .send(req, &identity, authority, &conn.upstreams)
                    .await
            };
            match result {
                Ok(response) => {
                    let status = response.status();
                    self.route
                        .outcome(&plan, upstream, Outcome::Responded(status));
                    if let Some(answer) = answer.take()
                        && (status.is_success() || status == http::StatusCode::NOT_MODIFIED)
                    {
                        // Authorized: read the probe's (small) answer to keep the upstream
                        // connection reusable, then send ours.
                        let _ =
                            http_body_util::Limited::new(response.into_body(), PROBE_BODY_LIMIT)
                                .collect()
                                .await;
                        self.stats.answered(answer.status().as_u16());
                        return Ok(answer.map(Either::Right));
                    }
                    return Ok(response.map(Either::Left));
                }
                Err(NotSent { error, request }) => {
                    let outcome = match &error {
                        ProxyError::UpstreamUnavailable { .. } => Outcome::Unreachable,
                        _ => Outcome::Failed,
                    };
                    self.route.outcome(&plan, upstream, outcome);
                    match request {
                        Some(request) if error.retryable() => {
                            tracing::debug!(upstream = ?upstream.kind(), %error, "upstream unreachable; trying the next one");
                            req = request;
                            last_error = Some(error);
                        }
                        _ => return Err(error),
                    }
                }
            }
        }
        Err(match (plan.exhausted, last_error) {
            (Some(status), _) => ProxyError::Answered(status),
            (None, Some(error)) => error,
            (None, None) => {
                ProxyError::Answered(Status::service_unavailable("no upstream to forward to", 1))
            }
        })
    }
}

/// How much of an authorization probe's answer is read before it is dropped.
const PROBE_BODY_LIMIT: usize = 4 << 20;

/// The loop-prevention marker (upstream's name): a request carrying it from a verified front
/// proxy is served by the local apiserver, never forwarded again.
pub const PEER_PROXIED: http::HeaderName =
    http::HeaderName::from_static("x-kubernetes-peer-proxied");

/// Re-exported for routers: the identity a request was authenticated as.
pub type Caller = CallerIdentity;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn client_connections_get_the_apiservers_tcp_keepalive() {
        use nix::sys::socket::{getsockopt, sockopt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(!getsockopt(&accepted, sockopt::KeepAlive).unwrap());
        set_keepalive(&accepted);
        assert!(getsockopt(&accepted, sockopt::KeepAlive).unwrap());
        assert_eq!(getsockopt(&accepted, sockopt::TcpKeepIdle).unwrap(), 180);
        assert_eq!(
            getsockopt(&accepted, sockopt::TcpKeepInterval).unwrap(),
            180
        );
    }
}
