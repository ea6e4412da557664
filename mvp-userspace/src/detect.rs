//! Zero-config detection: read kube-apiserver's own settings so `mvp run` and `mvp doctor`
//! need no flags on a control-plane node.
//!
//! Sources, in order: the static pod manifest (kubeadm writes
//! `/etc/kubernetes/manifests/kube-apiserver.yaml`), else the running kube-apiserver's
//! command line (`/proc/<pid>/cmdline`). Explicit mvp flags override each detected value,
//! and every value remembers where it came from so `mvp doctor` can say so.
//!
//! Pure file reading and parsing; the node's own addresses are an input (the caller asks
//! [`crate::steer::node_addresses`]) so tests are deterministic.
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// kubeadm's manifest path.
pub const DEFAULT_MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";
/// Where running processes are listed.
pub const DEFAULT_PROC_ROOT: &str = "/proc";
/// kube-apiserver's default --secure-port.
pub const DEFAULT_SECURE_PORT: u16 = 6443;

/// Detection flags shared by `mvp run` and `mvp doctor`.
#[derive(Debug, Clone, clap::Args)]
pub struct DetectArgs {
    /// kube-apiserver's static pod manifest, read for zero-config detection.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_MANIFEST)]
    pub apiserver_manifest: PathBuf,
    /// Where to look for a running kube-apiserver when the manifest is missing.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_PROC_ROOT)]
    pub proc_root: PathBuf,
    /// An extra address (e.g. a VIP on this node) to steer, on the secure port. Repeatable.
    #[arg(long = "steer-vip", value_name = "ADDR")]
    pub steer_vip: Vec<IpAddr>,
    /// CA that verifies peers' serving certs (default: detected --peer-ca-file, else the
    /// client CA, as kubeadm's ca.crt signs every apiserver cert).
    #[arg(long, value_name = "PATH")]
    pub peer_ca_file: Option<PathBuf>,
    /// The apiserver's advertise address (default: detected).
    #[arg(long, value_name = "ADDR")]
    pub advertise_address: Option<IpAddr>,
    /// The apiserver's bind address (default: detected, else 0.0.0.0).
    #[arg(long, value_name = "ADDR")]
    pub bind_address: Option<IpAddr>,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// kube-apiserver's static pod manifest.
    Manifest {
        /// Its path.
        path: PathBuf,
    },
    /// A running kube-apiserver's command line.
    Process {
        /// Its pid.
        pid: u32,
    },
    /// An explicit mvp flag.
    Flag,
    /// mvp's (or kube-apiserver's) default.
    Default,
    /// The node's interface addresses (bind address is a wildcard).
    NodeAddresses,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Manifest { path } => write!(f, "manifest {}", path.display()),
            Source::Process { pid } => write!(f, "kube-apiserver pid {pid}"),
            Source::Flag => f.write_str("flag"),
            Source::Default => f.write_str("default"),
            Source::NodeAddresses => f.write_str("node addresses (bind address is a wildcard)"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// Its origin.
    pub source: Source,
}

impl<T> Sourced<T> {
    fn new(value: T, source: Source) -> Self {
        Sourced { value, source }
    }
}

/// Why detection failed.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Neither source exists and the flags do not say enough.
    #[error(
        "detect: no kube-apiserver found: {manifest} does not exist and no process under {proc_root} is kube-apiserver; \
         run mvp on a control-plane node, point --apiserver-manifest at the manifest, or pass \
         --tls-cert-file, --tls-private-key-file and --steer (or --advertise-address) explicitly"
    )]
    NotFound {
        /// The manifest path tried.
        manifest: PathBuf,
        /// The proc root tried.
        proc_root: PathBuf,
    },
    /// The manifest exists but cannot be read.
    #[error("detect: cannot read {path}: check its permissions (mvp needs read access)")]
    ReadManifest {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The manifest is not a pod running kube-apiserver.
    #[error(
        "detect: {path} is not a kube-apiserver static pod manifest ({why}); fix it or pass --apiserver-manifest"
    )]
    BadManifest {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A detected or given flag value does not parse.
    #[error(
        "detect: {flag}={value:?} from {origin} is not valid ({why}); pass the mvp flag {flag} explicitly"
    )]
    BadValue {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// Where it came from.
        origin: Source,
        /// What is wrong.
        why: String,
    },
    /// A required setting is neither detected nor given.
    #[error("detect: {flag} is not set by kube-apiserver ({origin}) nor given: pass {flag}")]
    Missing {
        /// The flag.
        flag: &'static str,
        /// Where we looked.
        origin: Source,
    },
}

