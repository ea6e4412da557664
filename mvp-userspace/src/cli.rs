//! Command line (clap). Parsing only; `app` does the work.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::addr::SteerTarget;

/// mvp: the Kubernetes Mixed Version Proxy as a node daemon.
#[derive(Debug, Parser)]
#[command(name = "mvp", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Steer connections for the given addresses into mvp; with --tls-cert-file, serve them
    /// with the L7 front door (TLS, authentication, forwarding), else relay them at L4.
    Run(RunArgs),
    /// Preflight: check kernel, privileges, kube-apiserver's settings and PKI, and the
    /// peers, each PASS/WARN/FAIL with a fix. Exits non-zero on any FAIL.
    Doctor(DoctorArgs),
    /// Show a running mvp's servers, versions, reachability, routes and skew.
    Status(StatusArgs),
}

/// Report format of `doctor` and `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable table.
    Text,
    /// One JSON document.
    Json,
}

/// `mvp doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Detection of kube-apiserver's settings.
    #[command(flatten)]
    pub detect: crate::detect::DetectArgs,
    /// Another control-plane apiserver to check (https://IP[:PORT]). Repeatable.
    #[arg(long = "peer", value_name = "URL")]
    pub peer: Vec<String>,
    /// kube-apiserver-named overrides of detected values (and --upstream: the local
    /// apiserver, default https://127.0.0.1:<secure port>), as for `mvp run`.
    #[command(flatten)]
    pub front_door: crate::frontdoor::FrontDoorArgs,
    /// Per-server time budget in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub timeout: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `mvp status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The running mvp's admin endpoint.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9464")]
    pub admin_address: SocketAddr,
    /// Time budget in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub timeout: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `mvp run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Destination (address, port) to steer into mvp, e.g. 198.18.0.1:6443. Repeatable.
    /// Loopback is refused: it is never steered. Default: detected from kube-apiserver
    /// (advertise address, node addresses when it binds a wildcard, --steer-vip).
    #[arg(long = "steer", value_name = "ADDR:PORT", num_args = 1..)]
    pub steer: Vec<SteerTarget>,
    /// Steer nothing (no detection either): serve the front door on --listen only, without
    /// eBPF (no root needed), with the front-door flags as given. For a front door clients
    /// reach at its own port, e.g. benchmarks.
    #[arg(long, conflicts_with = "steer", requires = "listen")]
    pub no_steer: bool,
    /// Zero-config detection of kube-apiserver's settings.
    #[command(flatten)]
    pub detect: crate::detect::DetectArgs,
    /// Where mvp's listener binds (one per address family). Default: 127.0.0.1:0 and/or
    /// [::1]:0 for the families being steered.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
    /// Network namespace to steer in (default: mvp's own).
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
    /// Admin endpoint (/healthz, /readyz, /metrics); must not be a steered address.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9464")]
    pub admin_address: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Seconds to let in-flight connections finish on SIGINT/SIGTERM.
    #[arg(long = "drain-timeout", value_name = "SECONDS", default_value_t = 10)]
    pub drain_timeout_secs: u64,
    /// The L7 front door (kube-apiserver's flag names).
    #[command(flatten)]
    pub front_door: crate::frontdoor::FrontDoorArgs,
    /// Peers, discovery sync and readiness (front door only).
    #[command(flatten)]
    pub brain: crate::brain::BrainArgs,
}

