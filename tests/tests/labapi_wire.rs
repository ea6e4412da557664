//! The lab apiserver against the ground truth: recorded exchanges with a real
//! kube-apiserver v1.36.2 (`shared/fixtures/real-apiserver/v1.36.2`) are replayed with curl
//! (the client that recorded them) against the real `mvp-lab-apiserver` binary, started
//! with `--discovery-dir k8s-1.36`, a generated PKI and a real etcd; kubectl is then run
//! against it.
//!
//! The recorded server ran with the default API set, so the lab is started with
//! `--remove-group-version` for every alpha/beta group/version the fixture has and the
//! recording does not; after that the discovery documents must match byte for byte
//! (including the aggregated ETags). The `v1.36.2-emulating-1.35` recordings are replayed
//! the same way against `--binary-version 1.36.2 --emulated-version 1.35` plus
//! `--remove-resource` for what that server lacked (MutatingAdmissionPolicy[Binding]).
//!
//! Replayed and compared: every discovery (legacy, per group, per group/version,
//! aggregated v2 with `profile=nopeer` and client-go's Accept list, v2beta1-only 406, 304 on
//! If-None-Match), health, version, OpenAPI, `err-unknown-*`, anonymous/401/403, 406,
//! front-proxy and SelfSubjectReview recording, plus the store-backed pretty-printed 404s
//! and the front-proxy list. CRUD, lists, tables, watches, protobuf and the 410s belong to
//! the storage layer and are compared in `labapi_store.rs`.
//!
//! Accepted differences (checked by shape or not at all, each for a reason):
//! - `/version`: gitCommit, buildDate and goVersion are the lab's; every version field
//!   (major, minor, emulation*, minCompatibility*, gitVersion) matches.
//! - `/readyz?verbose`: the lab lists its own checks (ping, log, etcd, shutdown), not
//!   kube-apiserver's post-start hooks; format, first and last lines match.
//! - OpenAPI: documents are generated (a loose schema per kind with
//!   `x-kubernetes-group-version-kind`, list and PATCH paths only), so bodies, ETags and
//!   hashes differ; the index lacks `.well-known/openid-configuration` and `openid/v1/jwks`
//!   (no service-account issuer). Headers, caching, 304 and `?hash=` pinning are as recorded.
//! - SelfSubjectReview: `creationTimestamp` and the x509 credential-id hash differ (other
//!   certificates); everything else matches.
//! - `x-kubernetes-pf-*` uids are fixed per lab process (present exactly where recorded);
//!   `audit-id` is random as recorded; `content-length` presence is not compared (Go sets it
//!   by body size, hyper whenever the body length is known).
//! - `frontproxy-list-configmaps-default`: status, headers, kind and items are compared,
//!   plus the identity that reached the server (audit log: bob, system:masters); the list's
//!   resourceVersion differs.
//! - `alice` has no RBAC in the recording; the lab reproduces her 403s with
//!   `--unprivileged-user alice` (authorization is otherwise allow-all for authenticated
//!   users, and anonymous users get what `system:public-info-viewer` grants: /version and
//!   health, as recorded).
//! - Legacy discovery in `application/yaml` or protobuf is answered 406 (kube-apiserver
//!   serves them); no recording asks for them and clients use JSON.
use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use serde_json::Value;
use test_support::bins;
use test_support::etcd::Etcd;
use test_support::eventually::{eventually, patience};
use test_support::labapi::testpki::Ca;

const TOKEN: &str = "lab-token-admin-0123456789";

/// The PKI: server CA + serving cert, client CA (admin, alice), front-proxy CA (allowed and
/// not-allowed CNs), and a stranger CA nobody trusts.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let server_ca = Ca::new("lab-server-ca").unwrap();
        server_ca.write_cert(d, "server-ca").unwrap();
        server_ca
            .server(
                "lab-apiserver",
                &["127.0.0.1".parse().unwrap()],
                &["localhost"],
            )
            .unwrap()
            .write(d, "server")
            .unwrap();
        let client_ca = Ca::new("lab-client-ca").unwrap();
        client_ca.write_cert(d, "client-ca").unwrap();
        client_ca
            .client("realapi-admin", &["system:masters"])
            .unwrap()
            .write(d, "admin")
            .unwrap();
        client_ca
            .client("alice", &["dev-team"])
            .unwrap()
            .write(d, "alice")
            .unwrap();
        let fp_ca = Ca::new("lab-front-proxy-ca").unwrap();
        fp_ca.write_cert(d, "front-proxy-ca").unwrap();
        fp_ca
            .client("front-proxy-client", &[])
            .unwrap()
            .write(d, "fp")
            .unwrap();
        fp_ca
            .client("not-the-front-proxy", &[])
            .unwrap()
            .write(d, "badfp")
            .unwrap();
        Ca::new("stranger-ca")
            .unwrap()
            .client("mallory", &["system:masters"])
            .unwrap()
            .write(d, "stranger")
            .unwrap();
        std::fs::write(
            d.join("tokens.csv"),
            format!("{TOKEN},token-admin,uid-1,\"system:masters\"\n"),
        )
        .unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A running `mvp-lab-apiserver` process (killed on drop).
struct Lab {
    child: Child,
    /// The PKI's directory (the `Pki` outlives the `Lab` in every test).
    pki_dir: PathBuf,
    port: u16,
    audit: PathBuf,
    work: tempfile::TempDir,
    etcd: Option<Etcd>,
}

