//! Request classification, the way kube-apiserver's RequestInfo resolver
//! (`k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`) does it, so the router sees
//! exactly the group/version/resource/subresource the apiserver will.
//!
//! Mirrored behaviour:
//! - the path is percent-decoded *before* it is split (so `%2F` splits, as Go's `URL.Path`);
//!   leading/trailing slashes are trimmed, empty segments inside are kept;
//! - fewer than 3 segments, or a first segment other than `api`/`apis`, or `apis` with fewer
//!   than 4 segments → non-resource (`/api`, `/api/v1`, `/apis/<g>`, `/apis/<g>/<v>`,
//!   `/version`, `/healthz`, `/openapi/v3/...`);
//! - `watch`/`proxy` right after the version are verbs (`/api/v1/watch/...`); with nothing
//!   after them kube fails with "unable to determine kind and namespace" (a 500);
//! - verb from the method: POST create, GET/HEAD get, PUT update, PATCH patch, DELETE delete,
//!   anything else empty; get without name → list, or watch when `?watch` is set to anything
//!   but `0`/`false`; delete without name → deletecollection. A list/watch whose
//!   `fieldSelector` pins `metadata.name` gets that name.
//! - `namespaces/<ns>/<x>`: `<x>` is the resource unless it is `status` or `finalize`, which
//!   are subresources of the namespace object itself;
//! - connect-style subresources (exec, attach, portforward, proxy) carry the method's verb
//!   (`get` for GET/WebSocket, `create` for POST); kube has no separate verb for them at
//!   this layer.
//!
//! Not mirrored: DecodeParameters rejecting a malformed `labelSelector` (which only changes
//! whether a field-selector name is taken); a path that is not UTF-8 after decoding is an
//! error here while Go would carry the bytes (such a path never names an API object).

use std::fmt;

/// The API prefix of a resource request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiPrefix {
    /// `/api`: the core (legacy) group, no group segment.
    Api,
    /// `/apis/<group>`.
    Apis,
}

/// Verb of a resource request, as kube authorizes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
    /// The deprecated `/api/v1/proxy/...` form.
    Proxy,
    /// A method kube has no verb for (OPTIONS, TRACE, …): kube leaves the verb empty.
    Unknown,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
            Verb::Proxy => "proxy",
            Verb::Unknown => "",
        }
    }

    /// Requests that change nothing and may be retried on another server.
    pub fn is_read_only(self) -> bool {
        matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request for an API resource. Empty strings mean "not given", as in kube.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRequest {
    pub api_prefix: ApiPrefix,
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    pub namespace: String,
    pub resource: String,
    pub name: String,
    pub subresource: String,
    /// The segments from the resource on (`[pods, p1, proxy, some, path]`).
    pub parts: Vec<String>,
    pub verb: Verb,
}

impl ResourceRequest {
    pub fn subresource(&self) -> Option<&str> {
        (!self.subresource.is_empty()).then_some(self.subresource.as_str())
    }

    pub fn name(&self) -> Option<&str> {
        (!self.name.is_empty()).then_some(self.name.as_str())
    }

    pub fn namespace(&self) -> Option<&str> {
        (!self.namespace.is_empty()).then_some(self.namespace.as_str())
    }
}

/// What a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestInfo {
    /// Anything that is not an API resource (discovery, health, version, OpenAPI, metrics).
    /// `verb` is the lowercased method, as kube authorizes non-resource requests.
    NonResource {
        path: String,
        verb: String,
    },
    Resource(ResourceRequest),
}

impl RequestInfo {
    pub fn resource(&self) -> Option<&ResourceRequest> {
        match self {
            RequestInfo::Resource(request) => Some(request),
            RequestInfo::NonResource { .. } => None,
        }
    }
}

/// A request target kube-apiserver would not classify either.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestInfoError {
    /// Go's URL parser rejects it; net/http answers 400 before any handler runs.
    #[error("invalid percent-encoding in path {path:?}")]
    InvalidEscape { path: String },
    #[error("path {path:?} is not UTF-8 once percent-decoded")]
    NotUtf8 { path: String },
    /// kube: "unable to determine kind and namespace from url" (answered 500).
    #[error("unable to determine kind and namespace from url {path:?}")]
    MissingResourceAfterVerb { path: String },
}

