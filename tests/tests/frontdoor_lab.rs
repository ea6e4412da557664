//! The L7 front door on a lab node, behind real eBPF steering: `mvp run` with kubeadm's flags
//! pointing at the node's PKI, upstream = the node's lab apiserver over loopback. Clients in
//! the client namespace dial `<node-ip>:6443` and are steered into mvp.
//!
//! Every caller must reach the apiserver as the same user and groups as without mvp.
//! Witnesses: what the apiserver answers (`kubectl auth whoami`, SelfSubjectReview, exec's
//! `lab-identity`) and its audit log (user, groups, code, source address: the client's
//! address directly, 127.0.0.1 through mvp). Each case runs twice: directly (no mvp), then
//! through mvp, and the two observations are compared.
//!
//! Needs root and the `mvp` binary with its eBPF object (`cargo build -p mvp-userspace`).
//! Delays and memory are measured and printed, never asserted.
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::eventually::{eventually, patience};
use test_support::lab::{CLIENT_V4, CmdOutput, LabCluster, LabProcess, LabSpec, NodeSpec};
use test_support::pki::{CertKey, Credentials, Pki};
use test_support::require_root;

const NODE: &str = "cp1";
const ADMIN: &str = "127.0.0.1:9464";
const SSR_PATH: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\n  namespace: default\nspec:\n  containers:\n  - name: c\n    image: registry.k8s.io/pause:3.10\n";

fn lab() -> LabCluster {
    LabCluster::start(LabSpec::new(vec![NodeSpec::v1_33(NODE)])).unwrap()
}