impl Lab {
    fn pki_path(&self, name: &str) -> PathBuf {
        self.pki_dir.join(name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn discovery_dir(release: &str) -> PathBuf {
    bins::fixtures_dir().join("discovery").join(release)
}

fn recorded_dir() -> PathBuf {
    recorded_folder("v1.36.2")
}

/// `real-apiserver/<folder>`: `v1.36.2` or `v1.36.2-emulating-1.35`.
fn recorded_folder(folder: &str) -> PathBuf {
    bins::fixtures_dir().join("real-apiserver").join(folder)
}

fn start_lab(pki: &Pki, release: &str, extra: &[String]) -> Lab {
    let etcd = Etcd::start().expect("etcd starts");
    let work = tempfile::tempdir().expect("tempdir");
    let audit = work.path().join("audit.jsonl");
    let mut child = Command::new(bins::lab_apiserver())
        .args(["--bind-address", "127.0.0.1", "--secure-port", "0"])
        .arg("--tls-cert-file")
        .arg(pki.path("server.crt"))
        .arg("--tls-private-key-file")
        .arg(pki.path("server.key"))
        .arg("--client-ca-file")
        .arg(pki.path("client-ca.crt"))
        .arg("--requestheader-client-ca-file")
        .arg(pki.path("front-proxy-ca.crt"))
        // Tests that pass their own allowed names replace this default.
        .args(
            if extra
                .iter()
                .any(|a| a.starts_with("--requestheader-allowed-names"))
            {
                vec![]
            } else {
                vec!["--requestheader-allowed-names", "front-proxy-client"]
            },
        )
        .args(["--requestheader-username-headers", "X-Remote-User"])
        .args(["--requestheader-group-headers", "X-Remote-Group"])
        .args(["--requestheader-uid-headers", "X-Remote-Uid"])
        .args(["--requestheader-extra-headers-prefix", "X-Remote-Extra-"])
        .arg("--token-auth-file")
        .arg(pki.path("tokens.csv"))
        .args(["--etcd-servers", &etcd.endpoint()])
        .arg("--audit-log-path")
        .arg(&audit)
        .arg("--discovery-dir")
        .arg(discovery_dir(release))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mvp-lab-apiserver starts");
    let stderr = child.stderr.take().expect("piped stderr");
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
    let addr = rx
        .recv_timeout(patience())
        .expect("mvp-lab-apiserver reports its address");
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    Lab {
        child,
        pki_dir: pki.dir.path().to_path_buf(),
        port,
        audit,
        work,
        etcd: Some(etcd),
    }
}

/// An HTTP exchange as curl saw it.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_response_headers(text: &str) -> (u16, Vec<(String, String)>) {
    // curl -D writes every response (e.g. a 100 Continue); keep the last block.
    let block = text
        .split("\r\n\r\n")
        .filter(|b| b.starts_with("HTTP/"))
        .last()
        .unwrap_or(text);
    let mut lines = block.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

static CALLS: AtomicUsize = AtomicUsize::new(0);

/// Runs curl with an identity: admin, alice, fp, badfp, stranger (client certificates),
/// token (bearer), anon (nothing).
fn curl(
    lab: &Lab,
    identity: &str,
    http2: bool,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> Result<Reply, String> {
    let n = CALLS.fetch_add(1, Ordering::SeqCst);
    let hdr = lab.work.path().join(format!("h{n}"));
    let out = lab.work.path().join(format!("b{n}"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method])
        .arg(if http2 { "--http2" } else { "--http1.1" })
        .arg("--cacert")
        .arg(lab.pki_path("server-ca.crt"))
        .arg("-D")
        .arg(&hdr)
        .arg("-o")
        .arg(&out);
    match identity {
        "admin" | "alice" | "fp" | "badfp" | "stranger" => {
            cmd.arg("--cert")
                .arg(lab.pki_path(&format!("{identity}.crt")))
                .arg("--key")
                .arg(lab.pki_path(&format!("{identity}.key")));
        }
        "token" | "anon" => {}
        other => return Err(format!("unknown identity {other}")),
    }
    for name in ["accept", "user-agent"] {
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
            // Recorded without it: stop curl adding its own.
            cmd.arg("-H").arg(format!("{name}:"));
        }
    }
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    if let Some(b) = body {
        let f = lab.work.path().join(format!("req{n}"));
        std::fs::write(&f, b).map_err(|e| e.to_string())?;
        cmd.arg("--data-binary").arg(format!("@{}", f.display()));
    }
    cmd.arg(format!("https://127.0.0.1:{}{target}", lab.port));
    let output = cmd.output().map_err(|e| format!("running curl: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "curl {target} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let (status, headers) =
        parse_response_headers(&std::fs::read_to_string(&hdr).map_err(|e| e.to_string())?);
    let body = std::fs::read(&out).unwrap_or_default();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// One recorded exchange.
#[derive(Debug)]
struct Recorded {
    name: String,
    method: String,
    target: String,
    http2: bool,
    identity: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    response: Reply,
}

fn load_recorded(folder: &str) -> Vec<Recorded> {
    let dir = recorded_folder(folder);
    let index = std::fs::read_to_string(dir.join("index.tsv")).expect("index.tsv");
    let mut out = Vec::new();
    for line in index.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let (name, method, target, http, identity, body_file) =
            (f[0], f[1], f[2], f[3], f[4], f[8]);
        let req = std::fs::read(dir.join(format!("{name}.request.txt"))).expect("request.txt");
        let req_text = String::from_utf8_lossy(&req).into_owned();
        let mut headers = Vec::new();
        let mut lines = req_text.lines();
        for l in lines.by_ref() {
            if l.starts_with(&format!("{method} /")) {
                break;
            }
        }
        for l in lines.by_ref() {
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(": ").or_else(|| l.split_once(':')) {
                let k = k.to_string();
                if !k.eq_ignore_ascii_case("host") && !k.eq_ignore_ascii_case("content-length") {
                    headers.push((k, v.to_string()));
                }
            }
        }
        let body = req_text.find("--- request body (").map(|at| {
            let rest = &req_text[at..];
            let n: usize = rest["--- request body (".len()..]
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let start = at + rest.find('\n').unwrap() + 1;
            req_text.as_bytes()[start..start + n].to_vec()
        });
        let resp_text =
            std::fs::read_to_string(dir.join(format!("{name}.response-headers.txt"))).unwrap();
        let (status, resp_headers) = parse_response_headers(&resp_text);
        let resp_body = if body_file.is_empty() {
            vec![]
        } else {
            std::fs::read(dir.join(body_file)).unwrap_or_default()
        };
        out.push(Recorded {
            name: name.to_string(),
            method: method.to_string(),
            target: target.to_string(),
            http2: http == "2",
            identity: identity.to_string(),
            headers,
            body,
            response: Reply {
                status,
                headers: resp_headers,
                body: resp_body,
            },
        });
    }
    out
}

/// What the recorded server did not serve of the fixture: whole group/versions
/// (alpha/beta, off by default) and, within served group/versions, single resources (the
/// emulated 1.35 server lacks MutatingAdmissionPolicy).
fn not_recorded(folder: &str) -> (Vec<String>, Vec<String>) {
    let read =
        |path: PathBuf| -> Value { serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap() };
    let fixture = read(discovery_dir("k8s-1.36").join("aggregated_v2.json"));
    let recorded = read(recorded_folder(folder).join("discovery-apis-aggregated-v2.json"));
    let gvrs = |doc: &Value| -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for g in doc["items"].as_array().unwrap() {
            let name = g["metadata"]["name"].as_str().unwrap();
            for v in g["versions"].as_array().unwrap() {
                let gv = format!("{name}/{}", v["version"].as_str().unwrap());
                out.insert((gv.clone(), String::new()));
                for r in v["resources"].as_array().unwrap() {
                    out.insert((gv.clone(), r["resource"].as_str().unwrap().to_string()));
                }
            }
        }
        out
    };
    let (fixture, recorded) = (gvrs(&fixture), gvrs(&recorded));
    let served_gvs: BTreeSet<&String> = recorded.iter().map(|(gv, _)| gv).collect();
    let mut versions = Vec::new();
    let mut resources = Vec::new();
    for (gv, r) in fixture.difference(&recorded) {
        match (served_gvs.contains(gv), r.is_empty()) {
            (false, true) => versions.push(gv.clone()),
            (false, false) => {}
            (true, _) => resources.push(format!("{gv}/{r}")),
        }
    }
    (versions, resources)
}

fn replay_args() -> Vec<String> {
    replay_args_for("v1.36.2")
}

/// Flags that make the lab the recorded server: its API set, its release, and alice
/// without RBAC.
fn replay_args_for(folder: &str) -> Vec<String> {
    let mut args: Vec<String> = match folder {
        "v1.36.2-emulating-1.35" => ["--binary-version", "1.36.2", "--emulated-version", "1.35"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        _ => vec!["--emulated-version".into(), "1.36.2".into()],
    };
    args.extend(["--unprivileged-user".to_string(), "alice".to_string()]);
    let (versions, resources) = not_recorded(folder);
    for gv in versions {
        args.push("--remove-group-version".into());
        args.push(gv);
    }
    for r in resources {
        args.push("--remove-resource".into());
        args.push(r);
    }
    args
}

/// How a body is compared.
enum Compare {
    Exact,
    Version,
    ReadyzVerbose,
    OpenApiIndex,
    OpenApiDoc,
    SelfSubjectReview,
    Empty,
    /// Served by the storage layer: only the identity that reached the server is checked.
    AuditIdentity(&'static str, &'static [&'static str]),
}

fn compare_mode(name: &str) -> Option<Compare> {
    let exact_prefixes = [
        "discovery-",
        "err-unknown-",
        "err-anonymous-",
        "healthz",
        "livez",
    ];
    Some(match name {
        n if n.ends_with("-if-none-match") => Compare::Empty,
        "version" | "version-anonymous" => Compare::Version,
        "readyz" => Compare::Exact,
        "readyz-verbose" => Compare::ReadyzVerbose,
        "openapi-v3-index" => Compare::OpenApiIndex,
        n if n.starts_with("openapi-v3-") => Compare::OpenApiDoc,
        n if n.contains("selfsubjectreview") && !n.ends_with("-anonymous") => {
            Compare::SelfSubjectReview
        }
        "selfsubjectreview-anonymous" => Compare::Exact,
        "frontproxy-list-configmaps-default" => {
            Compare::AuditIdentity("bob", &["system:masters", "system:authenticated"])
        }
        n if n.starts_with("frontproxy-") => Compare::Exact,
        "err-invalid-bearer-token-401"
        | "err-alice-list-secrets-403"
        | "err-unsupported-accept-406"
        | "pretty-print-curl-user-agent-discovery-api"
        | "pretty-print-curl-user-agent-get-missing-pod"
        | "pretty-print-query-param-get-missing-pod" => Compare::Exact,
        n if exact_prefixes.iter().any(|p| n.starts_with(p)) => Compare::Exact,
        _ => return None,
    })
}

fn json(bytes: &[u8], what: &str) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("{what}: not JSON ({e})"))
}

fn check_body(
    rec: &Recorded,
    got: &Reply,
    mode: &Compare,
    lab: &Lab,
    ours_index: &Value,
) -> Result<(), String> {
    let port_fix = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .replace("127.0.0.1:16443", &format!("127.0.0.1:{}", lab.port))
            .into_bytes()
    };
    match mode {
        Compare::Exact => {
            let want = port_fix(&rec.response.body);
            if got.body != want {
                return Err(format!(
                    "body differs:\n  want {}\n  got  {}",
                    String::from_utf8_lossy(&want[..want.len().min(600)]),
                    String::from_utf8_lossy(&got.body[..got.body.len().min(600)])
                ));
            }
        }
        Compare::Empty => {
            if !got.body.is_empty() {
                return Err("304 with a body".into());
            }
        }
        Compare::Version => {
            let (w, g) = (
                json(&rec.response.body, "recorded")?,
                json(&got.body, "ours")?,
            );
            let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            if keys(&w) != keys(&g) {
                return Err(format!("version keys {:?} != {:?}", keys(&g), keys(&w)));
            }
            for k in [
                "major",
                "minor",
                "emulationMajor",
                "emulationMinor",
                "minCompatibilityMajor",
                "minCompatibilityMinor",
                "gitVersion",
                "gitTreeState",
                "compiler",
                "platform",
            ] {
                if w[k] != g[k] {
                    return Err(format!("version {k}: {} != {}", g[k], w[k]));
                }
            }
            // Always indented, no trailing newline.
            if !got.body.starts_with(b"{\n  \"major\"") || got.body.ends_with(b"\n") {
                return Err("version is not indented like kube-apiserver's".into());
            }
        }
        Compare::ReadyzVerbose => {
            let body = String::from_utf8_lossy(&got.body);
            if !body.starts_with("[+]ping ok\n") || !body.ends_with("\nreadyz check passed\n") {
                return Err(format!("readyz?verbose body: {body:?}"));
            }
        }
        Compare::OpenApiIndex => {
            let w = json(&rec.response.body, "recorded")?;
            let g = json(&got.body, "ours")?;
            let keys = |v: &Value| -> BTreeSet<String> {
                v["paths"].as_object().unwrap().keys().cloned().collect()
            };
            let mut want = keys(&w);
            want.remove(".well-known/openid-configuration");
            want.remove("openid/v1/jwks");
            if keys(&g) != want {
                return Err(format!("openapi index paths {:?} != {want:?}", keys(&g)));
            }
            for (p, v) in g["paths"].as_object().unwrap() {
                let url = v["serverRelativeURL"].as_str().unwrap_or_default();
                let prefix = format!("/openapi/v3/{p}?hash=");
                let hash = url.strip_prefix(&prefix).unwrap_or_default();
                if hash.len() != 128 || hash.chars().any(|c| c.is_ascii_lowercase()) {
                    return Err(format!("openapi index entry {p}: {url}"));
                }
            }
        }
        Compare::OpenApiDoc => {
            let w = json(&rec.response.body, "recorded")?;
            let g = json(&got.body, "ours")?;
            if w["openapi"] != g["openapi"] || w["info"] != g["info"] {
                return Err(format!(
                    "openapi header {} {} != {} {}",
                    g["openapi"], g["info"], w["openapi"], w["info"]
                ));
            }
            // Every resource kind of the group/version has a schema with its GVK in both.
            let gvks = |v: &Value| -> BTreeSet<String> {
                v["components"]["schemas"]
                    .as_object()
                    .map(|m| {
                        m.values()
                            .flat_map(|s| {
                                s["x-kubernetes-group-version-kind"]
                                    .as_array()
                                    .cloned()
                                    .unwrap_or_default()
                            })
                            .map(|k| {
                                format!(
                                    "{}/{}/{}",
                                    k["group"].as_str().unwrap_or(""),
                                    k["version"].as_str().unwrap_or(""),
                                    k["kind"].as_str().unwrap_or("")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let ours = gvks(&g);
            let theirs = gvks(&w);
            let missing: Vec<_> = ours.difference(&theirs).collect();
            if !missing.is_empty() {
                return Err(format!("kinds not in the recorded document: {missing:?}"));
            }
            let etag = got.header("etag").unwrap_or_default();
            let url_hash = ours_index["paths"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|v| v["serverRelativeURL"].as_str())
                .any(|u| etag.trim_matches('"') == u.rsplit("hash=").next().unwrap_or(""));
            if !url_hash {
                return Err(format!("ETag {etag} is not an index hash"));
            }
        }
        Compare::SelfSubjectReview => {
            let mut w = json(&rec.response.body, "recorded")?;
            let mut g = json(&got.body, "ours")?;
            for v in [&mut w, &mut g] {
                v["metadata"]["creationTimestamp"] = Value::Null;
                if let Some(ids) = v["status"]["userInfo"]["extra"]
                    .get_mut("authentication.kubernetes.io/credential-id")
                {
                    let id = ids[0].as_str().unwrap_or_default();
                    if !id.starts_with("X509SHA256=") || id.len() != "X509SHA256=".len() + 64 {
                        return Err(format!("credential-id {id}"));
                    }
                    ids[0] = Value::String("X509SHA256=...".into());
                }
            }
            if w != g {
                return Err(format!("SelfSubjectReview {g} != {w}"));
            }
        }
        Compare::AuditIdentity(user, groups) => {
            let audit = std::fs::read_to_string(&lab.audit).map_err(|e| e.to_string())?;
            let seen = audit
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|l| {
                    l["path"] == rec.target
                        && l["user"] == *user
                        && l["groups"] == serde_json::json!(groups)
                });
            if !seen {
                return Err(format!(
                    "audit log has no {} by {user} {groups:?}",
                    rec.target
                ));
            }
        }
    }
    Ok(())
}

fn check_headers(rec: &Recorded, got: &Reply) -> Result<(), String> {
    if got.status != rec.response.status {
        return Err(format!("status {} != {}", got.status, rec.response.status));
    }
    for h in [
        "content-type",
        "cache-control",
        "vary",
        "x-content-type-options",
    ] {
        if got.header(h) != rec.response.header(h) {
            return Err(format!(
                "{h}: {:?} != {:?}",
                got.header(h),
                rec.response.header(h)
            ));
        }
    }
    for h in [
        "etag",
        "last-modified",
        "accept-ranges",
        "expires",
        "audit-id",
        "x-kubernetes-pf-flowschema-uid",
        "x-kubernetes-pf-prioritylevel-uid",
    ] {
        if got.header(h).is_some() != rec.response.header(h).is_some() {
            return Err(format!(
                "header {h} presence: {:?} vs recorded {:?}",
                got.header(h),
                rec.response.header(h)
            ));
        }
    }
    // Discovery documents come from the same fixtures, so their ETags must be equal too.
    if rec.name.starts_with("discovery-") && got.header("etag") != rec.response.header("etag") {
        return Err(format!(
            "etag {:?} != {:?}",
            got.header("etag"),
            rec.response.header("etag")
        ));
    }
    Ok(())
}

#[test]
fn replays_recorded_kube_apiserver_exchanges() {
    replay("v1.36.2");
}

/// The same binary run with `--emulated-version=kube=1.35`: the lab started with
/// `--binary-version 1.36.2 --emulated-version 1.35` and without the resources the recording
/// lacks must match it the same way (including /version's emulation fields and the /apis
/// ETag).
#[test]
fn replays_recorded_exchanges_of_a_server_emulating_1_35() {
    replay("v1.36.2-emulating-1.35");
}

fn replay(folder: &str) {
    test_support::trace::init();
    let pki = Pki::new();
    let lab = start_lab(&pki, "k8s-1.36", &replay_args_for(folder));
    let index_reply = curl(&lab, "admin", true, "GET", "/openapi/v3", &[], None).unwrap();
    let ours_index: Value = serde_json::from_slice(&index_reply.body).unwrap();
    let our_hash = |p: &str| -> String {
        ours_index["paths"][p]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .rsplit("hash=")
            .next()
            .unwrap()
            .to_string()
    };
    let mut covered = Vec::new();
    let mut failures = Vec::new();
    for rec in load_recorded(folder) {
        let Some(mode) = compare_mode(&rec.name) else {
            continue;
        };
        let mut target = rec.target.clone();
        let mut headers: Vec<(String, String)> = rec
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.replace("<token>", TOKEN)))
            .collect();
        if rec.name == "openapi-v3-api-hash-pinned" {
            target = format!("/openapi/v3/api?hash={}", our_hash("api"));
        }
        if rec.name == "openapi-v3-apis-apps-v1-if-none-match" {
            for (k, v) in headers.iter_mut() {
                if k.eq_ignore_ascii_case("if-none-match") {
                    *v = format!("\"{}\"", our_hash("apis/apps/v1"));
                }
            }
        }
        let result = curl(
            &lab,
            &rec.identity,
            rec.http2,
            &rec.method,
            &target,
            &headers,
            rec.body.as_deref(),
        )
        .and_then(|got| {
            check_headers(&rec, &got)?;
            check_body(&rec, &got, &mode, &lab, &ours_index)
        });
        match result {
            Ok(()) => covered.push(rec.name.clone()),
            Err(e) => failures.push(format!("{}: {e}", rec.name)),
        }
    }
    eprintln!("replayed {} recorded exchanges: {covered:?}", covered.len());
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every discovery/health/version/openapi/auth/front-proxy/SSR/406/304/unknown recording.
    assert!(
        covered.len() >= 80,
        "only {} exchanges replayed",
        covered.len()
    );
}

/// A kubeconfig for the admin client certificate.
fn kubeconfig(lab: &Lab, pki: &Pki) -> PathBuf {
    let path = lab.work.path().join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {crt}\n    client-key: {key}\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: admin\ncurrent-context: lab\n",
        port = lab.port,
        ca = pki.path("server-ca.crt").display(),
        crt = pki.path("admin.crt").display(),
        key = pki.path("admin.key").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs kubectl against the lab; panics with its stderr on failure.
fn kubectl(lab: &Lab, pki: &Pki, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig(lab, pki))
        .arg("--cache-dir")
        .arg(lab.work.path().join("kube-cache"))
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn kubectl_discovery_whoami_explain_and_crud() {
    test_support::trace::init();
    let pki = Pki::new();
    let lab = start_lab(&pki, "k8s-1.36", &replay_args());

    // api-versions: exactly the recorded server's group/versions.
    let recorded: Value = serde_json::from_slice(
        &std::fs::read(recorded_dir().join("discovery-apis-legacy.json")).unwrap(),
    )
    .unwrap();
    let mut want: BTreeSet<String> = recorded["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["versions"].as_array().unwrap().iter())
        .map(|v| v["groupVersion"].as_str().unwrap().to_string())
        .collect();
    want.insert("v1".into());
    let got: BTreeSet<String> = kubectl(&lab, &pki, &["api-versions"])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(got, want);

    // api-resources: one row per preferred-version resource, with scope and kind.
    let resources = kubectl(&lab, &pki, &["api-resources", "--no-headers"]);
    let row = |name: &str| -> Vec<String> {
        resources
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .find(|cols| cols[0] == name)
            .unwrap_or_else(|| panic!("{name} not in api-resources:\n{resources}"))
    };
    assert_eq!(
        row("deployments")[1..],
        ["deploy", "apps/v1", "true", "Deployment"]
    );
    assert_eq!(row("namespaces")[1..], ["ns", "v1", "false", "Namespace"]);
    assert_eq!(
        row("selfsubjectreviews")[1..],
        ["authentication.k8s.io/v1", "false", "SelfSubjectReview"]
    );

    // auth whoami: the x509 identity as the server saw it.
    let who: Value =
        serde_json::from_str(&kubectl(&lab, &pki, &["auth", "whoami", "-o", "json"])).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "realapi-admin");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        serde_json::json!(["system:masters", "system:authenticated"])
    );

    // auth can-i: SelfSubjectAccessReview (protobuf from kubectl) answered by the lab.
    assert_eq!(
        kubectl(
            &lab,
            &pki,
            &["auth", "can-i", "list", "secrets", "-n", "fx"]
        )
        .trim(),
        "yes"
    );

    // The same review in JSON, for a user the lab treats as having no RBAC bindings.
    let ssar_body = br#"{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":{"resourceAttributes":{"namespace":"fx","verb":"list","resource":"secrets"}}}"#;
    let json_ct = [("content-type".to_string(), "application/json".to_string())];
    for (who, allowed) in [("alice", false), ("admin", true)] {
        let r = curl(
            &lab,
            who,
            true,
            "POST",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            &json_ct,
            Some(ssar_body),
        )
        .unwrap();
        assert_eq!(r.status, 201, "{who}");
        let review: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(review["status"]["allowed"], allowed, "{who}: {review}");
        assert_eq!(review["spec"]["resourceAttributes"]["resource"], "secrets");
    }

    // explain: found through the OpenAPI v3 index and the apps/v1 document.
    let explain = kubectl(&lab, &pki, &["explain", "deployments"]);
    assert!(
        explain.contains("Deployment") && explain.contains("apps") && explain.contains("FIELDS:"),
        "kubectl explain deployments:\n{explain}"
    );
    let explain_spec = kubectl(&lab, &pki, &["explain", "pods.metadata"]);
    assert!(
        explain_spec.contains("ObjectMeta"),
        "kubectl explain pods.metadata:\n{explain_spec}"
    );

    // A write and a read through the whole stack (classification → storage).
    // (`kubectl create -f` sends JSON after finding server-side field validation in the
    // OpenAPI v3 document; `kubectl create namespace` sends protobuf.)
    let manifest = lab.work.path().join("objects.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: lab\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  namespace: lab\ndata:\n  a: b\n",
    )
    .unwrap();
    kubectl(&lab, &pki, &["create", "-f", manifest.to_str().unwrap()]);
    kubectl(&lab, &pki, &["create", "namespace", "lab-proto"]);
    let ns = kubectl(
        &lab,
        &pki,
        &[
            "get",
            "namespace",
            "lab-proto",
            "-o",
            "jsonpath={.status.phase}",
        ],
    );
    assert_eq!(ns, "Active");
    let a = kubectl(
        &lab,
        &pki,
        &[
            "-n",
            "lab",
            "get",
            "configmap",
            "cm",
            "-o",
            "jsonpath={.data.a}",
        ],
    );
    assert_eq!(a, "b");
    // Client-side apply: kubectl reads the OpenAPI v3 document for the patch and the
    // server applies it (create, then a strategic merge patch).
    let applied = lab.work.path().join("applied.yaml");
    for value in ["one", "two"] {
        std::fs::write(
            &applied,
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n  namespace: lab\ndata:\n  v: {value}\n"),
        )
        .unwrap();
        kubectl(&lab, &pki, &["apply", "-f", applied.to_str().unwrap()]);
    }
    let v = kubectl(
        &lab,
        &pki,
        &[
            "-n",
            "lab",
            "get",
            "configmap",
            "applied",
            "-o",
            "jsonpath={.data.v}",
        ],
    );
    assert_eq!(v, "two");

    // Streaming responses pass through the HTTP layer on both protocols: a bounded watch
    // lists the existing object as ADDED and ends on the server's timeout.
    for http2 in [true, false] {
        let w = curl(
            &lab,
            "admin",
            http2,
            "GET",
            "/api/v1/namespaces/lab/configmaps?watch=true&timeoutSeconds=1",
            &[],
            None,
        )
        .unwrap();
        assert_eq!(w.status, 200);
        let events: Vec<Value> = w
            .body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l).unwrap_or_else(|e| {
                    panic!(
                        "watch event is not JSON ({e}): {:?}",
                        String::from_utf8_lossy(l)
                    )
                })
            })
            .collect();
        let names: BTreeSet<&str> = events
            .iter()
            .filter(|e| e["type"] == "ADDED")
            .filter_map(|e| e["object"]["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names, BTreeSet::from(["applied", "cm"]), "http2={http2}");
    }

    // Responses over 128 KiB are gzipped for clients that accept it (as recorded in
    // get-configmap-big-accept-encoding-gzip); small ones are not.
    let big = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "big", "namespace": "lab"},
        "data": {"blob": "x".repeat(200 * 1024)},
    });
    let created = curl(
        &lab,
        "admin",
        true,
        "POST",
        "/api/v1/namespaces/lab/configmaps",
        &[("content-type".into(), "application/json".into())],
        Some(big.to_string().as_bytes()),
    )
    .unwrap();
    assert_eq!(created.status, 201);
    let gz = [("accept-encoding".to_string(), "gzip".to_string())];
    let got = curl(
        &lab,
        "admin",
        true,
        "GET",
        "/api/v1/namespaces/lab/configmaps/big",
        &gz,
        None,
    )
    .unwrap();
    assert_eq!(got.header("content-encoding"), Some("gzip"));
    assert_eq!(got.header("vary"), Some("Accept-Encoding"));
    let mut json_text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(got.body.as_slice()),
        &mut json_text,
    )
    .unwrap();
    let decoded: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(
        decoded["data"]["blob"].as_str().map(str::len),
        Some(200 * 1024)
    );
    let small = curl(
        &lab,
        "admin",
        true,
        "GET",
        "/api/v1/namespaces/lab/configmaps/cm",
        &gz,
        None,
    )
    .unwrap();
    assert_eq!(small.header("content-encoding"), None);

    let audit = std::fs::read_to_string(&lab.audit).unwrap();
    assert!(
        audit.lines().any(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["verb"] == "create"
                && v["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/api/v1/namespaces/lab/configmaps"))
                && v["user"] == "realapi-admin"
                && v["code"] == 201
        }),
        "audit log lacks the configmap create:\n{audit}"
    );
}

