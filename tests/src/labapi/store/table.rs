//! `meta.k8s.io` Table output (what `kubectl get` asks for). Pods and namespaces have
//! kube-apiserver's columns (definitions copied from the recorded tables); configmaps,
//! secrets, serviceaccounts, services and deployments have kube's printer columns (column
//! descriptions taken from the recorded OpenAPI field docs); every other resource gets the
//! generic `Name` and `Age` (kube has per-type printers for many more).
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
    cell: fn(&Value) -> Value,
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
    cell: |o| json!(str_at(o, "/metadata/name").unwrap_or("")),
};

const AGE: Column = Column {
    name: "Age",
    format: "",
    description: AGE_DESC,
    priority: 0,
    cell: |o| json!(age(o)),
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
                cell: |o| json!(str_at(o, "/status/phase").unwrap_or("")),
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
                cell: |o| json!(pod_ready(o)),
            },
            Column {
                name: "Status",
                format: "",
                description: "The aggregate status of the containers in this pod.",
                priority: 0,
                cell: |o| json!(pod_status(o)),
            },
            Column {
                name: "Restarts",
                format: "",
                description: "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                priority: 0,
                cell: |o| json!(pod_restarts(o)),
            },
            AGE,
            Column {
                name: "IP",
                format: "",
                description: "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
                priority: 1,
                cell: |o| json!(str_at(o, "/status/podIP").unwrap_or("<none>")),
            },
            Column {
                name: "Node",
                format: "",
                description: "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
                priority: 1,
                cell: |o| json!(str_at(o, "/spec/nodeName").unwrap_or("<none>")),
            },
            Column {
                name: "Nominated Node",
                format: "",
                description: "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",
                priority: 1,
                cell: |o| json!(str_at(o, "/status/nominatedNodeName").unwrap_or("<none>")),
            },
            Column {
                name: "Readiness Gates",
                format: "",
                description: "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates",
                priority: 1,
                cell: |o| json!(pod_readiness_gates(o)),
            },
        ],
        "configmaps" => vec![
            NAME,
            Column {
                name: "Data",
                format: "",
                description: "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
                priority: 0,
                cell: |o| json!(count(o, "/data") + count(o, "/binaryData")),
            },
            AGE,
        ],
        "secrets" => vec![
            NAME,
            Column {
                name: "Type",
                format: "",
                description: "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
                priority: 0,
                cell: |o| json!(str_at(o, "/type").unwrap_or("")),
            },
            Column {
                name: "Data",
                format: "",
                description: "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
                priority: 0,
                cell: |o| json!(count(o, "/data")),
            },
            AGE,
        ],
        "serviceaccounts" => vec![
            NAME,
            Column {
                name: "Secrets",
                format: "",
                description: "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a \"kubernetes.io/enforce-mountable-secrets\" annotation set to \"true\". The \"kubernetes.io/enforce-mountable-secrets\" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret",
                priority: 0,
                cell: |o| json!(count(o, "/secrets")),
            },
            AGE,
        ],
        "services" => vec![
            NAME,
            Column {
                name: "Type",
                format: "",
                description: "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types",
                priority: 0,
                cell: |o| json!(str_at(o, "/spec/type").unwrap_or("ClusterIP")),
            },
            Column {
                name: "Cluster-IP",
                format: "",
                description: "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
                priority: 0,
                cell: |o| json!(str_at(o, "/spec/clusterIP").unwrap_or("<none>")),
            },
            Column {
                name: "External-IP",
                format: "",
                description: "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.",
                priority: 0,
                cell: |o| {
                    let ips = strings_at(o, "/spec/externalIPs");
                    json!(if ips.is_empty() {
                        "<none>".to_string()
                    } else {
                        ips.join(",")
                    })
                },
            },
            Column {
                name: "Port(s)",
                format: "",
                description: "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
                priority: 0,
                cell: |o| json!(service_ports(o)),
            },
            AGE,
            Column {
                name: "Selector",
                format: "",
                description: "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/",
                priority: 1,
                cell: |o| json!(label_map(o.pointer("/spec/selector"))),
            },
        ],
        "deployments" => vec![
            NAME,
            Column {
                name: "Ready",
                format: "",
                description: "Number of the pod with ready state",
                priority: 0,
                cell: |o| {
                    let ready = o
                        .pointer("/status/readyReplicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    let want = o
                        .pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    json!(format!("{ready}/{want}"))
                },
            },
            Column {
                name: "Up-to-date",
                format: "",
                description: "Total number of non-terminating pods targeted by this deployment that have the desired template spec.",
                priority: 0,
                cell: |o| {
                    json!(
                        o.pointer("/status/updatedReplicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                    )
                },
            },
            Column {
                name: "Available",
                format: "",
                description: "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.",
                priority: 0,
                cell: |o| {
                    json!(
                        o.pointer("/status/availableReplicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                    )
                },
            },
            AGE,
            Column {
                name: "Containers",
                format: "",
                description: "Names of each container in the template.",
                priority: 1,
                cell: |o| json!(container_field(o, "name")),
            },
            Column {
                name: "Images",
                format: "",
                description: "Images referenced by each container in the template.",
                priority: 1,
                cell: |o| json!(container_field(o, "image")),
            },
            Column {
                name: "Selector",
                format: "",
                description: "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment. It must match the pod template's labels.",
                priority: 1,
                cell: |o| json!(label_map(o.pointer("/spec/selector/matchLabels"))),
            },
        ],
        _ => vec![NAME, AGE],
    }
}

/// Number of entries of the map or list at `ptr`.
fn count(o: &Value, ptr: &str) -> i64 {
    match o.pointer(ptr) {
        Some(Value::Object(m)) => m.len() as i64,
        Some(Value::Array(a)) => a.len() as i64,
        _ => 0,
    }
}

fn strings_at(o: &Value, ptr: &str) -> Vec<String> {
    o.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// `k=v,k2=v2` (sorted, as kube's label formatting), or `<none>`.
fn label_map(v: Option<&Value>) -> String {
    let mut pairs: Vec<String> = v
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if pairs.is_empty() {
        return "<none>".into();
    }
    pairs.sort();
    pairs.join(",")
}

/// `80/TCP,443:30443/TCP`, or `<none>`.
fn service_ports(o: &Value) -> String {
    let ports: Vec<String> = o
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let port = p["port"].as_i64().unwrap_or(0);
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(np) if np > 0 => format!("{port}:{np}/{proto}"),
                        _ => format!("{port}/{proto}"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

fn container_field(o: &Value, field: &str) -> String {
    o.pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c[field].as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
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
    let cells: Vec<Value> = printer(resource).iter().map(|c| (c.cell)(obj)).collect();
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
