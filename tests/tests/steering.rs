//! Kernel-backed steering tests: the real sk_lookup program in fresh network
//! namespaces, `mvp run` as a child process, name-echo servers to prove which socket
//! got each connection.
//!
//! Topology per test: a "server" namespace (198.18.0.1 and .3, fd00:6d76:70::1 and ::3,
//! a name-echo "apiserver" on *:6443, mvp steering <server>:6443) and a "client"
//! namespace (198.18.0.2, fd00:6d76:70::2) joined by a veth pair.
//!
//! A reply whose `seen_peer` is the dialling socket itself went straight to the
//! apiserver; a reply seen from loopback was relayed by mvp (its upstream sockets to
//! addresses of the node bind loopback, which every mvp program bypasses).
//!
//! Needs root and `cargo build -p mvp-userspace` (the binary with the eBPF object).
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use test_support::echo::{self, EchoServer, Reply};
use test_support::eventually::eventually;
use test_support::netns::{Netns, veth};
use test_support::{bins, require_root, trace};

const PORT: u16 = 6443;
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
}

impl Fam {
    fn ip(self, host: u8) -> IpAddr {
        match self {
            Fam::V4 => IpAddr::from([198, 18, 0, host]),
            Fam::V6 => IpAddr::from([0xfd00, 0x6d76, 0x70, 0, 0, 0, 0, u16::from(host)]),
        }
    }
    fn server(self) -> SocketAddr {
        SocketAddr::new(self.ip(1), PORT)
    }
    fn other(self) -> SocketAddr {
        SocketAddr::new(self.ip(3), PORT)
    }
    fn loopback(self) -> SocketAddr {
        match self {
            Fam::V4 => SocketAddr::from(([127, 0, 0, 1], PORT)),
            Fam::V6 => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, PORT)),
        }
    }
    fn wildcard(self, port: u16) -> String {
        match self {
            Fam::V4 => format!("0.0.0.0:{port}"),
            Fam::V6 => format!("[::]:{port}"),
        }
    }
}

struct Topo {
    client: Netns,
    server: Netns,
}

impl Topo {
    fn new() -> Topo {
        test_support::netns::cleanup_stale();
        let client = Netns::new().expect("client netns");
        let server = Netns::new().expect("server netns");
        veth(&server, "eth0", &client, "eth0").expect("veth");
        for fam in [Fam::V4, Fam::V6] {
            let len = match fam {
                Fam::V4 => 24,
                Fam::V6 => 64,
            };
            for host in [1, 3] {
                server
                    .add_addr("eth0", &format!("{}/{len}", fam.ip(host)))
                    .expect("server addr");
            }
            client
                .add_addr("eth0", &format!("{}/{len}", fam.ip(2)))
                .expect("client addr");
        }
        Topo { client, server }
    }

    /// The apiserver stand-in: a name-echo server on the wildcard address, port 6443.
    fn apiserver(&self, fam: Fam) -> EchoServer {
        EchoServer::start(&self.server, &fam.wildcard(PORT), "apiserver").expect("apiserver")
    }

    fn dial_from_client(&self, addr: SocketAddr) -> Reply {
        echo::dial_in(&self.client, addr, DIAL_TIMEOUT)
            .unwrap_or_else(|e| panic!("dial {addr} from the client namespace: {e}"))
    }
}

