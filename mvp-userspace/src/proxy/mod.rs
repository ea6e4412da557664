//! Forwarding: one [`Upstream`] per target (today the local apiserver; later also peers),
//! each with two kinds of connection — without a client certificate (bearer-token and
//! anonymous callers) and with mvp's front-proxy certificate (x509 and front-proxy callers)
//! — so an anonymous request never arrives with a front-proxy cert and no user.
//!
//! Upstream connections follow downstream connections ([`ConnectionAffinity`]): each client
//! connection gets its own upstream connection(s), reused for its requests and closed with
//! it. The apiserver thus sees the same connections and stream concurrency it would see
//! without mvp — in particular one shared h2 connection can never hit the apiserver's
//! per-connection stream limit (100 by default) and stall new requests behind long watches.
//!
//! Bodies are streamed both ways (hyper `Incoming` handed straight through; backpressure is
//! hyper's), nothing is buffered, and no timeout applies to a request once it is forwarded, so
//! watches, `logs -f` and exec streams live as long as both ends want. HTTP/1.1 upgrades
//! (SPDY/3.1, WebSocket) go over a dedicated HTTP/1.1 connection carrying the caller's identity;
//! after `101` the two upgraded streams are spliced.
pub mod connector;
pub mod headers;

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

pub use connector::{ConnectError, Dial, TlsConnector};

use crate::identity::CallerIdentity;
use crate::status::Status;
use crate::tls::UpstreamTls;

/// Where a forwarded request goes. Today only the local apiserver; a router will add peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// The apiserver on this node (over loopback by default).
    Local,
    /// Another control-plane node's apiserver (or its mvp), by name.
    Peer(String),
}

/// One upstream apiserver: how to connect to it, with and without the front-proxy cert.
pub struct Upstream {
    kind: TargetKind,
    addr: SocketAddr,
    /// The last pooled connection negotiated h2 (kube-apiserver always offers it).
    speaks_h2: Arc<AtomicBool>,
    plain: TlsConnector,
    front_proxy: Option<TlsConnector>,
    plain_upgrade: TlsConnector,
    front_proxy_upgrade: Option<TlsConnector>,
}

/// A pooled HTTP client over one [`TlsConnector`] (h2 or HTTP/1.1 by ALPN).
type PooledClient = Client<TlsConnector, ReplayBody>;

/// The client's body, handed to the pool through a shared slot: the pool takes it out on its
/// first poll, which happens only once a connection carries the request. If connecting fails
/// the slot still holds the body, and the request can go to another upstream
/// ([`Upstream::send`]).
pub struct ReplayBody {
    state: ReplayState,
}

enum ReplayState {
    Waiting(Arc<parking_lot::Mutex<Option<Incoming>>>),
    Taken(Incoming),
    Done,
}

impl ReplayBody {
    fn new(slot: Arc<parking_lot::Mutex<Option<Incoming>>>) -> Self {
        ReplayBody {
            state: ReplayState::Waiting(slot),
        }
    }
}

impl http_body::Body for ReplayBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let ReplayState::Waiting(slot) = &this.state {
            let body = slot.lock().take();
            this.state = match body {
                Some(body) => ReplayState::Taken(body),
                None => ReplayState::Done,
            };
        }
        match &mut this.state {
            ReplayState::Taken(body) => std::pin::Pin::new(body).poll_frame(cx),
            _ => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            ReplayState::Waiting(slot) => slot
                .lock()
                .as_ref()
                .is_none_or(http_body::Body::is_end_stream),
            ReplayState::Taken(body) => body.is_end_stream(),
            ReplayState::Done => true,
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.state {
            ReplayState::Waiting(slot) => slot.lock().as_ref().map_or_else(
                || http_body::SizeHint::with_exact(0),
                http_body::Body::size_hint,
            ),
            ReplayState::Taken(body) => body.size_hint(),
            ReplayState::Done => http_body::SizeHint::with_exact(0),
        }
    }
}

/// A request that failed before any of it reached the upstream: `request` is it, intact, when
/// it can go elsewhere (the upstream could not be reached).
#[derive(Debug)]
pub struct NotSent {
    /// Why.
    pub error: ProxyError,
    /// The untouched request, when nothing of it was sent.
    pub request: Option<Request<Incoming>>,
}

impl From<ProxyError> for NotSent {
    fn from(error: ProxyError) -> Self {
        NotSent {
            error,
            request: None,
        }
    }
}

