//! The admin endpoint: /healthz, /readyz (ready = listener in the SOCKMAP),
//! /metrics (Prometheus text) and /status (JSON, [`StatusReport`], read by `mvp status`).
//! Served on an address that is never steered.
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub mod report;

pub use report::{STATUS_SCHEMA, ServerStatus, SkewRow, StatusReport};

use crate::relay::RelayStats;
use crate::steer::Counters;

/// What the admin endpoint reports on.
pub struct AdminState {
    /// Steering counters (summed over CPUs), if steering is loaded.
    pub counters: Box<dyn Fn() -> io::Result<Counters> + Send + Sync>,
    /// Readiness: mvp's listener is in the traffic path.
    pub ready: Box<dyn Fn() -> bool + Send + Sync>,
    /// Relay counters.
    pub relay: Arc<RelayStats>,
    /// Front-door counters, when the L7 front door serves the listener.
    pub front_door: Option<Arc<crate::frontdoor::FrontDoorStats>>,
    /// The brain (peers, discovery sync, rerouting), with the front door.
    pub brain: Option<crate::brain::BrainHandle>,
    /// The steered (address, port)s, for /status.
    pub steering: Vec<String>,
}

/// The /status document for the current state.
pub fn status_report(state: &AdminState) -> StatusReport {
    StatusReport {
        schema: STATUS_SCHEMA,
        mvp_version: env!("CARGO_PKG_VERSION").to_owned(),
        ready: (state.ready)(),
        steering: state.steering.clone(),
        steering_counters: match (state.counters)() {
            Ok(c) => c.iter().map(|(k, v)| (k.name().to_owned(), v)).collect(),
            Err(_) => Default::default(),
        },
        relay_connections: relay_rows(&state.relay)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.load(Ordering::Relaxed)))
            .collect(),
        requests_by_route: state
            .front_door
            .as_deref()
            .map(requests_by_route)
            .unwrap_or_default(),
        servers: state
            .brain
            .as_ref()
            .map(|b| {
                b.servers()
                    .into_iter()
                    .map(|s| report::ServerStatus {
                        name: s.id,
                        address: s.address.to_string(),
                        local: s.local,
                        version: s.version,
                        reachable: s.reachable,
                        discovery_age_seconds: s.discovery_age_seconds,
                        last_error: s.last_error,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        skew: state
            .brain
            .as_ref()
            .map(|b| {
                let sets = b.served_sets();
                let refs: Vec<(String, &crate::discovery::served::ServedSet)> =
                    sets.iter().map(|(n, s)| (n.clone(), s)).collect();
                report::skew_of(&refs)
            })
            .unwrap_or_default(),
    }
}

/// Requests by route from the front door's counters. Until routing lands every forwarded
/// request goes to the local apiserver; `mvp_<code>` are answers mvp wrote itself.
fn requests_by_route(
    fd: &crate::frontdoor::FrontDoorStats,
) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    out.insert(
        "local".to_owned(),
        fd.forwarded.iter().map(|c| c.load(Ordering::Relaxed)).sum(),
    );
    for (code, c) in crate::frontdoor::stats::CODES.iter().zip(&fd.answered) {
        out.insert(format!("mvp_{code}"), c.load(Ordering::Relaxed));
    }
    out
}

fn relay_rows(relay: &RelayStats) -> [(&'static str, &std::sync::atomic::AtomicU64); 4] {
    [
        ("accepted", &relay.accepted),
        ("refused_loop", &relay.refused_loop),
        ("upstream_failed", &relay.upstream_failed),
        ("completed", &relay.completed),
    ]
}

/// Prometheus text for the given values.
pub fn render_metrics(counters: &io::Result<Counters>, relay: &RelayStats, ready: bool) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(
        out,
        "# HELP mvp_steering_connections_total Socket lookups for steered ports, by outcome (from the sk_lookup program).\n# TYPE mvp_steering_connections_total counter"
    );
    match counters {
        Ok(c) => {
            for (counter, value) in c.iter() {
                let _ = writeln!(
                    out,
                    "mvp_steering_connections_total{{outcome=\"{}\"}} {value}",
                    counter.name()
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "# steering counters unavailable: {e}");
        }
    }
    let relay_rows = relay_rows(relay);
    let _ = writeln!(
        out,
        "# HELP mvp_relay_connections_total Connections handled by the L4 relay, by result.\n# TYPE mvp_relay_connections_total counter"
    );
    for (name, v) in relay_rows {
        let _ = writeln!(
            out,
            "mvp_relay_connections_total{{result=\"{name}\"}} {}",
            v.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP mvp_ready 1 while mvp's listener is in the SOCKMAP.\n# TYPE mvp_ready gauge\nmvp_ready {}",
        u8::from(ready)
    );
    out
}

fn respond(state: &AdminState, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (status, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" if (state.ready)() => (StatusCode::OK, "ready\n".to_string()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: listener not in the SOCKMAP\n".to_string(),
        ),
        "/metrics" => {
            let mut text = render_metrics(&(state.counters)(), &state.relay, (state.ready)());
            if let Some(front_door) = &state.front_door {
                front_door.render(&mut text);
            }
            if let Some(brain) = &state.brain {
                brain.render_metrics(&mut text);
            }
            (StatusCode::OK, text)
        }
        "/status" => {
            let mut body = serde_json::to_string(&status_report(state)).unwrap_or_default();
            body.push('\n');
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            return resp;
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

/// Serve until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin: accept failed");
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let resp = respond(&state, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %e, "admin: connection error");
            }
        });
    }
}

