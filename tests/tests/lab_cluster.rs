//! The lab control plane driven by real clients: kubectl and the Python `kubernetes`
//! client, from the lab's client namespace, against lab apiservers of two versions that
//! share one etcd.
//!
//! Most tests share one mixed lab (cp1, cp2 at 1.33; cp3 at 1.36) and never change its
//! topology; each uses its own names. Tests that stop apiservers bring up their own lab.
//! The shared lab is never dropped: its reaper removes it when the test binary exits.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;

use serde_json::{Value, json};
use test_support::eventually::eventually;
use test_support::https::{HttpsClient, HttpsError};
use test_support::lab::{CmdOutput, LabCluster, LabSpec, NodeSpec};
use test_support::pki::{CertKey, Credentials, Pki};
use test_support::require_root;
use test_support::surface::{ONLY_IN_133, ONLY_IN_136};

static LAB: OnceLock<LabCluster> = OnceLock::new();

fn lab() -> &'static LabCluster {
    test_support::trace::init();
    LAB.get_or_init(|| match LabCluster::start(LabSpec::mixed()) {
        Ok(lab) => lab,
        Err(e) => panic!("the lab did not come up: {e}"),
    })
}

fn ok(out: CmdOutput, what: &str) -> CmdOutput {
    assert!(out.success(), "{what} failed:\n{out}");
    out
}

fn kubectl(node: &str, args: &[&str]) -> CmdOutput {
    lab().kubectl(node, args).expect("run kubectl")
}

fn kubectl_ok(node: &str, args: &[&str]) -> CmdOutput {
    ok(
        kubectl(node, args),
        &format!("kubectl {} via {node}", args.join(" ")),
    )
}

/// `kubectl create -f -` with a JSON manifest. (kubectl's generators — `create deployment`,
/// `run` — send protobuf bodies, which the lab apiserver decodes only for a few kinds.)
fn create(node: &str, manifest: &Value) -> CmdOutput {
    lab()
        .kubectl_stdin(node, &["create", "-f", "-"], &manifest.to_string())
        .expect("run kubectl")
}

fn create_ok(node: &str, manifest: &Value) {
    ok(
        create(node, manifest),
        &format!("kubectl create {manifest} via {node}"),
    );
}

fn create_namespace(node: &str, ns: &str) {
    let out = create(
        node,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    );
    assert!(
        out.success() || out.stderr.contains("AlreadyExists"),
        "create namespace {ns}:\n{out}"
    );
}

#[test]
fn kubectl_crud_of_core_and_apps_resources_on_both_versions() {
    require_root!();
    for node in ["cp1", "cp3"] {
        let ns = format!("kcrud-{node}");
        create_namespace(node, &ns);
        // configmaps: create, get, patch (merge), replace, delete
        create_ok(
            node,
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "cm1", "namespace": ns}, "data": {"a": "1"}}),
        );
        let got = kubectl_ok(node, &["get", "configmap", "cm1", "-n", &ns, "-o", "json"]).json();
        assert_eq!(got["data"], json!({"a": "1"}), "{got}");
        kubectl_ok(
            node,
            &[
                "patch",
                "configmap",
                "cm1",
                "-n",
                &ns,
                "--type=merge",
                "-p",
                r#"{"data":{"b":"2"}}"#,
            ],
        );
        let got = kubectl_ok(node, &["get", "configmap", "cm1", "-n", &ns, "-o", "json"]).json();
        assert_eq!(got["data"], json!({"a": "1", "b": "2"}), "{got}");
        kubectl_ok(node, &["delete", "configmap", "cm1", "-n", &ns]);
        let gone = kubectl(node, &["get", "configmap", "cm1", "-n", &ns]);
        assert!(
            !gone.success() && gone.stderr.contains("NotFound"),
            "cm1 still readable after delete:\n{gone}"
        );

        // pods
        create_ok(
            node,
            &json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "p1", "namespace": ns},
                    "spec": {"restartPolicy": "Never",
                             "containers": [{"name": "c", "image": "busybox"}]}}),
        );
        let pod = kubectl_ok(node, &["get", "pod", "p1", "-n", &ns, "-o", "json"]).json();
        assert_eq!(pod["spec"]["containers"][0]["image"], "busybox", "{pod}");
        kubectl_ok(node, &["label", "pod", "p1", "-n", &ns, "tier=lab"]);
        let names = kubectl_ok(
            node,
            &["get", "pods", "-n", &ns, "-l", "tier=lab", "-o", "name"],
        );
        assert_eq!(names.stdout.trim(), "pod/p1");
        kubectl_ok(node, &["delete", "pod", "p1", "-n", &ns, "--wait=false"]);

        // deployments (apps/v1)
        let labels = json!({"app": "web"});
        create_ok(
            node,
            &json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "web", "namespace": ns},
                    "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                             "template": {"metadata": {"labels": labels},
                                          "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}),
        );
        kubectl_ok(
            node,
            &["scale", "deployment", "web", "-n", &ns, "--replicas=5"],
        );
        let dep = kubectl_ok(node, &["get", "deployment", "web", "-n", &ns, "-o", "json"]).json();
        assert_eq!(dep["spec"]["replicas"], 5, "{dep}");
        assert_eq!(dep["apiVersion"], "apps/v1");
        kubectl_ok(node, &["delete", "deployment", "web", "-n", &ns]);
    }
}