#[test]
fn emulates_1_33_with_a_reshaped_surface() {
    test_support::trace::init();
    let pki = Pki::new();
    let args: Vec<String> = [
        "--emulated-version",
        "1.33.4",
        "--add-resource",
        "example.com/v1/widgets=Widget,namespaced,status",
        "--add-resource",
        "example.com/v1/gadgets=Gadget,cluster",
        "--remove-resource",
        "apps/v1/daemonsets",
        "--remove-group-version",
        "storagemigration.k8s.io/v1alpha1",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["--anonymous-discovery".to_string()])
    .collect();
    let lab = start_lab(&pki, "k8s-1.33", &args);

    // --anonymous-discovery: anonymous reads discovery and reviews itself, nothing more.
    let anon_apis = curl(&lab, "anon", false, "GET", "/apis", &[], None).unwrap();
    assert_eq!(anon_apis.status, 200);
    let anon_ssr = curl(
        &lab,
        "anon",
        false,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        &[("content-type".into(), "application/json".into())],
        Some(b"{}"),
    )
    .unwrap();
    assert_eq!(anon_ssr.status, 201);
    let review: Value = serde_json::from_slice(&anon_ssr.body).unwrap();
    assert_eq!(review["status"]["userInfo"]["username"], "system:anonymous");
    let anon_list = curl(
        &lab,
        "anon",
        false,
        "GET",
        "/api/v1/namespaces/default/configmaps",
        &[],
        None,
    )
    .unwrap();
    assert_eq!(anon_list.status, 403);
    let get = |path: &str, accept: Option<&str>| {
        let headers: Vec<(String, String)> = accept
            .map(|a| vec![("accept".to_string(), a.to_string())])
            .unwrap_or_default();
        curl(&lab, "admin", true, "GET", path, &headers, None).unwrap()
    };

    let v: Value = serde_json::from_slice(&get("/version", None).body).unwrap();
    assert_eq!(
        (v["gitVersion"].as_str(), v["minor"].as_str()),
        (Some("v1.33.4"), Some("33"))
    );

    let widgets: Value = serde_json::from_slice(&get("/apis/example.com/v1", None).body).unwrap();
    assert_eq!(widgets["groupVersion"], "example.com/v1");
    let names: Vec<&str> = widgets["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gadgets", "widgets", "widgets/status"]);
    assert_eq!(widgets["resources"][0]["namespaced"], false);
    assert_eq!(widgets["resources"][1]["namespaced"], true);

    let apps: Value = serde_json::from_slice(&get("/apis/apps/v1", None).body).unwrap();
    assert!(!apps.to_string().contains("\"daemonsets\""));
    assert!(apps.to_string().contains("\"deployments\""));
    assert_eq!(get("/apis/storagemigration.k8s.io", None).status, 404);

    // Aggregated discovery knows the added group; v2beta1 is gone since 1.33.
    let agg = get(
        "/apis",
        Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"),
    );
    assert!(String::from_utf8_lossy(&agg.body).contains("\"name\":\"example.com\""));
    let beta = get(
        "/apis",
        Some("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"),
    );
    assert_eq!(beta.status, 406);

    // The added resource is routable: a cluster-scoped one under a namespace is not.
    assert_eq!(
        get("/apis/example.com/v1/namespaces/default/gadgets", None).status,
        404
    );
    assert_eq!(
        get("/apis/apps/v1/namespaces/default/daemonsets", None).status,
        404
    );
    assert_eq!(
        get("/apis/example.com/v1/namespaces/default/widgets", None).status,
        200
    );

    // kubectl sees the same surface.
    let resources = kubectl(
        &lab,
        &pki,
        &[
            "api-resources",
            "--api-group",
            "example.com",
            "--no-headers",
        ],
    );
    assert_eq!(resources.lines().count(), 2, "{resources}");
}

