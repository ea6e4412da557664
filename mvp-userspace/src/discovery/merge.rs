//! Peer-aggregated discovery: one view of every server's groups (upstream-mvp.md §5.3,
//! `peer_aggregated_handler.go`, deterministic version), plus the consensus ordering
//! (`MergePreservingRelativeOrder` in `apimachinery/pkg/util/sort`).
//!
//! Upstream merges only `/apis`; the same function merges the core `/api` documents too (our
//! extension), and the legacy documents are derived from the merged result
//! ([`super::legacy`]). Run once per change of any server's view, never per request.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;

use super::model::{APIGroupDiscovery, APIResourceDiscovery, APIVersionDiscovery};
use super::served::ExclusionSet;

/// The consensus order of several lists ("MergePreservingRelativeOrder"):
/// 1. if a list contains every distinct item exactly once, the first such list;
/// 2. else a topological sort of "a directly precedes b in some list" (Kahn's algorithm,
///    always emitting the smallest available item);
/// 3. on a cycle, all items sorted.
pub fn consensus_order<T: Ord + Hash + Clone>(lists: &[&[T]]) -> Vec<T> {
    let distinct: BTreeSet<&T> = lists.iter().flat_map(|list| list.iter()).collect();
    for list in lists {
        if list.len() == distinct.len() && list.iter().collect::<HashSet<_>>().len() == list.len() {
            return list.to_vec();
        }
    }

    let mut successors: HashMap<&T, BTreeSet<&T>> = HashMap::new();
    let mut predecessor_count: HashMap<&T, usize> =
        distinct.iter().map(|item| (*item, 0)).collect();
    for list in lists {
        for pair in list.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            // A repeated item gets an edge to itself and so a cycle, as upstream.
            if successors.entry(before).or_default().insert(after) {
                *predecessor_count.entry(after).or_default() += 1;
            }
        }
    }
    let mut available: BTreeSet<&T> = predecessor_count
        .iter()
        .filter(|(_, count)| **count == 0)
        .map(|(item, _)| *item)
        .collect();
    let mut ordered = Vec::with_capacity(distinct.len());
    while let Some(item) = available.pop_first() {
        ordered.push(item.clone());
        for next in successors.get(item).into_iter().flatten() {
            let count = predecessor_count
                .get_mut(next)
                .expect("every item is counted");
            *count -= 1;
            if *count == 0 {
                available.insert(*next);
            }
        }
    }
    if ordered.len() < distinct.len() {
        return distinct.into_iter().cloned().collect();
    }
    ordered
}

/// One server's groups, as its `profile=nopeer` aggregated discovery listed them.
#[derive(Debug, Clone, Copy)]
pub struct ServerGroups<'a> {
    pub server_id: &'a str,
    pub groups: &'a [APIGroupDiscovery],
}

fn reorder_by<T>(items: &mut [T], order: &[String], key: impl Fn(&T) -> &str) {
    let position: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, name)| (name.as_str(), i))
        .collect();
    items.sort_by_key(|item| position.get(key(item)).copied().unwrap_or(usize::MAX));
}

/// Union of `incoming` into `existing` (both describe the same resource and differ):
/// verbs sorted and de-duplicated, subresources by name sorted; other fields stay first-seen.
fn merge_resource(existing: &mut APIResourceDiscovery, incoming: &APIResourceDiscovery) {
    let verbs: BTreeSet<String> = existing
        .verbs
        .iter()
        .chain(incoming.verbs.iter())
        .cloned()
        .collect();
    existing.verbs = verbs.into_iter().collect();

    let mut by_name: BTreeMap<String, _> = existing
        .subresources
        .drain(..)
        .map(|sub| (sub.subresource.clone(), sub))
        .collect();
    for sub in &incoming.subresources {
        // Upstream: a later server's same-named subresource replaces the earlier one.
        by_name.insert(sub.subresource.clone(), sub.clone());
    }
    existing.subresources = by_name.into_values().collect();
}

