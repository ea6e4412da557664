//! Content negotiation and response rendering, as kube-apiserver does it for JSON clients.
use http::HeaderMap;
use serde_json::Value;

use super::table::IncludeObject;
use crate::labapi::status::Status;
use crate::labapi::types::{LabResponse, full};

/// The representation the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
    /// `application/json;as=Table;v=<v>;g=meta.k8s.io`.
    Table {
        version: &'static str,
        include: IncludeObject,
    },
    /// `application/json;as=PartialObjectMetadata[List];v=v1;g=meta.k8s.io`.
    Metadata,
}

/// How to render: the format and whether to pretty-print.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub format: Format,
    pub pretty: bool,
}

const NOT_ACCEPTABLE: &str = "406: Not Acceptable\n\nAvailable representations: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/json;stream=watch, application/vnd.kubernetes.protobuf;stream=watch";

impl Output {
    /// Negotiate from `Accept`, `?pretty` and the User-Agent. Protobuf is never chosen (the
    /// lab has no protobuf codec): a client listing JSON after it gets JSON, a protobuf-only
    /// client gets 406 (kube-apiserver would answer protobuf for built-in types).
    pub fn negotiate(headers: &HeaderMap, pretty_param: Option<&str>) -> Result<Output, Status> {
        let ua = headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let pretty = match pretty_param {
            Some(p) => p == "true" || p == "1",
            None => ["curl", "Wget", "Mozilla/5.0"]
                .iter()
                .any(|p| ua.starts_with(p)),
        };
        let accept = headers
            .get_all(http::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        if accept.trim().is_empty() {
            return Ok(Output {
                format: Format::Json,
                pretty,
            });
        }
        for media in accept.split(',') {
            let mut parts = media.split(';').map(str::trim);
            let mime = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut as_ = None;
            let mut v = None;
            let mut g = None;
            let mut include = IncludeObject::Metadata;
            for p in parts {
                match p.split_once('=') {
                    Some(("as", x)) => as_ = Some(x),
                    Some(("v", x)) => v = Some(x),
                    Some(("g", x)) => g = Some(x),
                    Some(("includeObject", "None")) => include = IncludeObject::None,
                    Some(("includeObject", "Object")) => include = IncludeObject::Object,
                    _ => {}
                }
            }
            let format = match (mime.as_str(), as_, g, v) {
                ("application/json", Some("Table"), Some("meta.k8s.io"), Some("v1")) => {
                    Format::Table {
                        version: "v1",
                        include,
                    }
                }
                ("application/json", Some("Table"), Some("meta.k8s.io"), Some("v1beta1")) => {
                    Format::Table {
                        version: "v1beta1",
                        include,
                    }
                }
                (
                    "application/json",
                    Some("PartialObjectMetadata" | "PartialObjectMetadataList"),
                    Some("meta.k8s.io"),
                    Some("v1"),
                ) => Format::Metadata,
                ("application/json", None, _, _) | ("*/*" | "application/*", _, _, _) => {
                    Format::Json
                }
                ("application/yaml", None, _, _) => Format::Yaml,
                _ => continue,
            };
            return Ok(Output { format, pretty });
        }
        Err(Status::new(406, "NotAcceptable", NOT_ACCEPTABLE).with_details(serde_json::json!({})))
    }

    /// Serialise a value in this output's plain encoding (JSON or YAML).
    pub fn encode(&self, v: &Value) -> (Vec<u8>, &'static str) {
        if self.format == Format::Yaml {
            let s = serde_yaml::to_string(v).unwrap_or_default();
            return (s.into_bytes(), "application/yaml");
        }
        let body = if self.pretty {
            serde_json::to_vec_pretty(v)
        } else {
            serde_json::to_vec(v)
        }
        .expect("JSON values serialise");
        (body, "application/json")
    }

    /// A complete response.
    pub fn respond(&self, code: u16, v: &Value) -> LabResponse {
        let (mut body, ct) = self.encode(v);
        if ct == "application/json" && !self.pretty {
            body.push(b'\n');
        }
        response(code, ct, body)
    }

    /// A Status response (never YAML/Table; pretty when asked).
    pub fn status(&self, s: &Status) -> LabResponse {
        let pretty = self.pretty || s.code == 406;
        let body = if pretty {
            serde_json::to_vec_pretty(&s.to_value()).expect("Status serialises")
        } else {
            let mut b = serde_json::to_vec(&s.to_value()).expect("Status serialises");
            b.push(b'\n');
            b
        };
        response(s.code, "application/json", body)
    }
}

/// A response with kube's headers.
pub fn response(code: u16, content_type: &str, body: Vec<u8>) -> LabResponse {
    http::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CACHE_CONTROL, "no-cache, private")
        .body(full(body))
        .expect("valid response")
}