/// mvp with kube-apiserver's flags on the node's kubeadm PKI; waits for /readyz.
fn start_mvp(lab: &LabCluster) -> LabProcess {
    let n = lab.node(NODE).unwrap();
    let p = n.pki();
    let s = |p: PathBuf| p.display().to_string();
    let steer = n.addr().to_string();
    let args = [
        "run".to_string(),
        "--steer".into(),
        steer,
        "--admin-address".into(),
        ADMIN.into(),
        "--drain-timeout".into(),
        "1".into(),
        "--tls-reload-interval".into(),
        "0.5".into(),
        format!("--tls-cert-file={}", s(p.apiserver_crt())),
        format!("--tls-private-key-file={}", s(p.apiserver_key())),
        format!("--client-ca-file={}", s(p.ca_crt())),
        format!(
            "--requestheader-client-ca-file={}",
            s(p.front_proxy_ca_crt())
        ),
        "--requestheader-allowed-names=front-proxy-client".into(),
        "--requestheader-username-headers=X-Remote-User".into(),
        "--requestheader-group-headers=X-Remote-Group".into(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
        format!("--proxy-client-cert-file={}", s(p.front_proxy_client_crt())),
        format!("--proxy-client-key-file={}", s(p.front_proxy_client_key())),
        "--upstream=https://127.0.0.1:6443".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut mvp = lab.start_mvp(NODE, "mvp", &args).unwrap();
    let admin: SocketAddr = ADMIN.parse().unwrap();
    eventually("mvp to be ready on the node", || {
        if let Err(e) = mvp.check_running() {
            panic!("{e}");
        }
        match lab.node_http_get(NODE, admin, "/readyz") {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(format!("/readyz: HTTP {status} {body}")),
            Err(e) => Err(e.to_string()),
        }
    });
    mvp
}

fn metric(lab: &LabCluster, line_prefix: &str) -> u64 {
    let (status, text) = lab
        .node_http_get(NODE, ADMIN.parse().unwrap(), "/metrics")
        .unwrap();
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Audit entries written after the first `from`.
fn audit_since(lab: &LabCluster, from: usize) -> Vec<Value> {
    lab.audit_log(NODE)
        .unwrap()
        .into_iter()
        .skip(from)
        .collect()
}

fn audit_len(lab: &LabCluster) -> usize {
    lab.audit_log(NODE).unwrap().len()
}

/// A kubectl command in the client namespace (SPDY when `spdy`).
fn kubectl(lab: &LabCluster, kubeconfig: &Path, spdy: bool, args: &[&str]) -> CmdOutput {
    let mut cmd = lab.client_command("kubectl");
    cmd.env(
        "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
        if spdy { "false" } else { "true" },
    )
    .arg("--kubeconfig")
    .arg(kubeconfig)
    .args(args);
    output(cmd, None)
}

fn output(mut cmd: std::process::Command, stdin: Option<&[u8]>) -> CmdOutput {
    use std::io::Write;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let out = child.wait_with_output().expect("wait");
    CmdOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Files for curl's --cert/--key.
fn cert_files(lab: &LabCluster, ck: &CertKey, stem: &str) -> (PathBuf, PathBuf) {
    let dir = lab.dir().join("curl-certs");
    std::fs::create_dir_all(&dir).unwrap();
    ck.write(&dir, stem).unwrap()
}

/// curl in the client namespace; the last argument is the path on the node's URL.
/// Returns (HTTP status, response head, body).
fn curl(
    lab: &LabCluster,
    via: &str,
    cert: Option<&(PathBuf, PathBuf)>,
    args: &[&str],
) -> (u16, String, String) {
    let n = lab.node(NODE).unwrap();
    let dir = lab.dir().join("curl-out");
    std::fs::create_dir_all(&dir).unwrap();
    let head = dir.join("head");
    let (path, opts) = args.split_last().expect("a path");
    let mut cmd = lab.client_command("curl");
    cmd.args(["-sS", "--max-time", "20", "-D"])
        .arg(&head)
        .arg("--cacert")
        .arg(lab.pki().root().join("ca.crt"));
    if let Some((crt, key)) = cert {
        cmd.arg("--cert").arg(crt).arg("--key").arg(key);
    }
    cmd.args(opts).arg(format!("{}{path}", n.url()));
    let out = output(cmd, None);
    assert!(out.success(), "curl {args:?} ({via}): {out}");
    let headers = std::fs::read_to_string(&head).unwrap_or_default();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, headers, out.stdout)
}

/// curl arguments for a SelfSubjectReview with `extra` options.
fn ssr_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
    ];
    a.extend_from_slice(extra);
    a.push(SSR_PATH);
    a
}

const SPOOF: [&str; 4] = [
    "-H",
    "X-Remote-User: system:admin",
    "-H",
    "X-Remote-Group: system:masters",
];

/// What one case observed: the answer (normalised) and the audit entries it caused.
#[derive(Debug, Clone)]
struct Seen {
    answer: String,
    /// (verb, user, groups, code) of each audit entry, in order.
    audit: Vec<(String, Value, Value, u64)>,
    sources: Vec<String>,
}

/// A SelfSubjectReview answer: the userInfo when created, else status and body.
fn review_answer(status: u16, body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if status == 201 {
        format!("201 {}", v["status"]["userInfo"])
    } else {
        format!("{status} {body}")
    }
}

struct Creds {
    /// "direct" or "through mvp", for failure messages.
    via: std::cell::Cell<&'static str>,
    alice: PathBuf,
    unknown: PathBuf,
    expired: PathBuf,
    alice_files: (PathBuf, PathBuf),
    fp_files: (PathBuf, PathBuf),
    unknown_files: (PathBuf, PathBuf),
    expired_files: (PathBuf, PathBuf),
    token: String,
}

fn creds(lab: &LabCluster) -> Creds {
    let pki = lab.pki();
    let alice = pki.client_cert("alice", &["team-a"]).unwrap();
    let alice_kc = lab
        .write_kubeconfig(NODE, "alice", "alice", Credentials::Cert(alice.clone()))
        .unwrap();
    let unknown = Pki::unknown_ca_client_cert("kubernetes-admin", &["system:masters"]).unwrap();
    let expired = pki
        .expired_client_cert("kubernetes-admin", &["system:masters"])
        .unwrap();
    Creds {
        via: std::cell::Cell::new("direct"),
        alice: alice_kc,
        unknown: lab
            .write_kubeconfig(NODE, "unknown-ca", "x", Credentials::Cert(unknown.clone()))
            .unwrap(),
        expired: lab
            .write_kubeconfig(NODE, "expired", "x", Credentials::Cert(expired.clone()))
            .unwrap(),
        alice_files: cert_files(lab, &alice, "alice"),
        fp_files: cert_files(lab, pki.front_proxy_client(), "front-proxy-client"),
        unknown_files: cert_files(lab, &unknown, "unknown-ca"),
        expired_files: cert_files(lab, &expired, "expired"),
        token: pki.token().to_string(),
    }
}

const CASES: &[&str] = &[
    "kubectl x509 admin",
    "kubectl bearer token",
    "kubectl x509 alice",
    "curl anonymous",
    "curl front-proxy cert with forwarded headers",
    "spoof: anonymous with X-Remote-User/Group",
    "spoof: bearer with X-Remote-User/Group",
    "spoof: x509 alice with X-Remote-User/Group",
    "client cert from an unknown CA",
    "expired client cert",
    "exec lab-identity over WebSocket",
    "exec lab-identity over SPDY",
    "kubectl with a client cert from an unknown CA",
    "kubectl with an expired client cert",
];

fn run_case(lab: &LabCluster, c: &Creds, case: &str) -> Seen {
    let n = lab.node(NODE).unwrap();
    let before = audit_len(lab);
    let whoami = |kc: &Path| {
        let out = kubectl(lab, kc, false, &["auth", "whoami", "-o", "json"]);
        assert!(out.success(), "{case}: {out}");
        format!("201 {}", out.json()["status"]["userInfo"])
    };
    let auth = format!("Authorization: Bearer {}", c.token);
    let answer = match case {
        "kubectl x509 admin" => whoami(n.kubeconfig()),
        "kubectl bearer token" => whoami(n.token_kubeconfig()),
        "kubectl x509 alice" => whoami(&c.alice),
        "curl anonymous" => {
            let (s, _, b) = curl(lab, c.via.get(), None, &ssr_args(&[]));
            review_answer(s, &b)
        }
        "curl front-proxy cert with forwarded headers" => {
            let (s, _, b) = curl(
                lab,
                c.via.get(),
                Some(&c.fp_files),
                &ssr_args(&[
                    "-H",
                    "X-Remote-User: fp-user",
                    "-H",
                    "X-Remote-Group: fp-group",
                    "-H",
                    "X-Remote-Extra-Scopes: s1",
                ]),
            );
            review_answer(s, &b)
        }
        "spoof: anonymous with X-Remote-User/Group" => {
            let (s, _, b) = curl(lab, c.via.get(), None, &ssr_args(&SPOOF));
            review_answer(s, &b)
        }
        "spoof: bearer with X-Remote-User/Group" => {
            let mut extra = SPOOF.to_vec();
            extra.extend(["-H", auth.as_str()]);
            let (s, _, b) = curl(lab, c.via.get(), None, &ssr_args(&extra));
            review_answer(s, &b)
        }
        "spoof: x509 alice with X-Remote-User/Group" => {
            let (s, _, b) = curl(lab, c.via.get(), Some(&c.alice_files), &ssr_args(&SPOOF));
            review_answer(s, &b)
        }
        "client cert from an unknown CA" => {
            let (s, _, b) = curl(lab, c.via.get(), Some(&c.unknown_files), &ssr_args(&[]));
            format!("{s} {b}")
        }
        "expired client cert" => {
            let (s, _, b) = curl(lab, c.via.get(), Some(&c.expired_files), &ssr_args(&[]));
            format!("{s} {b}")
        }
        "exec lab-identity over WebSocket" | "exec lab-identity over SPDY" => {
            let spdy = case.ends_with("SPDY");
            let out = kubectl(
                lab,
                n.kubeconfig(),
                spdy,
                &["exec", "p1", "--", "lab-identity"],
            );
            assert!(out.success(), "{case}: {out}");
            out.stdout
        }
        "kubectl with a client cert from an unknown CA" | "kubectl with an expired client cert" => {
            let kc = if case.contains("unknown") {
                &c.unknown
            } else {
                &c.expired
            };
            let out = kubectl(lab, kc, false, &["auth", "whoami", "-o", "json"]);
            format!("exit {}: {}", out.code, out.stderr.trim())
        }
        other => panic!("unknown case {other}"),
    };
    let entries = audit_since(lab, before);
    let interesting = |e: &&Value| {
        let p = e["path"].as_str().unwrap_or("");
        p.starts_with(SSR_PATH) || p.contains("/exec")
    };
    let picked: Vec<&Value> = entries.iter().filter(interesting).collect();
    Seen {
        answer,
        audit: picked
            .iter()
            .map(|e| {
                (
                    e["verb"].as_str().unwrap_or("").to_string(),
                    e["user"].clone(),
                    e["groups"].clone(),
                    e["code"].as_u64().unwrap_or(0),
                )
            })
            .collect(),
        sources: picked
            .iter()
            .map(|e| e["sourceAddress"].as_str().unwrap_or("").to_string())
            .collect(),
    }
}

#[test]
fn every_caller_reaches_the_apiserver_through_mvp_as_it_does_without() {
    require_root!();
    test_support::trace::init();
    let lab = lab();
    let c = creds(&lab);
    let pod = lab
        .kubectl_stdin(NODE, &["create", "--validate=false", "-f", "-"], POD)
        .unwrap();
    assert!(pod.success(), "{pod}");

    // Phase 1: no mvp on the node, the apiserver answers directly.
    let direct: Vec<Seen> = CASES.iter().map(|k| run_case(&lab, &c, k)).collect();
    // Phase 2: the same requests, steered into mvp.
    let mvp = start_mvp(&lab);
    c.via.set("through mvp");
    let established = "mvp_frontdoor_connections_total{result=\"established\"} ";
    let conns_before = metric(&lab, established);
    let through: Vec<Seen> = CASES.iter().map(|k| run_case(&lab, &c, k)).collect();
    assert!(
        metric(&lab, established) > conns_before,
        "mvp saw no connections:\n{}",
        mvp.log()
    );

    let client = format!("{CLIENT_V4}:");
    for ((case, d), m) in CASES.iter().zip(&direct).zip(&through) {
        assert_eq!(
            d.answer, m.answer,
            "{case}: different answers (direct, then through mvp)"
        );
        assert!(
            d.sources.iter().all(|s| s.starts_with(&client)),
            "{case}: direct requests come from the client: {d:?}"
        );
        let bad_cert = case.contains("client cert");
        if bad_cert {
            // The apiserver answers 401 itself; through mvp nothing is forwarded.
            if case.starts_with("kubectl") {
                assert!(d.answer.starts_with("exit 1: "), "{case}: {d:?}");
                assert!(d.answer.contains("Unauthorized"), "{case}: {d:?}");
            } else {
                let (code, body) = d.answer.split_once(' ').unwrap();
                let status: Value = serde_json::from_str(body).unwrap();
                assert_eq!(code, "401", "{case}: {d:?}");
                assert_eq!(status["reason"], "Unauthorized", "{case}: {d:?}");
            }
            assert_eq!(d.audit.len(), 1, "{case}: {d:?}");
            assert!(m.audit.is_empty(), "{case}: mvp forwarded it: {m:?}");
            continue;
        }
        assert!(!d.audit.is_empty(), "{case}: no audit entry: {d:?}");
        assert_eq!(
            d.audit, m.audit,
            "{case}: audit differs (direct, then via mvp)"
        );
        assert!(
            m.sources.iter().all(|s| s.starts_with("127.0.0.1:")),
            "{case}: through mvp the apiserver sees mvp's loopback connection: {m:?}"
        );
        // No spoofed identity ever reached the apiserver.
        for (_, user, groups, _) in &m.audit {
            assert_ne!(user, "system:admin", "{case}: {m:?}");
            if case.starts_with("spoof") {
                assert!(
                    !groups
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|g| g == "system:masters")
                        || case.contains("bearer"),
                    "{case}: spoofed group reached the apiserver: {m:?}"
                );
            }
        }
        eprintln!("{case}: {} | audit {:?}", m.answer.trim(), m.audit);
    }
    // What each identity is, spelled out (the comparison above would pass if both sides
    // lost the identity the same way).
    let user_of = |i: usize| through[i].audit[0].1.clone();
    let groups_of = |i: usize| through[i].audit[0].2.clone();
    assert_eq!(user_of(0), "kubernetes-admin");
    assert_eq!(
        groups_of(0),
        json!(["system:masters", "system:authenticated"])
    );
    assert_eq!(user_of(1), "lab-token-user");
    assert_eq!(user_of(2), "alice");
    assert_eq!(groups_of(2), json!(["team-a", "system:authenticated"]));
    assert_eq!(user_of(3), "system:anonymous");
    assert!(through[3].answer.starts_with("403 "), "{:?}", through[3]);
    assert_eq!(user_of(4), "fp-user");
    assert_eq!(groups_of(4), json!(["fp-group", "system:authenticated"]));
    assert!(
        through[4].answer.contains("\"scopes\":[\"s1\"]"),
        "{:?}",
        through[4]
    );
    assert_eq!(user_of(5), "system:anonymous");
    assert_eq!(groups_of(5), json!(["system:unauthenticated"]));
    assert_eq!(user_of(6), "lab-token-user");
    assert_eq!(
        groups_of(6),
        json!(["system:masters", "lab:token-users", "system:authenticated"])
    );
    assert_eq!(user_of(7), "alice");
    assert_eq!(groups_of(7), json!(["team-a", "system:authenticated"]));
    for i in [10, 11] {
        let id: Value = serde_json::from_str(&through[i].answer).unwrap();
        assert_eq!(id["user"], "kubernetes-admin", "{id}");
        assert_eq!(
            id["groups"],
            json!(["system:masters", "system:authenticated"])
        );
        assert_eq!(through[i].audit[0].3, 101, "{:?}", through[i]);
    }

    // exec with stdin through mvp, both transports: echoed byte for byte.
    let n = lab.node(NODE).unwrap();
    for spdy in [false, true] {
        let before = audit_len(&lab);
        let input = b"hello through mvp\nsecond line\n";
        let mut cmd = lab.client_command("kubectl");
        cmd.env(
            "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
            if spdy { "false" } else { "true" },
        )
        .arg("--kubeconfig")
        .arg(n.kubeconfig())
        .args(["exec", "-i", "p1", "--", "cat"]);
        let out = output(cmd, Some(input));
        assert!(out.success(), "spdy={spdy}: {out}");
        assert_eq!(out.stdout.as_bytes(), input, "spdy={spdy}");
        let exec: Vec<Value> = audit_since(&lab, before)
            .into_iter()
            .filter(|e| e["path"].as_str().unwrap_or("").contains("/exec"))
            .collect();
        assert_eq!(exec.len(), 1, "{exec:?}");
        assert_eq!(exec[0]["user"], "kubernetes-admin");
        assert_eq!(exec[0]["code"], 101);
        assert!(
            exec[0]["sourceAddress"]
                .as_str()
                .unwrap()
                .starts_with("127.0.0.1:")
        );
    }
}

