//! Serving discovery and OpenAPI over HTTP: which requests mvp answers itself from the
//! merged views, which go to a peer that serves what the local apiserver does not, and which
//! go to the local apiserver untouched. Pure: [`plan`] looks at the request head and the
//! current views; the front door carries the plan out (see `frontdoor::discovery`).
//!
//! | request (GET or HEAD) | plan |
//! |---|---|
//! | no skew between servers (merged = local) | local, untouched (zero overhead) |
//! | `x-kubernetes-peer-proxied: true` | local (one hop at most, like upstream) |
//! | `/api`, `/apis`, aggregated v2 | merged document, ETag, 304 on `If-None-Match` |
//! | `/api`, `/apis`, v2 `profile=nopeer`, v2beta1, YAML/protobuf only, 406 | local |
//! | `/apis`, legacy (`application/json`, `*/*`, no Accept) | merged `APIGroupList` |
//! | `/api`, legacy | local (`APIVersions` is `v1` on every server; keeps its addresses) |
//! | `/apis/<g>/<v>`, `/api/<v>` | local if it serves the group/version, else the peers serving it |
//! | `/apis/<g>` | local if it serves every merged version, peers if it serves none, else merged `APIGroup` |
//! | `/openapi/v3` | merged index when a peer publishes a path the local server lacks |
//! | `/openapi/v3/<p>` | local if it publishes `p`, else the peers publishing it (`?hash=` match first) |
//!
//! Headers are the apiserver's (recorded 1.36): aggregated answers `Content-Type` with the
//! `g`/`v`/`as` parameters (no `profile`), quoted uppercase SHA-512 `ETag`, `Vary: Accept`,
//! `Cache-Control: public`, and 304 with no body and no content type; legacy answers
//! `application/json` with `Cache-Control: no-cache, private` and no ETag; the OpenAPI index
//! `text/plain; charset=utf-8` (sic) with `Cache-Control: no-cache, private`. A `HEAD` gets
//! the same head without a body.
//!
//! Authorization: mvp never decides who may read discovery. An [`DiscoveryPlan::Answer`] is
//! written only after the local apiserver accepted the very same request from the same
//! caller (see the front door), and requests sent to a peer are authorized by that peer.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use http_body_util::Full;

use super::model::AggregatedVersion;
use super::negotiate::DiscoveryAnswer;
use super::openapi::{DOC_PREFIX, INDEX_PATH, OpenApiRoute, OpenApiView};
use super::view::{DiscoveryPath, DiscoveryResponse, DiscoveryView, PathServersAnswer};

/// The loop-prevention header upstream's proxy sets on forwarded requests.
pub const PEER_PROXIED: &str = "x-kubernetes-peer-proxied";

/// What to do with a request.
#[derive(Debug)]
pub enum DiscoveryPlan {
    /// Not a discovery or OpenAPI request: route it as any other.
    NotDiscovery,
    /// The local apiserver answers it, untouched.
    Local,
    /// Only these peers serve it (best first): forward to the first reachable one.
    Peers(Vec<String>),
    /// mvp answers with this response — once the local apiserver has accepted the same
    /// request from the same caller (authentication and authorization are the apiserver's).
    Answer(Response<Full<Bytes>>),
}

