//! One server's discovery over one TLS connection: `/version`, then `/api` and `/apis` with
//! the server-view Accept and `If-None-Match`; a server without aggregated discovery is
//! walked the legacy way (`/api/<v>`, `/apis/<g>/<v>`).
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};

use crate::discovery::legacy::aggregated_from_legacy;
use crate::discovery::model::{
    APIGroup, APIGroupDiscoveryList, APIGroupList, APIResourceList, APIVersions, DocumentError,
    GroupVersionForDiscovery, parse_aggregated, parse_legacy,
};
use crate::proxy::{ConnectError, Dial, TlsConnector};

/// What mvp asks every server for: its own view (`profile=nopeer`: a 1.35+ server must not
/// answer with its peer-aggregated document), then plain v2 (older servers ignore `profile`
/// anyway), then v2beta1 (1.26–1.29), then legacy JSON.
pub const SERVER_VIEW_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

/// The identity mvp's own requests (discovery, peer set) carry, asserted with the front-proxy
/// client certificate. A distinct user so the apiservers' audit logs tell mvp's polling
/// apart from the callers it forwards; `system:authenticated` is the group every
/// authenticated user has, which is all discovery needs (the `system:discovery` and
/// `system:public-info-viewer` bindings). Reading the `kubernetes` EndpointSlices needs a
/// binding for this user (`mvp doctor` prints it); without one mvp uses `--peer` only.
pub const MVP_USER: &str = "system:kube-mvp";
/// See [`MVP_USER`].
pub const MVP_GROUP: &str = "system:authenticated";

/// How long one request of a sync may take (a hung peer must not stall the others' polling).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed fetch. The last good view is kept; the next poll retries.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// TCP or TLS failed: the server is unreachable (or not who it claims).
    #[error("{0} (check --peer-ca-file / --peer-server-name, and that the address is right)")]
    Connect(#[from] ConnectError),
    /// The HTTP exchange failed.
    #[error("GET {path}: {source}")]
    Http {
        /// Which path.
        path: String,
        /// Why.
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("GET {path}: no answer within {FETCH_TIMEOUT:?}")]
    Timeout {
        /// Which path.
        path: String,
    },
    /// A status other than 200/304.
    #[error(
        "GET {path}: HTTP {code} (401/403: the apiserver must trust mvp's front-proxy cert and allow user {MVP_USER})"
    )]
    Status {
        /// Which path.
        path: String,
        /// The code.
        code: u16,
    },
    /// A body that is not the discovery document it should be.
    #[error("GET {path}: {source}")]
    Decode {
        /// Which path.
        path: String,
        /// Why.
        source: DocumentError,
    },
}

impl FetchError {
    /// The `type` label of `mvp_discovery_sync_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Connect(_) => "connect",
            FetchError::Http { .. } => "http",
            FetchError::Timeout { .. } => "timeout",
            FetchError::Status { .. } => "status",
            FetchError::Decode { .. } => "decode",
        }
    }

    /// Whether the server cannot serve requests now (as opposed to answering badly): not
    /// reachable, or a gateway in front of it — the peer's own mvp, whose apiserver is down —
    /// answering 502/503/504.
    pub fn unreachable(&self) -> bool {
        matches!(
            self,
            FetchError::Connect(_)
                | FetchError::Timeout { .. }
                | FetchError::Http { .. }
                | FetchError::Status {
                    code: 502..=504,
                    ..
                }
        )
    }

    /// Every fetch error is retried at the next poll.
    pub fn retryable(&self) -> bool {
        true
    }
}

/// A 200 or a 304.
#[derive(Debug, Clone)]
pub enum Fetched {
    NotModified,
    Body { body: Bytes, etag: Option<String> },
}

/// One TLS + HTTP/1.1 connection to one server, with mvp's identity on every request.
pub struct Session {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    identity: Vec<(HeaderName, HeaderValue)>,
}

/// How to reach one server.
#[derive(Clone)]
pub struct ServerClient {
    pub addr: SocketAddr,
    pub connector: TlsConnector,
    /// Header name/value pairs carrying [`MVP_USER`]/[`MVP_GROUP`] (empty without a
    /// front-proxy cert).
    pub identity: Vec<(HeaderName, HeaderValue)>,
}

impl ServerClient {
    /// A client for `addr` with `config` (HTTP/1.1 ALPN) as `server_name`.
    pub fn new(
        addr: SocketAddr,
        dial: Arc<dyn Dial>,
        config: Arc<rustls::ClientConfig>,
        server_name: rustls_pki_types::ServerName<'static>,
        identity: Vec<(HeaderName, HeaderValue)>,
    ) -> Self {
        ServerClient {
            addr,
            connector: TlsConnector::new(addr, dial, config, server_name, None),
            identity,
        }
    }

    /// Open a session.
    pub async fn connect(&self) -> Result<Session, FetchError> {
        let io = tokio::time::timeout(FETCH_TIMEOUT, self.connector.connect())
            .await
            .map_err(|_| FetchError::Timeout {
                path: "(connect)".into(),
            })??;
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|source| FetchError::Http {
                path: "(handshake)".into(),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "discovery connection ended");
            }
        });
        Ok(Session {
            sender,
            identity: self.identity.clone(),
        })
    }
}

