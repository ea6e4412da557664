//! The L7 front door behind real eBPF steering: `mvp run` with kubeadm's flag names steers
//! the node address into its listener, terminates TLS with the apiserver's cert and forwards
//! to the apiserver on loopback with front-proxy identity. Witnesses: curl in a client
//! namespace, and an HTTPS "apiserver" that echoes what reached it (headers, client cert CN).
//!
//! Needs root and `cargo build -p mvp-userspace` (the binary with the eBPF object).
use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use test_support::eventually::eventually;
use test_support::netns::{Netns, veth};
use test_support::{bins, require_root, trace};

const NODE_IP: &str = "198.18.0.1";
const CLIENT_IP: &str = "198.18.0.2";
const ADMIN: &str = "127.0.0.1:9464";

struct Issued {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(cn: &str) -> Issued {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("key");
    let cert = p.self_signed(&key).expect("self-signed");
    Issued { cert, key }
}

fn leaf(issuer: &Issued, cn: &str, org: Option<&str>, sans: &[&str], server: bool) -> Issued {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("params");
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    if let Some(o) = org {
        p.distinguished_name.push(DnType::OrganizationName, o);
    }
    p.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &issuer.cert, &issuer.key).expect("sign");
    Issued { cert, key }
}

/// kubeadm's /etc/kubernetes/pki, in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster = ca("kubernetes");
        let front_proxy = ca("front-proxy-ca");
        let write = |name: &str, i: &Issued| {
            std::fs::write(dir.path().join(format!("{name}.crt")), i.cert.pem()).expect("write");
            std::fs::write(
                dir.path().join(format!("{name}.key")),
                i.key.serialize_pem(),
            )
            .expect("write");
        };
        write("ca", &cluster);
        write("front-proxy-ca", &front_proxy);
        let sans = ["kubernetes.default.svc", "localhost", "127.0.0.1", NODE_IP];
        write(
            "apiserver",
            &leaf(&cluster, "kube-apiserver", None, &sans, true),
        );
        write(
            "front-proxy-client",
            &leaf(&front_proxy, "front-proxy-client", None, &[], false),
        );
        write(
            "admin",
            &leaf(
                &cluster,
                "kubernetes-admin",
                Some("system:masters"),
                &[],
                false,
            ),
        );
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

