//! Serde types for Kubernetes API discovery documents.
//!
//! Aggregated discovery (`apidiscovery.k8s.io` v2 and v2beta1 — the two versions have the
//! same shape, only `apiVersion` differs) and the legacy documents (`APIVersions` on `/api`,
//! `APIGroupList` on `/apis`, `APIGroup` on `/apis/<g>`, `APIResourceList` on
//! `/api/v1` and `/apis/<g>/<v>`).
//!
//! Field order follows the Go structs, so serialising a document a kube-apiserver produced
//! gives back the same bytes (the ETag depends on that, see [`super::etag`]). Every struct
//! keeps fields this code does not know in a flattened `extra` map so nothing is lost when a
//! newer server adds one.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `apiVersion` of aggregated discovery v2.
pub const AGGREGATED_V2_API_VERSION: &str = "apidiscovery.k8s.io/v2";
/// `apiVersion` of aggregated discovery v2beta1 (removed from kube-apiserver in 1.36).
pub const AGGREGATED_V2BETA1_API_VERSION: &str = "apidiscovery.k8s.io/v2beta1";
/// `kind` of an aggregated discovery document.
pub const AGGREGATED_LIST_KIND: &str = "APIGroupDiscoveryList";

/// Unknown fields, in document order.
pub type ExtraFields = Map<String, Value>;

/// `metav1.GroupVersionKind`: all three fields are always written (empty strings included).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

/// The subset of `metav1.ObjectMeta` discovery uses: the group name. Everything else
/// (`creationTimestamp: null` in older servers' documents, labels, …) stays in `extra`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// Which aggregated discovery version a document is (or should be) written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregatedVersion {
    V2,
    V2Beta1,
}

impl AggregatedVersion {
    pub fn api_version(self) -> &'static str {
        match self {
            AggregatedVersion::V2 => AGGREGATED_V2_API_VERSION,
            AggregatedVersion::V2Beta1 => AGGREGATED_V2BETA1_API_VERSION,
        }
    }

    /// The response `Content-Type` kube-apiserver writes for this version (no spaces, no
    /// `profile` parameter — as recorded from a real 1.36 server).
    pub fn content_type(self) -> &'static str {
        match self {
            AggregatedVersion::V2 => {
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
            }
            AggregatedVersion::V2Beta1 => {
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            }
        }
    }
}

/// `APIGroupDiscoveryList`: the body of aggregated `/api` and `/apis`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct APIGroupDiscoveryList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    /// `metav1.ListMeta`; Go always writes it (`{}` when empty).
    #[serde(default)]
    pub metadata: ExtraFields,
    #[serde(default)]
    pub items: Vec<APIGroupDiscovery>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

impl APIGroupDiscoveryList {
    /// A list with `kind`/`apiVersion` set for `version`.
    pub fn new(version: AggregatedVersion, items: Vec<APIGroupDiscovery>) -> Self {
        APIGroupDiscoveryList {
            kind: Some(AGGREGATED_LIST_KIND.to_owned()),
            api_version: Some(version.api_version().to_owned()),
            metadata: ExtraFields::new(),
            items,
            extra: ExtraFields::new(),
        }
    }

    /// The aggregated version named by `apiVersion`, if it is one we know.
    pub fn aggregated_version(&self) -> Option<AggregatedVersion> {
        match self.api_version.as_deref() {
            Some(AGGREGATED_V2_API_VERSION) => Some(AggregatedVersion::V2),
            Some(AGGREGATED_V2BETA1_API_VERSION) => Some(AggregatedVersion::V2Beta1),
            _ => None,
        }
    }
}

/// `APIGroupDiscovery`: one group with its versions, newest-preferred first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct APIGroupDiscovery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<APIVersionDiscovery>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

impl APIGroupDiscovery {
    /// The group name; the core group (served on `/api`) has none and is `""`.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }
}

/// `APIVersionDiscovery`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct APIVersionDiscovery {
    pub version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<APIResourceDiscovery>,
    /// `Current` or `Stale`; kept as text so a new value survives a round trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<String>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// `APIResourceDiscovery`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct APIResourceDiscovery {
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_kind: Option<GroupVersionKind>,
    /// `Namespaced` or `Cluster`.
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub singular_resource: String,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub short_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subresources: Vec<APISubresourceDiscovery>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// Scope value of namespaced resources.
pub const SCOPE_NAMESPACED: &str = "Namespaced";

/// `APISubresourceDiscovery`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct APISubresourceDiscovery {
    pub subresource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_kind: Option<GroupVersionKind>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_types: Vec<GroupVersionKind>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// `ServerAddressByClientCIDR`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerAddressByClientCIDR {
    #[serde(rename = "clientCIDR")]
    pub client_cidr: String,
    pub server_address: String,
}

