//! The lab store end to end: the real `mvp-lab-apiserver` binary (two processes at
//! different emulated versions, one etcd) driven by the real `kubectl`: create, get (table
//! and JSON), patch (merge and strategic), label, watch, logs, delete, and a write through
//! one node seen through the other.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use test_support::bins;
use test_support::etcd::Etcd;
use test_support::eventually::patience;
use test_support::labapi::testpki::Ca;

struct Apiserver {
    child: Child,
    port: u16,
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Lab {
    dir: tempfile::TempDir,
    nodes: Vec<Apiserver>,
    _etcd: Etcd,
}

impl Lab {
    fn start(releases: &[&str]) -> Result<Lab> {
        let etcd = Etcd::start()?;
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let server_ca = Ca::new("lab-server-ca")?;
        server_ca.write_cert(d, "server-ca")?;
        server_ca
            .server("lab-apiserver", &["127.0.0.1".parse()?], &["localhost"])?
            .write(d, "server")?;
        let client_ca = Ca::new("lab-client-ca")?;
        client_ca.write_cert(d, "client-ca")?;
        client_ca
            .client("lab-admin", &["system:masters"])?
            .write(d, "admin")?;
        let mut nodes = Vec::new();
        for release in releases {
            let mut child = Command::new(bins::lab_apiserver())
                .args(["--bind-address", "127.0.0.1", "--secure-port", "0"])
                .arg("--tls-cert-file")
                .arg(d.join("server.crt"))
                .arg("--tls-private-key-file")
                .arg(d.join("server.key"))
                .arg("--client-ca-file")
                .arg(d.join("client-ca.crt"))
                .args(["--etcd-servers", &etcd.endpoint()])
                .arg("--discovery-dir")
                .arg(bins::fixtures_dir().join("discovery").join(release))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .context("mvp-lab-apiserver starts")?;
            let stderr = child.stderr.take().context("piped stderr")?;
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[lab] {line}");
                    if let Some(addr) = line.strip_prefix("mvp-lab-apiserver listening on ") {
                        let _ = tx.send(addr.to_string());
                    }
                }
            });
            let mut node = Apiserver { child, port: 0 };
            let addr = rx
                .recv_timeout(patience())
                .context("mvp-lab-apiserver reports its address")?;
            node.port = addr.rsplit(':').next().context("port")?.parse()?;
            nodes.push(node);
        }
        let lab = Lab {
            dir,
            nodes,
            _etcd: etcd,
        };
        for i in 0..lab.nodes.len() {
            let kubeconfig = format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: lab\n  context: {{cluster: lab, user: admin}}\ncurrent-context: lab\n",
                lab.nodes[i].port,
                d_path(&lab, "server-ca.crt"),
                d_path(&lab, "admin.crt"),
                d_path(&lab, "admin.key"),
            );
            std::fs::write(lab.kubeconfig(i), kubeconfig)?;
        }
        Ok(lab)
    }

    fn kubeconfig(&self, node: usize) -> PathBuf {
        self.dir.path().join(format!("kubeconfig-{node}"))
    }

    fn kubectl_cmd(&self, node: usize, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig")
            .arg(self.kubeconfig(node))
            .arg("--cache-dir")
            .arg(self.dir.path().join(format!("cache-{node}")))
            .args(args);
        c
    }

    fn kubectl_in(&self, node: usize, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let mut c = self.kubectl_cmd(node, args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().context("kubectl runs")?;
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .context("stdin")?
                .write_all(input.as_bytes())?;
        } else {
            drop(child.stdin.take());
        }
        Ok(child.wait_with_output()?)
    }

    /// Run kubectl on `node`; fail with its stderr unless it succeeds; return stdout.
    fn ok(&self, node: usize, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let out = self.kubectl_in(node, args, stdin)?;
        ensure!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    fn json(&self, node: usize, args: &[&str]) -> Result<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        Ok(serde_json::from_str(&self.ok(node, &a, None)?)?)
    }
}

fn d_path(lab: &Lab, name: &str) -> String {
    Path::new(lab.dir.path()).join(name).display().to_string()
}

/// Lines from a long-running kubectl (watch, logs -f), killed on drop.
struct Streaming {
    child: Child,
    rx: mpsc::Receiver<String>,
}

