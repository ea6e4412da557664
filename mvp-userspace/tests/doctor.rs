//! `mvp doctor` against a good generated kubeadm PKI + manifest with a live local apiserver
//! (1.36) and peer (1.33), and against deliberately broken setups: each break is reported as
//! FAIL with its fix, and nothing else fails except the live checks the break also breaks.
mod opsupport;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use mvp::detect::Overrides;
use mvp::doctor::{self, DoctorConfig, Report, Verdict};
use mvp::steer::KernelProbe;
use opsupport::{NODE_IP, Pki, PkiSpec};

fn good_kernel() -> KernelProbe {
    KernelProbe {
        kernel_release: Some("6.1.0".into()),
        root: true,
        effective_caps: Some(u64::MAX >> 23),
        netns: true,
        sk_lookup: Ok(()),
        attach: mvp::steer::AttachProbe::Ok,
    }
}

/// Generate the PKI, the manifest, a local (1.36) and a peer (1.33) apiserver using it,
/// and run doctor.
async fn doctor_with(spec: PkiSpec, tmp: &Path) -> Report {
    let cfg = setup(spec, tmp).await;
    let r = doctor::examine(&cfg, Some(&good_kernel())).await;
    // Shown with --nocapture (and on failure): the operator's view of this setup.
    eprintln!("{}", r.render_text());
    r
}

async fn setup(spec: PkiSpec, tmp: &Path) -> DoctorConfig {
    let pki = Pki::generate(&tmp.join("pki"), &spec);
    let manifest = opsupport::write_manifest(tmp, &pki.dir);
    let local = opsupport::apiserver::start(&pki.dir, "k8s-1.36", "v1.36.2").await;
    let peer = opsupport::apiserver::start(&pki.dir, "k8s-1.33", "v1.33.4").await;
    DoctorConfig {
        manifest,
        proc_root: tmp.join("no-proc"),
        overrides: Overrides::default(),
        node_addrs: vec![
            "127.0.0.1".parse().unwrap(),
            NODE_IP.parse().unwrap(),
            "10.0.2.15".parse().unwrap(),
        ],
        upstream: Some(local),
        upstream_ca_file: None,
        peers: vec![format!("https://{peer}")],
        timeout: Duration::from_secs(30),
        now: SystemTime::now(),
    }
}

