//! The object model: server-set fields, validation, canonical field order, the stored
//! form, Status builders and output shapes.
use super::*;

pub(super) fn namespaces_meta() -> ResourceMeta {
    ResourceMeta {
        group: String::new(),
        version: "v1".into(),
        resource: "namespaces".into(),
        singular: "namespace".into(),
        kind: "Namespace".into(),
        namespaced: false,
        verbs: vec![],
        subresources: vec!["status".into(), "finalize".into()],
    }
}

/// `details` as kube writes them: name, group (non-core), kind = resource.
pub(super) fn details(meta: &ResourceMeta, name: &str) -> Value {
    let mut d = Map::new();
    d.insert("name".into(), json!(name));
    if !meta.group.is_empty() {
        d.insert("group".into(), json!(meta.group));
    }
    d.insert("kind".into(), json!(meta.resource));
    Value::Object(d)
}

pub(super) fn not_found(meta: &ResourceMeta, name: &str) -> Status {
    Status::not_found(&meta.group, &meta.resource, name)
}

pub(super) fn conflict(meta: &ResourceMeta, name: &str) -> Status {
    conflict_msg(
        meta,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

pub(super) fn conflict_msg(meta: &ResourceMeta, name: &str, why: &str) -> Status {
    Status::new(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            qualified(&meta.group, &meta.resource)
        ),
    )
    .with_details(details(meta, name))
}

pub(super) fn bad_rv(v: &str) -> Status {
    Status::new(
        400,
        "BadRequest",
        format!("invalid resource version {v:?}: not a non-negative integer"),
    )
}

/// The 410 for an expired continue token: a Status carrying a fresh (inconsistent) token.
pub(super) fn expired_continue(t: &ContinueToken) -> Value {
    let fresh = ContinueToken::new(-1, t.start.trim_start_matches('/').to_string()).encode();
    let mut v = Status::new(
        410,
        "Expired",
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
    )
    .to_value();
    v["metadata"]["continue"] = json!(fresh);
    v
}

/// 422 Invalid: `causes` are (field, reason, message).
pub(super) fn invalid(kind: &str, name: &str, causes: Vec<(String, &str, String)>) -> Status {
    let parts: Vec<String> = causes.iter().map(|(f, _, m)| format!("{f}: {m}")).collect();
    let joined = if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("[{}]", parts.join(", "))
    };
    let mut d = Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    d.insert("kind".into(), json!(kind));
    d.insert(
        "causes".into(),
        Value::Array(
            causes
                .iter()
                .map(|(f, r, m)| json!({"reason": r, "message": m, "field": f}))
                .collect(),
        ),
    );
    Status::new(
        422,
        "Invalid",
        format!("{kind} \"{name}\" is invalid: {joined}"),
    )
    .with_details(Value::Object(d))
}