#[test]
fn kubectl_crud_of_resource_k8s_io_objects_at_each_versions_preferred_version() {
    require_root!();
    // resource.k8s.io's preferred version moved (v1beta2 on 1.33, v1 on 1.36): kubectl
    // picks it from the node's discovery.
    for (node, version) in [("cp2", "v1beta2"), ("cp3", "v1")] {
        let ns = format!("kres-{node}");
        create_namespace(node, &ns);
        let claim = json!({
            "apiVersion": format!("resource.k8s.io/{version}"),
            "kind": "ResourceClaim",
            "metadata": {"name": "claim1", "namespace": ns},
            "spec": {"devices": {"requests": [{"name": "gpu"}]}},
        });
        ok(
            lab()
                .kubectl_stdin(node, &["create", "-f", "-"], &claim.to_string())
                .unwrap(),
            "create resourceclaim",
        );
        let got = kubectl_ok(
            node,
            &["get", "resourceclaims", "claim1", "-n", &ns, "-o", "json"],
        )
        .json();
        assert_eq!(
            got["apiVersion"],
            format!("resource.k8s.io/{version}"),
            "{got}"
        );
        kubectl_ok(node, &["delete", "resourceclaims", "claim1", "-n", &ns]);
    }
}

#[test]
fn python_client_crud_and_watch_on_both_versions() {
    require_root!();
    let script = LabCluster::python_script("crud_watch.py");
    for (node, rapi) in [("cp1", "v1beta2"), ("cp3", "v1")] {
        let ns = format!("py-{node}");
        let out = lab().python(node, &script, &[&ns, rapi]).unwrap();
        assert!(out.success(), "crud_watch.py via {node}:\n{out}");
        for kind in ["configmap", "pod", "deployment", "resourceclaim"] {
            for step in [
                "create",
                "get",
                "list",
                "replace",
                "watch MODIFIED",
                "delete",
                "watch DELETED",
            ] {
                let line = format!("ok {kind} {step}");
                assert!(
                    out.stdout.contains(&line),
                    "missing `{line}` via {node}:\n{out}"
                );
            }
        }
    }
}

#[test]
fn objects_written_through_one_node_are_read_through_every_node_that_serves_them() {
    require_root!();
    create_namespace("cp1", "shared");
    create_ok(
        "cp1",
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "from-cp1", "namespace": "shared"}, "data": {"k": "v"}}),
    );
    for node in ["cp2", "cp3"] {
        let got = kubectl_ok(
            node,
            &["get", "configmap", "from-cp1", "-n", "shared", "-o", "json"],
        )
        .json();
        assert_eq!(got["data"]["k"], "v", "via {node}: {got}");
    }
    // resource.k8s.io/v1beta2 is served by both versions.
    let claim = json!({
        "apiVersion": "resource.k8s.io/v1beta2", "kind": "ResourceClaim",
        "metadata": {"name": "claim-from-cp1", "namespace": "shared"},
        "spec": {"devices": {"requests": [{"name": "gpu"}]}},
    });
    ok(
        lab()
            .kubectl_stdin("cp1", &["create", "-f", "-"], &claim.to_string())
            .unwrap(),
        "create claim via cp1",
    );
    let got = kubectl_ok(
        "cp3",
        &[
            "get",
            "resourceclaims.v1beta2.resource.k8s.io",
            "claim-from-cp1",
            "-n",
            "shared",
            "-o",
            "json",
        ],
    )
    .json();
    assert_eq!(got["metadata"]["name"], "claim-from-cp1", "{got}");

    // A Workload exists only for the 1.36 node: written through cp3, invisible through cp1.
    let workload = json!({
        "apiVersion": "scheduling.k8s.io/v1alpha2", "kind": "Workload",
        "metadata": {"name": "wl", "namespace": "shared"},
        "spec": {"podGroups": [{"name": "g", "policy": {"basic": {}}}]},
    });
    ok(
        lab()
            .kubectl_stdin("cp3", &["create", "-f", "-"], &workload.to_string())
            .unwrap(),
        "create workload via cp3",
    );
    kubectl_ok(
        "cp3",
        &["get", "workloads.scheduling.k8s.io", "wl", "-n", "shared"],
    );
    let miss = kubectl(
        "cp1",
        &["get", "workloads.scheduling.k8s.io", "wl", "-n", "shared"],
    );
    assert!(
        !miss.success()
            && miss
                .stderr
                .contains("the server doesn't have a resource type"),
        "a 1.33 node must not know workloads:\n{miss}"
    );
}

