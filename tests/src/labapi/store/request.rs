//! Request plumbing: bodies, content types, patch kinds, names, reviews and exec checks.
use super::*;

/// kube-apiserver's container check for pods/exec and pods/attach.
pub(super) fn check_container(
    pod: &Value,
    pod_name: &str,
    container: Option<&str>,
) -> ApiResult<()> {
    let names = |field: &str| -> Vec<String> {
        pod["spec"][field]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = names("containers");
    match container.filter(|c| !c.is_empty()) {
        None if containers.len() > 1 => Err(Status::new(
            400,
            "BadRequest",
            format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                containers.join(" ")
            ),
        )),
        None => Ok(()),
        Some(c)
            if containers.iter().any(|n| n == c)
                || names("initContainers").iter().any(|n| n == c)
                || names("ephemeralContainers").iter().any(|n| n == c) =>
        {
            Ok(())
        }
        Some(c) => Err(Status::new(
            400,
            "BadRequest",
            format!("container {c} is not valid for pod {pod_name}"),
        )),
    }
}

/// The operations of a write transaction: none for a dry run (only the condition is
/// evaluated, nothing is written, the revision does not move).
pub(super) fn ops(dry_run: bool, op: TxnOp) -> Vec<TxnOp> {
    if dry_run { vec![] } else { vec![op] }
}

/// Create-only resources kube-apiserver computes instead of storing (access and token
/// reviews): discovery lists `create` as their only verb.
pub(super) fn is_virtual(meta: &ResourceMeta) -> bool {
    meta.verbs.len() == 1 && meta.verbs[0] == "create"
}

/// Answer a review with its `status` filled in, nothing stored. The lab's authorization
/// is the HTTP layer's: a request that reached the store is from an authenticated,
/// authorized caller, so access reviews answer `allowed: true` for any non-anonymous
/// subject (the lab does not evaluate RBAC). Token reviews are not supported (the token
/// is reported unauthenticated).
pub(super) fn review(
    req: &ResourceRequest,
    parts: &http::request::Parts,
    body: &Bytes,
) -> ApiResult<(u16, Value)> {
    let mut obj = decode_body(parts, body, &req.meta)?;
    let anonymous = |v: Option<&str>| v.is_none_or(|u| u.is_empty() || u == "system:anonymous");
    let status = match req.meta.resource.as_str() {
        "selfsubjectaccessreviews" => {
            if req.identity.is_anonymous() {
                json!({"allowed": false})
            } else {
                json!({"allowed": true, "reason": "the lab allows authenticated users"})
            }
        }
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            if anonymous(obj.pointer("/spec/user").and_then(Value::as_str))
                && obj.pointer("/spec/groups").is_none()
            {
                json!({"allowed": false})
            } else {
                json!({"allowed": true, "reason": "the lab allows authenticated users"})
            }
        }
        "selfsubjectrulesreviews" => json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        }),
        "tokenreviews" => json!({
            "user": {},
            "error": "the lab apiserver does not review tokens",
        }),
        "selfsubjectreviews" => json!({"userInfo": {
            "username": req.identity.user,
            "uid": req.identity.uid,
            "groups": req.identity.groups,
        }}),
        _ => json!({}),
    };
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["creationTimestamp"] = Value::Null;
    obj["status"] = status;
    set_type(&req.meta, &mut obj);
    Ok((201, obj))
}

/// Patch formats by Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PatchKind {
    Merge,
    Strategic,
    Json,
    Apply,
}

impl PatchKind {
    pub(super) fn from_headers(h: &http::HeaderMap) -> ApiResult<PatchKind> {
        let ct = h
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match ct.as_str() {
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchKind::Apply),
            _ => Err(unsupported_media()),
        }
    }

    pub(super) fn apply(self, mut base: Value, p: &Value) -> ApiResult<Value> {
        let unprocessable = |e: PatchError| {
            Status::new(
                422,
                "Invalid",
                format!("the server rejected our request due to an error in our request: {e}"),
            )
            .with_details(json!({}))
        };
        match self {
            PatchKind::Merge => merge_patch(&mut base, p),
            PatchKind::Strategic => strategic_merge_patch(&mut base, p).map_err(unprocessable)?,
            PatchKind::Json => json_patch(&mut base, p).map_err(unprocessable)?,
            // Server-side apply, approximated: the configuration is merged like a strategic
            // merge patch (no field ownership, so fields dropped from the configuration are
            // not removed and there are no conflicts between managers).
            PatchKind::Apply => strategic_merge_patch(&mut base, p).map_err(unprocessable)?,
        }
        Ok(base)
    }
}

pub(super) fn unsupported_media() -> Status {
    Status::new(415, "UnsupportedMediaType", "415: Unsupported Media Type").with_details(json!({}))
}

pub(super) async fn read_body(
    http: http::Request<hyper::body::Incoming>,
) -> ApiResult<(http::request::Parts, Bytes)> {
    let (parts, body) = http.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok((parts, c.to_bytes())),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Status::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {MAX_BODY}"),
        )),
        Err(e) => Err(Status::new(
            400,
            "BadRequest",
            format!("reading the request body: {e}"),
        )),
    }
}

/// Parse a request body into an object of this resource (JSON or YAML).
pub(super) fn decode_body(
    parts: &http::request::Parts,
    body: &Bytes,
    meta: &ResourceMeta,
) -> ApiResult<Value> {
    let ct = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let v: Value = match ct.as_str() {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            Status::new(
                400,
                "BadRequest",
                format!("couldn't get version/kind; json parse error: {e}"),
            )
        })?,
        "application/yaml" => serde_yaml::from_slice(body).map_err(|e| {
            Status::new(
                400,
                "BadRequest",
                format!("couldn't get version/kind; yaml parse error: {e}"),
            )
        })?,
        "application/vnd.kubernetes.protobuf" => match proto::decode(body) {
            Ok(v) => v,
            Err(proto::ProtoError::UnsupportedKind(k)) => {
                tracing::info!(kind = %k, "lab store: protobuf body of a kind it cannot decode");
                return Err(unsupported_media());
            }
            Err(e) => return Err(Status::new(400, "BadRequest", e.to_string())),
        },
        _ => return Err(unsupported_media()),
    };
    if !v.is_object() {
        return Err(Status::new(
            400,
            "BadRequest",
            "couldn't get version/kind; json parse error: the body is not a JSON object",
        ));
    }
    check_shape(&meta.kind, &meta.resource, &v)?;
    if let Some(av) = v.get("apiVersion").and_then(Value::as_str)
        && av != meta.api_version()
        && !(meta.resource == "scale" || av == "autoscaling/v1")
    {
        return Err(Status::new(
            400,
            "BadRequest",
            format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                meta.api_version()
            ),
        ));
    }
    Ok(v)
}

pub(super) fn required_name(req: &ResourceRequest) -> ApiResult<&str> {
    req.name.as_deref().ok_or_else(|| {
        Status::new(405, "MethodNotAllowed", "a resource name is required").with_details(json!({}))
    })
}
