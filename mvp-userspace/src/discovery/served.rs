//! Per-server "served set": which (group, version, resource, subresource) a server serves,
//! built once from its aggregated `/api` + `/apis` documents, looked up by hashing.
//!
//! Plus the exclusion set: group/versions provided by CRDs or aggregated APIServices. Those
//! are served by whichever apiserver receives the request (CRDs are shared through etcd,
//! APIServices are proxied by every aggregator), so they are never routed to a peer, and a
//! peer's snapshot of them may be stale (upstream-mvp.md §3.3).

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use super::model::{APIGroupDiscovery, APIGroupDiscoveryList};

/// subresource names of one resource.
type Subresources = HashSet<String>;

/// What one server serves. Core group is `""`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedSet {
    /// group → version → resource → subresources.
    groups: HashMap<String, HashMap<String, HashMap<String, Subresources>>>,
}

impl ServedSet {
    /// From a server's documents (its `/api` and `/apis` aggregated lists).
    pub fn from_documents<'a>(
        documents: impl IntoIterator<Item = &'a APIGroupDiscoveryList>,
    ) -> Self {
        let mut served = ServedSet::default();
        for document in documents {
            served.add_groups(&document.items);
        }
        served
    }

    /// From group lists directly.
    pub fn from_groups(groups: &[APIGroupDiscovery]) -> Self {
        let mut served = ServedSet::default();
        served.add_groups(groups);
        served
    }

    fn add_groups(&mut self, groups: &[APIGroupDiscovery]) {
        for group in groups {
            let versions = self.groups.entry(group.name().to_owned()).or_default();
            for version in &group.versions {
                let resources = versions.entry(version.version.clone()).or_default();
                for resource in &version.resources {
                    resources
                        .entry(resource.resource.clone())
                        .or_default()
                        .extend(resource.subresources.iter().map(|s| s.subresource.clone()));
                }
            }
        }
    }

    fn subresources(&self, group: &str, version: &str, resource: &str) -> Option<&Subresources> {
        self.groups.get(group)?.get(version)?.get(resource)
    }

    /// Whether the server serves `resource` (ignoring subresources, as upstream does).
    pub fn serves_resource(&self, group: &str, version: &str, resource: &str) -> bool {
        self.subresources(group, version, resource).is_some()
    }

    /// Whether the server serves `resource`, and `subresource` of it when given.
    pub fn serves(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        subresource: Option<&str>,
    ) -> bool {
        match (self.subresources(group, version, resource), subresource) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(subresources), Some(sub)) => subresources.contains(sub),
        }
    }

    /// Whether the server serves the group/version at all.
    pub fn serves_group_version(&self, group: &str, version: &str) -> bool {
        self.groups
            .get(group)
            .is_some_and(|v| v.contains_key(version))
    }

    /// Every (group, version, resource, subresource) served; subresource `None` for the
    /// resource itself. Unordered.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, &str, Option<&str>)> + '_ {
        self.groups.iter().flat_map(|(group, versions)| {
            versions.iter().flat_map(move |(version, resources)| {
                resources.iter().flat_map(move |(resource, subs)| {
                    std::iter::once((group.as_str(), version.as_str(), resource.as_str(), None))
                        .chain(subs.iter().map(move |sub| {
                            (
                                group.as_str(),
                                version.as_str(),
                                resource.as_str(),
                                Some(sub.as_str()),
                            )
                        }))
                })
            })
        })
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Group/versions never routed to peers (CRD- and APIService-backed). Core is `""`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExclusionSet {
    group_versions: HashMap<String, HashSet<String>>,
}

impl<G: Into<String>, V: Into<String>> FromIterator<(G, V)> for ExclusionSet {
    fn from_iter<I: IntoIterator<Item = (G, V)>>(iter: I) -> Self {
        let mut set = ExclusionSet::default();
        for (group, version) in iter {
            set.insert(group, version);
        }
        set
    }
}

/// A CRD or APIService list that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExclusionError {
    #[error("invalid {kind} list: {source}")]
    InvalidList {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
struct ItemList<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
}

#[derive(Deserialize)]
struct ApiService {
    spec: ApiServiceSpec,
}

#[derive(Deserialize)]
struct ApiServiceSpec {
    #[serde(default)]
    group: String,
    version: String,
    /// `null` for the built-in ("Local") APIServices every apiserver registers for its own
    /// groups; set for aggregated APIs served by an extension apiserver.
    #[serde(default)]
    service: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Crd {
    spec: CrdSpec,
}

#[derive(Deserialize)]
struct CrdSpec {
    group: String,
    #[serde(default)]
    versions: Vec<CrdVersion>,
}

#[derive(Deserialize)]
struct CrdVersion {
    name: String,
    #[serde(default)]
    served: bool,
}

impl ExclusionSet {
    pub fn insert(&mut self, group: impl Into<String>, version: impl Into<String>) {
        self.group_versions
            .entry(group.into())
            .or_default()
            .insert(version.into());
    }