/// kube-apiserver flags as given on its command line (last occurrence wins, like pflag).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiserverFlags(BTreeMap<String, String>);

impl ApiserverFlags {
    /// Parse arguments (without argv[0]) in `--flag=value` and `--flag value` forms. A
    /// `--flag` followed by another flag or nothing is a boolean (`true`).
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Self {
        let mut map = BTreeMap::new();
        let mut i = 0;
        while i < args.len() {
            let arg = args[i].as_ref();
            i += 1;
            let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                continue; // kube-apiserver takes no positional arguments
            };
            if body.is_empty() {
                continue;
            }
            if let Some((name, value)) = body.split_once('=') {
                map.insert(name.to_owned(), value.to_owned());
            } else if let Some(next) = args.get(i).map(AsRef::as_ref)
                && !next.starts_with('-')
            {
                map.insert(body.to_owned(), next.to_owned());
                i += 1;
            } else {
                map.insert(body.to_owned(), "true".to_owned());
            }
        }
        ApiserverFlags(map)
    }

    /// A flag's value (name without dashes).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Where kube-apiserver's flags were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The flags.
    pub flags: ApiserverFlags,
    /// Manifest or process.
    pub source: Source,
}

fn is_apiserver(argv0: &str) -> bool {
    Path::new(argv0).file_name().and_then(|n| n.to_str()) == Some("kube-apiserver")
}

/// Read the static pod manifest. `Ok(None)` when it does not exist.
pub fn from_manifest(path: &Path) -> Result<Option<Found>, DetectError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DetectError::ReadManifest {
                path: path.to_owned(),
                source,
            });
        }
    };
    let bad = |why: String| DetectError::BadManifest {
        path: path.to_owned(),
        why,
    };
    #[derive(serde::Deserialize)]
    struct Pod {
        spec: Spec,
    }
    #[derive(serde::Deserialize)]
    struct Spec {
        containers: Vec<Container>,
    }
    #[derive(serde::Deserialize)]
    struct Container {
        #[serde(default)]
        name: String,
        #[serde(default)]
        command: Vec<String>,
        #[serde(default)]
        args: Vec<String>,
    }
    let pod: Pod = serde_yaml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let container = pod
        .spec
        .containers
        .into_iter()
        .find(|c| c.command.first().is_some_and(|c| is_apiserver(c)) || c.name == "kube-apiserver")
        .ok_or_else(|| bad("no container runs kube-apiserver".into()))?;
    let mut args: Vec<String> = container.command.into_iter().skip(1).collect();
    args.extend(container.args);
    Ok(Some(Found {
        flags: ApiserverFlags::parse(&args),
        source: Source::Manifest {
            path: path.to_owned(),
        },
    }))
}

/// Find a running kube-apiserver under `proc_root` (lowest pid if several).
pub fn from_proc(proc_root: &Path) -> Option<Found> {
    let mut pids: Vec<u32> = std::fs::read_dir(proc_root)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter().find_map(|pid| {
        // Processes come and go; unreadable ones are simply not kube-apiserver.
        let raw = std::fs::read(proc_root.join(pid.to_string()).join("cmdline")).ok()?;
        let argv: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !is_apiserver(argv.first()?) {
            return None;
        }
        Some(Found {
            flags: ApiserverFlags::parse(&argv[1..]),
            source: Source::Process { pid },
        })
    })
}

