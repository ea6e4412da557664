//! The API surface a lab apiserver serves: which group/version/resources exist, parsed from
//! the real discovery documents in `shared/fixtures/discovery/<release>` and reshaped by CLI
//! flags (drop a group/version or resource, add CRD-like resources).
//!
//! The model is the aggregated-discovery (`apidiscovery.k8s.io/v2`) shape for every group,
//! core included; legacy documents (`APIResourceList`, `APIGroupList`) are derived from it.
//! Serde structs list fields in Go's struct order so serialised documents match
//! kube-apiserver byte for byte.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use super::types::ResourceMeta;

/// Failures loading or reshaping a surface.
#[derive(Debug, thiserror::Error)]
pub enum SurfaceError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid {flag} value {value:?}: {why}")]
    Flag {
        flag: &'static str,
        value: String,
        why: &'static str,
    },
}

/// `{group, version, kind}` as discovery writes it (empty strings = same as the parent GV).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Gvk {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

/// `APISubresourceDiscovery`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubresourceDiscovery {
    pub subresource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_kind: Option<Gvk>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_types: Vec<Gvk>,
    #[serde(default)]
    pub verbs: Vec<String>,
}

/// `APIResourceDiscovery`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceDiscovery {
    pub resource: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_kind: Option<Gvk>,
    pub scope: String,
    #[serde(default)]
    pub singular_resource: String,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub short_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subresources: Vec<SubresourceDiscovery>,
}

impl ResourceDiscovery {
    fn kind(&self) -> &str {
        self.response_kind
            .as_ref()
            .map(|k| k.kind.as_str())
            .unwrap_or("")
    }
}

/// `APIVersionDiscovery`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionDiscovery {
    pub version: String,
    #[serde(default)]
    pub resources: Vec<ResourceDiscovery>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub freshness: String,
}

/// A group's metadata: its name, and `creationTimestamp: null` exactly when the fixture has
/// it (1.33-era servers wrote the zero timestamp as null; 1.36 omits it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NameMeta {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(
        rename = "creationTimestamp",
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub creation_timestamp: Option<serde_json::Value>,
}

/// Keeps a key that is present with a `null` value (plain `Option` would drop it).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// `APIGroupDiscovery`; the core group has an empty name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDiscovery {
    #[serde(default)]
    pub metadata: NameMeta,
    #[serde(default)]
    pub versions: Vec<VersionDiscovery>,
}

#[derive(Debug, Deserialize)]
struct GroupDiscoveryListIn {
    items: Vec<GroupDiscovery>,
}

/// Legacy `APIResource` (the entries of `/api/v1` and `/apis/<g>/<v>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiResource {
    pub name: String,
    #[serde(default)]
    pub singular_name: String,
    pub namespaced: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    pub kind: String,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub short_names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_version_hash: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ApiResourceListIn {
    resources: Vec<ApiResource>,
}

/// The verbs kube-apiserver serves for an ordinary stored resource.
pub const STANDARD_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The reshaped API surface.
#[derive(Debug, Clone)]
pub struct Surface {
    /// Core v1 first (name ""), then the `/apis` groups in the fixture's order.
    core: GroupDiscovery,
    groups: Vec<GroupDiscovery>,
    /// `storageVersionHash` by (group, resource): legacy discovery carries it, the aggregated
    /// document does not.
    storage_hashes: BTreeMap<(String, String), String>,
}

/// Where kube-apiserver stores a resource when it is not the group's first version that
/// serves it (the hash names the storage group/version/kind).
const STORAGE_OVERRIDES: &[(&str, &str, &str, &str)] = &[
    ("events.k8s.io", "events", "", "v1"),
    (
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "apiextensions.k8s.io",
        "v1beta1",
    ),
    (
        "admissionregistration.k8s.io",
        "mutatingadmissionpolicies",
        "admissionregistration.k8s.io",
        "v1beta1",
    ),
    (
        "admissionregistration.k8s.io",
        "mutatingadmissionpolicybindings",
        "admissionregistration.k8s.io",
        "v1beta1",
    ),
];

