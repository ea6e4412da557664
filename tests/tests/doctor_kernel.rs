//! `mvp doctor` on this machine's kernel: the probe really loads mvp's sk_lookup program
//! and attaches it in a throwaway network namespace.
//!
//! Needs root and `cargo build -p mvp-userspace` (the binary with the eBPF object).
use std::process::Command;

use test_support::{bins, require_root};

#[test]
fn doctor_kernel_checks_pass_on_this_kernel() {
    require_root!();
    let tmp = tempfile::tempdir().expect("tempdir");
    let before = std::fs::read_link("/proc/self/ns/net").expect("own netns");
    let out = Command::new(bins::mvp())
        .args(["doctor", "--output", "json", "--apiserver-manifest"])
        .arg(tmp.path().join("none.yaml"))
        .arg("--proc-root")
        .arg(tmp.path())
        .output()
        .expect("run mvp doctor");
    // Detection fails here (no apiserver), so the exit code is 1; the kernel part is
    // what this test is about.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("JSON report on stdout");
    let checks = report["checks"].as_array().expect("checks");
    let kernel: Vec<(&str, &str)> = checks
        .iter()
        .filter_map(|c| {
            let id = c["id"].as_str()?;
            id.starts_with("kernel/")
                .then(|| (id, c["verdict"].as_str().unwrap_or("?")))
        })
        .collect();
    assert_eq!(
        kernel,
        [
            ("kernel/privileges", "PASS"),
            ("kernel/version", "PASS"),
            ("kernel/netns", "PASS"),
            ("kernel/sk_lookup", "PASS"),
            ("kernel/attach", "PASS"),
        ],
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        std::fs::read_link("/proc/self/ns/net").expect("own netns"),
        before
    );
}
