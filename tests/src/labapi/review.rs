//! Reading `SelfSubjectAccessReview` requests (what `kubectl auth can-i` sends): JSON, or
//! the protobuf client-go's typed clients send, decoded just far enough to get the spec.
use serde_json::{Value, json};

/// Why a review body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("the object provided is unrecognized or invalid: {0}")]
    Invalid(&'static str),
}

/// The attributes a review asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    Resource {
        namespace: String,
        verb: String,
        group: String,
        version: String,
        resource: String,
        subresource: String,
        name: String,
    },
    NonResource {
        path: String,
        verb: String,
    },
}

impl Attributes {
    /// The spec as kube-apiserver echoes it (empty fields omitted).
    pub fn spec(&self) -> Value {
        let mut attrs = serde_json::Map::new();
        let mut put = |k: &str, v: &str| {
            if !v.is_empty() {
                attrs.insert(k.to_string(), json!(v));
            }
        };
        match self {
            Attributes::Resource {
                namespace,
                verb,
                group,
                version,
                resource,
                subresource,
                name,
            } => {
                put("namespace", namespace);
                put("verb", verb);
                put("group", group);
                put("version", version);
                put("resource", resource);
                put("subresource", subresource);
                put("name", name);
                json!({ "resourceAttributes": attrs })
            }
            Attributes::NonResource { path, verb } => {
                put("path", path);
                put("verb", verb);
                json!({ "nonResourceAttributes": attrs })
            }
        }
    }
}

fn from_json(body: &[u8]) -> Result<Attributes, ReviewError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| ReviewError::Invalid("body is not JSON"))?;
    let s = |o: &Value, k: &str| o[k].as_str().unwrap_or_default().to_string();
    let spec = &v["spec"];
    if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        return Ok(Attributes::Resource {
            namespace: s(r, "namespace"),
            verb: s(r, "verb"),
            group: s(r, "group"),
            version: s(r, "version"),
            resource: s(r, "resource"),
            subresource: s(r, "subresource"),
            name: s(r, "name"),
        });
    }
    if let Some(n) = spec.get("nonResourceAttributes").filter(|n| n.is_object()) {
        return Ok(Attributes::NonResource {
            path: s(n, "path"),
            verb: s(n, "verb"),
        });
    }
    Err(ReviewError::Invalid(
        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
    ))
}

/// Protobuf fields of one message: (field number, wire type, payload for length-delimited).
fn fields(mut buf: &[u8]) -> Result<Vec<(u64, &[u8])>, ReviewError> {
    fn varint(buf: &mut &[u8]) -> Result<u64, ReviewError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf
                .split_first()
                .ok_or(ReviewError::Invalid("truncated protobuf"))?;
            *buf = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ReviewError::Invalid("protobuf varint too long"))
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let skip = match key & 7 {
            0 => {
                varint(&mut buf)?;
                0
            }
            1 => 8,
            2 => {
                let len = usize::try_from(varint(&mut buf)?)
                    .map_err(|_| ReviewError::Invalid("protobuf length"))?;
                if len > buf.len() {
                    return Err(ReviewError::Invalid("truncated protobuf"));
                }
                out.push((key >> 3, &buf[..len]));
                len
            }
            5 => 4,
            _ => return Err(ReviewError::Invalid("unsupported protobuf wire type")),
        };
        if skip > buf.len() {
            return Err(ReviewError::Invalid("truncated protobuf"));
        }
        buf = &buf[skip..];
    }
    Ok(out)
}

fn field<'a>(fs: &[(u64, &'a [u8])], n: u64) -> Option<&'a [u8]> {
    fs.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
}

fn string(fs: &[(u64, &[u8])], n: u64) -> String {
    field(fs, n)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// `k8s\0` + runtime.Unknown{raw: SelfSubjectAccessReview{spec: {resourceAttributes |
/// nonResourceAttributes}}} (field numbers from k8s.io/api `generated.proto`).
fn from_protobuf(body: &[u8]) -> Result<Attributes, ReviewError> {
    let unknown = body
        .strip_prefix(b"k8s\0")
        .ok_or(ReviewError::Invalid("not a Kubernetes protobuf envelope"))?;
    let raw = field(&fields(unknown)?, 2).ok_or(ReviewError::Invalid("empty protobuf object"))?;
    let review = fields(raw)?;
    let spec = fields(field(&review, 2).unwrap_or_default())?;
    if let Some(r) = field(&spec, 1) {
        let r = fields(r)?;
        return Ok(Attributes::Resource {
            namespace: string(&r, 1),
            verb: string(&r, 2),
            group: string(&r, 3),
            version: string(&r, 4),
            resource: string(&r, 5),
            subresource: string(&r, 6),
            name: string(&r, 7),
        });
    }
    if let Some(n) = field(&spec, 2) {
        let n = fields(n)?;
        return Ok(Attributes::NonResource {
            path: string(&n, 1),
            verb: string(&n, 2),
        });
    }
    Err(ReviewError::Invalid(
        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
    ))
}

/// Reads a review body by its content type.
pub fn parse(content_type: &str, body: &[u8]) -> Result<Attributes, ReviewError> {
    if content_type
        .to_ascii_lowercase()
        .starts_with("application/vnd.kubernetes.protobuf")
    {
        from_protobuf(body)
    } else {
        from_json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(field: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![(field << 3) | 2, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn protobuf_resource_attributes() {
        let attrs = [ld(1, b"fx"), ld(2, b"list"), ld(5, b"secrets")].concat();
        let review = ld(2, &ld(1, &attrs));
        let unknown = [
            ld(
                1,
                &[
                    ld(1, b"authorization.k8s.io/v1"),
                    ld(2, b"SelfSubjectAccessReview"),
                ]
                .concat(),
            ),
            ld(2, &review),
        ]
        .concat();
        let body = [b"k8s\0".as_slice(), &unknown].concat();
        let got = parse("application/vnd.kubernetes.protobuf", &body).unwrap();
        assert_eq!(
            got.spec(),
            json!({"resourceAttributes": {"namespace": "fx", "verb": "list", "resource": "secrets"}})
        );
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert!(parse("application/vnd.kubernetes.protobuf", b"k8s\0\x12\x7f").is_err());
        assert!(parse("application/vnd.kubernetes.protobuf", b"nope").is_err());
        assert!(parse("application/json", b"{").is_err());
        assert!(parse("application/json", b"{\"spec\":{}}").is_err());
        let ok = parse(
            "application/json",
            br#"{"spec":{"nonResourceAttributes":{"path":"/apis","verb":"get"}}}"#,
        )
        .unwrap();
        assert_eq!(
            ok,
            Attributes::NonResource {
                path: "/apis".into(),
                verb: "get".into()
            }
        );
    }
}