/// Validation kube-apiserver would do that the lab can do generically: the name, and
/// ConfigMap/Secret data keys.
pub(super) fn validate(meta: &ResourceMeta, name: &str, obj: &Value) -> ApiResult<()> {
    let mut causes: Vec<(String, &str, String)> = Vec::new();
    for p in util::name_problems(name, meta.resource == "namespaces") {
        causes.push((
            "metadata.name".into(),
            "FieldValueInvalid",
            format!("Invalid value: {name:?}: {p}"),
        ));
    }
    if matches!(meta.resource.as_str(), "configmaps" | "secrets") && meta.group.is_empty() {
        for field in ["data", "binaryData", "stringData"] {
            if let Some(m) = obj.get(field).and_then(Value::as_object) {
                for k in m.keys().filter(|k| !util::is_config_key(k)) {
                    causes.push((
                        format!("{field}[{k}]"),
                        "FieldValueInvalid",
                        format!("Invalid value: {k:?}: {}", util::CONFIG_KEY_MSG),
                    ));
                }
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(&meta.kind, name, causes))
    }
}

/// The namespace of a key relative to the prefix (see the module docs for the layout):
/// `<resource>/<ns>/<name>` for core, `<group>/<resource>/<ns>/<name>` otherwise. Groups
/// are recognised by a dot or as one of the built-in dotless groups.
pub(super) fn namespace_of_key(rel: &str) -> Option<&str> {
    let segs: Vec<&str> = rel.split('/').collect();
    let is_group =
        |s: &str| s.contains('.') || matches!(s, "apps" | "batch" | "autoscaling" | "policy");
    match segs.as_slice() {
        // The lab's own bookkeeping (service IP reservations) is in no namespace.
        ["ranges", ..] => None,
        [first, ns, _] if !is_group(first) => Some(ns),
        [first, _, ns, _] if is_group(first) => Some(ns),
        _ => None,
    }
}

/// Update rules kube enforces generically enough for the lab: immutable ConfigMaps and
/// Secrets keep their data and stay immutable.
pub(super) fn validate_update(
    meta: &ResourceMeta,
    name: &str,
    cur: &Value,
    next: &Value,
) -> ApiResult<()> {
    if meta.group.is_empty() && meta.resource == "services" {
        let ip = |o: &Value| o.pointer("/spec/clusterIP").cloned();
        if let (Some(a), Some(b)) = (ip(cur), ip(next))
            && a != b
        {
            return Err(invalid(
                &meta.kind,
                name,
                vec![(
                    "spec.clusterIPs[0]".into(),
                    "FieldValueInvalid",
                    format!("Invalid value: {b}: may not change once set"),
                )],
            ));
        }
    }
    let immutable_kind =
        meta.group.is_empty() && matches!(meta.resource.as_str(), "configmaps" | "secrets");
    if !immutable_kind || cur.get("immutable") != Some(&Value::Bool(true)) {
        return Ok(());
    }
    const WHY: &str = "Forbidden: field is immutable when `immutable` is set";
    let mut causes = Vec::new();
    if next.get("immutable") != Some(&Value::Bool(true)) {
        causes.push((
            "immutable".to_string(),
            "FieldValueForbidden",
            WHY.to_string(),
        ));
    }
    for field in ["data", "binaryData", "stringData"] {
        if cur.get(field) != next.get(field) {
            causes.push((field.to_string(), "FieldValueForbidden", WHY.to_string()));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(&meta.kind, name, causes))
    }
}

/// `obj[key]` as a map, replacing whatever non-object was there (`obj` must be an object;
/// anything else is first turned into one). Never panics, unlike `obj[key][..] = ..`.
pub(super) fn object_field<'a>(obj: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let o = obj.as_object_mut().expect("made an object above");
    let slot = o.entry(key.to_string()).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut().expect("made an object above")
}

pub(super) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// kube-apiserver decodes bodies into typed structs, so a value of the wrong JSON type is a
/// 400. The lab checks what it relies on: the generic ObjectMeta fields, that `spec` and
/// `status` are objects, and ConfigMap/Secret data maps.
pub(super) fn check_shape(kind: &str, resource: &str, obj: &Value) -> ApiResult<()> {
    let bad = |path: &str, want: &str, got: &Value| {
        Status::new(
            400,
            "BadRequest",
            format!(
                "json: cannot unmarshal {} into Go struct field {kind}.{path} of type {want}",
                json_type(got)
            ),
        )
    };
    let Some(o) = obj.as_object() else {
        return Err(Status::new(
            400,
            "BadRequest",
            format!(
                "json: cannot unmarshal {} into Go value of type struct",
                json_type(obj)
            ),
        ));
    };
    let string_map = |v: &Value| {
        v.as_object()
            .is_some_and(|m| m.values().all(Value::is_string))
    };
    if let Some(m) = o.get("metadata").filter(|m| !m.is_null()) {
        let Some(m) = m.as_object() else {
            return Err(bad("metadata", "v1.ObjectMeta", m));
        };
        for f in [
            "name",
            "generateName",
            "namespace",
            "uid",
            "resourceVersion",
        ] {
            if let Some(v) = m.get(f).filter(|v| !v.is_null() && !v.is_string()) {
                return Err(bad(&format!("metadata.{f}"), "string", v));
            }
        }
        for f in ["labels", "annotations"] {
            if let Some(v) = m.get(f).filter(|v| !v.is_null() && !string_map(v)) {
                return Err(bad(&format!("metadata.{f}"), "map[string]string", v));
            }
        }
        if let Some(v) = m.get("finalizers").filter(|v| {
            !v.is_null() && !v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
        }) {
            return Err(bad("metadata.finalizers", "[]string", v));
        }
        if let Some(v) = m.get("ownerReferences").filter(|v| {
            !v.is_null() && !v.as_array().is_some_and(|a| a.iter().all(Value::is_object))
        }) {
            return Err(bad("metadata.ownerReferences", "[]v1.OwnerReference", v));
        }
    }
    for f in ["spec", "status"] {
        if let Some(v) = o.get(f).filter(|v| !v.is_null() && !v.is_object()) {
            return Err(bad(f, &format!("v1.{kind}{}", capitalize(f)), v));
        }
    }
    if matches!(resource, "configmaps" | "secrets") {
        for f in ["data", "binaryData", "stringData"] {
            if let Some(v) = o.get(f).filter(|v| !v.is_null() && !string_map(v)) {
                return Err(bad(f, "map[string]string", v));
            }
        }
    }
    Ok(())
}