fn lines(out: &CmdOutput) -> BTreeSet<String> {
    out.stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn api_resources_and_api_versions_follow_each_nodes_version() {
    require_root!();
    let res: BTreeMap<&str, BTreeSet<String>> = ["cp1", "cp2", "cp3"]
        .into_iter()
        .map(|n| (n, lines(&kubectl_ok(n, &["api-resources", "-o", "name"]))))
        .collect();
    assert_eq!(res["cp1"], res["cp2"], "two 1.33 nodes must agree");
    for r in [
        "workloads.scheduling.k8s.io",
        "podgroups.scheduling.k8s.io",
        "podcertificaterequests.certificates.k8s.io",
    ] {
        assert!(
            res["cp3"].contains(r),
            "1.36 must list {r}: {:?}",
            res["cp3"]
        );
        assert!(!res["cp1"].contains(r), "1.33 must not list {r}");
    }
    for r in [
        "configmaps",
        "pods",
        "deployments.apps",
        "resourceclaims.resource.k8s.io",
    ] {
        assert!(
            res["cp1"].contains(r) && res["cp3"].contains(r),
            "{r} is on both"
        );
    }

    let vers: BTreeMap<&str, BTreeSet<String>> = ["cp1", "cp3"]
        .into_iter()
        .map(|n| (n, lines(&kubectl_ok(n, &["api-versions"]))))
        .collect();
    let only_133: Vec<_> = vers["cp1"].difference(&vers["cp3"]).cloned().collect();
    let only_136: Vec<_> = vers["cp3"].difference(&vers["cp1"]).cloned().collect();
    // README "Differences by group/version", 1.33 vs 1.36 columns.
    assert_eq!(
        only_133,
        [
            "storage.k8s.io/v1alpha1",
            "storagemigration.k8s.io/v1alpha1"
        ],
        "group/versions only on 1.33"
    );
    assert_eq!(
        only_136,
        [
            "resource.k8s.io/v1",
            "scheduling.k8s.io/v1alpha2",
            "storagemigration.k8s.io/v1beta1"
        ],
        "group/versions only on 1.36"
    );
}

/// One resource or subresource of a surface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Gvr {
    gv: String,
    /// `resource` or `resource/subresource`.
    resource: String,
    namespaced: bool,
    listable: bool,
    /// The resource's kind (`ResourceClaim`).
    kind: String,
}