/// The upstream connections of one downstream connection, by (upstream, front-proxy cert,
/// h2-only). An h2 client connection to an upstream known to speak h2 gets an h2-only
/// client: its first burst of concurrent requests (kubectl's discovery fan-out) then shares
/// one upstream connection instead of racing one TLS handshake per request.
/// Created per accepted connection, dropped with it (closing its idle upstream connections).
#[derive(Default)]
pub struct ConnectionAffinity {
    clients: parking_lot::Mutex<Vec<(SocketAddr, bool, bool, PooledClient)>>,
}

impl std::fmt::Debug for ConnectionAffinity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionAffinity")
            .field("clients", &self.clients.lock().len())
            .finish()
    }
}

impl ConnectionAffinity {
    /// The client for `upstream` with or without the front-proxy cert (made on first use).
    fn client(
        &self,
        upstream: &Upstream,
        front_proxy: bool,
        downstream_h2: bool,
    ) -> Result<PooledClient, ProxyError> {
        let h2_only = downstream_h2 && upstream.speaks_h2.load(Ordering::Relaxed);
        let mut clients = self.clients.lock();
        if let Some((_, _, _, client)) = clients.iter().find(|(addr, fp, h2, _)| {
            *addr == upstream.addr && *fp == front_proxy && *h2 == h2_only
        }) {
            return Ok(client.clone());
        }
        let connector = if front_proxy {
            upstream
                .front_proxy
                .clone()
                .ok_or(ProxyError::NoFrontProxyCert)?
        } else {
            upstream.plain.clone()
        };
        let client = pooled_client(connector, h2_only);
        clients.push((upstream.addr, front_proxy, h2_only, client.clone()));
        Ok(client)
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("kind", &self.kind)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Where a forwarding failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something mvp cannot forward.
    Downstream,
    /// The upstream apiserver failed.
    Upstream,
    /// mvp itself (configuration).
    Internal,
}

/// A request mvp could not forward; each becomes a Kubernetes `Status` response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream could not be reached; nothing was sent.
    #[error("upstream {target:?} unavailable: {source}")]
    UpstreamUnavailable {
        /// Which upstream.
        target: TargetKind,
        /// Why.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The upstream connection broke after the request was (maybe partly) sent.
    #[error("upstream {target:?} failed mid-request: {source}")]
    UpstreamFailed {
        /// Which upstream.
        target: TargetKind,
        /// Why.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The request cannot be forwarded as it is (bad authority, …).
    #[error("malformed request: {0}")]
    BadRequest(String),
    /// Authentication said no (see [`crate::identity::AuthError`]).
    #[error(transparent)]
    Auth(#[from] crate::identity::AuthError),
    /// The router answered the request itself (e.g. 503: no reachable server serves it).
    #[error("{}", .0.message)]
    Answered(Status),
    /// An x509/front-proxy caller arrived but mvp has no front-proxy client certificate.
    #[error(
        "no front-proxy client certificate configured; set --proxy-client-cert-file and --proxy-client-key-file"
    )]
    NoFrontProxyCert,
}

impl ProxyError {
    /// Where the failure came from.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::UpstreamUnavailable { .. } | ProxyError::UpstreamFailed { .. } => {
                Side::Upstream
            }
            ProxyError::BadRequest(_) | ProxyError::Auth(_) => Side::Downstream,
            ProxyError::NoFrontProxyCert => Side::Internal,
            ProxyError::Answered(_) => Side::Upstream,
        }
    }

    /// Whether the client (or a router choosing another upstream) may retry the request.
    pub fn retryable(&self) -> bool {
        matches!(self, ProxyError::UpstreamUnavailable { .. })
    }

    /// The response the client gets.
    pub fn to_status(&self) -> Status {
        use crate::identity::AuthError;
        match self {
            ProxyError::UpstreamUnavailable { .. } => Status::service_unavailable(
                "the Kubernetes API server is unavailable through mvp; retry later",
                1,
            ),
            ProxyError::UpstreamFailed { .. } => {
                Status::bad_gateway("the Kubernetes API server connection failed mid-request")
            }
            ProxyError::BadRequest(message) => Status::bad_request(message.clone()),
            ProxyError::Answered(status) => status.clone(),
            ProxyError::Auth(AuthError::ClientCertRejected(_)) => Status::unauthorized(),
            ProxyError::Auth(AuthError::UnforwardableSubject(_)) => {
                Status::bad_request("client certificate subject cannot be forwarded")
            }
            ProxyError::NoFrontProxyCert => Status::service_unavailable(
                "mvp cannot forward client-certificate identities (no front-proxy client certificate configured)",
                10,
            ),
        }
    }
}