/// A raw watch (curl -N) in the client namespace; each line with its arrival time.
fn watch_lines(
    lab: &LabCluster,
    path: &str,
) -> (std::process::Child, mpsc::Receiver<(Instant, String)>) {
    let n = lab.node(NODE).unwrap();
    let admin = cert_files(lab, lab.pki().admin(), "admin");
    let mut cmd = lab.client_command("curl");
    cmd.args(["-sS", "-N", "--cacert"])
        .arg(lab.pki().root().join("ca.crt"))
        .arg("--cert")
        .arg(&admin.0)
        .arg("--key")
        .arg(&admin.1)
        .arg(format!("{}{path}", n.url()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

fn wait_for_event(rx: &mpsc::Receiver<(Instant, String)>, name: &str) -> Instant {
    let deadline = Instant::now() + patience();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, line) = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no watch event for {name}: {e}"));
        let ev: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if ev["type"] == "ADDED" && ev["object"]["metadata"]["name"] == name {
            return at;
        }
    }
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

const EVENTS: usize = 30;

/// A raw watch on configmaps from the client namespace: `EVENTS` creations (names prefixed
/// `prefix`), each delivered; returns the median and max delay from write to event. The
/// watch's audit entry must come from `source` (the client directly, 127.0.0.1 via mvp).
fn measure_watch(lab: &LabCluster, prefix: &str, source: &str) -> (Duration, Duration) {
    let n = lab.node(NODE).unwrap();
    let cms = "/api/v1/namespaces/default/configmaps";
    let list = lab.admin_get(n, cms).unwrap();
    assert_eq!(list.status, 200);
    let rv = list.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let before = audit_len(lab);
    let (mut watch, rx) = watch_lines(lab, &format!("{cms}?watch=1&resourceVersion={rv}"));
    let warmup = format!("{prefix}-warmup");
    let created = lab
        .admin_request(n, "POST", cms, Some(&configmap(&warmup)))
        .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());
    wait_for_event(&rx, &warmup);
    let mut delays = Vec::new();
    for i in 0..EVENTS {
        let name = format!("{prefix}-{i}");
        let t0 = Instant::now();
        let created = lab
            .admin_request(n, "POST", cms, Some(&configmap(&name)))
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.text());
        delays.push(wait_for_event(&rx, &name).saturating_duration_since(t0));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let watches: Vec<Value> = audit_since(lab, before)
        .into_iter()
        .filter(|e| e["verb"] == "watch")
        .collect();
    assert_eq!(watches.len(), 1, "{watches:?}");
    assert!(
        watches[0]["sourceAddress"]
            .as_str()
            .unwrap()
            .starts_with(source),
        "watch not from {source}: {watches:?}"
    );
    delays.sort();
    (delays[EVENTS / 2], delays[EVENTS - 1])
}

/// 200 MiB each way: exec `cat` echoes 200 MiB of stdin back on stdout, counted by `wc -c`
/// in the client namespace. The exec's audit entry must come from `source`. Returns the
/// wall time.
fn big_stream(lab: &LabCluster, source: &str) -> Duration {
    const SIZE: u64 = 200 << 20;
    let n = lab.node(NODE).unwrap();
    let before = audit_len(lab);
    let started = Instant::now();
    let mut cmd = lab.client_command("sh");
    cmd.arg("-c").arg(format!(
        "head -c {SIZE} /dev/zero | kubectl --kubeconfig {} exec -i p1 -- cat | wc -c",
        n.kubeconfig().display()
    ));
    let out = output(cmd, None);
    let elapsed = started.elapsed();
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout.trim(), SIZE.to_string(), "{out}");
    let exec: Vec<Value> = audit_since(lab, before)
        .into_iter()
        .filter(|e| e["path"].as_str().unwrap_or("").contains("/exec"))
        .collect();
    assert_eq!(exec.len(), 1, "{exec:?}");
    assert!(
        exec[0]["sourceAddress"]
            .as_str()
            .unwrap()
            .starts_with(source),
        "the exec did not come from {source}: {exec:?}"
    );
    elapsed
}

