//! `mvp-lab` (what `cargo xtask lab` runs): the report shows the problem, and the lab
//! leaves nothing behind — after `--no-wait`, after Ctrl-C, and when it is killed.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use test_support::eventually::{eventually, patience};
use test_support::require_root;

fn mvp_lab() -> Command {
    let mut cmd = Command::new(test_support::bins::bin("mvp-lab"));
    cmd.env("RUST_BACKTRACE", "0");
    cmd
}

/// Namespaces and temp dirs of the process `pid` that still exist.
fn leftovers(pid: u32) -> Vec<String> {
    let mut found = Vec::new();
    let ns_prefix = format!("{}{pid}x", test_support::netns::PREFIX);
    for entry in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&ns_prefix) {
            found.push(format!("netns {name}"));
        }
    }
    let dir_prefix = format!("mvp-lab-{pid}-");
    for entry in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&dir_prefix) {
            found.push(format!("dir {}", entry.path().display()));
        }
    }
    found
}

/// Processes whose command line mentions `dir` (the lab's apiservers and etcd do).
fn processes_using(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

#[test]
fn no_wait_report_shows_the_false_404s_and_leaves_nothing_behind() {
    require_root!();
    // Without mvp: with it every node answers alike (lab_mvp.rs checks that report).
    let out = mvp_lab()
        .args(["--no-wait", "--without-mvp"])
        .output()
        .expect("run mvp-lab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mvp-lab --no-wait failed:\n{stdout}\n{stderr}"
    );
    for want in [
        "$ kubectl get workloads.scheduling.k8s.io -n default",
        "cp1 (1.33)   FAIL  error: the server doesn't have a resource type \"workloads\"",
        "cp3 (1.36)   ok    1 item(s)",
        "14 of 27 requests failed only because they reached an apiserver of the other version.",
        "+ workloads scheduling.k8s.io/v1alpha2 true Workload",
        "- storageversionmigrations storagemigration.k8s.io/v1alpha1 false StorageVersionMigration",
    ] {
        assert!(stdout.contains(want), "report lacks `{want}`:\n{stdout}");
    }
    // `output()` waited for the process; its pid is gone, so use the report's working dir.
    let dir = stdout
        .lines()
        .find_map(|l| l.split("working dir ").nth(1))
        .map(PathBuf::from)
        .expect("report names its working dir");
    assert!(!dir.exists(), "{} left behind", dir.display());
    let pid: u32 = dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("mvp-lab-"))
        .and_then(|n| n.split('-').next())
        .and_then(|p| p.parse().ok())
        .expect("dir carries the pid");
    assert_eq!(leftovers(pid), Vec::<String>::new());
    assert_eq!(processes_using(&dir), Vec::<u32>::new());
}

/// Start `mvp-lab` (staying up) and return it with its working dir once it says it is up.
fn start_waiting_lab() -> (Child, PathBuf) {
    let mut child = mvp_lab()
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mvp-lab");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut dir = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(d) = line.split("working dir ").nth(1) {
                dir = Some(PathBuf::from(d));
            }
            if line.contains("Ctrl-C to tear it down") {
                let _ = tx.send(dir.clone());
            }
        }
    });
    let dir = rx
        .recv_timeout(patience() * 3)
        .expect("mvp-lab did not say it was up")
        .expect("mvp-lab named its working dir");
    assert!(dir.exists());
    assert!(!processes_using(&dir).is_empty(), "no lab processes found");
    (child, dir)
}

#[test]
fn ctrl_c_tears_the_lab_down_and_so_does_the_reaper_after_kill_9() {
    require_root!();
    // Ctrl-C: mvp-lab tears down in order and exits 0.
    let (mut child, dir) = start_waiting_lab();
    let pid = child.id();
    kill(Pid::from_raw(pid as i32), Signal::SIGINT).expect("SIGINT");
    let status = child.wait().expect("wait mvp-lab");
    assert!(
        status.success(),
        "mvp-lab exited with {status} after Ctrl-C"
    );
    assert_eq!(leftovers(pid), Vec::<String>::new());
    assert_eq!(processes_using(&dir), Vec::<u32>::new());

    // SIGKILL: no destructor runs; the reaper removes namespaces, processes and files.
    let (mut child, dir) = start_waiting_lab();
    let pid = child.id();
    child.kill().expect("SIGKILL");
    child.wait().expect("wait mvp-lab");
    eventually("the reaper to remove what the killed lab made", || {
        let left = leftovers(pid);
        let procs = processes_using(&dir);
        if left.is_empty() && procs.is_empty() {
            Ok(())
        } else {
            Err(format!("still there: {left:?}, processes {procs:?}"))
        }
    });
}