/// A running `mvp run`, killed on drop.
struct Mvp {
    child: Child,
    admin: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl Mvp {
    fn start(server: &Netns, steer: &[SocketAddr], admin_port: u16) -> Mvp {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let mut cmd = Command::new(bins::mvp());
        cmd.args(["run", "--log-format", "json", "--drain-timeout", "5"])
            .arg("--netns")
            .arg(server.path())
            .arg("--admin-address")
            .arg(admin.to_string())
            .arg("--steer")
            .args(steer.iter().map(|s| s.to_string()))
            .env("RUST_LOG", "mvp=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("reopen log"));
        let child = cmd.spawn().expect("spawn mvp");
        let mut mvp = Mvp { child, admin, log };
        eventually("mvp to become ready (/readyz 200)", || {
            if let Ok(Some(status)) = mvp.child.try_wait() {
                panic!("mvp exited early with {status}:\n{}", mvp.log_text());
            }
            match http_get(server, mvp.admin, "/readyz") {
                Ok((200, _)) => Ok(()),
                Ok((code, body)) => Err(format!("{code} {body}")),
                Err(e) => Err(e.to_string()),
            }
        });
        mvp
    }

    fn log_text(&self) -> String {
        let mut s = String::new();
        let _ = File::open(self.log.path()).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    /// Counters from /metrics: `outcome` labels and `relay_<result>` keys.
    fn metrics(&self, server: &Netns) -> HashMap<String, u64> {
        let (code, body) = http_get(server, self.admin, "/metrics").expect("GET /metrics");
        assert_eq!(code, 200, "{body}");
        let mut out = HashMap::new();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: u64 = value.parse().expect("metric value");
            if let Some(rest) = key.strip_prefix("mvp_steering_connections_total{outcome=\"") {
                out.insert(rest.trim_end_matches("\"}").to_string(), value);
            } else if let Some(rest) = key.strip_prefix("mvp_relay_connections_total{result=\"") {
                out.insert(format!("relay_{}", rest.trim_end_matches("\"}")), value);
            }
        }
        out
    }

    /// Assert the steering counters (and relay `accepted`) exactly.
    fn assert_counts(&self, server: &Netns, steered: u64, bypassed: u64, not_matched: u64) {
        let m = self.metrics(server);
        let got = |k: &str| {
            *m.get(k)
                .unwrap_or_else(|| panic!("metric {k} missing: {m:?}"))
        };
        assert_eq!(
            (
                got("steered"),
                got("bypassed"),
                got("not_matched"),
                got("no_listener"),
                got("assign_error"),
                got("relay_accepted"),
                got("relay_refused_loop"),
            ),
            (steered, bypassed, not_matched, 0, 0, steered, 0),
            "(steered, bypassed, not_matched, no_listener, assign_error, relay accepted, relay refused_loop); metrics: {m:?}"
        );
    }

    fn kill9(&mut self) {
        self.child.kill().expect("kill -9 mvp");
        self.child.wait().expect("reap mvp");
    }

    fn send(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid")),
            signal,
        )
        .expect("signal mvp");
    }

    fn send_sigterm(&self) {
        self.send(nix::sys::signal::Signal::SIGTERM);
    }

    /// Stop with `signal` and wait for the exit status.
    fn stop_with(&mut self, signal: nix::sys::signal::Signal) -> ExitStatus {
        self.send(signal);
        self.child.wait().expect("wait for mvp")
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

/// A minimal HTTP/1.0 GET from inside `ns`.
fn http_get(ns: &Netns, addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    ns.run(|| {
        let mut s = TcpStream::connect_timeout(&addr, DIAL_TIMEOUT)?;
        s.set_read_timeout(Some(DIAL_TIMEOUT))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: mvp\r\n\r\n")?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let code = resp
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        Ok((code, body.to_string()))
    })
}

/// The reply came through mvp: the apiserver saw mvp's upstream socket (bound to
/// loopback of the family), not the dialling socket.
fn assert_relayed(r: &Reply, fam: Fam) {
    assert_eq!(r.name, "apiserver", "{r:?}");
    assert!(!r.is_direct(), "expected a relayed connection: {r:?}");
    assert_eq!(r.seen_peer.ip(), fam.loopback().ip(), "{r:?}");
}

fn assert_direct(r: &Reply, name: &str) {
    assert_eq!(r.name, name, "{r:?}");
    assert!(r.is_direct(), "expected the connection untouched: {r:?}");
}

/// mvp logged the client and the original destination for this connection.
fn assert_logged_relay(mvp: &Mvp, client: SocketAddr, orig_dst: SocketAddr) {
    eventually("mvp's debug line for the relayed connection", || {
        let text = mvp.log_text();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| {
                let f = &v["fields"];
                f["message"] == "relaying steered connection"
                    && f["client"] == client.to_string()
                    && f["original_dst"] == orig_dst.to_string()
            });
        if found {
            Ok(())
        } else {
            Err(format!(
                "no line with client={client} original_dst={orig_dst} in:\n{text}"
            ))
        }
    });
}

// 1 (+6): a steered connection reaches mvp, which sees the original destination as
// its accepted socket's local address and relays to it.
fn steered_connection_reaches_mvp(fam: Fam) {
    trace::init();
    let t = Topo::new();
    let api = t.apiserver(fam);
    let mvp = Mvp::start(&t.server, &[fam.server()], 9464);

    let r = t.dial_from_client(fam.server());
    assert_relayed(&r, fam);
    assert_logged_relay(&mvp, r.local, fam.server());
    assert_eq!(api.accepted(), 1);
    mvp.assert_counts(&t.server, 1, 1, 0);

    // A client on the node itself (kubelet dialling the node address) is steered too:
    // its source is the node address, not loopback.
    let local = echo::dial_in(&t.server, fam.server(), DIAL_TIMEOUT).expect("dial on the node");
    assert_eq!(local.local.ip(), fam.server().ip(), "{local:?}");
    assert_relayed(&local, fam);
    assert_logged_relay(&mvp, local.local, fam.server());
    assert_eq!(api.accepted(), 2);
    mvp.assert_counts(&t.server, 2, 2, 0);
}

// One instance steering both families: each goes to its family's listener slot.
#[test]
fn dual_stack_instance_steers_both_families() {
    require_root!();
    trace::init();
    let t = Topo::new();
    let _api4 = t.apiserver(Fam::V4);
    let _api6 = t.apiserver(Fam::V6);
    let mvp = Mvp::start(&t.server, &[Fam::V4.server(), Fam::V6.server()], 9464);
    for fam in [Fam::V4, Fam::V6, Fam::V4] {
        let r = t.dial_from_client(fam.server());
        assert_relayed(&r, fam);
        assert_logged_relay(&mvp, r.local, fam.server());
    }
    mvp.assert_counts(&t.server, 3, 3, 0);
}

#[test]
fn steered_connection_reaches_mvp_v4() {
    require_root!();
    steered_connection_reaches_mvp(Fam::V4);
}

#[test]
fn steered_connection_reaches_mvp_v6() {
    require_root!();
    steered_connection_reaches_mvp(Fam::V6);
}

// 2: other ports, other addresses on the steered port, and loopback pass untouched.
fn unsteered_traffic_passes_untouched(fam: Fam) {
    trace::init();
    let t = Topo::new();
    let _api = t.apiserver(fam);
    let _other = EchoServer::start(&t.server, &fam.wildcard(8080), "other").expect("other");
    let mvp = Mvp::start(&t.server, &[fam.server()], 9464);

    let mut other_port = fam.server();
    other_port.set_port(8080);
    assert_direct(&t.dial_from_client(other_port), "other");
    assert_direct(&t.dial_from_client(fam.other()), "apiserver");
    let lo = echo::dial_in(&t.server, fam.loopback(), DIAL_TIMEOUT).expect("dial loopback");
    assert_direct(&lo, "apiserver");
    // Not counted: another port. not_matched: other address and loopback on 6443.
    mvp.assert_counts(&t.server, 0, 0, 2);
}

#[test]
fn unsteered_traffic_passes_untouched_v4() {
    require_root!();
    unsteered_traffic_passes_untouched(Fam::V4);
}

#[test]
fn unsteered_traffic_passes_untouched_v6() {
    require_root!();
    unsteered_traffic_passes_untouched(Fam::V6);
}

// 3: mvp's own upstream connection to the steered address is bypassed and reaches the
// real listener: one apiserver connection per client connection, no loop.
#[test]
fn own_upstream_connections_are_bypassed() {
    require_root!();
    trace::init();
    let fam = Fam::V4;
    let t = Topo::new();
    let api = t.apiserver(fam);
    let mvp = Mvp::start(&t.server, &[fam.server()], 9464);
    const N: u64 = 5;
    for _ in 0..N {
        assert_relayed(&t.dial_from_client(fam.server()), fam);
    }
    assert_eq!(api.accepted(), N);
    mvp.assert_counts(&t.server, N, N, 0);
}

// 4 (+6): kill -9 while a client keeps opening connections: everything opened after
// the kill reaches the apiserver directly.
fn kill_9_fails_open(fam: Fam) {
    trace::init();
    let t = Topo::new();
    let _api = t.apiserver(fam);
    let mut mvp = Mvp::start(&t.server, &[fam.server()], 9464);

    struct Attempt {
        after_kill: bool,
        outcome: Result<Reply, String>,
    }
    let attempts = Mutex::new(Vec::<Attempt>::new());
    let killed = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let count = |pred: &dyn Fn(&Attempt) -> bool| {
        attempts
            .lock()
            .map(|a| a.iter().filter(|x| pred(x)).count())
            .unwrap_or(0)
    };

    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| {
            t.client.run(|| {
                while !stop.load(Ordering::SeqCst) {
                    let after_kill = killed.load(Ordering::SeqCst);
                    let outcome = echo::dial(fam.server(), DIAL_TIMEOUT).map_err(|e| e.to_string());
                    if let Ok(mut a) = attempts.lock() {
                        a.push(Attempt {
                            after_kill,
                            outcome,
                        });
                    }
                }
            })
        });
        eventually("20 connections relayed by mvp before the kill", || {
            let n = count(&|a| a.outcome.as_ref().is_ok_and(|r| !r.is_direct()));
            if n >= 20 {
                Ok(())
            } else {
                Err(format!("{n} so far"))
            }
        });
        mvp.kill9();
        killed.store(true, Ordering::SeqCst);
        eventually("50 connections opened after the kill", || {
            let n = count(&|a| a.after_kill);
            if n >= 50 {
                Ok(())
            } else {
                Err(format!("{n} so far"))
            }
        });
    });

    let attempts = attempts.into_inner().expect("attempts");
    let before: Vec<_> = attempts.iter().filter(|a| !a.after_kill).collect();
    let after: Vec<_> = attempts.iter().filter(|a| a.after_kill).collect();
    let relayed_before = before
        .iter()
        .filter(|a| a.outcome.as_ref().is_ok_and(|r| !r.is_direct()))
        .count();
    let failed_around: Vec<_> = before
        .iter()
        .filter_map(|a| a.outcome.as_ref().err())
        .collect();
    let after_direct = after
        .iter()
        .filter(|a| {
            a.outcome
                .as_ref()
                .is_ok_and(|r| r.is_direct() && r.name == "apiserver")
        })
        .count();
    eprintln!(
        "kill -9 summary ({fam:?}): {} connections opened before kill -9 returned ({relayed_before} relayed by mvp, {} direct, {} failed around the kill{}); {} opened after the kill: {after_direct} reached the apiserver directly, {} failed",
        before.len(),
        before.len() - relayed_before - failed_around.len(),
        failed_around.len(),
        failed_around
            .first()
            .map(|e| format!(", e.g. {e}"))
            .unwrap_or_default(),
        after.len(),
        after.len() - after_direct,
    );
    for a in &after {
        match &a.outcome {
            Ok(r) => assert_direct(r, "apiserver"),
            Err(e) => panic!("a connection opened after the kill failed: {e}"),
        }
    }
}

