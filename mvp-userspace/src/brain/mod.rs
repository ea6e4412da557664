//! The brain's I/O half: the peer set, one discovery cache per server, the current
//! [`DiscoveryView`] (swapped whole when some server's document changed), server health, and
//! the [`Route`](crate::proxy::Route) that sends each request to the local apiserver or a peer.
//!
//! One task ([`BrainHandle::run`]) polls every `--discovery-interval` (1 s while a server is
//! down, at once when the local apiserver was found unreachable by a request):
//! 1. the local apiserver over loopback: `/version`, `/api`, `/apis` (server-view Accept,
//!    `If-None-Match`), then the `kubernetes` EndpointSlices (Endpoints as fallback);
//! 2. peer set = those addresses ∪ `--peer` − this node's addresses; new peers get an
//!    [`Upstream`], gone ones are dropped;
//! 3. every peer the same way, concurrently, over TLS verified against `--peer-ca-file` as
//!    `--peer-server-name`, as [`MVP_USER`] via mvp's front-proxy cert;
//! 4. if any document's bytes changed (or the peer set did), rebuild the view once.
//!
//! Each server's OpenAPI v3 index (`/openapi/v3`) is fetched in the same round; failing to
//! get it never fails the discovery sync (the last index is kept). The merged
//! [`OpenApiView`] is rebuilt with the discovery view.
//!
//! A failing server keeps its last good document; its age and errors are tracked
//! ([`BrainHandle::servers`]). Readers take an `Arc` of the view and never wait on the task.
pub mod fetch;
pub mod peers;
mod router;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

pub use fetch::{FetchError, MVP_GROUP, MVP_USER, SERVER_VIEW_ACCEPT};

use crate::discovery::exclusion::{DEFAULT_GRACE, ExclusionTracker};
use crate::discovery::model::{APIGroupDiscoveryList, AggregatedVersion};
use crate::discovery::negotiate::NegotiationPolicy;
use crate::discovery::openapi::{
    INDEX_ACCEPT, INDEX_PATH, OpenApiIndex, OpenApiView, ServerOpenApi, parse_index,
};
use crate::discovery::served::ExclusionSet;
use crate::discovery::view::{DiscoveryView, ServerDiscovery};
use crate::identity::RequestHeaderNames;
use crate::proxy::{Dial, TargetKind, Upstream};
use crate::tls::UpstreamTls;
use fetch::{Fetched, ServerClient, Session};

/// Flags of the brain (flatten into `mvp run`).
#[derive(Debug, Clone, clap::Args)]
pub struct BrainArgs {
    /// A peer apiserver (repeatable), in addition to the `kubernetes` EndpointSlices.
    #[arg(long = "peer", value_name = "ADDR:PORT")]
    pub peers: Vec<SocketAddr>,
    // --peer-ca-file is a detection flag (crate::detect::DetectArgs), shared with doctor.
    /// Name the peers' serving certs are verified for (upstream hard-wires it).
    #[arg(long, default_value = "kubernetes.default.svc")]
    pub peer_server_name: String,
    /// Seconds between discovery polls of every server (If-None-Match).
    #[arg(long, default_value_t = 5.0)]
    pub discovery_interval: f64,
    /// Seconds to wait for the first discovery sync before entering the traffic path anyway.
    #[arg(long, default_value_t = 30.0)]
    pub sync_deadline: f64,
    /// Do not read peers from the `kubernetes` EndpointSlices (use `--peer` only).
    #[arg(long)]
    pub no_endpoint_peers: bool,
}

impl BrainArgs {
    /// `--discovery-interval`.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.discovery_interval.max(0.05))
    }

    /// `--sync-deadline`.
    pub fn sync_deadline(&self) -> Duration {
        Duration::from_secs_f64(self.sync_deadline.max(0.0))
    }
}

/// Everything the brain needs, built by the wiring.
pub struct BrainConfig {
    /// The local apiserver (loopback).
    pub local: SocketAddr,
    /// `--peer`.
    pub static_peers: Vec<SocketAddr>,
    /// This node's apiserver IPs (the steered addresses): never a peer.
    pub own_ips: Vec<IpAddr>,
    /// Poll interval.
    pub interval: Duration,
    /// Read peers from the EndpointSlices.
    pub endpoint_peers: bool,
    /// TLS to the local apiserver.
    pub local_tls: UpstreamTls,
    /// TLS to peers.
    pub peer_tls: UpstreamTls,
    /// How upstream sockets are opened (bypassing steering).
    pub dial: Arc<dyn Dial>,
    /// The requestheader names the apiservers accept.
    pub names: RequestHeaderNames,
    /// Discovery negotiation.
    pub policy: NegotiationPolicy,
}

