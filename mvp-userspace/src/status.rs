//! Kubernetes `Status` responses that mvp writes itself.
//!
//! mvp answers on its own only when it cannot (or must not) forward: the upstream is
//! unreachable (503), the request cannot be forwarded as it is (400), or the caller presented
//! a client certificate that does not authenticate and nothing else that does (401). The body
//! has the apiserver's shape and key order (see fixtures/real-apiserver README, "Status
//! shape"): `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
//! "message":…,"reason":…,["details":{},]"code":N}` plus one trailing newline, with the
//! apiserver's `Cache-Control: no-cache, private` and `Content-Type: application/json`.
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// The `reason` field of a failure `Status` (the subset mvp produces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// 400.
    BadRequest,
    /// 401.
    Unauthorized,
    /// 502: the upstream failed after the request was sent.
    InternalError,
    /// 503: no upstream could take the request; the client may retry.
    ServiceUnavailable,
}

impl Reason {
    /// The string the apiserver puts in `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "BadRequest",
            Reason::Unauthorized => "Unauthorized",
            Reason::InternalError => "InternalError",
            Reason::ServiceUnavailable => "ServiceUnavailable",
        }
    }
}

/// A failure `Status` ready to be written.
#[derive(Debug, Clone)]
pub struct Status {
    /// HTTP status code (also the `code` field).
    pub code: StatusCode,
    /// `reason`.
    pub reason: Reason,
    /// `message`: what happened, in the apiserver's wording where it has one.
    pub message: String,
    /// `Retry-After` seconds, for responses a client may retry.
    pub retry_after_secs: Option<u32>,
}

