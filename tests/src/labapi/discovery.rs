//! Discovery documents as kube-apiserver serves them: legacy `/api` (`APIVersions`),
//! `/apis` (`APIGroupList`), `/apis/<g>` (`APIGroup`), `/api/v1` and `/apis/<g>/<v>`
//! (`APIResourceList`), and aggregated discovery (`APIGroupDiscoveryList`) on `/api` and
//! `/apis` chosen by `Accept`.
use serde::Serialize;

use super::surface::{ApiResource, GroupDiscovery, Surface, sha512_upper_hex};

/// `GroupVersionForDiscovery`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupVersionRef {
    pub group_version: String,
    pub version: String,
}

/// `APIGroup` (inside `APIGroupList` it has no kind/apiVersion).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiGroup {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<&'static str>,
    pub name: String,
    pub versions: Vec<GroupVersionRef>,
    pub preferred_version: GroupVersionRef,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiGroupList {
    kind: &'static str,
    api_version: &'static str,
    groups: Vec<ApiGroup>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServerAddress {
    #[serde(rename = "clientCIDR")]
    client_cidr: &'static str,
    server_address: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiVersions {
    kind: &'static str,
    versions: Vec<&'static str>,
    #[serde(rename = "serverAddressByClientCIDRs")]
    server_address_by_client_cidrs: Vec<ServerAddress>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiResourceList<'a> {
    kind: &'static str,
    /// kube-apiserver leaves it out on `/api/v1` and writes `v1` on `/apis/<g>/<v>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    api_version: Option<&'static str>,
    group_version: String,
    resources: &'a [ApiResource],
}

#[derive(Serialize, Default)]
struct EmptyMeta {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupDiscoveryList<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: EmptyMeta,
    items: &'a [GroupDiscovery],
}

/// What kube-apiserver hashes for the ETag: the list without its TypeMeta.
#[derive(Serialize)]
struct GroupDiscoveryListForHash<'a> {
    metadata: EmptyMeta,
    items: &'a [GroupDiscovery],
}

/// An aggregated document, pre-serialised with its ETag.
#[derive(Debug, Clone)]
pub struct Aggregated {
    /// Compact JSON (with trailing newline) for `apidiscovery.k8s.io/v2`.
    pub v2: bytes::Bytes,
    /// The same for `v2beta1`, when the emulated version still served it.
    pub v2beta1: Option<bytes::Bytes>,
    /// Quoted uppercase-hex SHA-512.
    pub etag: String,
    items: Vec<GroupDiscovery>,
}

impl Aggregated {
    fn new(items: Vec<GroupDiscovery>, serve_v2beta1: bool) -> Aggregated {
        let hash = serde_json::to_vec(&GroupDiscoveryListForHash {
            metadata: EmptyMeta {},
            items: &items,
        })
        .expect("serialises");
        let doc = |api_version| {
            super::wire::json_bytes(
                &GroupDiscoveryList {
                    kind: "APIGroupDiscoveryList",
                    api_version,
                    metadata: EmptyMeta {},
                    items: &items,
                },
                false,
            )
        };
        Aggregated {
            // Shared, not copied, per request: clients poll these documents.
            v2: doc("apidiscovery.k8s.io/v2").into(),
            v2beta1: serve_v2beta1.then(|| doc("apidiscovery.k8s.io/v2beta1").into()),
            etag: format!("\"{}\"", sha512_upper_hex(&hash)),
            items,
        }
    }

    /// The document re-encoded for a pretty-printing client.
    pub fn pretty(&self, api_version: &'static str) -> Vec<u8> {
        super::wire::json_bytes(
            &GroupDiscoveryList {
                kind: "APIGroupDiscoveryList",
                api_version,
                metadata: EmptyMeta {},
                items: &self.items,
            },
            true,
        )
    }
}

/// Every discovery document, computed once at start-up.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub surface: Surface,
    /// `/api` aggregated (core group only).
    pub api: Aggregated,
    /// `/apis` aggregated (every other group).
    pub apis: Aggregated,
    advertise: String,
}

fn gv_ref(group: &str, version: &str) -> GroupVersionRef {
    GroupVersionRef {
        group_version: format!("{group}/{version}"),
        version: version.to_string(),
    }
}

impl Discovery {
    /// `advertise` is `host:port` for `serverAddressByClientCIDRs`.
    pub fn new(surface: Surface, advertise: String, serve_v2beta1: bool) -> Discovery {
        let api = Aggregated::new(vec![surface.core().clone()], serve_v2beta1);
        let apis = Aggregated::new(surface.groups().to_vec(), serve_v2beta1);
        Discovery {
            surface,
            api,
            apis,
            advertise,
        }
    }