impl Streaming {
    fn start(mut cmd: Command) -> Result<Streaming> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let out = child.stdout.take().context("stdout")?;
        let err = child.stderr.take().context("stderr")?;
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx2.send(format!("stderr: {line}")).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Streaming { child, rx })
    }

    /// The next line that contains all `needles` (skipping others), within the patience.
    fn expect(&self, needles: &[&str]) -> Result<String> {
        let deadline = std::time::Instant::now() + patience();
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match self.rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => bail!(
                    "no line with {needles:?} within {:?}; saw {seen:?}",
                    patience()
                ),
            };
            seen.push(line.clone());
            if needles.iter().all(|n| line.contains(n)) {
                return Ok(line);
            }
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn kubectl_drives_the_store_through_two_lab_apiservers() -> Result<()> {
    test_support::trace::init();
    let lab = Lab::start(&["k8s-1.36", "k8s-1.33"])?;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "e2e"}});
    lab.ok(
        0,
        &["create", "--validate=false", "-f", "-"],
        Some(&ns.to_string()),
    )?;
    let got = lab.json(1, &["get", "namespace", "e2e"])?;
    assert_eq!(
        got["status"]["phase"], "Active",
        "node 1 sees node 0's namespace"
    );

    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "e2e"}, "data": {"k": "v1"}});
    let out = lab.ok(
        0,
        &["create", "--validate=false", "-f", "-"],
        Some(&cm.to_string()),
    )?;
    assert_eq!(out.trim(), "configmap/cfg created");

    // kubectl's generators send protobuf bodies.
    let out = lab.ok(
        0,
        &[
            "create",
            "configmap",
            "gen",
            "-n",
            "e2e",
            "--from-literal=a=b",
        ],
        None,
    )?;
    assert_eq!(out.trim(), "configmap/gen created");
    lab.ok(1, &["create", "namespace", "gen-ns"], None)?;
    lab.ok(
        1,
        &[
            "create",
            "secret",
            "generic",
            "s",
            "-n",
            "gen-ns",
            "--from-literal=pw=hunter2",
        ],
        None,
    )?;
    lab.ok(1, &["create", "serviceaccount", "sa", "-n", "gen-ns"], None)?;
    assert_eq!(
        lab.json(0, &["get", "configmap", "gen", "-n", "e2e"])?["data"],
        json!({"a": "b"})
    );
    let secret = lab.json(0, &["get", "secret", "s", "-n", "gen-ns"])?;
    assert_eq!(
        (secret["data"]["pw"].as_str(), secret["type"].as_str()),
        (Some("aHVudGVyMg=="), Some("Opaque"))
    );
    lab.json(0, &["get", "serviceaccount", "sa", "-n", "gen-ns"])?;
    // kubectl get prints the server's Table.
    let table = lab.ok(1, &["get", "configmaps", "-n", "e2e"], None)?;
    let mut rows = table.lines();
    let header: Vec<&str> = rows.next().context("header")?.split_whitespace().collect();
    assert_eq!(header, ["NAME", "DATA", "AGE"], "kube's ConfigMap columns");
    assert!(rows.any(|r| r.starts_with("cfg ")), "{table}");
    let nss = lab.ok(0, &["get", "namespaces"], None)?;
    assert!(
        nss.lines()
            .any(|l| l.starts_with("e2e ") && l.contains("Active")),
        "{nss}"
    );

    // A watch through node 1 (Table rows, as kubectl asks) sees writes made through node 0.
    let mut cmd = lab.kubectl_cmd(
        1,
        &[
            "get",
            "configmaps",
            "-n",
            "e2e",
            "--watch",
            "--output-watch-events",
        ],
    );
    cmd.stdin(Stdio::null());
    let watch = Streaming::start(cmd)?;
    watch.expect(&["ADDED", "cfg "])?;

    let out = lab.ok(
        0,
        &[
            "patch",
            "configmap",
            "cfg",
            "-n",
            "e2e",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"k":"v2"}}"#,
        ],
        None,
    )?;
    assert_eq!(out.trim(), "configmap/cfg patched");
    watch.expect(&["MODIFIED", "cfg "])?;
    lab.ok(
        0,
        &["label", "configmap", "cfg", "-n", "e2e", "tier=web"],
        None,
    )?;
    watch.expect(&["MODIFIED", "cfg "])?;
    let got = lab.json(1, &["get", "configmap", "cfg", "-n", "e2e"])?;
    assert_eq!(got["data"]["k"], "v2");
    assert_eq!(got["metadata"]["labels"]["tier"], "web");
    let sel = lab.ok(
        1,
        &[
            "get",
            "configmaps",
            "-n",
            "e2e",
            "-l",
            "tier=web",
            "-o",
            "name",
        ],
        None,
    )?;
    assert_eq!(sel.trim(), "configmap/cfg");

    // Strategic merge patch (kubectl's default) merges containers by name.
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "e2e"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}});
    lab.ok(
        1,
        &["create", "--validate=false", "-f", "-"],
        Some(&dep.to_string()),
    )?;
    lab.ok(
        0,
        &[
            "patch",
            "deployment",
            "web",
            "-n",
            "e2e",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"b","image":"b:2"}]}}}}"#,
        ],
        None,
    )?;
    let got = lab.json(1, &["get", "deployment", "web", "-n", "e2e"])?;
    assert_eq!(
        got["spec"]["template"]["spec"]["containers"],
        json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}])
    );
    assert_eq!(got["metadata"]["generation"], 2);
    lab.ok(
        0,
        &["scale", "deployment", "web", "-n", "e2e", "--replicas=3"],
        None,
    )?;
    assert_eq!(
        lab.json(1, &["get", "deployment", "web", "-n", "e2e"])?["spec"]["replicas"],
        3
    );
    let table = lab.ok(0, &["get", "deployments", "-n", "e2e"], None)?;
    let mut rows = table.lines();
    let header: Vec<&str> = rows.next().context("header")?.split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    let row: Vec<&str> = rows.next().context("row")?.split_whitespace().collect();
    assert_eq!(row[..4], ["web", "0/3", "0", "0"]);

    // Services: a cluster IP from the lab's range, kube's columns.
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "e2e"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
    lab.ok(
        1,
        &["create", "--validate=false", "-f", "-"],
        Some(&svc.to_string()),
    )?;
    let ip = lab.json(0, &["get", "service", "web", "-n", "e2e"])?["spec"]["clusterIP"]
        .as_str()
        .context("clusterIP")?
        .to_string();
    let table = lab.ok(0, &["get", "services", "-n", "e2e"], None)?;
    let mut rows = table.lines();
    let header: Vec<&str> = rows.next().context("header")?.split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let row: Vec<&str> = rows.next().context("row")?.split_whitespace().collect();
    assert_eq!(
        row[..5],
        ["web", "ClusterIP", ip.as_str(), "<none>", "80/TCP"]
    );

    // Server-side apply and server-side dry runs.
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "namespace": "e2e"}, "data": {"x": "1"}});
    let out = lab.ok(
        0,
        &["apply", "--server-side", "--validate=false", "-f", "-"],
        Some(&applied.to_string()),
    )?;
    assert_eq!(out.trim(), "configmap/ssa serverside-applied");
    assert_eq!(
        lab.json(1, &["get", "configmap", "ssa", "-n", "e2e"])?["data"],
        json!({"x": "1"})
    );
    let out = lab.ok(
        1,
        &[
            "create",
            "configmap",
            "dry",
            "-n",
            "e2e",
            "--dry-run=server",
            "--from-literal=a=b",
        ],
        None,
    )?;
    assert_eq!(out.trim(), "configmap/dry created (server dry run)");
    assert!(
        !lab.kubectl_in(0, &["get", "configmap", "dry", "-n", "e2e"], None)?
            .status
            .success()
    );

    // Client-side apply: create, then a three-way strategic merge patch.
    let mut applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "csa", "namespace": "e2e"}, "data": {"x": "1", "y": "2"}});
    let out = lab.ok(0, &["apply", "-f", "-"], Some(&applied.to_string()))?;
    assert_eq!(out.trim(), "configmap/csa created");
    applied["data"] = json!({"x": "3"});
    let out = lab.ok(1, &["apply", "-f", "-"], Some(&applied.to_string()))?;
    assert_eq!(out.trim(), "configmap/csa configured");
    let got = lab.json(0, &["get", "configmap", "csa", "-n", "e2e"])?;
    assert_eq!(
        got["data"],
        json!({"x": "3"}),
        "y removed by the three-way merge"
    );

    // kubectl run (a JSON body).
    let out = lab.ok(
        0,
        &[
            "run",
            "runp",
            "-n",
            "e2e",
            "--image=busybox:1.36",
            "--env=K=V",
            "--",
            "sleep",
            "3600",
        ],
        None,
    )?;
    assert_eq!(out.trim(), "pod/runp created");
    let p = lab.json(1, &["get", "pod", "runp", "-n", "e2e"])?;
    assert_eq!(p["spec"]["containers"][0]["args"], json!(["sleep", "3600"]));
    assert_eq!(p["status"]["phase"], "Pending");

    // Access reviews are computed, not stored.
    let out = lab.ok(0, &["auth", "can-i", "delete", "pods", "-n", "e2e"], None)?;
    assert_eq!(out.trim(), "yes");
    let out = lab.ok(0, &["auth", "can-i", "--list", "-n", "e2e"], None)?;
    assert!(out.lines().any(|l| l.starts_with("*.*")), "{out}");

    // Logs of a pod.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "e2e"},
        "spec": {"containers": [{"name": "c", "image": "pause"}]}});
    lab.ok(
        0,
        &["create", "--validate=false", "-f", "-"],
        Some(&pod.to_string()),
    )?;
    let logs = lab.ok(1, &["logs", "p", "-n", "e2e"], None)?;
    assert_eq!(logs.lines().count(), 3, "{logs}");
    assert!(logs.contains("of pod e2e/p container c"), "{logs}");

    // Delete through node 1, seen by node 0's watch; then NotFound as kubectl prints it.
    let out = lab.ok(1, &["delete", "configmap", "cfg", "-n", "e2e"], None)?;
    assert_eq!(out.trim(), "configmap \"cfg\" deleted");
    watch.expect(&["DELETED", "cfg "])?;
    let out = lab.kubectl_in(0, &["get", "configmap", "cfg", "-n", "e2e"], None)?;
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (NotFound): configmaps \"cfg\" not found"
    );
    let out = lab.ok(0, &["delete", "namespace", "e2e"], None)?;
    assert_eq!(out.trim(), "namespace \"e2e\" deleted");
    let out = lab.kubectl_in(1, &["get", "pod", "p", "-n", "e2e"], None)?;
    assert!(!out.status.success(), "the namespace's pods went with it");
    Ok(())
}
