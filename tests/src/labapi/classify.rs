//! Request classification as kube-apiserver's `RequestInfoFactory` does it: resource vs
//! non-resource requests, group/version, namespace, resource, name, subresource and verb.
//! It runs before authorization and does not consult the surface (an unknown resource is
//! still a resource request, so an anonymous caller gets 403 rather than 404).
use super::types::Verb;

/// What kube-apiserver's `RequestInfo` says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestInfo {
    /// Anything that is not `/api/<v>/<...>` or `/apis/<g>/<v>/<...>`; `verb` is the
    /// lower-cased HTTP method, as kube-apiserver authorizes non-resource paths.
    NonResource {
        path: String,
        verb: String,
    },
    Resource(ResourceInfo),
}

/// A resource request's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// The decoded path.
    pub path: String,
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The authorization verb (`get`, `list`, `watch`, `create`, ..., `proxy`).
    pub verb: String,
}

/// Subresources that kube-apiserver serves as "connect" (streaming/upgrade) endpoints.
pub const CONNECT_SUBRESOURCES: [&str; 4] = ["exec", "attach", "portforward", "proxy"];

impl ResourceInfo {
    /// The storage-facing verb.
    pub fn lab_verb(&self) -> Verb {
        if self.verb == "proxy"
            || self
                .subresource
                .as_deref()
                .is_some_and(|s| CONNECT_SUBRESOURCES.contains(&s))
        {
            return Verb::Connect;
        }
        match self.verb.as_str() {
            "get" => Verb::Get,
            "list" => Verb::List,
            "watch" => Verb::Watch,
            "create" => Verb::Create,
            "update" => Verb::Update,
            "patch" => Verb::Patch,
            "delete" => Verb::Delete,
            "deletecollection" => Verb::DeleteCollection,
            // OPTIONS and other methods: kube-apiserver's router answers them 405.
            _ => Verb::Connect,
        }
    }
}

/// Percent-decodes a path as Go's `url.URL.Path` holds it.
pub fn decode_path(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

fn query_flag(query: Option<&str>, key: &str) -> bool {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .filter(|(k, _)| *k == key)
        // Go's strconv.ParseBool, which kube-apiserver's parameter codec uses.
        .any(|(_, v)| matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"))
}

fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| decode_path(&v.replace('+', " ")))
}