pub(super) fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// Kinds whose DELETE answers with the deleted object rather than a `Status`
/// (kube-apiserver's `ReturnDeletedObject` registries).
pub(super) fn returns_deleted_object(resource: &str) -> bool {
    matches!(
        resource,
        "pods"
            | "services"
            | "namespaces"
            | "persistentvolumes"
            | "persistentvolumeclaims"
            | "customresourcedefinitions"
    )
}

/// Whether kube sets `metadata.generation` for this kind: anything with a `spec` except a
/// few core kinds whose strategies don't.
pub(super) fn tracks_generation(resource: &str, obj: &Value) -> bool {
    obj.get("spec").is_some()
        && !matches!(
            resource,
            "namespaces" | "services" | "nodes" | "persistentvolumes" | "persistentvolumeclaims"
        )
}

/// Server-populated fields of a new object.
pub(super) fn prepare_create(meta: &ResourceMeta, obj: &mut Value, name: &str, ns: Option<&str>) {
    let now = util::rfc3339(util::now_unix());
    let md = obj["metadata"]
        .as_object_mut()
        .map(std::mem::take)
        .unwrap_or_default();
    let mut m = md;
    m.insert("name".into(), json!(name));
    match ns {
        Some(ns) => {
            m.insert("namespace".into(), json!(ns));
        }
        None => {
            m.shift_remove("namespace");
        }
    }
    for k in [
        "resourceVersion",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
    ] {
        m.shift_remove(k);
    }
    m.insert("uid".into(), json!(util::new_uid()));
    m.insert("creationTimestamp".into(), json!(now));
    if tracks_generation(&meta.resource, obj) {
        m.insert("generation".into(), json!(1));
    } else {
        m.shift_remove("generation");
    }
    obj["metadata"] = Value::Object(m);
    if meta.group.is_empty() && meta.resource == "namespaces" {
        let md = object_field(obj, "metadata");
        if !md.get("labels").is_some_and(Value::is_object) {
            md.insert("labels".into(), json!({}));
        }
        if let Some(l) = md.get_mut("labels").and_then(Value::as_object_mut) {
            l.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
        let spec = object_field(obj, "spec");
        if !spec.contains_key("finalizers") {
            spec.insert("finalizers".into(), json!(["kubernetes"]));
        }
        obj["status"] = json!({"phase": "Active"});
    } else if meta.group.is_empty() && meta.resource == "pods" {
        let has_resources = obj
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.pointer("/resources/requests")
                        .is_some_and(|r| r.as_object().is_some_and(|o| !o.is_empty()))
                        || c.pointer("/resources/limits")
                            .is_some_and(|r| r.as_object().is_some_and(|o| !o.is_empty()))
                })
            });
        let qos = if has_resources {
            "Burstable"
        } else {
            "BestEffort"
        };
        obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        default_pod_spec(object_field(obj, "spec"));
    } else if meta.group.is_empty() && meta.resource == "secrets" {
        if obj
            .get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            obj["type"] = json!("Opaque");
        }
    } else if meta.subresources.iter().any(|s| s == "status") {
        obj["status"] = json!({});
    }
    *obj = canonical(std::mem::take(obj));
}