/// Explicit mvp flags that override detection (all optional).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// --secure-port.
    pub secure_port: Option<u16>,
    /// --advertise-address.
    pub advertise_address: Option<IpAddr>,
    /// --bind-address.
    pub bind_address: Option<IpAddr>,
    /// --steer (explicit steer targets replace the derived set).
    pub steer: Vec<SocketAddr>,
    /// --steer-vip.
    pub steer_vip: Vec<IpAddr>,
    /// --tls-cert-file.
    pub tls_cert_file: Option<PathBuf>,
    /// --tls-private-key-file.
    pub tls_private_key_file: Option<PathBuf>,
    /// --client-ca-file.
    pub client_ca_file: Option<PathBuf>,
    /// --requestheader-client-ca-file.
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// --requestheader-allowed-names.
    pub requestheader_allowed_names: Option<Vec<String>>,
    /// --requestheader-username-headers.
    pub requestheader_username_headers: Option<Vec<String>>,
    /// --requestheader-group-headers.
    pub requestheader_group_headers: Option<Vec<String>>,
    /// --requestheader-uid-headers.
    pub requestheader_uid_headers: Option<Vec<String>>,
    /// --requestheader-extra-headers-prefix.
    pub requestheader_extra_headers_prefix: Option<Vec<String>>,
    /// --proxy-client-cert-file.
    pub proxy_client_cert_file: Option<PathBuf>,
    /// --proxy-client-key-file.
    pub proxy_client_key_file: Option<PathBuf>,
    /// --peer-ca-file.
    pub peer_ca_file: Option<PathBuf>,
    /// --http2-max-streams-per-connection.
    pub http2_max_streams_per_connection: Option<u32>,
}

impl Overrides {
    /// The overrides carried by [`DetectArgs`].
    pub fn from_detect_args(args: &DetectArgs) -> Self {
        Overrides {
            advertise_address: args.advertise_address,
            bind_address: args.bind_address,
            steer_vip: args.steer_vip.clone(),
            peer_ca_file: args.peer_ca_file.clone(),
            ..Default::default()
        }
    }

    /// The overrides `mvp run` / `mvp doctor` carry: detection flags, the front door's
    /// kube-apiserver-named flags (empty lists and absent values are "not given"), and
    /// explicit --steer targets.
    pub fn from_flags(
        detect: &DetectArgs,
        fd: &crate::frontdoor::FrontDoorArgs,
        steer: &[crate::addr::SteerTarget],
    ) -> Self {
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        Overrides {
            secure_port: fd.secure_port,
            steer: steer.iter().map(|t| t.get()).collect(),
            tls_cert_file: fd.tls_cert_file.clone(),
            tls_private_key_file: fd.tls_private_key_file.clone(),
            client_ca_file: fd.client_ca_file.clone(),
            requestheader_client_ca_file: fd.requestheader_client_ca_file.clone(),
            requestheader_allowed_names: list(&fd.requestheader_allowed_names),
            requestheader_username_headers: list(&fd.requestheader_username_headers),
            requestheader_group_headers: list(&fd.requestheader_group_headers),
            requestheader_uid_headers: list(&fd.requestheader_uid_headers),
            requestheader_extra_headers_prefix: list(&fd.requestheader_extra_headers_prefix),
            proxy_client_cert_file: fd.proxy_client_cert_file.clone(),
            proxy_client_key_file: fd.proxy_client_key_file.clone(),
            // 0 is the front door's "kube-apiserver's default".
            http2_max_streams_per_connection: (fd.http2_max_streams_per_connection != 0)
                .then_some(fd.http2_max_streams_per_connection),
            ..Overrides::from_detect_args(detect)
        }
    }

    /// True when the flags alone configure mvp (no detection needed).
    fn complete(&self) -> bool {
        self.tls_cert_file.is_some()
            && self.tls_private_key_file.is_some()
            && (!self.steer.is_empty() || self.advertise_address.is_some())
    }
}

/// kube-apiserver's settings as mvp uses them, each with its origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detected {
    /// Where kube-apiserver's flags were read (None: flags only).
    pub origin: Option<Source>,
    /// The secure port (steered port, local upstream port).
    pub secure_port: Sourced<u16>,
    /// --advertise-address.
    pub advertise_address: Option<Sourced<IpAddr>>,
    /// --bind-address.
    pub bind_address: Sourced<IpAddr>,
    /// What mvp steers: never loopback, never a wildcard. Sorted, unique.
    pub steer: Vec<Sourced<SocketAddr>>,
    /// Serving cert.
    pub tls_cert_file: Sourced<PathBuf>,
    /// Serving key.
    pub tls_private_key_file: Sourced<PathBuf>,
    /// x509 client CA.
    pub client_ca_file: Option<Sourced<PathBuf>>,
    /// Front-proxy CA.
    pub requestheader_client_ca_file: Option<Sourced<PathBuf>>,
    /// Allowed front-proxy CNs (empty = any).
    pub requestheader_allowed_names: Sourced<Vec<String>>,
    /// User headers.
    pub requestheader_username_headers: Sourced<Vec<String>>,
    /// Group headers.
    pub requestheader_group_headers: Sourced<Vec<String>>,
    /// UID headers (kubeadm sets none).
    pub requestheader_uid_headers: Sourced<Vec<String>>,
    /// Extra-header prefixes.
    pub requestheader_extra_headers_prefix: Sourced<Vec<String>>,
    /// Front-proxy client cert.
    pub proxy_client_cert_file: Option<Sourced<PathBuf>>,
    /// Front-proxy client key.
    pub proxy_client_key_file: Option<Sourced<PathBuf>>,
    /// CA verifying peers' serving certs.
    pub peer_ca_file: Option<Sourced<PathBuf>>,
    /// h2 streams per connection, when kube-apiserver sets it (mvp must not allow more).
    pub http2_max_streams_per_connection: Option<Sourced<u32>>,
}

