//! `mvp doctor`: a preflight run before mvp is installed. Each check is PASS, WARN or FAIL
//! with one line saying how to fix it; any FAIL makes the command exit non-zero.
//!
//! - [`kernel_checks`]: privileges and kernel support for sk_lookup (from [`steer::probe`]);
//! - detection: what [`crate::detect`] found and from where;
//! - [`pki`]: files present and parseable, validity windows, SANs, chains, allowed names;
//! - [`servers`]: the local apiserver and each `--peer`, reached over TLS as peers reach
//!   each other, their discovery, and the skew between them.
//!
//! Checks are pure functions of their inputs (probe results, files, a clock), so tests
//! build good and broken setups and assert on verdicts.
pub mod pki;
pub mod servers;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::admin::SkewRow;
use crate::detect::{self, Overrides, Row};
use crate::steer::{self, AttachProbe, KernelProbe, caps};

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Fine.
    Pass,
    /// Works, but look at it.
    Warn,
    /// mvp will not work (or not safely) until fixed.
    Fail,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier, e.g. `cert/serving-sans`.
    pub id: String,
    /// Outcome.
    pub verdict: Verdict,
    /// What was found.
    pub message: String,
    /// One line: what to do (absent on PASS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    /// A passing check.
    pub fn pass(id: impl Into<String>, message: impl Into<String>) -> Check {
        Check {
            id: id.into(),
            verdict: Verdict::Pass,
            message: message.into(),
            fix: None,
        }
    }
    /// A warning with its fix.
    pub fn warn(
        id: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            id: id.into(),
            verdict: Verdict::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
    /// A failure with its fix.
    pub fn fail(
        id: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            id: id.into(),
            verdict: Verdict::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// A server as doctor saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerSeen {
    /// `local` or the peer URL.
    pub name: String,
    /// Dialled address.
    pub address: String,
    /// gitVersion from /version, if it answered.
    pub version: Option<String>,
    /// TLS verified and discovery fetched.
    pub ok: bool,
}

/// The whole preflight.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The worst verdict.
    pub verdict: Verdict,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// Detected settings and their origins (empty when detection failed).
    pub detected: Vec<Row>,
    /// Servers contacted.
    pub servers: Vec<ServerSeen>,
    /// Resources not served by every server that answered.
    pub skew: Vec<SkewRow>,
}

impl Report {
    /// The check with this id.
    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// Human output: detected settings, then one line per check (+ fix), servers, skew.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        if !self.detected.is_empty() {
            out.push_str("detected:\n");
            let rows: Vec<Vec<String>> = self
                .detected
                .iter()
                .map(|r| vec![r.setting.to_owned(), r.value.clone(), r.source.clone()])
                .collect();
            for line in crate::admin::report::table(&["SETTING", "VALUE", "FROM"], &rows).lines() {
                let _ = writeln!(out, "  {line}");
            }
            out.push('\n');
        }
        for c in &self.checks {
            let _ = writeln!(out, "{}  {:<36} {}", c.verdict.label(), c.id, c.message);
            if let Some(fix) = &c.fix {
                let _ = writeln!(out, "      fix: {fix}");
            }
        }
        if !self.servers.is_empty() {
            out.push('\n');
            let rows: Vec<Vec<String>> = self
                .servers
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.address.clone(),
                        s.version.clone().unwrap_or_else(|| "?".into()),
                        if s.ok { "ok" } else { "FAILED" }.into(),
                    ]
                })
                .collect();
            out.push_str(&crate::admin::report::table(
                &["SERVER", "ADDRESS", "VERSION", "STATE"],
                &rows,
            ));
            out.push('\n');
            if self.servers.iter().filter(|s| s.ok).count() < 2 {
                out.push_str("skew: not computed (fewer than two servers answered)\n");
            } else {
                out.push_str(&crate::admin::report::render_skew(&self.skew));
            }
        }
        let (f, w) = (
            self.checks
                .iter()
                .filter(|c| c.verdict == Verdict::Fail)
                .count(),
            self.checks
                .iter()
                .filter(|c| c.verdict == Verdict::Warn)
                .count(),
        );
        let _ = writeln!(
            out,
            "\n{}: {} checks, {f} failed, {w} warnings",
            self.verdict.label(),
            self.checks.len()
        );
        out
    }
}