impl RunArgs {
    /// The drain deadline.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("mvp").chain(args.iter().copied()))
    }

    fn run(args: &[&str]) -> RunArgs {
        match parse(args).expect("parses").command {
            Command::Run(r) => r,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn run_with_defaults() {
        let r = run(&["run", "--steer", "198.18.0.1:6443"]);
        assert_eq!(r.steer.len(), 1);
        assert_eq!(r.steer[0].get(), "198.18.0.1:6443".parse().expect("addr"));
        assert!(r.listen.is_empty());
        assert_eq!(r.netns, None);
        assert_eq!(r.admin_address, "127.0.0.1:9464".parse().expect("addr"));
        assert_eq!(r.log_format, LogFormat::Text);
        assert_eq!(r.drain_timeout(), Duration::from_secs(10));
        assert!(
            !r.front_door.enabled(),
            "L4 relay unless TLS flags are given"
        );
    }

    #[test]
    fn run_with_kubeadm_flags_enables_the_front_door() {
        let r = run(&[
            "run",
            "--steer",
            "198.18.0.1:6443",
            "--tls-cert-file",
            "/etc/kubernetes/pki/apiserver.crt",
            "--tls-private-key-file",
            "/etc/kubernetes/pki/apiserver.key",
            "--client-ca-file",
            "/etc/kubernetes/pki/ca.crt",
            "--requestheader-client-ca-file",
            "/etc/kubernetes/pki/front-proxy-ca.crt",
            "--requestheader-allowed-names",
            "front-proxy-client",
            "--requestheader-username-headers",
            "X-Remote-User",
            "--requestheader-group-headers",
            "X-Remote-Group",
            "--requestheader-extra-headers-prefix",
            "X-Remote-Extra-",
            "--proxy-client-cert-file",
            "/etc/kubernetes/pki/front-proxy-client.crt",
            "--proxy-client-key-file",
            "/etc/kubernetes/pki/front-proxy-client.key",
            "--secure-port",
            "6443",
        ]);
        assert!(r.front_door.enabled());
        let c = r.front_door.to_config().expect("valid");
        assert_eq!(c.upstream, "127.0.0.1:6443".parse().expect("addr"));
        assert_eq!(
            c.upstream_ca_file,
            PathBuf::from("/etc/kubernetes/pki/ca.crt")
        );
        assert_eq!(c.upstream_server_name, "kubernetes.default.svc");
        assert_eq!(c.requestheader_allowed_names, ["front-proxy-client"]);
        assert_eq!(c.header_names.username[0], "x-remote-user");
    }

    #[test]
    fn run_with_everything() {
        let r = run(&[
            "run",
            "--steer",
            "198.18.0.1:6443",
            "[fd00:6d76:70::1]:6443",
            "--listen",
            "127.0.0.1:7000",
            "--netns",
            "/run/netns/x",
            "--admin-address",
            "127.0.0.1:9000",
            "--log-format",
            "json",
            "--drain-timeout",
            "3",
        ]);
        assert_eq!(r.steer.len(), 2);
        assert_eq!(r.listen, vec!["127.0.0.1:7000".parse().expect("addr")]);
        assert_eq!(r.netns, Some(PathBuf::from("/run/netns/x")));
        assert_eq!(r.log_format, LogFormat::Json);
        assert_eq!(r.drain_timeout(), Duration::from_secs(3));
    }

    #[test]
    fn no_steer_needs_a_listener_and_excludes_steer() {
        let r = run(&["run", "--no-steer", "--listen", "127.0.0.1:19446"]);
        assert!(r.no_steer);
        assert!(r.steer.is_empty());
        for (args, want) in [
            (vec!["run", "--no-steer"], "--listen"),
            (
                vec![
                    "run",
                    "--no-steer",
                    "--listen",
                    "127.0.0.1:1",
                    "--steer",
                    "198.18.0.1:6443",
                ],
                "--steer",
            ),
        ] {
            let err = parse(&args).expect_err("must fail").to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn bad_values_are_errors_naming_the_problem() {
        for (args, want) in [
            (vec!["run", "--steer", "localhost:6443"], "not ADDR:PORT"),
            (vec!["run", "--steer", "127.0.0.1:6443"], "loopback"),
            (
                vec!["run", "--steer", "198.18.0.1:6443", "--log-format", "xml"],
                "xml",
            ),
        ] {
            let err = parse(&args).expect_err("must fail").to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
