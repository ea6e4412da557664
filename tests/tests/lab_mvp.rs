//! `mvp run` on a lab node: the lab's launcher, the node's topology (apiserver on
//! 0.0.0.0:6443, clients on the segment) and steering fit together.
//!
//! Needs root and the `mvp` binary with its eBPF object (`cargo build -p mvp-userspace`
//! without `AYA_BUILD_SKIP`; `cargo xtask test` builds it).
use std::net::SocketAddr;

use test_support::eventually::eventually;
use test_support::lab::{LabCluster, LabSpec, NodeSpec};
use test_support::require_root;

const ADMIN: &str = "127.0.0.1:9464";

/// `mvp_steering_connections_total{outcome="steered"}` from mvp's admin endpoint.
fn steered(lab: &LabCluster, node: &str) -> Result<u64, String> {
    let admin: SocketAddr = ADMIN.parse().expect("admin address");
    let (status, metrics) = lab
        .node_http_get(node, admin, "/metrics")
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("/metrics: HTTP {status}"));
    }
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("mvp_steering_connections_total{outcome=\"steered\"} "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no steered counter in:\n{metrics}"))
}

#[test]
fn kubectl_through_a_node_running_mvp_is_steered_and_answers_as_before() {
    require_root!();
    test_support::trace::init();
    let lab = LabCluster::start(LabSpec::new(vec![NodeSpec::v1_33("a")])).unwrap();
    let node = lab.node("a").unwrap();
    let before = lab
        .kubectl("a", &["get", "namespaces", "-o", "name"])
        .unwrap();
    assert!(before.success(), "{before}");

    let steer = node.addr().to_string();
    let mut mvp = lab
        .start_mvp(
            "a",
            "mvp",
            &["run", "--steer", &steer, "--admin-address", ADMIN],
        )
        .unwrap();
    let admin: SocketAddr = ADMIN.parse().unwrap();
    eventually("mvp on node a to be ready", || {
        if let Err(e) = mvp.check_running() {
            panic!("{e}"); // exited: waiting longer cannot help
        }
        match lab.node_http_get("a", admin, "/readyz") {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(format!("/readyz: HTTP {status} {body}")),
            Err(e) => Err(e.to_string()),
        }
    });
    let steered_before = steered(&lab, "a").unwrap();

    let with_mvp = lab
        .kubectl("a", &["get", "namespaces", "-o", "name"])
        .unwrap();
    assert!(
        with_mvp.success(),
        "kubectl through mvp:\n{with_mvp}\n{}",
        mvp.log()
    );
    assert_eq!(with_mvp.stdout, before.stdout);
    let steered_after = steered(&lab, "a").unwrap();
    assert!(
        steered_after > steered_before,
        "kubectl's connection was not steered into mvp ({steered_before} → {steered_after})"
    );

    // Fail-open: without mvp the apiserver answers directly again.
    mvp.stop();
    let after = lab
        .kubectl("a", &["get", "namespaces", "-o", "name"])
        .unwrap();
    assert!(after.success(), "{after}");
    assert_eq!(after.stdout, before.stdout);
}

#[test]
fn the_lab_report_fills_the_with_mvp_column() {
    require_root!();
    let out = std::process::Command::new(test_support::bins::bin("mvp-lab"))
        .args(["--no-wait", "--with-mvp"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run mvp-lab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mvp-lab --no-wait --with-mvp failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("with mvp:    "), "{stdout}");
    let steered = stdout
        .lines()
        .find_map(|l| l.strip_prefix("connections mvp steered (its /metrics): "))
        .unwrap_or_else(|| panic!("no steering counts in:\n{stdout}"));
    for part in steered.split(", ") {
        let count: u64 = part
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad count `{part}`"));
        assert!(count > 0, "mvp steered nothing on {part}");
    }
}