/// Legacy `/api` document. kube-apiserver writes it without `apiVersion`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct APIVersions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    #[serde(default)]
    pub versions: Vec<String>,
    #[serde(rename = "serverAddressByClientCIDRs", default)]
    pub server_address_by_client_cidrs: Vec<ServerAddressByClientCIDR>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// `GroupVersionForDiscovery`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupVersionForDiscovery {
    pub group_version: String,
    pub version: String,
}

/// Legacy `APIGroup` (an item of `APIGroupList`, or the body of `/apis/<g>`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct APIGroup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    pub name: String,
    #[serde(default)]
    pub versions: Vec<GroupVersionForDiscovery>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_version: Option<GroupVersionForDiscovery>,
    #[serde(
        rename = "serverAddressByClientCIDRs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub server_address_by_client_cidrs: Vec<ServerAddressByClientCIDR>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// Legacy `/apis` document.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct APIGroupList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    #[serde(default)]
    pub groups: Vec<APIGroup>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// Legacy `/api/v1` and `/apis/<g>/<v>` document.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct APIResourceList {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    pub group_version: String,
    #[serde(default)]
    pub resources: Vec<APIResource>,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// Legacy `APIResource`. Subresources are entries named `<resource>/<subresource>`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct APIResource {
    pub name: String,
    #[serde(default)]
    pub singular_name: String,
    #[serde(default)]
    pub namespaced: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub short_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Not carried by aggregated discovery, so documents converted from it lack it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub storage_version_hash: String,
    #[serde(flatten)]
    pub extra: ExtraFields,
}

/// A discovery document from a server that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("invalid discovery JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// E.g. a server without aggregated discovery answering legacy `APIGroupList` JSON:
    /// it would otherwise parse as an empty aggregated list (every field has a default).
    #[error("expected {expected}, got kind {kind:?} apiVersion {api_version:?}")]
    UnexpectedKind {
        expected: &'static str,
        kind: Option<String>,
        api_version: Option<String>,
    },
    /// Legacy list whose subresource is scoped differently from its parent.
    #[error("resource {resource} and its subresource {subresource} differ in scope")]
    ScopeMismatch {
        resource: String,
        subresource: String,
    },
}

/// Parse an aggregated discovery response body, insisting on its kind and version.
pub fn parse_aggregated(body: &[u8]) -> Result<APIGroupDiscoveryList, DocumentError> {
    let list: APIGroupDiscoveryList = serde_json::from_slice(body)?;
    if list.kind.as_deref() != Some(AGGREGATED_LIST_KIND) || list.aggregated_version().is_none() {
        return Err(DocumentError::UnexpectedKind {
            expected: "apidiscovery.k8s.io APIGroupDiscoveryList",
            kind: list.kind,
            api_version: list.api_version,
        });
    }
    Ok(list)
}

