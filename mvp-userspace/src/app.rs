//! Wiring of `mvp run`: steering + listeners + (front door | L4 relay) + admin, and the
//! shutdown order (clear the slot, drain within a deadline, detach).
//!
//! With `--tls-cert-file` the steered connections are served by the L7 front door
//! ([`crate::frontdoor`]), which forwards to `--upstream` through the bypass connector;
//! without it they are relayed at L4 to their original destination ([`crate::relay`]).
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::addr::{ClientAddr, OrigDstAddr, SteerTarget};
use crate::admin::{self, AdminState};
use crate::cli::{LogFormat, RunArgs};
use crate::frontdoor::{FrontDoor, FrontDoorConfig, FrontDoorError};
use crate::relay::{self, Relay, RelayError, RelayStats};
use crate::steer::{
    self, BypassConnector, DirectConnector, ListenError, ListenerSource, PlainListeners,
    SteerError, SteeredListeners, Steering, UpstreamConnector,
};

/// What `mvp run` does with each accepted (steered) connection: the L7 [`FrontDoor`] when
/// TLS flags are given, else the L4 [`Relay`]. The accept loop, readiness and draining stay in `app`.
pub trait ConnectionHandler: Send + Sync + 'static {
    /// Handle one connection to the end; errors are the handler's to log.
    fn handle(
        &self,
        conn: TcpStream,
        client: ClientAddr,
        orig_dst: OrigDstAddr,
    ) -> impl std::future::Future<Output = ()> + Send;
}

/// The L7 front door: TLS, authentication, forwarding to `--upstream` (the original
/// destination only mattered to the L4 relay).
impl ConnectionHandler for FrontDoor {
    async fn handle(&self, conn: TcpStream, client: ClientAddr, _orig_dst: OrigDstAddr) {
        self.serve_connection(conn, client.get()).await
    }
}

impl<C: UpstreamConnector> ConnectionHandler for Relay<C> {
    async fn handle(&self, conn: TcpStream, client: ClientAddr, orig_dst: OrigDstAddr) {
        match self.relay(conn, client, orig_dst).await {
            Ok(_) => {}
            Err(e @ (RelayError::Loop { .. } | RelayError::Upstream { .. })) => {
                tracing::warn!(error = %one_line(&e), "connection not relayed")
            }
            Err(e) => tracing::debug!(error = %one_line(&e), "connection ended"),
        }
    }
}