/// One server's state as the operator sees it (`mvp status`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServerStatus {
    /// `local` or the peer's `ip:port`.
    pub id: String,
    pub address: SocketAddr,
    pub local: bool,
    /// The last attempt reached it (and requests are sent to it).
    pub reachable: bool,
    /// `gitVersion` from `/version`.
    pub version: Option<String>,
    /// Seconds since its discovery was last confirmed (200 or 304); None: never.
    pub discovery_age_seconds: Option<u64>,
    /// Failed syncs so far.
    pub sync_errors: u64,
    pub last_error: Option<String>,
}

#[derive(Default)]
struct ServerState {
    address: Option<SocketAddr>,
    reachable: bool,
    version: Option<String>,
    last_ok: Option<Instant>,
    errors: u64,
    last_error: Option<String>,
    discovery: Option<ServerDiscovery>,
    etag_api: Option<String>,
    etag_apis: Option<String>,
    raw_api: Bytes,
    raw_apis: Bytes,
    /// `/openapi/v3` as last fetched (None: never fetched).
    openapi: Option<OpenApiIndex>,
    raw_openapi: Bytes,
}

struct Peer {
    upstream: Arc<Upstream>,
    client: ServerClient,
    up: bool,
}

#[derive(Default)]
struct Metrics {
    /// (code, group, version, resource, peer) → count.
    rerouted: BTreeMap<(u16, String, String, String, String), u64>,
    /// type → count.
    proxy_errors: BTreeMap<&'static str, u64>,
    /// (server, type) → count.
    sync_errors: BTreeMap<(String, &'static str), u64>,
}

/// Answers a request from the current view (merged discovery), or `None` to route it.
pub type DiscoveryResponder = Arc<
    dyn Fn(
            &DiscoveryView,
            &http::Request<hyper::body::Incoming>,
        ) -> Option<http::Response<http_body_util::Full<Bytes>>>
        + Send
        + Sync,
>;

struct Inner {
    responder: parking_lot::RwLock<Option<DiscoveryResponder>>,
    config: BrainConfig,
    local: Arc<Upstream>,
    local_client: ServerClient,
    peer_identity: Vec<(HeaderName, HeaderValue)>,
    view: watch::Sender<Arc<DiscoveryView>>,
    openapi: parking_lot::RwLock<Arc<OpenApiView>>,
    synced: watch::Sender<bool>,
    local_up: AtomicBool,
    peers: parking_lot::Mutex<BTreeMap<String, Peer>>,
    discovered: parking_lot::Mutex<BTreeSet<SocketAddr>>,
    /// Group/versions of CRDs and aggregated APIServices (active + recently deleted):
    /// every server serves them for itself, so they are never routed to peers.
    exclusions: parking_lot::Mutex<ExclusionTracker>,
    /// What the exclusions were last read from ([`read_exclusions`]).
    exclusions_seen: parking_lot::Mutex<Option<ExclusionFingerprint>>,
    servers: parking_lot::Mutex<BTreeMap<String, ServerState>>,
    metrics: parking_lot::Mutex<Metrics>,
    kick: Notify,
}

/// The brain: cheap to clone, shared by the sync task, the router and the admin endpoint.
#[derive(Clone)]
pub struct BrainHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BrainHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrainHandle").finish_non_exhaustive()
    }
}

/// The id of the local server in [`ServerStatus`] and metrics.
pub const LOCAL_ID: &str = "local";