/// kube-apiserver's `StorageVersionHash`: base64 of the first 8 bytes of
/// sha256("group/version/kind").
pub fn storage_version_hash(group: &str, version: &str, kind: &str) -> String {
    let digest = Sha256::digest(format!("{group}/{version}/{kind}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, SurfaceError> {
    let bytes = std::fs::read(path).map_err(|source| SurfaceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| SurfaceError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Splits `g/v[/r]` where the core group is written `core` or empty.
fn split_gv(flag: &'static str, value: &str, parts: usize) -> Result<Vec<String>, SurfaceError> {
    let mut fields: Vec<String> = value.split('/').map(str::to_string).collect();
    if parts == 3 && fields.len() == 2 {
        // "v1/pods" for the core group.
        fields.insert(0, String::new());
    }
    if fields.len() != parts || fields[1..].iter().any(|f| f.is_empty()) {
        return Err(SurfaceError::Flag {
            flag,
            value: value.to_string(),
            why: "expected group/version[/resource] (core group as `core` or empty)",
        });
    }
    if fields[0] == "core" {
        fields[0].clear();
    }
    Ok(fields)
}

impl Surface {
    /// Loads `aggregated_v2.json` (the `/apis` groups) and `api__v1.json` (core v1).
    pub fn load(dir: &Path) -> Result<Surface, SurfaceError> {
        let list: GroupDiscoveryListIn = read_json(&dir.join("aggregated_v2.json"))?;
        let core: ApiResourceListIn = read_json(&dir.join("api__v1.json"))?;
        // The core group is built from the legacy list, so it follows the groups' style.
        let creation_timestamp = list
            .items
            .iter()
            .find_map(|g| g.metadata.creation_timestamp.clone());
        let mut surface = Surface {
            core: GroupDiscovery {
                metadata: NameMeta {
                    name: String::new(),
                    creation_timestamp,
                },
                versions: vec![core_from_legacy(&core.resources)],
            },
            groups: list.items,
            storage_hashes: BTreeMap::new(),
        };
        for r in &core.resources {
            if let Some(h) = &r.storage_version_hash {
                surface
                    .storage_hashes
                    .insert((String::new(), r.name.clone()), h.clone());
            }
        }
        for g in &surface.groups {
            for v in &g.versions {
                for r in &v.resources {
                    let key = (g.metadata.name.clone(), r.resource.clone());
                    if surface.storage_hashes.contains_key(&key) || !is_persisted(r) {
                        continue;
                    }
                    let (sg, sv) = STORAGE_OVERRIDES
                        .iter()
                        .find(|(g2, r2, _, _)| *g2 == key.0 && *r2 == key.1)
                        .map(|(_, _, sg, sv)| (sg.to_string(), sv.to_string()))
                        .unwrap_or_else(|| (key.0.clone(), v.version.clone()));
                    surface
                        .storage_hashes
                        .insert(key, storage_version_hash(&sg, &sv, r.kind()));
                }
            }
        }
        Ok(surface)
    }

    /// All groups, core first.
    pub fn all_groups(&self) -> impl Iterator<Item = &GroupDiscovery> {
        std::iter::once(&self.core).chain(self.groups.iter())
    }

    /// The `/apis` groups (not core).
    pub fn groups(&self) -> &[GroupDiscovery] {
        &self.groups
    }

    /// The core group (name "").
    pub fn core(&self) -> &GroupDiscovery {
        &self.core
    }

    /// A group by name ("" = core).
    pub fn group(&self, name: &str) -> Option<&GroupDiscovery> {
        self.all_groups().find(|g| g.metadata.name == name)
    }

    fn group_mut(&mut self, name: &str) -> Option<&mut GroupDiscovery> {
        if name.is_empty() {
            return Some(&mut self.core);
        }
        self.groups.iter_mut().find(|g| g.metadata.name == name)
    }

    /// A group/version.
    pub fn group_version(&self, group: &str, version: &str) -> Option<&VersionDiscovery> {
        self.group(group)?
            .versions
            .iter()
            .find(|v| v.version == version)
    }

    /// `--remove-group-version g/v`: drops the version, and the group once it has none.
    pub fn remove_group_version(&mut self, spec: &str) -> Result<(), SurfaceError> {
        let f = split_gv("--remove-group-version", spec, 2)?;
        if let Some(g) = self.group_mut(&f[0]) {
            g.versions.retain(|v| v.version != f[1]);
        }
        // The core group keeps an empty shell: `/api` always exists on kube-apiserver.
        self.groups.retain(|g| !g.versions.is_empty());
        Ok(())
    }

    /// `--remove-resource g/v/r`.
    pub fn remove_resource(&mut self, spec: &str) -> Result<(), SurfaceError> {
        let f = split_gv("--remove-resource", spec, 3)?;
        if let Some(g) = self.group_mut(&f[0]) {
            for v in g.versions.iter_mut().filter(|v| v.version == f[1]) {
                v.resources.retain(|r| r.resource != f[2]);
            }
        }
        Ok(())
    }

    /// `--add-resource g/v/r=Kind[,namespaced|cluster][,status]` (default namespaced): a
    /// CRD-like resource with the standard verbs. Creates the group/version when needed
    /// (appended, as kube-apiserver appends CRD groups after the built-in ones).
    pub fn add_resource(&mut self, spec: &str) -> Result<(), SurfaceError> {
        let bad = |why| SurfaceError::Flag {
            flag: "--add-resource",
            value: spec.to_string(),
            why,
        };
        let (gvr, rest) = spec.split_once('=').ok_or_else(|| bad("missing =Kind"))?;
        let f = split_gv("--add-resource", gvr, 3)?;
        let mut opts = rest.split(',');
        let kind = opts.next().unwrap_or_default().to_string();
        if kind.is_empty() {
            return Err(bad("missing Kind"));
        }
        let mut namespaced = true;
        let mut status = false;
        for o in opts {
            match o {
                "namespaced" => namespaced = true,
                "cluster" => namespaced = false,
                "status" => status = true,
                _ => return Err(bad("options are namespaced, cluster, status")),
            }
        }
        let (group, version, resource) = (f[0].clone(), f[1].clone(), f[2].clone());
        if self.group_mut(&group).is_none() {
            self.groups.push(GroupDiscovery {
                metadata: NameMeta {
                    name: group.clone(),
                    creation_timestamp: self.core.metadata.creation_timestamp.clone(),
                },
                versions: vec![],
            });
        }
        let g = self.group_mut(&group).expect("group just ensured");
        if !g.versions.iter().any(|v| v.version == version) {
            g.versions.push(VersionDiscovery {
                version: version.clone(),
                resources: vec![],
                freshness: "Current".into(),
            });
        }
        let v = g
            .versions
            .iter_mut()
            .find(|v| v.version == version)
            .expect("version just ensured");
        v.resources.retain(|r| r.resource != resource);
        let gvk = Gvk {
            group: String::new(),
            version: String::new(),
            kind: kind.clone(),
        };
        v.resources.push(ResourceDiscovery {
            resource: resource.clone(),
            response_kind: Some(gvk.clone()),
            scope: if namespaced { "Namespaced" } else { "Cluster" }.into(),
            singular_resource: kind.to_lowercase(),
            verbs: STANDARD_VERBS.iter().map(|s| s.to_string()).collect(),
            short_names: vec![],
            categories: vec![],
            subresources: if status {
                vec![SubresourceDiscovery {
                    subresource: "status".into(),
                    response_kind: Some(gvk),
                    accepted_types: vec![],
                    verbs: vec!["get".into(), "patch".into(), "update".into()],
                }]
            } else {
                vec![]
            },
        });
        // kube-apiserver lists resources sorted by name.
        v.resources.sort_by(|a, b| a.resource.cmp(&b.resource));
        self.storage_hashes.insert(
            (group.clone(), resource),
            storage_version_hash(&group, &version, &kind),
        );
        Ok(())
    }

    /// Looks up a resource.
    pub fn lookup(&self, group: &str, version: &str, resource: &str) -> Option<ResourceMeta> {
        let v = self.group_version(group, version)?;
        let r = v.resources.iter().find(|r| r.resource == resource)?;
        Some(ResourceMeta {
            group: group.to_string(),
            version: version.to_string(),
            resource: r.resource.clone(),
            singular: r.singular_resource.clone(),
            kind: r.kind().to_string(),
            namespaced: r.scope == "Namespaced",
            verbs: r.verbs.clone(),
            subresources: r
                .subresources
                .iter()
                .map(|s| s.subresource.clone())
                .collect(),
        })
    }

    /// Verbs served on `resource/subresource`.
    pub fn subresource_verbs(
        &self,
        group: &str,
        version: &str,
        resource: &str,
        subresource: &str,
    ) -> Option<Vec<String>> {
        let v = self.group_version(group, version)?;
        let r = v.resources.iter().find(|r| r.resource == resource)?;
        r.subresources
            .iter()
            .find(|s| s.subresource == subresource)
            .map(|s| s.verbs.clone())
    }

    /// The legacy `APIResource` entries of a group/version, each resource followed by its
    /// subresources (kube-apiserver's order).
    pub fn legacy_resources(&self, group: &str, version: &str) -> Option<Vec<ApiResource>> {
        let v = self.group_version(group, version)?;
        let mut out = Vec::new();
        for r in &v.resources {
            let namespaced = r.scope == "Namespaced";
            let rk = r.response_kind.clone().unwrap_or_default();
            out.push(ApiResource {
                name: r.resource.clone(),
                singular_name: r.singular_resource.clone(),
                namespaced,
                group: rk.group,
                version: rk.version,
                kind: rk.kind,
                verbs: r.verbs.clone(),
                short_names: r.short_names.clone(),
                categories: r.categories.clone(),
                storage_version_hash: self
                    .storage_hashes
                    .get(&(group.to_string(), r.resource.clone()))
                    .cloned(),
            });
            for s in &r.subresources {
                let sk = s.response_kind.clone().unwrap_or_default();
                out.push(ApiResource {
                    name: format!("{}/{}", r.resource, s.subresource),
                    singular_name: String::new(),
                    namespaced,
                    group: sk.group,
                    version: sk.version,
                    kind: sk.kind,
                    verbs: s.verbs.clone(),
                    short_names: vec![],
                    categories: vec![],
                    storage_version_hash: None,
                });
            }
        }
        Some(out)
    }
}

/// Create-only resources (reviews, bindings) are never stored, so have no storage hash.
fn is_persisted(r: &ResourceDiscovery) -> bool {
    r.verbs.iter().any(|v| v == "get")
}

/// Builds the aggregated core v1 version from the legacy `/api/v1` list.
fn core_from_legacy(resources: &[ApiResource]) -> VersionDiscovery {
    let mut out: Vec<ResourceDiscovery> = Vec::new();
    for r in resources {
        let gvk = Gvk {
            group: r.group.clone(),
            version: r.version.clone(),
            kind: r.kind.clone(),
        };
        match r.name.split_once('/') {
            None => out.push(ResourceDiscovery {
                resource: r.name.clone(),
                response_kind: Some(gvk),
                scope: if r.namespaced {
                    "Namespaced"
                } else {
                    "Cluster"
                }
                .into(),
                singular_resource: r.singular_name.clone(),
                verbs: r.verbs.clone(),
                short_names: r.short_names.clone(),
                categories: r.categories.clone(),
                subresources: vec![],
            }),
            Some((parent, sub)) => {
                if let Some(p) = out.iter_mut().find(|p| p.resource == parent) {
                    p.subresources.push(SubresourceDiscovery {
                        subresource: sub.to_string(),
                        response_kind: Some(gvk),
                        accepted_types: vec![],
                        verbs: r.verbs.clone(),
                    });
                }
            }
        }
    }
    VersionDiscovery {
        version: "v1".into(),
        resources: out,
        freshness: "Current".into(),
    }
}

/// Uppercase hex SHA-512, kube-apiserver's ETag/hash format.
pub fn sha512_upper_hex(bytes: &[u8]) -> String {
    hex::encode_upper(Sha512::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_gv_accepts_core_spellings() {
        assert_eq!(
            split_gv("f", "core/v1/pods", 3).unwrap(),
            ["", "v1", "pods"]
        );
        assert_eq!(split_gv("f", "/v1/pods", 3).unwrap(), ["", "v1", "pods"]);
        assert_eq!(split_gv("f", "v1/pods", 3).unwrap(), ["", "v1", "pods"]);
        assert_eq!(split_gv("f", "apps/v1", 2).unwrap(), ["apps", "v1"]);
        assert!(split_gv("f", "apps", 2).is_err());
        assert!(split_gv("f", "a/b/c/d", 3).is_err());
    }

    #[test]
    fn creation_timestamp_null_follows_the_fixture() {
        let dir = crate::bins::fixtures_dir().join("discovery");
        let old = Surface::load(&dir.join("k8s-1.33")).unwrap();
        let new = Surface::load(&dir.join("k8s-1.36")).unwrap();
        let meta =
            |s: &Surface, g: &str| serde_json::to_string(&s.group(g).unwrap().metadata).unwrap();
        assert_eq!(
            meta(&old, "apps"),
            r#"{"name":"apps","creationTimestamp":null}"#
        );
        assert_eq!(meta(&old, ""), r#"{"creationTimestamp":null}"#);
        assert_eq!(meta(&new, "apps"), r#"{"name":"apps"}"#);
        assert_eq!(meta(&new, ""), "{}");
    }

    #[test]
    fn round_trips_every_fixture() {
        // The model keeps every field the generators wrote, for all three releases, and the
        // legacy core list derived from it is the fixture's `/api/v1` again.
        for release in ["k8s-1.33", "k8s-1.36", "k8s-1.37-dev"] {
            let dir = crate::bins::fixtures_dir().join("discovery").join(release);
            let surface = Surface::load(&dir).unwrap();
            let agg: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("aggregated_v2.json")).unwrap())
                    .unwrap();
            assert_eq!(
                serde_json::to_value(surface.groups()).unwrap(),
                agg["items"],
                "{release}"
            );
            let core: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("api__v1.json")).unwrap()).unwrap();
            assert_eq!(
                serde_json::to_value(surface.legacy_resources("", "v1").unwrap()).unwrap(),
                core["resources"],
                "{release}"
            );
        }
    }

    #[test]
    fn storage_hash_matches_kube() {
        // Values from the recorded /api/v1 and /apis/apps/v1 documents.
        assert_eq!(storage_version_hash("", "v1", "ConfigMap"), "qFsyl6wFWjQ=");
        assert_eq!(
            storage_version_hash("apps", "v1", "Deployment"),
            "8aSe+NMegvE="
        );
    }
}