#[test]
fn kill_9_fails_open_v4() {
    require_root!();
    kill_9_fails_open(Fam::V4);
}

#[test]
fn kill_9_fails_open_v6() {
    require_root!();
    kill_9_fails_open(Fam::V6);
}

// 5: a graceful stop (SIGINT here; SIGTERM in the drain test) exits 0 and fails
// open; a restart resumes steering.
#[test]
fn restart_resumes_steering() {
    require_root!();
    trace::init();
    let fam = Fam::V4;
    let t = Topo::new();
    let _api = t.apiserver(fam);

    let mut first = Mvp::start(&t.server, &[fam.server()], 9464);
    assert_relayed(&t.dial_from_client(fam.server()), fam);
    first.assert_counts(&t.server, 1, 1, 0);
    let status = first.stop_with(nix::sys::signal::Signal::SIGINT);
    assert!(
        status.success(),
        "SIGINT must exit 0, got {status}:\n{}",
        first.log_text()
    );

    assert_direct(&t.dial_from_client(fam.server()), "apiserver");

    let second = Mvp::start(&t.server, &[fam.server()], 9464);
    assert_relayed(&t.dial_from_client(fam.server()), fam);
    second.assert_counts(&t.server, 1, 1, 0);
}

// 5: two overlapping instances: the newer gets the connections; when it dies the
// older one (still ready) takes over again.
#[test]
fn newest_overlapping_instance_wins() {
    require_root!();
    trace::init();
    let fam = Fam::V4;
    let t = Topo::new();
    let _api = t.apiserver(fam);

    let older = Mvp::start(&t.server, &[fam.server()], 9464);
    let mut newer = Mvp::start(&t.server, &[fam.server()], 9465);
    const N: u64 = 3;
    for _ in 0..N {
        assert_relayed(&t.dial_from_client(fam.server()), fam);
    }
    // The newer instance relayed every connection; its upstreams (loopback source)
    // were bypassed by both programs.
    newer.assert_counts(&t.server, N, N, 0);
    let relay_accepted = |m: &Mvp| m.metrics(&t.server)["relay_accepted"];
    assert_eq!(
        relay_accepted(&older),
        0,
        "the older instance got connections"
    );

    newer.kill9();
    assert_relayed(&t.dial_from_client(fam.server()), fam);
    assert_eq!(relay_accepted(&older), 1);
}

