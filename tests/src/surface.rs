//! The fixtures' API surfaces: the README's "only in" lists and each resource's kind and
//! scope, read from `shared/fixtures/discovery/k8s-<minor>/aggregated_v2.json`.
use std::path::Path;

use serde_json::Value;

/// The README's "Resources a mixed-version proxy must route (1.33 ↔ 1.36)" lists
/// (`shared/fixtures/discovery/README.md`), as (group/version, resource[/subresource]).
pub const ONLY_IN_133: &[(&str, &str)] = &[
    (
        "admissionregistration.k8s.io/v1beta1",
        "validatingadmissionpolicies",
    ),
    (
        "admissionregistration.k8s.io/v1beta1",
        "validatingadmissionpolicies/status",
    ),
    (
        "admissionregistration.k8s.io/v1beta1",
        "validatingadmissionpolicybindings",
    ),
    ("resource.k8s.io/v1alpha3", "deviceclasses"),
    ("resource.k8s.io/v1alpha3", "resourceclaims"),
    ("resource.k8s.io/v1alpha3", "resourceclaims/status"),
    ("resource.k8s.io/v1alpha3", "resourceclaimtemplates"),
    ("resource.k8s.io/v1alpha3", "resourceslices"),
    ("storage.k8s.io/v1alpha1", "volumeattributesclasses"),
    (
        "storagemigration.k8s.io/v1alpha1",
        "storageversionmigrations",
    ),
    (
        "storagemigration.k8s.io/v1alpha1",
        "storageversionmigrations/status",
    ),
];
pub const ONLY_IN_136: &[(&str, &str)] = &[
    (
        "admissionregistration.k8s.io/v1",
        "mutatingadmissionpolicies",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "mutatingadmissionpolicybindings",
    ),
    (
        "admissionregistration.k8s.io/v1beta1",
        "mutatingadmissionpolicies",
    ),
    (
        "admissionregistration.k8s.io/v1beta1",
        "mutatingadmissionpolicybindings",
    ),
    ("certificates.k8s.io/v1beta1", "podcertificaterequests"),
    (
        "certificates.k8s.io/v1beta1",
        "podcertificaterequests/status",
    ),
    ("resource.k8s.io/v1", "deviceclasses"),
    ("resource.k8s.io/v1", "resourceclaims"),
    ("resource.k8s.io/v1", "resourceclaims/status"),
    ("resource.k8s.io/v1", "resourceclaimtemplates"),
    ("resource.k8s.io/v1", "resourceslices"),
    ("resource.k8s.io/v1alpha3", "devicetaintrules/status"),
    ("resource.k8s.io/v1beta2", "devicetaintrules"),
    ("resource.k8s.io/v1beta2", "devicetaintrules/status"),
    ("scheduling.k8s.io/v1alpha2", "podgroups"),
    ("scheduling.k8s.io/v1alpha2", "podgroups/status"),
    ("scheduling.k8s.io/v1alpha2", "workloads"),
    ("storage.k8s.io/v1", "volumeattributesclasses"),
    (
        "storagemigration.k8s.io/v1beta1",
        "storageversionmigrations",
    ),
    (
        "storagemigration.k8s.io/v1beta1",
        "storageversionmigrations/status",
    ),
];

/// A top-level resource of a fixture surface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// `group/version` (`v1` for core).
    pub gv: String,
    pub resource: String,
    pub kind: String,
    pub namespaced: bool,
}

impl Resource {
    /// The collection path (namespaced ones in `namespace`).
    pub fn collection(&self, namespace: &str) -> String {
        let prefix = if self.gv == "v1" {
            "/api/v1".to_string()
        } else {
            format!("/apis/{}", self.gv)
        };
        if self.namespaced {
            format!("{prefix}/namespaces/{namespace}/{}", self.resource)
        } else {
            format!("{prefix}/{}", self.resource)
        }
    }
}

/// The resource `gv`/`resource` (no subresource) of the aggregated fixture in `dir`.
pub fn resource(dir: &Path, gv: &str, resource: &str) -> Option<Resource> {
    let path = dir.join("aggregated_v2.json");
    let text = std::fs::read_to_string(&path).ok()?;
    let doc: Value = serde_json::from_str(&text).ok()?;
    let (group, version) = gv.split_once('/')?;
    let g = doc["items"]
        .as_array()?
        .iter()
        .find(|g| g["metadata"]["name"] == group)?;
    let v = g["versions"]
        .as_array()?
        .iter()
        .find(|v| v["version"] == version)?;
    let r = v["resources"]
        .as_array()?
        .iter()
        .find(|r| r["resource"] == resource)?;
    Some(Resource {
        gv: gv.to_string(),
        resource: resource.to_string(),
        kind: r["responseKind"]["kind"].as_str()?.to_string(),
        namespaced: r["scope"] == "Namespaced",
    })
}