fn failing(r: &Report) -> BTreeSet<String> {
    r.checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .map(|c| c.id.clone())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

/// The check `id` fails and its fix mentions `fix_word`.
fn assert_fails(r: &Report, id: &str, fix_word: &str) {
    let c = r
        .check(id)
        .unwrap_or_else(|| panic!("no check {id} in\n{}", r.render_text()));
    assert_eq!(c.verdict, Verdict::Fail, "{}", r.render_text());
    let fix = c.fix.as_deref().unwrap_or_default();
    assert!(
        fix.contains(fix_word),
        "{id} fix {fix:?} lacks {fix_word:?}"
    );
    assert!(!fix.contains('\n') && !c.message.contains('\n'));
    assert_eq!(r.verdict, Verdict::Fail);
}

#[tokio::test]
async fn good_kubeadm_setup_passes_every_check() {
    let tmp = tempfile::tempdir().unwrap();
    let r = doctor_with(PkiSpec::default(), tmp.path()).await;
    let text = r.render_text();
    assert_eq!(r.verdict, Verdict::Pass, "{text}");
    assert!(
        r.checks.iter().all(|c| c.verdict == Verdict::Pass),
        "{text}"
    );
    for id in [
        "kernel/privileges",
        "kernel/attach",
        "detect",
        "detect/steer",
        "file/tls-cert-file",
        "file/proxy-client-key-file",
        "validity/tls-cert-file",
        "validity/requestheader-client-ca-file",
        "cert/serving-key",
        "cert/serving-sans",
        "cert/serving-chain",
        "cert/front-proxy-key",
        "cert/front-proxy-chain",
        "requestheader/allowed-names",
        "requestheader/headers",
        "server/local",
        "skew",
    ] {
        assert!(r.check(id).is_some(), "missing {id} in\n{text}");
    }
    // A node address the cert never covered is noted, not failed: kube-apiserver itself
    // presents the same cert there.
    let sans = r.check("cert/serving-sans").unwrap();
    assert!(sans.message.contains("10.0.2.15"), "{}", sans.message);
    // Where things came from, and what the servers said.
    assert!(
        text.contains("kube-apiserver settings from manifest"),
        "{text}"
    );
    assert!(
        r.detected
            .iter()
            .any(|row| row.setting == "--peer-ca-file" && row.value.ends_with("ca.crt"))
    );
    assert_eq!(r.servers.len(), 2);
    assert!(r.servers.iter().all(|s| s.ok));
    assert_eq!(r.servers[0].version.as_deref(), Some("v1.36.2"));
    assert_eq!(r.servers[1].version.as_deref(), Some("v1.33.4"));
    // 1.33 and 1.36 differ: the skew names who serves what.
    assert!(!r.skew.is_empty());
    assert!(r.skew.iter().all(|s| s.served_by.len() == 1));
    assert!(text.contains("not served by every server"), "{text}");
    // JSON carries the same verdicts.
    let json: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(json["verdict"], "PASS");
    assert!(json["checks"].as_array().unwrap().len() == r.checks.len());
}

#[tokio::test]
async fn serving_cert_from_another_ca_fails_chain_and_live_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let r = doctor_with(
        PkiSpec {
            serving_wrong_ca: true,
            ..Default::default()
        },
        tmp.path(),
    )
    .await;
    assert_fails(&r, "cert/serving-chain", "--peer-ca-file");
    // Both servers present that cert: mvp and peers would refuse them the same way.
    assert_fails(&r, "server/local", "--peer-ca-file");
    let peer_id = r
        .checks
        .iter()
        .find(|c| c.id.starts_with("server/127.0.0.1:"))
        .unwrap();
    assert_eq!(peer_id.verdict, Verdict::Fail);
    assert_eq!(failing(&r).len(), 3, "{}", r.render_text());
}

#[tokio::test]
async fn front_proxy_cert_from_another_ca_fails_chain_and_is_refused_live() {
    let tmp = tempfile::tempdir().unwrap();
    let r = doctor_with(
        PkiSpec {
            front_proxy_wrong_ca: true,
            ..Default::default()
        },
        tmp.path(),
    )
    .await;
    assert_fails(
        &r,
        "cert/front-proxy-chain",
        "--requestheader-client-ca-file",
    );
    assert_fails(&r, "server/local", "--requestheader-client-ca-file");
    let f = failing(&r);
    assert!(
        f.iter()
            .all(|id| id == "cert/front-proxy-chain" || id.starts_with("server/")),
        "{f:?}"
    );
}

#[tokio::test]
async fn missing_front_proxy_cert_file_fails_with_where_to_mount_it() {
    let tmp = tempfile::tempdir().unwrap();
    let r = doctor_with(
        PkiSpec {
            omit_front_proxy_cert: true,
            ..Default::default()
        },
        tmp.path(),
    )
    .await;
    assert_fails(
        &r,
        "file/proxy-client-cert-file",
        "hostPath /etc/kubernetes/pki",
    );
    let c = r.check("file/proxy-client-cert-file").unwrap();
    assert!(
        c.message.contains("front-proxy-client.crt does not exist"),
        "{}",
        c.message
    );
    // Without the identity the servers answer 401, and doctor says why.
    assert_fails(&r, "server/local", "no front-proxy client cert");
    let f = failing(&r);
    assert!(
        f.iter()
            .all(|id| id == "file/proxy-client-cert-file" || id.starts_with("server/")),
        "{f:?}"
    );
}

