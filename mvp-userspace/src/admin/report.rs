//! The `/status` JSON schema (served by the daemon, read by `mvp status`) and its
//! human rendering. The routing work fills servers, discovery ages, routes and skew; today
//! the daemon reports what it has: readiness, steering and relay counters.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Schema version of [`StatusReport`]; bump on incompatible changes.
pub const STATUS_SCHEMA: u32 = 1;

/// What `GET /status` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// [`STATUS_SCHEMA`].
    pub schema: u32,
    /// mvp's version.
    pub mvp_version: String,
    /// mvp's listener is in the SOCKMAP (steered traffic reaches mvp).
    pub ready: bool,
    /// Steered (address, port)s.
    #[serde(default)]
    pub steering: Vec<String>,
    /// sk_lookup counters by outcome; empty when unavailable.
    #[serde(default)]
    pub steering_counters: BTreeMap<String, u64>,
    /// The local apiserver and each peer.
    #[serde(default)]
    pub servers: Vec<ServerStatus>,
    /// L4 relay connections by result (while mvp relays at L4).
    #[serde(default)]
    pub relay_connections: BTreeMap<String, u64>,
    /// Requests by route (`local`, `peer`, `local_not_found`, `unavailable`, `discovery`, …).
    #[serde(default)]
    pub requests_by_route: BTreeMap<String, u64>,
    /// Everything not served by every server.
    #[serde(default)]
    pub skew: Vec<SkewRow>,
}

/// One apiserver as mvp sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// Server identity (the apiserver ID, or `local`).
    pub name: String,
    /// `ip:port` mvp dials.
    pub address: String,
    /// This node's apiserver.
    pub local: bool,
    /// gitVersion from /version, when known.
    #[serde(default)]
    pub version: Option<String>,
    /// Last contact succeeded.
    pub reachable: bool,
    /// Seconds since its discovery was last fetched successfully.
    #[serde(default)]
    pub discovery_age_seconds: Option<u64>,
    /// Last error, if the last contact failed.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// One (group, version, resource[, subresource]) not served by every server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SkewRow {
    /// API group (`""` = core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource, if the row is about one.
    #[serde(default)]
    pub subresource: Option<String>,
    /// Servers that serve it (sorted).
    pub served_by: Vec<String>,
}

impl SkewRow {
    /// `group/version resource[/subresource]`, core as `v1`.
    pub fn gvr(&self) -> String {
        let gv = if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        };
        match &self.subresource {
            Some(s) => format!("{gv} {}/{s}", self.resource),
            None => format!("{gv} {}", self.resource),
        }
    }
}

/// Skew from each server's served set: every entry not served by all of them.
pub fn skew_of(servers: &[(String, &crate::discovery::served::ServedSet)]) -> Vec<SkewRow> {
    type Key = (String, String, String, Option<String>);
    let mut by: BTreeMap<Key, BTreeSet<&str>> = BTreeMap::new();
    for (name, served) in servers {
        for (g, v, r, s) in served.entries() {
            by.entry((g.into(), v.into(), r.into(), s.map(str::to_owned)))
                .or_default()
                .insert(name);
        }
    }
    by.into_iter()
        .filter(|(_, who)| who.len() < servers.len())
        .map(|((group, version, resource, subresource), who)| SkewRow {
            group,
            version,
            resource,
            subresource,
            served_by: who.into_iter().map(str::to_owned).collect(),
        })
        .collect()
}

/// Render columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            let _ = write!(l, "{c:<w$}  ", w = widths[i]);
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut header.iter().copied());
    for r in rows {
        line(&mut out, &mut r.iter().map(String::as_str));
    }
    out
}