/// Decide what to do with a request head, given the current views (`None` before the first
/// sync: everything goes to the local apiserver).
pub fn plan(
    discovery: Option<&DiscoveryView>,
    openapi: Option<&OpenApiView>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> DiscoveryPlan {
    let head = match *method {
        Method::GET => false,
        Method::HEAD => true,
        _ => return DiscoveryPlan::NotDiscovery,
    };
    let path = uri.path();
    let is_openapi = path == INDEX_PATH || path.starts_with(DOC_PREFIX);
    // Discovery paths have at most three segments; resource paths skip the parse.
    let discovery_path = if path.bytes().filter(|b| *b == b'/').count() <= 3 {
        DiscoveryPath::parse(path)
    } else {
        None
    };
    if !is_openapi && discovery_path.is_none() {
        return DiscoveryPlan::NotDiscovery;
    }
    if headers
        .get(PEER_PROXIED)
        .is_some_and(|v| v.as_bytes() == b"true")
    {
        return DiscoveryPlan::Local;
    }
    if is_openapi {
        let Some(openapi) = openapi else {
            return DiscoveryPlan::Local;
        };
        if path == INDEX_PATH {
            return match openapi.merged_index() {
                Some(body) => DiscoveryPlan::Answer(openapi_index_response(body.clone(), head)),
                None => DiscoveryPlan::Local,
            };
        }
        let relative = &path[DOC_PREFIX.len()..];
        return match openapi.route(relative, uri.query()) {
            OpenApiRoute::Local => DiscoveryPlan::Local,
            OpenApiRoute::Peers(peers) => {
                DiscoveryPlan::Peers(peers.into_iter().map(str::to_owned).collect())
            }
        };
    }
    let (Some(path), Some(view)) = (discovery_path, discovery) else {
        return DiscoveryPlan::Local;
    };
    if !view.has_skew() {
        return DiscoveryPlan::Local;
    }
    let accept = header_str(headers, header::ACCEPT);
    let if_none_match = header_str(headers, header::IF_NONE_MATCH);
    match view.path_servers(path) {
        PathServersAnswer::Local => return DiscoveryPlan::Local,
        PathServersAnswer::Peers(peers) => return DiscoveryPlan::Peers(peers.to_vec()),
        PathServersAnswer::Merged => {}
    }
    if matches!(path, DiscoveryPath::Api | DiscoveryPath::Apis) {
        match view.negotiate(accept) {
            // Legacy `/api` (`APIVersions`) lists `v1` on every server: the local answer is
            // the merged one and keeps the server's own `serverAddressByClientCIDRs`.
            DiscoveryAnswer::Legacy if path == DiscoveryPath::Api => return DiscoveryPlan::Local,
            DiscoveryAnswer::Aggregated {
                version: AggregatedVersion::V2,
                peer_aggregated: true,
            }
            | DiscoveryAnswer::Legacy => {}
            // nopeer, v2beta1 (never merged), formats we do not encode, 406: the local
            // apiserver's own answer is the right one, byte for byte.
            _ => return DiscoveryPlan::Local,
        }
    }
    match discovery_response(view.respond(path, accept, if_none_match), head) {
        Some(response) => DiscoveryPlan::Answer(response),
        None => DiscoveryPlan::Local,
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The HTTP response for a view's answer (`None`: the local apiserver answers it).
pub fn discovery_response(
    answer: DiscoveryResponse<'_>,
    head: bool,
) -> Option<Response<Full<Bytes>>> {
    let mut builder = Response::builder();
    let body = match answer {
        DiscoveryResponse::Local => return None,
        DiscoveryResponse::Ok {
            content_type,
            body,
            etag,
        } => {
            builder = builder.header(header::CONTENT_TYPE, content_type);
            builder = match etag {
                Some(etag) => builder
                    .header(header::CACHE_CONTROL, "public")
                    .header(header::ETAG, etag.header_value())
                    .header(header::VARY, "Accept"),
                None => builder.header(header::CACHE_CONTROL, "no-cache, private"),
            };
            Bytes::copy_from_slice(body)
        }
        DiscoveryResponse::NotModified { etag } => {
            builder = builder
                .status(StatusCode::NOT_MODIFIED)
                .header(header::CACHE_CONTROL, "public")
                .header(header::ETAG, etag.header_value())
                .header(header::VARY, "Accept");
            Bytes::new()
        }
        DiscoveryResponse::NotAcceptable { body } => {
            builder = builder
                .status(StatusCode::NOT_ACCEPTABLE)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CACHE_CONTROL, "no-cache, private");
            Bytes::from_static(body.as_bytes())
        }
    };
    let body = if head {
        // The head a GET would get, including its length (as Go's server sends for HEAD).
        if !body.is_empty() {
            builder = builder.header(header::CONTENT_LENGTH, body.len());
        }
        Bytes::new()
    } else {
        body
    };
    // Every header value above is a static ASCII string or a hex ETag: building cannot fail.
    builder.body(Full::new(body)).ok()
}

/// The merged `/openapi/v3` index, with the apiserver's (odd) headers.
fn openapi_index_response(body: Bytes, head: bool) -> Response<Full<Bytes>> {
    let length = body.len();
    let mut response = Response::new(Full::new(if head { Bytes::new() } else { body }));
    let headers = response.headers_mut();
    if head {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::negotiate::{NOT_ACCEPTABLE_BODY, NegotiationPolicy};
    use crate::discovery::openapi::{ServerOpenApi, parse_index};
    use crate::discovery::served::ExclusionSet;
    use crate::discovery::view::ServerDiscovery;
    use crate::test_fixtures::{discovery, real_apiserver};
    use http_body_util::BodyExt;

    const V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    const V2_NOPEER: &str =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer";
    const CLIENT_GO: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

    fn server(id: &str, release: &str) -> ServerDiscovery {
        ServerDiscovery {
            server_id: id.into(),
            core: serde_json::from_slice(&real_apiserver("discovery-api-aggregated-v2.json"))
                .unwrap(),
            groups: serde_json::from_slice(&discovery(release, "aggregated_v2.json")).unwrap(),
        }
    }

    fn build_view(local: &ServerDiscovery, peers: &[&ServerDiscovery]) -> DiscoveryView {
        DiscoveryView::build(
            local,
            peers,
            &ExclusionSet::default(),
            vec![],
            NegotiationPolicy::KUBE_1_36,
        )
        .unwrap()
    }

    /// A 1.33 node with a 1.36 peer.
    fn on_133() -> DiscoveryView {
        build_view(&server("cp1", "k8s-1.33"), &[&server("cp3", "k8s-1.36")])
    }

    fn get(view: &DiscoveryView, path: &str, headers: &[(&str, &str)]) -> DiscoveryPlan {
        request(view, None, Method::GET, path, headers)
    }

    fn request(
        view: &DiscoveryView,
        openapi: Option<&OpenApiView>,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> DiscoveryPlan {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        plan(Some(view), openapi, &method, &path.parse().unwrap(), &map)
    }

    async fn answer(plan: DiscoveryPlan) -> (StatusCode, HeaderMap, Bytes) {
        match plan {
            DiscoveryPlan::Answer(response) => {
                let (parts, body) = response.into_parts();
                (
                    parts.status,
                    parts.headers,
                    body.collect().await.unwrap().to_bytes(),
                )
            }
            other => panic!("not answered by mvp: {other:?}"),
        }
    }

    fn group_versions(body: &[u8]) -> std::collections::BTreeSet<String> {
        let list: serde_json::Value = serde_json::from_slice(body).unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| {
                let name = g["metadata"]["name"].as_str().unwrap_or("").to_owned();
                g["versions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |v| format!("{name}/{}", v["version"].as_str().unwrap()))
            })
            .collect()
    }

    #[tokio::test]
    async fn apis_v2_is_the_union_with_the_recorded_headers_and_304() {
        let view = on_133();
        let (status, headers, body) = answer(get(&view, "/apis", &[("accept", V2)])).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], V2);
        assert_eq!(headers[header::CACHE_CONTROL], "public");
        assert_eq!(headers[header::VARY], "Accept");
        let etag = headers[header::ETAG].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 130);
        assert!(body.ends_with(b"\n"));
        let union: std::collections::BTreeSet<String> =
            group_versions(&discovery("k8s-1.33", "aggregated_v2.json"))
                .union(&group_versions(&discovery(
                    "k8s-1.36",
                    "aggregated_v2.json",
                )))
                .cloned()
                .collect();
        let served = group_versions(&body);
        assert_eq!(served, union);
        assert!(
            served.contains("resource.k8s.io/v1") && served.contains("storage.k8s.io/v1alpha1")
        );
        let body_len = body.len();
        // client-go's default Accept list picks the same merged v2 document.
        let (_, _, again) = answer(get(&view, "/apis", &[("accept", CLIENT_GO)])).await;
        assert_eq!(again, body);
        // 304: no body, no content type; etag, vary, cache-control repeated (recorded).
        let (status, headers, body) = answer(get(
            &view,
            "/apis",
            &[("accept", V2), ("if-none-match", &etag)],
        ))
        .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        assert!(headers.get(header::CONTENT_TYPE).is_none());
        assert_eq!(headers[header::ETAG], etag.as_str());
        assert_eq!(headers[header::CACHE_CONTROL], "public");
        assert_eq!(headers[header::VARY], "Accept");
        // HEAD: the head, no body.
        let (status, headers, body) = answer(request(
            &view,
            None,
            Method::HEAD,
            "/apis",
            &[("accept", V2)],
        ))
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::ETAG], etag.as_str());
        assert_eq!(
            headers[header::CONTENT_LENGTH],
            body_len.to_string().as_str()
        );
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn nopeer_v2beta1_and_unencodable_go_to_the_local_server() {
        let view = on_133();
        for accept in [
            V2_NOPEER,
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
            "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            "text/html",
        ] {
            for path in ["/api", "/apis"] {
                assert!(
                    matches!(
                        get(&view, path, &[("accept", accept)]),
                        DiscoveryPlan::Local
                    ),
                    "{path} {accept}"
                );
            }
        }
        // One hop at most.
        assert!(matches!(
            get(&view, "/apis", &[("accept", V2), (PEER_PROXIED, "true")]),
            DiscoveryPlan::Local
        ));
        // Other methods and paths are not discovery.
        assert!(matches!(
            request(&view, None, Method::POST, "/apis", &[]),
            DiscoveryPlan::NotDiscovery
        ));
        assert!(matches!(
            get(&view, "/apis/apps/v1/deployments", &[]),
            DiscoveryPlan::NotDiscovery
        ));
        assert!(matches!(
            get(&view, "/version", &[]),
            DiscoveryPlan::NotDiscovery
        ));
    }

    #[tokio::test]
    async fn legacy_api_and_apis_are_merged() {
        let view = on_133();
        let (status, headers, body) =
            answer(get(&view, "/apis", &[("accept", "application/json, */*")])).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache, private");
        assert!(headers.get(header::ETAG).is_none());
        let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(list["kind"], "APIGroupList");
        let names: Vec<&str> = list["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"resource.k8s.io") && names.contains(&"storagemigration.k8s.io"));
        // Both servers have the same core group here: /api is the local server's own.
        assert!(matches!(get(&view, "/api", &[]), DiscoveryPlan::Local));
        assert!(matches!(
            get(&view, "/api", &[("accept", V2)]),
            DiscoveryPlan::Local
        ));
        // A peer with a core subresource the local server lacks: /api is merged too.
        let local = server("cp1", "k8s-1.33");
        let mut peer = server("cp3", "k8s-1.36");
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
        let grown = build_view(&local, &[&peer]);
        // Legacy /api (APIVersions: v1 everywhere) stays the local server's own answer.
        assert!(matches!(get(&grown, "/api", &[]), DiscoveryPlan::Local));
        let (_, _, body) = answer(get(&grown, "/api", &[("accept", V2)])).await;
        assert!(
            String::from_utf8(body.to_vec())
                .unwrap()
                .contains("\"checkpoint\"")
        );
    }

    #[test]
    fn group_versions_only_a_peer_serves_go_to_that_peer() {
        let view = on_133();
        for accept in ["application/json", "application/vnd.kubernetes.protobuf"] {
            match get(
                &view,
                "/apis/scheduling.k8s.io/v1alpha2",
                &[("accept", accept)],
            ) {
                DiscoveryPlan::Peers(peers) => assert_eq!(peers, ["cp3"]),
                other => panic!("{other:?}"),
            }
        }
        // Served locally (both, or only locally): local bytes.
        for path in [
            "/apis/apps/v1",
            "/api/v1",
            "/apis/storage.k8s.io/v1alpha1",
            "/apis/apps",
            "/apis/nothing.example.com/v1",
            "/apis/nothing.example.com",
        ] {
            assert!(
                matches!(get(&view, path, &[]), DiscoveryPlan::Local),
                "{path}"
            );
        }
        // And the other way round: on the 1.36 node, a 1.33-only group/version goes to cp1.
        let on_136 = view_136();
        match get(&on_136, "/apis/storage.k8s.io/v1alpha1", &[]) {
            DiscoveryPlan::Peers(peers) => assert_eq!(peers, ["cp1"]),
            other => panic!("{other:?}"),
        }
    }

    fn view_136() -> DiscoveryView {
        build_view(&server("cp3", "k8s-1.36"), &[&server("cp1", "k8s-1.33")])
    }

    #[tokio::test]
    async fn a_group_that_grew_on_a_peer_is_answered_merged() {
        // resource.k8s.io: 1.33 has v1beta1.., 1.36 adds v1; the APIGroup lists both.
        let view = on_133();
        let (status, headers, body) = answer(get(
            &view,
            "/apis/resource.k8s.io",
            &[("accept", "application/json")],
        ))
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let group: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let versions: Vec<&str> = group["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert!(
            versions.contains(&"v1") && versions.contains(&"v1beta1"),
            "{versions:?}"
        );
    }

    #[test]
    fn without_skew_everything_goes_local() {
        let alone = build_view(&server("cp1", "k8s-1.33"), &[]);
        let twin = build_view(&server("cp1", "k8s-1.33"), &[&server("cp2", "k8s-1.33")]);
        for view in [alone, twin] {
            assert!(!view.has_skew());
            for path in ["/api", "/apis", "/apis/apps", "/apis/apps/v1"] {
                assert!(matches!(
                    get(&view, path, &[("accept", V2)]),
                    DiscoveryPlan::Local
                ));
            }
        }
        let mut map = HeaderMap::new();
        map.insert(header::ACCEPT, HeaderValue::from_static(V2));
        assert!(matches!(
            plan(None, None, &Method::GET, &"/apis".parse().unwrap(), &map),
            DiscoveryPlan::Local
        ));
    }

    #[tokio::test]
    async fn openapi_index_is_merged_and_peer_only_documents_go_to_the_peer() {
        let recorded = parse_index(&real_apiserver("openapi-v3-index.json")).unwrap();
        let mut old = recorded.clone();
        old.paths.remove("apis/resource.k8s.io/v1");
        assert!(old.paths.len() < recorded.paths.len());
        let local = ServerOpenApi {
            server_id: "cp1".into(),
            index: old,
        };
        let peer = ServerOpenApi {
            server_id: "cp3".into(),
            index: recorded.clone(),
        };
        let openapi = OpenApiView::build(&local, &[&peer]).unwrap();
        let view = on_133();
        let (status, headers, body) = answer(request(
            &view,
            Some(&openapi),
            Method::GET,
            "/openapi/v3",
            &[],
        ))
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache, private");
        assert_eq!(body, real_apiserver("openapi-v3-index.json"));
        let hash = recorded.paths["apis/resource.k8s.io/v1"]
            .hash()
            .unwrap()
            .to_owned();
        match request(
            &view,
            Some(&openapi),
            Method::GET,
            &format!("/openapi/v3/apis/resource.k8s.io/v1?hash={hash}"),
            &[],
        ) {
            DiscoveryPlan::Peers(peers) => assert_eq!(peers, ["cp3"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            request(
                &view,
                Some(&openapi),
                Method::GET,
                "/openapi/v3/apis/apps/v1",
                &[]
            ),
            DiscoveryPlan::Local
        ));
        // Nothing new on any peer: the local index as it is.
        let same = OpenApiView::build(&peer, &[&local]).unwrap();
        assert!(matches!(
            request(&view, Some(&same), Method::GET, "/openapi/v3", &[]),
            DiscoveryPlan::Local
        ));
    }

    #[test]
    fn not_acceptable_has_the_recorded_body() {
        let response = discovery_response(
            DiscoveryResponse::NotAcceptable {
                body: NOT_ACCEPTABLE_BODY,
            },
            false,
        )
        .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