/// How long a cleared listener keeps accepting what the kernel already queued for it.
const ACCEPT_GRACE: Duration = Duration::from_millis(200);
/// Pause after a failed accept (e.g. EMFILE) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Errors of `mvp run`, each saying which part failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The configuration is inconsistent.
    #[error("config: {0}")]
    Config(String),
    /// Zero-config detection.
    #[error(transparent)]
    Detect(#[from] crate::detect::DetectError),
    /// Steering (eBPF, namespace).
    #[error(transparent)]
    Steer(#[from] SteerError),
    /// The proxy listener.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The admin endpoint.
    #[error("admin: cannot serve on {addr} ({source}); choose another --admin-address")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The L7 front door (flags, TLS material).
    #[error("front door: {0}")]
    FrontDoor(#[from] FrontDoorError),
    /// The async runtime or signal handlers.
    #[error("runtime: {what}")]
    Runtime {
        /// What failed.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The configuration of `mvp run`, validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Steered destinations.
    pub steer: Vec<SteerTarget>,
    /// Listener addresses (one per family).
    pub listen: Vec<SocketAddr>,
    /// Namespace to join and steer in.
    pub netns: Option<PathBuf>,
    /// Admin endpoint.
    pub admin: SocketAddr,
    /// Drain deadline.
    pub drain_timeout: Duration,
    /// The L7 front door; None = L4 relay.
    pub front_door: Option<FrontDoorConfig>,
    /// Peers and discovery sync (with the front door).
    pub brain: crate::brain::BrainArgs,
    /// CA of the peers' serving certs (`--peer-ca-file`, detected, or the upstream CA).
    pub peer_ca_file: Option<PathBuf>,
}

impl RunConfig {
    /// Validate CLI arguments; without --steer, detect the steer set from kube-apiserver.
    pub fn from_args(args: &RunArgs) -> Result<RunConfig, AppError> {
        if !args.steer.is_empty() || args.no_steer {
            return Self::from_args_with(args, &[]);
        }
        // The addresses of the namespace mvp will steer in, not the one it starts in.
        let nodes = steer::node_addresses_in(args.netns.as_deref()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot list the node's addresses; steering the advertise address and --steer-vip only");
            Vec::new()
        });
        Self::from_args_with(args, &nodes)
    }

    /// [`RunConfig::from_args`] with the node's addresses given (tests).
    pub fn from_args_with(args: &RunArgs, node_addrs: &[IpAddr]) -> Result<RunConfig, AppError> {
        // Zero-config: without --steer, kube-apiserver's own settings fill in every flag
        // that was not given (explicit flags win).
        let (steer, front_door_args, peer_ca_file) = if args.no_steer {
            // A plain listener: nothing to steer, nothing detected.
            (
                Vec::new(),
                args.front_door.clone(),
                args.detect.peer_ca_file.clone(),
            )
        } else if args.steer.is_empty() {
            detect_settings(args, node_addrs)?
        } else {
            (
                args.steer.clone(),
                args.front_door.clone(),
                args.detect.peer_ca_file.clone(),
            )
        };
        if steer.len() > mvp_common::STEER_DST_MAX as usize {
            return Err(AppError::Config(format!(
                "{} --steer targets; at most {} are supported",
                steer.len(),
                mvp_common::STEER_DST_MAX
            )));
        }
        for t in &steer {
            let t = t.get();
            let a = crate::addr::canonical(args.admin_address);
            if t == a || (a.ip().is_unspecified() && a.port() == t.port()) {
                return Err(AppError::Config(format!(
                    "--admin-address {a} overlaps the steered {t}: pick an unsteered admin address"
                )));
            }
        }
        if args.no_steer && !args.front_door.enabled() {
            return Err(AppError::Config(
                "--no-steer serves the L7 front door only: give --tls-cert-file and its flags \
                 (the L4 relay forwards steered connections to their original destination)"
                    .into(),
            ));
        }
        let listen = if args.listen.is_empty() {
            // Loopback, ephemeral: reachable only through steering.
            let mut l = Vec::new();
            if steer.iter().any(|t| t.get().is_ipv4()) {
                l.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
            }
            if steer.iter().any(|t| t.get().is_ipv6()) {
                l.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0));
            }
            l
        } else {
            args.listen.clone()
        };
        if let Some(l) = listen
            .iter()
            .find(|l| steer.iter().any(|t| crate::addr::canonical(**l) == t.get()))
        {
            return Err(AppError::Config(format!(
                "--listen {l} is a steered address: bind mvp's listener elsewhere (default: loopback, ephemeral port)"
            )));
        }
        for t in &steer {
            let fam = steer::listener::family_of(t.get());
            if !listen.iter().any(|l| steer::listener::family_of(*l) == fam) {
                return Err(AppError::Config(format!(
                    "steered {t} has no {fam:?} listener: add a --listen of that family"
                )));
            }
        }
        Ok(RunConfig {
            steer,
            listen,
            netns: args.netns.clone(),
            admin: args.admin_address,
            drain_timeout: args.drain_timeout(),
            brain: args.brain.clone(),
            peer_ca_file,
            front_door: if front_door_args.enabled() {
                Some(
                    front_door_args
                        .to_config()
                        .map_err(|e| AppError::FrontDoor(e.into()))?,
                )
            } else {
                None
            },
        })
    }
}

/// The TLS to the local apiserver (the front door's `--upstream*` flags).
fn brain_local_tls(config: &FrontDoorConfig) -> Result<crate::tls::UpstreamTls, AppError> {
    crate::tls::UpstreamTls::new(
        &config.upstream_ca_file,
        &config.upstream_server_name,
        config
            .proxy_client
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path())),
        &crate::tls::provider(),
    )
    .map_err(|e| AppError::FrontDoor(e.into()))
}

