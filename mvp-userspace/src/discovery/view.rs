//! The brain's state for one set of server views: every discovery answer pre-encoded (with
//! its ETag) and the routing table, built once per change of any server's view. Answering a
//! request is then a path match, an Accept negotiation and a hash lookup.
//!
//! Answers (beyond upstream, which merges only aggregated `/apis`):
//! - aggregated `/apis` and `/api` v2: merged across servers unless `profile=nopeer`;
//!   v2beta1 (when the policy allows it): the local document, never merged;
//! - legacy `/api`, `/apis`, `/apis/<g>`, `/apis/<g>/<v>`, `/api/<v>`: derived from the merged
//!   documents, so a client using legacy discovery also sees every server's APIs;
//! - anything else (unknown group, YAML/protobuf only, odd Accept on per-group paths) is left
//!   to the local apiserver.

use std::collections::HashMap;

use super::etag::{ETag, EncodedDiscovery, EtagError};
use super::legacy;
use super::merge::{ServerGroups, merge_peer_aggregated, without_excluded};
use super::model::{
    APIGroupDiscovery, APIGroupDiscoveryList, AggregatedVersion, ServerAddressByClientCIDR,
};
use super::negotiate::{
    DiscoveryAnswer, NOT_ACCEPTABLE_BODY, NegotiationPolicy, negotiate_discovery,
};
use super::served::{ExclusionSet, ServedSet};
use crate::route::{PeerServed, RoutingTable};

/// One server's discovery, as fetched with `profile=nopeer`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerDiscovery {
    pub server_id: String,
    /// Aggregated `/api` (the core group).
    pub core: APIGroupDiscoveryList,
    /// Aggregated `/apis`.
    pub groups: APIGroupDiscoveryList,
}

