//! The admin endpoint: /healthz, /readyz (ready = listener in the SOCKMAP) and
//! /metrics (Prometheus text). Served on an address that is never steered.
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    let relay_rows = [
        ("accepted", &relay.accepted),
        ("refused_loop", &relay.refused_loop),
        ("upstream_failed", &relay.upstream_failed),
        ("completed", &relay.completed),
    ];
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