const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

fn is_hex(byte: u8) -> bool {
    byte.is_ascii_hexdigit()
}

/// Percent-decode a path the way Go's `url.PathUnescape` does: every `%` must start a
/// two-hex-digit escape; `+` stays `+`.
pub fn decode_path(raw: &str) -> Result<String, RequestInfoError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let valid = bytes.get(i + 1).copied().is_some_and(is_hex)
                && bytes.get(i + 2).copied().is_some_and(is_hex);
            if !valid {
                return Err(RequestInfoError::InvalidEscape {
                    path: raw.to_owned(),
                });
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| RequestInfoError::NotUtf8 {
            path: raw.to_owned(),
        })
}

/// Go's `url.QueryUnescape`: `+` is a space; a bad escape makes the pair unusable.
fn decode_query_component(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    decode_path(&spaced).ok()
}

/// Go's `url.ParseQuery` (1.17+): pairs split on `&`; pairs containing `;` or with a bad
/// escape are dropped.
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode_query_component(key)?, decode_query_component(value)?))
        })
}

fn first_query_value(query: Option<&str>, wanted: &str) -> Option<String> {
    query_pairs(query?)
        .find(|(key, _)| key == wanted)
        .map(|(_, value)| value)
}

/// kube's `Convert_Slice_string_To_bool`: only `0` and (any case) `false` are false.
fn query_flag(value: &str) -> bool {
    !(value == "0" || value.eq_ignore_ascii_case("false"))
}

/// `fields.UnescapeValue`.
fn unescape_field_value(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut in_slash = false;
    for c in value.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => return None,
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => return None,
            _ => out.push(c),
        }
    }
    (!in_slash).then_some(out)
}

/// `fields.ParseSelector` then `RequiresExactMatch("metadata.name")`. `Err` when the
/// selector does not parse (kube then ignores every list option but `watch`).
fn field_selector_name(selector: &str) -> Result<Option<String>, ()> {
    // splitTerms: split on commas not escaped by a backslash.
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in selector.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);

    let mut name = None;
    for term in terms.into_iter().filter(|t| !t.is_empty()) {
        // splitTerm: the first position where "!=", "==" or "=" starts.
        let split = term.char_indices().find_map(|(i, _)| {
            let rest = &term[i..];
            ["!=", "==", "="]
                .into_iter()
                .find(|op| rest.starts_with(op))
                .map(|op| (&term[..i], op, &term[i + op.len()..]))
        });
        let (field, operator, raw_value) = split.ok_or(())?;
        let value = unescape_field_value(raw_value).ok_or(())?;
        if name.is_none() && field == "metadata.name" && operator != "!=" {
            name = Some(value);
        }
    }
    Ok(name)
}

/// `path.IsValidPathSegmentName`.
fn is_valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

/// Whether DecodeParameters into ListOptions would fail on an integer option.
fn has_invalid_integer_option(query: Option<&str>) -> bool {
    let Some(query) = query else { return false };
    query_pairs(query)
        .filter(|(key, _)| key == "limit" || key == "timeoutSeconds")
        .any(|(_, value)| value.parse::<i64>().is_err())
}

fn verb_from_method(method: &http::Method) -> Verb {
    match *method {
        http::Method::POST => Verb::Create,
        http::Method::GET | http::Method::HEAD => Verb::Get,
        http::Method::PUT => Verb::Update,
        http::Method::PATCH => Verb::Patch,
        http::Method::DELETE => Verb::Delete,
        _ => Verb::Unknown,
    }
}

