//! Services: kube-apiserver's defaults and cluster IP allocation, shared by every lab
//! apiserver through etcd. A cluster IP is reserved under `<prefix>/ranges/serviceips/<ip>`
//! (value: the Service's key) in the same transaction that creates the Service, and released
//! in the one that deletes it; a reservation whose Service is gone (deleted with its
//! namespace) is reclaimed on the next collision. Dynamic IPs come from the lab's service
//! range 10.96.0.0/16 (the recorded kube-apiserver's `--service-cluster-ip-range`), above
//! 10.96.0.15 (kube keeps the low addresses for static ones such as 10.96.0.1).
use std::net::Ipv4Addr;

use rand::Rng;
use serde_json::{Map, Value, json};

use super::object::object_field;

/// The lab's service range: 10.96.0.0/16.
const RANGE_BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const RANGE_SIZE: u32 = 1 << 16;

/// The cluster IP a Service asks for: `Some(ip)` explicit, `None` to allocate;
/// `Err(())` for a headless Service or a type without a cluster IP (no reservation).
pub(super) fn requested_ip(obj: &Value) -> Result<Option<String>, ()> {
    let ty = obj
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if ty == "ExternalName" {
        return Err(());
    }
    let ip = obj
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .or_else(|| obj.pointer("/spec/clusterIPs/0").and_then(Value::as_str))
        .filter(|s| !s.is_empty());
    match ip {
        Some("None") => Err(()),
        Some(ip) => Ok(Some(ip.to_string())),
        None => Ok(None),
    }
}

/// A random dynamic IP of the range.
pub(super) fn random_ip() -> String {
    let offset = rand::thread_rng().gen_range(16..RANGE_SIZE - 1);
    Ipv4Addr::from(RANGE_BASE + offset).to_string()
}

/// The reservation key of `ip`.
pub(super) fn ip_key(prefix: &str, ip: &str) -> String {
    format!("{prefix}/ranges/serviceips/{ip}")
}

/// Apply kube's Service defaults, with `ip` as the cluster IP when one is reserved.
pub(super) fn default_service(obj: &mut Value, ip: Option<&str>) {
    let spec = object_field(obj, "spec");
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    spec.insert("type".into(), json!(ty));
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.entry("protocol").or_insert_with(|| json!("TCP"));
            if !p.contains_key("targetPort")
                && let Some(port) = p.get("port").cloned()
            {
                p.insert("targetPort".into(), port);
            }
        }
    }
    if ty != "ExternalName" {
        if let Some(ip) = ip {
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        } else if spec.get("clusterIP").and_then(Value::as_str) == Some("None") {
            spec.insert("clusterIPs".into(), json!(["None"]));
        }
        spec.entry("sessionAffinity")
            .or_insert_with(|| json!("None"));
        spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
        spec.entry("ipFamilyPolicy")
            .or_insert_with(|| json!("SingleStack"));
        spec.entry("internalTrafficPolicy")
            .or_insert_with(|| json!("Cluster"));
    }
    reorder(spec);
    obj["status"] = json!({"loadBalancer": {}});
}

/// ServiceSpec fields in the Go struct's order.
fn reorder(spec: &mut Map<String, Value>) {
    const ORDER: &[&str] = &[
        "ports",
        "selector",
        "clusterIP",
        "clusterIPs",
        "type",
        "externalIPs",
        "sessionAffinity",
        "loadBalancerIP",
        "loadBalancerSourceRanges",
        "externalName",
        "externalTrafficPolicy",
        "healthCheckNodePort",
        "publishNotReadyAddresses",
        "sessionAffinityConfig",
        "ipFamilies",
        "ipFamilyPolicy",
        "allocateLoadBalancerNodePorts",
        "loadBalancerClass",
        "internalTrafficPolicy",
        "trafficDistribution",
    ];
    let mut out = Map::new();
    for k in ORDER {
        if let Some(v) = spec.shift_remove(*k) {
            out.insert((*k).to_string(), v);
        }
    }
    out.append(spec);
    *spec = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_ips() {
        let mut s = json!({"spec": {"ports": [{"port": 80}], "selector": {"a": "b"}}});
        assert_eq!(requested_ip(&s), Ok(None));
        default_service(&mut s, Some("10.96.7.7"));
        assert_eq!(
            s["spec"],
            json!({"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}], "selector": {"a": "b"},
                "clusterIP": "10.96.7.7", "clusterIPs": ["10.96.7.7"], "type": "ClusterIP", "sessionAffinity": "None",
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"})
        );
        assert_eq!(
            requested_ip(&json!({"spec": {"clusterIP": "None"}})),
            Err(())
        );
        let ip: Ipv4Addr = random_ip().parse().unwrap();
        assert_eq!(ip.octets()[..2], [10, 96]);
        assert!(u32::from(ip) - RANGE_BASE >= 16);
    }
}