    pub fn contains(&self, group: &str, version: &str) -> bool {
        self.group_versions
            .get(group)
            .is_some_and(|versions| versions.contains(version))
    }

    pub fn is_empty(&self) -> bool {
        self.group_versions.is_empty()
    }

    /// Every (group, version), unordered.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.group_versions.iter().flat_map(|(group, versions)| {
            versions.iter().map(move |v| (group.as_str(), v.as_str()))
        })
    }

    pub fn len(&self) -> usize {
        self.group_versions.values().map(HashSet::len).sum()
    }

    /// Add the group/versions of aggregated APIs from an `APIServiceList`
    /// (`GET /apis/apiregistration.k8s.io/v1/apiservices`): those with `spec.service` set.
    pub fn add_api_services(&mut self, api_service_list: &[u8]) -> Result<(), ExclusionError> {
        let list: ItemList<ApiService> =
            serde_json::from_slice(api_service_list).map_err(|source| {
                ExclusionError::InvalidList {
                    kind: "APIService",
                    source,
                }
            })?;
        for item in list.items {
            if item
                .spec
                .service
                .as_ref()
                .is_some_and(|service| !service.is_null())
            {
                self.insert(item.spec.group, item.spec.version);
            }
        }
        Ok(())
    }

    /// Add the served versions of every CRD from a `CustomResourceDefinitionList`
    /// (`GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions`).
    pub fn add_crds(&mut self, crd_list: &[u8]) -> Result<(), ExclusionError> {
        let list: ItemList<Crd> =
            serde_json::from_slice(crd_list).map_err(|source| ExclusionError::InvalidList {
                kind: "CustomResourceDefinition",
                source,
            })?;
        for item in list.items {
            for version in item.spec.versions.into_iter().filter(|v| v.served) {
                self.insert(item.spec.group.clone(), version.name);
            }
        }
        Ok(())
    }

    /// Union (upstream: active ∪ recently deleted).
    pub fn union(&self, other: &ExclusionSet) -> ExclusionSet {
        let mut out = self.clone();
        for (group, versions) in &other.group_versions {
            out.group_versions
                .entry(group.clone())
                .or_default()
                .extend(versions.iter().cloned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{discovery, real_apiserver};
    use serde_json::Value;

    fn fixture_set(release: &str) -> (ServedSet, Value) {
        let bytes = discovery(release, "aggregated_v2.json");
        let list: APIGroupDiscoveryList = serde_json::from_slice(&bytes).unwrap();
        (
            ServedSet::from_documents([&list]),
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[test]
    fn set_has_exactly_the_documents_entries() {
        for release in ["k8s-1.33", "k8s-1.36", "k8s-1.37-dev"] {
            let (set, json) = fixture_set(release);
            let mut expected = HashSet::new();
            for group in json["items"].as_array().unwrap() {
                let g = group["metadata"]["name"].as_str().unwrap();
                for version in group["versions"].as_array().unwrap() {
                    let v = version["version"].as_str().unwrap();
                    for resource in version["resources"].as_array().into_iter().flatten() {
                        let r = resource["resource"].as_str().unwrap();
                        expected.insert((g.to_string(), v.to_string(), r.to_string(), None));
                        for sub in resource["subresources"].as_array().into_iter().flatten() {
                            let s = sub["subresource"].as_str().unwrap().to_string();
                            expected.insert((g.to_string(), v.to_string(), r.to_string(), Some(s)));
                        }
                    }
                }
            }
            let actual: HashSet<_> = set
                .entries()
                .map(|(g, v, r, s)| {
                    (
                        g.to_string(),
                        v.to_string(),
                        r.to_string(),
                        s.map(str::to_string),
                    )
                })
                .collect();
            assert_eq!(actual, expected, "{release}");
        }
    }

    #[test]
    fn gvr_counts_match_readme() {
        // README: GVR counts 1.33 = 71, 1.36 = 77, 1.37-dev = 76.
        for (release, count) in [("k8s-1.33", 71), ("k8s-1.36", 77), ("k8s-1.37-dev", 76)] {
            let (set, _) = fixture_set(release);
            assert_eq!(
                set.entries().filter(|e| e.3.is_none()).count(),
                count,
                "{release}"
            );
        }
    }

    #[test]
    fn subresource_lookups() {
        let (old, _) = fixture_set("k8s-1.33");
        let (new, _) = fixture_set("k8s-1.36");
        // README: devicetaintrules/status exists only in 1.36 (v1alpha3).
        assert!(old.serves("resource.k8s.io", "v1alpha3", "devicetaintrules", None));
        assert!(!old.serves(
            "resource.k8s.io",
            "v1alpha3",
            "devicetaintrules",
            Some("status")
        ));
        assert!(new.serves(
            "resource.k8s.io",
            "v1alpha3",
            "devicetaintrules",
            Some("status")
        ));
        assert!(old.serves_resource("resource.k8s.io", "v1alpha3", "devicetaintrules"));
        assert!(!old.serves("apps", "v1", "deployments", Some("nope")));
        assert!(old.serves("apps", "v1", "deployments", Some("scale")));
        assert!(!old.serves("apps", "v9", "deployments", None));
        assert!(
            !old.serves("", "v1", "pods", None),
            "/apis documents hold no core group"
        );
        assert!(old.serves_group_version("apps", "v1"));
        assert!(!old.serves_group_version("apps", "v2"));
    }

    #[test]
    fn core_group_from_api_document() {
        let api: APIGroupDiscoveryList =
            serde_json::from_slice(&real_apiserver("discovery-api-aggregated-v2.json")).unwrap();
        let apis: APIGroupDiscoveryList =
            serde_json::from_slice(&real_apiserver("discovery-apis-aggregated-v2.json")).unwrap();
        let set = ServedSet::from_documents([&api, &apis]);
        for sub in [
            "log",
            "exec",
            "attach",
            "portforward",
            "proxy",
            "status",
            "binding",
            "eviction",
        ] {
            assert!(set.serves("", "v1", "pods", Some(sub)), "pods/{sub}");
        }
        assert!(set.serves("", "v1", "namespaces", Some("finalize")));
        assert!(set.serves("apps", "v1", "deployments", Some("scale")));
        assert!(ServedSet::default().is_empty() && !set.is_empty());
    }

    #[test]
    fn exclusions_from_api_services_only_take_aggregated_ones() {
        let list = br#"{"kind":"APIServiceList","items":[
            {"metadata":{"name":"v1.apps"},"spec":{"group":"apps","version":"v1","service":null}},
            {"metadata":{"name":"v1beta1.metrics.k8s.io"},"spec":{"group":"metrics.k8s.io","version":"v1beta1",
              "service":{"namespace":"kube-system","name":"metrics-server"}}},
            {"metadata":{"name":"v1."},"spec":{"version":"v1"}}]}"#;
        let mut set = ExclusionSet::default();
        set.add_api_services(list).unwrap();
        assert!(set.contains("metrics.k8s.io", "v1beta1"));
        assert!(!set.contains("apps", "v1"));
        assert!(!set.contains("", "v1"));
    }

    #[test]
    fn exclusions_from_crds_take_served_versions() {
        let list = br#"{"items":[{"spec":{"group":"example.com","versions":[
            {"name":"v1","served":true},{"name":"v1beta1","served":false}]}}]}"#;
        let mut set = ExclusionSet::default();
        set.add_crds(list).unwrap();
        assert!(set.contains("example.com", "v1"));
        assert!(!set.contains("example.com", "v1beta1"));
    }

    #[test]
    fn invalid_lists_are_typed_errors() {
        let mut set = ExclusionSet::default();
        assert!(matches!(
            set.add_crds(b"{\"items\":[{}]}"),
            Err(ExclusionError::InvalidList {
                kind: "CustomResourceDefinition",
                ..
            })
        ));
        assert!(matches!(
            set.add_api_services(b"not json"),
            Err(ExclusionError::InvalidList {
                kind: "APIService",
                ..
            })
        ));
        assert!(set.is_empty());
    }

    #[test]
    fn union_is_active_plus_recently_deleted() {
        // upstream §8 case 15: union; the same GV in both counted once.
        let active = ExclusionSet::from_iter([("a", "v1"), ("b", "v1")]);
        let deleted = ExclusionSet::from_iter([("b", "v1"), ("c", "v1")]);
        let union = active.union(&deleted);
        assert!(
            union.contains("a", "v1") && union.contains("b", "v1") && union.contains("c", "v1")
        );
        assert_eq!(union.group_versions["b"].len(), 1);
        assert!(
            ExclusionSet::default()
                .union(&ExclusionSet::default())
                .is_empty()
        );
    }
}