#[test]
fn authentication_edges() {
    test_support::trace::init();
    let pki = Pki::new();
    let lab = start_lab(&pki, "k8s-1.36", &[]);

    // A certificate from an unknown CA fails the TLS handshake itself.
    let stranger = curl(&lab, "stranger", true, "GET", "/version", &[], None);
    assert!(
        stranger.is_err(),
        "untrusted client certificate was accepted: {stranger:?}"
    );

    // Anonymous may read /version and health, nothing else.
    let version = curl(&lab, "anon", false, "GET", "/version", &[], None).unwrap();
    assert_eq!(version.status, 200);
    let livez = curl(&lab, "anon", false, "GET", "/livez", &[], None).unwrap();
    assert_eq!(
        (livez.status, livez.body.as_slice()),
        (200, b"ok".as_slice())
    );
    let api = curl(&lab, "anon", false, "GET", "/api", &[], None).unwrap();
    assert_eq!(api.status, 403);

    // Anonymous over HTTP/2: answered, then GOAWAY (kube-apiserver's DoS mitigation);
    // authenticated connections stay open.
    let verbose = |cert: bool| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sv", "--http2", "-o", "/dev/null", "--cacert"])
            .arg(pki.path("server-ca.crt"));
        if cert {
            cmd.arg("--cert")
                .arg(pki.path("admin.crt"))
                .arg("--key")
                .arg(pki.path("admin.key"));
        }
        let out = cmd
            .arg(format!("https://127.0.0.1:{}/version", lab.port))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let anon_notes = verbose(false);
    assert!(
        anon_notes.contains("GOAWAY"),
        "no GOAWAY for anonymous h2:\n{anon_notes}"
    );
    let admin_notes = verbose(true);
    assert!(
        !admin_notes.contains("GOAWAY"),
        "GOAWAY for an authenticated caller:\n{admin_notes}"
    );

    // Bearer tokens: a known one authenticates, an unknown one is 401 even alongside nothing.
    let bearer = |t: &str| vec![("authorization".to_string(), format!("Bearer {t}"))];
    let ok = curl(&lab, "token", true, "GET", "/apis", &bearer(TOKEN), None).unwrap();
    assert_eq!(ok.status, 200);
    let bad = curl(&lab, "anon", true, "GET", "/apis", &bearer("nope"), None).unwrap();
    assert_eq!(bad.status, 401);

    // A valid client certificate wins over a bad token (kube's union authenticator).
    let both = curl(&lab, "admin", true, "GET", "/apis", &bearer("nope"), None).unwrap();
    assert_eq!(both.status, 200);

    // The audit log records who reached the server, from which TCP peer.
    let audit = std::fs::read_to_string(&lab.audit).unwrap();
    let lines: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let token_line = lines
        .iter()
        .find(|l| l["user"] == "token-admin")
        .expect("token request audited");
    assert_eq!(
        token_line["groups"],
        serde_json::json!(["system:masters", "system:authenticated"])
    );
    assert_eq!(token_line["verb"], "get");
    let src = token_line["sourceAddress"].as_str().unwrap();
    assert!(
        src.starts_with("127.0.0.1:") && src.len() > "127.0.0.1:".len(),
        "{src}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["code"] == 401 && l["user"].is_null())
    );
    assert!(
        lines
            .iter()
            .any(|l| l["code"] == 403 && l["user"] == "system:anonymous")
    );
}

