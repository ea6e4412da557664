//! Make-before-break restarts of the L7 front door on a lab node, as a DaemonSet rolls
//! with maxSurge 1: the new instance B starts next to the old one A, becomes ready (its
//! listener in the SOCKMAP; the newest wins), then A gets SIGTERM (slot cleared, queued
//! connections taken, HTTP/1.1 closes after the current response, h2 gets GOAWAY, open
//! streams finish within --drain-timeout) and exits 0. Callers must not notice.
//!
//! Most tests give the two instances different `--admin-address`es so each one's readiness
//! and counters can be read on its own; the last test uses one address for both, as the
//! hostNetwork DaemonSet does: B runs without its admin endpoint until A has drained.
//!
//! Needs root and `cargo build -p mvp-userspace` (the binary with the eBPF object).
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use test_support::eventually::eventually;
use test_support::https::HttpsClient;
use test_support::lab::{LabCluster, LabProcess, LabSpec, NodeSpec};
use test_support::require_root;

const NODE: &str = "a";
const ADMIN_A: &str = "127.0.0.1:9464";
const ADMIN_B: &str = "127.0.0.1:9465";
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// `mvp run` as the node's L7 front door with kube-apiserver's flags (the node's kubeadm
/// PKI); only the admin address differs between instances (see the module doc).
fn start_front_door(lab: &LabCluster, log: &str, admin: &str) -> LabProcess {
    let n = lab.node(NODE).unwrap();
    let p = n.pki();
    let path = |p: std::path::PathBuf| p.display().to_string();
    let args = [
        "run".to_string(),
        "--log-format=json".into(),
        format!("--steer={}", n.addr()),
        format!("--admin-address={admin}"),
        "--drain-timeout=20".into(),
        format!("--tls-cert-file={}", path(p.apiserver_crt())),
        format!("--tls-private-key-file={}", path(p.apiserver_key())),
        format!("--client-ca-file={}", path(p.ca_crt())),
        format!(
            "--requestheader-client-ca-file={}",
            path(p.front_proxy_ca_crt())
        ),
        "--requestheader-allowed-names=front-proxy-client".into(),
        format!(
            "--proxy-client-cert-file={}",
            path(p.front_proxy_client_crt())
        ),
        format!(
            "--proxy-client-key-file={}",
            path(p.front_proxy_client_key())
        ),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.start_mvp(NODE, log, &args).unwrap()
}

fn wait_ready(lab: &LabCluster, mvp: &mut LabProcess, admin: &str) {
    let addr: SocketAddr = admin.parse().unwrap();
    eventually(&format!("mvp ({admin}) to be ready"), || {
        if let Err(e) = mvp.check_running() {
            panic!("{e}"); // exited: waiting longer cannot help
        }
        match lab.node_http_get(NODE, addr, "/readyz") {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(format!("/readyz: HTTP {status} {body}")),
            Err(e) => Err(e.to_string()),
        }
    });
}

/// Requests this instance forwarded (`mvp_frontdoor_forwarded_requests_total`, all callers).
fn forwarded(lab: &LabCluster, admin: &str) -> Result<u64, String> {
    let (status, metrics) = lab
        .node_http_get(NODE, admin.parse().unwrap(), "/metrics")
        .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("/metrics: HTTP {status}"));
    }
    Ok(metrics
        .lines()
        .filter(|l| l.starts_with("mvp_frontdoor_forwarded_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<u64>().ok())
        .sum())
}

fn sigterm(mvp: &LabProcess) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(mvp.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

fn wait_exit(mvp: &mut LabProcess) -> std::process::ExitStatus {
    eventually("the old instance to exit after draining", || {
        match mvp.exit_status() {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err("still running".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
}

fn lab() -> LabCluster {
    test_support::trace::init();
    LabCluster::start(LabSpec::new(vec![NodeSpec::v1_33(NODE)])).unwrap()
}

/// A caller looping new connections (TLS handshake + one GET each) from the client
/// namespace; counts successes and keeps every failure.
struct Caller {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Caller {
    fn start(lab: &LabCluster) -> Caller {
        let addr = lab.node(NODE).unwrap().addr();
        let cfg = client_config(lab, b"http/1.1");
        let ns = lab.client().path();
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, o, f) = (stop.clone(), ok.clone(), failures.clone());
        let thread = std::thread::spawn(move || {
            // This thread joins the client namespace for the whole loop.
            let file = std::fs::File::open(ns).unwrap();
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            while !s.load(Ordering::Relaxed) {
                match rt.block_on(get_once(&cfg, addr)) {
                    Ok(()) => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => f.lock().push(e),
                }
            }
        });
        Caller {
            stop,
            ok,
            failures,
            thread: Some(thread),
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Wait until `n` more requests succeeded.
    fn wait_more(&self, n: u64, what: &str) {
        let target = self.ok() + n;
        eventually(what, || {
            if self.ok() >= target {
                Ok(())
            } else {
                Err(format!(
                    "{} ok, failures: {:?}",
                    self.ok(),
                    self.failures.lock()
                ))
            }
        });
    }

    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (self.ok(), self.failures.lock().clone())
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A new TCP connection, TLS handshake and one HTTP/1.1 GET, as kubectl makes per call.
async fn get_once(cfg: &Arc<rustls::ClientConfig>, addr: SocketAddr) -> Result<(), String> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(cfg.clone())
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let resp = sender
            .send_request(get(CONFIGMAPS))
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        if status != 200 {
            return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        Ok(())
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "no answer in 30 s".to_string())?
}

#[test]
fn rolling_restart_loses_no_request() {
    require_root!();
    let lab = lab();
    let mut a = start_front_door(&lab, "mvp-a", ADMIN_A);
    wait_ready(&lab, &mut a, ADMIN_A);

    let caller = Caller::start(&lab);
    caller.wait_more(20, "requests through instance A");
    let via_a_before_b = forwarded(&lab, ADMIN_A).unwrap();
    assert!(via_a_before_b > 0, "A forwarded nothing:\n{}", a.log());

    // Surge: B starts next to A and takes the new connections once ready.
    let mut b = start_front_door(&lab, "mvp-b", ADMIN_B);
    wait_ready(&lab, &mut b, ADMIN_B);
    eventually("instance B to serve new connections", || {
        match forwarded(&lab, ADMIN_B) {
            Ok(n) if n > 0 => Ok(()),
            Ok(n) => Err(format!("B forwarded {n}")),
            Err(e) => Err(e),
        }
    });
    caller.wait_more(20, "requests while A and B both run");

    // Roll: SIGTERM the old instance while the caller keeps going.
    let via_a = forwarded(&lab, ADMIN_A).unwrap();
    sigterm(&a);
    let status = wait_exit(&mut a);
    assert!(status.success(), "A exited {status}:\n{}", a.log());
    let via_b_after_a = forwarded(&lab, ADMIN_B).unwrap();
    caller.wait_more(20, "requests after A exited");
    let via_b = forwarded(&lab, ADMIN_B).unwrap();
    let (ok, failures) = caller.finish();
    eprintln!(
        "rolling restart: {ok} requests on new connections, {} failed; A forwarded {via_a} \
         ({via_a_before_b} before B started), B forwarded {via_b} ({via_b_after_a} by the time \
         A had exited)",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "requests failed during the roll: {failures:#?}\nA:\n{}\nB:\n{}",
        a.log(),
        b.log()
    );
    assert!(via_b > via_b_after_a, "B did not serve after A exited");
    b.check_running().unwrap();
    let a_log = a.log();
    assert!(a_log.contains("clearing the listener slot"), "{a_log}");
}

fn client_config(lab: &LabCluster, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(lab.pki().ca_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let admin = lab.pki().admin();
    let chain = CertificateDer::pem_slice_iter(admin.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(admin.key_pem.as_bytes()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(cfg)
}

fn get(path: &str) -> hyper::Request<Empty<Bytes>> {
    hyper::Request::get(path)
        .header("accept", "application/json")
        .body(Empty::new())
        .unwrap()
}

#[test]
fn sigterm_sends_goaway_and_lets_an_open_watch_finish() {
    require_root!();
    let lab = lab();
    let addr = lab.node(NODE).unwrap().addr();
    let mut a = start_front_door(&lab, "mvp-a", ADMIN_A);
    wait_ready(&lab, &mut a, ADMIN_A);

    let cfg = client_config(&lab, b"h2");
    let client_ns = lab.client().path();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(move || {
            let file = std::fs::File::open(&client_ns).unwrap();
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        })
        .build()
        .unwrap();

    // One h2 connection through A: a request, then a watch left open.
    // Spawned, not block_on'd: only the runtime's workers live in the client namespace.
    let connect = rt.spawn(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap()
    });
    let (mut sender, conn) = rt.block_on(connect).unwrap();
    let conn = rt.spawn(conn);
    let first = rt.block_on(sender.send_request(get(CONFIGMAPS))).unwrap();
    assert_eq!(first.status(), 200);
    let via_a = forwarded(&lab, ADMIN_A).unwrap();
    assert!(via_a >= 1, "the h2 request did not go through A");
    let mut b = start_front_door(&lab, "mvp-b", ADMIN_B);
    wait_ready(&lab, &mut b, ADMIN_B);
    let watch = rt
        .block_on(sender.send_request(get(&format!("{CONFIGMAPS}?watch=1&timeoutSeconds=8"))))
        .unwrap();
    assert_eq!(watch.status(), 200);
    assert_eq!(
        forwarded(&lab, ADMIN_A).unwrap(),
        via_a + 1,
        "the watch did not go through A"
    );
    let watch_body = rt.spawn(async move { watch.into_body().collect().await });
    let signalled = std::time::Instant::now();
    sigterm(&a);

    // GOAWAY: the old connection takes no new streams while the watch still runs...
    let refused = eventually(
        "the h2 connection on A to refuse new streams (GOAWAY)",
        || {
            if watch_body.is_finished() {
                panic!("the watch ended before the connection refused new streams");
            }
            match rt.block_on(sender.send_request(get(CONFIGMAPS))) {
                Err(e) => Ok(e.to_string()),
                Ok(resp) => Err(format!("still accepted a stream: HTTP {}", resp.status())),
            }
        },
    );
    // ...while a new connection succeeds (B took A's place).
    let client = HttpsClient::new(&lab.pki().ca_pem(), Some(lab.pki().admin())).unwrap();
    let via_b = forwarded(&lab, ADMIN_B).unwrap();
    let fresh = client.get(lab.client(), addr, CONFIGMAPS).unwrap();
    assert_eq!(fresh.status, 200, "{}", fresh.text());
    assert_eq!(forwarded(&lab, ADMIN_B).unwrap(), via_b + 1);

    // The watch ends cleanly at its timeoutSeconds, then the connection closes gracefully.
    let body = rt.block_on(watch_body).unwrap();
    assert!(body.is_ok(), "watch through draining A: {body:?}");
    let closed = rt.block_on(conn).unwrap();
    assert!(
        closed.is_ok(),
        "h2 connection did not close cleanly: {closed:?}"
    );
    let status = wait_exit(&mut a);
    eprintln!(
        "drain: new stream on the old connection refused ({refused}); watch ended cleanly; \
         A exited {status} {:?} after SIGTERM",
        signalled.elapsed()
    );
    assert!(status.success(), "A exited {status}:\n{}", a.log());
    b.check_running().unwrap();
}

/// Without a successor (a plain stop, or maxSurge 0): SIGTERM clears the slot, new
/// connections reach the apiserver itself on the same address, and the connections A
/// accepted in its last moments are still answered.
#[test]
fn sigterm_without_a_successor_fails_open_without_losing_requests() {
    require_root!();
    let lab = lab();
    let mut a = start_front_door(&lab, "mvp-a", ADMIN_A);
    wait_ready(&lab, &mut a, ADMIN_A);
    let caller = Caller::start(&lab);
    caller.wait_more(20, "requests through instance A");
    let via_a = forwarded(&lab, ADMIN_A).unwrap();
    sigterm(&a);
    let status = wait_exit(&mut a);
    assert!(status.success(), "A exited {status}:\n{}", a.log());
    caller.wait_more(20, "requests straight to the apiserver after A exited");
    let (ok, failures) = caller.finish();
    eprintln!(
        "stop without successor: {ok} requests on new connections, {} failed; A forwarded \
         {via_a} before SIGTERM",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "requests failed while A stopped: {failures:#?}\nA:\n{}",
        a.log()
    );
}

/// The DaemonSet as shipped (hostNetwork, one admin address for every pod, maxSurge 1):
/// B starts while A still holds the admin address. B must not exit; it steers and serves
/// without its admin endpoint, and takes the address over once A has drained and exited.
#[test]
fn a_successor_on_the_same_admin_address_takes_it_over() {
    require_root!();
    let lab = lab();
    let mut a = start_front_door(&lab, "mvp-a", ADMIN_A);
    wait_ready(&lab, &mut a, ADMIN_A);
    let caller = Caller::start(&lab);
    caller.wait_more(10, "requests through instance A");
    let mut b = start_front_door(&lab, "mvp-b", ADMIN_A);
    eventually(
        "B to notice the admin address is busy and keep going",
        || {
            if let Err(e) = b.check_running() {
                panic!("B exited although only its admin address was busy: {e}");
            }
            if b.log().contains("admin address in use") {
                Ok(())
            } else {
                Err("no busy-admin line in B's log yet".to_string())
            }
        },
    );
    sigterm(&a);
    let status = wait_exit(&mut a);
    assert!(status.success(), "A exited {status}:\n{}", a.log());
    // A is gone: whatever answers the admin address now is B, and it is ready.
    wait_ready(&lab, &mut b, ADMIN_A);
    let via_b = eventually("B to forward requests", || match forwarded(&lab, ADMIN_A) {
        Ok(n) if n > 0 => Ok(n),
        Ok(_) => Err("B forwarded nothing yet".to_string()),
        Err(e) => Err(e),
    });
    caller.wait_more(10, "requests after the takeover");
    let (ok, failures) = caller.finish();
    eprintln!(
        "same admin address: {ok} requests on new connections, {} failed; B forwarded {via_b} \
         once it held the admin address",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "requests failed during the roll: {failures:#?}\nA:\n{}\nB:\n{}",
        a.log(),
        b.log()
    );
}
