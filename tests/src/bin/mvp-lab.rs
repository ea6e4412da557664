//! `cargo xtask lab`: bring up a mixed-version control plane (cp1, cp2 at 1.33; cp3 at
//! 1.36, one etcd) and show the problem mvp solves with real kubectl: the same request
//! gets different answers depending on which apiserver it lands on. Then stay up until
//! Ctrl-C with copy-pasteable commands (`--no-wait` exits after the report).
//!
//! The report is a table: command × node × without mvp / with mvp. Unless `--without-mvp`,
//! it starts `mvp run` (kubeadm's flags) in every node's namespace and runs every command
//! again: each command fails through the nodes of the other version without mvp and
//! succeeds through every node with it (commands naming a type kubectl must first find in
//! discovery need mvp's merged discovery too). New commands go into [`CHECKS`].
//!
//! Exit status: 0 when the report shows what it should (the lab works), 1 otherwise.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use test_support::eventually::patience;
use test_support::lab::{LabCluster, LabProcess, LabSpec, NodeSpec};

#[derive(Debug, Parser)]
#[command(
    name = "mvp-lab",
    about = "A mixed-version Kubernetes control plane in network namespaces"
)]
struct Args {
    /// Exit after the report instead of staying up until Ctrl-C.
    #[arg(long)]
    no_wait: bool,
    /// Run `mvp run` (kubeadm's flags) on every node and fill the "with mvp" column (needs
    /// the mvp binary with its eBPF object). The default; kept for scripts.
    #[arg(long, conflicts_with = "without_mvp")]
    with_mvp: bool,
    /// Only the "without mvp" column.
    #[arg(long)]
    without_mvp: bool,
}

/// One kubectl invocation of the report and which nodes should serve it.
struct Check {
    /// kubectl arguments (after `--kubeconfig`).
    args: &'static [&'static str],
    /// Does a node of this version serve what the command asks for?
    served_by: fn(&NodeSpec) -> bool,
    /// kubectl must find the type in discovery first: through a node of the other version
    /// that needs mvp's merged discovery, not only its routing.
    needs_discovery: bool,
}

fn is_136(n: &NodeSpec) -> bool {
    n.minor() == "1.36"
}
fn is_133(n: &NodeSpec) -> bool {
    n.minor() == "1.33"
}
fn all(_: &NodeSpec) -> bool {
    true
}

const CHECKS: &[Check] = &[
    Check {
        args: &[
            "get",
            "--raw",
            "/apis/scheduling.k8s.io/v1alpha2/namespaces/default/workloads",
        ],
        served_by: is_136,
        needs_discovery: false,
    },
    Check {
        args: &[
            "get",
            "--raw",
            "/apis/resource.k8s.io/v1/namespaces/default/resourceclaims",
        ],
        served_by: is_136,
        needs_discovery: false,
    },
    Check {
        args: &[
            "get",
            "--raw",
            "/apis/storagemigration.k8s.io/v1alpha1/storageversionmigrations",
        ],
        served_by: is_133,
        needs_discovery: false,
    },
    Check {
        args: &["get", "configmaps", "-n", "default"],
        served_by: all,
        needs_discovery: true,
    },
    Check {
        args: &["get", "workloads.scheduling.k8s.io", "-n", "default"],
        served_by: is_136,
        needs_discovery: true,
    },
    Check {
        args: &["get", "resourceclaims.v1.resource.k8s.io", "-n", "default"],
        served_by: is_136,
        needs_discovery: true,
    },
    Check {
        args: &[
            "get",
            "mutatingadmissionpolicies.v1.admissionregistration.k8s.io",
        ],
        served_by: is_136,
        needs_discovery: true,
    },
    Check {
        args: &[
            "get",
            "podcertificaterequests.certificates.k8s.io",
            "-n",
            "default",
        ],
        served_by: is_136,
        needs_discovery: true,
    },
    Check {
        args: &[
            "get",
            "storageversionmigrations.v1alpha1.storagemigration.k8s.io",
        ],
        served_by: is_133,
        needs_discovery: true,
    },
];

/// How a request reached the apiserver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    WithoutMvp,
    WithMvp,
}

