//! A mixed-version control plane on one machine: [`LabCluster`].
//!
//! Layout (one isolated L2 segment per cluster, so clusters in parallel do not collide):
//!
//! ```text
//!   hub netns: bridge br0 ──┬── etcd netns    198.18.0.2   fd00:6d76:70::2    etcd :2379
//!                           ├── node cp1      198.18.0.11  fd00:6d76:70::11   lab apiserver 0.0.0.0:6443
//!                           ├── node cp2      198.18.0.12  ...
//!                           ├── node cp3      198.18.0.13  ...
//!                           └── client netns  198.18.0.100 fd00:6d76:70::100  kubectl, python
//! ```
//!
//! Every node runs `mvp-lab-apiserver` with kube-apiserver's flags (kubeadm's PKI layout,
//! `--advertise-address` = node IP, bound to 0.0.0.0:6443), emulating one Kubernetes
//! version's API surface from `shared/fixtures/discovery/<surface>`; all share one etcd.
//! Once the first apiserver is ready the lab writes what kube-apiserver's bootstrap
//! controllers would: the system namespaces, the `kubernetes` Service and the `kubernetes`
//! Endpoints/EndpointSlice listing every node ([`LabCluster::sync_endpoints`] rewrites them).
//!
//! ```no_run
//! use test_support::lab::{LabCluster, LabSpec};
//! let lab = LabCluster::start(LabSpec::mixed()).unwrap(); // cp1, cp2: 1.33; cp3: 1.36
//! let out = lab.kubectl("cp1", &["get", "workloads.scheduling.k8s.io"]).unwrap();
//! assert!(!out.success()); // the false 404 mvp removes
//! let mvp = lab.start_mvp("cp1", "mvp", &["run", "--steer", "198.18.0.11:6443"]).unwrap();
//! ```
//!
//! What tests get:
//! - nodes: [`LabCluster::nodes`] / [`LabCluster::node`] → [`LabNode`] (netns, IPv4/IPv6,
//!   `addr()`, kubeadm PKI dir [`LabNode::pki`], admin/token/IPv6 kubeconfigs, logs);
//! - clients, run in the client namespace: [`LabCluster::kubectl`], `kubectl_with`,
//!   `kubectl_stdin`, [`LabCluster::python`] (scripts in `tests/python/`), `client_command`,
//!   and the admin HTTPS client [`LabCluster::admin_request`]; on a node itself, over its
//!   loopback: [`LabCluster::kubectl_on_node`];
//! - credentials: [`LabCluster::pki`] ([`Pki`]: client certs, expired, unknown CA, front-proxy
//!   certs) and [`LabCluster::write_kubeconfig`];
//! - control: [`LabCluster::stop_apiserver`] / [`LabCluster::start_apiserver`],
//!   [`LabCluster::rotate_serving_cert`], [`LabCluster::sync_endpoints`] /
//!   [`LabCluster::sync_endpoints_to_running`];
//! - observation: [`LabCluster::audit_log`], [`LabCluster::served_chain`],
//!   [`LabCluster::node_http_get`] (plain HTTP on a node's loopback, e.g. mvp's admin port);
//! - mvp: [`LabCluster::start_mvp`] runs `mvp <args>` in a node's namespace (a
//!   [`LabProcess`], stopped on drop).
//!
//! Clean-up: dropping the cluster (also while a test unwinds from a panic) stops every
//! process and removes namespaces, links and the temp dir. A reaper process (its own
//! process group, fed the list of resources through a pipe) does the same when this process
//! dies any other way (Ctrl-C, SIGKILL, abort). [`LabCluster::start`] first removes what a
//! crashed earlier run left behind.
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::etcd::{Etcd, EtcdError};
use crate::https::{HttpsClient, HttpsError, Reply};
use crate::netns::{Netns, NetnsError, Segment};
use crate::pki::{CertKey, Credentials, Kubeconfig, NodePki, Pki, PkiError};

/// Port every lab apiserver listens on (all addresses), like kube-apiserver's default.
pub const APISERVER_PORT: u16 = 6443;
/// etcd's client port.
pub const ETCD_PORT: u16 = 2379;
/// The segment's IPv4 prefix length.
const V4_PREFIX: u8 = 24;
const V6_PREFIX: u8 = 64;
/// The etcd host's addresses.
pub const ETCD_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The client namespace's IPv4 address.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// Prefix of every lab temp dir: `mvp-lab-<pid>-<n>` under the temp dir.
const DIR_PREFIX: &str = "mvp-lab-";

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

fn v6(host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x6d76, 0x70, 0, 0, 0, 0, host)
}