impl Status {
    /// 401 exactly as kube-apiserver writes it (no `details`).
    pub fn unauthorized() -> Self {
        Status {
            code: StatusCode::UNAUTHORIZED,
            reason: Reason::Unauthorized,
            message: "Unauthorized".to_owned(),
            retry_after_secs: None,
        }
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Status {
            code: StatusCode::BAD_REQUEST,
            reason: Reason::BadRequest,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// 503 with `Retry-After`.
    pub fn service_unavailable(message: impl Into<String>, retry_after_secs: u32) -> Self {
        Status {
            code: StatusCode::SERVICE_UNAVAILABLE,
            reason: Reason::ServiceUnavailable,
            message: message.into(),
            retry_after_secs: Some(retry_after_secs),
        }
    }

    /// 502: the upstream broke after the request was handed to it (not safe to retry blindly).
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Status {
            code: StatusCode::BAD_GATEWAY,
            reason: Reason::InternalError,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// The JSON body, compact, one trailing newline, in the apiserver's key order.
    pub fn to_json(&self) -> Vec<u8> {
        let mut body = serde_json::Map::new();
        body.insert("kind".into(), "Status".into());
        body.insert("apiVersion".into(), "v1".into());
        body.insert(
            "metadata".into(),
            serde_json::Value::Object(Default::default()),
        );
        body.insert("status".into(), "Failure".into());
        body.insert("message".into(), self.message.clone().into());
        body.insert("reason".into(), self.reason.as_str().into());
        if self.reason != Reason::Unauthorized {
            // The apiserver leaves `details` out on 401 and writes `{}` on generic failures.
            // With Retry-After, kube also puts the delay in `details.retryAfterSeconds`
            // (client-go reads either).
            let mut details = serde_json::Map::new();
            if let Some(secs) = self.retry_after_secs {
                details.insert("retryAfterSeconds".into(), secs.into());
            }
            body.insert("details".into(), serde_json::Value::Object(details));
        }
        body.insert("code".into(), self.code.as_u16().into());
        let mut out = serde_json::to_vec(&serde_json::Value::Object(body))
            .expect("a map of strings and numbers always serializes");
        out.push(b'\n');
        out
    }

    /// The JSON body indented as the apiserver writes it for `pretty` requests (Go's
    /// `json.MarshalIndent(obj, "", "  ")`: no trailing newline).
    pub fn to_json_pretty(&self) -> Vec<u8> {
        let compact: serde_json::Value =
            serde_json::from_slice(&self.to_json()).expect("to_json writes JSON");
        serde_json::to_vec_pretty(&compact).expect("a JSON value always serializes")
    }

    /// The complete HTTP response.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        self.into_response_for(false)
    }

    /// The complete HTTP response, indented when `pretty` (see [`wants_pretty`]).
    pub fn into_response_for(self, pretty: bool) -> Response<Full<Bytes>> {
        let body = Bytes::from(if pretty {
            self.to_json_pretty()
        } else {
            self.to_json()
        });
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = self.code;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // The apiserver puts an Audit-Id on every response (a UUID); so does mvp on its own.
        if let Ok(id) = HeaderValue::from_str(&audit_id()) {
            headers.insert("audit-id", id);
        }
        response
    }
}

/// Whether the apiserver would indent its JSON answer to this request (k8s.io/apiserver
/// `negotiation.isPrettyPrint`): a non-empty `pretty` query parameter decides (Go's
/// `strconv.ParseBool`); otherwise user agents starting with `curl`, `Wget` or `Mozilla/5.0`.
pub fn wants_pretty(headers: &http::HeaderMap, query: Option<&str>) -> bool {
    let param = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("pretty="))
        .filter(|v| !v.is_empty());
    if let Some(v) = param {
        return matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True");
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    ["curl", "Wget", "Mozilla/5.0"]
        .iter()
        .any(|p| agent.starts_with(p))
}

/// A random (v4) UUID in the apiserver's Audit-Id format.
fn audit_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Go's answer to request headers over `MaxHeaderBytes` (plain text, as net/http writes it).
/// `close` adds `Connection: close` (HTTP/1.x only).
pub fn header_fields_too_large(close: bool) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(
        b"431 Request Header Fields Too Large",
    )));
    *response.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_matches_the_recorded_apiserver_body_byte_for_byte() {
        let recorded = "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}\n";
        assert_eq!(
            String::from_utf8(Status::unauthorized().to_json()).unwrap(),
            recorded
        );
    }

    #[test]
    fn curl_and_pretty_requests_get_the_indented_body_like_the_apiserver() {
        let pretty = "{\n  \"kind\": \"Status\",\n  \"apiVersion\": \"v1\",\n  \"metadata\": {},\n  \"status\": \"Failure\",\n  \"message\": \"Unauthorized\",\n  \"reason\": \"Unauthorized\",\n  \"code\": 401\n}";
        assert_eq!(
            String::from_utf8(Status::unauthorized().to_json_pretty()).unwrap(),
            pretty
        );
        let ua = |v: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::USER_AGENT, HeaderValue::from_static(v));
            h
        };
        assert!(wants_pretty(&ua("curl/8.5.0"), None));
        assert!(!wants_pretty(&ua("kubectl/v1.33.4"), None));
        assert!(wants_pretty(
            &ua("kubectl/v1.33.4"),
            Some("a=b&pretty=true")
        ));
        assert!(!wants_pretty(&ua("curl/8.5.0"), Some("pretty=false")));
        assert!(wants_pretty(&ua("curl/8.5.0"), Some("pretty=")));
    }

    #[test]
    fn service_unavailable_has_retry_after_and_details() {
        let response =
            Status::service_unavailable("local apiserver unreachable", 1).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let audit = response.headers()["audit-id"].to_str().unwrap();
        assert_eq!(audit.len(), 36, "{audit}");
        assert_eq!(&audit[14..15], "4", "UUID v4: {audit}");
        let json: serde_json::Value =
            serde_json::from_slice(&Status::service_unavailable("x", 1).to_json()).unwrap();
        assert_eq!(json["reason"], "ServiceUnavailable");
        assert_eq!(json["code"], 503);
        assert_eq!(json["details"], serde_json::json!({"retryAfterSeconds": 1}));
        let json: serde_json::Value =
            serde_json::from_slice(&Status::bad_gateway("x").to_json()).unwrap();
        assert_eq!(json["details"], serde_json::json!({}));
    }
}
