//! deploy/daemonset.yaml and deploy/mvp.service say what the operator docs promise: control
//! planes only, host network, only CAP_BPF + CAP_NET_ADMIN, read-only PKI and manifests,
//! namespaced RBAC, surge-first rollout, readiness on mvp's /readyz — and their command
//! lines parse with mvp's own CLI.
use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use mvp::cli::{Cli, Command};
use serde_yaml::Value;

fn deploy(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn documents() -> Vec<Value> {
    let text = deploy("daemonset.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
        .collect()
}

fn by_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = by_kind(docs, kind);
    assert_eq!(found.len(), 1, "exactly one {kind}");
    found[0]
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().expect("string"))
        .collect()
}

/// Parse `mvp <args>` with the real CLI; returns the admin address port.
fn admin_port_of(args: &[&str]) -> u16 {
    let cli = Cli::try_parse_from(std::iter::once("mvp").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"));
    let Command::Run(run) = cli.command else {
        panic!("{args:?} is not `mvp run`");
    };
    assert!(
        run.steer.is_empty(),
        "zero-config: no --steer in deploy files"
    );
    run.admin_address.port()
}

#[test]
fn daemonset_runs_on_control_planes_only_in_the_host_network() {
    let docs = documents();
    let ds = one(&docs, "DaemonSet");
    assert_eq!(ds["apiVersion"], "apps/v1");
    assert_eq!(ds["metadata"]["namespace"], "kube-system");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(
        pod["nodeSelector"]["node-role.kubernetes.io/control-plane"],
        ""
    );
    let tolerates_cp = pod["tolerations"]
        .as_sequence()
        .expect("tolerations")
        .iter()
        .any(|t| {
            t["key"] == "node-role.kubernetes.io/control-plane"
                && t["operator"] == "Exists"
                && t["effect"] == "NoSchedule"
        });
    assert!(tolerates_cp);
    assert!(pod["hostPID"].is_null() || pod["hostPID"] == false);
    // The selector picks the template.
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in ds["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("matchLabels")
    {
        assert_eq!(&labels[k], v);
    }
}

#[test]
fn daemonset_rolls_surge_first() {
    let docs = documents();
    let u = &one(&docs, "DaemonSet")["spec"]["updateStrategy"];
    assert_eq!(u["type"], "RollingUpdate");
    assert_eq!(u["rollingUpdate"]["maxSurge"], 1);
    assert_eq!(u["rollingUpdate"]["maxUnavailable"], 0);
}

#[test]
fn container_has_only_the_capabilities_steering_needs() {
    let docs = documents();
    let containers = one(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    assert_eq!(containers.len(), 1);
    let sc = &containers[0]["securityContext"];
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(strs(&sc["capabilities"]["add"]), ["BPF", "NET_ADMIN"]);
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
}

#[test]
fn pki_and_manifests_are_mounted_read_only_from_the_host() {
    let docs = documents();
    let pod = &one(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let volumes: BTreeMap<&str, &str> = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().expect("name"),
                v["hostPath"]["path"]
                    .as_str()
                    .expect("only hostPath volumes"),
            )
        })
        .collect();
    let mounts = pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .expect("mounts");
    let mut mounted: Vec<(&str, &str)> = mounts
        .iter()
        .map(|m| {
            assert_eq!(m["readOnly"], true, "every mount read-only: {m:?}");
            let host = volumes[m["name"].as_str().expect("name")];
            (host, m["mountPath"].as_str().expect("mountPath"))
        })
        .collect();
    mounted.sort_unstable();
    assert_eq!(
        mounted,
        [
            ("/etc/kubernetes/manifests", "/etc/kubernetes/manifests"),
            ("/etc/kubernetes/pki", "/etc/kubernetes/pki"),
        ]
    );
}

#[test]
fn readiness_is_mvps_readyz_on_its_admin_address() {
    let docs = documents();
    let c = &one(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    let args = strs(&c["args"]);
    let admin = admin_port_of(&args);
    let probe = &c["readinessProbe"]["httpGet"];
    assert_eq!(probe["path"], "/readyz");
    assert_eq!(probe["port"], u64::from(admin));
    assert_eq!(probe["host"], "127.0.0.1");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(args.contains(&"--log-format=json"));
}

#[test]
fn rbac_is_read_only_endpointslices_in_default() {
    let docs = documents();
    // The only cluster-wide grant: listing CRDs and APIServices (their group/versions are
    // never routed to peers), for mvp's front-proxy user.
    let cluster_role = one(&docs, "ClusterRole");
    let cluster_rules = cluster_role["rules"].as_sequence().expect("rules");
    assert_eq!(cluster_rules.len(), 2);
    for rule in cluster_rules {
        assert_eq!(strs(&rule["verbs"]), ["list"], "read-only: {rule:?}");
    }
    assert_eq!(
        strs(&cluster_rules[0]["resources"]),
        ["customresourcedefinitions"]
    );
    assert_eq!(strs(&cluster_rules[1]["resources"]), ["apiservices"]);
    let cluster_binding = one(&docs, "ClusterRoleBinding");
    assert_eq!(
        cluster_binding["roleRef"]["name"],
        cluster_role["metadata"]["name"]
    );
    assert_eq!(cluster_binding["subjects"][0]["kind"], "User");
    assert_eq!(
        cluster_binding["subjects"][0]["name"],
        mvp::brain::fetch::MVP_USER
    );
    let role = one(&docs, "Role");
    assert_eq!(role["metadata"]["namespace"], "default");
    let rules = role["rules"].as_sequence().expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(strs(&rules[0]["apiGroups"]), ["discovery.k8s.io"]);
    assert_eq!(strs(&rules[0]["resources"]), ["endpointslices"]);
    assert_eq!(strs(&rules[0]["verbs"]), ["get", "list", "watch"]);

    let sa = one(&docs, "ServiceAccount");
    let binding = one(&docs, "RoleBinding");
    assert_eq!(binding["metadata"]["namespace"], "default");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let subject = &binding["subjects"][0];
    assert_eq!(subject["kind"], "ServiceAccount");
    assert_eq!(subject["name"], sa["metadata"]["name"]);
    assert_eq!(subject["namespace"], sa["metadata"]["namespace"]);
    // The user mvp reads as (front-proxy identity), bound too.
    let user = &binding["subjects"][1];
    assert_eq!(user["kind"], "User");
    assert_eq!(user["name"], mvp::brain::fetch::MVP_USER);
    let ds = one(&docs, "DaemonSet");
    assert_eq!(
        ds["spec"]["template"]["spec"]["serviceAccountName"],
        sa["metadata"]["name"]
    );
    assert_eq!(ds["metadata"]["namespace"], sa["metadata"]["namespace"]);
}

/// `[Section] key=value` lines; repeated keys accumulate.
fn unit() -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in deploy("mvp.service").lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
            continue;
        }
        let (k, v) = line.split_once('=').expect("key=value");
        out.entry((section.clone(), k.to_owned()))
            .or_default()
            .push(v.to_owned());
    }
    out
}

