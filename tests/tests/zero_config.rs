//! Zero-config on a real kernel: `mvp run` with no steering or TLS flags, next to a
//! kubeadm-shaped control plane (the fixture manifest rewritten to a generated PKI and this
//! namespace's address), steers the advertise address, serves it with the apiserver's own
//! cert, authenticates an x509 caller and forwards it with front-proxy identity — while
//! loopback still reaches the apiserver directly; `mvp status` reports on it.
//!
//! Topology: a "server" namespace (198.18.0.1 on eth0, a fake TLS kube-apiserver on
//! 0.0.0.0:6443, mvp) and a "client" namespace (198.18.0.2) joined by a veth pair.
//!
//! Needs root and `cargo build -p mvp-userspace` (the binary with the eBPF object).
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use test_support::eventually::eventually;
use test_support::netns::{Netns, veth};
use test_support::pki::Pki;
use test_support::{bins, require_root};

const SERVER_IP: &str = "198.18.0.1";
const ADMIN: &str = "127.0.0.1:9464";
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn roots(paths: &[&Path]) -> Arc<RootCertStore> {
    let mut r = RootCertStore::empty();
    for p in paths {
        for c in certs(p) {
            r.add(c).unwrap();
        }
    }
    Arc::new(r)
}

/// A fake kube-apiserver on 0.0.0.0:6443 in `ns`: answers every request with who it
/// authenticated — `direct <CN>` for a client cert from the client CA, `front-proxy
/// <X-Remote-User>` when the front-proxy cert carried the identity.
async fn fake_apiserver(ns: &Netns, pki: &Path) {
    let std_listener = ns.run(|| std::net::TcpListener::bind("0.0.0.0:6443").unwrap());
    std_listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        roots(&[&pki.join("ca.crt"), &pki.join("front-proxy-ca.crt")]),
        provider(),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&pki.join("apiserver.crt")),
            PrivateKeyDer::from_pem_file(pki.join("apiserver.key")).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let cn = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| {
                        let (_, x) = x509_parser::parse_x509_certificate(c).ok()?;
                        Some(
                            x.subject()
                                .iter_common_name()
                                .next()?
                                .as_str()
                                .ok()?
                                .to_owned(),
                        )
                    });
                let service = hyper::service::service_fn(move |req: Request<_>| {
                    let header = |n: &str| {
                        req.headers()
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned()
                    };
                    let who = match cn.as_deref() {
                        Some("front-proxy-client") => {
                            format!("front-proxy {}", header("x-remote-user"))
                        }
                        Some(cn) => format!("direct {cn}"),
                        None => "anonymous".to_owned(),
                    };
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(who)))) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
}

