//! `pods/exec` and `pods/attach` of the real `mvp-lab-apiserver` binary (with a real etcd),
//! driven by real kubectl (WebSocket by default, SPDY with
//! `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`), by a tokio-tungstenite client for the
//! v5/v4 framing, and by raw HTTP/1.1, HTTP/2 and SPDY bytes for bad input.
//!
//! Which upgrade each exec used is read from the lab's log (`lab exec request ...
//! upgrade=...`), so a silent WebSocket→SPDY fallback cannot pass for WebSocket.
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use test_support::bins;
use test_support::etcd::Etcd;
use test_support::eventually::{eventually, patience};
use test_support::labapi::testpki::Ca;

const TOKEN: &str = "alice-token-0123456789";

/// A running lab apiserver (killed on drop) with pod `default/p1` (one container, `c`).
struct Lab {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    audit: PathBuf,
    ca_pem: String,
    /// A client certificate the lab trusts as its front proxy (mvp's role).
    front_proxy: test_support::labapi::testpki::Issued,
    /// The lab's stderr lines, ANSI escapes stripped.
    log: Arc<Mutex<Vec<String>>>,
    _etcd: Etcd,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Lab {
    async fn start() -> Result<Lab> {
        test_support::trace::init();
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let ca = Ca::new("lab-exec-ca")?;
        ca.write_cert(d, "ca")?;
        ca.server("lab-apiserver", &["127.0.0.1".parse()?], &["localhost"])?
            .write(d, "server")?;
        let front_proxy_ca = Ca::new("lab-exec-front-proxy-ca")?;
        front_proxy_ca.write_cert(d, "front-proxy-ca")?;
        let front_proxy = front_proxy_ca.client("front-proxy-client", &[])?;
        std::fs::write(
            d.join("tokens.csv"),
            format!("{TOKEN},alice,alice-uid,\"devs\"\n"),
        )?;
        let etcd = Etcd::start()?;
        let audit = d.join("audit.jsonl");
        let mut child = Command::new(bins::lab_apiserver())
            .args(["--bind-address", "127.0.0.1", "--secure-port", "0"])
            .arg("--tls-cert-file")
            .arg(d.join("server.crt"))
            .arg("--tls-private-key-file")
            .arg(d.join("server.key"))
            .arg("--token-auth-file")
            .arg(d.join("tokens.csv"))
            .arg("--requestheader-client-ca-file")
            .arg(d.join("front-proxy-ca.crt"))
            .args(["--requestheader-allowed-names", "front-proxy-client"])
            .args(["--etcd-servers", &etcd.endpoint()])
            .arg("--audit-log-path")
            .arg(&audit)
            .arg("--discovery-dir")
            .arg(bins::fixtures_dir().join("discovery/k8s-1.36"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting mvp-lab-apiserver")?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[lab] {line}");
                let line = strip_ansi(&line);
                if let Some(addr) = line.strip_prefix("mvp-lab-apiserver listening on ") {
                    let _ = tx.send(addr.to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(patience()) {
            Ok(addr) => addr.parse()?,
            Err(e) => {
                let _ = child.kill();
                bail!("mvp-lab-apiserver did not report its address: {e}");
            }
        };
        let lab = Lab {
            child,
            addr,
            audit,
            ca_pem: ca.cert_pem(),
            front_proxy,
            log,
            dir,
            _etcd: etcd,
        };
        lab.kubeconfig()?;
        let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\nspec:\n  containers:\n  - name: c\n    image: registry.k8s.io/pause:3.10\n";
        let run = kubectl(
            &lab,
            Transport::WebSocket,
            &["create", "--validate=false", "-f", "-"],
            Some(pod.as_bytes()),
        )
        .await?;
        ensure!(run.code == Some(0), "creating the pod: {}", run.stderr);
        Ok(lab)
    }

    fn kubeconfig(&self) -> Result<PathBuf> {
        let path = self.dir.path().join("kubeconfig");
        if !path.exists() {
            std::fs::write(
                &path,
                format!(
                    "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://{}\n    certificate-authority: {}\nusers:\n- name: alice\n  user:\n    token: {TOKEN}\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: alice\n    namespace: default\ncurrent-context: lab\n",
                    self.addr,
                    self.dir.path().join("ca.crt").display()
                ),
            )?;
        }
        Ok(path)
    }

    /// The `upgrade=` of every exec/attach the lab served, in order.
    fn upgrades(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("lab exec request"))
            .filter_map(|l| l.split("upgrade=").nth(1))
            .map(|u| u.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    }

    /// Exec/attach entries of the audit log.
    fn exec_audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| {
                let p = v["path"].as_str().unwrap_or("");
                p.contains("/exec?") || p.contains("/attach?")
            })
            .collect()
    }

    /// A TLS connection to the lab offering `alpn`.
    async fn tls(&self, alpn: &[&[u8]]) -> Result<TlsStream<TcpStream>> {
        self.tls_as(alpn, false).await
    }

    /// A TLS connection offering `alpn`, with the front-proxy client certificate if asked.
    async fn tls_as(&self, alpn: &[&[u8]], front_proxy: bool) -> Result<TlsStream<TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls_pki_types::CertificateDer::from_pem_slice(
            self.ca_pem.as_bytes(),
        )?)?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
        let mut config = if front_proxy {
            config.with_client_auth_cert(
                vec![rustls_pki_types::CertificateDer::from(
                    self.front_proxy.cert_der.clone(),
                )],
                rustls_pki_types::PrivateKeyDer::from_pem_slice(
                    self.front_proxy.key_pem.as_bytes(),
                )?,
            )?
        } else {
            config.with_no_client_auth()
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(self.addr).await?;
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1")?;
        Ok(tokio::time::timeout(patience(), connector.connect(name, tcp)).await??)
    }
}

/// How kubectl chooses its exec transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// kubectl's default (WebSocket, v5.channel.k8s.io).
    WebSocket,
    /// `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`.
    Spdy,
}

