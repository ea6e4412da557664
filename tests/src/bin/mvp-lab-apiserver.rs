//! `mvp-lab-apiserver`: a kube-apiserver test double with real wire semantics, for
//! emulating mixed-version control planes. Flags use kube-apiserver's names where one
//! exists; `--discovery-dir`, `--emulated-version` and the surface-reshaping flags are
//! lab-specific.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use test_support::labapi::authn::{AuthnConfig, RequestHeaderConfig};
use test_support::labapi::server::{EmulatedVersion, LabServer, ServerConfig};
use test_support::labapi::store::Store;
use test_support::labapi::surface::Surface;
use test_support::labapi::types::ResourceHandler;

#[derive(Debug, Parser)]
#[command(
    name = "mvp-lab-apiserver",
    about = "A kube-apiserver test double for the mvp lab"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Port to serve HTTPS on (0 = any free port; the chosen one is logged).
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// Address advertised in /api's serverAddressByClientCIDRs.
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// Serving certificate (PEM chain); re-read when the file changes.
    #[arg(long)]
    tls_cert_file: PathBuf,
    /// Serving key (PEM); re-read with the certificate.
    #[arg(long)]
    tls_private_key_file: PathBuf,
    /// CA bundle for x509 client-certificate authentication (CN = user, O = groups).
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
    /// CA bundle for front-proxy (request-header) client certificates.
    #[arg(long)]
    requestheader_client_ca_file: Option<PathBuf>,
    /// Allowed front-proxy certificate CNs (empty: any from the requestheader CA).
    #[arg(long, value_delimiter = ',')]
    requestheader_allowed_names: Vec<String>,
    /// Headers naming the front-proxied user (first non-empty wins).
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-User")]
    requestheader_username_headers: Vec<String>,
    /// Headers listing its groups (every value of every header).
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Group")]
    requestheader_group_headers: Vec<String>,
    /// Headers carrying its uid.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Uid")]
    requestheader_uid_headers: Vec<String>,
    /// Prefixes of extra-attribute headers (key lower-cased and percent-decoded).
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Extra-")]
    requestheader_extra_headers_prefix: Vec<String>,
    /// Static tokens: CSV `token,user,uid,"group1,group2"`.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// Serve requests without credentials as system:anonymous (`--anonymous-auth` alone
    /// means true, as with Go's bool flags).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    anonymous_auth: bool,
    /// etcd endpoints for the storage layer (comma list).
    #[arg(long, value_delimiter = ',', required = true)]
    etcd_servers: Vec<String>,
    /// Key prefix in etcd.
    #[arg(long, default_value = "/registry")]
    etcd_prefix: String,
    /// JSON-lines audit log: one line per request (time, verb, path, user, groups,
    /// sourceAddress, code).
    #[arg(long)]
    audit_log_path: Option<PathBuf>,
    /// Folder holding aggregated_v2.json and api__v1.json (e.g. fixtures/discovery/k8s-1.33).
    #[arg(long)]
    discovery_dir: PathBuf,
    /// Release to claim, e.g. 1.33.4 (default: from a `k8s-<major>.<minor>` folder name).
    #[arg(long)]
    emulated_version: Option<String>,
    /// Lab-only: the release of the binary when it emulates an older one (e.g. 1.36.2 with
    /// --emulated-version 1.35): /version then reports both, as kube-apiserver does.
    #[arg(long)]
    binary_version: Option<String>,
    /// Drop a group/version (`apps/v1`; core as `core/v1`). Repeatable.
    #[arg(long)]
    remove_group_version: Vec<String>,
    /// Drop a resource (`apps/v1/deployments`). Repeatable.
    #[arg(long)]
    remove_resource: Vec<String>,
    /// Add a CRD-like resource: `g/v/r=Kind[,namespaced|cluster][,status]`. Repeatable.
    #[arg(long)]
    add_resource: Vec<String>,
    /// After SIGTERM, keep serving with /readyz failing this long before closing the
    /// listener (Go duration: 0s, 500ms, 10s, 1m30s).
    #[arg(long, default_value = "0s")]
    shutdown_delay_duration: String,
    /// Lab-only: let anonymous callers read discovery and create self reviews (kube-apiserver
    /// does not, as recorded; this binds system:discovery to system:unauthenticated).
    #[arg(long)]
    anonymous_discovery: bool,
    /// Lab-only: users that authenticate but are authorized for discovery and self-reviews
    /// only, like a user without RBAC bindings. Repeatable.
    #[arg(long)]
    unprivileged_user: Vec<String>,
}

