//! OpenAPI v3 as kube-apiserver publishes it: an index at `/openapi/v3` pointing at one
//! document per group/version (`?hash=<etag>` URLs). The lab's documents are generated from
//! the surface: one loose object schema per kind carrying `x-kubernetes-group-version-kind`
//! and its list and PATCH paths (how `kubectl explain` maps a resource to its kind, and how
//! kubectl checks for server-side field validation);
//! enough for `kubectl explain` and client-side schema lookups, not full field schemas.
use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::surface::{Surface, sha512_upper_hex};

/// One published document.
#[derive(Debug, Clone)]
pub struct Doc {
    /// Compact JSON, no trailing newline (as kube-apiserver serves OpenAPI).
    pub body: Vec<u8>,
    /// Uppercase hex SHA-512 (unquoted); also the `?hash=` value.
    pub hash: String,
}

/// The index and every document, by path relative to `/openapi/v3/`.
#[derive(Debug, Clone)]
pub struct OpenApi {
    pub index: Vec<u8>,
    pub docs: BTreeMap<String, Doc>,
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

fn object_meta_schema() -> Value {
    let s = |d: &str| json!({"description": d, "type": "string"});
    json!({
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "type": "object",
        "properties": {
            "annotations": {"description": "Annotations is an unstructured key value map stored with a resource.", "type": "object", "additionalProperties": {"type": "string", "default": ""}},
            "creationTimestamp": {"description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "type": "string", "format": "date-time"},
            "generateName": s("GenerateName is an optional prefix, used by the server, to generate a unique name ONLY IF the Name field has not been provided."),
            "labels": {"description": "Map of string keys and values that can be used to organize and categorize (scope and select) objects.", "type": "object", "additionalProperties": {"type": "string", "default": ""}},
            "name": s("Name must be unique within a namespace."),
            "namespace": s("Namespace defines the space within which each name must be unique."),
            "resourceVersion": s("An opaque value that represents the internal version of this object."),
            "uid": s("UID is the unique in time and space value for this object."),
        }
    })
}

fn kind_schema(group: &str, version: &str, kind: &str) -> Value {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({
        "description": format!("{kind} ({gv}), served by the mvp lab apiserver."),
        "type": "object",
        "properties": {
            "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
            "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
            "metadata": {"description": "Standard object's metadata.", "default": {}, "allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}]},
            "spec": {"description": format!("Desired state of the {kind}."), "type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "status": {"description": format!("Observed state of the {kind}."), "type": "object", "x-kubernetes-preserve-unknown-fields": true},
        },
        "x-kubernetes-group-version-kind": [{"group": group, "kind": kind, "version": version}],
    })
}

/// kube-apiserver's schema naming (`io.k8s.api.apps.v1.Deployment`), using the group's first
/// DNS label (`core` for the core group).
fn schema_name(group: &str, version: &str, kind: &str) -> String {
    let short = if group.is_empty() {
        "core"
    } else {
        group.split('.').next().unwrap_or(group)
    };
    format!("io.k8s.api.{short}.{version}.{kind}")
}

/// The list operation of a resource: `kubectl explain` finds a GVR's kind through the
/// `x-kubernetes-group-version-kind` of its collection path.
fn list_path(group: &str, version: &str, kind: &str, schema: &str) -> Value {
    json!({
        "get": {
            "description": format!("list or watch objects of kind {kind}"),
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}},
                "401": {"description": "Unauthorized"},
            },
            "x-kubernetes-action": "list",
            "x-kubernetes-group-version-kind": {"group": group, "kind": kind, "version": version},
        }
    })
}

/// The item path's PATCH: kubectl's field-validation check looks for the
/// `fieldValidation` parameter on the PATCH operation of the kind.
fn item_path(group: &str, version: &str, kind: &str, schema: &str) -> Value {
    let query = |name: &str, description: &str| json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}});
    json!({
        "patch": {
            "description": format!("partially update the specified {kind}"),
            "parameters": [
                query("dryRun", "When present, indicates that modifications should not be persisted."),
                query("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."),
                query("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields."),
            ],
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}},
                "401": {"description": "Unauthorized"},
            },
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": group, "kind": kind, "version": version},
        }
    })
}

fn doc(
    info_version: &str,
    paths: serde_json::Map<String, Value>,
    schemas: serde_json::Map<String, Value>,
) -> Doc {
    let mut v = json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": info_version},
        "paths": paths,
    });
    if !schemas.is_empty() {
        v["components"] = json!({ "schemas": schemas });
    }
    let body = serde_json::to_vec(&v).expect("serialises");
    let hash = sha512_upper_hex(&body);
    Doc { body, hash }
}

impl OpenApi {
    /// `info_version` is `<major>.<minor>` of the emulated release.
    pub fn new(surface: &Surface, info_version: &str) -> OpenApi {
        let mut docs = BTreeMap::new();
        for p in ["api", "apis", "version"] {
            docs.insert(
                p.to_string(),
                doc(info_version, Default::default(), Default::default()),
            );
        }
        for g in surface.all_groups() {
            let group = g.metadata.name.as_str();
            if !group.is_empty() {
                docs.insert(
                    format!("apis/{group}"),
                    doc(info_version, Default::default(), Default::default()),
                );
            }
            for v in &g.versions {
                let path = if group.is_empty() {
                    format!("api/{}", v.version)
                } else {
                    format!("apis/{group}/{}", v.version)
                };
                let mut schemas = serde_json::Map::new();
                let mut paths = serde_json::Map::new();
                schemas.insert(OBJECT_META.into(), object_meta_schema());
                for r in &v.resources {
                    let kind = r
                        .response_kind
                        .as_ref()
                        .map(|k| k.kind.as_str())
                        .unwrap_or("");
                    if kind.is_empty() {
                        continue;
                    }
                    let name = schema_name(group, &v.version, kind);
                    let collection = if r.scope == "Namespaced" {
                        format!("/{path}/namespaces/{{namespace}}/{}", r.resource)
                    } else {
                        format!("/{path}/{}", r.resource)
                    };
                    if r.verbs.iter().any(|v| v == "patch") {
                        paths.insert(
                            format!("{collection}/{{name}}"),
                            item_path(group, &v.version, kind, &name),
                        );
                    }
                    paths.insert(collection, list_path(group, &v.version, kind, &name));
                    schemas
                        .entry(name)
                        .or_insert_with(|| kind_schema(group, &v.version, kind));
                }
                docs.insert(path, doc(info_version, paths, schemas));
            }
        }
        let paths: serde_json::Map<String, Value> = docs
            .iter()
            .map(|(p, d)| {
                (
                    p.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", d.hash)}),
                )
            })
            .collect();
        let index = serde_json::to_vec(&json!({ "paths": paths })).expect("serialises");
        OpenApi { index, docs }
    }
}
