//! Peer-aggregated discovery and OpenAPI through mvp in the mixed lab (cp1, cp2 at 1.33; cp3
//! at 1.36), mvp on every node: `kubectl api-resources` / `api-versions` through any node list
//! the union of the servers' own views; `profile=nopeer` is the local server's own document;
//! `kubectl explain` of a 1.36-only type works through a 1.33 node; credentials the
//! apiserver refuses are still refused (mvp never answers discovery to such a caller).
//!
//! Needs root and the `mvp` binary with its eBPF object (`cargo build -p mvp-userspace`).
use std::collections::BTreeSet;
use std::path::Path;

use test_support::eventually::eventually;
use test_support::lab::{CmdOutput, LabCluster, LabProcess, LabSpec};
use test_support::require_root;

const ADMIN: &str = "127.0.0.1:9464";
const V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const V2_NOPEER: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer";

fn start_mvps(lab: &LabCluster) -> Vec<LabProcess> {
    test_support::mvp_args::start_on_every_node(lab, ADMIN, "1")
}

/// kubectl through `node` with its own, empty discovery cache (`phase` names it), so no
/// answer from an earlier phase is reused.
fn kubectl(lab: &LabCluster, node: &str, phase: &str, args: &[&str]) -> CmdOutput {
    let cache = lab.dir().join(format!("kube-cache-{phase}-{node}"));
    let mut cmd = lab.client_command("kubectl");
    cmd.env("KUBECACHEDIR", &cache)
        .arg("--kubeconfig")
        .arg(lab.node(node).unwrap().kubeconfig())
        .arg("--cache-dir")
        .arg(&cache)
        .args(args);
    let out = cmd.output().unwrap();
    CmdOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn lines(out: &CmdOutput) -> BTreeSet<String> {
    out.stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One HTTPS request with curl from the client namespace: (status, headers, body).
struct Curl {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

fn curl(lab: &LabCluster, node: &str, path: &str, extra: &[&str], creds: Creds<'_>) -> Curl {
    let n = lab.node(node).unwrap();
    let dir = lab.dir();
    let ca = dir.join("discovery-lab-ca.crt");
    std::fs::write(&ca, lab.pki().ca_pem()).unwrap();
    let headers_file = dir.join(format!("curl-{node}.headers"));
    let body_file = dir.join(format!("curl-{node}.body"));
    // curl writes no file for an empty body (304): never read an earlier answer's.
    let _ = std::fs::remove_file(&body_file);
    let mut cmd = lab.client_command("curl");
    cmd.args(["-sS", "--http2", "--cacert"])
        .arg(&ca)
        .arg("-D")
        .arg(&headers_file)
        .arg("-o")
        .arg(&body_file)
        .args(["-w", "%{http_code}"]);
    match creds {
        Creds::Admin(dir) => {
            cmd.arg("--cert")
                .arg(dir.join("admin.crt"))
                .arg("--key")
                .arg(dir.join("admin.key"));
        }
        Creds::Bearer(token) => {
            cmd.arg("-H").arg(format!("Authorization: Bearer {token}"));
        }
        Creds::Anonymous => {}
    }
    cmd.args(extra).arg(format!("{}{path}", n.url()));
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "curl {path} via {node}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Curl {
        status: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap(),
        headers: std::fs::read_to_string(&headers_file).unwrap(),
        body: std::fs::read(&body_file).unwrap_or_default(),
    }
}

#[derive(Clone, Copy)]
enum Creds<'a> {
    Admin(&'a Path),
    Bearer(&'a str),
    Anonymous,
}

fn header<'a>(c: &'a Curl, name: &str) -> Option<&'a str> {
    c.headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn group_versions(body: &[u8]) -> BTreeSet<String> {
    let list: serde_json::Value = serde_json::from_slice(body).unwrap();
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a discovery list: {list}"))
        .iter()
        .flat_map(|g| {
            let name = g["metadata"]["name"].as_str().unwrap_or("").to_owned();
            g["versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |v| format!("{name}/{}", v["version"].as_str().unwrap()))
        })
        .collect()
}

#[test]
fn discovery_and_explain_through_every_node_show_every_servers_apis() {
    require_root!();
    test_support::trace::init();
    let lab = LabCluster::start(LabSpec::mixed()).unwrap();
    let creds_dir = lab.dir().join("discovery-lab-admin");
    std::fs::create_dir_all(&creds_dir).unwrap();
    lab.pki().admin().write(&creds_dir, "admin").unwrap();
    let admin = Creds::Admin(&creds_dir);
    let nodes = ["cp1", "cp2", "cp3"];

    // Without mvp: each server's own view (the test can fail: they differ).
    let mut resources = BTreeSet::new();
    let mut versions = BTreeSet::new();
    let mut own_apis = Vec::new();
    let mut per_node_resources = Vec::new();
    for node in nodes {
        let r = kubectl(&lab, node, "direct", &["api-resources", "-o", "name"]);
        assert!(r.success(), "{r}");
        let v = kubectl(&lab, node, "direct", &["api-versions"]);
        assert!(v.success(), "{v}");
        per_node_resources.push(lines(&r));
        resources.extend(lines(&r));
        versions.extend(lines(&v));
        let own = curl(
            &lab,
            node,
            "/apis",
            &["-H", &format!("Accept: {V2}")],
            admin,
        );
        assert_eq!(own.status, 200);
        own_apis.push(own.body);
    }
    assert_ne!(
        per_node_resources[0], per_node_resources[2],
        "1.33 and 1.36 differ"
    );
    assert!(
        resources.contains("workloads.scheduling.k8s.io"),
        "{resources:?}"
    );
    let explain_direct = kubectl(&lab, "cp1", "direct", &["explain", "workloads"]);
    assert!(
        !explain_direct.success(),
        "1.33 alone cannot explain workloads: {explain_direct}"
    );
    let doc = "/openapi/v3/apis/scheduling.k8s.io/v1alpha2";
    assert_eq!(
        curl(&lab, "cp1", doc, &[], admin).status,
        404,
        "1.33 has no {doc}"
    );
    let bad_token_direct = curl(&lab, "cp1", "/apis", &[], Creds::Bearer("not-a-token"));
    let anonymous_direct = curl(&lab, "cp1", "/apis", &[], Creds::Anonymous);
    assert_eq!(bad_token_direct.status, 401);
    assert_ne!(anonymous_direct.status, 200);

    let _mvps = start_mvps(&lab);

    // With mvp: the union through every node (the view settles within a sync or two).
    for node in nodes {
        eventually(
            &format!("api-resources through {node} to be the union"),
            || {
                let out = kubectl(
                    &lab,
                    node,
                    &format!("mvp-{}", rand_suffix()),
                    &["api-resources", "-o", "name"],
                );
                if !out.success() {
                    return Err(out.to_string());
                }
                let got = lines(&out);
                if got == resources {
                    Ok(())
                } else {
                    Err(format!(
                        "missing {:?}, extra {:?}",
                        resources.difference(&got).collect::<Vec<_>>(),
                        got.difference(&resources).collect::<Vec<_>>()
                    ))
                }
            },
        );
        let v = kubectl(&lab, node, "mvp-versions", &["api-versions"]);
        assert!(v.success(), "{v}");
        assert_eq!(lines(&v), versions, "api-versions through {node}");
    }

    // Aggregated v2: merged, with the apiserver's headers; 304 on its ETag.
    let merged = curl(
        &lab,
        "cp1",
        "/apis",
        &["-H", &format!("Accept: {V2}")],
        admin,
    );
    assert_eq!(merged.status, 200);
    assert_eq!(header(&merged, "content-type"), Some(V2));
    assert_eq!(header(&merged, "cache-control"), Some("public"));
    assert_eq!(header(&merged, "vary"), Some("Accept"));
    let union: BTreeSet<String> = own_apis.iter().flat_map(|b| group_versions(b)).collect();
    assert_eq!(group_versions(&merged.body), union);
    let etag = header(&merged, "etag").expect("an ETag").to_owned();
    let head = curl(
        &lab,
        "cp1",
        "/apis",
        &["-I", "-H", &format!("Accept: {V2}")],
        admin,
    );
    assert_eq!(head.status, 200);
    // (with -I curl writes the head to the output file: there must be nothing else)
    assert!(!String::from_utf8_lossy(&head.body).contains("\"items\""));
    assert_eq!(header(&head, "etag"), Some(etag.as_str()));
    assert_eq!(
        header(&head, "content-length"),
        Some(merged.body.len().to_string().as_str())
    );
    let again = curl(
        &lab,
        "cp1",
        "/apis",
        &[
            "-H",
            &format!("Accept: {V2}"),
            "-H",
            &format!("If-None-Match: {etag}"),
        ],
        admin,
    );
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    // profile=nopeer: each server's own document, byte for byte.
    for (node, own) in nodes.iter().zip(&own_apis) {
        let local = curl(
            &lab,
            node,
            "/apis",
            &["-H", &format!("Accept: {V2_NOPEER}")],
            admin,
        );
        assert_eq!(local.status, 200);
        assert_eq!(&local.body, own, "nopeer through {node} is its own view");
    }

    // A 1.36-only group/version through a 1.33 node: that server's own bytes.
    let gv = curl(&lab, "cp1", "/apis/scheduling.k8s.io/v1alpha2", &[], admin);
    assert_eq!(gv.status, 200, "{}", String::from_utf8_lossy(&gv.body));
    let list: serde_json::Value = serde_json::from_slice(&gv.body).unwrap();
    assert_eq!(list["groupVersion"], "scheduling.k8s.io/v1alpha2");

    // OpenAPI v3 through a 1.33 node: the merged index lists the 1.36-only document with
    // the hash of the server that answers it, and that URL answers.
    let index = curl(&lab, "cp1", "/openapi/v3", &[], admin);
    assert_eq!(index.status, 200);
    assert_eq!(
        header(&index, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    let index: serde_json::Value = serde_json::from_slice(&index.body).unwrap();
    let url = index["paths"]["apis/scheduling.k8s.io/v1alpha2"]["serverRelativeURL"]
        .as_str()
        .unwrap_or_else(|| panic!("no {doc} in the merged index: {index}"))
        .to_owned();
    let own_index = curl(&lab, "cp3", "/openapi/v3", &[], admin);
    let own_index: serde_json::Value = serde_json::from_slice(&own_index.body).unwrap();
    assert_eq!(
        own_index["paths"]["apis/scheduling.k8s.io/v1alpha2"]["serverRelativeURL"],
        url.as_str()
    );
    let pinned = curl(&lab, "cp1", &url, &[], admin);
    assert_eq!(pinned.status, 200, "{url}");
    let hash = url.split_once("hash=").unwrap().1;
    assert_eq!(
        header(&pinned, "etag"),
        Some(format!("\"{hash}\"").as_str())
    );

    // kubectl explain of a 1.36-only type through a 1.33 node.
    let explain = kubectl(&lab, "cp1", "mvp-explain", &["explain", "workloads"]);
    assert!(explain.success(), "{explain}");
    assert!(explain.stdout.contains("Workload"), "{explain}");

    // Credentials the apiserver refuses are refused as before, never answered by mvp.
    for node in nodes {
        let bad = curl(
            &lab,
            node,
            "/apis",
            &["-H", &format!("Accept: {V2}")],
            Creds::Bearer("not-a-token"),
        );
        assert_eq!(bad.status, 401, "bad token via {node}");
        assert_eq!(bad.body, bad_token_direct.body);
        let anonymous = curl(
            &lab,
            node,
            "/apis",
            &["-H", &format!("Accept: {V2}")],
            Creds::Anonymous,
        );
        assert_eq!(
            anonymous.status, anonymous_direct.status,
            "anonymous via {node}"
        );
        let index = curl(&lab, node, "/openapi/v3", &[], Creds::Bearer("not-a-token"));
        assert_eq!(
            index.status, 401,
            "bad token on the OpenAPI index via {node}"
        );
    }
}

/// A fresh cache name per attempt inside `eventually`.
fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