impl Session {
    /// GET `path`; 200 → body, 304 → not modified, anything else an error.
    pub async fn get(
        &mut self,
        path: &str,
        accept: &str,
        if_none_match: Option<&str>,
    ) -> Result<Fetched, FetchError> {
        self.get_with(path, accept, if_none_match, false).await
    }

    /// GET `path` marked `x-kubernetes-peer-proxied: true` (as a verified front proxy): a
    /// server's mvp then answers with its own apiserver's document, never a merged one — for
    /// documents that have no `profile=nopeer` (the OpenAPI v3 index).
    pub async fn get_own(&mut self, path: &str, accept: &str) -> Result<Fetched, FetchError> {
        self.get_with(path, accept, None, true).await
    }

    async fn get_with(
        &mut self,
        path: &str,
        accept: &str,
        if_none_match: Option<&str>,
        peer_proxied: bool,
    ) -> Result<Fetched, FetchError> {
        let mut req = Request::get(path)
            .header(header::HOST, "kubernetes.default.svc")
            .header(header::ACCEPT, accept)
            .body(Empty::new())
            .map_err(|_| FetchError::Status {
                path: path.to_owned(),
                code: 0,
            })?;
        for (name, value) in &self.identity {
            req.headers_mut().append(name.clone(), value.clone());
        }
        if peer_proxied {
            req.headers_mut().insert(
                crate::frontdoor::PEER_PROXIED,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(tag) = if_none_match.and_then(|t| HeaderValue::from_str(t).ok()) {
            req.headers_mut().insert(header::IF_NONE_MATCH, tag);
        }
        let http = |source| FetchError::Http {
            path: path.to_owned(),
            source,
        };
        let exchange = async {
            self.sender.ready().await.map_err(http)?;
            let response = self.sender.send_request(req).await.map_err(http)?;
            let status = response.status();
            let etag = response
                .headers()
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response.into_body().collect().await.map_err(http)?;
            Ok::<_, FetchError>((status, etag, body.to_bytes()))
        };
        let (status, etag, body) = tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| FetchError::Timeout {
                path: path.to_owned(),
            })??;
        match status {
            StatusCode::OK => Ok(Fetched::Body { body, etag }),
            StatusCode::NOT_MODIFIED => Ok(Fetched::NotModified),
            code => Err(FetchError::Status {
                path: path.to_owned(),
                code: code.as_u16(),
            }),
        }
    }

    /// `gitVersion` from `/version`.
    pub async fn version(&mut self) -> Result<String, FetchError> {
        match self.get("/version", "application/json", None).await? {
            Fetched::Body { body, .. } => {
                let value: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| FetchError::Decode {
                        path: "/version".into(),
                        source: e.into(),
                    })?;
                Ok(value
                    .get("gitVersion")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned())
            }
            Fetched::NotModified => Ok(String::new()),
        }
    }

    /// The aggregated list for `/api` or `/apis`; a legacy answer is walked into one.
    pub async fn discovery(
        &mut self,
        root: &str,
        body: &[u8],
    ) -> Result<APIGroupDiscoveryList, FetchError> {
        let aggregated_error = match parse_aggregated(body) {
            Ok(list) => return Ok(list),
            Err(error) => error,
        };
        let decode = |path: &str| {
            let path = path.to_owned();
            move |source| FetchError::Decode { path, source }
        };
        let groups: Vec<APIGroup> = if root == "/api" {
            let versions: APIVersions = parse_legacy(body, "APIVersions")
                .map_err(|_| aggregated_error)
                .map_err(decode(root))?;
            vec![APIGroup {
                kind: None,
                api_version: None,
                name: String::new(),
                versions: versions
                    .versions
                    .iter()
                    .map(|v| GroupVersionForDiscovery {
                        group_version: v.clone(),
                        version: v.clone(),
                    })
                    .collect(),
                preferred_version: None,
                server_address_by_client_cidrs: Vec::new(),
                extra: Default::default(),
            }]
        } else {
            let list: APIGroupList = parse_legacy(body, "APIGroupList")
                .map_err(|_| aggregated_error)
                .map_err(decode(root))?;
            list.groups
        };
        let mut lists = Vec::new();
        for group in &groups {
            for version in &group.versions {
                let path = if group.name.is_empty() {
                    format!("/api/{}", version.version)
                } else {
                    format!("/apis/{}", version.group_version)
                };
                match self.get(&path, "application/json", None).await {
                    Ok(Fetched::Body { body, .. }) => {
                        let list: APIResourceList =
                            parse_legacy(&body, "APIResourceList").map_err(decode(&path))?;
                        lists.push(list);
                    }
                    // A group/version whose API is down (aggregated APIService): no resources.
                    Err(FetchError::Status { .. }) | Ok(Fetched::NotModified) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        aggregated_from_legacy(&groups, &lists).map_err(decode(root))
    }
}