impl Detected {
    /// The front door's flags with every value filled in: given flags stay as they are
    /// (they were overrides), the rest come from detection. kube-apiserver sets no uid
    /// headers under kubeadm; they stay unset so the front door keeps its own default.
    pub fn front_door_args(
        &self,
        given: &crate::frontdoor::FrontDoorArgs,
    ) -> crate::frontdoor::FrontDoorArgs {
        let path = |v: &Option<Sourced<PathBuf>>| v.as_ref().map(|s| s.value.clone());
        let mut fd = given.clone();
        fd.secure_port = Some(self.secure_port.value);
        fd.tls_cert_file = Some(self.tls_cert_file.value.clone());
        fd.tls_private_key_file = Some(self.tls_private_key_file.value.clone());
        fd.client_ca_file = path(&self.client_ca_file);
        fd.requestheader_client_ca_file = path(&self.requestheader_client_ca_file);
        fd.requestheader_allowed_names = self.requestheader_allowed_names.value.clone();
        fd.requestheader_username_headers = self.requestheader_username_headers.value.clone();
        fd.requestheader_group_headers = self.requestheader_group_headers.value.clone();
        fd.requestheader_uid_headers = self.requestheader_uid_headers.value.clone();
        fd.requestheader_extra_headers_prefix =
            self.requestheader_extra_headers_prefix.value.clone();
        fd.proxy_client_cert_file = path(&self.proxy_client_cert_file);
        fd.proxy_client_key_file = path(&self.proxy_client_key_file);
        if let Some(n) = &self.http2_max_streams_per_connection {
            fd.http2_max_streams_per_connection = n.value;
        }
        fd
    }
}

/// One row of the "what was detected and from where" table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The setting (kube-apiserver flag name).
    pub setting: &'static str,
    /// Its value, rendered.
    pub value: String,
    /// Where it came from.
    pub source: String,
}

impl Detected {
    /// Every setting as a row, in a stable order.
    pub fn rows(&self) -> Vec<Row> {
        fn row<T>(setting: &'static str, v: &Sourced<T>, show: impl Fn(&T) -> String) -> Row {
            Row {
                setting,
                value: show(&v.value),
                source: v.source.to_string(),
            }
        }
        fn opt<T>(
            setting: &'static str,
            v: &Option<Sourced<T>>,
            show: impl Fn(&T) -> String,
        ) -> Row {
            match v {
                Some(v) => row(setting, v, show),
                None => Row {
                    setting,
                    value: "(not set)".into(),
                    source: "-".into(),
                },
            }
        }
        let path = |p: &PathBuf| p.display().to_string();
        let list = |l: &Vec<String>| {
            if l.is_empty() {
                "(empty)".into()
            } else {
                l.join(",")
            }
        };
        let mut rows = vec![
            row("--secure-port", &self.secure_port, u16::to_string),
            opt("--advertise-address", &self.advertise_address, |a| {
                a.to_string()
            }),
            row("--bind-address", &self.bind_address, IpAddr::to_string),
        ];
        for s in &self.steer {
            rows.push(row("steer", s, SocketAddr::to_string));
        }
        rows.extend([
            row("--tls-cert-file", &self.tls_cert_file, path),
            row("--tls-private-key-file", &self.tls_private_key_file, path),
            opt("--client-ca-file", &self.client_ca_file, path),
            opt(
                "--requestheader-client-ca-file",
                &self.requestheader_client_ca_file,
                path,
            ),
            row(
                "--requestheader-allowed-names",
                &self.requestheader_allowed_names,
                list,
            ),
            row(
                "--requestheader-username-headers",
                &self.requestheader_username_headers,
                list,
            ),
            row(
                "--requestheader-group-headers",
                &self.requestheader_group_headers,
                list,
            ),
            row(
                "--requestheader-uid-headers",
                &self.requestheader_uid_headers,
                list,
            ),
            row(
                "--requestheader-extra-headers-prefix",
                &self.requestheader_extra_headers_prefix,
                list,
            ),
            opt(
                "--proxy-client-cert-file",
                &self.proxy_client_cert_file,
                path,
            ),
            opt("--proxy-client-key-file", &self.proxy_client_key_file, path),
            opt("--peer-ca-file", &self.peer_ca_file, path),
            opt(
                "--http2-max-streams-per-connection",
                &self.http2_max_streams_per_connection,
                u32::to_string,
            ),
        ]);
        rows
    }
}