/// Every (sub)resource of a discovery fixture (`aggregated_v2.json` plus core `api__v1.json`).
fn surface(dir: &Path) -> BTreeMap<(String, String), Gvr> {
    let read = |f: &str| -> Value {
        let path = dir.join(f);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let mut out = BTreeMap::new();
    let mut add = |gv: &str, resource: String, namespaced: bool, listable: bool, kind: &str| {
        out.insert(
            (gv.to_string(), resource.clone()),
            Gvr {
                gv: gv.to_string(),
                resource,
                namespaced,
                listable,
                kind: kind.to_string(),
            },
        );
    };
    let agg = read("aggregated_v2.json");
    for g in agg["items"].as_array().expect("items") {
        let group = g["metadata"]["name"].as_str().expect("group name");
        for v in g["versions"].as_array().expect("versions") {
            let gv = format!("{group}/{}", v["version"].as_str().expect("version"));
            for r in v["resources"].as_array().expect("resources") {
                let name = r["resource"].as_str().expect("resource").to_string();
                let namespaced = r["scope"] == "Namespaced";
                let listable = r["verbs"]
                    .as_array()
                    .is_some_and(|vs| vs.iter().any(|v| v == "list"));
                let kind = r["responseKind"]["kind"].as_str().unwrap_or("");
                for s in r["subresources"].as_array().into_iter().flatten() {
                    let sub = s["subresource"].as_str().expect("subresource");
                    add(&gv, format!("{name}/{sub}"), namespaced, false, kind);
                }
                add(&gv, name, namespaced, listable, kind);
            }
        }
    }
    let core = read("api__v1.json");
    for r in core["resources"].as_array().expect("core resources") {
        let name = r["name"].as_str().expect("name");
        if name.contains('/') {
            continue; // core subresources are connect/streaming verbs (exec, log, ...)
        }
        let listable = r["verbs"]
            .as_array()
            .is_some_and(|vs| vs.iter().any(|v| v == "list"));
        let kind = r["kind"].as_str().unwrap_or("");
        add(
            "v1",
            name.to_string(),
            r["namespaced"] == true,
            listable,
            kind,
        );
    }
    out
}

fn path_of(g: &Gvr) -> String {
    let prefix = if g.gv == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}", g.gv)
    };
    let ns = if g.namespaced {
        "/namespaces/default"
    } else {
        ""
    };
    match g.resource.split_once('/') {
        Some((res, sub)) => format!("{prefix}{ns}/{res}/lab-no-such-object/{sub}"),
        None => format!("{prefix}{ns}/{}", g.resource),
    }
}

/// kube-apiserver's answer for a path nothing serves.
fn is_unserved_404(status: u64, body: &Value) -> bool {
    status == 404 && body["message"] == "the server could not find the requested resource"
}

