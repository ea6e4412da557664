//! Routing through mvp in the mixed lab (cp1, cp2 at 1.33; cp3 at 1.36), with mvp on every
//! node started with kubeadm's flags: every resource only one version serves works through
//! every node; peers that die are skipped; nobody left → 503 + Retry-After, never 404; a dead
//! local apiserver is routed around; a forwarded request is never forwarded again.
//!
//! Needs root and the `mvp` binary with its eBPF object (`cargo build -p mvp-userspace`).
use std::path::Path;

use serde_json::{Value, json};
use test_support::eventually::eventually;
use test_support::lab::{LabCluster, LabProcess, LabSpec};
use test_support::require_root;
use test_support::surface::{ONLY_IN_133, ONLY_IN_136, Resource, resource};

const ADMIN: &str = "127.0.0.1:9464";

fn start_mvps(lab: &LabCluster) -> Vec<LabProcess> {
    test_support::mvp_args::start_on_every_node(lab, ADMIN, "1")
}

fn metrics(lab: &LabCluster, node: &str) -> String {
    let (status, text) = lab
        .node_http_get(node, ADMIN.parse().unwrap(), "/metrics")
        .unwrap();
    assert_eq!(status, 200, "{text}");
    text
}

/// Requests through `node` with the Python client (x509 admin); (status, body) each.
fn raw(lab: &LabCluster, node: &str, requests: &[Value]) -> Vec<(u64, Value)> {
    let out = lab
        .python_with_input(
            node,
            &LabCluster::python_script("raw_requests.py"),
            &[],
            Some(&Value::from(requests.to_vec()).to_string()),
        )
        .unwrap();
    assert!(out.success(), "raw_requests.py via {node}:\n{out}");
    let replies = out.json();
    let replies = replies.as_array().expect("a list");
    assert_eq!(replies.len(), requests.len());
    replies
        .iter()
        .map(|r| (r["status"].as_u64().unwrap_or(0), r["body"].clone()))
        .collect()
}

fn get(path: &str) -> Value {
    json!({"method": "GET", "path": path})
}

/// The top-level resources only one version serves, with the nodes that lack them, and
/// whether they have a `status` subresource there.
fn only_in() -> Vec<(Resource, &'static [&'static str], bool)> {
    let fixtures = test_support::bins::fixtures_dir().join("discovery");
    let mut out = Vec::new();
    for (list, dir, lacking) in [
        (ONLY_IN_133, "k8s-1.33", &["cp3"][..]),
        (ONLY_IN_136, "k8s-1.36", &["cp1", "cp2"][..]),
    ] {
        for (gv, name) in list.iter().filter(|(_, r)| !r.contains('/')) {
            let r = resource(&Path::new(&fixtures).join(dir), gv, name)
                .unwrap_or_else(|| panic!("{gv} {name} not in the {dir} fixture"));
            let status = list.contains(&(*gv, &*format!("{name}/status")));
            out.push((r, lacking, status));
        }
    }
    out
}

fn is_unserved_404(status: u64, body: &Value) -> bool {
    status == 404 && body["message"] == "the server could not find the requested resource"
}