// Userspace refuses a loopback steer target with one clear line (no privileges needed).
#[test]
fn loopback_steer_target_is_refused() {
    let out = Command::new(bins::mvp())
        .args(["run", "--steer", "127.0.0.1:6443"])
        .output()
        .expect("run mvp");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

// Without privileges, `mvp run` says so in one line (no panic, no backtrace).
#[test]
fn unprivileged_run_fails_with_one_actionable_line() {
    require_root!();
    let t = Topo::new();
    // setpriv drops to nobody with no capabilities; the namespace gives a free admin port.
    let out = t
        .server
        .command("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(bins::mvp())
        .args(["run", "--steer", "198.18.0.1:6443"])
        .output()
        .expect("run setpriv mvp");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("mvp: error: steer:"), "{err}");
    assert!(lines[0].contains("run mvp as root"), "{err}");
}

// SIGTERM: the slot is cleared first (new connections go straight to the apiserver,
// /readyz turns 503) while an in-flight relayed connection keeps working; mvp exits 0
// once it is done.
#[test]
fn sigterm_clears_the_slot_then_drains() {
    require_root!();
    trace::init();
    let fam = Fam::V4;
    let t = Topo::new();
    let _api =
        EchoServer::start_echoing(&t.server, &fam.wildcard(PORT), "apiserver").expect("apiserver");
    let mut mvp = Mvp::start(&t.server, &[fam.server()], 9464);

    let (reply, mut held) = t
        .client
        .run(|| echo::dial_keep(fam.server(), DIAL_TIMEOUT))
        .expect("dial held connection");
    assert_relayed(&reply, fam);

    mvp.send_sigterm();
    eventually("/readyz to turn 503 while draining", || {
        match http_get(&t.server, mvp.admin, "/readyz") {
            Ok((503, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let (fresh, fresh_conn) = t
        .client
        .run(|| echo::dial_keep(fam.server(), DIAL_TIMEOUT))
        .expect("dial during drain");
    assert_direct(&fresh, "apiserver");
    drop(fresh_conn);
    // The program is still attached while draining: the fresh SYN found the slot
    // empty and passed (fail-open), and that is counted.
    let m = mvp.metrics(&t.server);
    assert_eq!(
        (
            m["steered"],
            m["bypassed"],
            m["no_listener"],
            m["assign_error"],
            m["not_matched"]
        ),
        (1, 1, 1, 0, 0),
        "{m:?}"
    );

    // Past the accept grace, mvp waits for the held connection...
    eventually(
        "mvp to report one in-flight connection while draining",
        || {
            let text = mvp.log_text();
            let draining = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|v| v["fields"]["message"] == "draining" && v["fields"]["in_flight"] == 1);
            if draining { Ok(()) } else { Err(text) }
        },
    );
    // ...which still relays both ways.
    held.write_all(b"ping\n")
        .expect("write through draining mvp");
    let mut buf = [0u8; 5];
    held.read_exact(&mut buf)
        .expect("echo through draining mvp");
    assert_eq!(&buf, b"ping\n");
    assert!(
        mvp.child.try_wait().expect("try_wait").is_none(),
        "mvp exited before its in-flight connection finished"
    );

    drop(held);
    let status = eventually("mvp to exit after draining", || {
        match mvp.child.try_wait() {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err("still running".to_string()),
            Err(e) => Err(e.to_string()),
        }
    });
    assert!(status.success(), "exit {status}:\n{}", mvp.log_text());
}

// The tuple mechanism on its own (in-process, through the library): a socket bound to
// a non-loopback source is steered unless its tuple was registered first.
#[test]
fn registered_upstream_tuple_is_bypassed() {
    use mvp::addr::UpstreamAddr;
    use mvp::steer::{
        BypassConnector, ListenerSource, SteeredListeners, Steering, UpstreamConnector,
    };
    use mvp_common::Counter;
    use tokio::io::AsyncReadExt;

    require_root!();
    trace::init();
    let t = Topo::new();
    for fam in [Fam::V4, Fam::V6] {
        let _api = t.apiserver(fam);
        let (control, bypassed, counters) = t.server.run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let steering = Steering::load(&[fam.server()], &t.server.path()).expect("load");
                let handle = steering.handle();
                let source = SteeredListeners::new(handle.clone());
                let lo = SocketAddr::new(fam.loopback().ip(), 0);
                let listeners = source.bind(&[lo]).expect("bind");
                source.activate(&listeners).expect("activate");

                // Control: same source address, not registered → steered to our listener.
                let plain = tokio::net::TcpStream::connect(fam.server())
                    .await
                    .expect("control connect");
                let (_, control_peer) = listeners[0].accept().await.expect("accept control");
                assert_eq!(control_peer, plain.local_addr().expect("local"));

                let connector = BypassConnector::with_source(handle.clone(), fam.server().ip());
                let mut up = connector
                    .connect(UpstreamAddr::new(fam.server()))
                    .await
                    .expect("bypassed connect");
                let mut line = String::new();
                let mut byte = [0u8; 1];
                while up.read(&mut byte).await.expect("read") == 1 && byte[0] != b'\n' {
                    line.push(char::from(byte[0]));
                }
                let local = up.local_addr();
                let counters = handle.counters().expect("counters");
                (
                    control_peer,
                    (line, local),
                    [
                        counters.get(Counter::Steered),
                        counters.get(Counter::Bypassed),
                    ],
                )
            })
        });
        assert_eq!(control.ip(), fam.server().ip());
        let (line, local) = bypassed;
        assert!(!local.ip().is_loopback(), "{local}");
        assert_eq!(line, format!("apiserver {local}"), "{fam:?}");
        assert_eq!(counters, [1, 1], "{fam:?}: [steered, bypassed]");
    }
}
