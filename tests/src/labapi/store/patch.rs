//! Patch formats kube-apiserver accepts:
//! - `application/merge-patch+json`: RFC 7386 JSON merge patch.
//! - `application/strategic-merge-patch+json`: a merge patch, except that lists whose
//!   elements are all objects sharing a merge key (`name`, else `type`, `containerPort`,
//!   `mountPath`, `devicePath`, `ip`) are merged element-wise by that key; `$patch: delete`
//!   removes an element, `$patch: replace` replaces a map, `$deleteFromPrimitiveList/<f>`
//!   removes primitives, other `$` directives (`$setElementOrder/...`, `$retainKeys`) are
//!   dropped. kube uses the Go struct tags of each type instead of this heuristic. Lists of
//!   primitives are replaced, except `finalizers`, which are merged (a union) as kube does
//!   for `metadata.finalizers`.
//! - `application/json-patch+json`: RFC 6902.
use serde_json::{Map, Value};

/// A patch that could not be applied (a 422 for the caller; never a panic).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);

/// RFC 7386.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.shift_remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

const MERGE_KEYS: &[&str] = &[
    "name",
    "type",
    "containerPort",
    "mountPath",
    "devicePath",
    "ip",
];

fn merge_key(a: &[Value], b: &[Value]) -> Option<&'static str> {
    if b.is_empty() || !a.iter().chain(b).all(Value::is_object) {
        return None;
    }
    MERGE_KEYS
        .iter()
        .copied()
        .find(|k| a.iter().chain(b).all(|e| e.get(*k).is_some()))
}

/// Strategic merge patch (heuristic, see the module docs).
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = p.clone();
        p.shift_remove("$patch");
        *target = Value::Object(p);
        return Ok(());
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(cur)), Value::Array(del)) = (t.get_mut(field), v) {
                cur.retain(|e| !del.contains(e));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.shift_remove(k);
            continue;
        }
        match (t.get_mut(k), v) {
            (Some(Value::Array(cur)), Value::Array(pl)) => {
                if let Some(key) = merge_key(cur, pl) {
                    for pe in pl {
                        let id = pe.get(key).cloned();
                        let pos = cur.iter().position(|e| e.get(key) == id.as_ref());
                        let delete = pe.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (pos, delete) {
                            (Some(i), true) => {
                                cur.remove(i);
                            }
                            (None, true) => {}
                            (Some(i), false) => strategic_merge_patch(&mut cur[i], pe)?,
                            (None, false) => {
                                let mut fresh = Value::Object(Map::new());
                                strategic_merge_patch(&mut fresh, pe)?;
                                cur.push(fresh);
                            }
                        }
                    }
                } else if k == "finalizers" && pl.iter().all(Value::is_string) {
                    // `metadata.finalizers` has patchStrategy=merge: a union.
                    for f in pl {
                        if !cur.contains(f) {
                            cur.push(f.clone());
                        }
                    }
                } else {
                    *cur = pl
                        .iter()
                        .filter(|e| e.get("$patch").is_none())
                        .cloned()
                        .collect();
                }
            }
            (Some(cur @ Value::Object(_)), Value::Object(_)) => strategic_merge_patch(cur, v)?,
            _ => {
                let mut fresh = Value::Null;
                if v.is_object() {
                    strategic_merge_patch(&mut fresh, v)?;
                } else {
                    fresh = strip_directives(v);
                }
                t.insert(k.clone(), fresh);
            }
        }
    }
    Ok(())
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|e| e.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn unescape(seg: &str) -> String {
    seg.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<(Vec<String>, String), PatchError> {
    if path.is_empty() {
        return Err(PatchError("the root document cannot be the target".into()));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(PatchError(format!("invalid JSON pointer {path:?}")));
    };
    let mut segs: Vec<String> = rest.split('/').map(unescape).collect();
    let last = segs.pop().expect("at least one segment");
    Ok((segs, last))
}

fn parent_mut<'a>(
    doc: &'a mut Value,
    segs: &[String],
    path: &str,
) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for s in segs {
        cur = match cur {
            Value::Object(o) => o.get_mut(s),
            Value::Array(a) => s.parse::<usize>().ok().and_then(move |i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| PatchError(format!("doc is missing path: {path:?}")))?;
    }
    Ok(cur)
}

