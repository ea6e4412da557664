//! OpenAPI v3 across servers (upstream §7.3 gap 11: upstream neither merges nor proxies
//! `/openapi/*`, so `kubectl explain` of a type only a newer server has fails on an older one).
//!
//! kube-apiserver publishes `/openapi/v3` as an index `{"paths":{"<p>":{"serverRelativeURL":
//! "/openapi/v3/<p>?hash=<H>"}}}` (compact JSON, keys sorted, no trailing newline, served as
//! `text/plain; charset=utf-8` although it is JSON — recorded) and one document per path at
//! `/openapi/v3/<p>`, where `H` is the document's ETag (uppercase hex SHA-512).
//!
//! Ours, built once per change of any server's index ([`OpenApiView::build`]):
//! - the merged index = every path any server publishes; a path the local server publishes
//!   keeps the local entry; a path only peers publish gets the entry of the peer with the
//!   smallest server ID — the peer [`OpenApiView::route`] sends that path to, so the
//!   `?hash=` in the index is the hash of the server that answers it;
//! - `/openapi/v3/<p>`: local if the local server publishes `p`; otherwise the peers
//!   publishing it, the one whose hash equals the request's `?hash=` first, then by server ID.
//!
//! The index is fetched from every server with [`INDEX_PATH`] and [`INDEX_ACCEPT`] (the
//! brain's sync does it next to `/api` and `/apis`) and parsed with [`parse_index`].

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

/// Where each server's OpenAPI v3 index lives.
pub const INDEX_PATH: &str = "/openapi/v3";
/// What to ask it with (client-go's default).
pub const INDEX_ACCEPT: &str = "application/json, */*";
/// The prefix of every OpenAPI v3 document path.
pub const DOC_PREFIX: &str = "/openapi/v3/";

/// A server's OpenAPI v3 index could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    #[error("OpenAPI v3 index is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// One index entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexEntry {
    #[serde(rename = "serverRelativeURL")]
    pub server_relative_url: String,
}

impl IndexEntry {
    /// The `hash` query parameter of the URL, if any.
    pub fn hash(&self) -> Option<&str> {
        hash_query(self.server_relative_url.split_once('?')?.1)
    }
}

/// `/openapi/v3` as published: path (relative to `/openapi/v3/`) → entry. A `BTreeMap`
/// encodes with sorted keys, like Go's map encoding.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenApiIndex {
    pub paths: BTreeMap<String, IndexEntry>,
}

/// Parse a fetched `/openapi/v3` body.
pub fn parse_index(body: &[u8]) -> Result<OpenApiIndex, OpenApiError> {
    Ok(serde_json::from_slice(body)?)
}

/// One server's index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerOpenApi {
    pub server_id: String,
    pub index: OpenApiIndex,
}

/// The `hash` value of a query string (`a=b&hash=H`).
pub fn hash_query(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("hash="))
        .filter(|h| !h.is_empty())
}

/// Where an OpenAPI v3 request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenApiRoute<'v> {
    /// The local apiserver (it publishes the path, or nobody does).
    Local,
    /// Only these peers publish it, best first.
    Peers(Vec<&'v str>),
}

/// The merged index (encoded once) and who publishes each path.
#[derive(Debug, Clone, Default)]
pub struct OpenApiView {
    /// `None` when no peer publishes a path the local server lacks: the local index is
    /// then the merged one and requests go to the local apiserver untouched.
    merged_index: Option<Bytes>,
    /// Paths only peers publish → (server ID, hash) sorted by server ID.
    peer_only: HashMap<String, Vec<(String, Option<String>)>>,
}

impl OpenApiView {
    /// Merge the local and the peers' indexes.
    pub fn build(local: &ServerOpenApi, peers: &[&ServerOpenApi]) -> Result<Self, OpenApiError> {
        let mut peer_only: HashMap<String, Vec<(String, Option<String>)>> = HashMap::new();
        let mut merged = local.index.clone();
        let mut peers: Vec<&ServerOpenApi> = peers.to_vec();
        peers.sort_by(|a, b| a.server_id.cmp(&b.server_id));
        for peer in peers {
            if peer.server_id == local.server_id {
                continue;
            }
            for (path, entry) in &peer.index.paths {
                if local.index.paths.contains_key(path) {
                    continue;
                }
                let owners = peer_only.entry(path.clone()).or_default();
                if owners.iter().any(|(id, _)| *id == peer.server_id) {
                    continue;
                }
                owners.push((peer.server_id.clone(), entry.hash().map(str::to_owned)));
                // The first (smallest ID) peer's entry: the one route() prefers.
                merged
                    .paths
                    .entry(path.clone())
                    .or_insert_with(|| entry.clone());
            }
        }
        let merged_index = if peer_only.is_empty() {
            None
        } else {
            Some(Bytes::from(serde_json::to_vec(&merged)?))
        };
        Ok(OpenApiView {
            merged_index,
            peer_only,
        })
    }

    /// The merged `/openapi/v3` body, when it differs from the local server's.
    pub fn merged_index(&self) -> Option<&Bytes> {
        self.merged_index.as_ref()
    }

