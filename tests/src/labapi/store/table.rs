//! `meta.k8s.io` Table output (what `kubectl get` asks for). Pods and namespaces have
//! kube-apiserver's columns (definitions copied from the recorded tables); every other
//! resource gets the generic `Name` and `Age` (kube has per-type printers for many more).
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

/// One column: its definition and how a cell is computed from an object.
struct Column {
    name: &'static str,
    format: &'static str,
    description: &'static str,
    priority: u8,
    cell: fn(&Value) -> String,
}

fn str_at<'a>(o: &'a Value, ptr: &str) -> Option<&'a str> {
    o.pointer(ptr)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn age(o: &Value) -> String {
    str_at(o, "/metadata/creationTimestamp")
        .and_then(parse_rfc3339)
        .map(|t| human_duration(now_unix() - t))
        .unwrap_or_else(|| "<unknown>".into())
}

const NAME: Column = Column {
    name: "Name",
    format: "name",
    description: NAME_DESC,
    priority: 0,
    cell: |o| str_at(o, "/metadata/name").unwrap_or("").to_string(),
};

const AGE: Column = Column {
    name: "Age",
    format: "",
    description: AGE_DESC,
    priority: 0,
    cell: age,
};

fn pod_status(o: &Value) -> String {
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    str_at(o, "/status/reason")
        .or_else(|| str_at(o, "/status/phase"))
        .unwrap_or("Unknown")
        .to_string()
}

fn pod_ready(o: &Value) -> String {
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map_or(0, |cs| {
            cs.iter().filter(|c| c["ready"] == json!(true)).count()
        });
    format!("{ready}/{total}")
}

fn pod_restarts(o: &Value) -> String {
    o.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map_or(0, |cs| {
            cs.iter()
                .filter_map(|c| c["restartCount"].as_i64())
                .sum::<i64>()
        })
        .to_string()
}

fn pod_readiness_gates(o: &Value) -> String {
    let gates: Vec<&str> = o
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .map(|g| {
            g.iter()
                .filter_map(|g| g["conditionType"].as_str())
                .collect()
        })
        .unwrap_or_default();
    if gates.is_empty() {
        return "<none>".into();
    }
    let conditions = o.pointer("/status/conditions").and_then(Value::as_array);
    let ok = gates
        .iter()
        .filter(|g| {
            conditions.is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == json!(g) && c["status"] == json!("True"))
            })
        })
        .count();
    format!("{ok}/{}", gates.len())
}

/// kube-apiserver's printer columns for a resource (pods and namespaces as kube prints
/// them, everything else Name and Age).
fn printer(resource: &str) -> Vec<Column> {
    match resource {
        "namespaces" => vec![
            NAME,
            Column {
                name: "Status",
                format: "",
                description: "The status of the namespace",
                priority: 0,
                cell: |o| str_at(o, "/status/phase").unwrap_or("").to_string(),
            },
            AGE,
        ],
        "pods" => vec![
            NAME,
            Column {
                name: "Ready",
                format: "",
                description: "The aggregate readiness state of this pod for accepting traffic.",
                priority: 0,
                cell: pod_ready,
            },
            Column {
                name: "Status",
                format: "",
                description: "The aggregate status of the containers in this pod.",
                priority: 0,
                cell: pod_status,
            },
            Column {
                name: "Restarts",
                format: "",
                description: "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                priority: 0,
                cell: pod_restarts,
            },
            AGE,
            Column {
                name: "IP",
                format: "",
                description: "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
                priority: 1,
                cell: |o| str_at(o, "/status/podIP").unwrap_or("<none>").to_string(),
            },
            Column {
                name: "Node",
                format: "",
                description: "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
                priority: 1,
                cell: |o| str_at(o, "/spec/nodeName").unwrap_or("<none>").to_string(),
            },
            Column {
                name: "Nominated Node",
                format: "",
                description: "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",
                priority: 1,
                cell: |o| {
                    str_at(o, "/status/nominatedNodeName")
                        .unwrap_or("<none>")
                        .to_string()
                },
            },
            Column {
                name: "Readiness Gates",
                format: "",
                description: "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
                priority: 1,
                cell: pod_readiness_gates,
            },
        ],
        _ => vec![NAME, AGE],
    }
}

/// The column definitions for a resource.
pub fn columns(resource: &str) -> Vec<Value> {
    printer(resource)
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": "string", "format": c.format,
                "description": c.description, "priority": c.priority})
        })
        .collect()
}

/// One row for an object (which carries kind/apiVersion).
pub fn row(resource: &str, obj: &Value, include: IncludeObject) -> Value {
    let cells: Vec<String> = printer(resource).iter().map(|c| (c.cell)(obj)).collect();
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
