//! A small decoder for the Kubernetes protobuf request bodies kubectl's generators send
//! (`kubectl create namespace|configmap|secret|serviceaccount ...` use
//! `Content-Type: application/vnd.kubernetes.protobuf`): the `k8s\0` envelope, the
//! `runtime.Unknown` wrapper, `ObjectMeta`, and the kinds Namespace, ConfigMap, Secret and
//! ServiceAccount, plus SelfSubjectAccessReview and SelfSubjectRulesReview (`kubectl auth can-i [--list]`; field numbers from
//! k8s.io/api `generated.proto`). Other kinds answer 415
//! (the caller's), malformed bytes are an error, never a panic. Not decoded: ownerReferences,
//! managedFields, timestamps (the server sets those it needs).
use base64::Engine;
use serde_json::{Map, Value, json};

/// Why a protobuf body could not be turned into JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("protobuf body is malformed: {0}")]
    Malformed(&'static str),
    #[error("the lab cannot decode protobuf {0}; send JSON")]
    UnsupportedKind(String),
}

#[derive(Debug, Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ProtoError> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*pos)
            .ok_or(ProtoError::Malformed("truncated varint"))?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(ProtoError::Malformed("varint too long"))
}

/// All (field number, value) pairs of one message.
fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, ProtoError> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (num, wire) = (tag >> 3, tag & 7);
        let f = match wire {
            0 => Field::Varint(varint(buf, &mut pos)?),
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                if pos + n > buf.len() {
                    return Err(ProtoError::Malformed("truncated fixed field"));
                }
                pos += n;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?)
                    .map_err(|_| ProtoError::Malformed("length overflow"))?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or(ProtoError::Malformed("truncated length-delimited field"))?;
                let b = &buf[pos..end];
                pos = end;
                Field::Bytes(b)
            }
            _ => return Err(ProtoError::Malformed("unsupported wire type")),
        };
        out.push((num, f));
    }
    Ok(out)
}

/// Refuse messages with fields the decoder does not know: dropping them would lose data.
fn only_known(all: &[(u64, Field<'_>)], known: &[u64], what: &str) -> Result<(), ProtoError> {
    match all.iter().find(|(n, _)| !known.contains(n)) {
        Some((n, _)) => Err(ProtoError::UnsupportedKind(format!("{what} (field {n})"))),
        None => Ok(()),
    }
}

fn string(b: &[u8]) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Malformed("string is not UTF-8"))
}

