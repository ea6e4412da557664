//! `mvp doctor` on a lab control-plane node: run inside the node's namespace with a
//! kubeadm-shaped manifest (the fixture rewritten to the node's PKI and address) and the
//! other nodes as peers. The good node passes with the 1.33/1.36 skew listed; broken
//! copies of its PKI/manifest (wrong CA, missing front-proxy cert, allowed-names mismatch)
//! each fail the right check with its fix, and doctor exits non-zero.
//!
//! Needs root and `cargo build -p mvp-userspace` (the binary with the eBPF object).
use std::path::{Path, PathBuf};

use test_support::lab::{LabCluster, LabSpec};
use test_support::{bins, require_root};

const NODE: &str = "cp1";

/// Copy the node's PKI directory (flat, kubeadm's layout) to `dst`.
fn copy_pki(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
    }
}

/// kubeadm's manifest pointed at `pki` and the node's address; `edit` changes its text.
fn write_manifest(
    dir: &Path,
    pki: &Path,
    node_ip: &str,
    edit: impl Fn(String) -> String,
) -> PathBuf {
    let fixture = std::fs::read_to_string(bins::fixtures_dir().join("kubeadm/kube-apiserver.yaml"))
        .expect("kubeadm fixture");
    let text = fixture
        .replace("/etc/kubernetes/pki", pki.to_str().unwrap())
        .replace("192.168.56.11", node_ip);
    let path = dir.join("kube-apiserver.yaml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

struct Run {
    code: Option<i32>,
    json: serde_json::Value,
    text: String,
}

/// `mvp doctor` (JSON, then text) in the node's namespace, the other nodes as peers.
fn doctor(lab: &LabCluster, dir: &Path, manifest: &Path) -> Run {
    let node = lab.node(NODE).unwrap();
    let peers: Vec<String> = lab
        .nodes()
        .iter()
        .filter(|n| n.name() != NODE)
        .map(|n| format!("--peer=https://{}", n.addr()))
        .collect();
    let run = |output: &str| {
        node.netns()
            .command(bins::mvp())
            .args(["doctor", "--output", output, "--apiserver-manifest"])
            .arg(manifest)
            .arg("--proc-root")
            .arg(dir)
            .args(&peers)
            .output()
            .expect("run mvp doctor")
    };
    let json = run("json");
    let text = run("text");
    Run {
        code: json.status.code(),
        json: serde_json::from_slice(&json.stdout).unwrap_or_else(|e| {
            panic!(
                "doctor JSON: {e}\n{}\n{}",
                String::from_utf8_lossy(&json.stdout),
                String::from_utf8_lossy(&json.stderr)
            )
        }),
        text: String::from_utf8_lossy(&text.stdout).into_owned(),
    }
}

impl Run {
    fn check(&self, id: &str) -> &serde_json::Value {
        self.json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no check {id} in\n{}", self.text))
    }

    /// `id` is a FAIL with a one-line fix mentioning `fix_word`, shown in the text report;
    /// doctor exits non-zero.
    fn assert_fails(&self, id: &str, fix_word: &str) {
        let c = self.check(id);
        assert_eq!(c["verdict"], "FAIL", "{id}:\n{}", self.text);
        let fix = c["fix"].as_str().unwrap_or_default();
        assert!(
            fix.contains(fix_word),
            "{id} fix {fix:?} lacks {fix_word:?}"
        );
        assert!(!fix.contains('\n'));
        assert!(
            self.text.contains(fix),
            "fix line not in the report:\n{}",
            self.text
        );
        assert_eq!(self.json["verdict"], "FAIL");
        assert_eq!(self.code, Some(1), "{}", self.text);
    }
}

#[test]
fn doctor_on_lab_nodes_passes_and_names_each_break() {
    require_root!();
    test_support::trace::init();
    let lab = LabCluster::start(LabSpec::mixed()).unwrap();
    let node = lab.node(NODE).unwrap();
    let ip = node.ipv4().to_string();
    let tmp = tempfile::tempdir().unwrap();

    // The good node.
    let good_dir = tmp.path().join("good");
    std::fs::create_dir_all(&good_dir).unwrap();
    let manifest = write_manifest(&good_dir, node.pki().dir(), &ip, |t| t);
    let good = doctor(&lab, &good_dir, &manifest);
    eprintln!("mvp doctor on lab node {NODE}:\n{}", good.text);
    assert_eq!(good.code, Some(0), "{}", good.text);
    assert_eq!(good.json["verdict"], "PASS", "{}", good.text);
    let failing: Vec<&serde_json::Value> = good.json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "FAIL")
        .collect();
    assert!(failing.is_empty(), "{failing:?}");
    for id in [
        "detect",
        "server/local",
        "skew",
        "requestheader/allowed-names",
    ] {
        assert_eq!(good.check(id)["verdict"], "PASS", "{id}:\n{}", good.text);
    }
    let servers = good.json["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3, "{}", good.text);
    assert!(servers.iter().all(|s| s["ok"] == true), "{}", good.text);
    // cp1, cp2 serve 1.33; cp3 1.36: rows served by one server (1.36-only) and by two
    // (1.33-only).
    let skew = good.json["skew"].as_array().unwrap();
    let by = |n: usize| {
        skew.iter()
            .filter(|r| r["served_by"].as_array().map(Vec::len) == Some(n))
            .count()
    };
    eprintln!(
        "skew rows: {} served by one server (1.36-only), {} by two (1.33-only)",
        by(1),
        by(2)
    );
    assert!(by(1) > 0 && by(2) > 0, "{}", good.text);
    assert!(
        good.text.contains("not served by every server"),
        "{}",
        good.text
    );

    // Wrong CA: ca.crt from another cluster; the node's serving cert no longer chains.
    let dir = tmp.path().join("wrong-ca");
    let pki = dir.join("pki");
    copy_pki(node.pki().dir(), &pki);
    let other = test_support::pki::Pki::generate(&tmp.path().join("other")).unwrap();
    std::fs::write(pki.join("ca.crt"), other.ca_pem()).unwrap();
    let manifest = write_manifest(&dir, &pki, &ip, |t| t);
    let r = doctor(&lab, &dir, &manifest);
    eprintln!("wrong CA:\n{}", r.text);
    r.assert_fails("cert/serving-chain", "--peer-ca-file");

    // Missing front-proxy client cert.
    let dir = tmp.path().join("no-front-proxy");
    let pki = dir.join("pki");
    copy_pki(node.pki().dir(), &pki);
    std::fs::remove_file(pki.join("front-proxy-client.crt")).unwrap();
    let manifest = write_manifest(&dir, &pki, &ip, |t| t);
    let r = doctor(&lab, &dir, &manifest);
    eprintln!("missing front-proxy cert:\n{}", r.text);
    r.assert_fails("file/proxy-client-cert-file", "hostPath");
    // The servers refuse the anonymous doctor (the lab allows anonymous: 403, not 401);
    // the fix points at the missing cert, not at RBAC.
    r.assert_fails("server/local", "no front-proxy client cert");

    // --requestheader-allowed-names that does not name the front-proxy cert's CN.
    let dir = tmp.path().join("allowed-names");
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = write_manifest(&dir, node.pki().dir(), &ip, |t| {
        t.replace(
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-allowed-names=aggregator",
        )
    });
    let r = doctor(&lab, &dir, &manifest);
    eprintln!("allowed-names mismatch:\n{}", r.text);
    r.assert_fails("requestheader/allowed-names", "front-proxy-client");
}
