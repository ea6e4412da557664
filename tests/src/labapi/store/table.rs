//! `meta.k8s.io` Table output (what `kubectl get` asks for). Generic columns only:
//! `Name` and `Age` (plus `Status` for namespaces and pods); kube-apiserver has per-type
//! printers with more columns (e.g. pods' Ready/Restarts/IP/Node), which the lab omits.
use serde_json::{Value, json};

use super::util::{human_duration, now_unix, parse_rfc3339};

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// What each row's `object` carries (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

fn column(name: &str, format: &str, desc: &str) -> Value {
    json!({"name": name, "type": "string", "format": format, "description": desc, "priority": 0})
}

/// Renders one cell from an object.
type Cell = fn(&Value) -> String;

fn status_column(resource: &str) -> Option<(Value, Cell)> {
    match resource {
        "namespaces" => Some((column("Status", "", "The status of the namespace"), |o| {
            o.pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })),
        "pods" => Some((
            column(
                "Status",
                "",
                "The aggregate status of the containers in this pod.",
            ),
            |o| {
                if o.pointer("/metadata/deletionTimestamp").is_some() {
                    return "Terminating".into();
                }
                o.pointer("/status/phase")
                    .and_then(Value::as_str)
                    .unwrap_or("Unknown")
                    .to_string()
            },
        )),
        _ => None,
    }
}

/// The column definitions for a resource.
pub fn columns(resource: &str) -> Vec<Value> {
    let mut cols = vec![column("Name", "name", NAME_DESC)];
    if let Some((c, _)) = status_column(resource) {
        cols.push(c);
    }
    cols.push(column("Age", "", AGE_DESC));
    cols
}

/// One row for an object (which carries kind/apiVersion).
pub fn row(resource: &str, obj: &Value, include: IncludeObject) -> Value {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let age = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
        .map(|t| human_duration(now_unix() - t))
        .unwrap_or_else(|| "<unknown>".into());
    let mut cells = vec![json!(name)];
    if let Some((_, f)) = status_column(resource) {
        cells.push(json!(f(obj)));
    }
    cells.push(json!(age));
    let mut row = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
            })
        }
        IncludeObject::Object => row["object"] = obj.clone(),
    }
    row
}

/// A Table for objects (each with kind/apiVersion set), at `resource_version`.
pub fn table(
    version: &str,
    resource: &str,
    objects: &[Value],
    metadata: Value,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": metadata,
        "columnDefinitions": if with_columns { columns(resource) } else { vec![] },
        "rows": objects.iter().map(|o| row(resource, o, include)).collect::<Vec<_>>(),
    })
}