    /// Where `/openapi/v3/<path>` (`path` without the prefix, `query` the raw query) goes.
    pub fn route(&self, path: &str, query: Option<&str>) -> OpenApiRoute<'_> {
        let Some(owners) = self.peer_only.get(path) else {
            return OpenApiRoute::Local;
        };
        let wanted = query.and_then(hash_query);
        let mut peers: Vec<&str> = Vec::with_capacity(owners.len());
        if let Some(wanted) = wanted
            && let Some((id, _)) = owners.iter().find(|(_, h)| h.as_deref() == Some(wanted))
        {
            peers.push(id);
        }
        for (id, _) in owners {
            if !peers.contains(&id.as_str()) {
                peers.push(id);
            }
        }
        OpenApiRoute::Peers(peers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::real_apiserver;

    fn index(entries: &[(&str, &str)]) -> OpenApiIndex {
        OpenApiIndex {
            paths: entries
                .iter()
                .map(|(p, h)| {
                    (
                        (*p).to_owned(),
                        IndexEntry {
                            server_relative_url: format!("/openapi/v3/{p}?hash={h}"),
                        },
                    )
                })
                .collect(),
        }
    }

    fn server(id: &str, entries: &[(&str, &str)]) -> ServerOpenApi {
        ServerOpenApi {
            server_id: id.into(),
            index: index(entries),
        }
    }

    #[test]
    fn recorded_index_parses_and_reencodes_byte_for_byte() {
        let body = real_apiserver("openapi-v3-index.json");
        let parsed = parse_index(&body).unwrap();
        assert_eq!(parsed.paths.len(), 47);
        assert_eq!(serde_json::to_vec(&parsed).unwrap(), body);
        // The index hash of a path is its document's ETag (recorded hash-pinned exchange).
        let headers = String::from_utf8(real_apiserver(
            "openapi-v3-api-hash-pinned.response-headers.txt",
        ))
        .unwrap();
        let etag = headers
            .lines()
            .find_map(|l| l.strip_prefix("etag: "))
            .unwrap();
        assert_eq!(format!("\"{}\"", parsed.paths["api"].hash().unwrap()), etag);
    }

    #[test]
    fn alone_or_without_new_paths_there_is_nothing_to_merge() {
        let body = real_apiserver("openapi-v3-index.json");
        let local = ServerOpenApi {
            server_id: "a".into(),
            index: parse_index(&body).unwrap(),
        };
        let view = OpenApiView::build(&local, &[]).unwrap();
        assert!(view.merged_index().is_none());
        // A peer with the same paths but other hashes (another version) changes nothing:
        // the local server answers every path it publishes.
        let mut other = local.clone();
        other.server_id = "b".into();
        for entry in other.index.paths.values_mut() {
            entry.server_relative_url.push('0');
        }
        let view = OpenApiView::build(&local, &[&other]).unwrap();
        assert!(view.merged_index().is_none());
        assert_eq!(view.route("apis/apps/v1", None), OpenApiRoute::Local);
    }

    #[test]
    fn peer_only_paths_are_merged_with_the_answering_peers_hash() {
        let local = server("m-133", &[("api/v1", "L1"), ("apis/apps/v1", "L2")]);
        let peer_b = server(
            "z-136",
            &[
                ("api/v1", "B1"),
                ("apis/apps/v1", "B2"),
                ("apis/resource.k8s.io/v1", "BR"),
            ],
        );
        let peer_a = server(
            "a-136",
            &[("api/v1", "A1"), ("apis/resource.k8s.io/v1", "AR")],
        );
        let view = OpenApiView::build(&local, &[&peer_b, &peer_a]).unwrap();
        let merged = parse_index(view.merged_index().unwrap()).unwrap();
        assert_eq!(
            merged,
            index(&[
                ("api/v1", "L1"),
                ("apis/apps/v1", "L2"),
                ("apis/resource.k8s.io/v1", "AR"),
            ])
        );
        // Compact JSON with sorted keys and no trailing newline, like the apiserver.
        assert!(!view.merged_index().unwrap().ends_with(b"\n"));
        assert_eq!(view.route("api/v1", Some("hash=B1")), OpenApiRoute::Local);
        assert_eq!(
            view.route("apis/resource.k8s.io/v1", None),
            OpenApiRoute::Peers(vec!["a-136", "z-136"])
        );
        assert_eq!(
            view.route("apis/resource.k8s.io/v1", Some("hash=AR")),
            OpenApiRoute::Peers(vec!["a-136", "z-136"])
        );
        // A client holding the other peer's hash goes there first.
        assert_eq!(
            view.route("apis/resource.k8s.io/v1", Some("x=1&hash=BR")),
            OpenApiRoute::Peers(vec!["z-136", "a-136"])
        );
        assert_eq!(view.route("apis/nothing/v1", None), OpenApiRoute::Local);
    }

    #[test]
    fn garbage_index_is_an_error_not_a_panic() {
        assert!(parse_index(b"not json").is_err());
        assert!(parse_index(b"{\"paths\":{\"x\":{}}}").is_err());
    }
}
