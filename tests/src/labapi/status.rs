//! `Status` objects shaped exactly like kube-apiserver's (see the recorded `err-*`
//! exchanges in `shared/fixtures/real-apiserver`).
use serde_json::{Value, json};

use super::types::{LabResponse, full};

/// A `metav1.Status` failure.
#[derive(Debug, Clone)]
pub struct Status {
    pub code: u16,
    /// e.g. `NotFound`, `AlreadyExists`, `Conflict`, `Forbidden`, `Unauthorized`. Empty → omitted.
    pub reason: String,
    pub message: String,
    /// `details` (name, group, kind, causes); `None` → omitted.
    pub details: Option<Value>,
}

impl Status {
    /// A Status with the given code, reason and message, no details.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Status {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details: None,
        }
    }

    /// Attach `details`.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `404 NotFound` for a named object: `<resource>[.<group>] "<name>" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let qualified = qualified(group, resource);
        let mut details = json!({"name": name, "kind": resource});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        Status::new(404, "NotFound", format!("{qualified} \"{name}\" not found"))
            .with_details(details)
    }

    /// kube-apiserver's bare 404 for paths nothing serves ("the server could not find the
    /// requested resource").
    pub fn path_not_found() -> Self {
        Status::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// The JSON value, field order as kube-apiserver writes it.
    pub fn to_value(&self) -> Value {
        let mut v = serde_json::Map::new();
        v.insert("kind".into(), json!("Status"));
        v.insert("apiVersion".into(), json!("v1"));
        v.insert("metadata".into(), json!({}));
        v.insert("status".into(), json!("Failure"));
        v.insert("message".into(), json!(self.message));
        if !self.reason.is_empty() {
            v.insert("reason".into(), json!(self.reason));
        }
        if let Some(d) = &self.details {
            v.insert("details".into(), d.clone());
        }
        v.insert("code".into(), json!(self.code));
        Value::Object(v)
    }

    /// The body as kube-apiserver writes it: compact with a trailing newline, or indented
    /// without one for pretty-printing clients (curl User-Agent, `?pretty=true`).
    pub fn body(&self, pretty: bool) -> Vec<u8> {
        super::wire::json_bytes(&self.to_value(), pretty)
    }

    /// An HTTP response carrying this Status as compact JSON (kubectl User-Agent style).
    pub fn response(&self) -> LabResponse {
        self.response_with(false)
    }

    /// An HTTP response carrying this Status, pretty-printed or not.
    pub fn response_with(&self, pretty: bool) -> LabResponse {
        let mut builder = http::Response::builder()
            .status(self.code)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("cache-control", "no-cache, private");
        // kube-apiserver marks its authorization failures nosniff.
        if self.code == 403 {
            builder = builder.header("x-content-type-options", "nosniff");
        }
        builder
            .body(full(self.body(pretty)))
            .expect("valid response")
    }

    /// 401 exactly as kube-apiserver answers failed authentication (no details).
    pub fn unauthorized() -> Self {
        Status::new(401, "Unauthorized", "Unauthorized")
    }

    /// 405 for a verb the resource does not serve.
    pub fn method_not_allowed() -> Self {
        Status::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }
}

/// `<resource>` or `<resource>.<group>`, as kube-apiserver's qualified resource.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}