impl Mode {
    fn title(self) -> &'static str {
        match self {
            Mode::WithoutMvp => "without mvp",
            Mode::WithMvp => "with mvp",
        }
    }
}

/// The report's columns.
const MODES: &[Mode] = &[Mode::WithoutMvp, Mode::WithMvp];

/// mvp's admin endpoint inside each node's namespace.
const MVP_ADMIN: &str = "127.0.0.1:9464";

/// Width of a result cell.
const WIDTH: usize = 72;

#[derive(Debug, Clone)]
enum Outcome {
    Ok(String),
    Failed(String),
    NotYet,
}

impl Outcome {
    fn cell(&self) -> String {
        match self {
            Outcome::Ok(s) => format!("ok    {s}"),
            Outcome::Failed(s) => format!("FAIL  {s}"),
            Outcome::NotYet => "-".to_string(),
        }
    }
}

fn first_line(s: &str) -> String {
    let line = s
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let mut out: String = line.chars().take(WIDTH - 8).collect();
    if line.chars().count() > WIDTH - 8 {
        out.push('…');
    }
    out
}

/// Run a check's kubectl through `node` (whatever is in front of its apiserver now).
fn run_check(lab: &LabCluster, node: &str, check: &Check) -> anyhow::Result<Outcome> {
    let out = lab.kubectl(node, check.args)?;
    Ok(if out.success() {
        let lines = out.stdout.lines().count().saturating_sub(1);
        let raw_items = (check.args.get(1) == Some(&"--raw"))
            .then(|| serde_json::from_str::<serde_json::Value>(&out.stdout).ok())
            .flatten()
            .and_then(|v| v["items"].as_array().map(Vec::len));
        let summary = if let Some(n) = raw_items {
            format!("{n} item(s)")
        } else if out.stdout.trim().is_empty() {
            first_line(&out.stderr)
        } else {
            format!("{lines} item(s)")
        };
        Outcome::Ok(summary)
    } else {
        Outcome::Failed(first_line(&out.stderr))
    })
}