/// Find kube-apiserver's flags: the manifest, else /proc. `Ok(None)` when neither exists.
pub fn find(manifest: &Path, proc_root: &Path) -> Result<Option<Found>, DetectError> {
    match from_manifest(manifest)? {
        Some(found) => Ok(Some(found)),
        None => Ok(from_proc(proc_root)),
    }
}

/// Detect and apply overrides. `node_addrs` are the node's interface addresses (used when
/// the apiserver binds a wildcard).
pub fn detect(
    manifest: &Path,
    proc_root: &Path,
    overrides: &Overrides,
    node_addrs: &[IpAddr],
) -> Result<Detected, DetectError> {
    let found = find(manifest, proc_root)?;
    if found.is_none() && !overrides.complete() {
        return Err(DetectError::NotFound {
            manifest: manifest.to_owned(),
            proc_root: proc_root.to_owned(),
        });
    }
    resolve(found.as_ref(), overrides, node_addrs)
}

/// Combine found flags (if any) with overrides.
pub fn resolve(
    found: Option<&Found>,
    o: &Overrides,
    node_addrs: &[IpAddr],
) -> Result<Detected, DetectError> {
    let origin = found.map(|f| f.source.clone());
    let missing_origin = origin.clone().unwrap_or(Source::Default);
    // A detected raw value with its source.
    let raw = |name: &str| -> Option<Sourced<&str>> {
        let f = found?;
        f.flags
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| Sourced::new(v, f.source.clone()))
    };
    let path = |flag: &'static str, over: &Option<PathBuf>| -> Option<Sourced<PathBuf>> {
        match over {
            Some(p) => Some(Sourced::new(p.clone(), Source::Flag)),
            None => raw(&flag[2..]).map(|r| Sourced::new(PathBuf::from(r.value), r.source)),
        }
    };
    let list = |flag: &'static str,
                over: &Option<Vec<String>>,
                default: &[&str]|
     -> Sourced<Vec<String>> {
        match over {
            Some(v) => Sourced::new(v.clone(), Source::Flag),
            None => match raw(&flag[2..]) {
                Some(r) => Sourced::new(
                    r.value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    r.source,
                ),
                None => Sourced::new(
                    default.iter().map(|s| (*s).to_owned()).collect(),
                    Source::Default,
                ),
            },
        }
    };
    let ip = |flag: &'static str,
              over: Option<IpAddr>|
     -> Result<Option<Sourced<IpAddr>>, DetectError> {
        if let Some(a) = over {
            return Ok(Some(Sourced::new(a, Source::Flag)));
        }
        let Some(r) = raw(&flag[2..]) else {
            return Ok(None);
        };
        let a = r.value.parse().map_err(|_| DetectError::BadValue {
            flag,
            value: r.value.to_owned(),
            origin: r.source.clone(),
            why: "not an IP address".into(),
        })?;
        Ok(Some(Sourced::new(a, r.source)))
    };

    let secure_port =
        match (o.secure_port, raw("secure-port")) {
            (Some(p), _) => Sourced::new(p, Source::Flag),
            (None, Some(r)) => {
                let p: u16 = r.value.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                    DetectError::BadValue {
                        flag: "--secure-port",
                        value: r.value.to_owned(),
                        origin: r.source.clone(),
                        why: "not a port number 1-65535".into(),
                    }
                })?;
                Sourced::new(p, r.source)
            }
            (None, None) => Sourced::new(DEFAULT_SECURE_PORT, Source::Default),
        };
    let advertise_address = ip("--advertise-address", o.advertise_address)?;
    let bind_address = ip("--bind-address", o.bind_address)?
        .unwrap_or_else(|| Sourced::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), Source::Default));

    let port = secure_port.value;
    let mut steer: Vec<Sourced<SocketAddr>> = Vec::new();
    let mut add = |ip: IpAddr, source: Source| {
        let a = crate::addr::canonical(SocketAddr::new(ip, port));
        if steerable(a.ip()) && !steer.iter().any(|s| s.value == a) {
            steer.push(Sourced::new(a, source));
        }
    };
    if o.steer.is_empty() {
        if let Some(a) = &advertise_address {
            add(a.value, a.source.clone());
        }
        if bind_address.value.is_unspecified() {
            for a in node_addrs {
                // kube-apiserver listens on a wildcard of one family only when the other
                // is unavailable; dual-stack wildcards take both, so steer every family.
                add(*a, Source::NodeAddresses);
            }
        } else {
            add(bind_address.value, bind_address.source.clone());
        }
        for v in &o.steer_vip {
            add(*v, Source::Flag);
        }
    } else {
        for a in &o.steer {
            let a = crate::addr::canonical(*a);
            if steerable(a.ip()) && !steer.iter().any(|s| s.value == a) {
                steer.push(Sourced::new(a, Source::Flag));
            }
        }
    }
    steer.sort_by_key(|s| s.value);

    let tls_cert_file =
        path("--tls-cert-file", &o.tls_cert_file).ok_or_else(|| DetectError::Missing {
            flag: "--tls-cert-file",
            origin: missing_origin.clone(),
        })?;
    let tls_private_key_file =
        path("--tls-private-key-file", &o.tls_private_key_file).ok_or_else(|| {
            DetectError::Missing {
                flag: "--tls-private-key-file",
                origin: missing_origin.clone(),
            }
        })?;
    let client_ca_file = path("--client-ca-file", &o.client_ca_file);
    let peer_ca_file = path("--peer-ca-file", &o.peer_ca_file).or_else(|| client_ca_file.clone());

    Ok(Detected {
        origin,
        secure_port,
        advertise_address,
        bind_address,
        steer,
        tls_cert_file,
        tls_private_key_file,
        client_ca_file,
        requestheader_client_ca_file: path(
            "--requestheader-client-ca-file",
            &o.requestheader_client_ca_file,
        ),
        requestheader_allowed_names: list(
            "--requestheader-allowed-names",
            &o.requestheader_allowed_names,
            &[],
        ),
        // kube-apiserver has no defaults for these: unset means the authenticator is off.
        requestheader_username_headers: list(
            "--requestheader-username-headers",
            &o.requestheader_username_headers,
            &[],
        ),
        requestheader_group_headers: list(
            "--requestheader-group-headers",
            &o.requestheader_group_headers,
            &[],
        ),
        requestheader_uid_headers: list(
            "--requestheader-uid-headers",
            &o.requestheader_uid_headers,
            &[],
        ),
        requestheader_extra_headers_prefix: list(
            "--requestheader-extra-headers-prefix",
            &o.requestheader_extra_headers_prefix,
            &[],
        ),
        proxy_client_cert_file: path("--proxy-client-cert-file", &o.proxy_client_cert_file),
        proxy_client_key_file: path("--proxy-client-key-file", &o.proxy_client_key_file),
        peer_ca_file,
        http2_max_streams_per_connection: match (
            o.http2_max_streams_per_connection,
            raw("http2-max-streams-per-connection"),
        ) {
            (Some(n), _) => Some(Sourced::new(n, Source::Flag)),
            (None, Some(r)) => Some(Sourced::new(
                r.value.parse().map_err(|_| DetectError::BadValue {
                    flag: "--http2-max-streams-per-connection",
                    value: r.value.to_owned(),
                    origin: r.source.clone(),
                    why: "not a number".into(),
                })?,
                r.source,
            )),
            (None, None) => None,
        },
    })
}