fn merge_version(existing: &mut APIVersionDiscovery, incoming: &APIVersionDiscovery) -> bool {
    let existing_names: Vec<String> = existing
        .resources
        .iter()
        .map(|r| r.resource.clone())
        .collect();
    let incoming_names: Vec<String> = incoming
        .resources
        .iter()
        .map(|r| r.resource.clone())
        .collect();
    let mut content_changed = false;
    for resource in &incoming.resources {
        match existing
            .resources
            .iter_mut()
            .find(|r| r.resource == resource.resource)
        {
            Some(known) if known == resource => {}
            Some(known) => {
                merge_resource(known, resource);
                content_changed = true;
            }
            None => existing.resources.push(resource.clone()),
        }
    }
    // Upstream counts a different name list as a change even when it adds nothing.
    if existing_names == incoming_names {
        return content_changed;
    }
    let order = consensus_order(&[&existing_names[..], &incoming_names[..]]);
    reorder_by(&mut existing.resources, &order, |r| &r.resource);
    // `freshness` stays the first-seen value.
    true
}

fn merge_group(existing: &mut APIGroupDiscovery, incoming: &APIGroupDiscovery) -> bool {
    let existing_names: Vec<String> = existing
        .versions
        .iter()
        .map(|v| v.version.clone())
        .collect();
    let incoming_names: Vec<String> = incoming
        .versions
        .iter()
        .map(|v| v.version.clone())
        .collect();
    let mut content_changed = false;
    for version in &incoming.versions {
        match existing
            .versions
            .iter_mut()
            .find(|v| v.version == version.version)
        {
            Some(known) => content_changed |= merge_version(known, version),
            None => existing.versions.push(version.clone()),
        }
    }
    if existing_names == incoming_names {
        return content_changed;
    }
    let order = consensus_order(&[&existing_names[..], &incoming_names[..]]);
    reorder_by(&mut existing.versions, &order, |v| &v.version);
    true
}

fn group_names(groups: &[APIGroupDiscovery]) -> Vec<&str> {
    let mut seen = HashSet::new();
    groups
        .iter()
        .map(APIGroupDiscovery::name)
        .filter(|name| seen.insert(*name))
        .collect()
}

/// Merge the local server's groups with its peers' (upstream §5.3):
/// - no peers → the local list itself;
/// - servers are visited in lexicographic server-ID order (the local one is not privileged);
///   the first server to list a group provides the group object (metadata included), later
///   ones are merged into it: version union, resource union (verbs: sorted union;
///   subresources: union by name, sorted; other fields from the first copy; `freshness` from
///   the first copy), new versions/resources placed by [`consensus_order`];
/// - a group, version or resource counts as changed when merging altered it or the two name
///   lists differ (upstream's flags); group order: the local list itself when nothing changed
///   and every server lists the same groups in the same order; the local order when only
///   content changed; else the consensus order of all servers' lists in server-ID order.
///
/// A peer entry carrying the local server's ID is ignored.
pub fn merge_peer_aggregated<'a>(
    local: ServerGroups<'a>,
    peers: &[ServerGroups<'a>],
) -> Cow<'a, [APIGroupDiscovery]> {
    let mut servers: Vec<ServerGroups<'a>> = peers
        .iter()
        .filter(|peer| peer.server_id != local.server_id)
        .copied()
        .collect();
    if servers.is_empty() {
        return Cow::Borrowed(local.groups);
    }
    servers.push(local);
    servers.sort_by(|a, b| a.server_id.cmp(b.server_id));
    servers.dedup_by(|a, b| a.server_id == b.server_id);

    let mut merged: Vec<APIGroupDiscovery> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    let mut content_changed = false;
    let mut orders: Vec<Vec<&str>> = Vec::with_capacity(servers.len());
    for server in &servers {
        let mut seen_here = HashSet::new();
        for group in server.groups {
            if !seen_here.insert(group.name()) {
                continue;
            }
            match position.get(group.name()) {
                Some(&index) => content_changed |= merge_group(&mut merged[index], group),
                None => {
                    position.insert(group.name(), merged.len());
                    merged.push(group.clone());
                }
            }
        }
        orders.push(group_names(server.groups));
    }

    let local_order = group_names(local.groups);
    let all_lists_equal = orders.iter().all(|order| *order == local_order);
    if !content_changed && all_lists_equal {
        // Upstream's short-circuit. Note: when a peer sorts first and its copy of a group
        // differs from the local one only where merging does not look (group metadata,
        // freshness), this hands back the local copy, exactly as upstream does.
        return Cow::Borrowed(local.groups);
    }
    let order: Vec<&str> = if all_lists_equal {
        local_order
    } else {
        let slices: Vec<&[&str]> = orders.iter().map(Vec::as_slice).collect();
        consensus_order(&slices)
    };
    let mut slots: Vec<Option<APIGroupDiscovery>> = merged.into_iter().map(Some).collect();
    let result: Vec<APIGroupDiscovery> = order
        .iter()
        .filter_map(|name| position.get(name).and_then(|&i| slots[i].take()))
        .collect();
    Cow::Owned(result)
}