/// `mvp_steering_connections_total{outcome="steered"}` of the node's mvp, or `?`.
fn steered_count(lab: &LabCluster, node: &str) -> String {
    let Ok(admin) = MVP_ADMIN.parse::<SocketAddr>() else {
        return "?".into();
    };
    lab.node_http_get(node, admin, "/metrics")
        .ok()
        .and_then(|(_, m)| {
            m.lines()
                .find_map(|l| {
                    l.strip_prefix("mvp_steering_connections_total{outcome=\"steered\"} ")
                })
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// Start `mvp run` on every node and wait until each says it is ready.
fn start_mvps(lab: &LabCluster) -> anyhow::Result<Vec<LabProcess>> {
    let admin: SocketAddr = MVP_ADMIN.parse()?;
    let mut mvps = Vec::new();
    for n in lab.nodes() {
        let args = test_support::mvp_args::kubeadm(lab, n.name(), MVP_ADMIN, "2")?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        mvps.push(lab.start_mvp(n.name(), "mvp", &args)?);
    }
    for (n, mvp) in lab.nodes().iter().zip(mvps.iter_mut()) {
        let deadline = Instant::now() + patience();
        let mut delay = Duration::from_millis(20);
        loop {
            mvp.check_running()?;
            match lab.node_http_get(n.name(), admin, "/readyz") {
                Ok((200, _)) => break,
                Ok(_) | Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(250));
                }
                Ok((status, body)) => {
                    anyhow::bail!("mvp on {} not ready: HTTP {status} {body}", n.name())
                }
                Err(e) => anyhow::bail!("mvp on {} not ready: {e}", n.name()),
            }
        }
    }
    Ok(mvps)
}

fn api_resources(lab: &LabCluster, node: &str) -> anyhow::Result<Vec<String>> {
    let out = lab.kubectl(node, &["api-resources", "--no-headers"])?;
    anyhow::ensure!(
        out.success(),
        "kubectl api-resources via {node} failed:\n{out}"
    );
    let mut lines: Vec<String> = out
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    Ok(lines)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let with_mvp = !args.without_mvp;
    anyhow::ensure!(
        test_support::privileged::is_root(),
        "mvp-lab needs root (network namespaces): run `sudo -E cargo xtask lab`"
    );
    let started = Instant::now();
    println!("mvp lab: bringing up 3 control-plane nodes and one etcd ...");
    let lab = LabCluster::start(LabSpec::mixed()).context("bringing up the lab")?;
    println!(
        "up in {:.1} s; working dir {}\n",
        started.elapsed().as_secs_f64(),
        lab.dir().display()
    );
    for n in lab.nodes() {
        println!(
            "  {:<4} {:<18} v{:<8} surface {}",
            n.name(),
            n.addr(),
            n.spec().emulated_version,
            n.spec().surface
        );
    }
    println!("  etcd {}", lab.etcd_url());

    // Something to see: a Workload written through the 1.36 node.
    let workload = r#"{"apiVersion":"scheduling.k8s.io/v1alpha2","kind":"Workload",
        "metadata":{"name":"training-job","namespace":"default"},
        "spec":{"podGroups":[{"name":"workers","policy":{"gang":{"minCount":4}}}]}}"#;
    let new_node = lab
        .nodes()
        .iter()
        .find(|n| is_136(n.spec()))
        .context("the lab has no 1.36 node")?;
    let mut wrong = Vec::new();
    let created = lab.kubectl_stdin(new_node.name(), &["create", "-f", "-"], workload)?;
    if !created.success() {
        wrong.push(format!(
            "creating a Workload via {} failed:\n{created}",
            new_node.name()
        ));
    }

    println!("\nTHE PROBLEM: the same kubectl command, a different answer per apiserver");
    println!("(a load balancer in front of them picks one at random)\n");
    // Every check through every node, without mvp; then (unless --without-mvp) again with mvp
    // in front of every apiserver.
    let mut results: BTreeMap<(usize, usize, Mode), Outcome> = BTreeMap::new();
    for (c, check) in CHECKS.iter().enumerate() {
        for (i, n) in lab.nodes().iter().enumerate() {
            results.insert((c, i, Mode::WithoutMvp), run_check(&lab, n.name(), check)?);
        }
    }
    let mut mvps = Vec::new();
    if with_mvp {
        mvps = start_mvps(&lab).context("starting mvp on every node")?;
        for (c, check) in CHECKS.iter().enumerate() {
            for (i, n) in lab.nodes().iter().enumerate() {
                results.insert((c, i, Mode::WithMvp), run_check(&lab, n.name(), check)?);
            }
        }
    }

    let mut false_404 = 0;
    let mut failed_with_mvp = 0;
    let mut awaiting_discovery = 0;
    let mut total = 0;
    for (c, check) in CHECKS.iter().enumerate() {
        println!("$ kubectl {}", check.args.join(" "));
        let mut header = format!("    {:<12}", "node");
        for m in MODES {
            header.push_str(&format!(" {:<WIDTH$}", m.title()));
        }
        println!("{}", header.trim_end());
        for (i, n) in lab.nodes().iter().enumerate() {
            let mut row = format!("    {:<12}", format!("{} ({})", n.name(), n.spec().minor()));
            for &m in MODES {
                let outcome = results.get(&(c, i, m)).cloned().unwrap_or(Outcome::NotYet);
                row.push_str(&format!(" {:<WIDTH$}", outcome.cell()));
                match m {
                    Mode::WithoutMvp => {
                        total += 1;
                        let served = (check.served_by)(n.spec());
                        match (&outcome, served) {
                            (Outcome::Failed(_), false) => false_404 += 1,
                            (Outcome::Ok(_), true) => {}
                            _ => wrong.push(format!(
                                "kubectl {} via {}: expected {}, got {}",
                                check.args.join(" "),
                                n.name(),
                                if served { "success" } else { "failure" },
                                outcome.cell()
                            )),
                        }
                    }
                    Mode::WithMvp => {
                        if matches!(outcome, Outcome::Failed(_)) {
                            failed_with_mvp += 1;
                            if check.needs_discovery {
                                awaiting_discovery += 1;
                            } else {
                                wrong.push(format!(
                                    "kubectl {} via {} with mvp: {}",
                                    check.args.join(" "),
                                    n.name(),
                                    outcome.cell()
                                ));
                            }
                        }
                    }
                }
            }
            println!("{}", row.trim_end());
        }
        println!();
    }
    println!(
        "without mvp: {false_404} of {total} requests failed only because they reached an apiserver of the other version."
    );
    if with_mvp {
        println!("with mvp:    {failed_with_mvp} of {total} requests failed.");
        if awaiting_discovery > 0 {
            println!(
                "             ({awaiting_discovery} of them need kubectl to find the type in mvp's merged discovery first.)"
            );
        }
        let steered: Vec<String> = lab
            .nodes()
            .iter()
            .map(|n| format!("{} {}", n.name(), steered_count(&lab, n.name())))
            .collect();
        println!(
            "connections mvp steered (its /metrics): {}\n",
            steered.join(", ")
        );
    } else {
        println!("(--without-mvp: the \"with mvp\" column was skipped.)\n");
    }

    println!("$ kubectl api-resources (per node)");
    let mut views = Vec::new();
    for n in lab.nodes() {
        let lines = api_resources(&lab, n.name())?;
        println!(
            "    {:<12} {} resources",
            format!("{} ({})", n.name(), n.spec().minor()),
            lines.len()
        );
        views.push((n, lines));
    }
    let (old, old_lines) = views
        .iter()
        .find(|(n, _)| is_133(n.spec()))
        .context("the lab has no 1.33 node")?;
    let (new, new_lines) = views
        .iter()
        .find(|(n, _)| is_136(n.spec()))
        .context("the lab has no 1.36 node")?;
    println!("  only through {} (1.33):", old.name());
    for l in old_lines.iter().filter(|l| !new_lines.contains(l)) {
        println!("    - {l}");
    }
    println!("  only through {} (1.36):", new.name());
    let mut new_only = 0;
    for l in new_lines.iter().filter(|l| !old_lines.contains(l)) {
        println!("    + {l}");
        new_only += 1;
    }
    if with_mvp {
        // mvp serves merged (peer-aggregated) discovery: every node lists the union.
        if views.iter().any(|(_, lines)| *lines != views[0].1) {
            wrong.push(
                "with mvp, kubectl api-resources differs between nodes (merged discovery lists the union everywhere)"
                    .to_string(),
            );
        } else {
            println!("  (with mvp every node lists the union of all servers' resources)");
        }
    } else if new_only == 0 {
        wrong.push("kubectl api-resources shows no 1.36-only resource".to_string());
    }

    let client = lab.client().name().to_string();
    println!("\nTRY IT (as root):");
    for n in lab.nodes() {
        println!(
            "  ip netns exec {client} kubectl --kubeconfig {} --cache-dir {} get workloads.scheduling.k8s.io",
            n.kubeconfig().display(),
            lab.kube_cache_dir().display()
        );
    }
    println!("  kubeconfigs (admin cert): ");
    for n in lab.nodes() {
        println!(
            "    {}  {}  (token: {})",
            n.name(),
            n.kubeconfig().display(),
            n.token_kubeconfig().display()
        );
    }
    println!(
        "  logs: {}/<node>/apiserver.log, audit: {}/<node>/audit.log",
        lab.dir().display(),
        lab.dir().display()
    );

    if !wrong.is_empty() {
        eprintln!("\nTHE LAB DID NOT BEHAVE AS EXPECTED:");
        for w in &wrong {
            eprintln!("  - {w}");
        }
    }
    if args.no_wait {
        println!("\n--no-wait: tearing the lab down.");
        drop(mvps);
        drop(lab);
        anyhow::ensure!(wrong.is_empty(), "{} unexpected result(s)", wrong.len());
        return Ok(());
    }
    if !mvps.is_empty() {
        println!(
            "  mvp runs on every node (admin {MVP_ADMIN} in each node's namespace; logs <node>/mvp.log)"
        );
    }
    // Handlers first, then the line that tells a watching user (or test) to press Ctrl-C.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut int, mut term) = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    println!("\nThe lab is up. Ctrl-C to tear it down.");
    rt.block_on(async {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    });
    println!("\ntearing the lab down ...");
    drop(mvps);
    drop(lab);
    Ok(())
}
