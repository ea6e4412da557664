//! Front-door counters for the admin endpoint (`/metrics`). Relaxed atomic increments only.
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::identity::CallerIdentity;

/// What the front door did, by outcome.
#[derive(Debug, Default)]
pub struct FrontDoorStats {
    /// Connections that completed the TLS handshake.
    pub connections: AtomicU64,
    /// Connections that failed or timed out in the TLS handshake.
    pub handshake_failed: AtomicU64,
    /// Connections refused by the loop guard.
    pub refused_loop: AtomicU64,
    /// Forwarded requests by caller kind: x509, front-proxy, bearer, anonymous.
    pub forwarded: [AtomicU64; 4],
    /// Requests answered by mvp itself: 400, 401, 431, 502, 503.
    pub answered: [AtomicU64; 5],
}

const CALLERS: [&str; 4] = ["x509", "front-proxy", "bearer", "anonymous"];
/// Status codes mvp answers itself, in `FrontDoorStats::answered` order.
pub const CODES: [u16; 5] = [400, 401, 431, 502, 503];

impl FrontDoorStats {
    /// Count a forwarded request.
    pub fn forwarded(&self, caller: &CallerIdentity) {
        let i = match caller {
            CallerIdentity::X509 { .. } => 0,
            CallerIdentity::FrontProxy { .. } => 1,
            CallerIdentity::Bearer => 2,
            CallerIdentity::Anonymous => 3,
        };
        self.forwarded[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Count a response mvp wrote itself.
    pub fn answered(&self, code: u16) {
        if let Some(i) = CODES.iter().position(|c| *c == code) {
            self.answered[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Prometheus text.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP mvp_frontdoor_connections_total Client connections by TLS outcome.\n\
             # TYPE mvp_frontdoor_connections_total counter"
        );
        for (result, v) in [
            ("established", &self.connections),
            ("handshake_failed", &self.handshake_failed),
            ("refused_loop", &self.refused_loop),
        ] {
            let _ = writeln!(
                out,
                "mvp_frontdoor_connections_total{{result=\"{result}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP mvp_frontdoor_forwarded_requests_total Requests forwarded upstream, by caller kind.\n\
             # TYPE mvp_frontdoor_forwarded_requests_total counter"
        );
        for (caller, v) in CALLERS.iter().zip(&self.forwarded) {
            let _ = writeln!(
                out,
                "mvp_frontdoor_forwarded_requests_total{{caller=\"{caller}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP mvp_frontdoor_answered_requests_total Requests mvp answered itself, by status code.\n\
             # TYPE mvp_frontdoor_answered_requests_total counter"
        );
        for (code, v) in CODES.iter().zip(&self.answered) {
            let _ = writeln!(
                out,
                "mvp_frontdoor_answered_requests_total{{code=\"{code}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let stats = FrontDoorStats::default();
        stats.forwarded(&CallerIdentity::Bearer);
        stats.answered(503);
        stats.answered(503);
        let mut out = String::new();
        stats.render(&mut out);
        assert!(out.contains("mvp_frontdoor_forwarded_requests_total{caller=\"bearer\"} 1\n"));
        assert!(out.contains("mvp_frontdoor_answered_requests_total{code=\"503\"} 2\n"));
        assert!(out.contains("mvp_frontdoor_connections_total{result=\"established\"} 0\n"));
    }
}