    /// `/api` legacy.
    pub fn api_versions(&self) -> impl Serialize + '_ {
        ApiVersions {
            kind: "APIVersions",
            versions: vec!["v1"],
            server_address_by_client_cidrs: vec![ServerAddress {
                client_cidr: "0.0.0.0/0",
                server_address: self.advertise.clone(),
            }],
        }
    }

    fn api_group(g: &GroupDiscovery, typed: bool) -> Option<ApiGroup> {
        let versions: Vec<GroupVersionRef> = g
            .versions
            .iter()
            .map(|v| gv_ref(&g.metadata.name, &v.version))
            .collect();
        Some(ApiGroup {
            kind: typed.then_some("APIGroup"),
            api_version: typed.then_some("v1"),
            name: g.metadata.name.clone(),
            // kube-apiserver lists the preferred version first.
            preferred_version: versions.first()?.clone(),
            versions,
        })
    }

    /// `/apis` legacy.
    pub fn group_list(&self) -> impl Serialize + '_ {
        ApiGroupList {
            kind: "APIGroupList",
            api_version: "v1",
            groups: self
                .surface
                .groups()
                .iter()
                .filter_map(|g| Self::api_group(g, false))
                .collect(),
        }
    }

    /// `/apis/<group>`.
    pub fn group(&self, name: &str) -> Option<ApiGroup> {
        let g = self
            .surface
            .groups()
            .iter()
            .find(|g| g.metadata.name == name)?;
        Self::api_group(g, true)
    }

    /// `/api/v1` or `/apis/<g>/<v>` as JSON bytes.
    pub fn resource_list(&self, group: &str, version: &str, pretty: bool) -> Option<Vec<u8>> {
        let resources = self.surface.legacy_resources(group, version)?;
        let list = ApiResourceList {
            kind: "APIResourceList",
            api_version: (!group.is_empty()).then_some("v1"),
            group_version: if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            },
            resources: &resources,
        };
        Some(super::wire::json_bytes(&list, pretty))
    }
}

/// What a discovery request's `Accept` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryFormat {
    Legacy,
    AggregatedV2,
    AggregatedV2Beta1,
}

/// One media range of an `Accept` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRange {
    pub essence: String,
    pub params: Vec<(String, String)>,
}

impl MediaRange {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `Accept` into media ranges in the client's order (kube-apiserver honours the
/// order, not q-values, when several types are acceptable).
pub fn parse_accept(headers: &http::HeaderMap) -> Vec<MediaRange> {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';').map(str::trim);
            let essence = parts.next()?.to_ascii_lowercase();
            if essence.is_empty() {
                return None;
            }
            let params = parts
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| {
                    (
                        k.trim().to_ascii_lowercase(),
                        v.trim().trim_matches('"').to_string(),
                    )
                })
                .collect();
            Some(MediaRange { essence, params })
        })
        .collect()
}

/// Chooses the discovery format; `None` means 406.
pub fn negotiate(ranges: &[MediaRange], serve_v2beta1: bool) -> Option<DiscoveryFormat> {
    if ranges.is_empty() {
        return Some(DiscoveryFormat::Legacy);
    }
    for r in ranges {
        let json_like = matches!(
            r.essence.as_str(),
            "application/json" | "application/*" | "*/*"
        );
        if !json_like {
            continue;
        }
        match (r.param("g"), r.param("v"), r.param("as")) {
            (None, None, None) => return Some(DiscoveryFormat::Legacy),
            (Some("apidiscovery.k8s.io"), Some("v2"), Some("APIGroupDiscoveryList")) => {
                return Some(DiscoveryFormat::AggregatedV2);
            }
            (Some("apidiscovery.k8s.io"), Some("v2beta1"), Some("APIGroupDiscoveryList"))
                if serve_v2beta1 =>
            {
                return Some(DiscoveryFormat::AggregatedV2Beta1);
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> Vec<MediaRange> {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::ACCEPT, v.parse().unwrap());
        parse_accept(&h)
    }

    #[test]
    fn negotiation() {
        use DiscoveryFormat::*;
        let v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
        let b1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
        assert_eq!(negotiate(&[], false), Some(Legacy));
        assert_eq!(negotiate(&accept("*/*"), false), Some(Legacy));
        assert_eq!(negotiate(&accept("application/json"), false), Some(Legacy));
        assert_eq!(negotiate(&accept(v2), false), Some(AggregatedV2));
        assert_eq!(
            negotiate(&accept(&format!("{v2};profile=nopeer")), false),
            Some(AggregatedV2)
        );
        assert_eq!(
            negotiate(&accept(&format!("{v2},{b1},application/json")), true),
            Some(AggregatedV2)
        );
        assert_eq!(negotiate(&accept(b1), false), None);
        assert_eq!(negotiate(&accept(b1), true), Some(AggregatedV2Beta1));
        assert_eq!(
            negotiate(&accept(&format!("{b1},application/json")), false),
            Some(Legacy)
        );
        assert_eq!(negotiate(&accept("application/xml"), false), None);
    }
}