/// Classify a request from its method, raw (still percent-encoded) path and raw query.
pub fn classify(
    method: &http::Method,
    raw_path: &str,
    raw_query: Option<&str>,
) -> Result<RequestInfo, RequestInfoError> {
    let path = decode_path(raw_path)?;
    let non_resource = |path: String| {
        Ok(RequestInfo::NonResource {
            path,
            verb: method.as_str().to_lowercase(),
        })
    };

    let trimmed = path.trim_matches('/');
    let segments: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    if segments.len() < 3 {
        return non_resource(path);
    }
    let api_prefix = match segments[0] {
        "api" => ApiPrefix::Api,
        "apis" => ApiPrefix::Apis,
        _ => return non_resource(path),
    };
    let mut rest = &segments[1..];
    let group = match api_prefix {
        ApiPrefix::Api => "",
        ApiPrefix::Apis => {
            if rest.len() < 3 {
                return non_resource(path);
            }
            let group = rest[0];
            rest = &rest[1..];
            group
        }
    };
    let version = rest[0];
    rest = &rest[1..];

    let verb = match rest[0] {
        special @ ("watch" | "proxy") => {
            if rest.len() < 2 {
                return Err(RequestInfoError::MissingResourceAfterVerb { path });
            }
            rest = &rest[1..];
            if special == "watch" {
                Verb::Watch
            } else {
                Verb::Proxy
            }
        }
        _ => verb_from_method(method),
    };

    let mut namespace = "";
    if rest[0] == "namespaces" && rest.len() > 1 {
        namespace = rest[1];
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        }
    }

    let mut request = ResourceRequest {
        api_prefix,
        group: group.to_owned(),
        version: version.to_owned(),
        namespace: namespace.to_owned(),
        resource: String::new(),
        name: String::new(),
        subresource: String::new(),
        parts: rest.iter().map(|s| (*s).to_owned()).collect(),
        verb,
    };
    // The deprecated proxy verb never has a subresource: everything after the name is
    // the proxied path.
    if rest.len() >= 3 && verb != Verb::Proxy {
        request.subresource = rest[2].to_owned();
    }
    if rest.len() >= 2 {
        request.name = rest[1].to_owned();
    }
    request.resource = rest[0].to_owned();

    if request.name.is_empty() && request.verb == Verb::Get {
        let watch = first_query_value(raw_query, "watch").is_some_and(|v| query_flag(&v));
        request.verb = if watch { Verb::Watch } else { Verb::List };
        if !has_invalid_integer_option(raw_query)
            && let Some(selector) = first_query_value(raw_query, "fieldSelector")
            && let Ok(Some(name)) = field_selector_name(&selector)
            && is_valid_path_segment_name(&name)
        {
            request.name = name;
        }
    }
    if request.name.is_empty() && request.verb == Verb::Delete {
        request.verb = Verb::DeleteCollection;
    }
    Ok(RequestInfo::Resource(request))
}