impl StatusReport {
    /// The human view: summary, servers, requests by route, skew.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "mvp {}: {}",
            self.mvp_version,
            if self.ready {
                "ready (steered traffic reaches mvp)"
            } else {
                "NOT ready (traffic goes straight to the apiserver)"
            }
        );
        if !self.steering.is_empty() {
            let _ = writeln!(out, "steering: {}", self.steering.join(", "));
        }
        if !self.relay_connections.is_empty() {
            let c: Vec<String> = self
                .relay_connections
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(out, "relay connections: {}", c.join(" "));
        }
        if !self.steering_counters.is_empty() {
            let c: Vec<String> = self
                .steering_counters
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(out, "steering counters: {}", c.join(" "));
        }
        out.push('\n');
        if self.servers.is_empty() {
            out.push_str("servers: none known yet\n");
        } else {
            let rows: Vec<Vec<String>> = self
                .servers
                .iter()
                .map(|s| {
                    vec![
                        if s.local {
                            format!("{} (local)", s.name)
                        } else {
                            s.name.clone()
                        },
                        s.address.clone(),
                        s.version.clone().unwrap_or_else(|| "?".into()),
                        if s.reachable { "yes" } else { "NO" }.into(),
                        s.discovery_age_seconds
                            .map_or_else(|| "never".into(), |a| format!("{a}s")),
                        s.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            out.push_str(&table(
                &[
                    "SERVER",
                    "ADDRESS",
                    "VERSION",
                    "REACHABLE",
                    "DISCOVERY AGE",
                    "LAST ERROR",
                ],
                &rows,
            ));
        }
        out.push('\n');
        if self.requests_by_route.is_empty() {
            out.push_str("requests by route: none yet\n");
        } else {
            let rows: Vec<Vec<String>> = self
                .requests_by_route
                .iter()
                .map(|(k, v)| vec![k.clone(), v.to_string()])
                .collect();
            out.push_str(&table(&["ROUTE", "REQUESTS"], &rows));
        }
        out.push('\n');
        out.push_str(&render_skew(&self.skew));
        out
    }
}

/// The skew table (or a line saying there is none).
pub fn render_skew(skew: &[SkewRow]) -> String {
    if skew.is_empty() {
        return "skew: none (every server serves the same resources)\n".into();
    }
    let rows: Vec<Vec<String>> = skew
        .iter()
        .map(|r| vec![r.gvr(), r.served_by.join(",")])
        .collect();
    format!(
        "skew: {} not served by every server\n{}",
        skew.len(),
        table(&["GROUP/VERSION RESOURCE", "SERVED BY"], &rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::model::parse_aggregated;
    use crate::discovery::served::ServedSet;

    fn report() -> StatusReport {
        StatusReport {
            schema: STATUS_SCHEMA,
            mvp_version: "0.1.0".into(),
            ready: true,
            steering: vec!["192.168.56.11:6443".into()],
            steering_counters: [("steered".to_owned(), 7), ("bypassed".to_owned(), 2)]
                .into_iter()
                .collect(),
            servers: vec![
                ServerStatus {
                    name: "local".into(),
                    address: "127.0.0.1:6443".into(),
                    local: true,
                    version: Some("v1.36.2".into()),
                    reachable: true,
                    discovery_age_seconds: Some(4),
                    last_error: None,
                },
                ServerStatus {
                    name: "apiserver-abc".into(),
                    address: "192.168.56.12:6443".into(),
                    local: false,
                    version: None,
                    reachable: false,
                    discovery_age_seconds: None,
                    last_error: Some("connection refused".into()),
                },
            ],
            relay_connections: [("accepted".to_owned(), 5)].into_iter().collect(),
            requests_by_route: [("local".to_owned(), 10), ("peer".to_owned(), 3)]
                .into_iter()
                .collect(),
            skew: vec![SkewRow {
                group: "resource.k8s.io".into(),
                version: "v1".into(),
                resource: "devicetaintrules".into(),
                subresource: Some("status".into()),
                served_by: vec!["local".into()],
            }],
        }
    }

    #[test]
    fn text_rendering_shows_every_part() {
        let text = report().render_text();
        for want in [
            "mvp 0.1.0: ready",
            "steering: 192.168.56.11:6443",
            "bypassed=2 steered=7",
            "relay connections: accepted=5",
            "local (local)  127.0.0.1:6443",
            "v1.36.2",
            "NO",
            "never",
            "connection refused",
            "peer   3",
            "skew: 1 not served by every server",
            "resource.k8s.io/v1 devicetaintrules/status  local",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let mut r = report();
        r.ready = false;
        r.skew.clear();
        r.servers.clear();
        let text = r.render_text();
        assert!(text.contains("NOT ready"));
        assert!(text.contains("skew: none"));
        assert!(text.contains("servers: none known yet"));
    }

    #[test]
    fn json_round_trips_and_tolerates_missing_optional_parts() {
        let r = report();
        let json = serde_json::to_string(&r).unwrap();
        let back: StatusReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let minimal: StatusReport =
            serde_json::from_str(r#"{"schema":1,"mvp_version":"x","ready":false}"#).unwrap();
        assert!(minimal.servers.is_empty() && minimal.skew.is_empty());
    }

    #[test]
    fn skew_of_real_133_and_136_discovery() {
        let load = |rel: &str| {
            parse_aggregated(&crate::test_fixtures::discovery(rel, "aggregated_v2.json")).unwrap()
        };
        let old = ServedSet::from_documents([&load("k8s-1.33")]);
        let new = ServedSet::from_documents([&load("k8s-1.36")]);
        let skew = skew_of(&[("a".into(), &old), ("b".into(), &new)]);
        assert!(!skew.is_empty());
        // Sorted, and every row names exactly one of the two servers.
        assert!(skew.windows(2).all(|w| w[0] < w[1]));
        assert!(skew.iter().all(|r| r.served_by.len() == 1));
        assert!(skew_of(&[("a".into(), &old), ("b".into(), &old)]).is_empty());
    }
}