/// Classifies a request from its method, raw path and raw query.
pub fn classify(method: &http::Method, raw_path: &str, query: Option<&str>) -> RequestInfo {
    let path = decode_path(raw_path);
    let non_resource = || RequestInfo::NonResource {
        path: path.clone(),
        verb: method.as_str().to_ascii_lowercase(),
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // An empty segment (`//`) names nothing: such paths are served (404) as non-resource.
    if parts.iter().any(|p| p.is_empty()) {
        return non_resource();
    }
    let (group, version, mut rest) = match parts.first() {
        Some(&"api") if parts.len() >= 3 => ("", parts[1], &parts[2..]),
        Some(&"apis") if parts.len() >= 4 => (parts[1], parts[2], &parts[3..]),
        _ => return non_resource(),
    };
    let mut verb = if matches!(rest[0], "watch" | "proxy") {
        if rest.len() < 2 {
            // kube-apiserver: "unable to determine kind and namespace"; served as a path.
            return non_resource();
        }
        let v = rest[0].to_string();
        rest = &rest[1..];
        v
    } else {
        match *method {
            http::Method::POST => "create",
            http::Method::GET | http::Method::HEAD => "get",
            http::Method::PUT => "update",
            http::Method::PATCH => "patch",
            http::Method::DELETE => "delete",
            _ => "",
        }
        .to_string()
    };
    // Like kube-apiserver, `namespaces/<ns>` sets the namespace too (to <ns> itself).
    let mut namespace = None;
    if rest[0] == "namespaces" && rest.len() > 1 {
        namespace = Some(rest[1].to_string());
        // `namespaces/<ns>/status|finalize` are subresources of the namespace itself.
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    let resource = rest[0].to_string();
    let mut name = rest.get(1).map(|s| s.to_string());
    let subresource = if verb != "proxy" {
        rest.get(2).map(|s| s.to_string())
    } else {
        None
    };
    if name.is_none() && verb == "get" {
        verb = if query_flag(query, "watch") {
            "watch"
        } else {
            "list"
        }
        .into();
        // kube-apiserver narrows a list to one name when fieldSelector is metadata.name=X.
        if let Some(fs) = query_value(query, "fieldSelector")
            && let Some(n) = fs
                .strip_prefix("metadata.name=")
                .or_else(|| fs.strip_prefix("metadata.name=="))
            && !n.is_empty()
            && !n.contains(',')
            && !n.contains('/')
        {
            name = Some(n.to_string());
        }
    }
    if name.is_none() && verb == "delete" {
        verb = "deletecollection".into();
    }
    RequestInfo::Resource(ResourceInfo {
        path: path.clone(),
        group: group.to_string(),
        version: version.to_string(),
        namespace,
        resource,
        name,
        subresource,
        verb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn res(m: Method, p: &str, q: Option<&str>) -> ResourceInfo {
        match classify(&m, p, q) {
            RequestInfo::Resource(r) => r,
            other => panic!("{p}: expected a resource request, got {other:?}"),
        }
    }

    #[test]
    fn discovery_paths_are_non_resource() {
        for p in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/version",
            "/foo",
        ] {
            assert!(
                matches!(
                    classify(&Method::GET, p, None),
                    RequestInfo::NonResource { .. }
                ),
                "{p}"
            );
        }
    }

    #[test]
    fn namespaced_and_cluster_scoped() {
        let r = res(Method::GET, "/api/v1/namespaces/fx/pods/p1/log", None);
        assert_eq!(
            (
                r.group.as_str(),
                r.namespace.as_deref(),
                r.resource.as_str()
            ),
            ("", Some("fx"), "pods")
        );
        assert_eq!(
            (r.name.as_deref(), r.subresource.as_deref()),
            (Some("p1"), Some("log"))
        );
        assert_eq!((r.verb.as_str(), r.lab_verb()), ("get", Verb::Get));

        let r = res(Method::GET, "/apis/apps/v1/deployments", None);
        assert_eq!(
            (r.group.as_str(), r.verb.as_str(), r.namespace),
            ("apps", "list", None)
        );

        let r = res(Method::GET, "/api/v1/namespaces/fx", None);
        assert_eq!(
            (r.resource.as_str(), r.name.as_deref(), r.namespace),
            ("namespaces", Some("fx"), Some("fx".to_string()))
        );
        let r = res(Method::PUT, "/api/v1/namespaces/fx/finalize", None);
        assert_eq!(
            (r.subresource.as_deref(), r.verb.as_str()),
            (Some("finalize"), "update")
        );
    }

    #[test]
    fn verbs() {
        assert_eq!(
            res(
                Method::GET,
                "/api/v1/namespaces/fx/configmaps",
                Some("watch=true")
            )
            .verb,
            "watch"
        );
        assert_eq!(
            res(
                Method::GET,
                "/api/v1/namespaces/fx/configmaps",
                Some("watch=1")
            )
            .verb,
            "watch"
        );
        assert_eq!(
            res(
                Method::GET,
                "/api/v1/namespaces/fx/configmaps",
                Some("watch=false")
            )
            .verb,
            "list"
        );
        let w = res(Method::GET, "/api/v1/watch/namespaces/fx/configmaps", None);
        assert_eq!(
            (w.verb.as_str(), w.lab_verb(), w.resource.as_str()),
            ("watch", Verb::Watch, "configmaps")
        );
        assert_eq!(
            res(Method::DELETE, "/api/v1/namespaces/fx/configmaps", None).verb,
            "deletecollection"
        );
        assert_eq!(
            res(Method::DELETE, "/api/v1/namespaces/fx/configmaps/a", None).verb,
            "delete"
        );
        assert_eq!(
            res(Method::POST, "/api/v1/namespaces/fx/configmaps", None).verb,
            "create"
        );
        assert_eq!(
            res(Method::PATCH, "/api/v1/namespaces/fx/configmaps/a", None).verb,
            "patch"
        );
        let e = res(
            Method::POST,
            "/api/v1/namespaces/fx/pods/p/exec",
            Some("command=ls"),
        );
        assert_eq!((e.verb.as_str(), e.lab_verb()), ("create", Verb::Connect));
        let e = res(Method::GET, "/api/v1/namespaces/fx/pods/p/exec", None);
        assert_eq!((e.verb.as_str(), e.lab_verb()), ("get", Verb::Connect));
        let f = res(
            Method::GET,
            "/api/v1/namespaces/fx/configmaps",
            Some("fieldSelector=metadata.name%3Dcm-a"),
        );
        assert_eq!((f.verb.as_str(), f.name.as_deref()), ("list", Some("cm-a")));
    }

    #[test]
    fn percent_decoding() {
        let r = res(
            Method::GET,
            "/api/v1/namespaces/f%78/configmaps/a%2Eb",
            None,
        );
        assert_eq!(
            (r.namespace.as_deref(), r.name.as_deref()),
            (Some("fx"), Some("a.b"))
        );
    }
}