/// Something the lab could not do; each names what and where.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {what} ({}): {source}", program.display())]
    Spawn {
        what: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} exited ({status}) before it was ready; last log lines ({}):\n{tail}", log.display())]
    Exited {
        what: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{what} not ready after {waited:?}: {last}\n(log {}):\n{tail}", log.display())]
    NotReady {
        what: String,
        waited: Duration,
        last: String,
        log: PathBuf,
        tail: String,
    },
    #[error("bad lab spec: {0}")]
    Spec(String),
    #[error("no lab node named {0:?}")]
    NoSuchNode(String),
    #[error("fixture surface {} does not exist", .0.display())]
    NoSurface(PathBuf),
    #[error("{what}: HTTP {status}: {body}")]
    Api {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{what}: {source}")]
    Https {
        what: String,
        #[source]
        source: HttpsError,
    },
    #[error("bad audit log line in {}: {detail}", path.display())]
    Audit { path: PathBuf, detail: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// One control-plane node's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node name (also the netns label in reports), e.g. `cp1`.
    pub name: String,
    /// Folder under `shared/fixtures/discovery`, e.g. `k8s-1.33`.
    pub surface: String,
    /// The version the apiserver reports (`/version`), e.g. `1.33.4`.
    pub emulated_version: String,
}

impl NodeSpec {
    /// A node serving the 1.33 surface as v1.33.4.
    pub fn v1_33(name: &str) -> Self {
        NodeSpec {
            name: name.to_string(),
            surface: "k8s-1.33".to_string(),
            emulated_version: "1.33.4".to_string(),
        }
    }

    /// A node serving the 1.36 surface as v1.36.2.
    pub fn v1_36(name: &str) -> Self {
        NodeSpec {
            name: name.to_string(),
            surface: "k8s-1.36".to_string(),
            emulated_version: "1.36.2".to_string(),
        }
    }

    /// `major.minor` of the emulated version (`1.33`).
    pub fn minor(&self) -> String {
        self.emulated_version
            .split('.')
            .take(2)
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// What to bring up.
#[derive(Debug, Clone)]
pub struct LabSpec {
    pub nodes: Vec<NodeSpec>,
    /// Extra flags for every lab apiserver.
    pub apiserver_args: Vec<String>,
    /// `--bind-address` of every apiserver: `0.0.0.0` (IPv4 only here; Go's kube-apiserver
    /// makes a dual-stack socket of it) or `::` (dual-stack, IPv6 clients too).
    pub bind_address: IpAddr,
}

impl LabSpec {
    /// The given nodes, default flags.
    pub fn new(nodes: Vec<NodeSpec>) -> Self {
        LabSpec {
            nodes,
            apiserver_args: Vec::new(),
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }

    /// A control plane mid-upgrade: `cp1` and `cp2` at 1.33, `cp3` at 1.36.
    pub fn mixed() -> Self {
        Self::new(vec![
            NodeSpec::v1_33("cp1"),
            NodeSpec::v1_33("cp2"),
            NodeSpec::v1_36("cp3"),
        ])
    }
}

/// A process the lab started (in its own process group, output to a log file). Killed
/// on drop.
#[derive(Debug)]
pub struct LabProcess {
    what: String,
    child: Child,
    log: PathBuf,
}

impl LabProcess {
    fn spawn(
        what: &str,
        ns: &Netns,
        program: &Path,
        args: &[String],
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Self, LabError> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_err(format!("open log {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("open log {}", log.display())))?;
        let mut cmd = ns.command(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            what: what.to_string(),
            program: program.to_path_buf(),
            source,
        })?;
        Ok(LabProcess {
            what: what.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its combined stdout/stderr log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log's contents so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `Err` with the log tail when it has exited.
    pub fn check_running(&mut self) -> Result<(), LabError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(LabError::Exited {
                what: self.what.clone(),
                status: status.to_string(),
                log: self.log.clone(),
                tail: tail(&self.log, 30),
            }),
            Err(e) => Err(io_err(format!("wait for {}", self.what))(e)),
        }
    }

    /// Its exit status once it has exited (`None` while it runs).
    pub fn exit_status(&mut self) -> Result<Option<std::process::ExitStatus>, LabError> {
        self.child
            .try_wait()
            .map_err(io_err(format!("wait for {}", self.what)))
    }

    /// Send SIGTERM and wait for exit (SIGKILL after the patience runs out).
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut delay = Duration::from_millis(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Output of a command run in the client namespace.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == 0
    }
    /// The command's stdout parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or(serde_json::Value::Null)
    }
}

impl std::fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// One control-plane node.
#[derive(Debug)]
pub struct LabNode {
    spec: NodeSpec,
    ns: Netns,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
    dir: PathBuf,
    pki: NodePki,
    kubeconfig: PathBuf,
    token_kubeconfig: PathBuf,
    kubeconfig_v6: PathBuf,
    local_kubeconfig: PathBuf,
    apiserver: Mutex<Option<LabProcess>>,
}

impl LabNode {
    pub fn name(&self) -> &str {
        &self.spec.name
    }
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }
    /// The node's network namespace (run `mvp` or tools "on the node").
    pub fn netns(&self) -> &Netns {
        &self.ns
    }
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }
    pub fn ipv6(&self) -> Ipv6Addr {
        self.ipv6
    }
    /// `<ipv4>:6443`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ipv4), APISERVER_PORT)
    }
    /// `https://<ipv4>:6443`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr())
    }
    /// `[<ipv6>]:6443`.
    pub fn addr_v6(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(self.ipv6), APISERVER_PORT)
    }
    /// Admin kubeconfig pointing at `https://[<ipv6>]:6443` (answers when the lab binds
    /// `::`, see [`LabSpec::bind_address`]).
    pub fn kubeconfig_v6(&self) -> &Path {
        &self.kubeconfig_v6
    }
    /// Admin kubeconfig pointing at `https://127.0.0.1:6443`, for clients on the node
    /// itself (the apiserver's loopback; never steered). See [`LabCluster::kubectl_on_node`].
    pub fn local_kubeconfig(&self) -> &Path {
        &self.local_kubeconfig
    }
    /// The node's own directory (PKI, logs, audit log, kubeconfigs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// kubeadm's `/etc/kubernetes/pki` of this node.
    pub fn pki(&self) -> &NodePki {
        &self.pki
    }
    /// Admin kubeconfig (client cert) pointing at this node.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }
    /// Bearer-token kubeconfig pointing at this node.
    pub fn token_kubeconfig(&self) -> &Path {
        &self.token_kubeconfig
    }
    /// The apiserver's audit log file (JSON lines, `audit.k8s.io/v1` events).
    pub fn audit_log_path(&self) -> PathBuf {
        self.dir.join("audit.log")
    }
    /// The apiserver's stdout/stderr log.
    pub fn apiserver_log_path(&self) -> PathBuf {
        self.dir.join("apiserver.log")
    }
    /// True while the apiserver process runs.
    pub fn apiserver_running(&self) -> bool {
        self.apiserver
            .lock()
            .as_mut()
            .is_some_and(|p| p.check_running().is_ok())
    }
    /// The apiserver's pid while it runs.
    pub fn apiserver_pid(&self) -> Option<u32> {
        self.apiserver.lock().as_ref().map(|p| p.pid())
    }

    /// The flags this node's apiserver runs with (kube-apiserver's names; the lab server
    /// has no aggregator, so no `--proxy-client-*` flags: the files are in [`LabNode::pki`]).
    pub fn apiserver_args(
        &self,
        bind: IpAddr,
        etcd: &str,
        surface_dir: &Path,
        extra: &[String],
    ) -> Vec<String> {
        let p = &self.pki;
        let path = |p: PathBuf| p.display().to_string();
        let mut args = vec![
            format!("--advertise-address={}", self.ipv4),
            format!("--bind-address={bind}"),
            format!("--secure-port={APISERVER_PORT}"),
            format!("--tls-cert-file={}", path(p.apiserver_crt())),
            format!("--tls-private-key-file={}", path(p.apiserver_key())),
            format!("--client-ca-file={}", path(p.ca_crt())),
            format!(
                "--requestheader-client-ca-file={}",
                path(p.front_proxy_ca_crt())
            ),
            "--requestheader-allowed-names=front-proxy-client".to_string(),
            "--requestheader-username-headers=X-Remote-User".to_string(),
            "--requestheader-group-headers=X-Remote-Group".to_string(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_string(),
            format!("--token-auth-file={}", path(p.tokens_csv())),
            format!("--etcd-servers={etcd}"),
            format!("--audit-log-path={}", path(self.audit_log_path())),
            format!("--discovery-dir={}", surface_dir.display()),
            format!("--emulated-version={}", self.spec.emulated_version),
        ];
        args.extend(extra.iter().cloned());
        args
    }
}

/// Resources the lab registers for removal by the reaper, should this process die
/// without running destructors.
struct Reaper {
    child: Child,
    stdin: Option<ChildStdin>,
}

const REAPER_SCRIPT: &str = r#"
nss=""; dirs=""
while read -r kind val; do
  case "$kind" in ns) nss="$nss $val";; dir) dirs="$dirs $val";; esac