/// Minimum kernel: sk_lookup is 5.9; 5.10 is the first LTS with it and SOCKMAP listeners.
pub const MIN_KERNEL: (u32, u32) = (5, 10);

fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Privileges and kernel support for sk_lookup steering.
pub fn kernel_checks(p: &KernelProbe) -> Vec<Check> {
    let mut out = Vec::new();
    let has = |bit: u32| p.effective_caps.is_some_and(|c| c & (1u64 << bit) != 0);
    let missing: Vec<&str> = [(caps::BPF, "CAP_BPF"), (caps::NET_ADMIN, "CAP_NET_ADMIN")]
        .into_iter()
        .filter(|(b, _)| !has(*b))
        // Before CAP_BPF (5.8) CAP_SYS_ADMIN covered bpf().
        .filter(|(b, _)| !(*b == caps::BPF && has(caps::SYS_ADMIN)))
        .map(|(_, n)| n)
        .collect();
    out.push(if missing.is_empty() {
        Check::pass(
            "kernel/privileges",
            format!(
                "{} with CAP_BPF and CAP_NET_ADMIN",
                if p.root { "root" } else { "non-root" }
            ),
        )
    } else {
        Check::fail(
            "kernel/privileges",
            format!("missing {}", missing.join(", ")),
            "run mvp doctor (and mvp) as root, or grant CAP_BPF and CAP_NET_ADMIN (see deploy/)",
        )
    });
    out.push(
        match p.kernel_release.as_deref().map(|r| (r, kernel_version(r))) {
            Some((r, Some(v))) if v >= MIN_KERNEL => Check::pass(
                "kernel/version",
                format!("Linux {r} (sk_lookup needs >= 5.10)"),
            ),
            Some((r, Some(_))) => Check::fail(
                "kernel/version",
                format!("Linux {r} is older than 5.10"),
                "upgrade the node's kernel to 5.10 or newer; mvp cannot steer here",
            ),
            Some((r, None)) => Check::warn(
                "kernel/version",
                format!("cannot parse kernel release {r:?}"),
                "make sure the kernel is 5.10 or newer",
            ),
            None => Check::warn(
                "kernel/version",
                "kernel release unknown (/proc/sys/kernel/osrelease unreadable)",
                "make sure /proc is mounted and the kernel is 5.10 or newer",
            ),
        },
    );
    out.push(if p.netns {
        Check::pass("kernel/netns", "/proc/self/ns/net present")
    } else {
        Check::fail(
            "kernel/netns",
            "/proc/self/ns/net missing",
            "mount /proc and use a kernel with CONFIG_NET_NS",
        )
    });
    out.push(match &p.sk_lookup {
        Ok(()) => Check::pass("kernel/sk_lookup", "the kernel loads sk_lookup programs"),
        Err(e) => Check::fail(
            "kernel/sk_lookup",
            format!("sk_lookup programs unavailable: {e}"),
            "run as root on Linux >= 5.10 with CONFIG_BPF_SYSCALL; in a container add CAP_BPF and CAP_NET_ADMIN",
        ),
    });
    out.push(match &p.attach {
        AttachProbe::Ok => Check::pass(
            "kernel/attach",
            "mvp's program loaded and attached in a throwaway network namespace",
        ),
        AttachProbe::Failed(e) => Check::fail(
            "kernel/attach",
            format!("loading/attaching mvp's program failed: {e}"),
            "check privileges (CAP_BPF, CAP_NET_ADMIN) and the kernel version; report the error if both are fine",
        ),
        AttachProbe::NoNamespace(e) => Check::warn(
            "kernel/attach",
            format!("not tried: no throwaway network namespace ({e})"),
            "run mvp doctor as root on the host for the full probe (creating a namespace needs CAP_SYS_ADMIN; mvp itself does not)",
        ),
        AttachProbe::NotTried => Check::warn(
            "kernel/attach",
            "not tried: this mvp was built without the eBPF object",
            "use a release build of mvp (built without AYA_BUILD_SKIP) for the full probe",
        ),
    });
    out
}