/// Whether mvp may steer `ip`: never loopback (the apiserver's own loopback client and
/// mvp's upstream path), never a wildcard, never IPv6 link-local (scoped, not a service
/// address).
pub fn steerable(ip: IpAddr) -> bool {
    let ip = crate::addr::canonical(SocketAddr::new(ip, 0)).ip();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_flag_forms_parse_and_last_wins() {
        let f = ApiserverFlags::parse(&[
            "--secure-port",
            "6443",
            "--advertise-address=10.0.0.1",
            "--allow-privileged",
            "--bind-address",
            "0.0.0.0",
            "--secure-port=7443",
            "--enable-x",
        ]);
        assert_eq!(f.get("secure-port"), Some("7443"));
        assert_eq!(f.get("advertise-address"), Some("10.0.0.1"));
        assert_eq!(f.get("allow-privileged"), Some("true"));
        assert_eq!(f.get("bind-address"), Some("0.0.0.0"));
        assert_eq!(f.get("enable-x"), Some("true"));
        assert_eq!(f.get("nope"), None);
    }

    #[test]
    fn steer_set_never_has_loopback_or_link_local() {
        for ip in [
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "::",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!steerable(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.1", "fd00::1", "192.168.56.11"] {
            assert!(steerable(ip.parse().unwrap()), "{ip}");
        }
    }

    fn found(args: &[&str]) -> Found {
        Found {
            flags: ApiserverFlags::parse(args),
            source: Source::Process { pid: 42 },
        }
    }

    #[test]
    fn wildcard_bind_adds_node_addresses_and_vips() {
        let f = found(&[
            "--advertise-address=10.0.0.1",
            "--secure-port=6443",
            "--tls-cert-file=/a",
            "--tls-private-key-file=/b",
        ]);
        let o = Overrides {
            steer_vip: vec!["10.0.0.100".parse().unwrap()],
            ..Default::default()
        };
        let nodes: Vec<IpAddr> = ["127.0.0.1", "10.0.0.1", "fd00::1", "fe80::2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let d = resolve(Some(&f), &o, &nodes).unwrap();
        let got: Vec<String> = d.steer.iter().map(|s| s.value.to_string()).collect();
        assert_eq!(got, ["10.0.0.1:6443", "10.0.0.100:6443", "[fd00::1]:6443"]);
        assert_eq!(d.steer[0].source, Source::Process { pid: 42 });
        assert_eq!(d.steer[1].source, Source::Flag);
        assert_eq!(d.steer[2].source, Source::NodeAddresses);
        assert_eq!(d.bind_address.source, Source::Default);
    }

    #[test]
    fn http2_stream_limit_follows_the_apiserver_unless_given() {
        let f = found(&[
            "--tls-cert-file=/a",
            "--tls-private-key-file=/b",
            "--http2-max-streams-per-connection",
            "1000",
        ]);
        let d = resolve(Some(&f), &Overrides::default(), &[]).unwrap();
        assert_eq!(
            d.http2_max_streams_per_connection.as_ref().unwrap().value,
            1000
        );
        let o = Overrides {
            http2_max_streams_per_connection: Some(50),
            ..Default::default()
        };
        let d = resolve(Some(&f), &o, &[]).unwrap();
        let n = d.http2_max_streams_per_connection.unwrap();
        assert_eq!((n.value, n.source), (50, Source::Flag));
        let f = found(&["--tls-cert-file=/a", "--tls-private-key-file=/b"]);
        let d = resolve(Some(&f), &Overrides::default(), &[]).unwrap();
        assert_eq!(d.http2_max_streams_per_connection, None);
    }

    #[test]
    fn concrete_bind_is_steered_alone() {
        let f = found(&[
            "--bind-address=10.0.0.2",
            "--tls-cert-file=/a",
            "--tls-private-key-file=/b",
        ]);
        let d = resolve(
            Some(&f),
            &Overrides::default(),
            &["10.0.0.9".parse().unwrap()],
        )
        .unwrap();
        let got: Vec<String> = d.steer.iter().map(|s| s.value.to_string()).collect();
        assert_eq!(got, ["10.0.0.2:6443"]);
        assert_eq!(d.secure_port.source, Source::Default);
    }

    #[test]
    fn bad_values_name_flag_and_origin() {
        let f = found(&[
            "--secure-port=http",
            "--tls-cert-file=/a",
            "--tls-private-key-file=/b",
        ]);
        let e = resolve(Some(&f), &Overrides::default(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--secure-port") && e.contains("pid 42"), "{e}");
        let f = found(&[
            "--advertise-address=node1",
            "--tls-cert-file=/a",
            "--tls-private-key-file=/b",
        ]);
        let e = resolve(Some(&f), &Overrides::default(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--advertise-address"), "{e}");
        let f = found(&["--tls-private-key-file=/b"]);
        let e = resolve(Some(&f), &Overrides::default(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("pass --tls-cert-file"), "{e}");
    }
}