#[test]
fn exactly_the_resources_a_version_does_not_serve_are_404() {
    require_root!();
    let fixtures = test_support::bins::fixtures_dir().join("discovery");
    let s133 = surface(&fixtures.join("k8s-1.33"));
    let s136 = surface(&fixtures.join("k8s-1.36"));

    // The fixtures' difference is exactly the README's lists (so both are checked).
    let keys = |m: &BTreeMap<(String, String), Gvr>| m.keys().cloned().collect::<BTreeSet<_>>();
    let table = |t: &[(&str, &str)]| {
        t.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        keys(&s133)
            .difference(&keys(&s136))
            .cloned()
            .collect::<BTreeSet<_>>(),
        table(ONLY_IN_133)
    );
    assert_eq!(
        keys(&s136)
            .difference(&keys(&s133))
            .cloned()
            .collect::<BTreeSet<_>>(),
        table(ONLY_IN_136)
    );

    // Every (sub)resource of either version, through every node: served → anything but
    // the unserved 404 (200 for a list); unserved → the unserved 404.
    let mut union: BTreeMap<(String, String), Gvr> = s133.clone();
    union.extend(s136.clone());
    let all: Vec<&Gvr> = union.values().collect();
    let requests: Vec<Value> = all
        .iter()
        .map(|g| json!({"method": "GET", "path": path_of(g)}))
        .collect();
    let script = LabCluster::python_script("raw_requests.py");
    let mut failures = Vec::new();
    let mut checked = 0;
    for node in lab().nodes() {
        let served = if node.spec().minor() == "1.33" {
            &s133
        } else {
            &s136
        };
        let out = lab()
            .python_with_input(
                node.name(),
                &script,
                &[],
                Some(&Value::from(requests.clone()).to_string()),
            )
            .unwrap();
        assert!(out.success(), "raw_requests.py via {}:\n{out}", node.name());
        let replies = out.json();
        let replies = replies
            .as_array()
            .unwrap_or_else(|| panic!("raw_requests.py printed no list:\n{out}"));
        assert_eq!(replies.len(), all.len());
        for (g, reply) in all.iter().zip(replies) {
            checked += 1;
            let status = reply["status"].as_u64().unwrap_or(0);
            let body = &reply["body"];
            let key = (g.gv.clone(), g.resource.clone());
            let is_served = served.contains_key(&key);
            let good = if !is_served {
                is_unserved_404(status, body)
            } else if g.listable && !g.resource.contains('/') {
                status == 200
            } else {
                !is_unserved_404(status, body)
            };
            if !good {
                failures.push(format!(
                    "{} ({}) GET {} → {status} {}; served there: {is_served}",
                    node.name(),
                    node.spec().minor(),
                    path_of(g),
                    body.to_string().chars().take(160).collect::<String>()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} requests answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn kubernetes_service_and_endpointslice_list_every_apiserver() {
    require_root!();
    let slice = kubectl_ok(
        "cp2",
        &[
            "get",
            "endpointslices.discovery.k8s.io",
            "kubernetes",
            "-n",
            "default",
            "-o",
            "json",
        ],
    )
    .json();
    assert_eq!(slice["addressType"], "IPv4", "{slice}");
    let mut addrs: Vec<String> = slice["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e["addresses"][0].as_str().unwrap_or("").to_string())
        .collect();
    addrs.sort();
    let mut want: Vec<String> = lab().nodes().iter().map(|n| n.ipv4().to_string()).collect();
    want.sort();
    assert_eq!(addrs, want);
    assert_eq!(
        slice["ports"],
        json!([{"name": "https", "port": 6443, "protocol": "TCP"}])
    );
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "kubernetes"
    );
    let svc = kubectl_ok(
        "cp3",
        &[
            "get",
            "service",
            "kubernetes",
            "-n",
            "default",
            "-o",
            "json",
        ],
    )
    .json();
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 6443, "{svc}");
}

#[test]
fn bearer_token_user_is_served_and_audited() {
    require_root!();
    let node = lab().node("cp2").unwrap();
    let out = ok(
        lab()
            .kubectl_with(
                node.token_kubeconfig(),
                &["get", "namespaces", "-o", "name"],
            )
            .unwrap(),
        "kubectl with the token kubeconfig",
    );
    assert!(out.stdout.contains("namespace/default"), "{out}");
    eventually("an audit event of the token user on cp2", || {
        let events = lab().audit_log("cp2").map_err(|e| e.to_string())?;
        events
            .iter()
            .find(|e| {
                // The lab's audit line: {verb, path, user, uid, groups, sourceAddress, code}.
                e["user"] == test_support::pki::TOKEN_USER
                    && e["uid"] == test_support::pki::TOKEN_UID
                    && e["verb"] == "list"
                    && e["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("/api/v1/namespaces"))
                    && e["sourceAddress"].as_str().is_some_and(|a| {
                        a.starts_with(&format!("{}:", test_support::lab::CLIENT_V4))
                    })
            })
            .cloned()
            .ok_or_else(|| {
                format!(
                    "{} events, none by the token user on namespaces",
                    events.len()
                )
            })
    });
}

#[test]
fn apiservers_stop_and_start_and_the_lab_removes_everything_it_made() {
    require_root!();
    test_support::trace::init();
    let lab = LabCluster::start(LabSpec::new(vec![
        NodeSpec::v1_33("a"),
        NodeSpec::v1_36("b"),
    ]))
    .unwrap();
    let namespaces: Vec<String> = lab
        .nodes()
        .iter()
        .map(|n| n.netns().name().to_string())
        .chain([
            lab.client().name().to_string(),
            lab.segment().hub().name().to_string(),
        ])
        .collect();
    let dir = lab.dir().to_path_buf();
    let pids: Vec<u32> = lab
        .nodes()
        .iter()
        .filter_map(|n| n.apiserver_pid())
        .collect();
    assert_eq!(pids.len(), 2);

    lab.stop_apiserver("a").unwrap();
    assert!(!lab.node("a").unwrap().apiserver_running());
    let down = lab
        .kubectl("a", &["get", "namespaces", "--request-timeout=5s"])
        .unwrap();
    assert!(!down.success(), "a stopped apiserver answered:\n{down}");
    // State lives in etcd: a write through b while a is down is visible through a later.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "while-a-was-down", "namespace": "default"}});
    ok(
        lab.kubectl_stdin("b", &["create", "-f", "-"], &cm.to_string())
            .unwrap(),
        "create via b",
    );
    // The endpoints follow when asked, as kube's lease reconciler would after the lease
    // of a's apiserver expired.
    assert_eq!(lab.sync_endpoints_to_running().unwrap(), ["b"]);
    let slice = ok(
        lab.kubectl(
            "b",
            &[
                "get",
                "endpointslice",
                "kubernetes",
                "-n",
                "default",
                "-o",
                "json",
            ],
        )
        .unwrap(),
        "get endpointslice via b",
    )
    .json();
    let b_ip = lab.node("b").unwrap().ipv4().to_string();
    assert_eq!(
        slice["endpoints"],
        json!([{"addresses": [b_ip], "conditions": {"ready": true}}])
    );
    lab.start_apiserver("a").unwrap();
    assert_eq!(lab.sync_endpoints_to_running().unwrap(), ["a", "b"]);
    ok(
        lab.kubectl(
            "a",
            &["get", "configmap", "while-a-was-down", "-n", "default"],
        )
        .unwrap(),
        "get via a",
    );

    drop(lab);
    for ns in &namespaces {
        assert!(
            !Path::new("/run/netns").join(ns).exists(),
            "namespace {ns} left behind"
        );
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains("mvp-lab-apiserver"),
            "apiserver {pid} still running"
        );
    }
}

#[test]
fn kubectl_exec_runs_the_lab_container_on_both_versions() {
    require_root!();
    for node in ["cp1", "cp3"] {
        let ns = format!("exec-{node}");
        create_namespace(node, &ns);
        create_ok(
            node,
            &json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "box", "namespace": ns},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        );
        let hello = kubectl_ok(
            node,
            &["exec", "-n", &ns, "box", "--", "echo", "hello", node],
        );
        assert_eq!(hello.stdout, format!("hello {node}\n"));
        let who = kubectl_ok(node, &["exec", "-n", &ns, "box", "--", "whoami"]);
        assert_eq!(who.stdout.trim(), test_support::pki::ADMIN_USER);
        let piped = lab()
            .kubectl_stdin(
                node,
                &["exec", "-i", "-n", &ns, "box", "--", "cat"],
                "line one\nline two\n",
            )
            .unwrap();
        assert_eq!(
            ok(piped, "kubectl exec -i cat").stdout,
            "line one\nline two\n"
        );
        let failed = kubectl(node, &["exec", "-n", &ns, "box", "--", "false"]);
        assert_eq!(
            failed.code, 1,
            "exit code of `false` must come back:\n{failed}"
        );
    }
}

/// Who the lab apiserver says the caller is (`kubectl auth whoami`'s request).
fn try_whoami(client: &HttpsClient, node: &str) -> Result<(u16, Value), HttpsError> {
    let n = lab().node(node).unwrap();
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let reply = client.request(
        lab().client(),
        n.addr(),
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some(&review),
    )?;
    Ok((reply.status, reply.json()))
}

fn whoami(client: &HttpsClient, node: &str) -> (u16, Value) {
    try_whoami(client, node).unwrap_or_else(|e| panic!("POST selfsubjectreviews via {node}: {e}"))
}

#[test]
fn generated_credentials_authenticate_like_kubeadms() {
    require_root!();
    let pki = lab().pki();
    let ca = pki.ca_pem();
    let client = |ck: &CertKey| HttpsClient::new(&ca, Some(ck)).unwrap();

    let (status, me) = whoami(&client(pki.admin()), "cp1");
    assert_eq!(status, 201, "{me}");
    assert_eq!(me["status"]["userInfo"]["username"], "kubernetes-admin");
    assert!(
        me["status"]["userInfo"]["groups"]
            .as_array()
            .is_some_and(|g| g.contains(&json!("system:masters"))),
        "{me}"
    );

    let (status, me) = whoami(
        &HttpsClient::new(&ca, None).unwrap().with_token(pki.token()),
        "cp3",
    );
    assert_eq!(status, 201, "{me}");
    assert_eq!(
        me["status"]["userInfo"]["username"],
        test_support::pki::TOKEN_USER
    );
    assert_eq!(
        me["status"]["userInfo"]["uid"],
        test_support::pki::TOKEN_UID
    );

    // A front proxy (the front-proxy-client cert) asserts the user in headers.
    let proxied = client(pki.front_proxy_client())
        .with_header("X-Remote-User", "alice")
        .with_header("X-Remote-Group", "lab:devs");
    let (status, me) = whoami(&proxied, "cp2");
    assert_eq!(status, 201, "{me}");
    assert_eq!(me["status"]["userInfo"]["username"], "alice");

    // Any user, through a kubeconfig the lab writes, with real kubectl.
    let alice = lab()
        .write_kubeconfig(
            "cp3",
            "alice",
            "alice",
            Credentials::Cert(pki.client_cert("alice", &["lab:devs"]).unwrap()),
        )
        .unwrap();
    let who = ok(
        lab()
            .kubectl_with(&alice, &["auth", "whoami", "-o", "json"])
            .unwrap(),
        "kubectl auth whoami as alice",
    );
    assert_eq!(
        who.json()["status"]["userInfo"]["username"],
        "alice",
        "{who}"
    );

    // A front-proxy cert whose CN is not in --requestheader-allowed-names: 401.
    let wrong_cn = pki.front_proxy_cert("not-the-front-proxy").unwrap();
    let (status, body) = whoami(
        &client(&wrong_cn).with_header("X-Remote-User", "alice"),
        "cp1",
    );
    assert_eq!(
        status, 401,
        "front-proxy cert with a CN not allowed: {body}"
    );

    // Certs that do not verify. kube-apiserver (and the lab) requests client certs without
    // verifying them in the handshake and answers each request with a 401 Status.
    let unknown = Pki::unknown_ca_client_cert("kubernetes-admin", &["system:masters"]).unwrap();
    let expired = pki
        .expired_client_cert("kubernetes-admin", &["system:masters"])
        .unwrap();
    for (what, ck) in [
        ("a client cert from an unknown CA", &unknown),
        ("an expired client cert", &expired),
    ] {
        match try_whoami(&client(ck), "cp1") {
            Ok((401, body)) => assert_eq!(body["reason"], "Unauthorized", "{what}: {body}"),
            Ok((status, body)) => panic!("{what} got HTTP {status}: {body}"),
            Err(e) => panic!("{what}: the handshake must complete and answer 401: {e}"),
        }
    }
}

#[test]
fn a_rotated_serving_cert_is_served_and_trusted() {
    require_root!();
    test_support::trace::init();
    let lab = LabCluster::start(LabSpec::new(vec![NodeSpec::v1_36("solo")])).unwrap();
    let before = lab.served_chain("solo").unwrap();
    let pair = lab.rotate_serving_cert("solo").unwrap();
    let after = lab.served_chain("solo").unwrap();
    assert_ne!(before[0], after[0], "the old cert is still served");
    let (_, pem) = x509_parser::pem::parse_x509_pem(pair.cert_pem.as_bytes()).unwrap();
    assert_eq!(
        after[0], pem.contents,
        "the served cert is not the re-issued one"
    );
    ok(
        lab.kubectl("solo", &["get", "namespaces"]).unwrap(),
        "kubectl after rotation",
    );
}

#[test]
fn a_lab_bound_to_the_ipv6_wildcard_serves_both_families() {
    require_root!();
    test_support::trace::init();
    let mut spec = LabSpec::new(vec![NodeSpec::v1_33("dual")]);
    spec.bind_address = "::".parse().unwrap();
    let lab = LabCluster::start(spec).unwrap();
    let node = lab.node("dual").unwrap();
    for kubeconfig in [node.kubeconfig(), node.kubeconfig_v6()] {
        let out = ok(
            lab.kubectl_with(kubeconfig, &["get", "--raw", "/version"])
                .unwrap(),
            &format!("kubectl --kubeconfig {}", kubeconfig.display()),
        );
        assert_eq!(out.json()["gitVersion"], "v1.33.4", "{out}");
    }
}

#[test]
fn plain_http_inside_a_node_namespace_reaches_its_loopback() {
    require_root!();
    // What mvp's admin endpoint (127.0.0.1:9464) looks like to a test: loopback of the node.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("readyz"), "ok").unwrap();
    let node = lab().node("cp2").unwrap();
    let mut server = node
        .netns()
        .command("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "19464",
            "--directory",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = "127.0.0.1:19464".parse().unwrap();
    let (status, body) = eventually("http.server in cp2", || {
        lab().node_http_get("cp2", addr, "/readyz")
    });
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!((status, body.as_str()), (200, "ok"));
    // The server is gone: the helper reports the refused connection as an error.
    assert!(lab().node_http_get("cp2", addr, "/readyz").is_err());
}

#[test]
fn kubectl_watch_through_one_node_sees_writes_through_another() {
    require_root!();
    use std::io::{BufRead, BufReader};
    let ns = "watch-x";
    create_namespace("cp1", ns);
    let configmap = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}});
    // w0 exists before the watch: kubectl lists it first, then watches.
    create_ok("cp1", &configmap("w0"));
    let kubeconfig = lab().node("cp3").unwrap().kubeconfig().to_path_buf();
    let mut watcher = lab()
        .client_command("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "configmaps", "-n", ns, "--watch", "-o", "name"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start kubectl --watch");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = watcher.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let drain = |seen: &mut Vec<String>| {
        while let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
            seen.push(line);
        }
    };
    eventually("kubectl's initial list through cp3", || {
        drain(&mut seen);
        if seen.iter().any(|l| l == "configmap/w0") {
            Ok(())
        } else {
            Err(format!("output so far: {seen:?}"))
        }
    });
    // Anything written from now on can only reach kubectl through its watch. Write through
    // the other version's node until the watch through cp3 shows it.
    let mut n = 0;
    eventually(
        "cp3's watch to show a configmap written through cp1",
        || {
            n += 1;
            create_ok("cp1", &configmap(&format!("w{n}")));
            drain(&mut seen);
            seen.iter()
                .find(|l| l.starts_with("configmap/w") && *l != "configmap/w0")
                .cloned()
                .ok_or_else(|| format!("watch output so far: {seen:?}"))
        },
    );
    let _ = watcher.kill();
    let _ = watcher.wait();
}

