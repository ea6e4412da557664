//! The routing decision: serve a request locally, on a peer, or answer 503.
//!
//! Upstream's order (upstream-mvp.md §4.2) with our differences:
//! 1. non-resource requests → local (discovery is answered by the discovery server before
//!    routing; everything else non-resource belongs to the local apiserver);
//! 2. a verified `x-kubernetes-peer-proxied` request → local (one hop at most);
//! 3. a group/version from a CRD or aggregated APIService → local (every apiserver serves
//!    those; peers' snapshots of them may be stale);
//! 4. served locally → local — **subresource-aware**: upstream matches the parent resource
//!    only, we require the subresource too, so `devicetaintrules/status` on a server that has
//!    `devicetaintrules` without `/status` goes to a peer that has it (upstream §7.3 gap 1);
//! 5. served by healthy peers → those peers in random order (the caller tries the first and
//!    may retry read-only requests on the next);
//! 6. served by peers, none healthy — or served only locally while the local apiserver is
//!    down → `Unavailable` (503 with Retry-After; upstream answers 503 without it);
//! 7. served by nobody → local (it answers its own 404, as upstream does).
//!
//! Local apiserver down: resource requests go to peers that serve them (upstream has no
//! such failover). Upstream's "not yet synced → local" (§4.2 step 4) does not exist here:
//! the proxy is not steered to before its first discovery sync.
//!
//! The table is built once per change of any server's view; a decision is three hash lookups
//! plus a shuffle of the (few) candidate peers.

use std::collections::HashMap;

use rand::Rng;
use rand::seq::SliceRandom;

use crate::discovery::served::{ExclusionSet, ServedSet};
use crate::request_info::RequestInfo;

/// Who serves one resource or subresource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Servers {
    local: bool,
    /// Indexes into `RoutingTable::peer_ids`.
    peers: Vec<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ResourceRoute {
    resource: Servers,
    subresources: HashMap<String, Servers>,
}

/// Prebuilt index from (group, version, resource[, subresource]) to the servers serving it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    peer_ids: Vec<String>,
    /// group → version → resource → route.
    index: HashMap<String, HashMap<String, HashMap<String, ResourceRoute>>>,
    exclusions: ExclusionSet,
}

/// One peer's view for [`RoutingTable::build`].
#[derive(Debug, Clone, Copy)]
pub struct PeerServed<'a> {
    pub server_id: &'a str,
    pub served: &'a ServedSet,
}

/// One (group, version, resource[, subresource]) that not every server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkewEntry<'t> {
    pub group: &'t str,
    pub version: &'t str,
    pub resource: &'t str,
    pub subresource: Option<&'t str>,
    pub served_locally: bool,
    pub served_by_peers: Vec<&'t str>,
}

/// Why a request stays local.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReason {
    NonResource,
    /// Already forwarded once by a verified peer.
    PeerProxied,
    /// CRD or aggregated APIService group/version.
    Excluded,
    ServedLocally,
}

/// The routing decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision<'t> {
    Local {
        reason: LocalReason,
    },
    /// Healthy peers serving the request, in random order (never empty).
    Peer {
        candidates: Vec<&'t str>,
    },
    /// No server serves it: the local apiserver answers (normally 404).
    LocalNotFound,
    /// Only unavailable servers serve it: answer 503 with Retry-After.
    Unavailable,
}

/// Current health, supplied per decision (changes more often than discovery).
pub struct Health<'a> {
    pub local_up: bool,
    pub peer_up: &'a dyn Fn(&str) -> bool,
}

