//! The `mvp doctor` and `mvp status` binaries as an operator runs them: exit codes, JSON
//! output, and one actionable stderr line on bad input.
mod opsupport;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output};

use mvp::admin::{STATUS_SCHEMA, ServerStatus, SkewRow, StatusReport};
use opsupport::{Pki, PkiSpec};

fn mvp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mvp"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run mvp")
}

fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn one_error_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got:\n{err}");
    assert!(lines[0].starts_with("mvp: error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_owned()
}

#[test]
fn doctor_json_reports_detection_and_fails_without_the_local_apiserver() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&tmp.path().join("pki"), &PkiSpec::default());
    let manifest = opsupport::write_manifest(tmp.path(), &pki.dir);
    let upstream = format!("https://{}", closed_port());
    let out = mvp(&[
        "doctor",
        "--apiserver-manifest",
        manifest.to_str().unwrap(),
        "--proc-root",
        tmp.path().to_str().unwrap(),
        "--upstream",
        &upstream,
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["verdict"], "FAIL");
    let check = |id: &str| {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("no {id}"))
            .clone()
    };
    assert_eq!(check("detect")["verdict"], "PASS");
    assert_eq!(check("cert/front-proxy-chain")["verdict"], "PASS");
    assert!(check("kernel/version")["verdict"].is_string());
    let local = check("server/local");
    assert_eq!(local["verdict"], "FAIL");
    assert!(
        local["fix"]
            .as_str()
            .unwrap()
            .contains("start kube-apiserver")
    );
    assert_eq!(check("peers")["verdict"], "WARN");
    assert!(
        report["detected"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["setting"] == "--tls-cert-file"
                && r["source"].as_str().unwrap().starts_with("manifest "))
    );
}

#[test]
fn doctor_without_any_apiserver_says_where_it_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = tmp.path().join("kube-apiserver.yaml");
    let out = mvp(&[
        "doctor",
        "--apiserver-manifest",
        manifest.to_str().unwrap(),
        "--proc-root",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL  detect"), "{text}");
    assert!(text.contains(manifest.to_str().unwrap()), "{text}");
    assert!(text.contains("fix: "), "{text}");
}

#[test]
fn bad_flags_are_one_line_not_a_panic() {
    let out = mvp(&["doctor", "--upstream", "http://127.0.0.1:6443"]);
    assert_eq!(out.status.code(), Some(1));
    let line = one_error_line(&out);
    assert!(
        line.contains("--upstream") && line.contains("https://"),
        "{line}"
    );

    let out = mvp(&["status", "--admin-address", &closed_port().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let line = one_error_line(&out);
    assert!(line.contains("is mvp running?"), "{line}");
}

/// Answer one HTTP request with `body` (a stand-in for a running mvp's admin endpoint).
fn serve_once(body: String) -> (SocketAddr, std::thread::JoinHandle<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "client closed early");
            req.extend_from_slice(&buf[..n]);
        }
        write!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        String::from_utf8_lossy(&req).into_owned()
    });
    (addr, t)
}

fn sample() -> StatusReport {
    StatusReport {
        schema: STATUS_SCHEMA,
        mvp_version: "0.1.0".into(),
        ready: true,
        steering: vec!["192.168.56.11:6443".into()],
        servers: vec![ServerStatus {
            name: "local".into(),
            address: "127.0.0.1:6443".into(),
            local: true,
            version: Some("v1.36.2".into()),
            reachable: true,
            discovery_age_seconds: Some(3),
            last_error: None,
        }],
        skew: vec![SkewRow {
            group: "storage.k8s.io".into(),
            version: "v1".into(),
            resource: "volumeattributesclasses".into(),
            subresource: None,
            served_by: vec!["local".into()],
        }],
        ..Default::default()
    }
}

#[test]
fn status_renders_a_table_or_json_from_the_admin_endpoint() {
    let body = serde_json::to_string(&sample()).unwrap();
    let (addr, t) = serve_once(body.clone());
    let out = mvp(&["status", "--admin-address", &addr.to_string()]);
    let req = t.join().unwrap();
    assert!(req.starts_with("GET /status HTTP/1.1\r\n"), "{req}");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mvp 0.1.0: ready"), "{text}");
    assert!(text.contains("v1.36.2"), "{text}");
    assert!(
        text.contains("storage.k8s.io/v1 volumeattributesclasses  local"),
        "{text}"
    );

    let (addr, t) = serve_once(body);
    let out = mvp(&[
        "status",
        "--admin-address",
        &addr.to_string(),
        "--output",
        "json",
    ]);
    t.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let back: StatusReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(back, sample());
}