/// What `mvp doctor` examines.
#[derive(Debug, Clone)]
pub struct DoctorConfig {
    /// Static pod manifest.
    pub manifest: PathBuf,
    /// /proc.
    pub proc_root: PathBuf,
    /// Explicit flags.
    pub overrides: Overrides,
    /// The node's interface addresses.
    pub node_addrs: Vec<IpAddr>,
    /// The local apiserver (default 127.0.0.1:<secure port>).
    pub upstream: Option<SocketAddr>,
    /// CA verifying the local apiserver (default: the client CA, as the front door does).
    pub upstream_ca_file: Option<PathBuf>,
    /// Peer apiservers (`https://IP:PORT` or `IP:PORT`).
    pub peers: Vec<String>,
    /// Per-server connect + request budget.
    pub timeout: Duration,
    /// The clock for validity windows.
    pub now: SystemTime,
}

/// Run every check. `kernel` is the probe result (`None`: kernel checks left out, for
/// callers that examine only configuration).
pub async fn examine(cfg: &DoctorConfig, kernel: Option<&KernelProbe>) -> Report {
    let mut checks = kernel.map(kernel_checks).unwrap_or_default();
    let detected = match detect::detect(
        &cfg.manifest,
        &cfg.proc_root,
        &cfg.overrides,
        &cfg.node_addrs,
    ) {
        Ok(d) => d,
        Err(e) => {
            checks.push(Check::fail(
                "detect",
                e.to_string(),
                "run on a control-plane node, or pass --apiserver-manifest / the kube-apiserver flags",
            ));
            return finish(checks, Vec::new(), Vec::new(), Vec::new());
        }
    };
    checks.push(Check::pass(
        "detect",
        match &detected.origin {
            Some(o) => format!("kube-apiserver settings from {o}"),
            None => "settings from flags only".to_owned(),
        },
    ));
    checks.push(if detected.steer.is_empty() {
        Check::fail(
            "detect/steer",
            "nothing to steer (no non-loopback advertise/bind/node address)",
            "pass --advertise-address or --steer-vip with the address clients use",
        )
    } else {
        Check::pass(
            "detect/steer",
            format!(
                "steer {}",
                detected
                    .steer
                    .iter()
                    .map(|s| s.value.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    });
    let material = pki::Material::load(&detected);
    checks.extend(pki::checks(&detected, &material, cfg.now));
    let (server_checks, servers, skew) = servers::checks(cfg, &detected, &material).await;
    checks.extend(server_checks);
    finish(checks, detected.rows(), servers, skew)
}

fn finish(
    checks: Vec<Check>,
    detected: Vec<Row>,
    servers: Vec<ServerSeen>,
    skew: Vec<SkewRow>,
) -> Report {
    Report {
        verdict: checks
            .iter()
            .map(|c| c.verdict)
            .max()
            .unwrap_or(Verdict::Pass),
        checks,
        detected,
        servers,
        skew,
    }
}

/// Why `mvp doctor` could not run at all (as opposed to checks failing).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// A flag value is unusable.
    #[error("doctor: {0}")]
    Flag(String),
    /// The async runtime could not start.
    #[error("doctor: cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// `mvp doctor` from its flags, on the real kernel and node: the rendered report and
/// whether any check failed.
pub fn run_cli(args: &crate::cli::DoctorArgs) -> Result<(String, bool), DoctorError> {
    let fd = &args.front_door;
    let upstream = fd
        .upstream
        .as_deref()
        .map(|u| crate::frontdoor::config::parse_upstream(u, fd.port()))
        .transpose()
        .map_err(|e| DoctorError::Flag(e.to_string()))?;
    let node_addrs = steer::node_addresses().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot list the node's addresses; steer set from flags and manifest only");
        Vec::new()
    });
    let cfg = DoctorConfig {
        manifest: args.detect.apiserver_manifest.clone(),
        proc_root: args.detect.proc_root.clone(),
        overrides: Overrides::from_flags(&args.detect, fd, &[]),
        node_addrs,
        upstream,
        upstream_ca_file: fd.upstream_ca_file.clone(),
        peers: args.peer.clone(),
        timeout: Duration::from_secs(args.timeout.max(1)),
        now: SystemTime::now(),
    };
    // Before any runtime thread exists: the attach probe unshares only its own thread.
    let kernel = steer::probe(true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(DoctorError::Runtime)?;
    let report = rt.block_on(examine(&cfg, Some(&kernel)));
    let text = match args.output {
        crate::cli::OutputFormat::Text => report.render_text(),
        crate::cli::OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(&report).unwrap_or_default();
            s.push('\n');
            s
        }
    };
    Ok((text, report.verdict == Verdict::Fail))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn good_probe() -> KernelProbe {
        KernelProbe {
            kernel_release: Some("6.1.0-18-amd64".into()),
            root: true,
            effective_caps: Some(u64::MAX >> 23),
            netns: true,
            sk_lookup: Ok(()),
            attach: AttachProbe::Ok,
        }
    }

    fn verdicts(p: &KernelProbe) -> Vec<(String, Verdict)> {
        kernel_checks(p)
            .into_iter()
            .map(|c| (c.id, c.verdict))
            .collect()
    }

    #[test]
    fn good_kernel_passes_everything() {
        assert!(
            kernel_checks(&good_probe())
                .iter()
                .all(|c| c.verdict == Verdict::Pass && c.fix.is_none())
        );
    }

    #[test]
    fn each_kernel_problem_fails_its_own_check_with_a_fix() {
        let cases: Vec<(KernelProbe, &str)> = vec![
            (
                KernelProbe {
                    root: false,
                    effective_caps: Some(0),
                    ..good_probe()
                },
                "kernel/privileges",
            ),
            (
                KernelProbe {
                    kernel_release: Some("4.19.0".into()),
                    ..good_probe()
                },
                "kernel/version",
            ),
            (
                KernelProbe {
                    kernel_release: Some("5.9.16".into()),
                    ..good_probe()
                },
                "kernel/version",
            ),
            (
                KernelProbe {
                    netns: false,
                    ..good_probe()
                },
                "kernel/netns",
            ),
            (
                KernelProbe {
                    sk_lookup: Err("EINVAL".into()),
                    ..good_probe()
                },
                "kernel/sk_lookup",
            ),
            (
                KernelProbe {
                    attach: AttachProbe::Failed("EPERM".into()),
                    ..good_probe()
                },
                "kernel/attach",
            ),
        ];
        for (probe, id) in cases {
            let v = verdicts(&probe);
            let failing: Vec<&str> = v
                .iter()
                .filter(|(_, v)| *v == Verdict::Fail)
                .map(|(i, _)| i.as_str())
                .collect();
            assert_eq!(failing, [id], "{probe:?}");
            let c = kernel_checks(&probe)
                .into_iter()
                .find(|c| c.id == id)
                .unwrap();
            assert!(c.fix.is_some_and(|f| !f.contains('\n')));
        }
    }

    #[test]
    fn cap_sys_admin_stands_in_for_cap_bpf_on_old_kernels() {
        let p = KernelProbe {
            root: false,
            effective_caps: Some((1 << caps::SYS_ADMIN) | (1 << caps::NET_ADMIN)),
            ..good_probe()
        };
        assert_eq!(kernel_checks(&p)[0].verdict, Verdict::Pass);
    }

    #[test]
    fn no_ebpf_object_is_a_warning_not_a_failure() {
        for attach in [
            AttachProbe::NotTried,
            AttachProbe::NoNamespace("EPERM".into()),
        ] {
            let p = KernelProbe {
                attach,
                ..good_probe()
            };
            let c = kernel_checks(&p).pop().unwrap();
            assert_eq!((c.id.as_str(), c.verdict), ("kernel/attach", Verdict::Warn));
        }
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("5.10.0"), Some((5, 10)));
        assert_eq!(kernel_version("weird"), None);
    }
}
