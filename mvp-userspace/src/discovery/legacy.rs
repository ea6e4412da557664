//! Aggregated discovery → legacy (unaggregated) discovery documents.
//!
//! kube-apiserver builds both from the same registry; we only have the aggregated view of
//! every server (one fetch per server), so the legacy answers for `/api`, `/apis`,
//! `/apis/<g>`, `/api/v1` and `/apis/<g>/<v>` are derived from it. Rules checked against the
//! documents recorded from a real 1.36 server:
//! - group order and version order are kept; `preferredVersion` is the first version;
//! - each resource is followed by its subresources as `<resource>/<subresource>` entries
//!   with an empty `singularName`, the parent's `namespaced`, and group/version/kind from the
//!   subresource's `responseKind` (group/version only when non-empty);
//! - `storageVersionHash` is not part of aggregated discovery, so it cannot be reproduced.
//!
//! The reverse direction ([`aggregated_from_legacy`]) serves servers without aggregated
//! discovery (before 1.26): it follows kube-aggregator's `ConvertGroupVersionIntoToDiscovery`.

use std::collections::HashMap;

use super::model::{
    APIGroup, APIGroupDiscovery, APIGroupDiscoveryList, APIGroupList, APIResource,
    APIResourceDiscovery, APIResourceList, APISubresourceDiscovery, APIVersionDiscovery,
    APIVersions, AggregatedVersion, DocumentError, GroupVersionForDiscovery, GroupVersionKind,
    ObjectMeta, SCOPE_NAMESPACED, ServerAddressByClientCIDR,
};

fn group_version_string(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

fn group_version_for_discovery(group: &str, version: &str) -> GroupVersionForDiscovery {
    GroupVersionForDiscovery {
        group_version: group_version_string(group, version),
        version: version.to_owned(),
    }
}

/// The `APIGroup` entry of a group as it appears inside `APIGroupList` (no kind/apiVersion).
pub fn legacy_group(group: &APIGroupDiscovery) -> APIGroup {
    let name = group.name();
    let versions: Vec<GroupVersionForDiscovery> = group
        .versions
        .iter()
        .map(|version| group_version_for_discovery(name, &version.version))
        .collect();
    APIGroup {
        kind: None,
        api_version: None,
        name: name.to_owned(),
        preferred_version: versions.first().cloned(),
        versions,
        server_address_by_client_cidrs: Vec::new(),
        extra: Default::default(),
    }
}

/// The body of `GET /apis/<group>` (`kind: APIGroup`, `apiVersion: v1`).
pub fn legacy_group_document(group: &APIGroupDiscovery) -> APIGroup {
    APIGroup {
        kind: Some("APIGroup".to_owned()),
        api_version: Some("v1".to_owned()),
        ..legacy_group(group)
    }
}

/// The body of legacy `GET /apis`. The core group (no name) is skipped: it lives on `/api`.
pub fn legacy_group_list(groups: &APIGroupDiscoveryList) -> APIGroupList {
    APIGroupList {
        kind: Some("APIGroupList".to_owned()),
        api_version: Some("v1".to_owned()),
        groups: groups
            .items
            .iter()
            .filter(|group| !group.name().is_empty())
            .map(legacy_group)
            .collect(),
        extra: Default::default(),
    }
}

/// The body of legacy `GET /api` from the aggregated `/api` document. kube-apiserver writes
/// it without `apiVersion`; the addresses are the caller's (they depend on the client).
pub fn legacy_api_versions(
    core: &APIGroupDiscoveryList,
    server_addresses: Vec<ServerAddressByClientCIDR>,
) -> APIVersions {
    APIVersions {
        kind: Some("APIVersions".to_owned()),
        api_version: None,
        versions: core
            .items
            .iter()
            .filter(|group| group.name().is_empty())
            .flat_map(|group| group.versions.iter().map(|v| v.version.clone()))
            .collect(),
        server_address_by_client_cidrs: server_addresses,
        extra: Default::default(),
    }
}

fn kind_parts(kind: Option<&GroupVersionKind>) -> (String, String, String) {
    match kind {
        Some(gvk) => (gvk.group.clone(), gvk.version.clone(), gvk.kind.clone()),
        None => Default::default(),
    }
}

fn legacy_resources(resource: &APIResourceDiscovery) -> impl Iterator<Item = APIResource> + '_ {
    let namespaced = resource.scope == SCOPE_NAMESPACED;
    let (group, version, kind) = kind_parts(resource.response_kind.as_ref());
    let parent = APIResource {
        name: resource.resource.clone(),
        singular_name: resource.singular_resource.clone(),
        namespaced,
        group,
        version,
        kind,
        verbs: resource.verbs.clone(),
        short_names: resource.short_names.clone(),
        categories: resource.categories.clone(),
        storage_version_hash: String::new(),
        extra: Default::default(),
    };
    let subresources = resource.subresources.iter().map(move |subresource| {
        let (group, version, kind) = kind_parts(subresource.response_kind.as_ref());
        APIResource {
            name: format!("{}/{}", resource.resource, subresource.subresource),
            singular_name: String::new(),
            namespaced,
            group,
            version,
            kind,
            verbs: subresource.verbs.clone(),
            short_names: Vec::new(),
            categories: Vec::new(),
            storage_version_hash: String::new(),
            extra: Default::default(),
        }
    });
    std::iter::once(parent).chain(subresources)
}