#[test]
fn watch_big_streams_outages_and_cert_rotation_through_mvp() {
    require_root!();
    test_support::trace::init();
    let lab = lab();
    let n = lab.node(NODE).unwrap();
    let pod = lab
        .kubectl_stdin(NODE, &["create", "--validate=false", "-f", "-"], POD)
        .unwrap();
    assert!(pod.success(), "{pod}");
    let cms = "/api/v1/namespaces/default/configmaps";

    // Baseline first (no mvp), then the same through mvp: watch delay and a 200 MiB stream.
    let (median, max) = measure_watch(&lab, "direct", &format!("{CLIENT_V4}:"));
    eprintln!(
        "watch direct: {EVENTS} events, write→event delay median {:.1} ms, max {:.1} ms",
        ms(median),
        ms(max)
    );
    let direct_stream = big_stream(&lab, &format!("{CLIENT_V4}:"));
    eprintln!("200 MiB exec stdout (and 200 MiB stdin) direct in {direct_stream:.2?}");

    let mut mvp = start_mvp(&lab);
    let pid = mvp.pid();
    let (median, max) = measure_watch(&lab, "mvp", "127.0.0.1:");
    eprintln!(
        "watch through mvp (debug build): {EVENTS} events, write→event delay median {:.1} ms, max {:.1} ms",
        ms(median),
        ms(max)
    );
    let hwm0 = vm_kib(pid, "VmHWM:");
    let rss0 = vm_kib(pid, "VmRSS:");
    let elapsed = big_stream(&lab, "127.0.0.1:");
    let hwm1 = vm_kib(pid, "VmHWM:");
    let rss1 = vm_kib(pid, "VmRSS:");
    eprintln!(
        "200 MiB exec stdout (and 200 MiB stdin) through mvp (debug build) in {elapsed:.2?} \
         (direct: {direct_stream:.2?}): mvp VmHWM {hwm0} -> {hwm1} KiB (+{} KiB), \
         VmRSS {rss0} -> {rss1} KiB ({:+} KiB; target: growth < 32 MiB)",
        hwm1 - hwm0,
        rss1 as i64 - rss0 as i64
    );

    // The local apiserver stops: mvp answers 503 with Retry-After; it comes back without
    // restarting mvp.
    lab.stop_apiserver(NODE).unwrap();
    let admin = cert_files(&lab, lab.pki().admin(), "admin");
    let (status, head, body) = curl(&lab, "through mvp", Some(&admin), &[cms]);
    assert_eq!(status, 503, "{head}{body}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    let st: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st["kind"], "Status", "{body}");
    assert_eq!(st["reason"], "ServiceUnavailable", "{body}");
    lab.start_apiserver(NODE).unwrap();
    let ok = lab
        .kubectl(NODE, &["get", "configmaps", "-o", "name"])
        .unwrap();
    assert!(ok.success(), "{ok}");
    assert!(ok.stdout.contains("configmap/mvp-0"), "{ok}");
    mvp.check_running().unwrap();
    assert_eq!(mvp.pid(), pid);

    // The serving cert is replaced on disk (kube-apiserver reloads it in place; so do the lab
    // apiserver and mvp): new handshakes through mvp present the new cert.
    let established = "mvp_frontdoor_connections_total{result=\"established\"} ";
    let serial = |der: &[u8]| {
        let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
        c.raw_serial_as_string()
    };
    let old = lab.served_chain(NODE).unwrap();
    let replaced = Instant::now();
    let pair = n.pki().rotate_serving(lab.pki()).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(pair.cert_pem.as_bytes()).unwrap();
    let new_der = pem.contents;
    assert_ne!(serial(&old[0]), serial(&new_der));
    let conns = metric(&lab, established);
    eventually("mvp to present the replaced serving cert", || {
        let chain = lab.served_chain(NODE).map_err(|e| e.to_string())?;
        if chain[0] == new_der {
            Ok(())
        } else {
            Err(format!("still serial {}", serial(&chain[0])))
        }
    });
    eprintln!(
        "serving cert replaced on disk: serial {} -> {} presented through mvp {:.0} ms later (--tls-reload-interval 0.5)",
        serial(&old[0]),
        serial(&new_der),
        ms(replaced.elapsed())
    );
    assert!(
        metric(&lab, established) > conns,
        "the handshakes did not go through mvp"
    );
    mvp.check_running().unwrap();
    let ok = lab
        .kubectl(NODE, &["get", "namespaces", "-o", "name"])
        .unwrap();
    assert!(ok.success(), "{ok}");
}