/// `GET <object>/status` of every status subresource in the README's "only in" lists, on an
/// object that exists: 200 through a node that serves the subresource, kube's unserved 404
/// through one that does not.
#[test]
fn status_of_an_existing_object_is_served_exactly_where_the_version_has_it() {
    require_root!();
    let fixtures = test_support::bins::fixtures_dir().join("discovery");
    let s133 = surface(&fixtures.join("k8s-1.33"));
    let s136 = surface(&fixtures.join("k8s-1.36"));
    let script = LabCluster::python_script("raw_requests.py");
    let send = |node: &str, reqs: &[Value]| -> Vec<Value> {
        let out = lab()
            .python_with_input(
                node,
                &script,
                &[],
                Some(&Value::from(reqs.to_vec()).to_string()),
            )
            .unwrap();
        assert!(out.success(), "raw_requests.py via {node}:\n{out}");
        out.json()
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("no list:\n{out}"))
    };
    // (gv, subresource, object path) of every probe, objects created through a serving node.
    let mut probes: Vec<(&str, &str, String)> = Vec::new();
    for (only, served, serving_node) in [(ONLY_IN_133, &s133, "cp1"), (ONLY_IN_136, &s136, "cp3")] {
        let mut creates = Vec::new();
        for (gv, sub) in only.iter().filter(|(_, r)| r.ends_with("/status")) {
            let parent = sub.trim_end_matches("/status");
            let g = &served[&(gv.to_string(), parent.to_string())];
            // One object per group/version: the lab keys objects by group/resource.
            let name = format!("status-probe-{}", gv.replace(['/', '.'], "-"));
            let collection = path_of(g);
            let obj = json!({"apiVersion": gv, "kind": g.kind, "metadata": {"name": name}});
            creates.push(json!({"method": "POST", "path": collection, "body": obj}));
            probes.push((gv, sub, format!("{collection}/{name}")));
        }
        for (req, reply) in creates.iter().zip(send(serving_node, &creates)) {
            let code = reply["status"].as_u64().unwrap_or(0);
            assert!(
                code == 201 || code == 200,
                "{req} via {serving_node}: {reply}"
            );
        }
    }
    let gets: Vec<Value> = probes
        .iter()
        .map(|(_, _, obj)| json!({"method": "GET", "path": format!("{obj}/status")}))
        .collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    for node in lab().nodes() {
        let surface = if node.spec().minor() == "1.33" {
            &s133
        } else {
            &s136
        };
        for ((gv, sub, obj), reply) in probes.iter().zip(send(node.name(), &gets)) {
            checked += 1;
            let serves = surface.contains_key(&(gv.to_string(), sub.to_string()));
            let status = reply["status"].as_u64().unwrap_or(0);
            let name = obj.rsplit('/').next().unwrap_or_default();
            let good = if serves {
                status == 200 && reply["body"]["metadata"]["name"] == name
            } else {
                is_unserved_404(status, &reply["body"])
            };
            if !good {
                failures.push(format!(
                    "{} ({}) GET {obj}/status → {status} {}; serves it: {serves}",
                    node.name(),
                    node.spec().minor(),
                    reply["body"]
                        .to_string()
                        .chars()
                        .take(160)
                        .collect::<String>()
                ));
            }
        }
    }
    assert!(checked >= 3 * 9, "only {checked} checks");
    assert!(
        failures.is_empty(),
        "{} of {checked} status reads answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn kubectl_on_a_node_reaches_its_own_apiserver_over_loopback() {
    require_root!();
    let out = ok(
        lab()
            .kubectl_on_node("cp3", &["get", "--raw", "/version"])
            .unwrap(),
        "kubectl on cp3 via 127.0.0.1",
    );
    assert_eq!(out.json()["gitVersion"], "v1.36.2", "{out}");
    eventually("cp3's audit log to show a loopback caller", || {
        let events = lab().audit_log("cp3").map_err(|e| e.to_string())?;
        events
            .iter()
            .find(|e| {
                e["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/version"))
                    && e["sourceAddress"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("127.0.0.1:"))
            })
            .cloned()
            .ok_or_else(|| format!("{} events, none from 127.0.0.1 on /version", events.len()))
    });
}
