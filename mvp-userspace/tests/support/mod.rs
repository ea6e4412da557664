//! Test support for the front door: PKI, an echoing HTTPS upstream, an in-process mvp,
//! and curl as the client.
#![allow(dead_code)]
pub mod pki;
pub mod upstream;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mvp::frontdoor::{FrontDoor, FrontDoorConfig};
use mvp::identity::RequestHeaderNames;
use mvp::steer::DirectConnector;

use pki::{Pair, Pki};

/// Patience for eventually-style waits (`MVP_TEST_PATIENCE_MS`, default 20 s).
pub fn patience() -> Duration {
    std::env::var("MVP_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(20))
}

/// Poll `check` until Ok or patience runs out (then panic with the last error).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + patience();
    let mut delay = Duration::from_millis(10);
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("gave up waiting for {what}: {e}"),
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(250));
            }
        }
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

/// The config kubeadm's flags would give, pointing at `upstream`.
pub fn config(pki: &Pki, upstream: SocketAddr) -> FrontDoorConfig {
    FrontDoorConfig {
        tls_cert_file: pki.serving.cert.clone(),
        tls_private_key_file: pki.serving.key.clone(),
        client_ca_file: Some(pki.cluster_ca_file.clone()),
        requestheader_client_ca_file: Some(pki.front_proxy_ca_file.clone()),
        requestheader_allowed_names: vec!["front-proxy-client".into()],
        header_names: RequestHeaderNames::default(),
        proxy_client: Some((pki.proxy_client.cert.clone(), pki.proxy_client.key.clone())),
        upstream,
        upstream_ca_file: pki.cluster_ca_file.clone(),
        upstream_server_name: "kubernetes.default.svc".into(),
        tls_reload_interval: Duration::from_millis(50),
        http2_max_streams_per_connection: 100,
    }
}

/// An in-process mvp front door on 127.0.0.1:<ephemeral>.
pub struct Mvp {
    pub addr: SocketAddr,
    pub door: FrontDoor,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Mvp {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Mvp {
    pub async fn start(config: &FrontDoorConfig) -> Mvp {
        let door = FrontDoor::new(config, Arc::new(DirectConnector::default()))
            .expect("front door builds");
        Self::start_door(door).await
    }

    /// Serve an already built front door (e.g. one with a test router).
    #[allow(dead_code)] // not every test binary using `support` needs it
    pub async fn start_door(door: FrontDoor) -> Mvp {
        init_tracing();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reloader = door.spawn_cert_reloader();
        let serving = door.clone();
        let server = tokio::spawn(async move {
            serving.serve(listener).await.unwrap();
        });
        Mvp {
            addr,
            door,
            tasks: vec![reloader, server],
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{}", self.addr.port(), path)
    }
}

/// What curl got.
#[derive(Debug)]
pub struct Reply {
    pub exit: i32,
    pub status: u16,
    pub head: String,
    pub body: String,
    pub stderr: String,
}

impl Reply {
    /// A response header (case-insensitive name), first value.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// Lines of the echo body that start with `name: ` (lower-case names, as echoed).
    pub fn echoed(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}: ");
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
}

/// Run curl against mvp with the cluster CA; `cert` is the client identity (None = none).
pub async fn curl(pki: &Pki, cert: Option<&Pair>, args: &[&str]) -> Reply {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "-i", "--cacert"])
        .arg(&pki.cluster_ca_file);
    if let Some(pair) = cert {
        cmd.arg("--cert")
            .arg(&pair.cert)
            .arg("--key")
            .arg(&pair.key);
    }
    cmd.args(args);
    let out = cmd.output().await.expect("curl runs");
    let mut stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // Interim 100 Continue heads come first; the final response follows.
    while stdout.starts_with("HTTP/1.1 100") {
        stdout = stdout
            .split_once("\r\n\r\n")
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or_default();
    }
    let (head, body) = stdout
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_owned(), b.to_owned()))
        .unwrap_or((stdout.clone(), String::new()));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Reply {
        exit: out.status.code().unwrap_or(-1),
        status,
        head,
        body,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A rustls client config trusting the cluster CA, with an optional client cert.
pub fn client_tls(pki: &Pki, cert: Option<&Pair>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = mvp::tls::load_roots(&pki.cluster_ca_file).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(pair) => builder
            .with_client_auth_cert(
                mvp::tls::load_certs(&pair.cert).unwrap(),
                mvp::tls::load_key(&pair.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Open a TLS connection to mvp as a client would.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
}

/// A free loopback port (bound then released).
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub fn file_exists(path: &Path) -> bool {
    path.exists()
}