/// Which discovery document a (decoded) non-resource path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryPath<'a> {
    /// `/api`
    Api,
    /// `/apis`
    Apis,
    /// `/api/<version>`
    CoreVersion(&'a str),
    /// `/apis/<group>`
    Group(&'a str),
    /// `/apis/<group>/<version>`
    GroupVersion(&'a str, &'a str),
}

impl<'a> DiscoveryPath<'a> {
    /// Exact paths only: anything else (trailing slashes included) is the local server's.
    pub fn parse(path: &'a str) -> Option<Self> {
        let mut segments = path.strip_prefix('/')?.split('/');
        let first = segments.next()?;
        let rest: Vec<&str> = segments.collect();
        if rest.iter().any(|s| s.is_empty()) {
            return None;
        }
        match (first, rest.as_slice()) {
            ("api", []) => Some(DiscoveryPath::Api),
            ("api", [version]) => Some(DiscoveryPath::CoreVersion(version)),
            ("apis", []) => Some(DiscoveryPath::Apis),
            ("apis", [group]) => Some(DiscoveryPath::Group(group)),
            ("apis", [group, version]) => Some(DiscoveryPath::GroupVersion(group, version)),
            _ => None,
        }
    }
}

/// What to send back for a discovery request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryResponse<'v> {
    /// 200 with this body. Aggregated answers carry an ETag (send with `Vary: Accept` and
    /// `Cache-Control: public`); legacy answers carry none, like kube.
    Ok {
        content_type: &'static str,
        body: &'v [u8],
        etag: Option<&'v ETag>,
    },
    /// 304, no body, no content type; repeat the ETag, `Vary` and `Cache-Control`.
    NotModified { etag: &'v ETag },
    /// 406 `application/json` with this body.
    NotAcceptable { body: &'static str },
    /// Forward to the local apiserver.
    Local,
}

/// Aggregated answers of one kind (merged or local).
#[derive(Debug, Clone, PartialEq, Eq)]
struct AggregatedPair {
    v2: EncodedDiscovery,
    v2beta1: EncodedDiscovery,
}

impl AggregatedPair {
    fn encode(items: &[APIGroupDiscovery]) -> Result<Self, EtagError> {
        let v2 = APIGroupDiscoveryList::new(AggregatedVersion::V2, items.to_vec());
        let mut v2beta1 = v2.clone();
        v2beta1.api_version = Some(AggregatedVersion::V2Beta1.api_version().to_owned());
        Ok(AggregatedPair {
            v2: EncodedDiscovery::encode(&v2)?,
            v2beta1: EncodedDiscovery::encode(&v2beta1)?,
        })
    }

    fn get(&self, version: AggregatedVersion) -> &EncodedDiscovery {
        match version {
            AggregatedVersion::V2 => &self.v2,
            AggregatedVersion::V2Beta1 => &self.v2beta1,
        }
    }
}

fn legacy_bytes<T: serde::Serialize>(document: &T) -> Result<Vec<u8>, EtagError> {
    let mut body = serde_json::to_vec(document)?;
    body.push(b'\n');
    Ok(body)
}

/// All answers and the routing table for one set of server views.
#[derive(Debug, Clone)]
pub struct DiscoveryView {
    policy: NegotiationPolicy,
    local_core: AggregatedPair,
    local_groups: AggregatedPair,
    /// Merged documents exist in v2 only: v2beta1 is never peer-aggregated.
    merged_core: EncodedDiscovery,
    merged_groups: EncodedDiscovery,
    legacy_api: Vec<u8>,
    legacy_apis: Vec<u8>,
    legacy_groups: HashMap<String, Vec<u8>>,
    /// (group, version) → `APIResourceList`; the core group is `""`.
    legacy_group_versions: HashMap<(String, String), Vec<u8>>,
    /// Who serves each discovery path, for answering per group / group-version paths with
    /// the bytes of a server that serves them (see [`DiscoveryView::path_servers`]).
    servers: PathServers,
    routing: RoutingTable,
}

/// Per group and group/version: does the local server serve it, and which peers do
/// (sorted by server ID). The core group is `""`. CRD/APIService group/versions of peers
/// are not counted (they are excluded from the merge too).
#[derive(Debug, Clone, Default)]
struct PathServers {
    skew: bool,
    /// The merged `/api` (`/apis`) differs from the local one.
    core_skew: bool,
    groups_skew: bool,
    groups: HashMap<String, (bool, Vec<String>)>,
    group_versions: HashMap<(String, String), (bool, Vec<String>)>,
    /// Groups whose merged version list differs from the local one (their legacy
    /// `/apis/<g>` answer must come from the merged view).
    grown_groups: std::collections::HashSet<String>,
}

impl PathServers {
    fn add(&mut self, server: Option<&str>, groups: &[APIGroupDiscovery]) {
        for group in groups {
            let entry = self.groups.entry(group.name().to_owned()).or_default();
            mark(entry, server);
            for version in &group.versions {
                let entry = self
                    .group_versions
                    .entry((group.name().to_owned(), version.version.clone()))
                    .or_default();
                mark(entry, server);
            }
        }
    }
}

fn mark(entry: &mut (bool, Vec<String>), server: Option<&str>) {
    match server {
        None => entry.0 = true,
        Some(id) => {
            if let Err(at) = entry.1.binary_search_by(|p| p.as_str().cmp(id)) {
                entry.1.insert(at, id.to_owned());
            }
        }
    }
}

/// Who can answer a per group or per group/version discovery path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathServersAnswer<'v> {
    /// The local server serves it (or nobody does): forward to it.
    Local,
    /// Only these peers serve it (sorted by server ID): forward to the first that answers.
    Peers(&'v [String]),
    /// The local server serves part of it (a group whose versions grew on a peer): answer
    /// from the merged view.
    Merged,
}

impl DiscoveryView {
    /// Build everything from the local server's and the peers' views. Peers' CRD/APIService
    /// group/versions are dropped before merging (their snapshots may be stale; the local
    /// document has the current ones). `server_addresses` goes into legacy `/api`.
    pub fn build(
        local: &ServerDiscovery,
        peers: &[&ServerDiscovery],
        exclusions: &ExclusionSet,
        server_addresses: Vec<ServerAddressByClientCIDR>,
        policy: NegotiationPolicy,
    ) -> Result<Self, EtagError> {
        let filtered_core: Vec<_> = peers
            .iter()
            .map(|p| without_excluded(&p.core.items, exclusions))
            .collect();
        let filtered_groups: Vec<_> = peers
            .iter()
            .map(|p| without_excluded(&p.groups.items, exclusions))
            .collect();
        let core_views: Vec<ServerGroups<'_>> = peers
            .iter()
            .zip(&filtered_core)
            .map(|(p, groups)| ServerGroups {
                server_id: &p.server_id,
                groups,
            })
            .collect();
        let group_views: Vec<ServerGroups<'_>> = peers
            .iter()
            .zip(&filtered_groups)
            .map(|(p, groups)| ServerGroups {
                server_id: &p.server_id,
                groups,
            })
            .collect();
        let merged_core = merge_peer_aggregated(
            ServerGroups {
                server_id: &local.server_id,
                groups: &local.core.items,
            },
            &core_views,
        );
        let merged_groups = merge_peer_aggregated(
            ServerGroups {
                server_id: &local.server_id,
                groups: &local.groups.items,
            },
            &group_views,
        );

        let merged_core_list =
            APIGroupDiscoveryList::new(AggregatedVersion::V2, merged_core.to_vec());
        let merged_groups_list =
            APIGroupDiscoveryList::new(AggregatedVersion::V2, merged_groups.to_vec());
        let mut legacy_groups = HashMap::new();
        let mut legacy_group_versions = HashMap::new();
        for group in merged_core_list
            .items
            .iter()
            .chain(&merged_groups_list.items)
        {
            if !group.name().is_empty() {
                legacy_groups.insert(
                    group.name().to_owned(),
                    legacy_bytes(&legacy::legacy_group_document(group))?,
                );
            }
            for version in &group.versions {
                legacy_group_versions.insert(
                    (group.name().to_owned(), version.version.clone()),
                    legacy_bytes(&legacy::legacy_resource_list(group.name(), version))?,
                );
            }
        }

        let local_served = ServedSet::from_documents([&local.core, &local.groups]);
        let peer_served: Vec<ServedSet> = peers
            .iter()
            .map(|p| ServedSet::from_documents([&p.core, &p.groups]))
            .collect();
        let peer_entries: Vec<PeerServed<'_>> = peers
            .iter()
            .zip(&peer_served)
            .map(|(p, served)| PeerServed {
                server_id: &p.server_id,
                served,
            })
            .collect();

        let local_core = AggregatedPair::encode(&local.core.items)?;
        let local_groups = AggregatedPair::encode(&local.groups.items)?;
        let merged_core = EncodedDiscovery::encode(&merged_core_list)?;
        let merged_groups = EncodedDiscovery::encode(&merged_groups_list)?;
        let core_skew = merged_core.etag != local_core.v2.etag;
        let groups_skew = merged_groups.etag != local_groups.v2.etag;
        let mut servers = PathServers {
            skew: core_skew || groups_skew,
            core_skew,
            groups_skew,
            ..Default::default()
        };
        servers.add(None, &local.core.items);
        servers.add(None, &local.groups.items);
        for (peer, (core, groups)) in peers.iter().zip(filtered_core.iter().zip(&filtered_groups)) {
            servers.add(Some(&peer.server_id), core);
            servers.add(Some(&peer.server_id), groups);
        }
        for group in &merged_groups_list.items {
            let local_versions = local
                .groups
                .items
                .iter()
                .find(|g| g.name() == group.name())
                .map(|g| g.versions.iter().map(|v| &v.version).collect::<Vec<_>>());
            let merged_versions: Vec<_> = group.versions.iter().map(|v| &v.version).collect();
            if local_versions.is_some_and(|l| l != merged_versions) {
                servers.grown_groups.insert(group.name().to_owned());
            }
        }

        Ok(DiscoveryView {
            policy,
            local_core,
            local_groups,
            merged_core,
            merged_groups,
            servers,
            legacy_api: legacy_bytes(&legacy::legacy_api_versions(
                &merged_core_list,
                server_addresses,
            ))?,
            legacy_apis: legacy_bytes(&legacy::legacy_group_list(&merged_groups_list))?,
            legacy_groups,
            legacy_group_versions,
            routing: RoutingTable::build(&local_served, &peer_entries, exclusions.clone()),
        })
    }

    pub fn routing(&self) -> &RoutingTable {
        &self.routing
    }

    /// How this view negotiates `accept` for `/api` and `/apis`.
    pub fn negotiate(&self, accept: Option<&str>) -> DiscoveryAnswer {
        negotiate_discovery(accept, self.policy)
    }

    /// Whether any merged document differs from the local server's own (a version skew, or
    /// a peer serving something the local server does not). Without skew every discovery
    /// request can go to the local apiserver untouched.
    pub fn has_skew(&self) -> bool {
        self.servers.skew
    }

    /// Who answers a per group (`/apis/<g>`) or per group/version (`/apis/<g>/<v>`,
    /// `/api/<v>`) path; `/api` and `/apis` are [`PathServersAnswer::Merged`] when their
    /// merged document differs from the local one.
    pub fn path_servers(&self, path: DiscoveryPath<'_>) -> PathServersAnswer<'_> {
        let entry = match path {
            DiscoveryPath::Api if self.servers.core_skew => return PathServersAnswer::Merged,
            DiscoveryPath::Apis if self.servers.groups_skew => return PathServersAnswer::Merged,
            DiscoveryPath::Api | DiscoveryPath::Apis => return PathServersAnswer::Local,
            DiscoveryPath::Group(group) => {
                if self.servers.grown_groups.contains(group) {
                    return PathServersAnswer::Merged;
                }
                self.servers.groups.get(group)
            }
            DiscoveryPath::GroupVersion(group, version) => self
                .servers
                .group_versions
                .get(&(group.to_owned(), version.to_owned())),
            DiscoveryPath::CoreVersion(version) => self
                .servers
                .group_versions
                .get(&(String::new(), version.to_owned())),
        };
        match entry {
            Some((false, peers)) if !peers.is_empty() => PathServersAnswer::Peers(peers),
            _ => PathServersAnswer::Local,
        }
    }

    fn legacy<'v>(&'v self, body: &'v [u8]) -> DiscoveryResponse<'v> {
        DiscoveryResponse::Ok {
            content_type: "application/json",
            body,
            etag: None,
        }
    }

    fn aggregated<'v>(
        &'v self,
        encoded: &'v EncodedDiscovery,
        version: AggregatedVersion,
        if_none_match: Option<&str>,
    ) -> DiscoveryResponse<'v> {
        if encoded.etag.matches_if_none_match(if_none_match) {
            return DiscoveryResponse::NotModified {
                etag: &encoded.etag,
            };
        }
        DiscoveryResponse::Ok {
            content_type: version.content_type(),
            body: &encoded.body,
            etag: Some(&encoded.etag),
        }
    }

    /// Answer a `GET` for a discovery path.
    pub fn respond(
        &self,
        path: DiscoveryPath<'_>,
        accept: Option<&str>,
        if_none_match: Option<&str>,
    ) -> DiscoveryResponse<'_> {
        let answer = negotiate_discovery(accept, self.policy);
        match path {
            DiscoveryPath::Api | DiscoveryPath::Apis => {
                let (merged, local, legacy) = if path == DiscoveryPath::Api {
                    (&self.merged_core, &self.local_core, &self.legacy_api)
                } else {
                    (&self.merged_groups, &self.local_groups, &self.legacy_apis)
                };
                match answer {
                    DiscoveryAnswer::Aggregated {
                        version,
                        peer_aggregated,
                    } => {
                        // negotiate_discovery only peer-aggregates v2.
                        let encoded = if peer_aggregated && version == AggregatedVersion::V2 {
                            merged
                        } else {
                            local.get(version)
                        };
                        self.aggregated(encoded, version, if_none_match)
                    }
                    DiscoveryAnswer::Legacy => self.legacy(legacy),
                    DiscoveryAnswer::LocalOnly => DiscoveryResponse::Local,
                    DiscoveryAnswer::NotAcceptable => DiscoveryResponse::NotAcceptable {
                        body: NOT_ACCEPTABLE_BODY,
                    },
                }
            }
            DiscoveryPath::Group(_)
            | DiscoveryPath::GroupVersion(..)
            | DiscoveryPath::CoreVersion(_)
                if answer != DiscoveryAnswer::Legacy =>
            {
                DiscoveryResponse::Local
            }
            DiscoveryPath::Group(group) => match self.legacy_groups.get(group) {
                Some(body) => self.legacy(body),
                None => DiscoveryResponse::Local,
            },
            DiscoveryPath::GroupVersion(group, version) => self.legacy_version(group, version),
            DiscoveryPath::CoreVersion(version) => self.legacy_version("", version),
        }
    }

    fn legacy_version(&self, group: &str, version: &str) -> DiscoveryResponse<'_> {
        match self
            .legacy_group_versions
            .get(&(group.to_owned(), version.to_owned()))
        {
            Some(body) => self.legacy(body),
            None => DiscoveryResponse::Local,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_info::classify;
    use crate::route::{Health, LocalReason, RouteDecision};
    use crate::test_fixtures::{
        discovery, real_apiserver, real_apiserver_emulating_135, recorded_etag,
    };
    use http::Method;
    use rand::SeedableRng;

    const V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    const V2_NOPEER: &str =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer";

    fn real_server(id: &str) -> ServerDiscovery {
        ServerDiscovery {
            server_id: id.into(),
            core: serde_json::from_slice(&real_apiserver("discovery-api-aggregated-v2.json"))
                .unwrap(),
            groups: serde_json::from_slice(&real_apiserver("discovery-apis-aggregated-v2.json"))
                .unwrap(),
        }
    }

    fn fixture_server(id: &str, release: &str) -> ServerDiscovery {
        ServerDiscovery {
            server_id: id.into(),
            core: serde_json::from_slice(&real_apiserver("discovery-api-aggregated-v2.json"))
                .unwrap(),
            groups: serde_json::from_slice(&discovery(release, "aggregated_v2.json")).unwrap(),
        }
    }

    fn recorded_addresses() -> Vec<ServerAddressByClientCIDR> {
        vec![ServerAddressByClientCIDR {
            client_cidr: "0.0.0.0/0".into(),
            server_address: "127.0.0.1:16443".into(),
        }]
    }

    fn alone() -> DiscoveryView {
        DiscoveryView::build(
            &real_server("only"),
            &[],
            &ExclusionSet::default(),
            recorded_addresses(),
            NegotiationPolicy::KUBE_1_36,
        )
        .unwrap()
    }

    fn body_of(response: DiscoveryResponse<'_>) -> (&'static str, Vec<u8>, Option<String>) {
        match response {
            DiscoveryResponse::Ok {
                content_type,
                body,
                etag,
            } => (
                content_type,
                body.to_vec(),
                etag.map(|e| e.header_value().to_owned()),
            ),
            other => panic!("expected 200, got {other:?}"),
        }
    }

    #[test]
    fn discovery_paths() {
        assert_eq!(DiscoveryPath::parse("/api"), Some(DiscoveryPath::Api));
        assert_eq!(DiscoveryPath::parse("/apis"), Some(DiscoveryPath::Apis));
        assert_eq!(
            DiscoveryPath::parse("/api/v1"),
            Some(DiscoveryPath::CoreVersion("v1"))
        );
        assert_eq!(
            DiscoveryPath::parse("/apis/apps"),
            Some(DiscoveryPath::Group("apps"))
        );
        assert_eq!(
            DiscoveryPath::parse("/apis/apps/v1"),
            Some(DiscoveryPath::GroupVersion("apps", "v1"))
        );
        for other in [
            "",
            "/",
            "/api/",
            "/apis/",
            "/apis/apps/",
            "/api/v1/pods",
            "/apis/a/v1/x",
            "/version",
            "//api",
            "api",
        ] {
            assert_eq!(DiscoveryPath::parse(other), None, "{other}");
        }
    }

    #[test]
    fn a_server_alone_answers_exactly_like_the_recorded_one() {
        let view = alone();
        // (path, accept, recorded file): every recorded 200 discovery answer, byte for byte.
        // Per group/version lists are compared without storageVersionHash (not in aggregated
        // discovery); every other answer byte for byte.
        let mut resource_lists = std::collections::HashSet::new();
        let mut cases = vec![
            ("/apis", Some(V2), "discovery-apis-aggregated-v2"),
            (
                "/apis",
                Some(V2_NOPEER),
                "discovery-apis-aggregated-v2-nopeer",
            ),
            ("/api", Some(V2), "discovery-api-aggregated-v2"),
            (
                "/api",
                Some(V2_NOPEER),
                "discovery-api-aggregated-v2-nopeer",
            ),
            ("/apis", Some("application/json"), "discovery-apis-legacy"),
            ("/apis", None, "discovery-apis-no-accept-header"),
            ("/apis", Some("*/*"), "discovery-apis-accept-star"),
            ("/api", Some("application/json"), "discovery-api-legacy"),
        ];
        let groups = real_server("x").groups;
        let mut owned = Vec::new();
        for group in &groups.items {
            owned.push((
                format!("/apis/{}", group.name()),
                format!("discovery-apis-{}", group.name()),
            ));
            for version in &group.versions {
                let file = format!("discovery-apis-{}-{}", group.name(), version.version);
                resource_lists.insert(file.clone());
                owned.push((format!("/apis/{}/{}", group.name(), version.version), file));
            }
        }
        for (path, file) in &owned {
            cases.push((path.as_str(), Some("application/json"), file.as_str()));
        }
        for (path, accept, file) in cases {
            let response = view.respond(DiscoveryPath::parse(path).unwrap(), accept, None);
            let (content_type, body, etag) = body_of(response);
            let headers = real_apiserver(&format!("{file}.response-headers.txt"));
            let recorded_type = String::from_utf8_lossy(&headers)
                .lines()
                .find_map(|l| l.strip_prefix("content-type: ").map(str::to_owned));
            assert_eq!(Some(content_type.to_owned()), recorded_type, "{file}");
            assert_eq!(etag, recorded_etag(&headers), "{file}");
            let recorded_body = real_apiserver(&format!("{file}.json"));
            if resource_lists.contains(file) {
                let mut recorded: serde_json::Value =
                    serde_json::from_slice(&recorded_body).unwrap();
                for r in recorded["resources"].as_array_mut().unwrap() {
                    r.as_object_mut().unwrap().remove("storageVersionHash");
                }
                assert_eq!(
                    serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
                    recorded,
                    "{file}"
                );
            } else {
                assert_eq!(body, recorded_body, "{file}");
            }
        }
    }

    #[test]
    fn not_modified_and_not_acceptable_like_the_recorded_server() {
        let view = alone();
        let etag = recorded_etag(&real_apiserver(
            "discovery-apis-aggregated-v2-if-none-match.response-headers.txt",
        ))
        .unwrap();
        match view.respond(DiscoveryPath::Apis, Some(V2), Some(&etag)) {
            DiscoveryResponse::NotModified { etag: ours } => assert_eq!(ours.header_value(), etag),
            other => panic!("expected 304, got {other:?}"),
        }
        // Legacy answers have no ETag, so If-None-Match never applies.
        assert!(matches!(
            view.respond(DiscoveryPath::Apis, Some("application/json"), Some(&etag)),
            DiscoveryResponse::Ok { etag: None, .. }
        ));
        let v2beta1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
        assert_eq!(
            view.respond(DiscoveryPath::Api, Some(v2beta1), None),
            DiscoveryResponse::NotAcceptable {
                body: NOT_ACCEPTABLE_BODY
            }
        );
    }

    #[test]
    fn unknown_or_unencodable_goes_to_local() {
        let view = alone();
        assert_eq!(
            view.respond(DiscoveryPath::Group("example.com"), None, None),
            DiscoveryResponse::Local
        );
        assert_eq!(
            view.respond(DiscoveryPath::GroupVersion("apps", "v9"), None, None),
            DiscoveryResponse::Local
        );
        assert_eq!(
            view.respond(
                DiscoveryPath::Apis,
                Some("application/vnd.kubernetes.protobuf"),
                None
            ),
            DiscoveryResponse::Local
        );
        assert_eq!(
            view.respond(DiscoveryPath::Group("apps"), Some(V2), None),
            DiscoveryResponse::Local
        );
        assert!(matches!(
            view.respond(DiscoveryPath::CoreVersion("v1"), None, None),
            DiscoveryResponse::Ok { etag: None, .. }
        ));
    }

    #[test]
    fn mixed_133_136_views_merge_and_route() {
        let old = fixture_server("apiserver-133", "k8s-1.33");
        let new = fixture_server("apiserver-136", "k8s-1.36");
        let on_old = DiscoveryView::build(
            &old,
            &[&new],
            &ExclusionSet::default(),
            recorded_addresses(),
            NegotiationPolicy::KUBE_1_36,
        )
        .unwrap();
        let on_new = DiscoveryView::build(
            &new,
            &[&old],
            &ExclusionSet::default(),
            recorded_addresses(),
            NegotiationPolicy::KUBE_1_36,
        )
        .unwrap();
        // Both servers serve the same merged document and ETag.
        let merged_old = body_of(on_old.respond(DiscoveryPath::Apis, Some(V2), None));
        let merged_new = body_of(on_new.respond(DiscoveryPath::Apis, Some(V2), None));
        assert_eq!(merged_old, merged_new);
        // nopeer stays each server's own document, with a different tag.
        let local_old = body_of(on_old.respond(DiscoveryPath::Apis, Some(V2_NOPEER), None));
        assert_eq!(
            local_old.1,
            [serde_json::to_vec(&old.groups).unwrap(), b"\n".to_vec()].concat()
        );
        assert_ne!(local_old.2, merged_old.2);
        // Legacy discovery on the old server now shows 1.36-only group/versions.
        let (_, body, _) = body_of(on_old.respond(
            DiscoveryPath::GroupVersion("resource.k8s.io", "v1"),
            None,
            None,
        ));
        let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(list["groupVersion"], "resource.k8s.io/v1");
        let (_, body, _) =
            body_of(on_old.respond(DiscoveryPath::Group("resource.k8s.io"), None, None));
        let group: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(group["preferredVersion"]["version"], "v1");
        // And the routing table sends 1.36-only resources to the new server.
        let request = classify(
            &Method::GET,
            "/apis/resource.k8s.io/v1/resourceslices",
            None,
        )
        .unwrap();
        let up = |_: &str| true;
        let health = Health {
            local_up: true,
            peer_up: &up,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        assert_eq!(
            on_old.routing().decide(&request, false, &health, &mut rng),
            RouteDecision::Peer {
                candidates: vec!["apiserver-136"]
            }
        );
        assert_eq!(
            on_new.routing().decide(&request, false, &health, &mut rng),
            RouteDecision::Local {
                reason: LocalReason::ServedLocally
            }
        );
    }

    #[test]
    fn excluded_peer_group_versions_are_not_merged_nor_routed() {
        let local = real_server("local");
        let mut peer = real_server("peer");
        peer.groups.items.push(
            serde_json::from_str(
                r#"{"metadata":{"name":"example.com"},"versions":[{"version":"v1","resources":[
                {"resource":"widgets","scope":"Namespaced","singularResource":"widget","verbs":["get"]}]}]}"#,
            )
            .unwrap(),
        );
        let exclusions = ExclusionSet::from_iter([("example.com", "v1")]);
        let view = DiscoveryView::build(
            &local,
            &[&peer],
            &exclusions,
            vec![],
            NegotiationPolicy::KUBE_1_36,
        )
        .unwrap();
        let (_, body, _) = body_of(view.respond(DiscoveryPath::Apis, Some(V2), None));
        assert!(!String::from_utf8(body).unwrap().contains("example.com"));
        let request = classify(&Method::GET, "/apis/example.com/v1/widgets", None).unwrap();
        let up = |_: &str| true;
        let health = Health {
            local_up: true,
            peer_up: &up,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        assert_eq!(
            view.routing().decide(&request, false, &health, &mut rng),
            RouteDecision::Local {
                reason: LocalReason::Excluded
            }
        );
        // Without the exclusion the peer's group is merged in.
        let view = DiscoveryView::build(
            &local,
            &[&peer],
            &ExclusionSet::default(),
            vec![],
            NegotiationPolicy::KUBE_1_36,
        )
        .unwrap();
        let (_, body, _) = body_of(view.respond(DiscoveryPath::Apis, Some(V2), None));
        assert!(String::from_utf8(body).unwrap().contains("example.com"));
    }

    #[test]
    fn v2beta1_serves_the_local_document_relabelled() {
        let old = fixture_server("a", "k8s-1.33");
        let new = fixture_server("b", "k8s-1.36");
        let view = DiscoveryView::build(
            &old,
            &[&new],
            &ExclusionSet::default(),
            vec![],
            NegotiationPolicy {
                accept_v2beta1: true,
            },
        )
        .unwrap();
        let v2beta1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
        let (content_type, body, _) =
            body_of(view.respond(DiscoveryPath::Apis, Some(v2beta1), None));
        assert_eq!(content_type, v2beta1);
        let list: APIGroupDiscoveryList = serde_json::from_slice(&body).unwrap();
        assert_eq!(list.aggregated_version(), Some(AggregatedVersion::V2Beta1));
        assert_eq!(
            list.items, old.groups.items,
            "never peer-aggregated (upstream §8 case 40)"
        );
    }

    fn with_group(mut server: ServerDiscovery, name: &str, resource: &str) -> ServerDiscovery {
        server.groups.items.push(
            serde_json::from_value(serde_json::json!({"metadata": {"name": name},
                "versions": [{"version": "v1", "resources": [{"resource": resource,
                "scope": "Cluster", "singularResource": "", "verbs": ["get"]}],
                "freshness": "Current"}]}))
            .unwrap(),
        );
        server
    }

    fn group_names(view: &DiscoveryView, accept: &str) -> Vec<String> {
        let (_, body, _) = body_of(view.respond(DiscoveryPath::Apis, Some(accept), None));
        let list: APIGroupDiscoveryList = serde_json::from_slice(&body).unwrap();
        list.items.iter().map(|g| g.name().to_owned()).collect()
    }

    fn build(local: &ServerDiscovery, peers: &[&ServerDiscovery]) -> DiscoveryView {
        DiscoveryView::build(
            local,
            peers,
            &ExclusionSet::default(),
            vec![],
            NegotiationPolicy::KUBE_1_36,
        )
        .unwrap()
    }

    #[test]
    fn upstream_cases_22_24_26_peer_groups_in_merged_view_only() {
        let empty = |id: &str| ServerDiscovery {
            server_id: id.into(),
            ..Default::default()
        };
        let local = with_group(empty("local"), "local.example.com", "locals");
        let peer1 = with_group(empty("peer-1"), "peer.example.com", "peers");
        let peer2 = with_group(empty("peer-2"), "other.example.com", "others");
        // 22: v2 without profile → local + peer groups.
        let view = build(&local, &[&peer1]);
        assert_eq!(
            group_names(&view, V2),
            ["local.example.com", "peer.example.com"]
        );
        // 24: nopeer → local only.
        assert_eq!(group_names(&view, V2_NOPEER), ["local.example.com"]);
        // 26: two peers → union of three groups (no shared order: lexicographic).
        let view = build(&local, &[&peer1, &peer2]);
        assert_eq!(
            group_names(&view, V2),
            ["local.example.com", "other.example.com", "peer.example.com"]
        );
        // 25: no peers → local only, same bytes as nopeer.
        let view = build(&local, &[]);
        assert_eq!(
            body_of(view.respond(DiscoveryPath::Apis, Some(V2), None)),
            body_of(view.respond(DiscoveryPath::Apis, Some(V2_NOPEER), None))
        );
    }

    #[test]
    fn upstream_case_27_etag_stable_then_changes_with_content() {
        let local = real_server("local");
        let peer = real_server("peer");
        let first = body_of(build(&local, &[&peer]).respond(DiscoveryPath::Apis, Some(V2), None));
        let again = body_of(build(&local, &[&peer]).respond(DiscoveryPath::Apis, Some(V2), None));
        assert!(first.2.is_some());
        assert_eq!(first.2, again.2);
        let grown = with_group(real_server("peer"), "new.example.com", "news");
        let changed =
            body_of(build(&local, &[&grown]).respond(DiscoveryPath::Apis, Some(V2), None));
        assert_ne!(first.2, changed.2);
    }

    #[test]
    fn upstream_case_41_departed_peer_disappears() {
        let local = real_server("local");
        let peer = with_group(real_server("peer"), "peer.example.com", "peers");
        let with_peer = build(&local, &[&peer]);
        assert!(group_names(&with_peer, V2).contains(&"peer.example.com".to_owned()));
        let request = classify(&Method::GET, "/apis/peer.example.com/v1/peers", None).unwrap();
        let up = |_: &str| true;
        let health = Health {
            local_up: true,
            peer_up: &up,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        assert!(matches!(
            with_peer
                .routing()
                .decide(&request, false, &health, &mut rng),
            RouteDecision::Peer { .. }
        ));
        let without = build(&local, &[]);
        assert!(!group_names(&without, V2).contains(&"peer.example.com".to_owned()));
        assert_eq!(
            without.routing().decide(&request, false, &health, &mut rng),
            RouteDecision::LocalNotFound
        );
    }

    #[test]
    fn merged_core_includes_a_peer_only_subresource() {
        let local = real_server("local");
        let mut peer = real_server("peer");
        let pods = peer.core.items[0].versions[0]
            .resources
            .iter_mut()
            .find(|r| r.resource == "pods")
            .unwrap();
        pods.subresources
            .push(crate::discovery::model::APISubresourceDiscovery {
                subresource: "checkpoint".into(),
                verbs: vec!["create".into()],
                ..Default::default()
            });
        let view = build(&local, &[&peer]);
        let (_, merged, _) = body_of(view.respond(DiscoveryPath::Api, Some(V2), None));
        assert!(
            String::from_utf8(merged)
                .unwrap()
                .contains("\"checkpoint\"")
        );
        let (_, local_only, _) = body_of(view.respond(DiscoveryPath::Api, Some(V2_NOPEER), None));
        assert!(
            !String::from_utf8(local_only)
                .unwrap()
                .contains("\"checkpoint\"")
        );
        // Legacy /api/v1 is derived from the merged view.
        let (_, legacy, _) = body_of(view.respond(DiscoveryPath::CoreVersion("v1"), None, None));
        assert!(
            String::from_utf8(legacy)
                .unwrap()
                .contains("\"pods/checkpoint\"")
        );
    }

    #[test]
    fn real_135_and_136_servers_both_serve_the_136_document() {
        // The recorded emulating-1.35 /apis lacks only MutatingAdmissionPolicy(Binding) in
        // admissionregistration.k8s.io/v1; 1.36's resource list there is a superset, so the
        // consensus order is 1.36's and the merged document is exactly 1.36's — same bytes,
        // same ETag as the real 1.36 server sent.
        let emulated = ServerDiscovery {
            server_id: "apiserver-a".into(),
            core: serde_json::from_slice(&real_apiserver_emulating_135(
                "discovery-api-aggregated-v2.json",
            ))
            .unwrap(),
            groups: serde_json::from_slice(&real_apiserver_emulating_135(
                "discovery-apis-aggregated-v2.json",
            ))
            .unwrap(),
        };
        let current = ServerDiscovery {
            server_id: "apiserver-b".into(),
            ..real_server("x")
        };
        let recorded_body = real_apiserver("discovery-apis-aggregated-v2.json");
        let recorded_tag = recorded_etag(&real_apiserver(
            "discovery-apis-aggregated-v2.response-headers.txt",
        ));
        for view in [build(&emulated, &[&current]), build(&current, &[&emulated])] {
            let (_, body, etag) = body_of(view.respond(DiscoveryPath::Apis, Some(V2), None));
            assert_eq!(body, recorded_body);
            assert_eq!(etag, recorded_tag);
        }
        // On the 1.35 server, MutatingAdmissionPolicies go to the 1.36 peer.
        let view = build(&emulated, &[&current]);
        let request = classify(
            &Method::POST,
            "/apis/admissionregistration.k8s.io/v1/mutatingadmissionpolicies",
            None,
        )
        .unwrap();
        let up = |_: &str| true;
        let health = Health {
            local_up: true,
            peer_up: &up,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        assert_eq!(
            view.routing().decide(&request, false, &health, &mut rng),
            RouteDecision::Peer {
                candidates: vec!["apiserver-b"]
            }
        );
        // And its nopeer document is still its own (the recorded 1.35 one).
        let (_, body, etag) = body_of(view.respond(DiscoveryPath::Apis, Some(V2_NOPEER), None));
        assert_eq!(
            body,
            real_apiserver_emulating_135("discovery-apis-aggregated-v2.json")
        );
        assert_eq!(
            etag,
            recorded_etag(&real_apiserver_emulating_135(
                "discovery-apis-aggregated-v2.response-headers.txt"
            ))
        );
    }
}