#[test]
fn every_resource_only_one_version_serves_works_through_every_node_with_mvp() {
    require_root!();
    test_support::trace::init();
    let lab = LabCluster::start(LabSpec::mixed()).unwrap();
    let resources = only_in();
    assert!(resources.len() >= 15, "{resources:?}");

    // Without mvp: the nodes that lack a resource answer the unserved 404 (the test can fail).
    for node in ["cp1", "cp3"] {
        let requests: Vec<Value> = resources
            .iter()
            .map(|(r, _, _)| get(&r.collection("default")))
            .collect();
        for ((r, lacking, _), (status, body)) in resources.iter().zip(raw(&lab, node, &requests)) {
            if lacking.contains(&node) {
                assert!(
                    is_unserved_404(status, &body),
                    "without mvp {node} should not serve {r:?}: {status} {body}"
                );
            } else {
                assert_eq!(status, 200, "without mvp {node} lists {r:?}: {body}");
            }
        }
    }

    let _mvps = start_mvps(&lab);

    // With mvp: create, get, list, watch, status, delete of each through every node.
    for node in ["cp1", "cp2", "cp3"] {
        let mut requests = Vec::new();
        let mut what = Vec::new();
        for (i, (r, _, status)) in resources.iter().enumerate() {
            let name = format!("rt-{node}-{i}");
            let collection = r.collection("default");
            let item = format!("{collection}/{name}");
            let object = json!({"apiVersion": r.gv, "kind": r.kind, "metadata": {"name": name}});
            requests.push(json!({"method": "POST", "path": collection, "body": object}));
            what.push(format!("create {item}"));
            requests.push(get(&item));
            what.push(format!("get {item}"));
            requests.push(get(&collection));
            what.push(format!("list {collection}"));
            requests.push(get(&format!("{collection}?watch=true&timeoutSeconds=1")));
            what.push(format!("watch {collection}"));
            if *status {
                requests.push(get(&format!("{item}/status")));
                what.push(format!("get {item}/status"));
            }
            requests.push(json!({"method": "DELETE", "path": item}));
            what.push(format!("delete {item}"));
        }
        let replies = raw(&lab, node, &requests);
        let failures: Vec<String> = what
            .iter()
            .zip(&replies)
            .filter(|(_, (status, _))| !(200..300).contains(status))
            .map(|(w, (status, body))| {
                format!(
                    "{w} via {node}: {status} {}",
                    body.to_string().chars().take(200).collect::<String>()
                )
            })
            .collect();
        assert!(
            failures.is_empty(),
            "{} of {} requests failed through {node} with mvp:\n{}",
            failures.len(),
            requests.len(),
            failures.join("\n")
        );
    }

    // The serving peer saw the caller (x509 admin via mvp's front-proxy cert), once; the
    // forwarding node's apiserver never saw it (no second hop, no loop).
    let (index, _) = resources
        .iter()
        .enumerate()
        .find(|(_, (_, lacking, _))| lacking.contains(&"cp1"))
        .expect("a 1.36-only resource");
    let name = format!("rt-cp1-{index}");
    let gets_of = |node: &str| -> Vec<Value> {
        lab.audit_log(node)
            .unwrap()
            .into_iter()
            .filter(|e| {
                e["verb"] == "get"
                    && e["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(&format!("/{name}")))
            })
            .collect()
    };
    eventually("the serving peer's audit event", || {
        let events = gets_of("cp3");
        match events.as_slice() {
            [event] if event["user"] == test_support::pki::ADMIN_USER => Ok(()),
            other => Err(format!("cp3's get events of {name}: {other:?}")),
        }
    });
    assert_eq!(
        gets_of("cp1"),
        Vec::<Value>::new(),
        "cp1's apiserver saw the forwarded get"
    );
    assert_eq!(
        gets_of("cp2"),
        Vec::<Value>::new(),
        "cp2's apiserver saw cp1's get"
    );

    // Metrics: cp1 rerouted to cp3; cp3 served what it received locally.
    let cp3 = lab.node("cp3").unwrap().addr().to_string();
    let m1 = metrics(&lab, "cp1");
    assert!(
        m1.lines().any(
            |l| l.starts_with("mvp_rerouted_requests_total{code=\"201\"")
                && l.contains(&format!("peer=\"{cp3}\""))
        ),
        "cp1 did not count its creates on cp3:\n{m1}"
    );
    let m3 = metrics(&lab, "cp3");
    for (r, lacking, _) in &resources {
        if lacking.contains(&"cp1") {
            let (group, version) = r.gv.split_once('/').unwrap();
            let labels = format!(
                "group=\"{group}\",version=\"{version}\",resource=\"{}\"",
                r.resource
            );
            assert!(
                !m3.lines()
                    .any(|l| l.starts_with("mvp_rerouted_requests_total") && l.contains(&labels)),
                "cp3 forwarded {} again:\n{m3}",
                r.resource
            );
        }
    }
}

/// mvp's 503 carries `Retry-After` and the same delay in `details.retryAfterSeconds`.
fn retry_after(body: &Value) -> bool {
    body["details"]["retryAfterSeconds"]
        .as_u64()
        .is_some_and(|s| s > 0)
}

#[test]
fn dead_peers_are_skipped_nobody_left_is_503_and_a_dead_local_apiserver_is_routed_around() {
    require_root!();
    test_support::trace::init();
    let lab = LabCluster::start(LabSpec::mixed()).unwrap();
    let resources = only_in();
    let (only_133, _, _) = resources
        .iter()
        .find(|(_, lacking, _)| lacking.contains(&"cp3"))
        .expect("a 1.33-only resource")
        .clone();
    let (only_136, _, _) = resources
        .iter()
        .find(|(_, lacking, _)| lacking.contains(&"cp1"))
        .expect("a 1.36-only resource")
        .clone();
    let _mvps = start_mvps(&lab);
    let list_133 = get(&only_133.collection("default"));

    // One of the two 1.33 servers dies (still listed as an endpoint): cp3 uses the other.
    lab.stop_apiserver("cp2").unwrap();
    // cp2's mvp still accepts connections (its apiserver is down behind it): cp3 finds out
    // from its answers and its discovery poll; from then on every request goes to cp1.
    eventually("cp3 to route around cp2", || {
        match raw(&lab, "cp3", std::slice::from_ref(&list_133)).remove(0) {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    });
    let replies = raw(&lab, "cp3", &vec![list_133.clone(); 8]);
    for (status, body) in &replies {
        assert_eq!(*status, 200, "cp3 → {only_133:?} with cp2 down: {body}");
    }

    // Both dead: 503 with Retry-After (a Status mvp wrote), never 404.
    lab.stop_apiserver("cp1").unwrap();
    let replies = raw(&lab, "cp3", std::slice::from_ref(&list_133));
    let (status, body) = &replies[0];
    assert_eq!(*status, 503, "nobody serves {only_133:?}: {body}");
    assert_eq!(body["reason"], "ServiceUnavailable", "{body}");
    assert!(retry_after(body), "{body}");
    // Once both are known down, cp3's mvp answers itself without trying them.
    eventually("cp3's own 503 for nobody reachable", || {
        let (status, body) = raw(&lab, "cp3", std::slice::from_ref(&list_133)).remove(0);
        let message = body["message"].as_str().unwrap_or_default();
        if status == 503
            && retry_after(&body)
            && message.starts_with("no reachable apiserver serves")
        {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    });
    let m3 = metrics(&lab, "cp3");
    assert!(
        m3.contains("mvp_peer_proxy_errors_total{type="),
        "no peer proxy errors counted:\n{m3}"
    );

    // Back up; then the local apiserver of cp3 dies: cp3 still serves what peers serve.
    lab.start_apiserver("cp1").unwrap();
    lab.start_apiserver("cp2").unwrap();
    eventually("cp3 to route to the 1.33 servers again", || {
        match raw(&lab, "cp3", std::slice::from_ref(&list_133)).remove(0) {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    });
    lab.stop_apiserver("cp3").unwrap();
    let replies = raw(
        &lab,
        "cp3",
        &[
            list_133.clone(),
            get("/api/v1/namespaces"),
            get(&only_136.collection("default")),
        ],
    );
    assert_eq!(
        replies[0].0, 200,
        "1.33-only via cp3 with its apiserver down: {}",
        replies[0].1
    );
    assert_eq!(
        replies[1].0, 200,
        "namespaces via cp3 with its apiserver down: {}",
        replies[1].1
    );
    // Only the dead local server serves it: 503 + Retry-After, not 404.
    assert_eq!(
        replies[2].0, 503,
        "1.36-only via cp3 with its apiserver down: {}",
        replies[2].1
    );
    assert!(retry_after(&replies[2].1), "{}", replies[2].1);
    // Health endpoints stay the local server's: the node must drain from load balancers.
    let readyz = raw(&lab, "cp3", &[get("/readyz")]);
    assert_eq!(
        readyz[0].0, 503,
        "/readyz via cp3 with its apiserver down: {}",
        readyz[0].1
    );
}

/// Upstream's group/version exclusion: group/versions that come from CRDs or aggregated
/// APIServices are never routed to peers (every server serves them itself, and a peer's
/// discovery snapshot may be stale for them). The lab has no CRD controller, so a CRD
/// object claiming scheduling.k8s.io/v1alpha2 — a group/version only cp3's snapshot shows —
/// stands in for a CRD group a peer still advertises: before the CRD exists cp1 routes
/// workloads to cp3 (200); once cp1's apiserver lists the CRD, cp1 keeps the request local
/// (its own 404).
#[test]
fn crd_group_versions_are_never_routed_to_peers() {
    require_root!();
    test_support::trace::init();
    let lab = LabCluster::start(LabSpec::mixed()).unwrap();
    let _mvps = start_mvps(&lab);
    let cp1 = lab.node("cp1").unwrap();
    let workloads = "/apis/scheduling.k8s.io/v1alpha2/namespaces/default/workloads";
    let before = lab.admin_get(cp1, workloads).unwrap();
    assert_eq!(
        before.status,
        200,
        "without a CRD, cp1 must route workloads to cp3: {}",
        before.text()
    );
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "workloads.scheduling.k8s.io"},
        "spec": {
            "group": "scheduling.k8s.io",
            "scope": "Namespaced",
            "names": {"plural": "workloads", "singular": "workload", "kind": "Workload"},
            "versions": [{"name": "v1alpha2", "served": true, "storage": true}]
        }
    });
    lab.admin_create_or_replace(
        cp1,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "workloads.scheduling.k8s.io",
        &crd,
    )
    .unwrap();
    eventually("cp1's mvp to keep the CRD group/version local", || {
        let reply = lab.admin_get(cp1, workloads).map_err(|e| e.to_string())?;
        match reply.status {
            404 => Ok(()),
            status => Err(format!("still HTTP {status}: {}", reply.text())),
        }
    });
}