#[test]
fn bad_input_gets_kube_shaped_answers() {
    test_support::trace::init();
    let pki = Pki::new();
    let lab = start_lab(&pki, "k8s-1.36", &[]);
    let call = |method: &str, path: &str, body: Option<&[u8]>| {
        curl(&lab, "admin", true, method, path, &[], body).unwrap()
    };
    let status = |r: &Reply| -> Value { serde_json::from_slice(&r.body).unwrap() };

    // A verb the resource does not serve: 405 MethodNotAllowed Status.
    let r = call("DELETE", "/api/v1/componentstatuses/etcd-0", None);
    assert_eq!(r.status, 405);
    assert_eq!(status(&r)["reason"], "MethodNotAllowed");
    // The all-namespaces path of a namespaced resource only lists and watches.
    for method in ["POST", "DELETE"] {
        let r = call(method, "/api/v1/configmaps", Some(b"{}"));
        assert_eq!(r.status, 405, "{method}");
    }
    assert_eq!(call("GET", "/api/v1/configmaps", None).status, 200);

    // A subresource the resource does not have, a cluster-scoped resource in a namespace,
    // a resource of another group: the JSON 404.
    for path in [
        "/api/v1/namespaces/default/configmaps/x/status",
        "/api/v1/namespaces/default/nodes",
        "/apis/apps/v1/namespaces/default/pods",
    ] {
        let r = call("GET", path, None);
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(
            status(&r)["message"],
            "the server could not find the requested resource",
            "{path}"
        );
    }

    // Paths no router serves: Go's plain-text 404.
    for path in [
        "/apis//v1/pods",
        "/api/v1/watch",
        "/openapi/v3/apis/example.com/v1",
        "/healthz/nope",
    ] {
        let r = call("GET", path, None);
        assert_eq!(
            (r.status, r.body.as_slice()),
            (404, b"404 page not found\n".as_slice()),
            "{path}"
        );
    }

    // A SelfSubjectReview that is not JSON: 400 Status, not a crash.
    let r = call(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some(b"{not json"),
    );
    assert_eq!(r.status, 400);
    assert_eq!(status(&r)["reason"], "BadRequest");

    // Percent-encoded path segments are decoded before routing.
    let r = call("GET", "/api/v1/namespaces/default/config%6Daps", None);
    assert_eq!(r.status, 200);
    assert_eq!(status(&r)["kind"], "ConfigMapList");

    // Unsupported discovery media type: the discovery 406.
    let r = curl(
        &lab,
        "admin",
        true,
        "GET",
        "/apis",
        &[("accept".into(), "application/xml".into())],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 406);
    assert_eq!(status(&r)["reason"], "NotAcceptable");

    // `/` lists the served paths.
    let root: Value = serde_json::from_slice(&call("GET", "/", None).body).unwrap();
    let paths: Vec<&str> = root["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for p in [
        "/api",
        "/api/v1",
        "/apis",
        "/apis/apps",
        "/apis/apps/v1",
        "/version",
        "/readyz",
    ] {
        assert!(paths.contains(&p), "{p} not in {paths:?}");
    }

    // The server still answers after all that.
    assert_eq!(call("GET", "/readyz", None).status, 200);
}