/// The body of legacy `GET /api/<v>` (group `""`) or `GET /apis/<group>/<v>`.
/// kube-apiserver omits `apiVersion` on the core list and writes `v1` on group lists.
pub fn legacy_resource_list(group: &str, version: &APIVersionDiscovery) -> APIResourceList {
    APIResourceList {
        kind: Some("APIResourceList".to_owned()),
        api_version: (!group.is_empty()).then(|| "v1".to_owned()),
        group_version: group_version_string(group, &version.version),
        resources: version
            .resources
            .iter()
            .flat_map(legacy_resources)
            .collect(),
        extra: Default::default(),
    }
}

/// Find the legacy resource list for `group`/`version` in an aggregated document.
pub fn find_legacy_resource_list(
    groups: &APIGroupDiscoveryList,
    group: &str,
    version: &str,
) -> Option<APIResourceList> {
    groups
        .items
        .iter()
        .filter(|candidate| candidate.name() == group)
        .flat_map(|candidate| candidate.versions.iter())
        .find(|candidate| candidate.version == version)
        .map(|found| legacy_resource_list(group, found))
}

/// Aggregated resources of one legacy `APIResourceList` (kube-aggregator's
/// `ConvertGroupVersionIntoToDiscovery`): top-level resources in list order, then each
/// `<resource>/<sub>` entry appended to its parent (a parent is invented, with an empty
/// response kind, when the list has none); a subresource scoped unlike its parent is an error.
pub fn aggregated_resources(
    list: &APIResourceList,
) -> Result<Vec<APIResourceDiscovery>, DocumentError> {
    let scope_of = |namespaced: bool| {
        if namespaced {
            SCOPE_NAMESPACED
        } else {
            "Cluster"
        }
    };
    let mut resources: Vec<APIResourceDiscovery> = Vec::new();
    let mut parents: HashMap<&str, usize> = HashMap::new();
    for resource in list.resources.iter().filter(|r| !r.name.contains('/')) {
        parents.insert(&resource.name, resources.len());
        resources.push(APIResourceDiscovery {
            resource: resource.name.clone(),
            response_kind: Some(GroupVersionKind {
                group: resource.group.clone(),
                version: resource.version.clone(),
                kind: resource.kind.clone(),
            }),
            scope: scope_of(resource.namespaced).to_owned(),
            singular_resource: resource.singular_name.clone(),
            verbs: resource.verbs.clone(),
            short_names: resource.short_names.clone(),
            categories: resource.categories.clone(),
            subresources: Vec::new(),
            extra: Default::default(),
        });
    }
    for entry in &list.resources {
        let Some((parent, subresource)) = entry.name.split_once('/') else {
            continue;
        };
        let scope = scope_of(entry.namespaced);
        let index = *parents.entry(parent).or_insert_with(|| {
            resources.push(APIResourceDiscovery {
                resource: parent.to_owned(),
                response_kind: Some(GroupVersionKind::default()),
                scope: scope.to_owned(),
                ..Default::default()
            });
            resources.len() - 1
        });
        if resources[index].scope != scope {
            return Err(DocumentError::ScopeMismatch {
                resource: parent.to_owned(),
                subresource: subresource.to_owned(),
            });
        }
        resources[index].subresources.push(APISubresourceDiscovery {
            subresource: subresource.to_owned(),
            response_kind: Some(GroupVersionKind {
                group: entry.group.clone(),
                version: entry.version.clone(),
                kind: entry.kind.clone(),
            })
            .filter(|kind| !kind.kind.is_empty())
            .or_else(|| Some(GroupVersionKind::default())),
            accepted_types: Vec::new(),
            verbs: entry.verbs.clone(),
            extra: Default::default(),
        });
    }
    Ok(resources)
}