impl RoutingTable {
    /// Index the local and the peers' served sets. A peer carrying the same ID twice is
    /// indexed once (the first entry).
    pub fn build(local: &ServedSet, peers: &[PeerServed<'_>], exclusions: ExclusionSet) -> Self {
        let mut table = RoutingTable {
            exclusions,
            ..Default::default()
        };
        table.add(local, None);
        for peer in peers {
            if table.peer_ids.iter().any(|id| id == peer.server_id) {
                continue;
            }
            let index = table.peer_ids.len();
            table.peer_ids.push(peer.server_id.to_owned());
            table.add(peer.served, Some(index));
        }
        table
    }

    fn add(&mut self, served: &ServedSet, peer: Option<usize>) {
        for (group, version, resource, subresource) in served.entries() {
            let route = self
                .index
                .entry(group.to_owned())
                .or_default()
                .entry(version.to_owned())
                .or_default()
                .entry(resource.to_owned())
                .or_default();
            let servers = match subresource {
                None => &mut route.resource,
                Some(sub) => route.subresources.entry(sub.to_owned()).or_default(),
            };
            match peer {
                None => servers.local = true,
                Some(index) => servers.peers.push(index),
            }
        }
    }

    pub fn peer_ids(&self) -> &[String] {
        &self.peer_ids
    }

    /// Everything not served by every server (the local one and all peers): the skew an
    /// operator wants to see. Sorted by group, version, resource, subresource.
    pub fn skew(&self) -> Vec<SkewEntry<'_>> {
        let everyone = self.peer_ids.len() + 1;
        let mut out = Vec::new();
        for (group, versions) in &self.index {
            for (version, resources) in versions {
                for (resource, route) in resources {
                    let parts = std::iter::once((None, &route.resource)).chain(
                        route
                            .subresources
                            .iter()
                            .map(|(sub, servers)| (Some(sub.as_str()), servers)),
                    );
                    for (subresource, servers) in parts {
                        let count = servers.peers.len() + usize::from(servers.local);
                        if count < everyone {
                            let mut served_by: Vec<&str> = servers
                                .peers
                                .iter()
                                .map(|&i| self.peer_ids[i].as_str())
                                .collect();
                            served_by.sort_unstable();
                            out.push(SkewEntry {
                                group,
                                version,
                                resource,
                                subresource,
                                served_locally: servers.local,
                                served_by_peers: served_by,
                            });
                        }
                    }
                }
            }
        }
        out.sort_by(|a, b| {
            (a.group, a.version, a.resource, a.subresource).cmp(&(
                b.group,
                b.version,
                b.resource,
                b.subresource,
            ))
        });
        out
    }

    fn servers(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        subresource: Option<&str>,
    ) -> Option<&Servers> {
        let route = self.index.get(group)?.get(version)?.get(resource)?;
        match subresource {
            None => Some(&route.resource),
            Some(sub) => route.subresources.get(sub),
        }
    }

    /// Decide where `request` goes. `peer_proxied` must be true only when the
    /// `x-kubernetes-peer-proxied: true` header came from a verified peer.
    pub fn decide<R: Rng + ?Sized>(
        &self,
        request: &RequestInfo,
        peer_proxied: bool,
        health: &Health<'_>,
        rng: &mut R,
    ) -> RouteDecision<'_> {
        let Some(resource) = request.resource() else {
            return RouteDecision::Local {
                reason: LocalReason::NonResource,
            };
        };
        if peer_proxied {
            return RouteDecision::Local {
                reason: LocalReason::PeerProxied,
            };
        }
        if self.exclusions.contains(&resource.group, &resource.version) {
            return RouteDecision::Local {
                reason: LocalReason::Excluded,
            };
        }
        let Some(servers) = self.servers(
            &resource.group,
            &resource.version,
            &resource.resource,
            resource.subresource(),
        ) else {
            return RouteDecision::LocalNotFound;
        };
        if servers.local && health.local_up {
            return RouteDecision::Local {
                reason: LocalReason::ServedLocally,
            };
        }
        let mut candidates: Vec<&str> = servers
            .peers
            .iter()
            .map(|&index| self.peer_ids[index].as_str())
            .filter(|id| (health.peer_up)(id))
            .collect();
        if !candidates.is_empty() {
            candidates.shuffle(rng);
            return RouteDecision::Peer { candidates };
        }
        if servers.local || !servers.peers.is_empty() {
            return RouteDecision::Unavailable;
        }
        RouteDecision::LocalNotFound
    }
}