done
for ns in $nss; do
  for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null
done
for d in $dirs; do rm -rf "$d"; done
"#;

impl Reaper {
    fn start() -> Result<Self, LabError> {
        let mut child = Command::new("sh")
            .args(["-c", REAPER_SCRIPT, "mvp-lab-reaper"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|source| LabError::Spawn {
                what: "the lab's reaper".into(),
                program: "sh".into(),
                source,
            })?;
        let stdin = child.stdin.take();
        Ok(Reaper { child, stdin })
    }

    fn register(&mut self, kind: &str, val: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{kind} {val}");
            let _ = s.flush();
        }
    }

    fn ns(&mut self, ns: &Netns) {
        self.register("ns", ns.name());
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Everything is already gone; closing the pipe lets the reaper make sure.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The lab's working directory, removed on drop.
#[derive(Debug)]
struct LabDir(PathBuf);

impl Drop for LabDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("warning: cannot remove {}: {e}", self.0.display());
        }
    }
}

/// Remove lab temp dirs whose creating process is gone; returns how many.
pub fn cleanup_stale_dirs() -> usize {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
            && fs::remove_dir_all(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// A running mixed-version control plane (see the module docs).
pub struct LabCluster {
    // Drop order matters: processes, then namespaces, then files, then the reaper.
    nodes: Vec<LabNode>,
    etcd: Mutex<Option<Etcd>>,
    client: Netns,
    etcd_ns: Netns,
    segment: Segment,
    pki: Pki,
    fixtures: PathBuf,
    apiserver_args: Vec<String>,
    bind_address: IpAddr,
    admin: HttpsClient,
    dir: LabDir,
    _reaper: Reaper,
}

impl std::fmt::Debug for LabCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabCluster")
            .field("dir", &self.dir.0)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

impl Drop for LabCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            drop(node.apiserver.lock().take());
        }
        drop(self.etcd.lock().take());
    }
}