/// Drop excluded group/versions (CRDs, aggregated APIServices) from a peer's groups, and
/// groups left without versions (upstream §3.3 filtering). Unchanged input is borrowed.
pub fn without_excluded<'a>(
    groups: &'a [APIGroupDiscovery],
    exclusions: &ExclusionSet,
) -> Cow<'a, [APIGroupDiscovery]> {
    let touches = groups.iter().any(|group| {
        group
            .versions
            .iter()
            .any(|v| exclusions.contains(group.name(), &v.version))
    });
    if !touches {
        return Cow::Borrowed(groups);
    }
    let filtered = groups
        .iter()
        .filter_map(|group| {
            let mut kept = group.clone();
            kept.versions
                .retain(|v| !exclusions.contains(group.name(), &v.version));
            (!kept.versions.is_empty()).then_some(kept)
        })
        .collect();
    Cow::Owned(filtered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::model::{APIGroupDiscoveryList, APISubresourceDiscovery, ObjectMeta};
    use crate::test_fixtures::discovery;
    use serde_json::Value;

    // ---- consensus order: upstream sort_test.go cases (upstream-mvp.md §8 cases 30, 31) ----

    fn order(lists: &[&[&str]]) -> Vec<String> {
        let owned: Vec<Vec<String>> = lists
            .iter()
            .map(|l| l.iter().map(|s| s.to_string()).collect())
            .collect();
        let slices: Vec<&[String]> = owned.iter().map(Vec::as_slice).collect();
        consensus_order(&slices)
    }

    #[test]
    fn case_30_kahn_with_smallest_first() {
        assert_eq!(
            order(&[
                &["A", "B", "C", "D"],
                &["A", "B", "C", "D"],
                &["A", "X", "Z", "D"],
                &["Z", "Y"],
                &["Q"],
            ]),
            ["A", "B", "C", "Q", "X", "Z", "D", "Y"]
        );
    }

    #[test]
    fn case_31_empty_and_single() {
        assert!(order(&[]).is_empty());
        assert_eq!(order(&[&["B", "A", "C"]]), ["B", "A", "C"]);
    }

    #[test]
    fn case_31_first_complete_list_wins() {
        assert_eq!(order(&[&["A", "B"], &["B", "A"]]), ["A", "B"]);
        assert_eq!(order(&[&["B", "A"], &["A", "B"]]), ["B", "A"]);
        assert_eq!(order(&[&[], &["A", "B", "C"]]), ["A", "B", "C"]);
    }

    #[test]
    fn case_31_converging_lists() {
        assert_eq!(
            order(&[&["C", "D", "E"], &["B", "D", "E"], &["A", "D", "E"]]),
            ["A", "B", "C", "D", "E"]
        );
        assert_eq!(
            order(&[&["A", "D", "E"], &["A", "C", "E"], &["A", "B", "E"]]),
            ["A", "B", "C", "D", "E"]
        );
    }

    #[test]
    fn case_31_cycles_fall_back_to_lexicographic() {
        assert_eq!(
            order(&[&["A", "B"], &["B", "C"], &["C", "A"]]),
            ["A", "B", "C"]
        );
        assert_eq!(
            order(&[&["A", "B"], &["C", "D"], &["B", "A"]]),
            ["A", "B", "C", "D"]
        );
    }

    #[test]
    fn list_with_duplicates_is_not_complete() {
        // ["A","A"] has the length of {A,B} but is not unique.
        assert_eq!(order(&[&["A", "A"], &["B"]]), ["A", "B"]);
        // An adjacent repeat is a self-edge, hence a cycle: lexicographic, not [C, A].
        assert_eq!(order(&[&["C", "C", "A"]]), ["A", "C"]);
    }

    // ---- merge: upstream peer_aggregated_handler_test.go (§8 case 28) ----

    fn resource(name: &str, verbs: &[&str]) -> APIResourceDiscovery {
        APIResourceDiscovery {
            resource: name.into(),
            scope: "Namespaced".into(),
            singular_resource: name.trim_end_matches('s').into(),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            ..Default::default()
        }
    }

    fn with_subresources(mut r: APIResourceDiscovery, subs: &[&str]) -> APIResourceDiscovery {
        r.subresources = subs
            .iter()
            .map(|s| APISubresourceDiscovery {
                subresource: s.to_string(),
                verbs: vec!["get".into()],
                ..Default::default()
            })
            .collect();
        r
    }

    fn version(name: &str, resources: Vec<APIResourceDiscovery>) -> APIVersionDiscovery {
        APIVersionDiscovery {
            version: name.into(),
            resources,
            freshness: Some("Current".into()),
            ..Default::default()
        }
    }

    fn group(name: &str, uid: &str, versions: Vec<APIVersionDiscovery>) -> APIGroupDiscovery {
        let mut metadata = ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        };
        metadata
            .extra
            .insert("uid".into(), Value::String(uid.into()));
        APIGroupDiscovery {
            metadata,
            versions,
            ..Default::default()
        }
    }

    fn server<'a>(id: &'a str, groups: &'a [APIGroupDiscovery]) -> ServerGroups<'a> {
        ServerGroups {
            server_id: id,
            groups,
        }
    }

    fn names(groups: &[APIGroupDiscovery]) -> Vec<&str> {
        groups.iter().map(|g| g.name()).collect()
    }

    fn uid(group: &APIGroupDiscovery) -> &str {
        group.metadata.extra["uid"].as_str().unwrap()
    }

    #[test]
    fn no_peers_returns_the_local_slice_itself() {
        let local = vec![group(
            "g1",
            "local",
            vec![version("v1", vec![resource("r1", &["get"])])],
        )];
        let merged = merge_peer_aggregated(server("local", &local), &[]);
        assert!(matches!(merged, Cow::Borrowed(s) if std::ptr::eq(s, local.as_slice())));
    }

    #[test]
    fn identical_peer_returns_the_local_slice_itself() {
        let local = vec![group(
            "g1",
            "x",
            vec![version("v1", vec![resource("r1", &["get"])])],
        )];
        let peer = local.clone();
        let merged = merge_peer_aggregated(server("local", &local), &[server("peer", &peer)]);
        assert!(matches!(merged, Cow::Borrowed(s) if std::ptr::eq(s, local.as_slice())));
        // Also when the peer sorts first.
        let merged = merge_peer_aggregated(server("z-local", &local), &[server("a-peer", &peer)]);
        assert!(matches!(merged, Cow::Borrowed(s) if std::ptr::eq(s, local.as_slice())));
    }

    #[test]
    fn peer_entry_with_local_id_is_ignored() {
        let local = vec![group(
            "g1",
            "x",
            vec![version("v1", vec![resource("r1", &["get"])])],
        )];
        let impostor = vec![group("g2", "y", vec![version("v1", vec![])])];
        let merged = merge_peer_aggregated(server("me", &local), &[server("me", &impostor)]);
        assert!(matches!(merged, Cow::Borrowed(_)));
    }

    #[test]
    fn peer_adds_resource_metadata_from_first_server() {
        let a = vec![group(
            "g1",
            "A",
            vec![version("v1", vec![resource("r1", &["get"])])],
        )];
        let b = vec![group(
            "g1",
            "B",
            vec![version(
                "v1",
                vec![resource("r1", &["get"]), resource("r2", &["get"])],
            )],
        )];
        // Either server local: the result is the same, metadata from "server-a".
        for (local, peer) in [
            (("server-a", &a), ("server-b", &b)),
            (("server-b", &b), ("server-a", &a)),
        ] {
            let merged = merge_peer_aggregated(server(local.0, local.1), &[server(peer.0, peer.1)]);
            assert_eq!(merged.len(), 1);
            assert_eq!(uid(&merged[0]), "A");
            let resources: Vec<&str> = merged[0].versions[0]
                .resources
                .iter()
                .map(|r| r.resource.as_str())
                .collect();
            assert_eq!(resources, ["r1", "r2"]);
        }
    }

    #[test]
    fn peer_adds_version() {
        let local = vec![group(
            "g1",
            "L",
            vec![version("v1", vec![resource("r1", &["get"])])],
        )];
        let peer = vec![group(
            "g1",
            "P",
            vec![version("v2", vec![resource("r1", &["get"])])],
        )];
        let merged = merge_peer_aggregated(server("local", &local), &[server("peer", &peer)]);
        // Neither [v1] nor [v2] holds both, no adjacency: smallest first.
        let versions: Vec<&str> = merged[0]
            .versions
            .iter()
            .map(|v| v.version.as_str())
            .collect();
        assert_eq!(versions, ["v1", "v2"]);
        assert_eq!(uid(&merged[0]), "L");
    }

    #[test]
    fn newer_server_version_order_wins_when_it_lists_everything() {
        let old = vec![group("g", "old", vec![version("v1beta1", vec![])])];
        let new = vec![group(
            "g",
            "new",
            vec![version("v1", vec![]), version("v1beta1", vec![])],
        )];
        for (local, peer) in [(("a", &old), ("b", &new)), (("a", &new), ("b", &old))] {
            let merged = merge_peer_aggregated(server(local.0, local.1), &[server(peer.0, peer.1)]);
            let versions: Vec<&str> = merged[0]
                .versions
                .iter()
                .map(|v| v.version.as_str())
                .collect();
            assert_eq!(versions, ["v1", "v1beta1"]);
        }
    }

    #[test]
    fn peer_adds_group() {
        let local = vec![group("g1", "L", vec![version("v1", vec![])])];
        let peer = vec![group("g2", "P", vec![version("v1", vec![])])];
        let merged = merge_peer_aggregated(server("local", &local), &[server("peer", &peer)]);
        assert_eq!(names(&merged), ["g1", "g2"]);
    }

    #[test]
    fn same_groups_different_order_follows_first_server_in_id_order() {
        let g1 = group("g1", "1", vec![version("v1", vec![])]);
        let g2 = group("g2", "2", vec![version("v1", vec![])]);
        let local = vec![g1.clone(), g2.clone()];
        let peer = vec![g2, g1];
        // "local" < "peer": the local list is first and complete.
        let merged = merge_peer_aggregated(server("local", &local), &[server("peer", &peer)]);
        assert_eq!(names(&merged), ["g1", "g2"]);
        // "a-peer" < "local": the peer's list is first and complete.
        let merged = merge_peer_aggregated(server("local", &local), &[server("a-peer", &peer)]);
        assert_eq!(names(&merged), ["g2", "g1"]);
    }

    #[test]
    fn two_servers_agree_regardless_of_which_is_local() {
        let a = vec![group("g1", "A", vec![version("v1", vec![])])];
        let b = vec![group("g2", "B", vec![version("v1", vec![])])];
        let on_a = merge_peer_aggregated(server("A", &a), &[server("B", &b)]);
        let on_b = merge_peer_aggregated(server("B", &b), &[server("A", &a)]);
        assert_eq!(names(&on_a), ["g1", "g2"]);
        assert_eq!(on_a, on_b);
    }

    #[test]
    fn verbs_union_sorted_metadata_from_first() {
        let a = vec![group(
            "g1",
            "A",
            vec![version("v1", vec![resource("r1", &["get", "list"])])],
        )];
        let b = vec![group(
            "g1",
            "B",
            vec![version("v1", vec![resource("r1", &["get", "watch"])])],
        )];
        let merged = merge_peer_aggregated(server("B", &b), &[server("A", &a)]);
        assert_eq!(
            merged[0].versions[0].resources[0].verbs,
            ["get", "list", "watch"]
        );
        assert_eq!(uid(&merged[0]), "A");
    }

    #[test]
    fn subresources_union_sorted_by_name() {
        let a = vec![group(
            "g1",
            "A",
            vec![version(
                "v1",
                vec![with_subresources(resource("r1", &["get"]), &["status"])],
            )],
        )];
        let b = vec![group(
            "g1",
            "B",
            vec![version(
                "v1",
                vec![with_subresources(resource("r1", &["get"]), &["log"])],
            )],
        )];
        let merged = merge_peer_aggregated(server("A", &a), &[server("B", &b)]);
        let subs: Vec<&str> = merged[0].versions[0].resources[0]
            .subresources
            .iter()
            .map(|s| s.subresource.as_str())
            .collect();
        assert_eq!(subs, ["log", "status"]);
    }

    #[test]
    fn other_resource_fields_come_from_first_seen() {
        let mut first = resource("r1", &["get"]);
        first.short_names = vec!["one".into()];
        let mut second = resource("r1", &["get", "list"]);
        second.short_names = vec!["two".into()];
        second.scope = "Cluster".into();
        let a = vec![group("g1", "A", vec![version("v1", vec![first])])];
        let b = vec![group("g1", "B", vec![version("v1", vec![second])])];
        let merged = merge_peer_aggregated(server("B", &b), &[server("A", &a)]);
        let r = &merged[0].versions[0].resources[0];
        assert_eq!(r.short_names, ["one"]);
        assert_eq!(r.scope, "Namespaced");
        assert_eq!(r.verbs, ["get", "list"]);
    }

    #[test]
    fn empty_local_takes_peer_groups() {
        let local: Vec<APIGroupDiscovery> = vec![];
        let peer = vec![group("g1", "P", vec![version("v1", vec![])])];
        let merged = merge_peer_aggregated(server("local", &local), &[server("peer", &peer)]);
        assert_eq!(names(&merged), ["g1"]);
    }

    #[test]
    fn freshness_first_seen_kept_and_peer_only_versions_keep_theirs() {
        let mut stale_v1 = version("v1", vec![resource("r2", &["get"])]);
        stale_v1.freshness = Some("Stale".into());
        let mut stale_v2 = version("v2", vec![]);
        stale_v2.freshness = Some("Stale".into());
        let a = vec![group(
            "g1",
            "A",
            vec![version("v1", vec![resource("r1", &["get"])])],
        )];
        let b = vec![group("g1", "B", vec![stale_v1, stale_v2])];
        let merged = merge_peer_aggregated(server("A", &a), &[server("B", &b)]);
        let by_name: HashMap<&str, &APIVersionDiscovery> = merged[0]
            .versions
            .iter()
            .map(|v| (v.version.as_str(), v))
            .collect();
        assert_eq!(by_name["v1"].freshness.as_deref(), Some("Current"));
        assert_eq!(by_name["v1"].resources.len(), 2);
        assert_eq!(by_name["v2"].freshness.as_deref(), Some("Stale"));
    }

    #[test]
    fn content_change_with_equal_lists_keeps_local_order() {
        let local = vec![
            group(
                "g2",
                "L2",
                vec![version("v1", vec![resource("r", &["get"])])],
            ),
            group("g1", "L1", vec![version("v1", vec![])]),
        ];
        let peer = vec![
            group(
                "g2",
                "P2",
                vec![version("v1", vec![resource("r", &["get", "list"])])],
            ),
            group("g1", "P1", vec![version("v1", vec![])]),
        ];
        let merged = merge_peer_aggregated(server("b", &local), &[server("a", &peer)]);
        assert!(matches!(merged, Cow::Owned(_)));
        assert_eq!(names(&merged), ["g2", "g1"]);
        assert_eq!(merged[0].versions[0].resources[0].verbs, ["get", "list"]);
    }

    // ---- exclusion filtering (§8 case 19) ----

    #[test]
    fn excluded_group_versions_are_dropped_and_empty_groups_vanish() {
        let groups = vec![
            group(
                "apps",
                "",
                vec![version("v1", vec![]), version("v1beta1", vec![])],
            ),
            group("batch", "", vec![version("v1", vec![])]),
            group("custom", "", vec![version("v1alpha1", vec![])]),
        ];
        let exclusions = ExclusionSet::from_iter([("apps", "v1"), ("custom", "v1alpha1")]);
        let filtered = without_excluded(&groups, &exclusions);
        assert_eq!(names(&filtered), ["apps", "batch"]);
        assert_eq!(filtered[0].versions.len(), 1);
        assert_eq!(filtered[0].versions[0].version, "v1beta1");
        let untouched = without_excluded(&groups, &ExclusionSet::from_iter([("other", "v1")]));
        assert!(matches!(untouched, Cow::Borrowed(_)));
    }

    // ---- real fixtures: 1.33 + 1.36 (+ 1.37-dev) ----

    type Entry = (String, String, String, String);

    /// Every (group, version, resource, subresource) of a document, read straight from the
    /// JSON (independent of the typed model); subresource "" stands for the resource.
    fn entries(document: &Value) -> BTreeSet<Entry> {
        let mut out = BTreeSet::new();
        for group in document["items"].as_array().unwrap() {
            let g = group["metadata"]["name"].as_str().unwrap_or("").to_string();
            for version in group["versions"].as_array().unwrap() {
                let v = version["version"].as_str().unwrap().to_string();
                for resource in version["resources"].as_array().into_iter().flatten() {
                    let r = resource["resource"].as_str().unwrap().to_string();
                    out.insert((g.clone(), v.clone(), r.clone(), String::new()));
                    for sub in resource["subresources"].as_array().into_iter().flatten() {
                        let s = sub["subresource"].as_str().unwrap().to_string();
                        out.insert((g.clone(), v.clone(), r.clone(), s));
                    }
                }
            }
        }
        out
    }

    fn fixture(release: &str) -> (Value, APIGroupDiscoveryList) {
        let bytes = discovery(release, "aggregated_v2.json");
        (
            serde_json::from_slice(&bytes).unwrap(),
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    fn merged_document(groups: Vec<APIGroupDiscovery>) -> Value {
        serde_json::to_value(APIGroupDiscoveryList::new(
            crate::discovery::model::AggregatedVersion::V2,
            groups,
        ))
        .unwrap()
    }

    fn versions_of<'a>(groups: &'a [APIGroupDiscovery], name: &str) -> Vec<&'a str> {
        groups
            .iter()
            .find(|g| g.name() == name)
            .unwrap()
            .versions
            .iter()
            .map(|v| v.version.as_str())
            .collect()
    }

    #[test]
    fn merge_of_133_and_136_is_the_union_on_both_servers() {
        let (old_json, old) = fixture("k8s-1.33");
        let (new_json, new) = fixture("k8s-1.36");
        let expected: BTreeSet<Entry> = entries(&old_json)
            .union(&entries(&new_json))
            .cloned()
            .collect();

        let on_old = merge_peer_aggregated(
            server("apiserver-old", &old.items),
            &[server("apiserver-new", &new.items)],
        );
        let on_new = merge_peer_aggregated(
            server("apiserver-new", &new.items),
            &[server("apiserver-old", &old.items)],
        );
        assert_eq!(on_old, on_new, "every server serves the same merged view");
        assert_eq!(entries(&merged_document(on_old.to_vec())), expected);

        // README "only in" items are present.
        for (g, v, r, s) in [
            (
                "storagemigration.k8s.io",
                "v1alpha1",
                "storageversionmigrations",
                "status",
            ),
            (
                "storagemigration.k8s.io",
                "v1beta1",
                "storageversionmigrations",
                "status",
            ),
            ("resource.k8s.io", "v1alpha3", "devicetaintrules", "status"),
            ("scheduling.k8s.io", "v1alpha2", "podgroups", "status"),
            (
                "admissionregistration.k8s.io",
                "v1beta1",
                "validatingadmissionpolicies",
                "",
            ),
            (
                "admissionregistration.k8s.io",
                "v1beta1",
                "mutatingadmissionpolicies",
                "",
            ),
        ] {
            assert!(
                expected.contains(&(g.into(), v.into(), r.into(), s.into())),
                "{g}/{v}/{r}/{s}"
            );
        }

        // Both servers list the same 22 groups in the same order (checked here): with content
        // merged and equal lists, the local order is kept.
        let old_names = names(&old.items);
        assert_eq!(old_names, names(&new.items));
        assert_eq!(names(&on_old), old_names);

        // resource.k8s.io: 1.36 lists [v1, v1beta2, v1beta1, v1alpha3], a superset of 1.33's
        // list, so it is the first complete list and v1 is preferred (first).
        assert_eq!(
            versions_of(&on_old, "resource.k8s.io"),
            ["v1", "v1beta2", "v1beta1", "v1alpha3"]
        );
        // storagemigration.k8s.io: [v1alpha1] vs [v1beta1], neither complete, no adjacency:
        // lexicographic, so the merged view prefers v1alpha1 (upstream behaviour, noted).
        assert_eq!(
            versions_of(&on_old, "storagemigration.k8s.io"),
            ["v1alpha1", "v1beta1"]
        );
        // storage.k8s.io: 1.33 [v1, v1beta1, v1alpha1] contains 1.36's [v1, v1beta1].
        assert_eq!(
            versions_of(&on_old, "storage.k8s.io"),
            ["v1", "v1beta1", "v1alpha1"]
        );
    }

    #[test]
    fn merge_of_three_releases_is_the_union() {
        let docs: Vec<(Value, APIGroupDiscoveryList)> = ["k8s-1.33", "k8s-1.36", "k8s-1.37-dev"]
            .into_iter()
            .map(fixture)
            .collect();
        let expected: BTreeSet<Entry> = docs.iter().flat_map(|(json, _)| entries(json)).collect();
        let merged = merge_peer_aggregated(
            server("s-136", &docs[1].1.items),
            &[
                server("s-133", &docs[0].1.items),
                server("s-137", &docs[2].1.items),
            ],
        );
        assert_eq!(entries(&merged_document(merged.to_vec())), expected);
        // 1.37-dev lists [v1, v1beta1] for storagemigration; with 1.33's [v1alpha1] and 1.36's
        // [v1beta1]: edge v1 → v1beta1, smallest available first: v1, v1alpha1, v1beta1.
        assert_eq!(
            versions_of(&merged, "storagemigration.k8s.io"),
            ["v1", "v1alpha1", "v1beta1"]
        );
    }

    #[test]
    fn merged_resource_fields_are_well_formed() {
        let (_, old) = fixture("k8s-1.33");
        let (_, new) = fixture("k8s-1.36");
        let merged = merge_peer_aggregated(server("a", &old.items), &[server("b", &new.items)]);
        for group in merged.iter() {
            let versions: HashSet<&str> =
                group.versions.iter().map(|v| v.version.as_str()).collect();
            assert_eq!(
                versions.len(),
                group.versions.len(),
                "duplicate version in {}",
                group.name()
            );
            for version in &group.versions {
                let resources: HashSet<&str> = version
                    .resources
                    .iter()
                    .map(|r| r.resource.as_str())
                    .collect();
                assert_eq!(resources.len(), version.resources.len());
            }
        }
    }

    #[test]
    fn core_documents_merge_too() {
        // Our extension: /api. A peer whose pods gained a subresource.
        let local: APIGroupDiscoveryList = serde_json::from_slice(
            &crate::test_fixtures::real_apiserver("discovery-api-aggregated-v2.json"),
        )
        .unwrap();
        let mut peer = local.clone();
        let pods = peer.items[0].versions[0]
            .resources
            .iter_mut()
            .find(|r| r.resource == "pods")
            .unwrap();
        pods.subresources.push(APISubresourceDiscovery {
            subresource: "checkpoint".into(),
            verbs: vec!["create".into()],
            ..Default::default()
        });
        let merged = merge_peer_aggregated(server("a", &local.items), &[server("b", &peer.items)]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].name(), "");
        let subs: Vec<&str> = merged[0].versions[0]
            .resources
            .iter()
            .find(|r| r.resource == "pods")
            .unwrap()
            .subresources
            .iter()
            .map(|s| s.subresource.as_str())
            .collect();
        let mut sorted = subs.clone();
        sorted.sort();
        assert_eq!(subs, sorted);
        assert!(subs.contains(&"checkpoint") && subs.contains(&"exec") && subs.contains(&"status"));
    }

    #[test]
    fn legacy_group_list_of_merged_view_prefers_v1_for_resource_k8s_io() {
        let (_, old) = fixture("k8s-1.33");
        let (_, new) = fixture("k8s-1.36");
        let merged = merge_peer_aggregated(server("a", &old.items), &[server("b", &new.items)]);
        let list = crate::discovery::legacy::legacy_group_list(&APIGroupDiscoveryList::new(
            crate::discovery::model::AggregatedVersion::V2,
            merged.into_owned(),
        ));
        let resource = list
            .groups
            .iter()
            .find(|g| g.name == "resource.k8s.io")
            .unwrap();
        assert_eq!(
            resource.preferred_version.as_ref().unwrap().group_version,
            "resource.k8s.io/v1"
        );
        assert_eq!(list.groups.len(), 22);
    }

    #[test]
    fn metadata_only_difference_with_peer_first_keeps_local_list_like_upstream() {
        let local = vec![group(
            "g1",
            "local",
            vec![version("v1", vec![resource("r", &["get"])])],
        )];
        let peer = vec![group(
            "g1",
            "peer",
            vec![version("v1", vec![resource("r", &["get"])])],
        )];
        let merged = merge_peer_aggregated(server("b-local", &local), &[server("a-peer", &peer)]);
        assert!(matches!(merged, Cow::Borrowed(s) if std::ptr::eq(s, local.as_slice())));
        // Once content differs, the first server's metadata is used.
        let peer = vec![group(
            "g1",
            "peer",
            vec![version("v1", vec![resource("r", &["list"])])],
        )];
        let merged = merge_peer_aggregated(server("b-local", &local), &[server("a-peer", &peer)]);
        assert_eq!(uid(&merged[0]), "peer");
    }

    #[test]
    fn subset_peer_changes_nothing_but_is_not_borrowed() {
        // Upstream flags a different version list as merged even when it adds nothing; the
        // result has the local content.
        let local = vec![group(
            "g",
            "L",
            vec![version("v1", vec![]), version("v2", vec![])],
        )];
        let peer = vec![group("g", "P", vec![version("v2", vec![])])];
        let merged = merge_peer_aggregated(server("a", &local), &[server("b", &peer)]);
        assert!(matches!(merged, Cow::Owned(_)));
        assert_eq!(merged.as_ref(), local.as_slice());
    }
}