/// The brain: local upstream as the front door's, peers verified with `--peer-ca-file`.
fn build_brain(
    cfg: &RunConfig,
    config: &FrontDoorConfig,
    dial: Arc<dyn crate::proxy::Dial>,
) -> Result<crate::brain::BrainHandle, AppError> {
    let local_tls = brain_local_tls(config)?;
    let peer_ca = cfg
        .peer_ca_file
        .as_deref()
        .unwrap_or(&config.upstream_ca_file);
    let peer_tls = if peer_ca == config.upstream_ca_file
        && cfg.brain.peer_server_name == config.upstream_server_name
    {
        local_tls.clone()
    } else {
        crate::tls::UpstreamTls::new(
            peer_ca,
            &cfg.brain.peer_server_name,
            config
                .proxy_client
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path())),
            &crate::tls::provider(),
        )
        .map_err(|e| AppError::FrontDoor(e.into()))?
    };
    Ok(crate::brain::BrainHandle::new(crate::brain::BrainConfig {
        local: config.upstream,
        static_peers: cfg.brain.peers.clone(),
        own_ips: cfg.steer.iter().map(|t| t.get().ip()).collect(),
        interval: cfg.brain.interval(),
        endpoint_peers: !cfg.brain.no_endpoint_peers,
        local_tls,
        peer_tls,
        dial,
        names: config.header_names.clone(),
        policy: crate::discovery::negotiate::NegotiationPolicy::KUBE_1_36,
    }))
}

/// The steer set and front-door flags from kube-apiserver's manifest or command line.
fn detect_settings(
    args: &RunArgs,
    node_addrs: &[IpAddr],
) -> Result<
    (
        Vec<SteerTarget>,
        crate::frontdoor::FrontDoorArgs,
        Option<PathBuf>,
    ),
    AppError,
> {
    let d = crate::detect::detect(
        &args.detect.apiserver_manifest,
        &args.detect.proc_root,
        &crate::detect::Overrides::from_flags(&args.detect, &args.front_door, &[]),
        node_addrs,
    )?;
    let steer: Vec<SteerTarget> = d
        .steer
        .iter()
        .filter_map(|s| SteerTarget::new(s.value).ok())
        .collect();
    if steer.is_empty() {
        return Err(AppError::Config(
            "kube-apiserver's settings give no non-loopback address to steer: pass --steer or --steer-vip".into(),
        ));
    }
    if let Some(origin) = &d.origin {
        tracing::info!(from = %origin, steer = ?steer.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "detected kube-apiserver settings");
    }
    for row in d.rows() {
        tracing::debug!(setting = row.setting, value = %row.value, from = %row.source, "detected");
    }
    let peer_ca = d.peer_ca_file.as_ref().map(|s| s.value.clone());
    Ok((steer, d.front_door_args(&args.front_door), peer_ca))
}

/// Install the tracing subscriber on stderr. `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    init_logging_at(format, "info");
}

/// Logging for one-shot commands (`doctor`, `status`): their report is the output, so
/// only warnings and errors are logged unless `RUST_LOG` says otherwise.
pub fn init_cli_logging() {
    init_logging_at(LogFormat::Text, "warn");
}