fn get<'a>(u: &'a BTreeMap<(String, String), Vec<String>>, s: &str, k: &str) -> &'a str {
    let v = u
        .get(&(s.to_owned(), k.to_owned()))
        .unwrap_or_else(|| panic!("[{s}] {k} missing"));
    assert_eq!(v.len(), 1, "[{s}] {k} set once");
    &v[0]
}

#[test]
fn systemd_unit_is_restartable_confined_and_zero_config() {
    let u = unit();
    assert!(get(&u, "Unit", "After").contains("network-online.target"));
    assert!(get(&u, "Unit", "Wants").contains("network-online.target"));
    assert_eq!(get(&u, "Service", "Restart"), "always");
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let mut caps: Vec<&str> = get(&u, "Service", key).split_whitespace().collect();
        caps.sort_unstable();
        assert_eq!(caps, ["CAP_BPF", "CAP_NET_ADMIN"], "{key}");
    }
    assert_eq!(get(&u, "Service", "NoNewPrivileges"), "yes");
    assert_eq!(get(&u, "Service", "ProtectSystem"), "strict");
    let ro: Vec<&str> = get(&u, "Service", "ReadOnlyPaths")
        .split_whitespace()
        .collect();
    assert!(ro.contains(&"/etc/kubernetes/pki"), "{ro:?}");
    assert!(ro.contains(&"/etc/kubernetes/manifests"), "{ro:?}");
    assert!(
        !u.contains_key(&("Service".to_owned(), "ReadWritePaths".to_owned())),
        "mvp writes nothing"
    );
    assert_eq!(get(&u, "Install", "WantedBy"), "multi-user.target");

    let exec: Vec<&str> = get(&u, "Service", "ExecStart").split_whitespace().collect();
    assert!(exec[0].ends_with("/mvp"));
    let admin = admin_port_of(&exec[1..]);
    // Same admin port as the DaemonSet, so docs and probes agree.
    let docs = documents();
    let c = &one(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(admin, admin_port_of(&strs(&c["args"])));
}