fn identity_headers(
    names: &RequestHeaderNames,
    front_proxy: bool,
) -> Vec<(HeaderName, HeaderValue)> {
    if !front_proxy {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(user) = names.username.first() {
        out.push((user.clone(), HeaderValue::from_static(MVP_USER)));
    }
    if let Some(group) = names.group.first() {
        out.push((group.clone(), HeaderValue::from_static(MVP_GROUP)));
    }
    out
}

/// (name, resourceVersion) of every CRD and APIService: when it is unchanged, so are the
/// exclusions, and the full lists (CRDs carry their whole schemas) are not fetched again.
type ExclusionFingerprint = Vec<(String, String)>;

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const API_SERVICES: &str = "/apis/apiregistration.k8s.io/v1/apiservices";
/// Metadata only (falls back to full objects on a server without it).
const METADATA_LIST_ACCEPT: &str =
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";

/// The local apiserver's CRD and aggregated-APIService group/versions (upstream's GV
/// exclusion: peers' discovery snapshots may be stale for them, and every server serves
/// them itself). Each round reads only their metadata; the full lists are read when a CRD or
/// APIService was added, changed or removed since `seen`. `None` when nothing changed or a
/// list cannot be read (e.g. no RBAC for `system:kube-mvp`): the last known set is kept.
async fn read_exclusions(
    session: &mut Session,
    seen: &parking_lot::Mutex<Option<ExclusionFingerprint>>,
) -> Option<ExclusionSet> {
    let mut fingerprint = ExclusionFingerprint::new();
    for path in [CRDS, API_SERVICES] {
        let body = read_list(session, path, METADATA_LIST_ACCEPT).await?;
        let list: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!(path, %error, "CRD/APIService list unreadable; keeping the last exclusions");
                return None;
            }
        };
        fingerprint.push((path.to_owned(), String::new()));
        for item in list["items"].as_array().into_iter().flatten() {
            let meta = &item["metadata"];
            fingerprint.push((
                meta["name"].as_str().unwrap_or_default().to_owned(),
                meta["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ));
        }
    }
    if seen.lock().as_ref() == Some(&fingerprint) {
        return None;
    }
    let mut set = ExclusionSet::default();
    for path in [CRDS, API_SERVICES] {
        let body = read_list(session, path, "application/json").await?;
        let added = if path == CRDS {
            set.add_crds(&body)
        } else {
            set.add_api_services(&body)
        };
        if let Err(error) = added {
            tracing::warn!(path, %error, "CRD/APIService list unreadable; keeping the last exclusions");
            return None;
        }
    }
    *seen.lock() = Some(fingerprint);
    Some(set)
}

/// GET a list body; `None` (logged) when it cannot be read.
async fn read_list(session: &mut Session, path: &str, accept: &str) -> Option<Bytes> {
    match session.get(path, accept, None).await {
        Ok(Fetched::Body { body, .. }) => Some(body),
        Ok(Fetched::NotModified) => None,
        Err(error) => {
            tracing::debug!(path, %error, "CRD/APIService list not read; keeping the last exclusions");
            None
        }
    }
}

fn empty_view(policy: NegotiationPolicy) -> DiscoveryView {
    DiscoveryView::build(
        &ServerDiscovery {
            server_id: LOCAL_ID.into(),
            core: APIGroupDiscoveryList::new(AggregatedVersion::V2, Vec::new()),
            groups: APIGroupDiscoveryList::new(AggregatedVersion::V2, Vec::new()),
        },
        &[],
        &ExclusionSet::default(),
        Vec::new(),
        policy,
    )
    .expect("an empty view always encodes")
}

impl BrainHandle {
    /// A brain with an empty view; start [`BrainHandle::run`] to fill it.
    pub fn new(config: BrainConfig) -> Self {
        let local = Arc::new(Upstream::new(
            TargetKind::Local,
            config.local,
            &config.local_tls,
            config.dial.clone(),
        ));
        let (local_config, local_identity) = match &config.local_tls.front_proxy_upgrade {
            Some(c) => (c.clone(), identity_headers(&config.names, true)),
            None => (config.local_tls.plain_upgrade.clone(), Vec::new()),
        };
        let peer_identity = identity_headers(&config.names, config.peer_tls.front_proxy.is_some());
        let local_client = ServerClient::new(
            config.local,
            config.dial.clone(),
            local_config,
            config.local_tls.server_name.clone(),
            local_identity,
        );
        let (view, _) = watch::channel(Arc::new(empty_view(config.policy)));
        let (synced, _) = watch::channel(false);
        BrainHandle {
            inner: Arc::new(Inner {
                responder: Default::default(),
                config,
                local,
                local_client,
                peer_identity,
                view,
                openapi: Default::default(),
                synced,
                local_up: AtomicBool::new(true),
                peers: Default::default(),
                discovered: Default::default(),
                exclusions: parking_lot::Mutex::new(ExclusionTracker::new(DEFAULT_GRACE)),
                exclusions_seen: Default::default(),
                servers: Default::default(),
                metrics: Default::default(),
                kick: Notify::new(),
            }),
        }
    }

    /// The current view (merged discovery answers + routing table). Never blocks on the sync.
    pub fn view(&self) -> Arc<DiscoveryView> {
        self.inner.view.borrow().clone()
    }

    /// The merged OpenAPI v3 index and who publishes each document (rebuilt with the view).
    pub fn openapi(&self) -> Arc<OpenApiView> {
        self.inner.openapi.read().clone()
    }

    /// Serve non-resource requests (`/api`, `/apis`, …) with `responder` before routing:
    /// the seam for the merged-discovery server, called with the current view.
    pub fn set_discovery_responder(&self, responder: DiscoveryResponder) {
        *self.inner.responder.write() = Some(responder);
    }

    /// Notified on every new view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<DiscoveryView>> {
        self.inner.view.subscribe()
    }

    /// The TLS configs of the local upstream (the front door reloads their front-proxy pair).
    pub fn local_tls(&self) -> &UpstreamTls {
        &self.inner.config.local_tls
    }

    /// The peers' front-proxy pair when it is not the local one's (needs its own reloader).
    pub fn separate_peer_proxy_client(&self) -> Option<Arc<crate::tls::ReloadingKeyPair>> {
        let peer = self.inner.config.peer_tls.proxy_client.as_ref()?;
        match &self.inner.config.local_tls.proxy_client {
            Some(local) if Arc::ptr_eq(local, peer) => None,
            _ => Some(peer.clone()),
        }
    }

    /// The local apiserver's upstream.
    pub fn local_upstream(&self) -> Arc<Upstream> {
        self.inner.local.clone()
    }

    /// Per-server status: local first, then peers by address.
    pub fn servers(&self) -> Vec<ServerStatus> {
        let servers = self.inner.servers.lock();
        let peers = self.inner.peers.lock();
        let now = Instant::now();
        let mut out: Vec<ServerStatus> = servers
            .iter()
            .filter_map(|(id, s)| {
                let local = id == LOCAL_ID;
                Some(ServerStatus {
                    id: id.clone(),
                    address: s.address?,
                    local,
                    reachable: if local {
                        self.inner.local_up.load(Ordering::Relaxed)
                    } else {
                        peers.get(id).is_some_and(|p| p.up)
                    },
                    version: s.version.clone(),
                    discovery_age_seconds: s.last_ok.map(|t| now.duration_since(t).as_secs()),
                    sync_errors: s.errors,
                    last_error: s.last_error.clone(),
                })
            })
            .collect();
        out.sort_by_key(|s| (!s.local, s.id.clone()));
        out
    }

    /// Each server's served set (for `mvp status`'s skew), local first.
    pub fn served_sets(&self) -> Vec<(String, crate::discovery::served::ServedSet)> {
        let servers = self.inner.servers.lock();
        let mut out: Vec<_> = servers
            .iter()
            .filter_map(|(id, s)| {
                let d = s.discovery.as_ref()?;
                Some((
                    id.clone(),
                    crate::discovery::served::ServedSet::from_documents([&d.core, &d.groups]),
                ))
            })
            .collect();
        out.sort_by_key(|(id, _)| id != LOCAL_ID);
        out
    }

    /// Resolves once the local server's discovery was fetched and every peer known then was
    /// tried once (reachable ones fetched).
    pub async fn wait_synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Whether [`BrainHandle::wait_synced`] would resolve now.
    pub fn is_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    fn set_local_up(&self, up: bool) {
        let was = self.inner.local_up.swap(up, Ordering::Relaxed);
        if was != up {
            if up {
                tracing::info!("local apiserver reachable again");
            } else {
                tracing::warn!(
                    "local apiserver unreachable: resource requests go to peers that serve them"
                );
                self.inner.kick.notify_one();
            }
        }
    }

    fn set_peer_up(&self, id: &str, up: bool) {
        if let Some(peer) = self.inner.peers.lock().get_mut(id)
            && peer.up != up
        {
            peer.up = up;
            if up {
                tracing::info!(peer = id, "peer reachable again");
            } else {
                tracing::warn!(peer = id, "peer unreachable");
            }
        }
    }

    /// Poll until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            self.sync_once().await;
            let any_down = !self.inner.local_up.load(Ordering::Relaxed)
                || self.inner.peers.lock().values().any(|p| !p.up);
            let wait = if any_down {
                self.inner.config.interval.min(Duration::from_secs(1))
            } else {
                self.inner.config.interval
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.kick.notified() => {}
            }
        }
    }

    /// One round: local, peer set, peers; rebuild the view if anything changed.
    pub async fn sync_once(&self) {
        let (mut changed, local_ok, mut session) = self
            .sync_server(LOCAL_ID, self.inner.local_client.clone(), true)
            .await;
        if let Some(session) = session.as_mut()
            && let Some(active) = read_exclusions(session, &self.inner.exclusions_seen).await
        {
            changed |= self
                .inner
                .exclusions
                .lock()
                .set_active(active, Instant::now());
        }
        changed |= self.inner.exclusions.lock().reap(Instant::now());
        if let Some(mut session) = session
            && self.inner.config.endpoint_peers
        {
            match read_peer_set(&mut session).await {
                Ok(set) => *self.inner.discovered.lock() = set,
                Err(error) => {
                    tracing::debug!(%error, "peer set not refreshed; keeping the last one")
                }
            }
        }
        changed |= self.update_peers();
        let clients: Vec<(String, ServerClient)> = self
            .inner
            .peers
            .lock()
            .iter()
            .map(|(id, p)| (id.clone(), p.client.clone()))
            .collect();
        let results = futures_util::future::join_all(
            clients
                .into_iter()
                .map(|(id, client)| async move { self.sync_server(&id, client, false).await }),
        )
        .await;
        changed |= results.iter().any(|(c, _, _)| *c);
        if changed {
            self.rebuild();
        }
        if local_ok && !self.is_synced() {
            tracing::info!("first discovery sync done");
            self.inner.synced.send_replace(true);
        }
    }

    /// The peer set changed? Add/drop peers.
    fn update_peers(&self) -> bool {
        let wanted = peers::peer_set(
            &self.inner.discovered.lock(),
            &self.inner.config.static_peers,
            &self.inner.config.own_ips,
        );
        let mut peers = self.inner.peers.lock();
        let before = peers.len();
        peers.retain(|id, _| wanted.iter().any(|a| a.to_string() == *id));
        let mut changed = peers.len() != before;
        for addr in wanted {
            let id = addr.to_string();
            if peers.contains_key(&id) {
                continue;
            }
            changed = true;
            let tls = &self.inner.config.peer_tls;
            let config = tls
                .front_proxy_upgrade
                .clone()
                .unwrap_or_else(|| tls.plain_upgrade.clone());
            let client = ServerClient::new(
                addr,
                self.inner.config.dial.clone(),
                config,
                tls.server_name.clone(),
                self.inner.peer_identity.clone(),
            );
            let upstream = Arc::new(Upstream::new(
                TargetKind::Peer(id.clone()),
                addr,
                tls,
                self.inner.config.dial.clone(),
            ));
            tracing::info!(peer = %id, "peer added");
            peers.insert(
                id,
                Peer {
                    upstream,
                    client,
                    up: true,
                },
            );
        }
        let current: BTreeSet<String> = peers.keys().cloned().collect();
        // Lock order: never hold `peers` while taking `servers` (servers() takes them the
        // other way round).
        drop(peers);
        if changed {
            let mut servers = self.inner.servers.lock();
            servers.retain(|id, _| id == LOCAL_ID || current.contains(id));
        }
        changed
    }

    /// Fetch one server; returns (its documents changed, it answered, the open session for
    /// the local server).
    async fn sync_server(
        &self,
        id: &str,
        client: ServerClient,
        keep_session: bool,
    ) -> (bool, bool, Option<Session>) {
        let (etag_api, etag_apis, raw_api, raw_apis, raw_openapi) = {
            let servers = self.inner.servers.lock();
            match servers.get(id) {
                Some(s) if s.discovery.is_some() => (
                    s.etag_api.clone(),
                    s.etag_apis.clone(),
                    s.raw_api.clone(),
                    s.raw_apis.clone(),
                    s.raw_openapi.clone(),
                ),
                _ => (None, None, Bytes::new(), Bytes::new(), Bytes::new()),
            }
        };
        let result = async {
            let mut session = client.connect().await?;
            let version = session.version().await?;
            let api = session
                .get("/api", SERVER_VIEW_ACCEPT, etag_api.as_deref())
                .await?;
            let apis = session
                .get("/apis", SERVER_VIEW_ACCEPT, etag_apis.as_deref())
                .await?;
            let fresh = |fetched: &Fetched, raw: &Bytes| match fetched {
                Fetched::Body { body, .. } if body != raw => Some(body.clone()),
                _ => None,
            };
            let core = match fresh(&api, &raw_api) {
                Some(body) => Some((session.discovery("/api", &body).await?, body)),
                None => None,
            };
            let groups = match fresh(&apis, &raw_apis) {
                Some(body) => Some((session.discovery("/apis", &body).await?, body)),
                None => None,
            };
            let etag = |f: &Fetched| match f {
                Fetched::Body { etag, .. } => etag.clone(),
                Fetched::NotModified => None,
            };
            // OpenAPI is best effort: a server without it (or refusing mvp) keeps discovery.
            let openapi = match session.get_own(INDEX_PATH, INDEX_ACCEPT).await {
                Ok(Fetched::Body { body, .. }) if body != raw_openapi => match parse_index(&body) {
                    Ok(index) => Some((index, body)),
                    Err(error) => {
                        tracing::debug!(server = id, %error, "OpenAPI v3 index unreadable");
                        None
                    }
                },
                Ok(_) => None,
                Err(error) => {
                    tracing::debug!(server = id, %error, "OpenAPI v3 index not fetched");
                    None
                }
            };
            Ok::<_, FetchError>((
                session,
                version,
                core,
                groups,
                etag(&api),
                etag(&apis),
                openapi,
            ))
        }
        .await;
        let local = id == LOCAL_ID;
        match result {
            Ok((session, version, core, groups, etag_api, etag_apis, openapi)) => {
                let changed = core.is_some() || groups.is_some() || openapi.is_some();
                {
                    let mut servers = self.inner.servers.lock();
                    let state = servers.entry(id.to_owned()).or_default();
                    state.address = Some(client.addr);
                    state.version = Some(version);
                    state.last_ok = Some(Instant::now());
                    state.reachable = true;
                    state.last_error = None;
                    let discovery = state.discovery.get_or_insert_with(|| ServerDiscovery {
                        server_id: id.to_owned(),
                        ..Default::default()
                    });
                    if let Some((doc, body)) = core {
                        discovery.core = doc;
                        state.raw_api = body;
                        state.etag_api = etag_api;
                    }
                    if let Some((doc, body)) = groups {
                        discovery.groups = doc;
                        state.raw_apis = body;
                        state.etag_apis = etag_apis;
                    }
                    if let Some((index, body)) = openapi {
                        state.openapi = Some(index);
                        state.raw_openapi = body;
                    }
                }
                if local {
                    self.set_local_up(true);
                } else {
                    self.set_peer_up(id, true);
                }
                if changed {
                    tracing::info!(server = id, "discovery changed");
                }
                (changed, true, keep_session.then_some(session))
            }
            Err(error) => {
                tracing::warn!(server = id, %error, "discovery sync failed; keeping the last good view");
                {
                    let mut servers = self.inner.servers.lock();
                    let state = servers.entry(id.to_owned()).or_default();
                    state.address = Some(client.addr);
                    state.errors += 1;
                    state.reachable = !error.unreachable();
                    state.last_error = Some(error.to_string());
                }
                *self
                    .inner
                    .metrics
                    .lock()
                    .sync_errors
                    .entry((id.to_owned(), error.kind()))
                    .or_default() += 1;
                if error.unreachable() {
                    if local {
                        self.set_local_up(false);
                    } else {
                        self.set_peer_up(id, false);
                    }
                }
                (false, false, None)
            }
        }
    }

    fn rebuild(&self) {
        let servers = self.inner.servers.lock();
        let empty = ServerDiscovery {
            server_id: LOCAL_ID.into(),
            ..Default::default()
        };
        let local = servers
            .get(LOCAL_ID)
            .and_then(|s| s.discovery.as_ref())
            .unwrap_or(&empty);
        let peers: Vec<&ServerDiscovery> = servers
            .iter()
            .filter(|(id, _)| *id != LOCAL_ID)
            .filter_map(|(_, s)| s.discovery.as_ref())
            .collect();
        let openapi_of = |id: &String, s: &ServerState| ServerOpenApi {
            server_id: id.clone(),
            index: s.openapi.clone().unwrap_or_default(),
        };
        let local_openapi = servers
            .get_key_value(LOCAL_ID)
            .map(|(id, s)| openapi_of(id, s))
            .unwrap_or_default();
        let peer_openapi: Vec<ServerOpenApi> = servers
            .iter()
            .filter(|(id, s)| *id != LOCAL_ID && s.openapi.is_some())
            .map(|(id, s)| openapi_of(id, s))
            .collect();
        // Without the local index nothing is merged: every OpenAPI request stays local.
        let openapi = if local_openapi.index.paths.is_empty() {
            OpenApiView::default()
        } else {
            let peer_refs: Vec<&ServerOpenApi> = peer_openapi.iter().collect();
            OpenApiView::build(&local_openapi, &peer_refs).unwrap_or_else(|error| {
                tracing::error!(%error, "cannot build the OpenAPI view; serving the local one");
                OpenApiView::default()
            })
        };
        *self.inner.openapi.write() = Arc::new(openapi);
        let exclusions = self.inner.exclusions.lock().exclusions();
        match DiscoveryView::build(
            local,
            &peers,
            &exclusions,
            Vec::new(),
            self.inner.config.policy,
        ) {
            Ok(view) => {
                drop(servers);
                self.inner.view.send_replace(Arc::new(view));
                tracing::info!(peers = peers_len(&self.inner), "discovery view rebuilt");
            }
            Err(error) => {
                tracing::error!(%error, "cannot build the discovery view; keeping the old one")
            }
        }
    }

    /// Prometheus text of the brain's metrics.
    pub fn render_metrics(&self, out: &mut String) {
        let metrics = self.inner.metrics.lock();
        let _ = writeln!(
            out,
            "# HELP mvp_rerouted_requests_total Requests forwarded to a peer apiserver, by the peer's answer.\n# TYPE mvp_rerouted_requests_total counter"
        );
        for ((code, group, version, resource, peer), n) in &metrics.rerouted {
            let _ = writeln!(
                out,
                "mvp_rerouted_requests_total{{code=\"{code}\",group=\"{group}\",version=\"{version}\",resource=\"{resource}\",peer=\"{peer}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP mvp_peer_proxy_errors_total Failed attempts to forward to a peer or to find one.\n# TYPE mvp_peer_proxy_errors_total counter"
        );
        for (kind, n) in &metrics.proxy_errors {
            let _ = writeln!(out, "mvp_peer_proxy_errors_total{{type=\"{kind}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP mvp_discovery_sync_errors_total Failed discovery syncs, by server and cause.\n# TYPE mvp_discovery_sync_errors_total counter"
        );
        for ((server, kind), n) in &metrics.sync_errors {
            let _ = writeln!(
                out,
                "mvp_discovery_sync_errors_total{{server=\"{server}\",type=\"{kind}\"}} {n}"
            );
        }
        drop(metrics);
        let _ = writeln!(
            out,
            "# HELP mvp_discovery_age_seconds Seconds since a server's discovery was last confirmed.\n# TYPE mvp_discovery_age_seconds gauge"
        );
        for server in self.servers() {
            if let Some(age) = server.discovery_age_seconds {
                let _ = writeln!(
                    out,
                    "mvp_discovery_age_seconds{{server=\"{}\"}} {age}",
                    server.id
                );
            }
        }
    }
}

fn peers_len(inner: &Inner) -> usize {
    inner.peers.lock().len()
}

/// The `kubernetes` EndpointSlices, or the Endpoints when slices are not served.
async fn read_peer_set(session: &mut Session) -> Result<BTreeSet<SocketAddr>, FetchError> {
    match session
        .get(peers::ENDPOINT_SLICES_PATH, "application/json", None)
        .await
    {
        Ok(Fetched::Body { body, .. }) => {
            peers::from_endpoint_slices(&body).map_err(|e| FetchError::Status {
                path: format!("{} ({e})", peers::ENDPOINT_SLICES_PATH),
                code: 200,
            })
        }
        Ok(Fetched::NotModified) | Err(FetchError::Status { code: 404, .. }) => {
            match session
                .get(peers::ENDPOINTS_PATH, "application/json", None)
                .await?
            {
                Fetched::Body { body, .. } => {
                    peers::from_endpoints(&body).map_err(|e| FetchError::Status {
                        path: format!("{} ({e})", peers::ENDPOINTS_PATH),
                        code: 200,
                    })
                }
                Fetched::NotModified => Ok(BTreeSet::new()),
            }
        }
        Err(error) => Err(error),
    }
}