/// Why `mvp status` could not get a report.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Nothing answers at the admin address.
    #[error(
        "status: cannot reach mvp's admin endpoint at {addr}: is mvp running? (pass --admin-address if it listens elsewhere)"
    )]
    Connect {
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It answered, but not with a report.
    #[error(
        "status: {addr} did not return a status report ({why}); is it mvp's admin address, and is mvp as new as this client?"
    )]
    BadAnswer {
        /// Address.
        addr: SocketAddr,
        /// What was wrong.
        why: String,
    },
    /// No answer in time.
    #[error("status: no answer from {addr} within {timeout:?}")]
    Timeout {
        /// Address.
        addr: SocketAddr,
        /// Budget.
        timeout: Duration,
    },
    /// The async runtime could not start.
    #[error("status: cannot start the async runtime")]
    Runtime(#[source] io::Error),
}

/// GET /status from a running mvp.
pub async fn fetch_status(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<StatusReport, StatusError> {
    let bad = |why: String| StatusError::BadAnswer { addr, why };
    let work = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| StatusError::Connect { addr, source })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| bad(e.to_string()))?;
        let conn = tokio::spawn(conn);
        let req = Request::get("/status")
            .header(http::header::HOST, addr.to_string())
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| bad(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| bad(e.to_string()))?;
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            resp.into_body(),
            16 << 20,
        ))
        .await
        .map_err(|e| bad(e.to_string()))?
        .to_bytes();
        conn.abort();
        if status != StatusCode::OK {
            return Err(bad(format!("HTTP {status}")));
        }
        serde_json::from_slice::<StatusReport>(&body).map_err(|e| bad(e.to_string()))
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(StatusError::Timeout { addr, timeout }))
}

/// `mvp status`: the rendered report.
pub fn run_status_cli(args: &crate::cli::StatusArgs) -> Result<String, StatusError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(StatusError::Runtime)?;
    let report = rt.block_on(fetch_status(
        args.admin_address,
        Duration::from_secs(args.timeout.max(1)),
    ))?;
    Ok(match args.output {
        crate::cli::OutputFormat::Text => report.render_text(),
        crate::cli::OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(&report).unwrap_or_default();
            s.push('\n');
            s
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_name_every_outcome() {
        let relay = RelayStats::default();
        relay.accepted.store(3, Ordering::Relaxed);
        let text = render_metrics(&Ok(Counters::from_values([1, 2, 3, 4, 5])), &relay, true);
        for line in [
            "mvp_steering_connections_total{outcome=\"steered\"} 1",
            "mvp_steering_connections_total{outcome=\"bypassed\"} 2",
            "mvp_steering_connections_total{outcome=\"no_listener\"} 3",
            "mvp_steering_connections_total{outcome=\"assign_error\"} 4",
            "mvp_steering_connections_total{outcome=\"not_matched\"} 5",
            "mvp_relay_connections_total{result=\"accepted\"} 3",
            "mvp_ready 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[tokio::test]
    async fn status_endpoint_serves_the_live_state_to_the_client() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let relay = Arc::new(RelayStats::default());
        relay.completed.store(9, Ordering::Relaxed);
        let state = Arc::new(AdminState {
            brain: None,
            counters: Box::new(|| Ok(Counters::from_values([4, 0, 1, 0, 2]))),
            ready: Box::new({
                let r = ready.clone();
                move || r.load(Ordering::SeqCst)
            }),
            relay,
            front_door: Some({
                let fd = Arc::new(crate::frontdoor::FrontDoorStats::default());
                fd.forwarded(&crate::identity::CallerIdentity::Bearer);
                fd.forwarded(&crate::identity::CallerIdentity::Anonymous);
                fd.answered(503);
                fd
            }),
            steering: vec!["192.168.56.11:6443".into()],
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, state, stop.clone()));
        let timeout = Duration::from_secs(10);

        let r = fetch_status(addr, timeout).await.unwrap();
        assert_eq!(r.schema, STATUS_SCHEMA);
        assert!(!r.ready);
        assert_eq!(r.steering, ["192.168.56.11:6443"]);
        assert_eq!(r.steering_counters["steered"], 4);
        assert_eq!(r.steering_counters["not_matched"], 2);
        assert_eq!(r.relay_connections["completed"], 9);
        assert_eq!(r.requests_by_route["local"], 2);
        assert_eq!(r.requests_by_route["mvp_503"], 1);
        ready.store(true, Ordering::SeqCst);
        assert!(fetch_status(addr, timeout).await.unwrap().ready);

        stop.cancel();
        task.await.unwrap();
        let e = fetch_status(addr, timeout).await.unwrap_err().to_string();
        assert!(e.contains("is mvp running?"), "{e}");
    }

    #[test]
    fn unavailable_counters_are_a_comment_not_a_lie() {
        let text = render_metrics(
            &Err(io::Error::other("gone")),
            &RelayStats::default(),
            false,
        );
        assert!(!text.contains("outcome="));
        assert!(text.contains("mvp_ready 0"));
    }
}