/// An aggregated list from legacy documents: groups and versions in `APIGroupList` order
/// (the core group is a group named `""`), each version's resources from the matching
/// `APIResourceList` (found by `groupVersion`); a version without a list has no resources.
pub fn aggregated_from_legacy(
    groups: &[APIGroup],
    resource_lists: &[APIResourceList],
) -> Result<APIGroupDiscoveryList, DocumentError> {
    let by_group_version: HashMap<&str, &APIResourceList> = resource_lists
        .iter()
        .map(|list| (list.group_version.as_str(), list))
        .collect();
    let mut items = Vec::with_capacity(groups.len());
    for group in groups {
        let mut versions = Vec::with_capacity(group.versions.len());
        for version in &group.versions {
            let resources = match by_group_version.get(version.group_version.as_str()) {
                Some(list) => aggregated_resources(list)?,
                None => Vec::new(),
            };
            versions.push(APIVersionDiscovery {
                version: version.version.clone(),
                resources,
                freshness: Some("Current".to_owned()),
                extra: Default::default(),
            });
        }
        items.push(APIGroupDiscovery {
            kind: None,
            api_version: None,
            metadata: ObjectMeta {
                name: (!group.name.is_empty()).then(|| group.name.clone()),
                extra: Default::default(),
            },
            versions,
            extra: Default::default(),
        });
    }
    Ok(APIGroupDiscoveryList::new(AggregatedVersion::V2, items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{real_apiserver, real_apiserver_json};
    use serde_json::Value;

    fn recorded_aggregated_apis() -> APIGroupDiscoveryList {
        serde_json::from_slice(&real_apiserver("discovery-apis-aggregated-v2.json")).unwrap()
    }

    fn recorded_aggregated_api() -> APIGroupDiscoveryList {
        serde_json::from_slice(&real_apiserver("discovery-api-aggregated-v2.json")).unwrap()
    }

    /// Drop `storageVersionHash` from every resource of a recorded legacy list: it is the one
    /// field aggregated discovery does not carry.
    fn without_storage_version_hash(mut document: Value) -> Value {
        if let Some(resources) = document["resources"].as_array_mut() {
            for resource in resources {
                resource
                    .as_object_mut()
                    .unwrap()
                    .remove("storageVersionHash");
            }
        }
        document
    }

    #[test]
    fn group_list_matches_recorded_legacy_apis() {
        let converted =
            serde_json::to_value(legacy_group_list(&recorded_aggregated_apis())).unwrap();
        assert_eq!(converted, real_apiserver_json("discovery-apis-legacy.json"));
    }

    #[test]
    fn group_list_bytes_match_recorded_legacy_apis() {
        let converted =
            serde_json::to_string(&legacy_group_list(&recorded_aggregated_apis())).unwrap();
        let recorded = real_apiserver("discovery-apis-legacy.json");
        assert_eq!(format!("{converted}\n").as_bytes(), &recorded[..]);
    }

    #[test]
    fn every_recorded_group_document_matches() {
        let aggregated = recorded_aggregated_apis();
        let mut checked = 0;
        for group in &aggregated.items {
            let file = format!("discovery-apis-{}.json", group.name());
            let converted = serde_json::to_value(legacy_group_document(group)).unwrap();
            assert_eq!(converted, real_apiserver_json(&file), "{file}");
            checked += 1;
        }
        // The fixture README: 20 groups recorded.
        assert_eq!(checked, 20);
    }

    #[test]
    fn every_recorded_group_version_resource_list_matches_except_storage_hash() {
        let aggregated = recorded_aggregated_apis();
        let mut checked = 0;
        for group in &aggregated.items {
            for version in &group.versions {
                let file = format!("discovery-apis-{}-{}.json", group.name(), version.version);
                let converted =
                    serde_json::to_value(legacy_resource_list(group.name(), version)).unwrap();
                let recorded = without_storage_version_hash(real_apiserver_json(&file));
                assert_eq!(converted, recorded, "{file}");
                checked += 1;
            }
        }
        // The fixture README: 21 group/versions recorded.
        assert_eq!(checked, 21);
    }

    #[test]
    fn core_resource_list_matches_recorded_api_v1() {
        let core = recorded_aggregated_api();
        let converted = find_legacy_resource_list(&core, "", "v1").unwrap();
        assert_eq!(
            converted.api_version, None,
            "kube omits apiVersion on /api/v1"
        );
        let recorded = without_storage_version_hash(real_apiserver_json("discovery-api-v1.json"));
        assert_eq!(serde_json::to_value(converted).unwrap(), recorded);
    }

    #[test]
    fn api_versions_matches_recorded_legacy_api() {
        let recorded: APIVersions =
            serde_json::from_slice(&real_apiserver("discovery-api-legacy.json")).unwrap();
        let converted = legacy_api_versions(
            &recorded_aggregated_api(),
            recorded.server_address_by_client_cidrs.clone(),
        );
        assert_eq!(converted, recorded);
    }

    #[test]
    fn unknown_group_version_has_no_resource_list() {
        let aggregated = recorded_aggregated_apis();
        assert!(find_legacy_resource_list(&aggregated, "apps", "v9").is_none());
        assert!(find_legacy_resource_list(&aggregated, "example.com", "v1").is_none());
        assert!(find_legacy_resource_list(&aggregated, "apps", "v1").is_some());
    }

    #[test]
    fn preferred_version_is_first_listed() {
        let aggregated = recorded_aggregated_apis();
        let autoscaling = aggregated
            .items
            .iter()
            .find(|g| g.name() == "autoscaling")
            .unwrap();
        let legacy = legacy_group(autoscaling);
        let first = &autoscaling.versions[0].version;
        assert_eq!(&legacy.preferred_version.unwrap().version, first);
    }

    #[test]
    fn recorded_legacy_documents_convert_to_the_recorded_aggregated_ones() {
        let group_list: APIGroupList =
            serde_json::from_slice(&real_apiserver("discovery-apis-legacy.json")).unwrap();
        let mut lists = Vec::new();
        for group in &group_list.groups {
            for version in &group.versions {
                let file = format!("discovery-apis-{}-{}.json", group.name, version.version);
                lists.push(
                    serde_json::from_slice::<APIResourceList>(&real_apiserver(&file)).unwrap(),
                );
            }
        }
        let converted = aggregated_from_legacy(&group_list.groups, &lists).unwrap();
        assert_eq!(converted, recorded_aggregated_apis());

        // Core: /api's versions become a group without a name.
        let core_list: APIResourceList =
            serde_json::from_slice(&real_apiserver("discovery-api-v1.json")).unwrap();
        let core_group = APIGroup {
            name: String::new(),
            versions: vec![group_version_for_discovery("", "v1")],
            ..Default::default()
        };
        let converted = aggregated_from_legacy(&[core_group], &[core_list]).unwrap();
        assert_eq!(converted, recorded_aggregated_api());
    }

    #[test]
    fn orphan_subresource_gets_a_parent_and_scope_mismatch_is_an_error() {
        let list = |parent_namespaced: bool| APIResourceList {
            group_version: "g/v1".into(),
            resources: vec![
                APIResource {
                    name: "things/status".into(),
                    namespaced: true,
                    kind: "Thing".into(),
                    verbs: vec!["get".into()],
                    ..Default::default()
                },
                APIResource {
                    name: "others".into(),
                    namespaced: parent_namespaced,
                    kind: "Other".into(),
                    ..Default::default()
                },
                APIResource {
                    name: "others/scale".into(),
                    namespaced: true,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let resources = aggregated_resources(&list(true)).unwrap();
        let names: Vec<&str> = resources.iter().map(|r| r.resource.as_str()).collect();
        assert_eq!(
            names,
            ["others", "things"],
            "parents first, invented parent after"
        );
        assert_eq!(
            resources[1].response_kind,
            Some(GroupVersionKind::default())
        );
        assert_eq!(
            resources[1].subresources[0]
                .response_kind
                .as_ref()
                .unwrap()
                .kind,
            "Thing"
        );
        // A subresource without a kind still gets an (empty) response kind.
        assert_eq!(
            resources[0].subresources[0].response_kind,
            Some(GroupVersionKind::default())
        );
        assert!(matches!(
            aggregated_resources(&list(false)),
            Err(DocumentError::ScopeMismatch { .. })
        ));
    }

    #[test]
    fn version_without_resource_list_is_empty() {
        let group = APIGroup {
            name: "g".into(),
            versions: vec![group_version_for_discovery("g", "v1")],
            ..Default::default()
        };
        let converted = aggregated_from_legacy(&[group], &[]).unwrap();
        assert_eq!(converted.items[0].versions[0].version, "v1");
        assert!(converted.items[0].versions[0].resources.is_empty());
    }
}
