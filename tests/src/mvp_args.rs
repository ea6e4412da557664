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

/// Start `mvp run` ([`kubeadm`] arguments, admin on `admin`) on every node of the lab and
/// wait until each is ready (its listener in the SOCKMAP, so requests are steered to it).
/// Panics with the mvp's error if one exits; the processes are killed on drop.
pub fn start_on_every_node(
    lab: &LabCluster,
    admin: &str,
    discovery_interval: &str,
) -> Vec<crate::lab::LabProcess> {
    let admin_addr: std::net::SocketAddr = admin.parse().expect("admin address");
    let mut mvps = Vec::new();
    for node in lab.nodes() {
        let args = kubeadm(lab, node.name(), admin, discovery_interval).expect("mvp arguments");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        mvps.push(lab.start_mvp(node.name(), "mvp", &args).expect("start mvp"));
    }
    for (node, mvp) in lab.nodes().iter().zip(mvps.iter_mut()) {
        crate::eventually::eventually(&format!("mvp on {} to be ready", node.name()), || {
            if let Err(e) = mvp.check_running() {
                panic!("{e}"); // exited: waiting longer cannot help
            }
            match lab.node_http_get(node.name(), admin_addr, "/readyz") {
                Ok((200, _)) => Ok(()),
                Ok((status, body)) => Err(format!("/readyz: HTTP {status} {body}")),
                Err(e) => Err(e.to_string()),
            }
        });
    }
    mvps
}
