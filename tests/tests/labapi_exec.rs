//! `pods/exec` and `pods/attach` of the lab apiserver, driven by real kubectl (WebSocket
//! by default, SPDY with `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`) and by a
//! tokio-tungstenite client for the v5/v4 framing, plus bad input over raw HTTP.
//!
//! The server here is a small TLS hyper server that answers `GET pods/<name>` (kubectl reads
//! the pod first) and routes `pods/<name>/{exec,attach}` to `labapi::exec::serve`,
//! recording which upgrade each exec asked for so the tests know which protocol ran.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use test_support::eventually::patience;
use test_support::labapi::exec;
use test_support::labapi::status::Status;
use test_support::labapi::types::{
    Identity, LabResponse, ResourceMeta, ResourceRequest, Verb, full,
};

const TOKEN: &str = "alice-token";

/// A lab-ish apiserver: pods `fx/p1` exists, everything else 404s.
struct TestApi {
    addr: SocketAddr,
    tls: bool,
    /// `Upgrade` header of every exec/attach request, in order.
    upgrades: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
    ca_pem: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn identity_for(req: &http::Request<Incoming>) -> Identity {
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match bearer {
        Some(TOKEN) => Identity {
            user: "alice".into(),
            uid: "alice-uid".into(),
            groups: vec!["devs".into(), "system:authenticated".into()],
            ..Default::default()
        },
        _ => Identity {
            user: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..Default::default()
        },
    }
}

fn pod_json(ns: &str, name: &str) -> Vec<u8> {
    let path =
        test_support::bins::fixtures_dir().join("real-apiserver/v1.36.2/setup-create-pod-p1.json");
    let mut pod: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("pod fixture")).expect("pod json");
    pod["metadata"]["namespace"] = ns.into();
    pod["metadata"]["name"] = name.into();
    pod["status"]["phase"] = "Running".into();
    serde_json::to_vec(&pod).expect("serialises")
}

fn fixture_response(name: &str) -> LabResponse {
    let path = test_support::bins::fixtures_dir()
        .join("real-apiserver/v1.36.2")
        .join(name);
    http::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(full(std::fs::read(path).expect("fixture")))
        .expect("response")
}

async fn route(req: http::Request<Incoming>, upgrades: Arc<Mutex<Vec<String>>>) -> LabResponse {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        // Aggregated discovery, as recorded from kube-apiserver (kubectl resolves `pods`).
        [group @ ("api" | "apis")] => {
            let file = format!("real-apiserver/v1.36.2/discovery-{group}-aggregated-v2.json");
            let body = std::fs::read(test_support::bins::fixtures_dir().join(file))
                .expect("discovery fixture");
            http::Response::builder()
                .header(
                    http::header::CONTENT_TYPE,
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                )
                .body(full(body))
                .expect("response")
        }
        ["version"] => fixture_response("version.json"),
        ["api", "v1", "namespaces", "fx"] => fixture_response("setup-create-namespace.json"),
        ["api", "v1", "namespaces", ns, "pods", name] if req.method() == http::Method::GET => {
            if *ns == "fx" && *name == "p1" {
                http::Response::builder()
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(full(pod_json(ns, name)))
                    .expect("response")
            } else {
                Status::not_found("", "pods", name).response()
            }
        }
        [
            "api",
            "v1",
            "namespaces",
            ns,
            "pods",
            name,
            sub @ ("exec" | "attach"),
        ] => {
            upgrades.lock().unwrap().push(
                req.headers()
                    .get(http::header::UPGRADE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
            );
            let rr = ResourceRequest {
                meta: ResourceMeta {
                    group: String::new(),
                    version: "v1".into(),
                    resource: "pods".into(),
                    singular: "pod".into(),
                    kind: "Pod".into(),
                    namespaced: true,
                    verbs: vec!["get".into()],
                    subresources: vec!["exec".into(), "attach".into()],
                },
                verb: Verb::Connect,
                namespace: Some(ns.to_string()),
                name: Some(name.to_string()),
                subresource: Some(sub.to_string()),
                identity: identity_for(&req),
            };
            exec::serve(rr, req).await
        }
        _ => {
            tracing::info!(method = %req.method(), %path, "test apiserver: no route");
            Status::path_not_found().response()
        }
    }
}

