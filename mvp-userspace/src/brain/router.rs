//! [`Route`] for the front door: classify, decide with the current view and health, and turn
//! the decision into a plan of upstreams (local, or peers in random order).
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::Request;
use hyper::body::Incoming;

use super::BrainHandle;
use crate::discovery::http::{DiscoveryPlan, plan};
use crate::frontdoor::PEER_PROXIED;
use crate::identity::CallerIdentity;
use crate::proxy::{Outcome, Plan, Route, Routed, TargetKind, Upstream};
use crate::request_info::{RequestInfo, classify_uri};
use crate::route::{Health, LocalReason, RouteDecision, unavailable_status_body};
use crate::status::Status;

/// Seconds a client is asked to wait when no server that serves its resource is reachable.
pub const RETRY_AFTER_SECONDS: u32 = 1;

fn unavailable(info: &RequestInfo) -> Status {
    let message = match info.resource() {
        Some(resource) => {
            let body = unavailable_status_body(resource, RETRY_AFTER_SECONDS);
            serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                .unwrap_or(body)
        }
        None => "no reachable apiserver; retry later".to_owned(),
    };
    Status::service_unavailable(message, RETRY_AFTER_SECONDS)
}

impl Route for BrainHandle {
    fn route(&self, req: &Request<Incoming>, identity: &CallerIdentity) -> Routed {
        let local = || Routed::Forward(Plan::one(self.inner.local.clone()));
        if let Some(routed) = self.route_discovery(req) {
            return routed;
        }
        let Ok(info) = classify_uri(req.method(), req.uri()) else {
            return local();
        };
        if info.resource().is_none() {
            let responder = self.inner.responder.read().clone();
            if let Some(reply) = responder.and_then(|r| r(&self.view(), req)) {
                return Routed::Reply(reply);
            }
            return local();
        }
        // The front door already dropped the marker from anyone but a verified front proxy.
        let peer_proxied = matches!(identity, CallerIdentity::FrontProxy { .. })
            && req
                .headers()
                .get(PEER_PROXIED)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let view = self.view();
        let local_up = self.inner.local_up.load(Ordering::Relaxed);
        let peers = self.inner.peers.lock();
        let peer_up = |id: &str| peers.get(id).is_some_and(|p| p.up);
        let health = Health {
            local_up,
            peer_up: &peer_up,
        };
        let mut rng = rand::thread_rng();
        let decision = view
            .routing()
            .decide(&info, peer_proxied, &health, &mut rng);
        let resource = info.resource().map(|r| {
            (
                r.group.clone(),
                r.version.clone(),
                match r.subresource() {
                    Some(sub) => format!("{}/{sub}", r.resource),
                    None => r.resource.clone(),
                },
            )
        });
        let upstreams = |ids: &[&str]| -> Vec<Arc<Upstream>> {
            ids.iter()
                .filter_map(|id| peers.get(*id).map(|p| p.upstream.clone()))
                .collect()
        };
        match decision {
            RouteDecision::Local {
                reason: LocalReason::ServedLocally,
            } => {
                // If the local apiserver turns out to be down, the peers serving it are next.
                let fallback = view.routing().decide(
                    &info,
                    false,
                    &Health {
                        local_up: false,
                        peer_up: &peer_up,
                    },
                    &mut rng,
                );
                let mut targets = vec![self.inner.local.clone()];
                let mut exhausted = None;
                if let RouteDecision::Peer { candidates } = fallback {
                    targets.extend(upstreams(&candidates));
                    exhausted = Some(unavailable(&info));
                }
                Routed::Forward(Plan {
                    targets,
                    exhausted,
                    resource,
                })
            }
            RouteDecision::Local { .. } | RouteDecision::LocalNotFound => local(),
            RouteDecision::Peer { candidates } => {
                let targets = upstreams(&candidates);
                if targets.is_empty() {
                    drop(peers);
                    self.count_proxy_error("no_reachable_peer");
                    return Routed::Respond(unavailable(&info));
                }
                Routed::Forward(Plan {
                    targets,
                    exhausted: Some(unavailable(&info)),
                    resource,
                })
            }
            RouteDecision::Unavailable => {
                drop(peers);
                self.count_proxy_error("no_reachable_peer");
                Routed::Respond(unavailable(&info))
            }
        }
    }

    fn outcome(&self, plan: &Plan, target: &Upstream, outcome: Outcome) {
        match (target.kind(), outcome) {
            (TargetKind::Local, Outcome::Unreachable) => self.set_local_up(false),
            (TargetKind::Local, _) => {}
            (TargetKind::Peer(id), Outcome::Responded(code)) => {
                let (group, version, resource) = plan.resource.clone().unwrap_or_default();
                *self
                    .inner
                    .metrics
                    .lock()
                    .rerouted
                    .entry((code.as_u16(), group, version, resource, id.clone()))
                    .or_default() += 1;
                if code.is_server_error() {
                    // A peer's mvp answers 503 when its apiserver is down: re-check that peer
                    // now rather than at the next poll.
                    self.inner.kick.notify_one();
                }
            }
            (TargetKind::Peer(id), Outcome::Unreachable) => {
                self.set_peer_up(id, false);
                self.count_proxy_error("unreachable");
            }
            (TargetKind::Peer(_), Outcome::Failed) => self.count_proxy_error("failed_mid_request"),
        }
    }
}

impl BrainHandle {
    /// Discovery and OpenAPI requests (see [`crate::discovery::http`]); `None` for others.
    /// mvp's own answers are probed on the local apiserver first, then on healthy peers when
    /// the local one is unreachable (any apiserver of the cluster authorizes alike).
    fn route_discovery(&self, req: &Request<Incoming>) -> Option<Routed> {
        let view = self.view();
        let openapi = self.openapi();
        let planned = plan(
            Some(&view),
            Some(&openapi),
            req.method(),
            req.uri(),
            req.headers(),
        );
        let local = self.inner.local.clone();
        if matches!(planned, DiscoveryPlan::NotDiscovery) {
            return None;
        }
        let peers = self.inner.peers.lock();
        let healthy = |ids: &mut dyn Iterator<Item = &String>| -> Vec<Arc<Upstream>> {
            ids.filter_map(|id| peers.get(id.as_str()))
                .filter(|p| p.up)
                .map(|p| p.upstream.clone())
                .collect()
        };
        let unavailable = || {
            Status::service_unavailable(
                "no reachable apiserver serves this discovery document; retry later",
                RETRY_AFTER_SECONDS,
            )
        };
        Some(match planned {
            DiscoveryPlan::NotDiscovery => return None,
            DiscoveryPlan::Local => Routed::Forward(Plan::one(local)),
            DiscoveryPlan::Peers(ids) => {
                let targets = healthy(&mut ids.iter());
                if targets.is_empty() {
                    Routed::Respond(unavailable())
                } else {
                    Routed::Forward(Plan {
                        targets,
                        exhausted: Some(unavailable()),
                        resource: None,
                    })
                }
            }
            DiscoveryPlan::Answer(response) => {
                let mut targets = vec![local];
                targets.extend(healthy(&mut peers.keys()));
                Routed::Answer {
                    probe: Plan {
                        targets,
                        exhausted: None,
                        resource: None,
                    },
                    response,
                }
            }
        })
    }

    fn count_proxy_error(&self, kind: &'static str) {
        *self
            .inner
            .metrics
            .lock()
            .proxy_errors
            .entry(kind)
            .or_default() += 1;
    }
}