#[tokio::test]
async fn front_proxy_cn_outside_allowed_names_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let r = doctor_with(
        PkiSpec {
            front_proxy_cn: "mallory".into(),
            ..Default::default()
        },
        tmp.path(),
    )
    .await;
    assert_fails(&r, "requestheader/allowed-names", "add mallory");
    assert!(
        r.check("requestheader/allowed-names")
            .unwrap()
            .message
            .contains("front-proxy-client")
    );
    assert_fails(&r, "server/local", "--requestheader-allowed-names");
    let f = failing(&r);
    assert!(
        f.iter()
            .all(|id| id == "requestheader/allowed-names" || id.starts_with("server/")),
        "{f:?}"
    );
}

#[tokio::test]
async fn expired_serving_cert_fails_and_expiring_soon_warns() {
    let tmp = tempfile::tempdir().unwrap();
    let r = doctor_with(
        PkiSpec {
            serving_expired: true,
            ..Default::default()
        },
        tmp.path(),
    )
    .await;
    assert_fails(&r, "validity/tls-cert-file", "kubeadm certs renew");
    assert!(
        r.check("validity/tls-cert-file")
            .unwrap()
            .message
            .contains("expired")
    );
    // The chain itself is fine: only time is wrong.
    assert_eq!(
        r.check("cert/serving-chain").unwrap().verdict,
        Verdict::Pass
    );
    assert_fails(&r, "server/local", "renew");
    let f = failing(&r);
    assert!(
        f.iter()
            .all(|id| id == "validity/tls-cert-file" || id.starts_with("server/")),
        "{f:?}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let r = doctor_with(
        PkiSpec {
            serving_expires_soon: true,
            ..Default::default()
        },
        tmp.path(),
    )
    .await;
    let c = r.check("validity/tls-cert-file").unwrap();
    assert_eq!(c.verdict, Verdict::Warn, "{}", r.render_text());
    assert!(c.message.contains("expires in"), "{}", c.message);
    assert_eq!(r.verdict, Verdict::Warn);
}

#[tokio::test]
async fn serving_cert_without_the_node_ip_fails_sans() {
    let tmp = tempfile::tempdir().unwrap();
    let r = doctor_with(
        PkiSpec {
            serving_ips: vec!["10.96.0.1".parse().unwrap()],
            ..Default::default()
        },
        tmp.path(),
    )
    .await;
    assert_fails(&r, "cert/serving-sans", "certSANs");
    assert!(
        r.check("cert/serving-sans")
            .unwrap()
            .message
            .contains(NODE_IP)
    );
    // Peers verify kubernetes.default.svc, which is still there: nothing else breaks.
    assert_eq!(
        failing(&r),
        set(&["cert/serving-sans"]),
        "{}",
        r.render_text()
    );
}

#[tokio::test]
async fn no_apiserver_anywhere_is_one_failing_detect_check() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = DoctorConfig {
        manifest: tmp.path().join("kube-apiserver.yaml"),
        proc_root: tmp.path().to_owned(),
        overrides: Overrides::default(),
        node_addrs: vec![],
        upstream: None,
        upstream_ca_file: None,
        peers: vec![],
        timeout: Duration::from_secs(30),
        now: SystemTime::now(),
    };
    let r = doctor::examine(&cfg, None).await;
    assert_eq!(failing(&r), set(&["detect"]));
    assert_fails(&r, "detect", "--apiserver-manifest");
    assert!(r.render_text().contains("FAIL  detect"));
}

#[tokio::test]
async fn upstream_ca_flag_is_what_verifies_the_local_apiserver() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = setup(PkiSpec::default(), tmp.path()).await;
    // The wrong CA for the local apiserver: only that server fails, with the CA fix.
    cfg.upstream_ca_file = Some(tmp.path().join("pki/front-proxy-ca.crt"));
    let r = doctor::examine(&cfg, Some(&good_kernel())).await;
    assert_fails(&r, "server/local", "--upstream-ca-file");
    assert_eq!(failing(&r), set(&["server/local"]), "{}", r.render_text());
}