impl TestApi {
    async fn start(tls: bool) -> Result<TestApi> {
        test_support::trace::init();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])?;
        let ca_pem = cert.cert.pem();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into()),
        )?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upgrades = Arc::new(Mutex::new(Vec::new()));
        let ups = upgrades.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let ups = ups.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let ups = ups.clone();
                        async move { Ok::<_, std::convert::Infallible>(route(req, ups).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let result = if tls {
                        match acceptor.accept(tcp).await {
                            Ok(s) => {
                                builder
                                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                                    .await
                            }
                            Err(_) => return,
                        }
                    } else {
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                            .await
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "test apiserver connection");
                    }
                });
            }
        });
        Ok(TestApi {
            addr,
            tls,
            upgrades,
            dir: tempfile::tempdir()?,
            ca_pem,
            server,
        })
    }

    fn kubeconfig(&self) -> Result<PathBuf> {
        assert!(self.tls, "kubectl talks TLS");
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let path = self.dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://{}\n    certificate-authority-data: {ca}\nusers:\n- name: alice\n  user:\n    token: {TOKEN}\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: alice\n    namespace: fx\ncurrent-context: lab\n",
                self.addr
            ),
        )?;
        Ok(path)
    }

    fn upgrades(&self) -> Vec<String> {
        self.upgrades.lock().unwrap().clone()
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
    fn upgrade(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Spdy => "SPDY/3.1",
        }
    }
}

struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

/// Run kubectl against `kubeconfig` with `stdin`, bounded by the test patience.
async fn kubectl(
    kubeconfig: &Path,
    home: &Path,
    transport: Transport,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<Run> {
    let mut cmd = tokio::process::Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("HOME", home)
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
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
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

/// Deterministic non-text bytes (every byte value, in a scrambled order).
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
    let api = TestApi::start(true).await?;
    let kc = api.kubeconfig()?;
    let input = payload(300 * 1024);
    let run = kubectl(
        &kc,
        api.dir.path(),
        transport,
        &["exec", "-i", "p1", "--", "cat"],
        Some(&input),
    )
    .await?;
    ensure!(run.code == Some(0), "kubectl exec failed: {}", run.stderr);
    ensure!(
        run.stdout.len() == input.len() && run.stdout == input,
        "echo differs: sent {} bytes, got {} back (stderr: {})",
        input.len(),
        run.stdout.len(),
        run.stderr
    );
    assert_eq!(api.upgrades(), vec![transport.upgrade().to_string()]);
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
    let api = TestApi::start(true).await?;
    let kc = api.kubeconfig()?;
    let home = api.dir.path();

    let run = kubectl(
        &kc,
        home,
        transport,
        &["exec", "p1", "--", "echo", "hello", "lab"],
        None,
    )
    .await?;
    ensure!(run.code == Some(0), "echo failed: {}", run.stderr);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "hello lab\n");

    // The container sees the caller's identity.
    let run = kubectl(
        &kc,
        home,
        transport,
        &["exec", "p1", "-c", "c", "--", "whoami"],
        None,
    )
    .await?;
    ensure!(run.code == Some(0), "whoami failed: {}", run.stderr);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "alice\n");

    // Non-zero exit: the Failure Status on the error stream becomes kubectl's exit code.
    let run = kubectl(&kc, home, transport, &["exec", "p1", "--", "false"], None).await?;
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("command terminated with exit code 1"),
        "stderr: {}",
        run.stderr
    );

    // Stdin given but the command does not read it.
    let run = kubectl(
        &kc,
        home,
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

    // A missing pod is kubectl's GET 404, before any upgrade.
    let run = kubectl(&kc, home, transport, &["exec", "nope", "--", "true"], None).await?;
    assert_ne!(run.code, Some(0));
    assert!(
        run.stderr.contains("pods \"nope\" not found"),
        "stderr: {}",
        run.stderr
    );

    let ups = api.upgrades();
    assert_eq!(ups.len(), 4);
    assert!(ups.iter().all(|u| u == transport.upgrade()), "{ups:?}");
    Ok(())
}

#[tokio::test]
async fn kubectl_exec_commands_and_exit_codes_over_websocket() -> Result<()> {
    commands(Transport::WebSocket).await
}

#[tokio::test]
async fn kubectl_exec_commands_and_exit_codes_over_spdy() -> Result<()> {
    commands(Transport::Spdy).await
}