fn pooled_client(connector: TlsConnector, h2_only: bool) -> PooledClient {
    Client::builder(TokioExecutor::new())
        .http2_only(h2_only)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_max_header_list_size(1 << 20)
        .http1_max_headers(crate::frontdoor::MAX_HEADERS)
        .build(connector)
}

impl Upstream {
    /// An upstream at `addr` reached through `dial`, with the TLS configs of `tls`.
    pub fn new(kind: TargetKind, addr: SocketAddr, tls: &UpstreamTls, dial: Arc<dyn Dial>) -> Self {
        let speaks_h2 = Arc::new(AtomicBool::new(false));
        let connector = |config: &Arc<rustls::ClientConfig>, record: bool| {
            TlsConnector::new(
                addr,
                dial.clone(),
                config.clone(),
                tls.server_name.clone(),
                record.then(|| speaks_h2.clone()),
            )
        };
        Upstream {
            kind,
            addr,
            plain: connector(&tls.plain, true),
            front_proxy: tls.front_proxy.as_ref().map(|c| connector(c, true)),
            plain_upgrade: connector(&tls.plain_upgrade, false),
            front_proxy_upgrade: tls
                .front_proxy_upgrade
                .as_ref()
                .map(|c| connector(c, false)),
            speaks_h2: speaks_h2.clone(),
        }
    }

    /// Which target this is.
    pub fn kind(&self) -> &TargetKind {
        &self.kind
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forward a request whose headers already carry the caller's identity (see
    /// [`crate::identity::apply`]) and are free of hop-by-hop fields. `authority` is the
    /// client's authority, kept as Host/`:authority`. `affinity` holds the downstream
    /// connection's upstream connections. HTTP/1.1 upgrades go to [`Upstream::forward_upgrade`].
    /// When the upstream cannot be reached the request comes back in [`NotSent`].
    pub async fn send(
        &self,
        req: Request<Incoming>,
        identity: &CallerIdentity,
        authority: Authority,
        affinity: &ConnectionAffinity,
    ) -> Result<Response<Incoming>, NotSent> {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let downstream_h2 = req.version() == Version::HTTP_2;
        let client = affinity.client(self, identity.needs_front_proxy_cert(), downstream_h2)?;
        let uri = Uri::builder()
            .scheme(Scheme::HTTPS)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
        let (parts, body) = req.into_parts();
        let slot = Arc::new(parking_lot::Mutex::new(Some(body)));
        let mut sent = Request::new(ReplayBody::new(slot.clone()));
        *sent.method_mut() = parts.method.clone();
        *sent.uri_mut() = uri;
        // The pool speaks whatever ALPN gave it; HTTP/1.1 here means "any".
        *sent.version_mut() = Version::HTTP_11;
        *sent.headers_mut() = parts.headers.clone();
        match client.request(sent).await {
            Ok(mut response) => {
                headers::remove_hop_by_hop(response.headers_mut(), false);
                Ok(response)
            }
            Err(error) if error.is_connect() => {
                let request = slot
                    .lock()
                    .take()
                    .map(|body| Request::from_parts(parts, body));
                Err(NotSent {
                    error: ProxyError::UpstreamUnavailable {
                        target: self.kind.clone(),
                        source: Box::new(error),
                    },
                    request,
                })
            }
            Err(error) => Err(ProxyError::UpstreamFailed {
                target: self.kind.clone(),
                source: Box::new(error),
            }
            .into()),
        }
    }

    /// [`Upstream::send`] without the way back (the request is consumed).
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        identity: &CallerIdentity,
        authority: Authority,
        affinity: &ConnectionAffinity,
    ) -> Result<Response<Incoming>, ProxyError> {
        self.send(req, identity, authority, affinity)
            .await
            .map_err(|not_sent| not_sent.error)
    }