/// Body of the 503 answered for [`RouteDecision::Unavailable`]: a `Status` like kube's
/// (compact, trailing newline), with `details.retryAfterSeconds` matching the `Retry-After`
/// header the caller sends (client-go retries 5xx answers that carry it).
pub fn unavailable_status_body(
    request: &crate::request_info::ResourceRequest,
    retry_after_seconds: u32,
) -> String {
    let what = match request.subresource() {
        Some(sub) => format!("{}/{}", request.resource, sub),
        None => request.resource.clone(),
    };
    let message = format!(
        "no reachable apiserver serves {what} in group {:?} version {:?}; retry later",
        request.group, request.version
    );
    let status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "ServiceUnavailable",
        "details": {
            "group": request.group,
            "kind": request.resource,
            "retryAfterSeconds": retry_after_seconds,
        },
        "code": 503,
    });
    format!("{status}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::model::APIGroupDiscoveryList;
    use crate::request_info::classify;
    use crate::test_fixtures::{discovery, real_apiserver};
    use http::Method;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::{BTreeSet, HashSet};

    fn served(json: &str) -> ServedSet {
        let list: APIGroupDiscoveryList = serde_json::from_str(json).unwrap();
        ServedSet::from_documents([&list])
    }

    /// A served set with one group/version of resources; `resources` are `name` or
    /// `name/sub` entries.
    fn gv(group: &str, version: &str, resources: &[&str]) -> ServedSet {
        let mut by_resource: Vec<(String, Vec<String>)> = Vec::new();
        for entry in resources {
            let (name, sub) = entry
                .split_once('/')
                .map_or((*entry, None), |(r, s)| (r, Some(s)));
            if !by_resource.iter().any(|(r, _)| r == name) {
                by_resource.push((name.to_owned(), Vec::new()));
            }
            if let Some(sub) = sub {
                by_resource
                    .iter_mut()
                    .find(|(r, _)| r == name)
                    .unwrap()
                    .1
                    .push(sub.to_owned());
            }
        }
        let resources: Vec<serde_json::Value> = by_resource
            .into_iter()
            .map(|(r, subs)| {
                serde_json::json!({"resource": r, "scope": "Namespaced", "singularResource": "",
                    "verbs": ["get"],
                    "subresources": subs.iter().map(|s| serde_json::json!({"subresource": s, "verbs": ["get"]})).collect::<Vec<_>>()})
            })
            .collect();
        served(
            &serde_json::json!({"items": [{"metadata": {"name": group},
                "versions": [{"version": version, "resources": resources}]}]})
            .to_string(),
        )
    }

    fn get(path: &str) -> RequestInfo {
        let (path, query) = path
            .split_once('?')
            .map_or((path, None), |(p, q)| (p, Some(q)));
        classify(&Method::GET, path, query).unwrap()
    }

    fn all_up(_: &str) -> bool {
        true
    }

    fn up() -> Health<'static> {
        Health {
            local_up: true,
            peer_up: &all_up,
        }
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn decide<'t>(table: &'t RoutingTable, path: &str, health: &Health<'_>) -> RouteDecision<'t> {
        table.decide(&get(path), false, health, &mut rng())
    }

    // ---- upstream §8 cases 1–8 (peerproxy_handler_test.go), as they apply to us ----

    #[test]
    fn case_1_non_resource_is_local() {
        let table = RoutingTable::build(&ServedSet::default(), &[], ExclusionSet::default());
        for path in [
            "/foo/bar/baz",
            "/apis",
            "/api",
            "/apis/apps/v1",
            "/version",
            "/openapi/v3",
        ] {
            assert_eq!(
                decide(&table, path, &up()),
                RouteDecision::Local {
                    reason: LocalReason::NonResource
                },
                "{path}"
            );
        }
    }

    #[test]
    fn case_2_peer_proxied_is_local_even_if_only_a_peer_serves() {
        let peer = gv("", "bar", &["baz"]);
        let table = RoutingTable::build(
            &ServedSet::default(),
            &[PeerServed {
                server_id: "remote-apiserver-1",
                served: &peer,
            }],
            ExclusionSet::default(),
        );
        assert_eq!(
            table.decide(&get("/api/bar/baz"), true, &up(), &mut rng()),
            RouteDecision::Local {
                reason: LocalReason::PeerProxied
            }
        );
        // Without the header the same request goes to the peer.
        assert!(matches!(
            decide(&table, "/api/bar/baz", &up()),
            RouteDecision::Peer { .. }
        ));
    }

    #[test]
    fn case_3_nothing_known_yet_falls_through_to_local() {
        // Upstream: unsynced → local. We are not steered to before the first sync, but an
        // empty table must still not invent a peer or a 503.
        let table = RoutingTable::default();
        assert_eq!(
            decide(&table, "/api/bar/baz", &up()),
            RouteDecision::LocalNotFound
        );
    }

    #[test]
    fn case_4_served_locally_is_local() {
        let local = gv("", "foo", &["bar"]);
        let peer = gv("", "foo", &["bar"]);
        let table = RoutingTable::build(
            &local,
            &[PeerServed {
                server_id: "remote-apiserver-1",
                served: &peer,
            }],
            ExclusionSet::default(),
        );
        assert_eq!(
            decide(&table, "/api/foo/bar", &up()),
            RouteDecision::Local {
                reason: LocalReason::ServedLocally
            }
        );
    }

    #[test]
    fn case_5_served_by_nobody_falls_through_to_local() {
        let peer = gv("", "other", &["thing"]);
        let table = RoutingTable::build(
            &ServedSet::default(),
            &[PeerServed {
                server_id: "remote-apiserver-1",
                served: &peer,
            }],
            ExclusionSet::default(),
        );
        assert_eq!(
            decide(&table, "/api/foo/bar", &up()),
            RouteDecision::LocalNotFound
        );
    }

    #[test]
    fn cases_6_and_7_peer_without_endpoint_or_unreachable() {
        let peer = gv("", "foo", &["bar"]);
        let table = RoutingTable::build(
            &ServedSet::default(),
            &[PeerServed {
                server_id: "remote-apiserver-1",
                served: &peer,
            }],
            ExclusionSet::default(),
        );
        // 6: no endpoint = not healthy → 503.
        let none_up = |_: &str| false;
        let health = Health {
            local_up: true,
            peer_up: &none_up,
        };
        assert_eq!(
            decide(&table, "/api/foo/bar", &health),
            RouteDecision::Unavailable
        );
        // 7: known endpoint → chosen; the 503 then comes from the failed proxy attempt.
        assert_eq!(
            decide(&table, "/api/foo/bar", &up()),
            RouteDecision::Peer {
                candidates: vec!["remote-apiserver-1"]
            }
        );
    }

    #[test]
    fn case_8_only_resolvable_peers_are_candidates() {
        let peer = gv("", "foo", &["bar"]);
        let table = RoutingTable::build(
            &ServedSet::default(),
            &[
                PeerServed {
                    server_id: "no-endpoint",
                    served: &peer,
                },
                PeerServed {
                    server_id: "reachable",
                    served: &peer,
                },
            ],
            ExclusionSet::default(),
        );
        let only_reachable = |id: &str| id == "reachable";
        let health = Health {
            local_up: true,
            peer_up: &only_reachable,
        };
        assert_eq!(
            decide(&table, "/api/foo/bar", &health),
            RouteDecision::Peer {
                candidates: vec!["reachable"]
            }
        );
    }

    // ---- subresources (upstream §8 case 37: upstream serves locally; we do not) ----

    #[test]
    fn case_37_subresource_only_on_peer_goes_to_peer() {
        let local = gv("g", "v1", &["things"]);
        let peer = gv("g", "v1", &["things", "things/status"]);
        let table = RoutingTable::build(
            &local,
            &[PeerServed {
                server_id: "peer",
                served: &peer,
            }],
            ExclusionSet::default(),
        );
        assert_eq!(
            decide(&table, "/apis/g/v1/things/t/status", &up()),
            RouteDecision::Peer {
                candidates: vec!["peer"]
            }
        );
        assert_eq!(
            decide(&table, "/apis/g/v1/things/t", &up()),
            RouteDecision::Local {
                reason: LocalReason::ServedLocally
            }
        );
        // A subresource nobody lists: local answers.
        assert_eq!(
            decide(&table, "/apis/g/v1/things/t/nope", &up()),
            RouteDecision::LocalNotFound
        );
    }

    // ---- exclusions ----

    #[test]
    fn excluded_group_versions_stay_local() {
        let peer = gv("example.com", "v1", &["widgets"]);
        let table = RoutingTable::build(
            &ServedSet::default(),
            &[PeerServed {
                server_id: "peer",
                served: &peer,
            }],
            ExclusionSet::from_iter([("example.com", "v1")]),
        );
        assert_eq!(
            decide(&table, "/apis/example.com/v1/widgets", &up()),
            RouteDecision::Local {
                reason: LocalReason::Excluded
            }
        );
        // Even with the local apiserver down: it is the only server whose view is current.
        let health = Health {
            local_up: false,
            peer_up: &all_up,
        };
        assert_eq!(
            decide(&table, "/apis/example.com/v1/widgets", &health),
            RouteDecision::Local {
                reason: LocalReason::Excluded
            }
        );
    }

    // ---- local apiserver down (our failover) ----

    #[test]
    fn local_down_routes_to_peers_serving_it() {
        let both = gv("apps", "v1", &["deployments", "deployments/scale"]);
        let local_only = gv(
            "apps",
            "v1",
            &["deployments", "deployments/scale", "replicasets"],
        );
        let table = RoutingTable::build(
            &local_only,
            &[PeerServed {
                server_id: "peer",
                served: &both,
            }],
            ExclusionSet::default(),
        );
        let down = Health {
            local_up: false,
            peer_up: &all_up,
        };
        assert_eq!(
            decide(
                &table,
                "/apis/apps/v1/namespaces/ns/deployments/d/scale",
                &down
            ),
            RouteDecision::Peer {
                candidates: vec!["peer"]
            }
        );
        assert_eq!(
            decide(&table, "/apis/apps/v1/replicasets", &down),
            RouteDecision::Unavailable
        );
        assert_eq!(
            decide(&table, "/apis/apps/v1/widgets", &down),
            RouteDecision::LocalNotFound
        );
        // Non-resource requests still belong to the local server.
        assert_eq!(
            decide(&table, "/healthz", &down),
            RouteDecision::Local {
                reason: LocalReason::NonResource
            }
        );
    }

    #[test]
    fn local_down_and_peers_down_is_unavailable() {
        let set = gv("apps", "v1", &["deployments"]);
        let table = RoutingTable::build(
            &set,
            &[PeerServed {
                server_id: "peer",
                served: &set,
            }],
            ExclusionSet::default(),
        );
        let none_up = |_: &str| false;
        let health = Health {
            local_up: false,
            peer_up: &none_up,
        };
        assert_eq!(
            decide(&table, "/apis/apps/v1/deployments", &health),
            RouteDecision::Unavailable
        );
    }

    // ---- candidates are shuffled ----

    #[test]
    fn candidates_are_every_healthy_peer_in_random_order() {
        let set = gv("g", "v1", &["r"]);
        let ids = ["p1", "p2", "p3", "p4"];
        let peers: Vec<PeerServed<'_>> = ids
            .iter()
            .map(|id| PeerServed {
                server_id: id,
                served: &set,
            })
            .collect();
        let table = RoutingTable::build(&ServedSet::default(), &peers, ExclusionSet::default());
        let mut firsts = HashSet::new();
        let mut orders = HashSet::new();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let RouteDecision::Peer { candidates } =
                table.decide(&get("/apis/g/v1/r"), false, &up(), &mut rng)
            else {
                panic!("expected peers");
            };
            let as_set: BTreeSet<&str> = candidates.iter().copied().collect();
            assert_eq!(as_set, ids.iter().copied().collect::<BTreeSet<_>>());
            firsts.insert(candidates[0]);
            orders.insert(candidates);
        }
        assert_eq!(firsts.len(), ids.len(), "every peer is sometimes first");
        assert!(orders.len() > 4);
    }

    #[test]
    fn duplicate_peer_ids_are_indexed_once() {
        let set = gv("g", "v1", &["r"]);
        let table = RoutingTable::build(
            &ServedSet::default(),
            &[
                PeerServed {
                    server_id: "p",
                    served: &set,
                },
                PeerServed {
                    server_id: "p",
                    served: &set,
                },
            ],
            ExclusionSet::default(),
        );
        assert_eq!(table.peer_ids(), ["p"]);
        assert_eq!(
            decide(&table, "/apis/g/v1/r", &up()),
            RouteDecision::Peer {
                candidates: vec!["p"]
            }
        );
    }

    // ---- real fixtures: a 1.33 server next to a 1.36 server ----

    fn fixture(release: &str) -> (ServedSet, serde_json::Value) {
        let bytes = discovery(release, "aggregated_v2.json");
        let list: APIGroupDiscoveryList = serde_json::from_slice(&bytes).unwrap();
        (
            ServedSet::from_documents([&list]),
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    /// Request path for an entry; cluster-scoped and namespaced both work as collection
    /// paths, a subresource needs a name.
    fn path_of(group: &str, version: &str, resource: &str, sub: Option<&str>) -> String {
        let base = if group.is_empty() {
            format!("/api/{version}/{resource}")
        } else {
            format!("/apis/{group}/{version}/{resource}")
        };
        match sub {
            None => base,
            Some(sub) => format!("{base}/some-name/{sub}"),
        }
    }

    fn entries_of(set: &ServedSet) -> BTreeSet<(String, String, String, Option<String>)> {
        set.entries()
            .map(|(g, v, r, s)| {
                (
                    g.to_owned(),
                    v.to_owned(),
                    r.to_owned(),
                    s.map(str::to_owned),
                )
            })
            .collect()
    }

    #[test]
    fn every_release_pair_routes_each_entry_where_it_is_served() {
        let releases = ["k8s-1.33", "k8s-1.36", "k8s-1.37-dev"];
        let sets: Vec<ServedSet> = releases.iter().map(|r| fixture(r).0).collect();
        let mut pairs = Vec::new();
        for (i, local) in sets.iter().enumerate() {
            for (j, peer) in sets.iter().enumerate() {
                if i != j {
                    pairs.push((local, peer, releases[j]));
                }
            }
        }
        for (local, peer, peer_id) in pairs {
            let table = RoutingTable::build(
                local,
                &[PeerServed {
                    server_id: peer_id,
                    served: peer,
                }],
                ExclusionSet::default(),
            );
            let local_entries = entries_of(local);
            for (g, v, r, s) in entries_of(local).union(&entries_of(peer)) {
                let decision = decide(&table, &path_of(g, v, r, s.as_deref()), &up());
                let expected =
                    if local_entries.contains(&(g.clone(), v.clone(), r.clone(), s.clone())) {
                        RouteDecision::Local {
                            reason: LocalReason::ServedLocally,
                        }
                    } else {
                        RouteDecision::Peer {
                            candidates: vec![peer_id],
                        }
                    };
                assert_eq!(decision, expected, "{g}/{v}/{r}/{s:?} on {peer_id}'s peer");
            }
        }
    }

    #[test]
    fn readme_only_in_lists_route_to_the_right_server() {
        let (old, _) = fixture("k8s-1.33");
        let (new, _) = fixture("k8s-1.36");
        let on_old = RoutingTable::build(
            &old,
            &[PeerServed {
                server_id: "new",
                served: &new,
            }],
            ExclusionSet::default(),
        );
        let on_new = RoutingTable::build(
            &new,
            &[PeerServed {
                server_id: "old",
                served: &old,
            }],
            ExclusionSet::default(),
        );
        // README "Only in k8s-1.36".
        let only_new = [
            "/apis/admissionregistration.k8s.io/v1/mutatingadmissionpolicies",
            "/apis/admissionregistration.k8s.io/v1/mutatingadmissionpolicybindings",
            "/apis/admissionregistration.k8s.io/v1beta1/mutatingadmissionpolicies",
            "/apis/admissionregistration.k8s.io/v1beta1/mutatingadmissionpolicybindings",
            "/apis/certificates.k8s.io/v1beta1/podcertificaterequests",
            "/apis/certificates.k8s.io/v1beta1/podcertificaterequests/x/status",
            "/apis/resource.k8s.io/v1/deviceclasses",
            "/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims",
            "/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/c/status",
            "/apis/resource.k8s.io/v1/namespaces/ns/resourceclaimtemplates",
            "/apis/resource.k8s.io/v1/resourceslices",
            "/apis/resource.k8s.io/v1beta2/devicetaintrules",
            "/apis/resource.k8s.io/v1beta2/devicetaintrules/t/status",
            "/apis/scheduling.k8s.io/v1alpha2/namespaces/ns/podgroups",
            "/apis/scheduling.k8s.io/v1alpha2/namespaces/ns/podgroups/p/status",
            "/apis/scheduling.k8s.io/v1alpha2/namespaces/ns/workloads",
            "/apis/storage.k8s.io/v1/volumeattributesclasses",
            "/apis/storagemigration.k8s.io/v1beta1/storageversionmigrations",
            "/apis/storagemigration.k8s.io/v1beta1/storageversionmigrations/m/status",
            // subresource only: the resource exists in both, /status only in 1.36.
            "/apis/resource.k8s.io/v1alpha3/devicetaintrules/t/status",
        ];
        // README "Only in k8s-1.33".
        let only_old = [
            "/apis/admissionregistration.k8s.io/v1beta1/validatingadmissionpolicies",
            "/apis/admissionregistration.k8s.io/v1beta1/validatingadmissionpolicies/v/status",
            "/apis/admissionregistration.k8s.io/v1beta1/validatingadmissionpolicybindings",
            "/apis/resource.k8s.io/v1alpha3/deviceclasses",
            "/apis/resource.k8s.io/v1alpha3/namespaces/ns/resourceclaims",
            "/apis/resource.k8s.io/v1alpha3/namespaces/ns/resourceclaims/c/status",
            "/apis/resource.k8s.io/v1alpha3/namespaces/ns/resourceclaimtemplates",
            "/apis/resource.k8s.io/v1alpha3/resourceslices",
            "/apis/storage.k8s.io/v1alpha1/volumeattributesclasses",
            "/apis/storagemigration.k8s.io/v1alpha1/storageversionmigrations",
            "/apis/storagemigration.k8s.io/v1alpha1/storageversionmigrations/m/status",
        ];
        let local = RouteDecision::Local {
            reason: LocalReason::ServedLocally,
        };
        for path in only_new {
            assert_eq!(
                decide(&on_old, path, &up()),
                RouteDecision::Peer {
                    candidates: vec!["new"]
                },
                "{path}"
            );
            assert_eq!(decide(&on_new, path, &up()), local, "{path}");
        }
        for path in only_old {
            assert_eq!(
                decide(&on_new, path, &up()),
                RouteDecision::Peer {
                    candidates: vec!["old"]
                },
                "{path}"
            );
            assert_eq!(decide(&on_old, path, &up()), local, "{path}");
        }
        // Served by both: local on either side, e.g. the resource without the new subresource.
        for path in [
            "/apis/resource.k8s.io/v1alpha3/devicetaintrules",
            "/apis/apps/v1/deployments",
        ] {
            assert_eq!(decide(&on_old, path, &up()), local, "{path}");
            assert_eq!(decide(&on_new, path, &up()), local, "{path}");
        }
    }

    #[test]
    fn core_group_routes_with_api_documents() {
        let api: APIGroupDiscoveryList =
            serde_json::from_slice(&real_apiserver("discovery-api-aggregated-v2.json")).unwrap();
        let local = ServedSet::from_documents([&api]);
        let mut peer_api = api.clone();
        let pods = peer_api.items[0].versions[0]
            .resources
            .iter_mut()
            .find(|r| r.resource == "pods")
            .unwrap();
        pods.subresources
            .push(crate::discovery::model::APISubresourceDiscovery {
                subresource: "checkpoint".into(),
                ..Default::default()
            });
        let peer = ServedSet::from_documents([&peer_api]);
        let table = RoutingTable::build(
            &local,
            &[PeerServed {
                server_id: "newer",
                served: &peer,
            }],
            ExclusionSet::default(),
        );
        let local_decision = RouteDecision::Local {
            reason: LocalReason::ServedLocally,
        };
        for path in [
            "/api/v1/namespaces/ns/pods/p/exec?command=ls",
            "/api/v1/namespaces/ns/pods/p/log",
            "/api/v1/namespaces/ns",
            "/api/v1/namespaces/ns/finalize",
            "/api/v1/watch/namespaces/ns/configmaps",
        ] {
            assert_eq!(decide(&table, path, &up()), local_decision, "{path}");
        }
        assert_eq!(
            decide(&table, "/api/v1/namespaces/ns/pods/p/checkpoint", &up()),
            RouteDecision::Peer {
                candidates: vec!["newer"]
            }
        );
    }

    #[test]
    fn unavailable_body_is_a_service_unavailable_status() {
        let request = get("/apis/resource.k8s.io/v1alpha3/devicetaintrules/t/status");
        let body = unavailable_status_body(request.resource().unwrap(), 5);
        assert!(body.ends_with("}\n"));
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["code"], 503);
        assert_eq!(status["reason"], "ServiceUnavailable");
        assert_eq!(status["details"]["retryAfterSeconds"], 5);
        assert_eq!(status["details"]["group"], "resource.k8s.io");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("devicetaintrules/status")
        );
        // Key order as kube writes a Status.
        let keys: Vec<&str> = status
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "kind",
                "apiVersion",
                "metadata",
                "status",
                "message",
                "reason",
                "details",
                "code"
            ]
        );
    }

    #[test]
    fn readme_136_137_only_in_lists() {
        let (v136, _) = fixture("k8s-1.36");
        let (v137, _) = fixture("k8s-1.37-dev");
        let on_136 = RoutingTable::build(
            &v136,
            &[PeerServed {
                server_id: "137",
                served: &v137,
            }],
            ExclusionSet::default(),
        );
        let on_137 = RoutingTable::build(
            &v137,
            &[PeerServed {
                server_id: "136",
                served: &v136,
            }],
            ExclusionSet::default(),
        );
        // README "Resources a proxy must route (1.36 ↔ 1.37-dev)".
        for path in [
            "/apis/certificates.k8s.io/v1alpha1/clustertrustbundles",
            "/apis/networking.k8s.io/v1beta1/ipaddresses",
            "/apis/networking.k8s.io/v1beta1/servicecidrs",
            "/apis/scheduling.k8s.io/v1alpha2/namespaces/ns/podgroups",
            "/apis/scheduling.k8s.io/v1alpha2/namespaces/ns/workloads",
            "/apis/storage.k8s.io/v1beta1/volumeattributesclasses",
        ] {
            assert_eq!(
                decide(&on_137, path, &up()),
                RouteDecision::Peer {
                    candidates: vec!["136"]
                },
                "{path}"
            );
        }
        for path in [
            "/apis/resource.k8s.io/v1/devicetaintrules",
            "/apis/resource.k8s.io/v1alpha3/resourcepoolstatusrequests",
            "/apis/scheduling.k8s.io/v1alpha3/namespaces/ns/podgroups",
            "/apis/scheduling.k8s.io/v1alpha3/namespaces/ns/workloads",
            "/apis/storagemigration.k8s.io/v1/storageversionmigrations",
        ] {
            assert_eq!(
                decide(&on_136, path, &up()),
                RouteDecision::Peer {
                    candidates: vec!["137"]
                },
                "{path}"
            );
        }
    }

    #[test]
    fn skew_lists_exactly_what_not_everyone_serves() {
        let (old, _) = fixture("k8s-1.33");
        let (new, _) = fixture("k8s-1.36");
        let table = RoutingTable::build(
            &old,
            &[PeerServed {
                server_id: "new",
                served: &new,
            }],
            ExclusionSet::default(),
        );
        let old_entries = entries_of(&old);
        let new_entries = entries_of(&new);
        let expected: BTreeSet<_> = old_entries
            .symmetric_difference(&new_entries)
            .cloned()
            .collect();
        let skew = table.skew();
        let actual: BTreeSet<_> = skew
            .iter()
            .map(|e| {
                (
                    e.group.to_owned(),
                    e.version.to_owned(),
                    e.resource.to_owned(),
                    e.subresource.map(str::to_owned),
                )
            })
            .collect();
        assert_eq!(actual, expected);
        assert_eq!(actual.len(), skew.len(), "no duplicates");
        for entry in &skew {
            let key = (
                entry.group.to_owned(),
                entry.version.to_owned(),
                entry.resource.to_owned(),
                entry.subresource.map(str::to_owned),
            );
            assert_eq!(entry.served_locally, old_entries.contains(&key));
            assert_eq!(
                entry.served_by_peers.is_empty(),
                !new_entries.contains(&key)
            );
        }
        // The README's subresource-only case is in it.
        assert!(skew.iter().any(|e| e.resource == "devicetaintrules"
            && e.version == "v1alpha3"
            && e.subresource == Some("status")
            && e.served_by_peers == ["new"]));
        let same = RoutingTable::build(
            &old,
            &[PeerServed {
                server_id: "twin",
                served: &old,
            }],
            ExclusionSet::default(),
        );
        assert!(same.skew().is_empty());
    }
}