#[test]
fn readiness_follows_etcd() {
    test_support::trace::init();
    let pki = Pki::new();
    let mut lab = start_lab(&pki, "k8s-1.36", &[]);
    let get = |lab: &Lab, path: &str| curl(lab, "admin", true, "GET", path, &[], None).unwrap();
    let ready = get(&lab, "/readyz?verbose");
    assert_eq!(ready.status, 200);
    assert!(String::from_utf8_lossy(&ready.body).contains("[+]etcd ok\n"));

    drop(lab.etcd.take());
    let failed = eventually("/readyz to fail without etcd", || {
        let r = get(&lab, "/readyz");
        if r.status == 500 {
            Ok(r)
        } else {
            Err(format!("status {}", r.status))
        }
    });
    let body = String::from_utf8_lossy(&failed.body).into_owned();
    assert!(
        body.contains("[-]etcd failed: reason withheld\n")
            && body.ends_with("readyz check failed\n"),
        "{body}"
    );
    assert_eq!(get(&lab, "/healthz").status, 500);
    // Liveness does not depend on etcd; discovery is still served from memory.
    assert_eq!(get(&lab, "/livez").status, 200);
    assert_eq!(get(&lab, "/apis").status, 200);
}

#[test]
fn sigterm_fails_readiness_then_drains() {
    test_support::trace::init();
    let pki = Pki::new();
    // Long enough that readiness is seen failing while requests are still served.
    let mut lab = start_lab(
        &pki,
        "k8s-1.36",
        &["--shutdown-delay-duration".to_string(), "10s".to_string()],
    );
    let get = |lab: &Lab, path: &str| curl(lab, "admin", true, "GET", path, &[], None);

    // A watch open across the shutdown: it must end cleanly (curl exit 0), as
    // kube-apiserver ends watches when it stops.
    let watch = Command::new("curl")
        .args(["-sS", "--http2", "-o", "/dev/null", "--cacert"])
        .arg(lab.pki_path("server-ca.crt"))
        .arg("--cert")
        .arg(lab.pki_path("admin.crt"))
        .arg("--key")
        .arg(lab.pki_path("admin.key"))
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/namespaces/default/configmaps?watch=true",
            lab.port
        ))
        .spawn()
        .unwrap();
    let mut watch = scopeguard(watch);
    eventually("the watch to reach the server", || {
        let audit = std::fs::read_to_string(&lab.audit).unwrap_or_default();
        if audit.contains("\"verb\":\"watch\"") {
            Ok(())
        } else {
            Err("not yet")
        }
    });

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(lab.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let r = eventually("/readyz to report the shutdown", || {
        let r = get(&lab, "/readyz")?;
        if r.status == 500 {
            Ok(r)
        } else {
            Err(format!("status {}", r.status))
        }
    });
    assert!(String::from_utf8_lossy(&r.body).contains("[-]shutdown failed: reason withheld\n"));
    // Still serving during the delay.
    assert_eq!(get(&lab, "/livez").unwrap().status, 200);
    assert_eq!(get(&lab, "/apis").unwrap().status, 200);

    let status = eventually("the lab apiserver to exit", || match lab.child.try_wait() {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err("still running".to_string()),
        Err(e) => Err(e.to_string()),
    });
    assert!(status.success(), "exit status {status}");
    let watch_status = eventually("the watch to end", || match watch.0.try_wait() {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err("still streaming".to_string()),
        Err(e) => Err(e.to_string()),
    });
    assert!(
        watch_status.success(),
        "curl watch ended with {watch_status}"
    );
    assert!(
        get(&lab, "/livez").is_err(),
        "still accepting after shutdown"
    );
}