impl Transport {
    /// The lab's log of the request's `Upgrade` header (lower-cased).
    fn upgrade(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Spdy => "spdy/3.1",
        }
    }
}

struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

/// Run kubectl against the lab with `stdin`, bounded by the test patience.
async fn kubectl(
    lab: &Lab,
    transport: Transport,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<Run> {
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(lab.kubeconfig()?)
        .args(args)
        .env("HOME", lab.dir.path())
        .env_remove("KUBECONFIG")
        .env(
            "KUBECTL_REMOTE_COMMAND_WEBSOCKETS",
            if transport == Transport::Spdy {
                "false"
            } else {
                "true"
            },
        )
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("spawning kubectl")?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        tokio::spawn(async move {
            // kubectl may exit before reading everything (e.g. `echo`); that is fine.
            let _ = pipe.write_all(&input).await;
            drop(pipe);
        });
    }
    let out = tokio::time::timeout(patience(), child.wait_with_output())
        .await
        .with_context(|| format!("kubectl {args:?} did not finish within {:?}", patience()))??;
    Ok(Run {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Deterministic non-text bytes.
fn payload(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

async fn cat_round_trip(transport: Transport) -> Result<()> {
    let lab = Lab::start().await?;
    let input = payload(300 * 1024);
    let run = kubectl(
        &lab,
        transport,
        &["exec", "-i", "p1", "--", "cat"],
        Some(&input),
    )
    .await?;
    ensure!(run.code == Some(0), "kubectl exec failed: {}", run.stderr);
    ensure!(
        run.stdout == input,
        "echo differs: sent {} bytes, got {} back (stderr: {})",
        input.len(),
        run.stdout.len(),
        run.stderr
    );
    assert_eq!(lab.upgrades(), vec![transport.upgrade()]);
    Ok(())
}

#[tokio::test]
async fn kubectl_exec_cat_echoes_stdin_over_websocket() -> Result<()> {
    cat_round_trip(Transport::WebSocket).await
}

#[tokio::test]
async fn kubectl_exec_cat_echoes_stdin_over_spdy() -> Result<()> {
    cat_round_trip(Transport::Spdy).await
}

async fn commands(transport: Transport) -> Result<()> {
    let lab = Lab::start().await?;

    let run = kubectl(
        &lab,
        transport,
        &["exec", "p1", "--", "echo", "hello", "lab"],
        None,
    )
    .await?;
    ensure!(run.code == Some(0), "echo failed: {}", run.stderr);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hello lab\n");

    // The container sees the caller's identity; the audit log has it too.
    let run = kubectl(
        &lab,
        transport,
        &["exec", "p1", "-c", "c", "--", "whoami"],
        None,
    )
    .await?;
    ensure!(run.code == Some(0), "whoami failed: {}", run.stderr);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "alice\n");
    let run = kubectl(&lab, transport, &["exec", "p1", "--", "lab-identity"], None).await?;
    ensure!(run.code == Some(0), "lab-identity failed: {}", run.stderr);
    let id: serde_json::Value = serde_json::from_slice(&run.stdout)?;
    assert_eq!(id["user"], "alice");
    assert_eq!(id["uid"], "alice-uid");
    assert_eq!(
        id["groups"],
        serde_json::json!(["devs", "system:authenticated"])
    );

    // Non-zero exit: the Failure Status on the error stream becomes kubectl's exit code.
    let run = kubectl(&lab, transport, &["exec", "p1", "--", "false"], None).await?;
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("command terminated with exit code 1"),
        "stderr: {}",
        run.stderr
    );

    // Stdin given but the command does not read it.
    let run = kubectl(
        &lab,
        transport,
        &["exec", "-i", "p1", "--", "echo", "x"],
        Some(b"ignored"),
    )
    .await?;
    ensure!(
        run.code == Some(0),
        "echo with stdin failed: {}",
        run.stderr
    );
    assert_eq!(run.stdout, b"x\n");

    let ups = lab.upgrades();
    assert_eq!(ups.len(), 5, "{ups:?}");
    assert!(ups.iter().all(|u| u == transport.upgrade()), "{ups:?}");
    // Every exec was audited as alice's, with the 101.
    let audit = eventually("five exec audit entries", || {
        let a = lab.exec_audit();
        if a.len() == 5 {
            Ok(a)
        } else {
            Err(format!("{} exec entries: {a:?}", a.len()))
        }
    });
    for entry in audit {
        assert_eq!(entry["user"], "alice", "{entry}");
        assert_eq!(entry["code"], 101, "{entry}");
    }
    Ok(())
}

#[tokio::test]
async fn kubectl_exec_commands_and_identity_over_websocket() -> Result<()> {
    commands(Transport::WebSocket).await
}

#[tokio::test]
async fn kubectl_exec_commands_and_identity_over_spdy() -> Result<()> {
    commands(Transport::Spdy).await
}

#[tokio::test]
async fn kubectl_exec_missing_pod_or_container_fails_cleanly() -> Result<()> {
    let lab = Lab::start().await?;
    for transport in [Transport::WebSocket, Transport::Spdy] {
        let run = kubectl(&lab, transport, &["exec", "nope", "--", "true"], None).await?;
        assert_ne!(run.code, Some(0));
        assert!(
            run.stderr.contains("pods \"nope\" not found"),
            "{transport:?}: {}",
            run.stderr
        );
        let run = kubectl(
            &lab,
            transport,
            &["exec", "p1", "-c", "nope", "--", "true"],
            None,
        )
        .await?;
        assert_ne!(run.code, Some(0));
        assert!(
            run.stderr
                .contains("container nope is not valid for pod p1"),
            "{transport:?}: {}",
            run.stderr
        );
    }
    // Nothing reached the exec module.
    assert_eq!(lab.upgrades(), Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn kubectl_attach_echoes_stdin() -> Result<()> {
    let lab = Lab::start().await?;
    for transport in [Transport::WebSocket, Transport::Spdy] {
        let run = kubectl(
            &lab,
            transport,
            &["attach", "-i", "p1", "-c", "c"],
            Some(b"attached\n"),
        )
        .await?;
        ensure!(
            run.code == Some(0),
            "{transport:?} attach failed: {}",
            run.stderr
        );
        assert_eq!(
            String::from_utf8_lossy(&run.stdout),
            "attached\n",
            "{transport:?}"
        );
    }
    assert_eq!(lab.upgrades(), vec!["websocket", "spdy/3.1"]);
    Ok(())
}

// --- WebSocket framing, with a tokio-tungstenite client -------------------------------

type Ws = tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>;

async fn ws_connect(lab: &Lab, query: &str, protocol: &str) -> Result<Ws> {
    ws_connect_as(lab, query, protocol, &[]).await
}

/// Like [`ws_connect`]; with `front_proxy_headers`, as the front proxy sending them
/// (client certificate, no token) instead of as alice.
async fn ws_connect_as(
    lab: &Lab,
    query: &str,
    protocol: &str,
    front_proxy_headers: &[(&str, &str)],
) -> Result<Ws> {
    let url = format!(
        "wss://{}/api/v1/namespaces/default/pods/p1/exec?{query}",
        lab.addr
    );
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse()?);
    let front_proxy = !front_proxy_headers.is_empty();
    if front_proxy {
        for (k, v) in front_proxy_headers {
            req.headers_mut()
                .append(http::HeaderName::from_bytes(k.as_bytes())?, v.parse()?);
        }
    } else {
        req.headers_mut()
            .insert("Authorization", format!("Bearer {TOKEN}").parse()?);
    }
    let tls = lab.tls_as(&[b"http/1.1"], front_proxy).await?;
    let (ws, resp) =
        tokio::time::timeout(patience(), tokio_tungstenite::client_async(req, tls)).await??;
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some(protocol)
    );
    Ok(ws)
}

/// The next data message (pings and pongs skipped); `None` once closed.
async fn ws_next(ws: &mut Ws) -> Result<Option<Message>> {
    loop {
        let msg = tokio::time::timeout(patience(), ws.next())
            .await
            .context("websocket read did not complete")?;
        match msg {
            None => return Ok(None),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(msg) => return Ok(Some(msg?)),
        }
    }
}

fn bin(channel: u8, data: &[u8]) -> Message {
    let mut v = vec![channel];
    v.extend_from_slice(data);
    Message::Binary(v)
}

async fn expect_normal_close(ws: &mut Ws) -> Result<()> {
    match ws_next(ws).await? {
        Some(Message::Close(Some(frame))) => {
            ensure!(
                u16::from(frame.code) == 1000,
                "close code {}",
                u16::from(frame.code)
            );
        }
        other => bail!("expected a normal close, got {other:?}"),
    }
    match ws_next(ws).await {
        Ok(None) => Ok(()),
        // The server may drop TLS without close_notify once both closes were exchanged.
        Err(e) if format!("{e:#}").contains("close_notify") => Ok(()),
        other => bail!("expected the end after the close, got {other:?}"),
    }
}

#[tokio::test]
async fn websocket_v5_echoes_and_half_closes_stdin() -> Result<()> {
    let lab = Lab::start().await?;
    let mut ws = ws_connect(
        &lab,
        "command=cat&stdin=true&stdout=true&stderr=true",
        "v5.channel.k8s.io",
    )
    .await?;
    ws.send(bin(0, b"hello ")).await?;
    assert_eq!(ws_next(&mut ws).await?, Some(bin(1, b"hello ")));
    // Resize events and empty stdin messages are accepted and produce nothing.
    ws.send(bin(4, br#"{"Width":80,"Height":24}"#)).await?;
    ws.send(bin(0, b"")).await?;
    ws.send(bin(0, b"\x00world\xff")).await?;
    assert_eq!(ws_next(&mut ws).await?, Some(bin(1, b"\x00world\xff")));
    // v5 close-stream signal for stdin: the container sees EOF and exits 0.
    ws.send(bin(255, &[0])).await?;
    assert_eq!(
        ws_next(&mut ws).await?,
        Some(bin(3, br#"{"metadata":{},"status":"Success"}"#))
    );
    expect_normal_close(&mut ws).await
}

#[tokio::test]
async fn websocket_v4_and_base64_report_exit_status() -> Result<()> {
    let lab = Lab::start().await?;
    let mut ws = ws_connect(
        &lab,
        "command=echo&command=hi&stdout=true&stderr=true",
        "v4.channel.k8s.io",
    )
    .await?;
    assert_eq!(ws_next(&mut ws).await?, Some(bin(1, b"hi\n")));
    assert_eq!(
        ws_next(&mut ws).await?,
        Some(bin(3, br#"{"metadata":{},"status":"Success"}"#))
    );
    expect_normal_close(&mut ws).await?;

    let mut ws = ws_connect(
        &lab,
        "command=false&stdout=true",
        "v4.base64.channel.k8s.io",
    )
    .await?;
    let Some(Message::Text(text)) = ws_next(&mut ws).await? else {
        bail!("expected a text message");
    };
    use base64::Engine as _;
    ensure!(text.starts_with('3'), "channel of {text:?}");
    let status: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(&text[1..])?)?;
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "1");
    expect_normal_close(&mut ws).await
}

#[tokio::test]
async fn websocket_exec_sees_the_front_proxy_identity() -> Result<()> {
    let lab = Lab::start().await?;
    let mut ws = ws_connect_as(
        &lab,
        "command=lab-identity&stdout=true",
        "v5.channel.k8s.io",
        &[
            ("X-Remote-User", "bob"),
            ("X-Remote-Uid", "bob-uid"),
            ("X-Remote-Group", "g1"),
            ("X-Remote-Group", "g2"),
            ("X-Remote-Extra-Scopes", "s1"),
        ],
    )
    .await?;
    let Some(Message::Binary(out)) = ws_next(&mut ws).await? else {
        bail!("expected stdout");
    };
    ensure!(out.first() == Some(&1), "channel {:?}", out.first());
    let id: serde_json::Value = serde_json::from_slice(&out[1..])?;
    assert_eq!(id["user"], "bob", "{id}");
    assert_eq!(id["uid"], "bob-uid", "{id}");
    assert_eq!(
        id["groups"],
        serde_json::json!(["g1", "g2", "system:authenticated"]),
        "{id}"
    );
    assert_eq!(id["extra"], serde_json::json!({"scopes": ["s1"]}), "{id}");
    assert_eq!(
        ws_next(&mut ws).await?,
        Some(bin(3, br#"{"metadata":{},"status":"Success"}"#))
    );
    expect_normal_close(&mut ws).await?;
    let audit = eventually("the exec audit entry", || {
        match lab.exec_audit().as_slice() {
            [one] => Ok(one.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(audit["user"], "bob", "{audit}");
    assert_eq!(audit["code"], 101, "{audit}");
    Ok(())
}

// --- Bad input ---------------------------------------------------------------------------

/// One HTTP/1.1 request as alice on a fresh connection; status, headers and JSON body.
async fn http1(
    lab: &Lab,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, http::HeaderMap, serde_json::Value)> {
    let tls = lab.tls(&[b"http/1.1"]).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", lab.addr.to_string())
        .header("authorization", format!("Bearer {TOKEN}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        patience(),
        sender.send_request(req.body(Empty::<Bytes>::new())?),
    )
    .await??;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    let json = serde_json::from_slice(&body)
        .with_context(|| format!("body is not JSON: {}", String::from_utf8_lossy(&body)))?;
    Ok((status, headers, json))
}

fn assert_status(json: &serde_json::Value, code: u16, reason: &str, message_part: &str) {
    assert_eq!(json["kind"], "Status", "{json}");
    assert_eq!(json["code"], code, "{json}");
    assert_eq!(json["reason"], reason, "{json}");
    assert!(
        json["message"]
            .as_str()
            .unwrap_or("")
            .contains(message_part),
        "{json}"
    );
}

#[tokio::test]
async fn bad_exec_requests_get_status_errors() -> Result<()> {
    let lab = Lab::start().await?;
    let exec = "/api/v1/namespaces/default/pods/p1/exec?command=cat&stdin=true&stdout=true";
    let spdy = [("connection", "Upgrade"), ("upgrade", "SPDY/3.1")];

    // Not an upgrade at all.
    let (code, _, json) = http1(&lab, "POST", exec, &[]).await?;
    assert_eq!(code, 400);
    assert_status(&json, 400, "BadRequest", "Upgrade request required");

    // Nothing to stream; no command.
    let (code, _, json) = http1(
        &lab,
        "POST",
        "/api/v1/namespaces/default/pods/p1/exec?command=cat",
        &spdy,
    )
    .await?;
    assert_eq!(code, 400);
    assert_status(
        &json,
        400,
        "BadRequest",
        "at least 1 of stdin, stdout, stderr",
    );
    let (code, _, json) = http1(
        &lab,
        "POST",
        "/api/v1/namespaces/default/pods/p1/exec?stdout=true",
        &spdy,
    )
    .await?;
    assert_eq!(code, 400);
    assert_status(&json, 400, "BadRequest", "at least one command");

    // SPDY without X-Stream-Protocol-Version, then with only unknown versions.
    let (code, _, json) = http1(&lab, "POST", exec, &spdy).await?;
    assert_eq!(code, 400);
    assert_status(
        &json,
        400,
        "BadRequest",
        "X-Stream-Protocol-Version is required",
    );
    let mut h = spdy.to_vec();
    h.push(("x-stream-protocol-version", "v9.channel.k8s.io"));
    let (code, headers, json) = http1(&lab, "POST", exec, &h).await?;
    assert_eq!(code, 403);
    assert_status(&json, 403, "Forbidden", "unable to negotiate protocol");
    assert!(
        headers
            .get_all("x-accepted-stream-protocol-versions")
            .iter()
            .any(|v| v == "v4.channel.k8s.io")
    );

    // WebSocket with no channel subprotocol we speak.
    let (code, _, json) = http1(
        &lab,
        "GET",
        exec,
        &[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "channel.k8s.io"),
        ],
    )
    .await?;
    assert_eq!(code, 403);
    assert_status(&json, 403, "Forbidden", "websocket subprotocol");

    // HTTP/2 has no Upgrade: a clean 400, not a hang.
    let tls = lab.tls(&[b"h2"]).await?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("https://{}{exec}", lab.addr))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Empty::<Bytes>::new())?;
    let resp = tokio::time::timeout(patience(), sender.send_request(req)).await??;
    assert_eq!(resp.status(), 400);
    let body = resp.into_body().collect().await?.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    assert_status(&json, 400, "BadRequest", "Upgrade request required");
    Ok(())
}

/// Upgrade to SPDY by hand and return the raw connection after the 101.
async fn raw_spdy(lab: &Lab) -> Result<TlsStream<TcpStream>> {
    let mut tls = lab.tls(&[b"http/1.1"]).await?;
    tls.write_all(
        format!(
            "POST /api/v1/namespaces/default/pods/p1/exec?command=cat&stdin=true&stdout=true HTTP/1.1\r\n\
             Host: {}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
            lab.addr
        )
        .as_bytes(),
    )
    .await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(patience(), tls.read(&mut b)).await??;
        ensure!(n == 1, "connection closed during the handshake");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    ensure!(head.starts_with("http/1.1 101"), "{head}");
    ensure!(
        head.contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    ensure!(head.contains("upgrade: spdy/3.1"), "{head}");
    Ok(tls)
}

/// Read until the server closes the connection.
async fn read_to_close(tls: &mut TlsStream<TcpStream>) -> Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(patience(), tls.read(&mut buf))
            .await
            .context("server did not close the connection")?
        {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => continue,
        }
    }
}

#[tokio::test]
async fn spdy_garbage_closes_the_connection() -> Result<()> {
    let lab = Lab::start().await?;
    let garbage: [&[u8]; 3] = [
        // A SPDY/2 control frame.
        b"\x80\x02\x00\x01\x00\x00\x00\x0a\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00",
        // A SYN_STREAM whose header block is not zlib.
        b"\x80\x03\x00\x01\x00\x00\x00\x0e\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00garb",
        // A frame announcing more than the size limit.
        b"\x00\x00\x00\x01\x00\xff\xff\xff",
    ];
    for g in garbage {
        let mut tls = raw_spdy(&lab).await?;
        tls.write_all(g).await?;
        tls.flush().await?;
        read_to_close(&mut tls).await?;
    }
    // The lab says why (logged as each session ends).
    eventually("the lab to log the three protocol errors", || {
        let log = lab.log.lock().unwrap().join("\n");
        for why in [
            "unsupported SPDY version 2",
            "spdy header compression",
            "exceeds the 1048576-byte limit",
        ] {
            if !log.contains(why) {
                return Err(format!("no {why:?} in the lab log"));
            }
        }
        Ok(())
    });
    Ok(())
}
