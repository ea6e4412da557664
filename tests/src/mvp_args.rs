//! `mvp run` arguments for a lab node, as a kubeadm control-plane node would run it: the
//! apiserver's own serving pair, client CA, requestheader settings and front-proxy client
//! pair (the lab's PKI mirrors kubeadm's /etc/kubernetes/pki).
use crate::lab::{LabCluster, LabError};

/// Arguments of `mvp run` on `node` steering the node's address, admin on `admin`, polling
/// discovery every `discovery_interval` seconds.
pub fn kubeadm(
    lab: &LabCluster,
    node: &str,
    admin: &str,
    discovery_interval: &str,
) -> Result<Vec<String>, LabError> {
    let n = lab.node(node)?;
    let p = n.pki();
    let path = |p: std::path::PathBuf| p.display().to_string();
    Ok(vec![
        "run".into(),
        "--steer".into(),
        n.addr().to_string(),
        "--admin-address".into(),
        admin.into(),
        "--tls-cert-file".into(),
        path(p.apiserver_crt()),
        "--tls-private-key-file".into(),
        path(p.apiserver_key()),
        "--client-ca-file".into(),
        path(p.ca_crt()),
        "--requestheader-client-ca-file".into(),
        path(p.front_proxy_ca_crt()),
        "--requestheader-allowed-names".into(),
        crate::pki::FRONT_PROXY_CLIENT_CN.into(),
        "--requestheader-username-headers".into(),
        "X-Remote-User".into(),
        "--requestheader-group-headers".into(),
        "X-Remote-Group".into(),
        "--requestheader-extra-headers-prefix".into(),
        "X-Remote-Extra-".into(),
        "--proxy-client-cert-file".into(),
        path(p.front_proxy_client_crt()),
        "--proxy-client-key-file".into(),
        path(p.front_proxy_client_key()),
        "--discovery-interval".into(),
        discovery_interval.into(),
    ])
}