fn init_logging_at(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: log files and tests must see plain `key=value`.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .with_writer(io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// An error and its causes on one line, for the operator.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out.replace('\n', " ")
}

/// Run the daemon until SIGINT/SIGTERM.
pub fn run(cfg: RunConfig) -> Result<(), AppError> {
    // Join the namespace before any thread exists: threads inherit it.
    let netns = match &cfg.netns {
        Some(path) => {
            steer::enter_netns(path)?;
            path.clone()
        }
        None => steer::own_netns(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| AppError::Runtime {
            what: "cannot start the tokio runtime",
            source,
        })?;
    runtime.block_on(serve(cfg, netns))
}

async fn serve(cfg: RunConfig, netns: PathBuf) -> Result<(), AppError> {
    let signal_err = |source| AppError::Runtime {
        what: "cannot install SIGINT/SIGTERM handlers",
        source,
    };
    let mut sigterm = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(signal_err)?;

    let targets: Vec<SocketAddr> = cfg.steer.iter().map(|t| t.get()).collect();
    // No targets (`--no-steer`): plain listeners, plain upstream connects, no eBPF.
    let steering = if targets.is_empty() {
        None
    } else {
        Some(Steering::load(&targets, &netns)?)
    };
    let handle = steering.as_ref().map(Steering::handle);

    let source: Arc<dyn ListenerSource> = match &handle {
        Some(h) => Arc::new(SteeredListeners::new(h.clone())),
        None => Arc::new(PlainListeners::default()),
    };
    let listeners = source.bind(&cfg.listen)?;
    let own: Vec<SocketAddr> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    // TLS material is loaded before the listener enters the SOCKMAP (readiness).
    let brain_stop = CancellationToken::new();
    let (front_door, brain) = match &cfg.front_door {
        Some(config) => {
            let dial: Arc<dyn crate::proxy::Dial> = match &handle {
                Some(h) => Arc::new(BypassConnector::new(h.clone())),
                None => Arc::new(DirectConnector::default()),
            };
            let brain = build_brain(&cfg, config, dial.clone())?;
            // The front door reloads the local TLS's front-proxy pair (the peers' too when
            // they share it, the kubeadm default).
            let door =
                FrontDoor::with_route(config, Arc::new(brain.clone()), brain.local_tls(), dial)?;
            if let Some(pair) = brain.separate_peer_proxy_client() {
                tokio::spawn(crate::tls::spawn_reloader(
                    vec![pair],
                    config.tls_reload_interval,
                ));
            }
            tokio::spawn(brain.clone().run(brain_stop.clone()));
            (Some(door), Some(brain))
        }
        None => (None, None),
    };
    let cert_reloader = front_door.as_ref().map(FrontDoor::spawn_cert_reloader);
    let stats = Arc::new(RelayStats::default());
    // The relay only exists with steering (RunConfig refuses --no-steer without TLS flags).
    let relay = handle.as_ref().map(|h| {
        Arc::new(Relay::new(
            BypassConnector::new(h.clone()),
            own.clone(),
            stats.clone(),
        ))
    });

    let admin_listener = bind_admin(cfg.admin).await?;
    let admin_state = Arc::new(AdminState {
        counters: Box::new({
            let h = handle.clone();
            move || match &h {
                Some(h) => h.counters(),
                None => Err(io::Error::other("no steering (--no-steer)")),
            }
        }),
        ready: Box::new({
            let source = source.clone();
            move || source.is_active()
        }),
        relay: stats,
        steering: targets.iter().map(SocketAddr::to_string).collect(),
        front_door: front_door.as_ref().map(FrontDoor::stats),
        brain: brain.clone(),
    });
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn({
        let stop = admin_stop.clone();
        let addr = cfg.admin;
        async move {
            let listener = match admin_listener {
                Some(listener) => listener,
                None => tokio::select! {
                    _ = stop.cancelled() => return,
                    listener = rebind_admin_when_free(addr) => listener,
                },
            };
            admin::serve(listener, admin_state, stop).await
        }
    });

    // One accept task per listener, feeding one queue.
    let (tx, mut rx) = mpsc::channel::<TcpStream>(1024);
    let mut acceptors = JoinSet::new();
    // No startup 404 window: enter the traffic path only once the brain knows who serves what.
    if let Some(brain) = &brain {
        let deadline = cfg.brain.sync_deadline();
        if tokio::time::timeout(deadline, brain.wait_synced())
            .await
            .is_err()
        {
            tracing::warn!(
                ?deadline,
                "first discovery sync not done by --sync-deadline; entering the traffic path anyway (resources only peers serve may 404 until it is)"
            );
        }
    }
    // `activate` needs the listeners, acceptors need ownership: register first.
    source.activate(&listeners)?;
    for listener in listeners {
        let tx = tx.clone();
        acceptors.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((conn, _)) => {
                        if tx.send(conn).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                }
            }
        });
    }
    drop(tx);
    tracing::info!(
        listeners = ?own,
        admin = %cfg.admin,
        mode = if front_door.is_some() { "front door (L7)" } else { "relay (L4)" },
        steering = steering.is_some(),
        "ready: listener in the SOCKMAP (or, with --no-steer, listening)"
    );

    let mut conns = JoinSet::new();
    let spawn = |conns: &mut JoinSet<()>, conn: TcpStream| {
        let handler = relay.clone();
        let door = front_door.clone();
        conns.spawn(async move {
            match relay::addresses(&conn) {
                Ok((client, orig_dst)) => match (door, handler) {
                    (Some(door), _) => door.handle(conn, client, orig_dst).await,
                    (None, Some(relay)) => relay.handle(conn, client, orig_dst).await,
                    (None, None) => {}
                },
                Err(e) => tracing::debug!(error = %one_line(&e), "connection gone before handling"),
            }
        });
    };

    let signal_name = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            Some(conn) = rx.recv() => spawn(&mut conns, conn),
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    };

    // Shutdown: out of the path first (new SYNs fail open to the server behind), then
    // take what the kernel already queued, then drain.
    tracing::info!(
        signal = signal_name,
        "shutting down: clearing the listener slot"
    );
    let cleared = source.deactivate();
    if let Err(e) = &cleared {
        tracing::error!(error = %one_line(e), "could not clear the slot; detaching instead");
    }
    let grace = tokio::time::sleep(ACCEPT_GRACE);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            _ = &mut grace => break,
            Some(conn) = rx.recv() => spawn(&mut conns, conn),
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    acceptors.shutdown().await;
    if let Some(door) = &front_door {
        // Queued connections were taken; now ask clients to go (GOAWAY / Connection: close).
        door.begin_drain();
    }
    let in_flight = conns.len();
    tracing::info!(in_flight, deadline = ?cfg.drain_timeout, "draining");
    let drained = tokio::time::timeout(cfg.drain_timeout, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = conns.len(),
            "drain deadline passed; closing remaining connections"
        );
        conns.shutdown().await;
    }
    if let Some(task) = cert_reloader {
        task.abort();
    }
    brain_stop.cancel();
    if let Some(steering) = steering {
        steering.detach()?;
    }
    admin_stop.cancel();
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// Bind the admin address. Busy (`EADDRINUSE`) is not fatal: under a hostNetwork DaemonSet
/// rolling with maxSurge 1 the old instance holds the same admin address until it has
/// drained, so the new one starts without it and takes it over when it frees
/// ([`rebind_admin_when_free`]). Steering never depends on the admin server.
async fn bind_admin(addr: SocketAddr) -> Result<Option<TcpListener>, AppError> {
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            tracing::warn!(
                admin = %addr,
                "admin address in use (an older mvp still draining?); serving without it and retrying until it is free"
            );
            Ok(None)
        }
        Err(source) => Err(AppError::Admin { addr, source }),
    }
}