/// [`classify`] on an `http::Uri` (origin-form or absolute-form).
pub fn classify_uri(
    method: &http::Method,
    uri: &http::Uri,
) -> Result<RequestInfo, RequestInfoError> {
    classify(method, uri.path(), uri.query())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    /// Expected resource classification: (group, version, namespace, resource, name,
    /// subresource, verb).
    type Expected<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str, Verb);

    fn resource(method: Method, target: &str) -> ResourceRequest {
        let uri: http::Uri = target.parse().unwrap();
        match classify_uri(&method, &uri).unwrap() {
            RequestInfo::Resource(request) => request,
            other => panic!("{target}: expected a resource request, got {other:?}"),
        }
    }

    fn check(method: Method, target: &str, expected: Expected<'_>) {
        let r = resource(method.clone(), target);
        let actual = (
            r.group.as_str(),
            r.version.as_str(),
            r.namespace.as_str(),
            r.resource.as_str(),
            r.name.as_str(),
            r.subresource.as_str(),
            r.verb,
        );
        assert_eq!(actual, expected, "{method} {target}");
    }

    fn non_resource(method: Method, target: &str) -> String {
        let uri: http::Uri = target.parse().unwrap();
        match classify_uri(&method, &uri).unwrap() {
            RequestInfo::NonResource { path, verb } => {
                assert_eq!(verb, method.as_str().to_lowercase());
                path
            }
            other => panic!("{target}: expected non-resource, got {other:?}"),
        }
    }

    use Verb::*;

    #[test]
    fn non_resource_paths() {
        for target in [
            "/",
            "/api",
            "/api/",
            "/api/v1",
            "/api/v1/",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/apis/apps/v1/",
            "/version",
            "/healthz",
            "/healthz/etcd",
            "/livez",
            "/readyz?verbose",
            "/metrics",
            "/openapi/v2",
            "/openapi/v3",
            "/openapi/v3/apis/apps/v1",
            "/openapi/v3/api/v1?hash=ABC",
            "/foo/bar/baz",
            "/logs/kube-apiserver.log",
            "/.well-known/openid-configuration",
            "/API/v1/pods",
            "//",
        ] {
            non_resource(Method::GET, target);
        }
        // upstream §8 case 1: /foo/bar/baz is non-resource.
        assert_eq!(non_resource(Method::GET, "/foo/bar/baz"), "/foo/bar/baz");
        assert_eq!(non_resource(Method::POST, "/apis/apps/v1"), "/apis/apps/v1");
        assert_eq!(non_resource(Method::OPTIONS, "/version"), "/version");
    }

    #[test]
    fn core_collection_and_object_verbs() {
        check(
            Method::GET,
            "/api/v1/pods",
            ("", "v1", "", "pods", "", "", List),
        );
        check(
            Method::GET,
            "/api/v1/namespaces/ns/pods",
            ("", "v1", "ns", "pods", "", "", List),
        );
        check(
            Method::GET,
            "/api/v1/namespaces/ns/pods/p1",
            ("", "v1", "ns", "pods", "p1", "", Get),
        );
        check(
            Method::HEAD,
            "/api/v1/namespaces/ns/pods/p1",
            ("", "v1", "ns", "pods", "p1", "", Get),
        );
        check(
            Method::POST,
            "/api/v1/namespaces/ns/pods",
            ("", "v1", "ns", "pods", "", "", Create),
        );
        check(
            Method::PUT,
            "/api/v1/namespaces/ns/pods/p1",
            ("", "v1", "ns", "pods", "p1", "", Update),
        );
        check(
            Method::PATCH,
            "/api/v1/namespaces/ns/pods/p1",
            ("", "v1", "ns", "pods", "p1", "", Patch),
        );
        check(
            Method::DELETE,
            "/api/v1/namespaces/ns/pods/p1",
            ("", "v1", "ns", "pods", "p1", "", Delete),
        );
        check(
            Method::DELETE,
            "/api/v1/namespaces/ns/pods",
            ("", "v1", "ns", "pods", "", "", DeleteCollection),
        );
        check(
            Method::OPTIONS,
            "/api/v1/namespaces/ns/pods/p1",
            ("", "v1", "ns", "pods", "p1", "", Unknown),
        );
        check(
            Method::TRACE,
            "/api/v1/pods",
            ("", "v1", "", "pods", "", "", Unknown),
        );
        // POST to a named object is still create (kube does not look at the name).
        check(
            Method::POST,
            "/api/v1/namespaces/ns/pods/p1",
            ("", "v1", "ns", "pods", "p1", "", Create),
        );
    }

    #[test]
    fn group_resources() {
        check(
            Method::GET,
            "/apis/apps/v1/deployments",
            ("apps", "v1", "", "deployments", "", "", List),
        );
        check(
            Method::GET,
            "/apis/apps/v1/namespaces/ns/deployments/d",
            ("apps", "v1", "ns", "deployments", "d", "", Get),
        );
        check(
            Method::GET,
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin",
            (
                "rbac.authorization.k8s.io",
                "v1",
                "",
                "clusterroles",
                "admin",
                "",
                Get,
            ),
        );
        check(
            Method::POST,
            "/apis/resource.k8s.io/v1alpha3/devicetaintrules",
            (
                "resource.k8s.io",
                "v1alpha3",
                "",
                "devicetaintrules",
                "",
                "",
                Create,
            ),
        );
        check(
            Method::GET,
            "/apis/storagemigration.k8s.io/v1beta1/storageversionmigrations",
            (
                "storagemigration.k8s.io",
                "v1beta1",
                "",
                "storageversionmigrations",
                "",
                "",
                List,
            ),
        );
        let r = resource(Method::GET, "/apis/apps/v1/deployments");
        assert_eq!(r.api_prefix, ApiPrefix::Apis);
        assert_eq!(
            resource(Method::GET, "/api/v1/pods").api_prefix,
            ApiPrefix::Api
        );
        // Unknown groups are still resource requests; whether they exist is discovery's job.
        check(
            Method::GET,
            "/apis/example.com/v1/widgets",
            ("example.com", "v1", "", "widgets", "", "", List),
        );
    }

    #[test]
    fn subresources() {
        check(
            Method::GET,
            "/api/v1/namespaces/ns/pods/p1/log",
            ("", "v1", "ns", "pods", "p1", "log", Get),
        );
        check(
            Method::POST,
            "/api/v1/namespaces/ns/pods/p1/exec?command=ls",
            ("", "v1", "ns", "pods", "p1", "exec", Create),
        );
        check(
            Method::GET,
            "/api/v1/namespaces/ns/pods/p1/exec?command=ls",
            ("", "v1", "ns", "pods", "p1", "exec", Get),
        );
        check(
            Method::POST,
            "/api/v1/namespaces/ns/pods/p1/attach",
            ("", "v1", "ns", "pods", "p1", "attach", Create),
        );
        check(
            Method::POST,
            "/api/v1/namespaces/ns/pods/p1/portforward",
            ("", "v1", "ns", "pods", "p1", "portforward", Create),
        );
        check(
            Method::POST,
            "/api/v1/namespaces/ns/pods/p1/eviction",
            ("", "v1", "ns", "pods", "p1", "eviction", Create),
        );
        check(
            Method::PUT,
            "/api/v1/namespaces/ns/pods/p1/status",
            ("", "v1", "ns", "pods", "p1", "status", Update),
        );
        check(
            Method::PATCH,
            "/api/v1/namespaces/ns/pods/p1/resize",
            ("", "v1", "ns", "pods", "p1", "resize", Patch),
        );
        check(
            Method::GET,
            "/apis/apps/v1/namespaces/ns/deployments/d/scale",
            ("apps", "v1", "ns", "deployments", "d", "scale", Get),
        );
        check(
            Method::PUT,
            "/apis/resource.k8s.io/v1alpha3/devicetaintrules/t/status",
            (
                "resource.k8s.io",
                "v1alpha3",
                "",
                "devicetaintrules",
                "t",
                "status",
                Update,
            ),
        );
        check(
            Method::POST,
            "/api/v1/namespaces/ns/serviceaccounts/sa/token",
            ("", "v1", "ns", "serviceaccounts", "sa", "token", Create),
        );
        check(
            Method::GET,
            "/api/v1/nodes/n1/proxy",
            ("", "v1", "", "nodes", "n1", "proxy", Get),
        );
    }

    #[test]
    fn proxy_subresource_keeps_trailing_parts() {
        let r = resource(
            Method::GET,
            "/api/v1/namespaces/ns/pods/p1/proxy/some/path/",
        );
        assert_eq!(
            (r.resource.as_str(), r.name.as_str(), r.subresource.as_str()),
            ("pods", "p1", "proxy")
        );
        assert_eq!(r.parts, ["pods", "p1", "proxy", "some", "path"]);
        let r = resource(
            Method::GET,
            "/api/v1/namespaces/ns/services/https:web:443/proxy/x",
        );
        assert_eq!(
            (r.name.as_str(), r.subresource.as_str()),
            ("https:web:443", "proxy")
        );
    }

    #[test]
    fn deprecated_proxy_verb_has_no_subresource() {
        let r = resource(Method::GET, "/api/v1/proxy/namespaces/ns/pods/p1/some/path");
        assert_eq!(r.verb, Proxy);
        assert_eq!(
            (r.namespace.as_str(), r.resource.as_str(), r.name.as_str()),
            ("ns", "pods", "p1")
        );
        assert_eq!(r.subresource, "");
        assert_eq!(r.parts, ["pods", "p1", "some", "path"]);
        check(
            Method::GET,
            "/api/v1/proxy/nodes/n1",
            ("", "v1", "", "nodes", "n1", "", Proxy),
        );
    }

    #[test]
    fn namespaces_as_a_resource() {
        check(
            Method::GET,
            "/api/v1/namespaces",
            ("", "v1", "", "namespaces", "", "", List),
        );
        // The namespace object: kube also sets namespace to its own name.
        check(
            Method::GET,
            "/api/v1/namespaces/ns",
            ("", "v1", "ns", "namespaces", "ns", "", Get),
        );
        check(
            Method::DELETE,
            "/api/v1/namespaces/ns",
            ("", "v1", "ns", "namespaces", "ns", "", Delete),
        );
        check(
            Method::PUT,
            "/api/v1/namespaces/ns/status",
            ("", "v1", "ns", "namespaces", "ns", "status", Update),
        );
        check(
            Method::PUT,
            "/api/v1/namespaces/ns/finalize",
            ("", "v1", "ns", "namespaces", "ns", "finalize", Update),
        );
        check(
            Method::POST,
            "/api/v1/namespaces",
            ("", "v1", "", "namespaces", "", "", Create),
        );
        // Anything else after the namespace name is a namespaced resource.
        check(
            Method::GET,
            "/api/v1/namespaces/ns/configmaps",
            ("", "v1", "ns", "configmaps", "", "", List),
        );
        check(
            Method::GET,
            "/api/v1/namespaces/ns/events/e1",
            ("", "v1", "ns", "events", "e1", "", Get),
        );
    }

    #[test]
    fn watch_path_prefix() {
        check(
            Method::GET,
            "/api/v1/watch/pods",
            ("", "v1", "", "pods", "", "", Watch),
        );
        check(
            Method::GET,
            "/api/v1/watch/namespaces/ns/configmaps",
            ("", "v1", "ns", "configmaps", "", "", Watch),
        );
        check(
            Method::GET,
            "/api/v1/watch/namespaces/ns/configmaps/c",
            ("", "v1", "ns", "configmaps", "c", "", Watch),
        );
        check(
            Method::GET,
            "/api/v1/watch/namespaces",
            ("", "v1", "", "namespaces", "", "", Watch),
        );
        check(
            Method::GET,
            "/api/v1/watch/namespaces/ns",
            ("", "v1", "ns", "namespaces", "ns", "", Watch),
        );
        check(
            Method::GET,
            "/apis/apps/v1/watch/deployments",
            ("apps", "v1", "", "deployments", "", "", Watch),
        );
        check(
            Method::GET,
            "/apis/apps/v1/watch/namespaces/ns/deployments/d",
            ("apps", "v1", "ns", "deployments", "d", "", Watch),
        );
        // The verb is taken from the path whatever the method.
        check(
            Method::POST,
            "/api/v1/watch/pods",
            ("", "v1", "", "pods", "", "", Watch),
        );
    }

    #[test]
    fn watch_or_proxy_without_resource_is_an_error() {
        for target in [
            "/api/v1/watch",
            "/api/v1/watch/",
            "/apis/apps/v1/watch",
            "/api/v1/proxy",
        ] {
            let uri: http::Uri = target.parse().unwrap();
            assert!(
                matches!(
                    classify_uri(&Method::GET, &uri),
                    Err(RequestInfoError::MissingResourceAfterVerb { .. })
                ),
                "{target}"
            );
        }
    }

    #[test]
    fn watch_query_parameter() {
        for (query, verb) in [
            ("watch=true", Watch),
            ("watch=1", Watch),
            ("watch=TRUE", Watch),
            ("watch=yes", Watch),
            ("watch=", Watch),
            ("watch", Watch),
            ("watch=false", List),
            ("watch=False", List),
            ("watch=0", List),
            ("watch=0&watch=1", List),
            ("watch=1&watch=0", Watch),
            (
                "resourceVersion=5&watch=true&allowWatchBookmarks=true",
                Watch,
            ),
            ("watch=true;x=y", List),
            ("watch=%74rue", Watch),
            ("watch=%zz", List),
            ("limit=500", List),
            ("limit=abc&watch=true", Watch),
        ] {
            let target = format!("/api/v1/namespaces/ns/configmaps?{query}");
            assert_eq!(resource(Method::GET, &target).verb, verb, "{query}");
        }
        // Named GET stays get even with watch=true (kube converts only nameless gets).
        assert_eq!(
            resource(Method::GET, "/api/v1/namespaces/ns/configmaps/c?watch=true").verb,
            Get
        );
        // Non-GET methods are not turned into watch.
        assert_eq!(
            resource(Method::POST, "/api/v1/namespaces/ns/configmaps?watch=true").verb,
            Create
        );
    }

    #[test]
    fn field_selector_names_list_and_watch() {
        for (selector, name) in [
            ("metadata.name%3Dc1", "c1"),
            ("metadata.name%3D%3Dc1", "c1"),
            ("metadata.name!%3Dc1", ""),
            ("status.phase%3DRunning,metadata.name%3Dc1", "c1"),
            ("metadata.name%3Dc1,metadata.name%3Dc2", "c1"),
            ("metadata.name%3D", ""),
            ("metadata.name%3D..", ""),
            ("metadata.name%3Da%25b", ""),
            ("metadata.name%3Da%5C,b", "a,b"),
            ("metadata.name%3Da%5Cxb", ""),
            ("metadata.name", ""),
            ("", ""),
            ("spec.nodeName%3Dn1", ""),
        ] {
            let target = format!("/api/v1/namespaces/ns/pods?fieldSelector={selector}");
            let r = resource(Method::GET, &target);
            assert_eq!(r.name, name, "{selector}");
            assert_eq!(r.verb, List, "{selector}");
        }
        let r = resource(
            Method::GET,
            "/api/v1/pods?watch=1&fieldSelector=metadata.name%3Dp",
        );
        assert_eq!((r.verb, r.name.as_str()), (Watch, "p"));
        // A malformed integer option makes kube drop every decoded option but watch.
        let r = resource(
            Method::GET,
            "/api/v1/pods?limit=x&fieldSelector=metadata.name%3Dp",
        );
        assert_eq!((r.verb, r.name.as_str()), (List, ""));
        // deletecollection does not look at field selectors.
        let r = resource(
            Method::DELETE,
            "/api/v1/namespaces/ns/pods?fieldSelector=metadata.name%3Dp",
        );
        assert_eq!((r.verb, r.name.as_str()), (DeleteCollection, ""));
    }

    #[test]
    fn trailing_and_doubled_slashes() {
        check(
            Method::GET,
            "/api/v1/pods/",
            ("", "v1", "", "pods", "", "", List),
        );
        check(
            Method::GET,
            "/api/v1/namespaces/ns/pods/p1/",
            ("", "v1", "ns", "pods", "p1", "", Get),
        );
        check(
            Method::GET,
            "/apis/apps/v1/deployments///",
            ("apps", "v1", "", "deployments", "", "", List),
        );
        // Leading slashes are trimmed too.
        check(
            Method::GET,
            "//api/v1/pods",
            ("", "v1", "", "pods", "", "", List),
        );
        // Empty inner segments are kept, as strings.Split does.
        check(
            Method::GET,
            "/api/v1//pods",
            ("", "v1", "", "", "pods", "", Get),
        );
        check(
            Method::GET,
            "/api/v1/namespaces//pods",
            ("", "v1", "", "pods", "", "", List),
        );
        check(
            Method::GET,
            "/apis//v1/pods",
            ("", "v1", "", "pods", "", "", List),
        );
    }

    #[test]
    fn percent_decoding_happens_before_splitting() {
        check(
            Method::GET,
            "/api/v1/namespaces/n%73/pods",
            ("", "v1", "ns", "pods", "", "", List),
        );
        check(
            Method::GET,
            "/apis/app%73/v1/deployments",
            ("apps", "v1", "", "deployments", "", "", List),
        );
        // %2F becomes a separator, like Go's URL.Path.
        check(
            Method::GET,
            "/api/v1/namespaces/a%2Fb/pods",
            ("", "v1", "a", "b", "pods", "", Get),
        );
        check(
            Method::GET,
            "/api%2Fv1%2Fpods",
            ("", "v1", "", "pods", "", "", List),
        );
        // A space and a plus in a name.
        check(
            Method::GET,
            "/api/v1/namespaces/ns/pods/a%20b+c",
            ("", "v1", "ns", "pods", "a b+c", "", Get),
        );
        // Non-ASCII UTF-8 decodes fine.
        check(
            Method::GET,
            "/api/v1/namespaces/ns/pods/%C3%A9",
            ("", "v1", "ns", "pods", "é", "", Get),
        );
        // /api%2F is still the non-resource /api/.
        non_resource(Method::GET, "/api%2F");
    }

    #[test]
    fn bad_escapes_are_errors() {
        for raw in [
            "/api/v1/pods/%zz",
            "/api/v1/pods/%",
            "/api/v1/pods/%4",
            "/%g0/x",
            "/api/v1/namespaces/%2",
        ] {
            assert!(
                matches!(
                    classify(&Method::GET, raw, None),
                    Err(RequestInfoError::InvalidEscape { .. })
                ),
                "{raw}"
            );
        }
        assert!(matches!(
            classify(&Method::GET, "/api/v1/pods/%FF", None),
            Err(RequestInfoError::NotUtf8 { .. })
        ));
        // A bad escape in a non-resource path is rejected too (Go's URL parser runs first).
        assert!(classify(&Method::GET, "/healthz%", None).is_err());
    }

    #[test]
    fn decode_path_round_trips_valid_input() {
        assert_eq!(decode_path("/a%2Fb%20c").unwrap(), "/a/b c");
        assert_eq!(decode_path("").unwrap(), "");
        assert_eq!(decode_path("%41%42").unwrap(), "AB");
        assert!(decode_path("%").is_err());
    }

    #[test]
    fn absolute_form_and_empty_paths() {
        let uri: http::Uri = "https://10.0.0.1:6443/api/v1/pods?watch=1".parse().unwrap();
        let info = classify_uri(&Method::GET, &uri).unwrap();
        assert_eq!(info.resource().unwrap().verb, Watch);
        assert!(matches!(
            classify(&Method::GET, "", None).unwrap(),
            RequestInfo::NonResource { .. }
        ));
        assert!(matches!(
            classify(&Method::OPTIONS, "*", None).unwrap(),
            RequestInfo::NonResource { .. }
        ));
    }

    #[test]
    fn accessors_return_none_for_empty() {
        let r = resource(Method::GET, "/api/v1/pods");
        assert_eq!(
            (r.name(), r.namespace(), r.subresource()),
            (None, None, None)
        );
        let r = resource(Method::GET, "/api/v1/namespaces/ns/pods/p/log");
        assert_eq!(
            (r.name(), r.namespace(), r.subresource()),
            (Some("p"), Some("ns"), Some("log"))
        );
        assert!(Get.is_read_only() && List.is_read_only() && Watch.is_read_only());
        assert!(
            !Create.is_read_only() && !Proxy.is_read_only() && !DeleteCollection.is_read_only()
        );
        assert_eq!(DeleteCollection.to_string(), "deletecollection");
        assert_eq!(Unknown.as_str(), "");
    }

    #[test]
    fn upstream_style_paths_of_peer_proxy_tests() {
        // §8 cases 2–5 use /api/foo/bar: core group, version "foo", resource "bar".
        check(
            Method::GET,
            "/api/foo/bar",
            ("", "foo", "", "bar", "", "", List),
        );
        check(
            Method::GET,
            "/api/bar/baz",
            ("", "bar", "", "baz", "", "", List),
        );
    }

    #[test]
    fn arbitrary_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> = "/%aZ09fF._-+ ?=&;:é\\".chars().collect();
        let words = [
            "api",
            "apis",
            "v1",
            "watch",
            "proxy",
            "namespaces",
            "status",
            "finalize",
            "pods",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let methods = [Method::GET, Method::POST, Method::DELETE, Method::OPTIONS];
        for _ in 0..20_000 {
            let mut path = String::new();
            for _ in 0..rng.gen_range(0..12) {
                if rng.gen_bool(0.5) {
                    path.push('/');
                    path.push_str(words[rng.gen_range(0..words.len())]);
                } else {
                    path.push(alphabet[rng.gen_range(0..alphabet.len())]);
                }
            }
            let query: String = (0..rng.gen_range(0..8))
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let method = &methods[rng.gen_range(0..methods.len())];
            let _ = classify(
                method,
                &path,
                Some(&format!("watch{query}&fieldSelector={query}")),
            );
        }
    }

    #[test]
    fn namespaces_rule_applies_under_groups_too() {
        // kube's rule does not look at the group: "namespaces" is a resource there as well.
        check(
            Method::GET,
            "/apis/apps/v1/namespaces/ns",
            ("apps", "v1", "ns", "namespaces", "ns", "", Get),
        );
        check(
            Method::GET,
            "/apis/apps/v1/namespaces/ns/status",
            ("apps", "v1", "ns", "namespaces", "ns", "status", Get),
        );
        check(
            Method::GET,
            "/apis/apps/v1/namespaces",
            ("apps", "v1", "", "namespaces", "", "", List),
        );
    }
}