/// Kills a child process on drop (a failed assertion must not leave curl behind).
struct ChildGuard(Child);

fn scopeguard(child: Child) -> ChildGuard {
    ChildGuard(child)
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn anonymous_off_and_any_front_proxy_name() {
    test_support::trace::init();
    let pki = Pki::new();
    let lab = start_lab(
        &pki,
        "k8s-1.36",
        &[
            "--anonymous-auth=false".to_string(),
            "--requestheader-allowed-names=".to_string(),
        ],
    );
    // Without anonymous auth, no credentials at all is a 401 even for /version.
    let r = curl(&lab, "anon", false, "GET", "/version", &[], None).unwrap();
    assert_eq!(r.status, 401);
    // With no allowed names, any certificate from the front-proxy CA may assert identities.
    let headers = [
        ("x-remote-user".to_string(), "carol".to_string()),
        ("x-remote-group".to_string(), "team-z".to_string()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    let r = curl(
        &lab,
        "badfp",
        true,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        &headers,
        Some(br#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#),
    )
    .unwrap();
    assert_eq!(r.status, 201);
    let review: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(review["status"]["userInfo"]["username"], "carol");
    assert_eq!(
        review["status"]["userInfo"]["groups"],
        serde_json::json!(["team-z", "system:authenticated"])
    );
}

#[test]
fn impersonation_as_kube_apiserver_applies_it() {
    test_support::trace::init();
    let pki = Pki::new();
    let lab = start_lab(&pki, "k8s-1.36", &["--unprivileged-user=alice".to_string()]);
    let whoami = |identity: &str, headers: &[(&str, &str)]| {
        let mut h: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        h.push(("content-type".into(), "application/json".into()));
        curl(
            &lab,
            identity,
            false,
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            &h,
            Some(br#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#),
        )
        .unwrap()
    };

    // An admin impersonates bob in team-x with an extra: the review answers as bob.
    let r = whoami(
        "admin",
        &[
            ("Impersonate-User", "bob"),
            ("Impersonate-Group", "team-x"),
            ("Impersonate-Extra-Acme.com%2Fproject", "p1"),
        ],
    );
    assert_eq!(r.status, 201);
    let review: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        review["status"]["userInfo"],
        serde_json::json!({
            "username": "bob",
            "groups": ["team-x", "system:authenticated"],
            "extra": {"acme.com/project": ["p1"]},
        })
    );
    // The audit log keeps both: who asked and who they acted as.
    let audit = std::fs::read_to_string(&lab.audit).unwrap();
    assert!(
        audit.lines().any(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["user"] == "realapi-admin" && v["impersonatedUser"]["username"] == "bob"
        }),
        "{audit}"
    );

    // Without the right, impersonation is a 403 naming the target.
    let r = whoami("alice", &[("Impersonate-User", "bob")]);
    assert_eq!(r.status, 403);
    let status: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        status["message"],
        "users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
    assert_eq!(whoami("anon", &[("Impersonate-User", "bob")]).status, 403);
    // Groups without a user are a server error in kube-apiserver too.
    assert_eq!(
        whoami("admin", &[("Impersonate-Group", "team-x")]).status,
        500
    );

    // kubectl --as uses the same headers.
    let who: Value = serde_json::from_str(&kubectl(
        &lab,
        &pki,
        &[
            "auth",
            "whoami",
            "--as",
            "carol",
            "--as-group",
            "ops",
            "-o",
            "json",
        ],
    ))
    .unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "carol");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        serde_json::json!(["ops", "system:authenticated"])
    );
}

#[test]
fn serving_certificate_reloads_in_place() {
    test_support::trace::init();
    let pki = Pki::new();
    let lab = start_lab(&pki, "k8s-1.36", &[]);
    assert_eq!(
        curl(&lab, "admin", true, "GET", "/version", &[], None)
            .unwrap()
            .status,
        200
    );

    // Rotate to a certificate from another CA, written over the same files (as kubeadm
    // renewals do); new connections get it without a restart.
    let new_ca = Ca::new("lab-server-ca-2").unwrap();
    let d = pki.dir.path();
    new_ca.write_cert(d, "server-ca-2").unwrap();
    new_ca
        .server(
            "lab-apiserver",
            &["127.0.0.1".parse().unwrap()],
            &["localhost"],
        )
        .unwrap()
        .write(d, "server")
        .unwrap();
    let with_ca = |ca: &str| {
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(pki.path(ca))
            .arg("--cert")
            .arg(pki.path("admin.crt"))
            .arg("--key")
            .arg(pki.path("admin.key"))
            .arg(format!("https://127.0.0.1:{}/version", lab.port))
            .output()
            .unwrap()
    };
    eventually("the new serving certificate", || {
        let out = with_ca("server-ca-2.crt");
        if out.status.success() && out.stdout == b"200" {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    assert!(
        !with_ca("server-ca.crt").status.success(),
        "old CA still verifies the server"
    );
}