/// Retry binding the admin address every 250 ms until it is free.
async fn rebind_admin_when_free(addr: SocketAddr) -> TcpListener {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(admin = %addr, "admin address free again; serving it");
                return listener;
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
            Err(e) => tracing::warn!(admin = %addr, error = %e, "admin: bind failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn config(args: &[&str]) -> Result<RunConfig, AppError> {
        let cli = Cli::try_parse_from(std::iter::once("mvp").chain(args.iter().copied()))
            .expect("parses");
        let Command::Run(r) = cli.command else {
            panic!("not run");
        };
        RunConfig::from_args(&r)
    }

    fn parse_run(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from(std::iter::once("mvp").chain(args.iter().copied()))
            .expect("parses");
        let Command::Run(r) = cli.command else {
            panic!("not run");
        };
        r
    }

    #[test]
    fn without_steer_flags_the_steer_set_comes_from_the_kubeadm_manifest() {
        let manifest = crate::test_fixtures::fixtures_dir().join("kubeadm/kube-apiserver.yaml");
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = parse_run(&[
            "run",
            "--apiserver-manifest",
            manifest.to_str().expect("utf-8"),
            "--proc-root",
            tmp.path().to_str().expect("utf-8"),
            "--steer-vip",
            "192.168.56.100",
        ]);
        let nodes: Vec<IpAddr> = ["127.0.0.1", "192.168.56.11", "fd00::11"]
            .iter()
            .map(|s| s.parse().expect("ip"))
            .collect();
        let c = RunConfig::from_args_with(&r, &nodes).expect("detected");
        let steer: Vec<String> = c.steer.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            steer,
            [
                "192.168.56.11:6443",
                "192.168.56.100:6443",
                "[fd00::11]:6443"
            ]
        );
        assert_eq!(c.listen.len(), 2, "a listener per steered family");
        // Zero-config is the L7 front door with kube-apiserver's own files and names.
        let fd = c.front_door.expect("front door from the manifest");
        assert_eq!(
            fd.tls_cert_file,
            PathBuf::from("/etc/kubernetes/pki/apiserver.crt")
        );
        assert_eq!(fd.upstream, "127.0.0.1:6443".parse().expect("addr"));
        assert_eq!(fd.requestheader_allowed_names, ["front-proxy-client"]);
        assert_eq!(
            fd.proxy_client.expect("front-proxy pair").0,
            PathBuf::from("/etc/kubernetes/pki/front-proxy-client.crt")
        );
    }

    #[test]
    fn explicit_front_door_flags_win_over_detection() {
        let manifest = crate::test_fixtures::fixtures_dir().join("kubeadm/kube-apiserver.yaml");
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = parse_run(&[
            "run",
            "--apiserver-manifest",
            manifest.to_str().expect("utf-8"),
            "--proc-root",
            tmp.path().to_str().expect("utf-8"),
            "--secure-port",
            "16443",
            "--tls-cert-file",
            "/x/serving.crt",
        ]);
        let c = RunConfig::from_args_with(&r, &[]).expect("detected");
        let steer: Vec<String> = c.steer.iter().map(|s| s.to_string()).collect();
        assert_eq!(steer, ["192.168.56.11:16443"]);
        let fd = c.front_door.expect("front door");
        assert_eq!(fd.tls_cert_file, PathBuf::from("/x/serving.crt"));
        assert_eq!(
            fd.tls_private_key_file,
            PathBuf::from("/etc/kubernetes/pki/apiserver.key")
        );
        assert_eq!(fd.upstream, "127.0.0.1:16443".parse().expect("addr"));
    }

    #[test]
    fn explicit_steer_means_no_detection() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = parse_run(&[
            "run",
            "--steer",
            "198.18.0.1:6443",
            "--apiserver-manifest",
            tmp.path().join("missing.yaml").to_str().expect("utf-8"),
        ]);
        let c = RunConfig::from_args_with(&r, &[]).expect("explicit");
        assert!(c.front_door.is_none(), "L4 relay without TLS flags");
    }

    #[test]
    fn without_steer_flags_or_apiserver_the_error_says_what_to_pass() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let missing = tmp.path().join("kube-apiserver.yaml");
        let r = parse_run(&[
            "run",
            "--apiserver-manifest",
            missing.to_str().expect("utf-8"),
            "--proc-root",
            tmp.path().to_str().expect("utf-8"),
        ]);
        let e = one_line(&RunConfig::from_args_with(&r, &[]).expect_err("nothing found"));
        assert!(
            e.contains("--steer") && e.contains(missing.to_str().expect("utf-8")),
            "{e}"
        );
    }

    #[test]
    fn default_listeners_follow_the_steered_families() {
        let c = config(&["run", "--steer", "198.18.0.1:6443"]).expect("valid");
        assert_eq!(c.listen, vec!["127.0.0.1:0".parse().expect("addr")]);
        let c = config(&[
            "run",
            "--steer",
            "198.18.0.1:6443",
            "[fd00:6d76:70::1]:6443",
        ])
        .expect("valid");
        assert_eq!(c.listen.len(), 2);
    }

    #[test]
    fn admin_must_not_be_steered() {
        let e = config(&[
            "run",
            "--steer",
            "198.18.0.1:6443",
            "--admin-address",
            "0.0.0.0:6443",
        ])
        .expect_err("overlap");
        assert!(e.to_string().contains("admin"), "{e}");
    }

    #[test]
    fn listener_must_not_be_steered() {
        let e = config(&[
            "run",
            "--steer",
            "198.18.0.1:6443",
            "--listen",
            "198.18.0.1:6443",
        ])
        .expect_err("listener on a steered address");
        assert!(e.to_string().contains("--listen"), "{e}");
    }

    #[test]
    fn each_steered_family_needs_a_listener() {
        let e = config(&[
            "run",
            "--steer",
            "[fd00:6d76:70::1]:6443",
            "--listen",
            "127.0.0.1:0",
        ])
        .expect_err("no v6 listener");
        assert!(e.to_string().contains("V6"), "{e}");
    }

    #[test]
    fn no_steer_is_for_the_front_door_only() {
        let e = config(&["run", "--no-steer", "--listen", "127.0.0.1:19446"])
            .expect_err("no TLS flags");
        assert!(e.to_string().contains("--tls-cert-file"), "{e}");
        let c = config(&[
            "run",
            "--no-steer",
            "--listen",
            "127.0.0.1:19446",
            "--tls-cert-file",
            "/x/srv.crt",
            "--tls-private-key-file",
            "/x/srv.key",
            "--upstream",
            "https://127.0.0.1:19443",
            "--upstream-ca-file",
            "/x/ca.crt",
        ])
        .expect("valid");
        assert!(c.steer.is_empty());
        assert_eq!(c.listen, vec!["127.0.0.1:19446".parse().expect("addr")]);
    }

    #[test]
    fn one_line_joins_causes() {
        let e = AppError::Admin {
            addr: "127.0.0.1:1".parse().expect("addr"),
            source: io::Error::other("in use"),
        };
        let line = one_line(&e);
        assert!(line.starts_with("admin: cannot serve on 127.0.0.1:1"));
        assert!(line.ends_with(": in use"));
    }
}