/// GET / as alice over TLS verified as kubernetes.default.svc, from inside `ns`.
async fn whoami(ns: &Netns, pki: &Path, addr: SocketAddr) -> Result<String, String> {
    let tcp = ns
        .run(|| TcpStream::connect_timeout(&addr, DIAL_TIMEOUT))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::from_std(tcp).map_err(|e| e.to_string())?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&[&pki.join("ca.crt")]))
        .with_client_auth_cert(
            certs(&pki.join("alice.crt")),
            PrivateKeyDer::from_pem_file(pki.join("alice.key")).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("kubernetes.default.svc").unwrap(), tcp)
        .await
        .map_err(|e| format!("TLS to {addr}: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = send
        .send_request(
            Request::get("/api")
                .header("host", "kubernetes.default.svc")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

fn readyz(ns: &Netns) -> Result<u16, String> {
    ns.run(|| {
        let mut s = TcpStream::connect_timeout(&ADMIN.parse().unwrap(), DIAL_TIMEOUT)
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(DIAL_TIMEOUT))
            .map_err(|e| e.to_string())?;
        write!(s, "GET /readyz HTTP/1.0\r\nHost: mvp\r\n\r\n").map_err(|e| e.to_string())?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
        resp.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or(resp)
    })
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_config_mvp_serves_the_advertise_address_as_the_apiserver() {
    require_root!();
    test_support::netns::cleanup_stale();
    let server = Netns::new().expect("server netns");
    let client = Netns::new().expect("client netns");
    veth(&server, "eth0", &client, "eth0").expect("veth");
    server
        .add_addr("eth0", &format!("{SERVER_IP}/24"))
        .expect("server addr");
    client
        .add_addr("eth0", "198.18.0.2/24")
        .expect("client addr");

    let tmp = tempfile::tempdir().expect("tempdir");
    // kubeadm's PKI layout, plus a user cert (alice, group devs) from the client CA.
    let cluster = Pki::generate(&tmp.path().join("cluster")).expect("pki");
    let node = cluster
        .write_node(
            "node1",
            &[SERVER_IP.parse().unwrap(), "127.0.0.1".parse().unwrap()],
        )
        .expect("node pki");
    let pki = node.dir().to_owned();
    cluster
        .client_cert("alice", &["devs"])
        .expect("alice")
        .write(&pki, "alice")
        .expect("write alice");
    // The real kubeadm manifest, pointed at this PKI and this node's address.
    let fixture = std::fs::read_to_string(bins::fixtures_dir().join("kubeadm/kube-apiserver.yaml"))
        .expect("kubeadm fixture");
    let manifest = tmp.path().join("kube-apiserver.yaml");
    std::fs::write(
        &manifest,
        fixture
            .replace("/etc/kubernetes/pki", pki.to_str().unwrap())
            .replace("192.168.56.11", SERVER_IP),
    )
    .unwrap();
    fake_apiserver(&server, &pki).await;

    let log_path = tmp.path().join("mvp.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // No --steer, no TLS flags: everything comes from the manifest.
    let _mvp = KillOnDrop(
        Command::new(bins::mvp())
            .args(["run", "--log-format", "json", "--admin-address", ADMIN])
            .arg("--netns")
            .arg(server.path())
            .arg("--apiserver-manifest")
            .arg(&manifest)
            .arg("--proc-root")
            .arg(tmp.path())
            // The fake apiserver has no discovery: mvp's first sync cannot succeed, so do
            // not hold readiness for it (the default waits 30 s).
            .args(["--sync-deadline", "0"])
            .env("RUST_LOG", "mvp=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mvp"),
    );
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    tokio::task::block_in_place(|| {
        eventually("mvp to become ready (/readyz 200)", || {
            match readyz(&server) {
                Ok(200) => Ok(()),
                Ok(code) => Err(format!("{code}")),
                Err(e) => Err(format!("{e}\n{}", log_text())),
            }
        })
    });
    let log = log_text();
    assert!(log.contains("detected kube-apiserver settings"), "{log}");
    assert!(log.contains("198.18.0.1:6443"), "{log}");

    // A remote caller on the advertise address reaches mvp: mvp presents the apiserver's
    // cert, authenticates alice by her client cert and forwards with front-proxy identity.
    let via_mvp = whoami(&client, &pki, format!("{SERVER_IP}:6443").parse().unwrap())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", log_text()));
    assert_eq!(via_mvp, "front-proxy alice", "{}", log_text());
    // Loopback is never steered: the apiserver authenticates alice itself.
    let direct = whoami(&server, &pki, "127.0.0.1:6443".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(direct, "direct alice");

    // `mvp status` sees the live daemon: ready, what it steers, the one request it
    // forwarded, and the lookup the program steered.
    let out = server
        .command(bins::mvp())
        .args(["status", "--output", "json", "--admin-address", ADMIN])
        .output()
        .expect("mvp status");
    assert!(out.status.success(), "{out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["steering"], serde_json::json!(["198.18.0.1:6443"]));
    assert_eq!(status["requests_by_route"]["local"], 1, "{status}");
    assert!(
        status["steering_counters"]["steered"].as_u64() >= Some(1),
        "{status}"
    );
}