/// Keep what clients cannot change on update (uid, creationTimestamp, deletion marks,
/// namespace/name), bump `generation` when anything outside metadata/status changed.
pub(super) fn carry_system_fields(meta: &ResourceMeta, cur: &Value, next: &mut Value, name: &str) {
    if !next.get("metadata").is_some_and(Value::is_object) {
        next["metadata"] = json!({});
    }
    let cm = cur.get("metadata").cloned().unwrap_or(json!({}));
    // A Service update that omits its cluster IP keeps the allocated one, as kube does.
    if meta.group.is_empty() && meta.resource == "services" {
        let omitted = next
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if omitted && next.get("spec").is_some_and(Value::is_object) {
            for f in ["clusterIP", "clusterIPs"] {
                if let Some(v) = cur.pointer(&format!("/spec/{f}")) {
                    next["spec"][f] = v.clone();
                }
            }
        }
    }
    {
        let m = next["metadata"].as_object_mut().expect("metadata object");
        m.insert("name".into(), json!(name));
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "generation",
        ] {
            match cm.get(k) {
                Some(v) => {
                    m.insert(k.into(), v.clone());
                }
                None => {
                    m.shift_remove(k);
                }
            }
        }
        m.shift_remove("resourceVersion");
        m.shift_remove("managedFields");
        m.shift_remove("selfLink");
    }
    let spec_of = |v: &Value| {
        let mut o = v.as_object().cloned().unwrap_or_default();
        for k in ["metadata", "status", "kind", "apiVersion"] {
            o.shift_remove(k);
        }
        o
    };
    if let Some(g) = cm.get("generation").and_then(Value::as_i64)
        && spec_of(cur) != spec_of(next)
    {
        next["metadata"]["generation"] = json!(g + 1);
    }
    if let Some(o) = next.as_object_mut() {
        o.insert("kind".into(), json!(meta.kind));
        o.insert("apiVersion".into(), json!(meta.api_version()));
    }
    *next = canonical(std::mem::take(next));
}

/// kind, apiVersion, metadata first; metadata fields in kube's order.
pub(super) fn canonical(obj: Value) -> Value {
    let Value::Object(mut o) = obj else {
        return obj;
    };
    let mut out = Map::new();
    for k in ["kind", "apiVersion"] {
        if let Some(v) = o.shift_remove(k) {
            out.insert(k.into(), v);
        }
    }
    if let Some(Value::Object(mut m)) = o.shift_remove("metadata") {
        let mut mo = Map::new();
        for k in [
            "name",
            "generateName",
            "namespace",
            "selfLink",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "labels",
            "annotations",
            "ownerReferences",
            "finalizers",
            "managedFields",
        ] {
            if let Some(v) = m.shift_remove(k) {
                mo.insert(k.into(), v);
            }
        }
        mo.extend(m);
        out.insert("metadata".into(), Value::Object(mo));
    }
    out.extend(o);
    Value::Object(out)
}

/// The stored bytes: the object without resourceVersion.
pub(super) fn to_stored(obj: &Value) -> Vec<u8> {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.shift_remove("resourceVersion");
    }
    serde_json::to_vec(&o).expect("JSON values serialise")
}

/// A stored value read back as an object of the requested resource version.
pub(super) fn decode(
    meta: &ResourceMeta,
    key: &str,
    value: &[u8],
    rev: i64,
) -> Result<Value, StoreError> {
    let mut v: Value = serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })?;
    if !v.get("metadata").is_some_and(Value::is_object) {
        return Err(StoreError::Corrupt {
            key: key.to_string(),
            reason: "no metadata object".into(),
        });
    }
    set_rv(&mut v, rev);
    set_type(meta, &mut v);
    Ok(canonical(v))
}

pub(super) fn set_rv(obj: &mut Value, rev: i64) {
    obj["metadata"]["resourceVersion"] = json!(rev.to_string());
    let o = std::mem::take(obj);
    *obj = canonical(o);
}

pub(super) fn rv_of(obj: &Value) -> i64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Set `kind`/`apiVersion` to the requested version (no field conversion).
pub(super) fn set_type(meta: &ResourceMeta, obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        o.insert("kind".into(), json!(meta.kind));
        o.insert("apiVersion".into(), json!(meta.api_version()));
    }
    let o = std::mem::take(obj);
    *obj = canonical(o);
}

pub(super) fn strip_type(obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        o.shift_remove("kind");
        o.shift_remove("apiVersion");
    }
}

/// The first key after every key starting with `prefix`.
pub(super) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// One object in the negotiated format.
pub(super) fn present_one(meta: &ResourceMeta, obj: Value, rev: i64, out: Output) -> Value {
    match out.format {
        Format::Table { version, include } => table::table(
            version,
            &meta.resource,
            std::slice::from_ref(&obj),
            json!({"resourceVersion": rev.to_string()}),
            include,
            true,
        ),
        Format::Metadata => partial(&obj),
        _ => obj,
    }
}

pub(super) fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