    /// Forward an HTTP/1.1 upgrade request over its own HTTP/1.1 connection; on `101`, splice
    /// the client's upgraded stream with the upstream's. When the upstream cannot be reached
    /// the request comes back in [`NotSent`].
    pub async fn forward_upgrade(
        &self,
        mut req: Request<Incoming>,
        identity: &CallerIdentity,
    ) -> Result<Response<Incoming>, NotSent> {
        let connector = if identity.needs_front_proxy_cert() {
            self.front_proxy_upgrade
                .as_ref()
                .ok_or(ProxyError::NoFrontProxyCert)?
        } else {
            &self.plain_upgrade
        };
        let unavailable =
            |source: Box<dyn StdError + Send + Sync>| ProxyError::UpstreamUnavailable {
                target: self.kind.clone(),
                source,
            };
        let io = match connector.connect().await {
            Ok(io) => io,
            Err(e) => {
                return Err(NotSent {
                    error: unavailable(Box::new(e)),
                    request: Some(req),
                });
            }
        };
        let downstream = hyper::upgrade::on(&mut req);
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_headers(crate::frontdoor::MAX_HEADERS)
            .handshake::<_, Incoming>(io)
            .await
            .map_err(|e| unavailable(Box::new(e)))?;
        let target = self.kind.clone();
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(?target, %error, "upstream upgrade connection ended");
            }
        });
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(path);
        *req.version_mut() = Version::HTTP_11;
        let mut response =
            sender
                .send_request(req)
                .await
                .map_err(|error| ProxyError::UpstreamFailed {
                    target: self.kind.clone(),
                    source: Box::new(error),
                })?;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let upstream = hyper::upgrade::on(&mut response);
            let target = self.kind.clone();
            tokio::spawn(async move {
                match tokio::try_join!(downstream, upstream) {
                    Ok((down, up)) => {
                        let mut down = TokioIo::new(down);
                        let mut up = TokioIo::new(up);
                        match tokio::io::copy_bidirectional(&mut down, &mut up).await {
                            Ok((to_up, to_down)) => {
                                tracing::debug!(?target, to_up, to_down, "upgraded stream closed")
                            }
                            Err(error) => {
                                tracing::debug!(?target, %error, "upgraded stream ended")
                            }
                        }
                    }
                    Err(error) => tracing::debug!(?target, %error, "upgrade did not complete"),
                }
            });
        } else {
            headers::remove_hop_by_hop(response.headers_mut(), false);
        }
        Ok(response)
    }
}

/// Where one request goes, as a router decided it.
#[derive(Debug)]
pub enum Routed {
    /// Try these upstreams in order; the next one only when the previous one could not be
    /// reached and nothing of the request was sent.
    Forward(Plan),
    /// Answer with this `Status` without forwarding.
    Respond(Status),
    /// mvp answers with `response` (merged discovery, the merged OpenAPI index) — but only
    /// once a target of `probe` (the local apiserver first) accepted the same request from the
    /// same caller with a 2xx or 304: authentication and authorization stay the apiserver's.
    /// Any other answer (401, 403, …) reaches the client as the apiserver sent it.
    Answer {
        probe: Plan,
        response: Response<http_body_util::Full<bytes::Bytes>>,
    },
    /// Answer with this response without forwarding. Nobody authorized the caller for it:
    /// merged discovery uses [`Routed::Answer`] instead (the apiserver authorizes first).
    Reply(Response<http_body_util::Full<bytes::Bytes>>),
}

/// Upstreams to try for one request.
#[derive(Debug)]
pub struct Plan {
    /// In order; never empty.
    pub targets: Vec<Arc<Upstream>>,
    /// The answer when every target was unreachable (`None`: the last target's error).
    pub exhausted: Option<Status>,
    /// (group, version, resource) of a resource request, for the router's metrics.
    pub resource: Option<(String, String, String)>,
}

impl Plan {
    /// Just `upstream`.
    pub fn one(upstream: Arc<Upstream>) -> Self {
        Plan {
            targets: vec![upstream],
            exhausted: None,
            resource: None,
        }
    }
}

/// What happened when a request was handed to one target of a [`Plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this code.
    Responded(StatusCode),
    /// It could not be reached (connect or TLS failed); nothing was sent.
    Unreachable,
    /// The connection broke after the request was (maybe partly) sent.
    Failed,
}

/// Chooses the upstream(s) for each request. The front door asks it once per request, after
/// authentication and header hygiene, and reports each attempt's [`Outcome`].
pub trait Route: Send + Sync + 'static {
    /// Where `req` from `identity` goes.
    fn route(&self, req: &Request<Incoming>, identity: &CallerIdentity) -> Routed;

    /// One attempt of `plan` on `target` ended with `outcome` (health, metrics).
    fn outcome(&self, _plan: &Plan, _target: &Upstream, _outcome: Outcome) {}
}

/// Everything goes to one upstream (the local apiserver).
#[derive(Debug, Clone)]
pub struct LocalOnly(pub Arc<Upstream>);

impl Route for LocalOnly {
    fn route(&self, _req: &Request<Incoming>, _identity: &CallerIdentity) -> Routed {
        Routed::Forward(Plan::one(self.0.clone()))
    }
}