/// A Go duration (`1m30s`, `500ms`, `0s`), as kube-apiserver's flags take them.
fn parse_duration(text: &str) -> anyhow::Result<std::time::Duration> {
    let mut total = std::time::Duration::ZERO;
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(total);
    }
    anyhow::ensure!(!rest.is_empty(), "empty duration");
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .with_context(|| format!("duration {text:?}: missing unit"))?;
        let value: f64 = rest[..digits]
            .parse()
            .with_context(|| format!("duration {text:?}: bad number"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            unit => anyhow::bail!("duration {text:?}: unknown unit {unit:?}"),
        };
        total += std::time::Duration::from_secs_f64(seconds);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

fn emulated_version(cli: &Cli) -> anyhow::Result<EmulatedVersion> {
    if let Some(v) = &cli.emulated_version {
        return Ok(v.parse()?);
    }
    let name = cli
        .discovery_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let derived = name
        .strip_prefix("k8s-")
        .map(|v| v.split('-').next().unwrap_or(v))
        .context(
            "--emulated-version is required unless --discovery-dir is named k8s-<major>.<minor>",
        )?;
    Ok(derived.parse()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let version = emulated_version(&cli)?;
    let mut surface = Surface::load(&cli.discovery_dir)?;
    for gv in &cli.remove_group_version {
        surface.remove_group_version(gv)?;
    }
    for r in &cli.remove_resource {
        surface.remove_resource(r)?;
    }
    for r in &cli.add_resource {
        surface.add_resource(r)?;
    }
    let requestheader =
        cli.requestheader_client_ca_file
            .clone()
            .map(|client_ca| RequestHeaderConfig {
                client_ca,
                // `--requestheader-allowed-names=` (empty) means any name, not the name "".
                allowed_names: cli
                    .requestheader_allowed_names
                    .iter()
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .collect(),
                username_headers: cli.requestheader_username_headers.clone(),
                group_headers: cli.requestheader_group_headers.clone(),
                uid_headers: cli.requestheader_uid_headers.clone(),
                extra_headers_prefixes: cli.requestheader_extra_headers_prefix.clone(),
            });
    let cfg = ServerConfig {
        bind: SocketAddr::new(cli.bind_address, cli.secure_port),
        advertise_address: cli.advertise_address,
        tls_cert_file: cli.tls_cert_file.clone(),
        tls_private_key_file: cli.tls_private_key_file.clone(),
        authn: AuthnConfig {
            client_ca: cli.client_ca_file.clone(),
            requestheader,
            token_file: cli.token_auth_file.clone(),
            anonymous: cli.anonymous_auth,
        },
        audit_log: cli.audit_log_path.clone(),
        surface,
        version,
        binary_version: cli.binary_version.as_deref().map(str::parse).transpose()?,
        unprivileged_users: cli.unprivileged_user.clone(),
        etcd_servers: cli.etcd_servers.clone(),
        anonymous_discovery: cli.anonymous_discovery,
        shutdown_delay: parse_duration(&cli.shutdown_delay_duration)?,
    };
    let store = Store::connect(cli.etcd_servers.clone(), cli.etcd_prefix.clone())
        .await
        .with_context(|| format!("connecting to etcd at {:?}", cli.etcd_servers))?;
    let handler: Arc<dyn ResourceHandler> = Arc::new(store);
    let server = LabServer::bind(cfg, handler).await?;
    let addr = server.local_addr()?;
    // Tests and scripts wait for this line to learn the port.
    tracing::info!(%addr, "serving securely");
    eprintln!("mvp-lab-apiserver listening on {addr}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    server
        .serve(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await;
    Ok(())
}