/// Parse a legacy document of the given kind (`APIGroupList`, `APIResourceList`, …).
pub fn parse_legacy<T: serde::de::DeserializeOwned>(
    body: &[u8],
    expected_kind: &'static str,
) -> Result<T, DocumentError> {
    let value: Value = serde_json::from_slice(body)?;
    let kind = value.get("kind").and_then(Value::as_str);
    if kind != Some(expected_kind) {
        return Err(DocumentError::UnexpectedKind {
            expected: expected_kind,
            kind: kind.map(str::to_owned),
            api_version: value
                .get("apiVersion")
                .and_then(Value::as_str)
                .map(str::to_owned),
        });
    }
    Ok(serde_json::from_value(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::discovery;

    const RELEASES: [&str; 3] = ["k8s-1.33", "k8s-1.36", "k8s-1.37-dev"];

    fn round_trips<T: serde::de::DeserializeOwned + Serialize>(bytes: &[u8]) -> T {
        let original: Value = serde_json::from_slice(bytes).unwrap();
        let typed: T = serde_json::from_slice(bytes).unwrap();
        assert_eq!(serde_json::to_value(&typed).unwrap(), original);
        typed
    }

    #[test]
    fn aggregated_fixtures_round_trip_losslessly() {
        for release in RELEASES {
            let list: APIGroupDiscoveryList =
                round_trips(&discovery(release, "aggregated_v2.json"));
            assert_eq!(
                list.aggregated_version(),
                Some(AggregatedVersion::V2),
                "{release}"
            );
            // README: the same 22 groups in all three.
            assert_eq!(list.items.len(), 22, "{release}");
        }
    }

    #[test]
    fn legacy_fixtures_round_trip_losslessly() {
        for release in RELEASES {
            let versions: APIVersions = round_trips(&discovery(release, "api.json"));
            assert_eq!(versions.versions, ["v1"]);
            let core: APIResourceList = round_trips(&discovery(release, "api__v1.json"));
            assert_eq!(core.group_version, "v1");
            assert!(core.resources.iter().any(|r| r.name == "pods/resize"));
        }
    }

    #[test]
    fn creation_timestamp_null_of_older_servers_is_kept() {
        let list: APIGroupDiscoveryList =
            serde_json::from_slice(&discovery("k8s-1.33", "aggregated_v2.json")).unwrap();
        assert_eq!(
            list.items[0].metadata.extra.get("creationTimestamp"),
            Some(&Value::Null)
        );
    }

    #[test]
    fn unknown_fields_survive_at_every_level() {
        let text = r#"{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2beta1",
            "metadata":{"resourceVersion":"7"},"future":1,
            "items":[{"metadata":{"name":"g","labels":{"a":"b"}},"x":true,
              "versions":[{"version":"v1","freshness":"Unknown","y":[1],
                "resources":[{"resource":"rs","scope":"Cluster","singularResource":"r",
                  "verbs":["get"],"z":"keep",
                  "subresources":[{"subresource":"s","verbs":[],"w":{}}]}]}]}]}"#;
        let list: APIGroupDiscoveryList = round_trips(text.as_bytes());
        assert_eq!(list.aggregated_version(), Some(AggregatedVersion::V2Beta1));
        assert_eq!(list.items[0].name(), "g");
        assert_eq!(
            list.items[0].versions[0].freshness.as_deref(),
            Some("Unknown")
        );
    }

    #[test]
    fn core_group_has_empty_name() {
        let list: APIGroupDiscoveryList =
            serde_json::from_str(r#"{"items":[{"metadata":{},"versions":[{"version":"v1"}]}]}"#)
                .unwrap();
        assert_eq!(list.items[0].name(), "");
        assert_eq!(list.aggregated_version(), None);
    }

    #[test]
    fn invalid_documents_are_errors_not_panics() {
        for bad in [
            "",
            "[]",
            "{\"items\":{}}",
            "{\"items\":[{\"versions\":[{}]}]}",
            "{\"items\":[{\"versions\":[{\"version\":\"v1\",\"resources\":[{\"verbs\":1}]}]}]}",
            "{\"items\":[",
        ] {
            assert!(
                serde_json::from_str::<APIGroupDiscoveryList>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn parse_aggregated_insists_on_the_kind() {
        let real = crate::test_fixtures::real_apiserver("discovery-apis-aggregated-v2.json");
        assert_eq!(parse_aggregated(&real).unwrap().items.len(), 20);
        let legacy = crate::test_fixtures::real_apiserver("discovery-apis-legacy.json");
        // Plain serde would accept it as an empty list; the typed parse does not.
        assert!(
            serde_json::from_slice::<APIGroupDiscoveryList>(&legacy)
                .unwrap()
                .items
                .is_empty()
        );
        assert!(matches!(
            parse_aggregated(&legacy),
            Err(DocumentError::UnexpectedKind { kind: Some(k), .. }) if k == "APIGroupList"
        ));
        assert!(matches!(
            parse_aggregated(b"{"),
            Err(DocumentError::Json(_))
        ));
        let other_version =
            br#"{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v3","items":[]}"#;
        assert!(matches!(
            parse_aggregated(other_version),
            Err(DocumentError::UnexpectedKind { .. })
        ));
        let v2beta1 = br#"{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2beta1","items":[]}"#;
        assert!(parse_aggregated(v2beta1).is_ok());
    }

    #[test]
    fn parse_legacy_checks_kind() {
        let body = crate::test_fixtures::real_apiserver("discovery-apis-legacy.json");
        let list: APIGroupList = parse_legacy(&body, "APIGroupList").unwrap();
        assert_eq!(list.groups.len(), 20);
        assert!(parse_legacy::<APIResourceList>(&body, "APIResourceList").is_err());
        assert!(matches!(
            parse_legacy::<APIGroupList>(b"[]", "APIGroupList"),
            Err(DocumentError::UnexpectedKind { kind: None, .. })
        ));
        assert!(matches!(
            parse_legacy::<APIGroupList>(br#"{"kind":"APIGroupList","groups":3}"#, "APIGroupList"),
            Err(DocumentError::Json(_))
        ));
    }

    #[test]
    fn truncated_or_corrupted_documents_are_errors_not_panics() {
        use rand::{Rng, SeedableRng};
        let body = crate::test_fixtures::real_apiserver("discovery-api-aggregated-v2.json");
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for cut in (0..body.len() - 2).step_by(97) {
            assert!(parse_aggregated(&body[..cut]).is_err(), "cut at {cut}");
        }
        for _ in 0..500 {
            let mut corrupted = body.clone();
            let at = rng.gen_range(0..corrupted.len());
            corrupted[at] = rng.r#gen();
            let _ = parse_aggregated(&corrupted);
        }
    }
}