#[tokio::test]
async fn kubectl_attach_echoes_stdin() -> Result<()> {
    let api = TestApi::start(true).await?;
    let kc = api.kubeconfig()?;
    for transport in [Transport::WebSocket, Transport::Spdy] {
        let run = kubectl(
            &kc,
            api.dir.path(),
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
    assert_eq!(api.upgrades(), vec!["websocket", "SPDY/3.1"]);
    Ok(())
}

// --- WebSocket framing, with a tokio-tungstenite client -------------------------------

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws_connect(api: &TestApi, query: &str, protocol: &str) -> Result<Ws> {
    let url = format!(
        "ws://{}/api/v1/namespaces/fx/pods/p1/exec?{query}",
        api.addr
    );
    let mut req = url.into_client_request()?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", protocol.parse()?);
    let tcp = TcpStream::connect(api.addr).await?;
    let (ws, resp) =
        tokio::time::timeout(patience(), tokio_tungstenite::client_async(req, tcp)).await??;
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
    ensure!(ws_next(ws).await?.is_none(), "data after close");
    Ok(())
}

#[tokio::test]
async fn websocket_v5_echoes_and_half_closes_stdin() -> Result<()> {
    let api = TestApi::start(false).await?;
    let mut ws = ws_connect(
        &api,
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
    let api = TestApi::start(false).await?;
    let mut ws = ws_connect(
        &api,
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
        &api,
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

// --- Bad input ---------------------------------------------------------------------------

/// One HTTP/1.1 request on a fresh plain connection; status, headers and body.
async fn http1(
    api: &TestApi,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, http::HeaderMap, serde_json::Value)> {
    let tcp = TcpStream::connect(api.addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "lab");
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
    let api = TestApi::start(false).await?;
    let exec = "/api/v1/namespaces/fx/pods/p1/exec?command=cat&stdin=true&stdout=true";

    // Not an upgrade at all.
    let (code, _, json) = http1(&api, "POST", exec, &[]).await?;
    assert_eq!(code, 400);
    assert_status(&json, 400, "BadRequest", "Upgrade request required");

    // Nothing to stream.
    let (code, _, json) = http1(
        &api,
        "POST",
        "/api/v1/namespaces/fx/pods/p1/exec?command=cat",
        &[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")],
    )
    .await?;
    assert_eq!(code, 400);
    assert_status(
        &json,
        400,
        "BadRequest",
        "at least 1 of stdin, stdout, stderr",
    );

    // No command.
    let (code, _, json) = http1(
        &api,
        "POST",
        "/api/v1/namespaces/fx/pods/p1/exec?stdout=true",
        &[("connection", "Upgrade"), ("upgrade", "SPDY/3.1")],
    )
    .await?;
    assert_eq!(code, 400);
    assert_status(&json, 400, "BadRequest", "at least one command");

    // SPDY without X-Stream-Protocol-Version, then with only unknown versions.
    let spdy = [("connection", "Upgrade"), ("upgrade", "SPDY/3.1")];
    let (code, _, json) = http1(&api, "POST", exec, &spdy).await?;
    assert_eq!(code, 400);
    assert_status(
        &json,
        400,
        "BadRequest",
        "X-Stream-Protocol-Version is required",
    );
    let mut h = spdy.to_vec();
    h.push(("x-stream-protocol-version", "v9.channel.k8s.io"));
    let (code, headers, json) = http1(&api, "POST", exec, &h).await?;
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
        &api,
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

    // HTTP/2 (prior knowledge) has no Upgrade: a clean 400, not a hang.
    let tcp = TcpStream::connect(api.addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{exec}", api.addr))
        .body(Empty::<Bytes>::new())?;
    let resp = tokio::time::timeout(patience(), sender.send_request(req)).await??;
    assert_eq!(resp.status(), 400);
    let body = resp.into_body().collect().await?.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    assert_status(&json, 400, "BadRequest", "Upgrade request required");
    Ok(())
}

/// Upgrade to SPDY by hand and return the raw connection after the 101.
async fn raw_spdy(api: &TestApi) -> Result<TcpStream> {
    let mut tcp = TcpStream::connect(api.addr).await?;
    tcp.write_all(
        b"POST /api/v1/namespaces/fx/pods/p1/exec?command=cat&stdin=true&stdout=true HTTP/1.1\r\n\
          Host: lab\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
          X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
    )
    .await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(patience(), tcp.read(&mut b)).await??;
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
    Ok(tcp)
}

/// Read until the server closes; what it sent.
async fn read_to_close(tcp: &mut TcpStream) -> Result<Vec<u8>> {
    let mut got = Vec::new();
    tokio::time::timeout(patience(), tcp.read_to_end(&mut got))
        .await
        .context("server did not close the connection")??;
    Ok(got)
}

#[tokio::test]
async fn spdy_garbage_closes_the_connection() -> Result<()> {
    let api = TestApi::start(false).await?;

    // A SPDY/2 control frame.
    let mut tcp = raw_spdy(&api).await?;
    tcp.write_all(b"\x80\x02\x00\x01\x00\x00\x00\x0a\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00")
        .await?;
    read_to_close(&mut tcp).await?;

    // A SYN_STREAM whose header block is not zlib.
    let mut tcp = raw_spdy(&api).await?;
    tcp.write_all(b"\x80\x03\x00\x01\x00\x00\x00\x0e\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00garb")
        .await?;
    read_to_close(&mut tcp).await?;

    // A frame announcing more than the size limit.
    let mut tcp = raw_spdy(&api).await?;
    tcp.write_all(b"\x00\x00\x00\x01\x00\xff\xff\xff").await?;
    read_to_close(&mut tcp).await?;
    Ok(())
}