/// A `map<string, string|bytes>` field: repeated entries {1: key, 2: value}.
fn map_entries(
    all: &[(u64, Field<'_>)],
    num: u64,
    value_as_bytes: bool,
) -> Result<Option<Value>, ProtoError> {
    let mut m = Map::new();
    for (n, f) in all {
        if *n != num {
            continue;
        }
        let Field::Bytes(entry) = f else {
            return Err(ProtoError::Malformed("map entry is not a message"));
        };
        let (mut k, mut v) = (String::new(), Value::String(String::new()));
        for (en, ef) in fields(entry)? {
            match (en, ef) {
                (1, Field::Bytes(b)) => k = string(b)?,
                (2, Field::Bytes(b)) if value_as_bytes => {
                    v = json!(base64::engine::general_purpose::STANDARD.encode(b))
                }
                (2, Field::Bytes(b)) => v = json!(string(b)?),
                _ => {}
            }
        }
        m.insert(k, v);
    }
    Ok((!m.is_empty()).then_some(Value::Object(m)))
}

fn strings(all: &[(u64, Field<'_>)], num: u64) -> Result<Vec<Value>, ProtoError> {
    all.iter()
        .filter(|(n, _)| *n == num)
        .map(|(_, f)| match f {
            Field::Bytes(b) => Ok(json!(string(b)?)),
            _ => Err(ProtoError::Malformed(
                "string field is not length-delimited",
            )),
        })
        .collect()
}

fn first_string(all: &[(u64, Field<'_>)], num: u64) -> Result<Option<String>, ProtoError> {
    Ok(strings(all, num)?
        .into_iter()
        .next_back()
        .and_then(|v| v.as_str().map(String::from))
        .filter(|s| !s.is_empty()))
}

fn first_bool(all: &[(u64, Field<'_>)], num: u64) -> Option<bool> {
    all.iter().rev().find_map(|(n, f)| match (n, f) {
        (n, Field::Varint(v)) if *n == num => Some(*v != 0),
        _ => None,
    })
}

fn message<'a>(all: &[(u64, Field<'a>)], num: u64) -> Option<&'a [u8]> {
    all.iter().rev().find_map(|(n, f)| match (n, f) {
        (n, Field::Bytes(b)) if *n == num => Some(*b),
        _ => None,
    })
}

/// `OwnerReference`: kind=1, name=3, uid=4, apiVersion=5, controller=6, blockOwnerDeletion=7.
fn owner_reference(buf: &[u8]) -> Result<Value, ProtoError> {
    let all = fields(buf)?;
    only_known(&all, &[1, 3, 4, 5, 6, 7], "OwnerReference")?;
    let mut m = Map::new();
    for (num, key) in [(5, "apiVersion"), (1, "kind"), (3, "name"), (4, "uid")] {
        m.insert(
            key.into(),
            json!(first_string(&all, num)?.unwrap_or_default()),
        );
    }
    for (num, key) in [(6, "controller"), (7, "blockOwnerDeletion")] {
        if let Some(b) = first_bool(&all, num) {
            m.insert(key.into(), json!(b));
        }
    }
    Ok(Value::Object(m))
}

/// Every occurrence of a repeated message field, decoded by `f`.
fn repeated(
    all: &[(u64, Field<'_>)],
    num: u64,
    f: impl Fn(&[u8]) -> Result<Value, ProtoError>,
) -> Result<Vec<Value>, ProtoError> {
    all.iter()
        .filter(|(n, _)| *n == num)
        .map(|(_, v)| match v {
            Field::Bytes(b) => f(b),
            _ => Err(ProtoError::Malformed(
                "message field is not length-delimited",
            )),
        })
        .collect()
}

fn object_meta(buf: &[u8]) -> Result<Value, ProtoError> {
    let all = fields(buf)?;
    // 4 selfLink, 7 generation, 8-10 timestamps/grace, 17 managedFields are server-managed.
    only_known(
        &all,
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 17],
        "ObjectMeta",
    )?;
    let mut m = Map::new();
    for (num, key) in [
        (1, "name"),
        (2, "generateName"),
        (3, "namespace"),
        (5, "uid"),
        (6, "resourceVersion"),
    ] {
        if let Some(s) = first_string(&all, num)? {
            m.insert(key.into(), json!(s));
        }
    }
    if let Some(l) = map_entries(&all, 11, false)? {
        m.insert("labels".into(), l);
    }
    if let Some(a) = map_entries(&all, 12, false)? {
        m.insert("annotations".into(), a);
    }
    let owners = repeated(&all, 13, owner_reference)?;
    if !owners.is_empty() {
        m.insert("ownerReferences".into(), Value::Array(owners));
    }
    let fin = strings(&all, 14)?;
    if !fin.is_empty() {
        m.insert("finalizers".into(), Value::Array(fin));
    }
    Ok(Value::Object(m))
}

/// Decode a `k8s\0`-enveloped protobuf object into its JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body
        .strip_prefix(b"k8s\x00")
        .ok_or(ProtoError::Malformed("missing the k8s protobuf envelope"))?;
    let unknown = fields(rest)?;
    let type_meta = fields(message(&unknown, 1).unwrap_or(&[]))?;
    let api_version = first_string(&type_meta, 1)?.unwrap_or_default();
    let kind = first_string(&type_meta, 2)?.unwrap_or_default();
    let raw = message(&unknown, 2).unwrap_or(&[]);
    let obj = fields(raw)?;
    let metadata = object_meta(message(&obj, 1).unwrap_or(&[]))?;
    let mut out = json!({"apiVersion": api_version, "kind": kind, "metadata": metadata});
    let known: &[u64] = match (api_version.as_str(), kind.as_str()) {
        ("v1", "ConfigMap") => &[1, 2, 3, 4],
        ("v1", "Secret") => &[1, 2, 3, 4, 5],
        ("v1", "Namespace") => &[1, 2, 3],
        ("v1", "ServiceAccount") => &[1, 2, 3, 4],
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => &[1, 2, 3],
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => &[1, 2, 3],
        _ => &[],
    };
    only_known(&obj, known, &format!("{api_version}/{kind}"))?;
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "ConfigMap") => {
            if let Some(d) = map_entries(&obj, 2, false)? {
                out["data"] = d;
            }
            if let Some(d) = map_entries(&obj, 3, true)? {
                out["binaryData"] = d;
            }
            if let Some(b) = first_bool(&obj, 4) {
                out["immutable"] = json!(b);
            }
        }
        ("v1", "Secret") => {
            if let Some(d) = map_entries(&obj, 2, true)? {
                out["data"] = d;
            }
            if let Some(t) = first_string(&obj, 3)? {
                out["type"] = json!(t);
            }
            if let Some(d) = map_entries(&obj, 4, false)? {
                out["stringData"] = d;
            }
            if let Some(b) = first_bool(&obj, 5) {
                out["immutable"] = json!(b);
            }
        }
        ("v1", "Namespace") => {
            if let Some(spec) = message(&obj, 2) {
                let fin = strings(&fields(spec)?, 1)?;
                out["spec"] = if fin.is_empty() {
                    json!({})
                } else {
                    json!({"finalizers": fin})
                };
            }
        }
        ("v1", "ServiceAccount") => {
            let secrets = repeated(&obj, 2, |b| {
                let all = fields(b)?;
                only_known(&all, &[1, 2, 3, 4, 5, 6, 7], "ObjectReference")?;
                let mut m = Map::new();
                for (num, key) in [
                    (1, "kind"),
                    (2, "namespace"),
                    (3, "name"),
                    (4, "uid"),
                    (5, "apiVersion"),
                    (6, "resourceVersion"),
                    (7, "fieldPath"),
                ] {
                    if let Some(s) = first_string(&all, num)? {
                        m.insert(key.into(), json!(s));
                    }
                }
                Ok(Value::Object(m))
            })?;
            if !secrets.is_empty() {
                out["secrets"] = Value::Array(secrets);
            }
            let pulls = repeated(&obj, 3, |b| {
                let all = fields(b)?;
                only_known(&all, &[1], "LocalObjectReference")?;
                Ok(json!({"name": first_string(&all, 1)?.unwrap_or_default()}))
            })?;
            if !pulls.is_empty() {
                out["imagePullSecrets"] = Value::Array(pulls);
            }
            if let Some(b) = first_bool(&obj, 4) {
                out["automountServiceAccountToken"] = json!(b);
            }
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            // Computed, never stored: the attributes are echoed back (selectors are not).
            let spec = fields(message(&obj, 2).unwrap_or(&[]))?;
            let mut out_spec = Map::new();
            if let Some(ra) = message(&spec, 1) {
                let all = fields(ra)?;
                let mut m = Map::new();
                for (num, key) in [
                    (1, "namespace"),
                    (2, "verb"),
                    (3, "group"),
                    (4, "version"),
                    (5, "resource"),
                    (6, "subresource"),
                    (7, "name"),
                ] {
                    if let Some(s) = first_string(&all, num)? {
                        m.insert(key.into(), json!(s));
                    }
                }
                out_spec.insert("resourceAttributes".into(), Value::Object(m));
            }
            if let Some(nra) = message(&spec, 2) {
                let all = fields(nra)?;
                let mut m = Map::new();
                for (num, key) in [(1, "path"), (2, "verb")] {
                    if let Some(s) = first_string(&all, num)? {
                        m.insert(key.into(), json!(s));
                    }
                }
                out_spec.insert("nonResourceAttributes".into(), Value::Object(m));
            }
            out["spec"] = Value::Object(out_spec);
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => {
            let spec = fields(message(&obj, 2).unwrap_or(&[]))?;
            out["spec"] = match first_string(&spec, 1)? {
                Some(ns) => json!({"namespace": ns}),
                None => json!({}),
            };
        }
        _ => return Err(ProtoError::UnsupportedKind(format!("{api_version}/{kind}"))),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `kubectl create configmap gen -n e2e --from-literal=a=b` (v1.32) sent.
    const KUBECTL_CONFIGMAP: &[u8] = &[
        0x6b, 0x38, 0x73, 0x00, 0x0a, 0x0f, 0x0a, 0x02, 0x76, 0x31, 0x12, 0x09, 0x43, 0x6f, 0x6e,
        0x66, 0x69, 0x67, 0x4d, 0x61, 0x70, 0x12, 0x20, 0x0a, 0x16, 0x0a, 0x03, 0x67, 0x65, 0x6e,
        0x12, 0x00, 0x1a, 0x03, 0x65, 0x32, 0x65, 0x22, 0x00, 0x2a, 0x00, 0x32, 0x00, 0x38, 0x00,
        0x42, 0x00, 0x12, 0x06, 0x0a, 0x01, 0x61, 0x12, 0x01, 0x62, 0x1a, 0x00, 0x22, 0x00,
    ];

    #[test]
    fn decodes_kubectls_configmap() {
        assert_eq!(
            decode(KUBECTL_CONFIGMAP).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gen", "namespace": "e2e"}, "data": {"a": "b"}})
        );
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        for cut in 0..KUBECTL_CONFIGMAP.len() {
            let _ = decode(&KUBECTL_CONFIGMAP[..cut]);
        }
        assert!(decode(b"nope").is_err());
    }

    fn ld(num: u64, b: &[u8]) -> Vec<u8> {
        let mut out = vec![(num << 3 | 2) as u8, b.len() as u8];
        out.extend_from_slice(b);
        out
    }

    fn envelope(kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut out = b"k8s\x00".to_vec();
        out.extend(ld(1, &[ld(1, b"v1"), ld(2, kind.as_bytes())].concat()));
        out.extend(ld(2, raw));
        out
    }

    #[test]
    fn unknown_fields_are_refused_not_dropped() {
        let meta = ld(1, &ld(1, b"x"));
        let with_unknown = [meta.clone(), vec![9 << 3, 1]].concat();
        assert!(matches!(
            decode(&envelope("ConfigMap", &with_unknown)),
            Err(ProtoError::UnsupportedKind(_))
        ));
        assert!(matches!(
            decode(&envelope("Pod", &meta)),
            Err(ProtoError::UnsupportedKind(_))
        ));
    }

    #[test]
    fn service_account_with_references() {
        let owner = ld(
            13,
            &[
                ld(1, b"Deployment"),
                ld(3, b"d"),
                ld(4, b"u"),
                ld(5, b"apps/v1"),
                vec![6 << 3, 1],
            ]
            .concat(),
        );
        let meta = ld(1, &[ld(1, b"sa"), owner].concat());
        let raw = [
            meta,
            ld(2, &ld(3, b"tok")),
            ld(3, &ld(1, b"pull")),
            vec![4 << 3, 0],
        ]
        .concat();
        assert_eq!(
            decode(&envelope("ServiceAccount", &raw)).unwrap(),
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "sa", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "u", "controller": true}]},
                "secrets": [{"name": "tok"}], "imagePullSecrets": [{"name": "pull"}], "automountServiceAccountToken": false})
        );
        assert!(decode(b"k8s\x00\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01").is_err());
    }
}
