//! The contract between the lab apiserver's HTTP layer (authentication, discovery,
//! request classification) and its storage layer (etcd-backed resources).
use std::collections::BTreeMap;

use bytes::Bytes;

/// Boxed error used in response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type every lab handler returns (streaming allowed: watch, logs, exec).
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A response from any lab handler.
pub type LabResponse = http::Response<Body>;

/// A full body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// The authenticated caller, as kube-apiserver's `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Identity {
    /// `system:anonymous` for anonymous callers.
    pub user: String,
    /// Empty when unknown.
    pub uid: String,
    /// Includes `system:authenticated` / `system:unauthenticated` as kube-apiserver adds them.
    pub groups: Vec<String>,
    /// Extra attributes (front-proxy `X-Remote-Extra-*`), lower-cased keys.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Identity {
    /// True for the anonymous user.
    pub fn is_anonymous(&self) -> bool {
        self.user == "system:anonymous"
    }
}

/// Verbs as kube-apiserver's RequestInfo names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    #[serde(rename = "deletecollection")]
    DeleteCollection,
    /// Connect-style subresources (exec, attach, portforward, proxy).
    Connect,
}

/// What the surface (discovery) says about one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceMeta {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    /// Plural, e.g. `pods`.
    pub resource: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub verbs: Vec<String>,
    /// Subresource names served, e.g. `["status", "log", "exec"]`.
    pub subresources: Vec<String>,
}

impl ResourceMeta {
    /// `apiVersion` of objects of this resource (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// A classified resource request, after authentication and authorization.
#[derive(Debug, Clone)]
pub struct ResourceRequest {
    pub meta: ResourceMeta,
    pub verb: Verb,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub identity: Identity,
}

/// Serves classified resource requests; the storage layer implements it, the HTTP layer
/// calls it after authentication, authorization and classification. The raw request is
/// passed on so handlers can stream bodies and take HTTP upgrades (exec).
pub trait ResourceHandler: Send + Sync + 'static {
    fn handle(
        &self,
        req: ResourceRequest,
        http: http::Request<hyper::body::Incoming>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = LabResponse> + Send + '_>>;
}