impl LabCluster {
    /// Bring the lab up and wait until every apiserver is ready and the `kubernetes`
    /// Service and EndpointSlice exist.
    pub fn start(spec: LabSpec) -> Result<LabCluster, LabError> {
        crate::netns::cleanup_stale();
        cleanup_stale_dirs();
        validate(&spec)?;
        let fixtures = crate::bins::fixtures_dir().join("discovery");
        for n in &spec.nodes {
            let surface = fixtures.join(&n.surface);
            if !surface.is_dir() {
                return Err(LabError::NoSurface(surface));
            }
        }
        let mut reaper = Reaper::start()?;
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        reaper.register("dir", &dir.display().to_string());
        fs::create_dir_all(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        let dir = LabDir(dir);
        let pki = Pki::generate(&dir.0.join("pki"))?;

        let mut segment = Segment::new()?;
        reaper.ns(segment.hub());
        let etcd_ns = Netns::new()?;
        reaper.ns(&etcd_ns);
        segment.attach(
            &etcd_ns,
            "eth0",
            &[
                &format!("{ETCD_V4}/{V4_PREFIX}"),
                &format!("{}/{V6_PREFIX}", v6(2)),
            ],
        )?;
        let client = Netns::new()?;
        reaper.ns(&client);
        segment.attach(
            &client,
            "eth0",
            &[
                &format!("{CLIENT_V4}/{V4_PREFIX}"),
                &format!("{}/{V6_PREFIX}", v6(0x100)),
            ],
        )?;

        let mut nodes = Vec::new();
        for (i, n) in spec.nodes.iter().enumerate() {
            let host = 11 + i as u8;
            let ipv4 = Ipv4Addr::new(198, 18, 0, host);
            let ipv6 = v6(0x11 + i as u16);
            let ns = Netns::new()?;
            reaper.ns(&ns);
            segment.attach(
                &ns,
                "eth0",
                &[
                    &format!("{ipv4}/{V4_PREFIX}"),
                    &format!("{ipv6}/{V6_PREFIX}"),
                ],
            )?;
            let node_dir = dir.0.join(&n.name);
            let node_pki = pki.write_node(&n.name, &[IpAddr::V4(ipv4), IpAddr::V6(ipv6)])?;
            let server = format!("https://{ipv4}:{APISERVER_PORT}");
            let kubeconfig = node_dir.join("admin.conf");
            Kubeconfig::admin(&pki, &server).write(&kubeconfig)?;
            let token_kubeconfig = node_dir.join("token.conf");
            Kubeconfig::token(&pki, &server).write(&token_kubeconfig)?;
            let local_kubeconfig = node_dir.join("admin-local.conf");
            Kubeconfig::admin(&pki, &format!("https://127.0.0.1:{APISERVER_PORT}"))
                .write(&local_kubeconfig)?;
            let kubeconfig_v6 = node_dir.join("admin-v6.conf");
            Kubeconfig::admin(&pki, &format!("https://[{ipv6}]:{APISERVER_PORT}"))
                .write(&kubeconfig_v6)?;
            nodes.push(LabNode {
                spec: n.clone(),
                ns,
                ipv4,
                ipv6,
                dir: node_dir,
                pki: node_pki,
                kubeconfig,
                token_kubeconfig,
                kubeconfig_v6,
                local_kubeconfig,
                apiserver: Mutex::new(None),
            });
        }
        let admin = HttpsClient::new(&pki.ca_pem(), Some(pki.admin())).map_err(|source| {
            LabError::Https {
                what: "admin client".into(),
                source,
            }
        })?;
        let lab = LabCluster {
            nodes,
            etcd: Mutex::new(None),
            client,
            etcd_ns,
            segment,
            pki,
            fixtures,
            apiserver_args: spec.apiserver_args,
            bind_address: spec.bind_address,
            admin,
            dir,
            _reaper: reaper,
        };
        lab.start_etcd()?;
        // Start all apiservers first, then wait: they come up in parallel.
        for node in &lab.nodes {
            lab.spawn_apiserver(node)?;
        }
        for node in &lab.nodes {
            lab.wait_apiserver_ready(node)?;
        }
        lab.bootstrap_objects()?;
        Ok(lab)
    }

    fn start_etcd(&self) -> Result<(), LabError> {
        let etcd = Etcd::start_in(&self.etcd_ns, IpAddr::V4(ETCD_V4), &self.dir.0)?;
        *self.etcd.lock() = Some(etcd);
        Ok(())
    }

    fn spawn_apiserver(&self, node: &LabNode) -> Result<(), LabError> {
        let mut slot = node.apiserver.lock();
        if slot.as_mut().is_some_and(|p| p.check_running().is_ok()) {
            return Ok(());
        }
        let args = node.apiserver_args(
            self.bind_address,
            &self.etcd_url(),
            &self.fixtures.join(&node.spec.surface),
            &self.apiserver_args,
        );
        let what = format!("lab apiserver on {}", node.name());
        let bin = crate::bins::lab_apiserver();
        *slot = Some(LabProcess::spawn(
            &what,
            &node.ns,
            &bin,
            &args,
            &node.apiserver_log_path(),
            &[],
        )?);
        Ok(())
    }

    fn wait_apiserver_ready(&self, node: &LabNode) -> Result<(), LabError> {
        let what = format!("lab apiserver on {} ({})", node.name(), node.addr());
        wait_ready(&what, &node.apiserver_log_path(), || {
            if let Some(p) = node.apiserver.lock().as_mut() {
                p.check_running()?;
            }
            let reply = self.admin_get(node, "/readyz")?;
            if reply.status == 200 {
                Ok(())
            } else {
                Err(LabError::Api {
                    what: "GET /readyz".into(),
                    status: reply.status,
                    body: reply.text(),
                })
            }
        })
    }

    /// Write what kube-apiserver's bootstrap controllers write: the system namespaces, the
    /// `kubernetes` Service, and the endpoints of every node.
    fn bootstrap_objects(&self) -> Result<(), LabError> {
        let node = &self.nodes[0];
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}
            });
            self.admin_create_or_replace(node, "/api/v1/namespaces", ns, &obj)?;
        }
        let svc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"},
            },
            "spec": {
                "type": "ClusterIP",
                "clusterIP": "10.96.0.1",
                "clusterIPs": ["10.96.0.1"],
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack",
                "sessionAffinity": "None",
                "internalTrafficPolicy": "Cluster",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
            },
        });
        self.admin_create_or_replace(
            node,
            "/api/v1/namespaces/default/services",
            "kubernetes",
            &svc,
        )?;
        let names: Vec<&str> = self.nodes.iter().map(|n| n.name()).collect();
        self.sync_endpoints(&names)
    }

    /// Rewrite the `kubernetes` Endpoints and EndpointSlice (namespace default) to list the
    /// named nodes' apiservers, as kube-apiserver's lease reconciler keeps them. The lab
    /// does not do this on its own when a node stops: tests choose.
    pub fn sync_endpoints(&self, node_names: &[&str]) -> Result<(), LabError> {
        let mut ips = Vec::new();
        for name in node_names {
            ips.push(self.node(name)?.ipv4.to_string());
        }
        ips.sort();
        let writer = self
            .nodes
            .iter()
            .find(|n| n.apiserver_running())
            .ok_or_else(|| LabError::Api {
                what: "sync endpoints".into(),
                status: 0,
                body: "no lab apiserver is running".into(),
            })?;
        let slice = serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes"},
            },
            "addressType": "IPv4",
            "endpoints": ips.iter().map(|ip| serde_json::json!({
                "addresses": [ip],
                "conditions": {"ready": true},
            })).collect::<Vec<_>>(),
            "ports": [{"name": "https", "port": APISERVER_PORT, "protocol": "TCP"}],
        });
        self.admin_create_or_replace(
            writer,
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            "kubernetes",
            &slice,
        )?;
        let endpoints = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
            },
            "subsets": [{
                "addresses": ips.iter().map(|ip| serde_json::json!({"ip": ip})).collect::<Vec<_>>(),
                "ports": [{"name": "https", "port": APISERVER_PORT, "protocol": "TCP"}],
            }],
        });
        self.admin_create_or_replace(
            writer,
            "/api/v1/namespaces/default/endpoints",
            "kubernetes",
            &endpoints,
        )
    }

    /// [`LabCluster::sync_endpoints`] to the nodes whose apiserver runs now (what kube's
    /// lease reconciler converges to once a stopped apiserver's lease expired).
    pub fn sync_endpoints_to_running(&self) -> Result<Vec<String>, LabError> {
        let running: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.apiserver_running())
            .map(|n| n.name())
            .collect();
        self.sync_endpoints(&running)?;
        Ok(running.iter().map(|n| n.to_string()).collect())
    }

    /// POST `obj` to `collection`; on 409 replace the existing object (PUT with its
    /// resourceVersion).
    pub fn admin_create_or_replace(
        &self,
        node: &LabNode,
        collection: &str,
        name: &str,
        obj: &serde_json::Value,
    ) -> Result<(), LabError> {
        let created = self.admin_request(node, "POST", collection, Some(obj))?;
        match created.status {
            200..=202 => return Ok(()),
            409 => {}
            status => {
                return Err(LabError::Api {
                    what: format!("POST {collection} ({name}) via {}", node.name()),
                    status,
                    body: created.text(),
                });
            }
        }
        let item = format!("{collection}/{name}");
        let current = self.admin_get(node, &item)?;
        if current.status != 200 {
            return Err(LabError::Api {
                what: format!("GET {item} via {}", node.name()),
                status: current.status,
                body: current.text(),
            });
        }
        let mut obj = obj.clone();
        obj["metadata"]["resourceVersion"] = current.json()["metadata"]["resourceVersion"].clone();
        let replaced = self.admin_request(node, "PUT", &item, Some(&obj))?;
        if replaced.status == 200 || replaced.status == 201 {
            Ok(())
        } else {
            Err(LabError::Api {
                what: format!("PUT {item} via {}", node.name()),
                status: replaced.status,
                body: replaced.text(),
            })
        }
    }

    /// One request as the admin (client cert) to `node`'s address, from the client
    /// namespace.
    pub fn admin_request(
        &self,
        node: &LabNode,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, LabError> {
        self.admin
            .request(&self.client, node.addr(), method, path, body)
            .map_err(|source| LabError::Https {
                what: format!("{method} {path} via {}", node.name()),
                source,
            })
    }

    /// `GET path` as the admin through `node`.
    pub fn admin_get(&self, node: &LabNode, path: &str) -> Result<Reply, LabError> {
        self.admin_request(node, "GET", path, None)
    }

    /// The nodes in spec order.
    pub fn nodes(&self) -> &[LabNode] {
        &self.nodes
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Result<&LabNode, LabError> {
        self.nodes
            .iter()
            .find(|n| n.name() == name)
            .ok_or_else(|| LabError::NoSuchNode(name.to_string()))
    }

    /// The client namespace (on the segment, reaches every node IP).
    pub fn client(&self) -> &Netns {
        &self.client
    }

    /// The generated PKI (issue more credentials from it).
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The shared etcd's client URL (`http://198.18.0.2:2379`).
    pub fn etcd_url(&self) -> String {
        format!("http://{ETCD_V4}:{ETCD_PORT}")
    }

    /// The shared etcd's network namespace (on the segment at [`ETCD_V4`]).
    pub fn etcd_netns(&self) -> &Netns {
        &self.etcd_ns
    }

    /// The shared etcd's log.
    pub fn etcd_log(&self) -> String {
        self.etcd
            .lock()
            .as_ref()
            .map(|e| e.log())
            .unwrap_or_default()
    }

    /// The lab's working directory.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// kubectl's discovery cache for this lab (kept apart from `~/.kube/cache`, which
    /// would carry another lab's view of the same addresses).
    pub fn kube_cache_dir(&self) -> PathBuf {
        self.dir.0.join("kube-cache")
    }

    /// Stop `node`'s apiserver (SIGTERM, then SIGKILL); the endpoints stay as they are.
    pub fn stop_apiserver(&self, node: &str) -> Result<(), LabError> {
        let node = self.node(node)?;
        if let Some(p) = node.apiserver.lock().take() {
            p.stop();
        }
        Ok(())
    }

    /// Start `node`'s apiserver again (no-op when it runs) and wait until it is ready.
    pub fn start_apiserver(&self, node: &str) -> Result<(), LabError> {
        let node = self.node(node)?;
        self.spawn_apiserver(node)?;
        self.wait_apiserver_ready(node)
    }

    /// Re-issue `node`'s serving cert (new key, same SANs) and restart its apiserver so it
    /// serves the new one (kube-apiserver reloads the files in place; the lab apiserver
    /// reads them at start). Returns the new pair.
    pub fn rotate_serving_cert(&self, node: &str) -> Result<CertKey, LabError> {
        let n = self.node(node)?;
        let pair = n.pki.rotate_serving(&self.pki)?;
        self.stop_apiserver(node)?;
        self.start_apiserver(node)?;
        Ok(pair)
    }

    /// The serving chain `node` presents now (DER, leaf first), verified against the CA.
    pub fn served_chain(&self, node: &str) -> Result<Vec<Vec<u8>>, LabError> {
        let n = self.node(node)?;
        self.admin
            .served_chain(&self.client, n.addr())
            .map_err(|source| LabError::Https {
                what: format!("TLS handshake with {}", n.name()),
                source,
            })
    }

    /// A command run inside the client namespace, with the lab's kubectl cache.
    pub fn client_command(&self, program: &str) -> Command {
        let mut cmd = self.client.command(program);
        cmd.env("KUBECACHEDIR", self.kube_cache_dir());
        cmd
    }

    /// Run `kubectl --kubeconfig <node admin.conf> <args>` in the client namespace.
    pub fn kubectl(&self, node: &str, args: &[&str]) -> Result<CmdOutput, LabError> {
        let kubeconfig = self.node(node)?.kubeconfig.clone();
        self.kubectl_with(&kubeconfig, args)
    }

    /// Run kubectl with any kubeconfig in the client namespace.
    pub fn kubectl_with(&self, kubeconfig: &Path, args: &[&str]) -> Result<CmdOutput, LabError> {
        let mut cmd = self.client_command("kubectl");
        cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
        run(cmd, "kubectl", None)
    }

    /// Run kubectl inside `node`'s own namespace against its loopback
    /// (`https://127.0.0.1:6443`), like a control-plane component on the node.
    pub fn kubectl_on_node(&self, node: &str, args: &[&str]) -> Result<CmdOutput, LabError> {
        let n = self.node(node)?;
        let mut cmd = n.ns.command("kubectl");
        cmd.env(
            "KUBECACHEDIR",
            self.kube_cache_dir().join(format!("on-{node}")),
        )
        .arg("--kubeconfig")
        .arg(&n.local_kubeconfig)
        .args(args);
        run(cmd, "kubectl", None)
    }

    /// Like [`LabCluster::kubectl`] with `stdin` fed to the command (`apply -f -`).
    pub fn kubectl_stdin(
        &self,
        node: &str,
        args: &[&str],
        stdin: &str,
    ) -> Result<CmdOutput, LabError> {
        let mut cmd = self.client_command("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.node(node)?.kubeconfig())
            .args(args);
        run(cmd, "kubectl", Some(stdin))
    }

    /// Run `python3 <script> <args>` in the client namespace with `KUBECONFIG` set to the
    /// node's admin kubeconfig.
    pub fn python(&self, node: &str, script: &Path, args: &[&str]) -> Result<CmdOutput, LabError> {
        self.python_with_input(node, script, args, None)
    }

    /// Like [`LabCluster::python`], feeding `stdin` to the script.
    pub fn python_with_input(
        &self,
        node: &str,
        script: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<CmdOutput, LabError> {
        let mut cmd = self.client_command("python3");
        cmd.env("KUBECONFIG", self.node(node)?.kubeconfig())
            .env("PYTHONUNBUFFERED", "1")
            .arg(script)
            .args(args);
        run(cmd, "python3", stdin)
    }

    /// A script under `tests/python/`.
    pub fn python_script(name: &str) -> PathBuf {
        crate::bins::repo_root().join("tests/python").join(name)
    }

    /// The node's audit events so far (one JSON object per line).
    pub fn audit_log(&self, node: &str) -> Result<Vec<serde_json::Value>, LabError> {
        let path = self.node(node)?.audit_log_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("read {}", path.display()))(e)),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).map_err(|e| LabError::Audit {
                    path: path.clone(),
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    /// Start `mvp <args>` inside `node`'s namespace (e.g. `["run", "--netns", ...]`); the
    /// process is stopped when the returned handle drops. Output goes to
    /// `<node dir>/<log_name>.log`. `RUST_LOG` is passed through.
    pub fn start_mvp(
        &self,
        node: &str,
        log_name: &str,
        args: &[&str],
    ) -> Result<LabProcess, LabError> {
        let n = self.node(node)?;
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let log = n.dir.join(format!("{log_name}.log"));
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
        LabProcess::spawn(
            &format!("mvp on {node}"),
            &n.ns,
            &crate::bins::mvp(),
            &args,
            &log,
            &[("RUST_LOG", &rust_log)],
        )
    }

    /// Plain-HTTP `GET path` to `addr` from inside `node`'s namespace (e.g. mvp's admin
    /// endpoint `127.0.0.1:9464/readyz`); returns the status and body.
    pub fn node_http_get(
        &self,
        node: &str,
        addr: SocketAddr,
        path: &str,
    ) -> Result<(u16, String), LabError> {
        use std::io::Read;
        let n = self.node(node)?;
        let what = format!("GET http://{addr}{path} in {node}");
        let raw =
            n.ns.try_run(|| -> std::io::Result<String> {
                let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
                let mut buf = String::new();
                s.read_to_string(&mut buf)?;
                Ok(buf)
            })?
            .map_err(io_err(what.clone()))?;
        let status = raw
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| LabError::Api {
                what: what.clone(),
                status: 0,
                body: raw.chars().take(200).collect(),
            })?;
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// Write a kubeconfig for `node` with any credentials (e.g. a cert from
    /// [`Pki::client_cert`]) to `<node dir>/<name>.conf` and return its path.
    pub fn write_kubeconfig(
        &self,
        node: &str,
        name: &str,
        user: &str,
        credentials: Credentials,
    ) -> Result<PathBuf, LabError> {
        let n = self.node(node)?;
        let path = n.dir.join(format!("{name}.conf"));
        Kubeconfig {
            server: n.url(),
            ca_pem: self.pki.ca_pem(),
            user: user.to_string(),
            credentials,
        }
        .write(&path)?;
        Ok(path)
    }

    /// The per-node kubeconfig paths, for reports.
    pub fn kubeconfigs(&self) -> BTreeMap<String, PathBuf> {
        self.nodes
            .iter()
            .map(|n| (n.name().to_string(), n.kubeconfig.clone()))
            .collect()
    }

    /// The segment (hub namespace with the bridge).
    pub fn segment(&self) -> &Segment {
        &self.segment
    }
}

/// Most nodes a lab lays out (198.18.0.11 upwards, below the client's .100).
pub const MAX_NODES: usize = 80;

fn validate(spec: &LabSpec) -> Result<(), LabError> {
    if spec.nodes.is_empty() || spec.nodes.len() > MAX_NODES {
        return Err(LabError::Spec(format!(
            "{} nodes; a lab has 1 to {MAX_NODES}",
            spec.nodes.len()
        )));
    }
    let mut names = std::collections::BTreeSet::new();
    for n in &spec.nodes {
        let ok = !n.name.is_empty()
            && n.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(LabError::Spec(format!(
                "node name {:?}: use lower-case letters, digits and '-'",
                n.name
            )));
        }
        if !names.insert(n.name.as_str()) {
            return Err(LabError::Spec(format!("two nodes named {:?}", n.name)));
        }
    }
    Ok(())
}

fn run(mut cmd: Command, what: &str, stdin: Option<&str>) -> Result<CmdOutput, LabError> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| LabError::Spawn {
        what: what.to_string(),
        program: PathBuf::from(what),
        source,
    })?;
    // Feed stdin from a thread so a chatty child cannot deadlock against us.
    let feeder = match (stdin, child.stdin.take()) {
        (Some(input), Some(mut pipe)) => {
            let input = input.to_string();
            Some(std::thread::spawn(move || pipe.write_all(input.as_bytes())))
        }
        _ => None,
    };
    let out = child
        .wait_with_output()
        .map_err(io_err(format!("wait for {what}")))?;
    if let Some(Ok(Err(e))) = feeder.map(|f| f.join()) {
        // A child that exits without reading its input speaks through its output.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(io_err(format!("write stdin of {what}"))(e));
        }
    }
    Ok(CmdOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Poll `check` with backoff until it succeeds; an `Exited` error ends the wait at once.
fn wait_ready(
    what: &str,
    log: &Path,
    mut check: impl FnMut() -> Result<(), LabError>,
) -> Result<(), LabError> {
    let patience = crate::eventually::patience().max(Duration::from_secs(30));
    let start = Instant::now();
    let mut delay = Duration::from_millis(10);
    loop {
        match check() {
            Ok(()) => return Ok(()),
            Err(e @ LabError::Exited { .. }) => return Err(e),
            Err(e) if start.elapsed() >= patience => {
                return Err(LabError::NotReady {
                    what: what.to_string(),
                    waited: start.elapsed(),
                    last: e.to_string(),
                    log: log.to_path_buf(),
                    tail: tail(log, 30),
                });
            }
            Err(_) => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(200));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_checked_before_anything_is_made() {
        let bad = |nodes: Vec<NodeSpec>| match validate(&LabSpec::new(nodes)) {
            Err(LabError::Spec(msg)) => msg,
            other => panic!("accepted: {other:?}"),
        };
        assert!(bad(vec![]).contains("0 nodes"));
        assert!(bad(vec![NodeSpec::v1_33("a"), NodeSpec::v1_36("a")]).contains("two nodes"));
        assert!(bad(vec![NodeSpec::v1_33("A/b")]).contains("lower-case"));
        let many = (0..=MAX_NODES)
            .map(|i| NodeSpec::v1_33(&format!("n{i}")))
            .collect();
        assert!(bad(many).contains("81 nodes"));
        assert!(validate(&LabSpec::mixed()).is_ok());
        assert_eq!(NodeSpec::v1_36("x").minor(), "1.36");
    }
}