/// The apiserver stand-in on 0.0.0.0:6443 in the server namespace: HTTPS with the
/// apiserver cert, front-proxy client certs requested; echoes headers and peer CN.
async fn start_apiserver(ns: &Netns, pki: &Pki) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.path("front-proxy-ca.crt")).expect("pem") {
        roots.add(c.expect("cert")).expect("root");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .expect("verifier");
    let chain = CertificateDer::pem_file_iter(pki.path("apiserver.crt"))
        .expect("pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_file(pki.path("apiserver.key")).expect("key");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let std_listener = ns
        .run(|| std::net::TcpListener::bind("0.0.0.0:6443"))
        .expect("bind 6443");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
    tokio::spawn(async move {
        while let Ok((tcp, peer)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let peer_cn = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| {
                        let (_, x) = x509_parser::parse_x509_certificate(c.as_ref()).expect("x509");
                        let cn = x
                            .subject()
                            .iter_common_name()
                            .next()
                            .map(|a| a.as_str().unwrap_or("?").to_owned());
                        cn.unwrap_or_default()
                    })
                    .unwrap_or_else(|| "-".to_owned());
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        std::future::ready(Ok::<_, Infallible>(respond(&req, peer, &peer_cn)))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
}

type EchoBody = http_body_util::Either<
    Full<Bytes>,
    http_body_util::StreamBody<
        futures_util::stream::BoxStream<'static, Result<hyper::body::Frame<Bytes>, Infallible>>,
    >,
>;

/// `/big?bytes=N` streams N bytes; anything else echoes the request head and peer CN.
fn respond(
    req: &hyper::Request<hyper::body::Incoming>,
    peer: std::net::SocketAddr,
    peer_cn: &str,
) -> hyper::Response<EchoBody> {
    use futures_util::StreamExt;
    if req.uri().path() == "/big" {
        let n: u64 = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("bytes="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures_util::stream::unfold(n, move |left| {
            let chunk = chunk.clone();
            async move {
                (left > 0).then(|| {
                    let k = left.min(chunk.len() as u64);
                    (
                        Ok(hyper::body::Frame::data(chunk.slice(..k as usize))),
                        left - k,
                    )
                })
            }
        });
        return hyper::Response::new(http_body_util::Either::Right(
            http_body_util::StreamBody::new(stream.boxed()),
        ));
    }
    let mut out = format!("{} {}\ntcp-peer: {peer}\n", req.method(), req.uri().path());
    for (n, v) in req.headers() {
        out.push_str(&format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    out.push_str(&format!("peer-cn: {peer_cn}\n"));
    hyper::Response::new(http_body_util::Either::Left(Full::new(Bytes::from(out))))
}

struct Mvp {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Mvp {
    fn log_text(&self) -> String {
        let mut s = String::new();
        let _ = File::open(self.log.path()).and_then(|mut f| f.read_to_string(&mut s));
        s
    }
}

impl Drop for Mvp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- mvp log ---\n{}", self.log_text());
        }
    }
}

fn readyz(ns: &Netns) -> Result<(), String> {
    admin_get(ns, "/readyz").map(|_| ())
}

fn admin_get(ns: &Netns, path: &str) -> Result<String, String> {
    ns.run(|| {
        let mut s =
            TcpStream::connect_timeout(&ADMIN.parse().expect("addr"), Duration::from_secs(2))
                .map_err(|e| e.to_string())?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: mvp\r\n\r\n").map_err(|e| e.to_string())?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
        if resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200") {
            Ok(resp)
        } else {
            Err(resp)
        }
    })
}

/// mvp steering the node address into its listener.
fn start_mvp(server: &Netns, pki: &Pki) -> Mvp {
    start_mvp_with(server, pki, &["--steer", &format!("{NODE_IP}:6443")])
}

/// mvp with the front-door flags and `mode` (`--steer ...` or `--no-steer --listen ...`).
fn start_mvp_with(server: &Netns, pki: &Pki, mode: &[&str]) -> Mvp {
    let log = tempfile::NamedTempFile::new().expect("log");
    let p = |f: &str| pki.path(f);
    let child = Command::new(bins::mvp())
        .args(["run", "--log-format", "json", "--drain-timeout", "2"])
        .arg("--netns")
        .arg(server.path())
        .args(["--admin-address", ADMIN])
        .args(mode)
        .arg("--tls-cert-file")
        .arg(p("apiserver.crt"))
        .arg("--tls-private-key-file")
        .arg(p("apiserver.key"))
        .arg("--client-ca-file")
        .arg(p("ca.crt"))
        .arg("--requestheader-client-ca-file")
        .arg(p("front-proxy-ca.crt"))
        .args(["--requestheader-allowed-names", "front-proxy-client"])
        .args(["--requestheader-username-headers", "X-Remote-User"])
        .args(["--requestheader-group-headers", "X-Remote-Group"])
        .args(["--requestheader-extra-headers-prefix", "X-Remote-Extra-"])
        .arg("--proxy-client-cert-file")
        .arg(p("front-proxy-client.crt"))
        .arg("--proxy-client-key-file")
        .arg(p("front-proxy-client.key"))
        .args(["--secure-port", "6443"])
        // The upstream here is an echo server without discovery: mvp's first discovery
        // sync never succeeds, so do not hold readiness for it.
        .args(["--sync-deadline", "0"])
        .env("RUST_LOG", "mvp=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("reopen"))
        .spawn()
        .expect("spawn mvp");
    let mut mvp = Mvp { child, log };
    eventually("mvp to become ready", || {
        if let Ok(Some(status)) = mvp.child.try_wait() {
            panic!("mvp exited early with {status}:\n{}", mvp.log_text());
        }
        readyz(server)
    });
    mvp
}

/// curl from inside `ns`; returns (status line + echoed header lines as a map of lists).
async fn curl_in(
    ns: &Netns,
    pki: &Pki,
    cert: Option<&str>,
    url: &str,
) -> (String, HashMap<String, Vec<String>>) {
    let mut cmd = ns.command("curl");
    cmd.args(["-sS", "-i", "--max-time", "10", "--cacert"])
        .arg(pki.path("ca.crt"));
    if let Some(name) = cert {
        cmd.arg("--cert")
            .arg(pki.path(&format!("{name}.crt")))
            .arg("--key")
            .arg(pki.path(&format!("{name}.key")));
    }
    cmd.args([
        "-H",
        "X-Remote-User: mallory",
        "-H",
        "X-Remote-Group: system:masters",
        url,
    ]);
    let out = tokio::process::Command::from(cmd)
        .output()
        .await
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let mut echoed: HashMap<String, Vec<String>> = HashMap::new();
    for line in body.lines() {
        if let Some((k, v)) = line.split_once(": ") {
            echoed.entry(k.to_owned()).or_default().push(v.to_owned());
        }
    }
    (head.lines().next().unwrap_or_default().to_owned(), echoed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steered_clients_reach_the_apiserver_through_the_front_door_with_their_identity() {
    require_root!();
    trace::init();
    test_support::netns::cleanup_stale();
    let client = Netns::new().expect("client netns");
    let server = Netns::new().expect("server netns");
    veth(&server, "eth0", &client, "eth0").expect("veth");
    server
        .add_addr("eth0", &format!("{NODE_IP}/24"))
        .expect("addr");
    client
        .add_addr("eth0", &format!("{CLIENT_IP}/24"))
        .expect("addr");
    let pki = Pki::new();
    start_apiserver(&server, &pki).await;
    let mvp = start_mvp(&server, &pki);
    let url = format!("https://{NODE_IP}:6443/api/v1/namespaces");

    // x509 admin: front-proxy identity from the cert, spoofed headers gone, client IP kept.
    let (status, e) = curl_in(&client, &pki, Some("admin"), &url).await;
    assert!(status.contains(" 200"), "{status} {e:?}");
    assert_eq!(e["x-remote-user"], ["kubernetes-admin"], "{e:?}");
    assert_eq!(e["x-remote-group"], ["system:masters"], "{e:?}");
    assert_eq!(e["peer-cn"], ["front-proxy-client"], "{e:?}");
    assert_eq!(e["x-forwarded-for"], [CLIENT_IP], "{e:?}");
    assert!(
        e["tcp-peer"][0].starts_with("127.0.0.1:"),
        "upstream over loopback: {e:?}"
    );

    // Anonymous: no identity, no client cert upstream.
    let (status, e) = curl_in(&client, &pki, None, &url).await;
    assert!(status.contains(" 200"), "{status}");
    assert!(!e.contains_key("x-remote-user"), "{e:?}");
    assert_eq!(e["peer-cn"], ["-"], "{e:?}");
    assert_eq!(e["x-forwarded-for"], [CLIENT_IP], "{e:?}");

    // 200 MiB through the steered front door: mvp's own peak RSS must not follow the body.
    const SIZE: u64 = 200 << 20;
    let pid = mvp.child.id();
    let hwm_before = vm_kib(pid, "VmHWM:");
    let started = std::time::Instant::now();
    let mut cmd = client.command("curl");
    cmd.args([
        "-sS",
        "--http2",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        "--cacert",
    ])
    .arg(pki.path("ca.crt"))
    .arg("--cert")
    .arg(pki.path("admin.crt"))
    .arg("--key")
    .arg(pki.path("admin.key"))
    .arg(format!("https://{NODE_IP}:6443/big?bytes={SIZE}"));
    let out = tokio::process::Command::from(cmd)
        .output()
        .await
        .expect("curl");
    let elapsed = started.elapsed();
    let got: u64 = String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0);
    assert_eq!(got, SIZE, "{}", String::from_utf8_lossy(&out.stderr));
    let hwm_after = vm_kib(pid, "VmHWM:");
    println!(
        "mvp (debug build, steered, h2 both sides): 200 MiB in {elapsed:.2?} ({:.0} MiB/s); \
         mvp peak RSS {hwm_before} KiB -> {hwm_after} KiB (+{} KiB)",
        200.0 / elapsed.as_secs_f64(),
        hwm_after - hwm_before
    );
    assert!(hwm_after - hwm_before < 64 * 1024, "mvp buffered the body");

    let metrics = admin_get(&server, "/metrics").expect("metrics");
    for line in [
        "mvp_frontdoor_forwarded_requests_total{caller=\"x509\"} 2",
        "mvp_frontdoor_forwarded_requests_total{caller=\"anonymous\"} 1",
        "mvp_frontdoor_connections_total{result=\"established\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// `--no-steer`: no eBPF at all, the front door on its own port (what `cargo xtask bench`
/// runs). A client dialing that port gets the same front door: x509 identity forwarded as
/// front-proxy headers over mvp's front-proxy cert, spoofed headers gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_steer_serves_the_front_door_on_its_own_port() {
    require_root!();
    trace::init();
    test_support::netns::cleanup_stale();
    let server = Netns::new().expect("server netns");
    let pki = Pki::new();
    start_apiserver(&server, &pki).await;
    let mvp = start_mvp_with(&server, &pki, &["--no-steer", "--listen", "127.0.0.1:7443"]);
    let (status, e) = curl_in(
        &server,
        &pki,
        Some("admin"),
        "https://127.0.0.1:7443/api/v1/namespaces",
    )
    .await;
    assert!(
        status.contains(" 200"),
        "{status} {e:?}\n{}",
        mvp.log_text()
    );
    assert_eq!(e["x-remote-user"], ["kubernetes-admin"], "{e:?}");
    assert_eq!(e["x-remote-group"], ["system:masters"], "{e:?}");
    assert_eq!(e["peer-cn"], ["front-proxy-client"], "{e:?}");
    let metrics = admin_get(&server, "/metrics").expect("metrics");
    assert!(
        metrics.contains("mvp_frontdoor_forwarded_requests_total{caller=\"x509\"} 1"),
        "{metrics}"
    );
    // The apiserver's own port is not taken over: a request there never meets mvp (which
    // would add X-Forwarded-For and drop the caller's identity headers).
    let (status, e) = curl_in(
        &server,
        &pki,
        None,
        "https://127.0.0.1:6443/api/v1/namespaces",
    )
    .await;
    assert!(status.contains(" 200"), "{status}");
    assert!(
        !e.contains_key("x-forwarded-for"),
        "went through mvp: {e:?}"
    );
    assert_eq!(
        e["x-remote-user"],
        ["mallory"],
        "curl's own headers, unfiltered: {e:?}"
    );
}

fn vm_kib(pid: u32, field: &str) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("mvp status")
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field")
}