fn get_ptr(doc: &Value, path: &str) -> Result<Value, PatchError> {
    doc.pointer(path)
        .cloned()
        .ok_or_else(|| PatchError(format!("doc is missing path: {path:?}")))
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let (segs, last) = split_pointer(path)?;
    match parent_mut(doc, &segs, path)? {
        Value::Object(o) => o
            .shift_remove(&last)
            .ok_or_else(|| PatchError(format!("doc is missing path: {path:?}"))),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| PatchError(format!("invalid array index in {path:?}")))?;
            if i >= a.len() {
                return Err(PatchError(format!("array index out of bounds in {path:?}")));
            }
            Ok(a.remove(i))
        }
        _ => Err(PatchError(format!("doc is missing path: {path:?}"))),
    }
}

fn add_at(doc: &mut Value, path: &str, value: Value, replace: bool) -> Result<(), PatchError> {
    let (segs, last) = split_pointer(path)?;
    match parent_mut(doc, &segs, path)? {
        Value::Object(o) => {
            if replace && !o.contains_key(&last) {
                return Err(PatchError(format!("doc is missing key: {path:?}")));
            }
            o.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" && !replace {
                a.push(value);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| PatchError(format!("invalid array index in {path:?}")))?;
            if replace {
                let slot = a
                    .get_mut(i)
                    .ok_or_else(|| PatchError(format!("array index out of bounds in {path:?}")))?;
                *slot = value;
            } else {
                if i > a.len() {
                    return Err(PatchError(format!("array index out of bounds in {path:?}")));
                }
                a.insert(i, value);
            }
            Ok(())
        }
        _ => Err(PatchError(format!("doc is missing path: {path:?}"))),
    }
}

/// RFC 6902 JSON patch. All-or-nothing: `doc` is untouched on error.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError(
            "a JSON patch must be a list of operations".into(),
        ));
    };
    let mut work = doc.clone();
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| PatchError(format!("operation {op} has no path")))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| PatchError(format!("operation {op} has no value")))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| PatchError(format!("operation {op} has no from")))
        };
        match kind {
            "add" => add_at(&mut work, path, value()?, false)?,
            "remove" => {
                remove_at(&mut work, path)?;
            }
            "replace" => add_at(&mut work, path, value()?, true)?,
            "move" => {
                let v = remove_at(&mut work, from()?)?;
                add_at(&mut work, path, v, false)?;
            }
            "copy" => {
                let v = get_ptr(&work, from()?)?;
                add_at(&mut work, path, v, false)?;
            }
            "test" => {
                if get_ptr(&work, path)? != value()? {
                    return Err(PatchError(format!("testing value {path} failed")));
                }
            }
            other => return Err(PatchError(format!("Unexpected kind: {other}"))),
        }
    }
    *doc = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7386_examples() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1, 2]});
        merge_patch(&mut t, &json!({"a": [3]}));
        assert_eq!(t, json!({"a": [3]}));
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut t = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}], "args": ["1"]}});
        strategic_merge_patch(
            &mut t,
            &json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "b", "image": "z"}, {"name": "c", "image": "w"}, {"name": "a", "$patch": "delete"}],
                "args": ["2"]}}),
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "c", "image": "w"}], "args": ["2"]}})
        );
    }

    #[test]
    fn strategic_merges_finalizers() {
        let mut t = json!({"metadata": {"finalizers": ["a", "b"]}});
        strategic_merge_patch(&mut t, &json!({"metadata": {"finalizers": ["c", "a"]}})).unwrap();
        assert_eq!(t, json!({"metadata": {"finalizers": ["a", "b", "c"]}}));
        strategic_merge_patch(
            &mut t,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .unwrap();
        assert_eq!(t, json!({"metadata": {"finalizers": ["b", "c"]}}));
    }

    #[test]
    fn rfc6902() {
        let mut d = json!({"a": {"b": [1, 2]}});
        json_patch(
            &mut d,
            &json!([{"op": "add", "path": "/a/b/-", "value": 3}, {"op": "replace", "path": "/a/b/0", "value": 0},
                {"op": "copy", "from": "/a/b", "path": "/c"}, {"op": "remove", "path": "/a/b/1"}, {"op": "test", "path": "/c/2", "value": 3}]),
        )
        .unwrap();
        assert_eq!(d, json!({"a": {"b": [0, 3]}, "c": [0, 2, 3]}));
        let before = d.clone();
        assert!(
            json_patch(
                &mut d,
                &json!([{"op": "remove", "path": "/c/0"}, {"op": "test", "path": "/a", "value": 1}])
            )
            .is_err()
        );
        assert_eq!(d, before, "failed patch leaves the document alone");
    }
}
