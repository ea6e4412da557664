//! The front door tries a plan's upstreams in order: an unreachable one is skipped with the
//! request (and its body) intact; when none is reachable the plan's Status is the answer.
mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use mvp::frontdoor::FrontDoor;
use mvp::identity::CallerIdentity;
use mvp::proxy::{Outcome, Plan, Route, Routed, TargetKind, Upstream};
use mvp::status::Status;
use mvp::steer::DirectConnector;
use mvp::tls::UpstreamTls;
use support::pki::Pki;
use support::upstream::Upstream as Echo;
use support::{config, curl, free_port};

/// Routes every request to `targets` in order and records each attempt.
struct Fixed {
    targets: Vec<Arc<Upstream>>,
    outcomes: parking_lot::Mutex<Vec<(TargetKind, Outcome)>>,
}

impl Route for Fixed {
    fn route(&self, _req: &Request<Incoming>, _identity: &CallerIdentity) -> Routed {
        Routed::Forward(Plan {
            targets: self.targets.clone(),
            exhausted: Some(Status::service_unavailable("nobody reachable", 7)),
            resource: None,
        })
    }

    fn outcome(&self, _plan: &Plan, target: &Upstream, outcome: Outcome) {
        self.outcomes.lock().push((target.kind().clone(), outcome));
    }
}

async fn start(pki: &Pki, targets: &[(TargetKind, SocketAddr)]) -> (support::Mvp, Arc<Fixed>) {
    let cfg = config(pki, targets[0].1);
    let tls = UpstreamTls::new(
        &cfg.upstream_ca_file,
        &cfg.upstream_server_name,
        cfg.proxy_client
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path())),
        &mvp::tls::provider(),
    )
    .unwrap();
    let dial = Arc::new(DirectConnector::default());
    let route = Arc::new(Fixed {
        targets: targets
            .iter()
            .map(|(kind, addr)| Arc::new(Upstream::new(kind.clone(), *addr, &tls, dial.clone())))
            .collect(),
        outcomes: Default::default(),
    });
    let door = FrontDoor::with_route(&cfg, route.clone(), &tls, dial).unwrap();
    (support::Mvp::start_door(door).await, route)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_skipped_with_the_body_intact() {
    let pki = Pki::new();
    let echo = Echo::start(&pki).await;
    let (mvp, route) = start(
        &pki,
        &[
            (TargetKind::Peer("dead".into()), free_port()),
            (TargetKind::Local, echo.addr),
        ],
    )
    .await;
    let file = pki.dir.path().join("body");
    std::fs::write(&file, vec![b'y'; 300 * 1024]).unwrap();
    let data = format!("@{}", file.display());
    for proto in ["--http1.1", "--http2"] {
        route.outcomes.lock().clear();
        let r = curl(
            &pki,
            Some(&pki.admin),
            &[
                proto,
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-H",
                "x-kubernetes-peer-proxied: true",
                "--data-binary",
                &data,
                &mvp.url("/api/v1/namespaces/fx/configmaps"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{proto}: {r:?}");
        assert_eq!(r.echoed("body-bytes"), ["307200"], "{proto}");
        assert_eq!(r.echoed("x-remote-user"), ["admin"], "{proto}");
        assert!(
            r.echoed("x-kubernetes-peer-proxied").is_empty(),
            "{proto}: an x509 caller's marker is dropped, and the peer attempt's is not left over: {}",
            r.body
        );
        assert_eq!(
            *route.outcomes.lock(),
            [
                (TargetKind::Peer("dead".into()), Outcome::Unreachable),
                (TargetKind::Local, Outcome::Responded(http::StatusCode::OK)),
            ],
            "{proto}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gets_the_marker_and_nobody_reachable_is_the_plans_503() {
    let pki = Pki::new();
    let echo = Echo::start(&pki).await;
    let (mvp, _) = start(&pki, &[(TargetKind::Peer("live".into()), echo.addr)]).await;
    let r = curl(&pki, Some(&pki.admin), &[&mvp.url("/api/v1/pods")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.echoed("x-kubernetes-peer-proxied"), ["true"]);

    let (mvp, route) = start(
        &pki,
        &[
            (TargetKind::Peer("a".into()), free_port()),
            (TargetKind::Peer("b".into()), free_port()),
        ],
    )
    .await;
    let r = curl(&pki, None, &[&mvp.url("/api/v1/pods")]).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after").as_deref(), Some("7"));
    let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["reason"], "ServiceUnavailable");
    assert_eq!(body["message"], "nobody reachable");
    assert_eq!(route.outcomes.lock().len(), 2);
}