/// A list in the negotiated format; `objs` carry kind/apiVersion.
pub(super) fn present_list(
    meta: &ResourceMeta,
    objs: Vec<Value>,
    metadata: Value,
    out: Output,
) -> Value {
    match out.format {
        Format::Table { version, include } => {
            table::table(version, &meta.resource, &objs, metadata, include, true)
        }
        Format::Metadata => {
            json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata, "items": objs.iter().map(partial).collect::<Vec<_>>()})
        }
        _ => {
            let items: Vec<Value> = objs
                .into_iter()
                .map(|mut o| {
                    strip_type(&mut o);
                    o
                })
                .collect();
            json!({"kind": format!("{}List", meta.kind), "apiVersion": meta.api_version(),
                "metadata": metadata, "items": items})
        }
    }
}

/// The autoscaling/v1 Scale view of an object with `spec.replicas`.
pub(super) fn scale_of(obj: &Value) -> Value {
    let md = obj.get("metadata").cloned().unwrap_or(json!({}));
    let mut m = Map::new();
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = md.get(k) {
            m.insert(k.into(), v.clone());
        }
    }
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": m,
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector}})
}

/// PodSpec fields in the Go struct's order (how kube-apiserver serialises them).
const POD_SPEC_ORDER: &[&str] = &[
    "volumes",
    "initContainers",
    "containers",
    "ephemeralContainers",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "dnsPolicy",
    "nodeSelector",
    "serviceAccountName",
    "serviceAccount",
    "automountServiceAccountToken",
    "nodeName",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "shareProcessNamespace",
    "securityContext",
    "imagePullSecrets",
    "hostname",
    "subdomain",
    "affinity",
    "schedulerName",
    "tolerations",
    "hostAliases",
    "priorityClassName",
    "priority",
    "dnsConfig",
    "readinessGates",
    "runtimeClassName",
    "enableServiceLinks",
    "preemptionPolicy",
    "overhead",
];

/// Container fields in the Go struct's order.
const CONTAINER_ORDER: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "ports",
    "envFrom",
    "env",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "volumeMounts",
    "volumeDevices",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "securityContext",
    "stdin",
    "stdinOnce",
    "tty",
];

fn ordered(m: &mut Map<String, Value>, order: &[&str]) {
    let mut out = Map::new();
    for k in order {
        if let Some(v) = m.shift_remove(*k) {
            out.insert((*k).to_string(), v);
        }
    }
    out.append(m);
    *m = out;
}

/// kube's image pull policy default: `Always` for `:latest` or untagged images.
fn default_pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else {
        match last.split_once(':') {
            Some((_, "latest")) | None => "Always",
            Some(_) => "IfNotPresent",
        }
    }
}

/// The PodSpec defaults kube-apiserver applies on create (scheme defaulting, the
/// ServiceAccount admission's `serviceAccountName`, DefaultTolerationSeconds). Not emulated:
/// the ServiceAccount token volume and its mounts (the lab has no token controller).
fn default_pod_spec(spec: &mut Map<String, Value>) {
    for field in ["initContainers", "containers"] {
        if let Some(cs) = spec.get_mut(field).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                c.entry("resources").or_insert_with(|| json!({}));
                c.entry("terminationMessagePath")
                    .or_insert_with(|| json!("/dev/termination-log"));
                c.entry("terminationMessagePolicy")
                    .or_insert_with(|| json!("File"));
                let image = c
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                c.entry("imagePullPolicy")
                    .or_insert_with(|| json!(default_pull_policy(&image)));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert_with(|| json!("TCP"));
                    }
                }
                ordered(c, CONTAINER_ORDER);
            }
        }
    }
    spec.entry("restartPolicy")
        .or_insert_with(|| json!("Always"));
    spec.entry("terminationGracePeriodSeconds")
        .or_insert_with(|| json!(30));
    spec.entry("dnsPolicy")
        .or_insert_with(|| json!("ClusterFirst"));
    let sa = spec
        .get("serviceAccountName")
        .or_else(|| spec.get("serviceAccount"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(sa));
    spec.insert("serviceAccount".into(), json!(sa));
    spec.entry("securityContext").or_insert_with(|| json!({}));
    spec.entry("schedulerName")
        .or_insert_with(|| json!("default-scheduler"));
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Some(ts) = tolerations.as_array_mut() {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            if !ts.iter().any(|t| t["key"] == json!(key)) {
                ts.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    spec.entry("priority").or_insert_with(|| json!(0));
    spec.entry("enableServiceLinks")
        .or_insert_with(|| json!(true));
    spec.entry("preemptionPolicy")
        .or_insert_with(|| json!("PreemptLowerPriority"));
    ordered(spec, POD_SPEC_ORDER);
}
