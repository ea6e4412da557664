//! Zero-config detection against kubeadm's real manifest (paths rewritten to a generated
//! PKI) and against fake /proc trees.
mod opsupport;

use std::net::IpAddr;
use std::path::PathBuf;

use mvp::detect::{self, Overrides, Source};
use opsupport::{NODE_IP, Pki, PkiSpec};

fn nodes() -> Vec<IpAddr> {
    ["127.0.0.1", NODE_IP, "10.0.2.15", "::1", "fe80::1"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect()
}

#[test]
fn kubeadm_manifest_gives_every_setting_with_its_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&tmp.path().join("pki"), &PkiSpec::default());
    let manifest = opsupport::write_manifest(tmp.path(), &pki.dir);
    let empty_proc = tmp.path().join("proc");
    std::fs::create_dir(&empty_proc).unwrap();

    let d = detect::detect(&manifest, &empty_proc, &Overrides::default(), &nodes()).unwrap();
    let from = Source::Manifest {
        path: manifest.clone(),
    };
    assert_eq!(d.origin, Some(from.clone()));
    assert_eq!(d.secure_port.value, 6443);
    assert_eq!(d.secure_port.source, from);
    assert_eq!(
        d.advertise_address.as_ref().unwrap().value,
        NODE_IP.parse::<IpAddr>().unwrap()
    );
    // kubeadm leaves --bind-address at its 0.0.0.0 default: every non-loopback,
    // non-link-local node address is steered too.
    assert_eq!(d.bind_address.source, Source::Default);
    let steer: Vec<(String, Source)> = d
        .steer
        .iter()
        .map(|s| (s.value.to_string(), s.source.clone()))
        .collect();
    assert_eq!(
        steer,
        [
            ("10.0.2.15:6443".to_owned(), Source::NodeAddresses),
            (format!("{NODE_IP}:6443"), from.clone()),
        ]
    );
    let p = |name: &str| pki.dir.join(name);
    assert_eq!(d.tls_cert_file.value, p("apiserver.crt"));
    assert_eq!(d.tls_private_key_file.value, p("apiserver.key"));
    assert_eq!(d.client_ca_file.as_ref().unwrap().value, p("ca.crt"));
    assert_eq!(
        d.requestheader_client_ca_file.as_ref().unwrap().value,
        p("front-proxy-ca.crt")
    );
    assert_eq!(d.requestheader_allowed_names.value, ["front-proxy-client"]);
    assert_eq!(d.requestheader_username_headers.value, ["X-Remote-User"]);
    assert_eq!(d.requestheader_group_headers.value, ["X-Remote-Group"]);
    assert_eq!(
        d.requestheader_extra_headers_prefix.value,
        ["X-Remote-Extra-"]
    );
    // kubeadm sets no uid headers and no peer CA: the peer CA falls back to the client CA.
    assert!(d.requestheader_uid_headers.value.is_empty());
    assert_eq!(d.requestheader_uid_headers.source, Source::Default);
    assert_eq!(
        d.proxy_client_cert_file.as_ref().unwrap().value,
        p("front-proxy-client.crt")
    );
    assert_eq!(
        d.proxy_client_key_file.as_ref().unwrap().value,
        p("front-proxy-client.key")
    );
    let peer_ca = d.peer_ca_file.as_ref().unwrap();
    assert_eq!(peer_ca.value, p("ca.crt"));
    assert_eq!(peer_ca.source, from);

    // The report table names the manifest for detected rows.
    let rows = d.rows();
    let row = rows
        .iter()
        .find(|r| r.setting == "--tls-cert-file")
        .unwrap();
    assert!(row.source.contains(manifest.to_str().unwrap()), "{row:?}");
}

