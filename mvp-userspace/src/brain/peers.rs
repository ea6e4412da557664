//! The peer set: apiserver addresses from the `kubernetes` EndpointSlices (written by the
//! apiservers themselves) or, where EndpointSlices are not served, the legacy `kubernetes`
//! Endpoints; plus `--peer` flags; minus this node's own addresses.
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

/// Where the apiservers list themselves.
pub const ENDPOINT_SLICES_PATH: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dkubernetes";
/// The fallback for servers without `discovery.k8s.io/v1`.
pub const ENDPOINTS_PATH: &str = "/api/v1/namespaces/default/endpoints/kubernetes";

/// A peer-set document that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the kubernetes endpoints: {0}")]
pub struct PeerSetError(String);

fn port_of(port: &Value) -> Option<u16> {
    port.get("port")?.as_u64()?.try_into().ok()
}

fn https_port(ports: Option<&Value>) -> Option<u16> {
    let ports = ports?.as_array()?;
    ports
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some("https"))
        .or_else(|| ports.first())
        .and_then(port_of)
}

/// Ready addresses from an `EndpointSliceList`.
pub fn from_endpoint_slices(body: &[u8]) -> Result<BTreeSet<SocketAddr>, PeerSetError> {
    let list: Value = serde_json::from_slice(body).map_err(|e| PeerSetError(e.to_string()))?;
    let items = list
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| PeerSetError("no items in the EndpointSliceList".into()))?;
    let mut out = BTreeSet::new();
    for slice in items {
        let Some(port) = https_port(slice.get("ports")) else {
            continue;
        };
        for endpoint in slice
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // `ready` unset means ready (the API's convention).
            let ready = endpoint
                .pointer("/conditions/ready")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            for address in endpoint
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(ip) = address.as_str().and_then(|a| a.parse::<IpAddr>().ok()) {
                    out.insert(SocketAddr::new(ip, port));
                }
            }
        }
    }
    Ok(out)
}

/// Ready addresses from the legacy `Endpoints` object.
pub fn from_endpoints(body: &[u8]) -> Result<BTreeSet<SocketAddr>, PeerSetError> {
    let object: Value = serde_json::from_slice(body).map_err(|e| PeerSetError(e.to_string()))?;
    let mut out = BTreeSet::new();
    for subset in object
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(port) = https_port(subset.get("ports")) else {
            continue;
        };
        for address in subset
            .get("addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(ip) = address
                .get("ip")
                .and_then(Value::as_str)
                .and_then(|a| a.parse::<IpAddr>().ok())
            {
                out.insert(SocketAddr::new(ip, port));
            }
        }
    }
    Ok(out)
}

/// The peers: `discovered` ∪ `static_peers`, without `own` (this node's apiserver addresses,
/// matched by IP: the EndpointSlice port is the apiserver's, which may differ from a VIP's).
pub fn peer_set(
    discovered: &BTreeSet<SocketAddr>,
    static_peers: &[SocketAddr],
    own: &[IpAddr],
) -> BTreeSet<SocketAddr> {
    discovered
        .iter()
        .chain(static_peers)
        .map(|a| crate::addr::canonical(*a))
        .filter(|a| !own.contains(&a.ip()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_give_ready_addresses_with_the_https_port() {
        let body = br#"{"kind":"EndpointSliceList","items":[
            {"addressType":"IPv4","ports":[{"name":"https","port":6443}],
             "endpoints":[{"addresses":["198.18.0.11"],"conditions":{"ready":true}},
                          {"addresses":["198.18.0.12"]},
                          {"addresses":["198.18.0.13"],"conditions":{"ready":false}}]}]}"#;
        let got: Vec<String> = from_endpoint_slices(body)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["198.18.0.11:6443", "198.18.0.12:6443"]);
        assert!(from_endpoint_slices(br#"{"kind":"Status"}"#).is_err());
    }

    #[test]
    fn legacy_endpoints_are_read() {
        let body = br#"{"kind":"Endpoints","subsets":[{"addresses":[{"ip":"10.0.0.1"},{"ip":"10.0.0.2"}],"ports":[{"name":"https","port":443}]}]}"#;
        let got: Vec<String> = from_endpoints(body)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.0.0.1:443", "10.0.0.2:443"]);
    }

    #[test]
    fn own_addresses_are_excluded_and_static_peers_added() {
        let discovered: BTreeSet<SocketAddr> = ["198.18.0.11:6443", "198.18.0.12:6443"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let own = ["198.18.0.11".parse().unwrap()];
        let peers = peer_set(&discovered, &["10.9.9.9:6443".parse().unwrap()], &own);
        let got: Vec<String> = peers.iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.9.9.9:6443", "198.18.0.12:6443"]);
    }
}