#[test]
fn explicit_flags_override_each_detected_value() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&tmp.path().join("pki"), &PkiSpec::default());
    let manifest = opsupport::write_manifest(tmp.path(), &pki.dir);
    let o = Overrides {
        secure_port: Some(7443),
        tls_cert_file: Some(PathBuf::from("/x/serving.crt")),
        peer_ca_file: Some(PathBuf::from("/x/peer-ca.crt")),
        requestheader_uid_headers: Some(vec!["X-Remote-Uid".into()]),
        steer_vip: vec!["192.168.56.100".parse().unwrap()],
        ..Default::default()
    };
    let d = detect::detect(&manifest, tmp.path(), &o, &[]).unwrap();
    assert_eq!(
        (d.secure_port.value, &d.secure_port.source),
        (7443, &Source::Flag)
    );
    assert_eq!(d.tls_cert_file.value, PathBuf::from("/x/serving.crt"));
    assert_eq!(d.tls_cert_file.source, Source::Flag);
    // Not overridden: still the manifest's.
    assert!(matches!(
        d.tls_private_key_file.source,
        Source::Manifest { .. }
    ));
    assert_eq!(d.peer_ca_file.unwrap().source, Source::Flag);
    assert_eq!(d.requestheader_uid_headers.value, ["X-Remote-Uid"]);
    let steer: Vec<String> = d.steer.iter().map(|s| s.value.to_string()).collect();
    assert_eq!(
        steer,
        [format!("{NODE_IP}:7443"), "192.168.56.100:7443".into()]
    );
}

#[test]
fn missing_manifest_falls_back_to_the_running_apiserver() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(&tmp.path().join("pki"), &PkiSpec::default());
    let proc_root = tmp.path().join("proc");
    // The real command line in `--flag value` form, with a full path as argv[0], next to
    // unrelated processes (one merely mentioning kube-apiserver in an argument).
    let argv = opsupport::manifest_argv(&pki.dir);
    let mut spaced = vec!["/usr/local/bin/kube-apiserver".to_owned()];
    for a in &argv[1..] {
        match a.split_once('=') {
            Some((k, v)) => {
                spaced.push(k.to_owned());
                spaced.push(v.to_owned());
            }
            None => spaced.push(a.clone()),
        }
    }
    opsupport::fake_proc(
        &proc_root,
        &[
            (1, vec!["/sbin/init".into()]),
            (77, vec!["grep".into(), "kube-apiserver".into()]),
            (4242, spaced),
        ],
    );
    let d = detect::detect(
        &tmp.path().join("no-such-manifest.yaml"),
        &proc_root,
        &Overrides::default(),
        &[],
    )
    .unwrap();
    assert_eq!(d.origin, Some(Source::Process { pid: 4242 }));
    assert_eq!(d.tls_cert_file.value, pki.dir.join("apiserver.crt"));
    assert_eq!(d.tls_cert_file.source, Source::Process { pid: 4242 });
    assert_eq!(d.requestheader_allowed_names.value, ["front-proxy-client"]);
    let steer: Vec<String> = d.steer.iter().map(|s| s.value.to_string()).collect();
    assert_eq!(steer, [format!("{NODE_IP}:6443")]);
}

#[test]
fn neither_source_is_one_clear_error_naming_both_places_and_the_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = tmp.path().join("kube-apiserver.yaml");
    let proc_root = tmp.path().join("proc");
    opsupport::fake_proc(&proc_root, &[(1, vec!["/sbin/init".into()])]);
    let e = detect::detect(&manifest, &proc_root, &Overrides::default(), &[]).unwrap_err();
    let line = e.to_string();
    assert!(!line.contains('\n'), "{line}");
    for want in [
        manifest.to_str().unwrap(),
        proc_root.to_str().unwrap(),
        "--apiserver-manifest",
        "--tls-cert-file",
        "--steer",
    ] {
        assert!(line.contains(want), "missing {want:?} in {line}");
    }

    // Enough explicit flags need no apiserver at all.
    let o = Overrides {
        tls_cert_file: Some("/a.crt".into()),
        tls_private_key_file: Some("/a.key".into()),
        steer: vec!["10.0.0.1:6443".parse().unwrap()],
        ..Default::default()
    };
    let d = detect::detect(&manifest, &proc_root, &o, &[]).unwrap();
    assert_eq!(d.origin, None);
    assert_eq!(d.steer[0].source, Source::Flag);
}

#[test]
fn a_manifest_that_is_not_kube_apiserver_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m.yaml");
    std::fs::write(
        &m,
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: etcd\n    command: [etcd]\n",
    )
    .unwrap();
    let e = detect::detect(&m, tmp.path(), &Overrides::default(), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not a kube-apiserver static pod manifest"),
        "{e}"
    );
    std::fs::write(&m, "{{{{ not yaml").unwrap();
    let e = detect::detect(&m, tmp.path(), &Overrides::default(), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains(m.to_str().unwrap()), "{e}");
}
