//! The lab apiserver's storage: kube-apiserver's resource semantics on one real etcd that
//! every lab apiserver of a lab cluster shares. All state lives in etcd (nothing in memory),
//! so an object written through one lab node is read and watched through any other.
//!
//! # Keys
//! - core group: `<prefix>/<resource>/<namespace>/<name>` or `<prefix>/<resource>/<name>`
//!   (as kube-apiserver: `/registry/pods/fx/p1`, `/registry/namespaces/fx`);
//! - other groups: `<prefix>/<group>/<resource>/...` (kube uses `/registry/<resource>` for
//!   most built-in groups too, e.g. `/registry/deployments`; the lab qualifies them with the
//!   group so that resources of different groups never share a key range).
//!
//! No core resource is named like a group (`apps`, `batch`, ... or contain a dot), so the two
//! forms cannot collide.
//!
//! # Values
//! The object as JSON, with `kind`/`apiVersion` of the writer and without
//! `metadata.resourceVersion` (which is always the etcd `mod_revision` of the key).
//! Objects are keyed by group/resource, not version: a read sets `apiVersion`/`kind` to the
//! version requested, without any field conversion (the lab's accepted gap: a v1beta2 and a
//! v1 client of `resource.k8s.io` see the same fields).
//!
//! # Namespaces
//! `default`, `kube-system`, `kube-public` and `kube-node-lease` are created on connect when
//! absent, each with a create-if-absent etcd transaction (race-free across lab processes).
//! Creating a namespaced object needs its namespace (404 as recorded); deleting a namespace
//! deletes everything in it before answering; `default`, `kube-system` and `kube-public`
//! cannot be deleted (403).
//!
//! # What is served
//! get, list (`limit`/`continue` with kube's token format, `resourceVersion` +
//! `resourceVersionMatch=Exact`, label selectors with `=`, `==`, `!=`, `in`, `notin`,
//! exists, `!`, `>`/`<`, field selectors with `=`/`==`/`!=` on any dotted path, 410 for
//! compacted revisions and expired tokens as recorded), watch (see `watch.rs`: initial events,
//! bookmarks, selectors, 410 ERROR event, timeoutSeconds, one chunk/frame per event), create
//! (uid, creationTimestamp, generation, generateName, namespace defaulting and mismatch,
//! 409/404/422 as recorded), update (resourceVersion preconditions → 409, optimistic retries
//! otherwise, generation bumps when anything outside metadata/status changes, no write when
//! nothing changes), patch (merge, strategic, JSON patch, server-side apply; 415 otherwise),
//! delete (Status Success or the object, as kube's registries do per kind; preconditions;
//! finalizers hold the object with a deletionTimestamp until removed), deletecollection,
//! `status` and `scale` subresources, `pods/log` (`follow`, `tailLines`, `container`),
//! `pods/exec|attach` (handed to the exec module), `?dryRun=All`, Table and
//! PartialObjectMetadata output, YAML, `?pretty` / curl-style pretty printing, and the
//! protobuf request bodies of kubectl's generators (see `proto.rs`). Create-only review
//! resources (access, rules, token reviews) are computed and never stored. Bodies are
//! checked for the JSON types the store relies on (400 like kube's unmarshal errors).
//!
//! # Accepted differences from kube-apiserver
//! - No field conversion between versions of one resource (see Values); no defaulting
//!   beyond what is listed here (pods get kube's PodSpec/container defaults, default
//!   tolerations, `serviceAccountName: default`, `status.phase`/`qosClass` but no
//!   ServiceAccount token volume; namespaces their finalizer/label/phase; secrets type
//!   `Opaque`); no per-type validation beyond names, ConfigMap/Secret keys and immutability;
//!   `fieldValidation` is ignored.
//! - `managedFields` are not tracked; server-side apply is a strategic merge of the applied
//!   configuration (no field ownership: fields dropped from a configuration stay, no
//!   conflicts between managers).
//! - Strategic merge uses a merge-key heuristic instead of Go struct tags (see `patch.rs`).
//! - Tables: pods, namespaces, configmaps, secrets, serviceaccounts, services and
//!   deployments print kube's columns; other resources get Name and Age instead of kube's
//!   per-type printers (pod restarts print without "(5m ago)").
//! - Responses are JSON (or YAML); a protobuf-only Accept gets 406 (kube would answer
//!   protobuf). Protobuf request bodies are decoded only for Namespace, ConfigMap, Secret and
//!   ServiceAccount; other kinds get 415.
//! - Deletion is immediate (no graceful pod termination, no `Terminating` namespace phase;
//!   the namespace's content is deleted synchronously); no garbage collection of dependents.
//! - No watch cache: `resourceVersion=0` reads are as consistent as quorum reads, lists with
//!   `limit` always paginate, and a resourceVersion newer than etcd's waits (watch) or
//!   answers 504 (list).
//! - No admission (quotas, limit ranges, service account tokens). Services get kube's
//!   defaults and a cluster IP from 10.96.0.0/16, reserved in etcd (see `service.rs`); no
//!   node ports, load balancers or dual stack.
//! - Access reviews answer `allowed: true` for any non-anonymous subject: the store does
//!   not evaluate RBAC (the HTTP layer's authorization decides what reaches it).
#![allow(
    clippy::result_large_err,
    reason = "a Status error is the cold path that becomes the HTTP response; boxing it buys nothing"
)]

mod error;
mod format;
mod object;
mod patch;
mod proto;
mod query;
mod request;
mod service;
mod table;
mod util;
mod watch;

use std::pin::Pin;

use bytes::Bytes;
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};

pub use error::StoreError;
pub use format::{Format, Output};
pub use patch::{PatchError, json_patch, merge_patch, strategic_merge_patch};
pub use query::{ContinueToken, FieldSelector, LabelSelector, Query};

use super::status::{Status, qualified};
use super::types::{LabResponse, ResourceHandler, ResourceMeta, ResourceRequest, Verb};
use object::*;
use request::*;

/// Largest request body accepted (kube-apiserver's limit for JSON bodies is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;
/// Attempts of an optimistic-concurrency update loop before giving up.
const MAX_ATTEMPTS: u32 = 16;
/// Namespaces that always exist.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// The etcd-backed lab store; cheap to clone (one gRPC channel).
#[derive(Clone)]
pub struct Store {
    client: etcd_client::Client,
    prefix: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .finish()
    }
}

type ApiResult<T> = Result<T, Status>;

/// A stored object read back: the object (rv set) and its etcd mod revision.
struct Current {
    obj: Value,
    rev: i64,
}

impl Store {
    /// Connect to etcd and make sure the system namespaces exist. `prefix` is the key prefix
    /// (kube-apiserver's default is `/registry`).
    pub async fn connect(etcd_endpoints: Vec<String>, prefix: String) -> Result<Store, StoreError> {
        let client = etcd_client::Client::connect(&etcd_endpoints, None)
            .await
            .map_err(|source| StoreError::Connect {
                endpoints: etcd_endpoints.clone(),
                source,
            })?;
        let prefix = format!("/{}", prefix.trim_matches('/'));
        let store = Store { client, prefix };
        for ns in SYSTEM_NAMESPACES {
            store.ensure_namespace(ns).await?;
        }
        Ok(store)
    }

    /// The key prefix (normalised: leading `/`, no trailing `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Create namespace `name` if it does not exist (one etcd txn; safe under races).
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), StoreError> {
        let key = format!("{}/namespaces/{name}", self.prefix);
        let mut obj = json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": name}});
        prepare_create(&namespaces_meta(), &mut obj, name, None);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), to_stored(&obj), None)]);
        self.client
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| StoreError::etcd("txn", &key, e))?;
        Ok(())
    }

    /// The collection key (no trailing `/`), e.g. `/registry/configmaps`.
    pub fn collection_key(&self, meta: &ResourceMeta) -> String {
        if meta.group.is_empty() {
            format!("{}/{}", self.prefix, meta.resource)
        } else {
            format!("{}/{}/{}", self.prefix, meta.group, meta.resource)
        }
    }

    /// The key of one object.
    pub fn object_key(&self, meta: &ResourceMeta, namespace: Option<&str>, name: &str) -> String {
        match namespace.filter(|_| meta.namespaced) {
            Some(ns) => format!("{}/{ns}/{name}", self.collection_key(meta)),
            None => format!("{}/{name}", self.collection_key(meta)),
        }
    }

    /// The list prefix without trailing `/` (a namespace's or the whole collection).
    fn list_key(&self, meta: &ResourceMeta, namespace: Option<&str>) -> String {
        match namespace.filter(|_| meta.namespaced) {
            Some(ns) => format!("{}/{ns}", self.collection_key(meta)),
            None => self.collection_key(meta),
        }
    }

    async fn read(&self, meta: &ResourceMeta, key: &str) -> ApiResult<Option<Current>> {
        let mut resp = self
            .client
            .kv_client()
            .get(key, None)
            .await
            .map_err(|e| StoreError::etcd("get", key, e))?;
        match resp.take_kvs().into_iter().next() {
            None => Ok(None),
            Some(kv) => Ok(Some(Current {
                obj: decode(meta, key, kv.value(), kv.mod_revision())?,
                rev: kv.mod_revision(),
            })),
        }
    }

    async fn namespace_exists(&self, ns: &str) -> ApiResult<bool> {
        let key = format!("{}/namespaces/{ns}", self.prefix);
        let resp = self
            .client
            .kv_client()
            .get(key.as_str(), Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| StoreError::etcd("get", &key, e))?;
        Ok(resp.count() > 0)
    }

    async fn serve(
        &self,
        req: ResourceRequest,
        http: http::Request<hyper::body::Incoming>,
    ) -> LabResponse {
        if req.verb == Verb::Connect
            && matches!(req.subresource.as_deref(), Some("exec" | "attach"))
        {
            return self.connect_exec(req, http).await;
        }
        // Read the whole body before answering anything, even answers that do not use it:
        // an HTTP/2 answer sent while the client is still uploading resets the stream.
        let (parts, body) = match read_body(http).await {
            Ok(pb) => pb,
            Err(s) => {
                return Output {
                    format: Format::Json,
                    pretty: false,
                }
                .status(&s);
            }
        };
        let query = Query::parse(parts.uri.query());
        let out = match Output::negotiate(&parts.headers, query.get("pretty")) {
            Ok(o) => o,
            Err(s) => {
                return Output {
                    format: Format::Json,
                    pretty: true,
                }
                .status(&s);
            }
        };
        let sub = req.subresource.clone();
        // `?dryRun=All`: everything is checked, nothing is written.
        let dry_run = query.get("dryRun").is_some();
        let is_watch = req.verb == Verb::Watch
            || (matches!(req.verb, Verb::List | Verb::Get) && query.flag("watch"));
        let result = match (req.verb, sub.as_deref()) {
            (Verb::Get, Some("log")) => return self.log(&req, &query, out).await,
            _ if is_watch => return watch::watch(self, &req, &query, out).await,
            (Verb::Get, None | Some("status")) => self.get(&req, out).await,
            (Verb::Get, Some("scale")) => self.get_scale(&req).await.map(|v| (200, v)),
            (Verb::List, None) => self.list(&req, &query, out).await,
            (Verb::Create, None) if is_virtual(&req.meta) => review(&req, &parts, &body),
            (Verb::Create, None) => self.create(&req, &parts, &body, dry_run).await,
            (Verb::Update | Verb::Patch, None | Some("status") | Some("scale")) => {
                self.update_or_patch(&req, &parts, &body, dry_run).await
            }
            (Verb::Delete, None) => self.delete(&req, &body, dry_run).await,
            (Verb::DeleteCollection, None) => self.delete_collection(&req, &query).await,
            (verb, sub) => Err(Status::new(
                405,
                "MethodNotAllowed",
                format!(
                    "the lab apiserver does not implement {verb:?} on {}{}",
                    qualified(&req.meta.group, &req.meta.resource),
                    sub.map(|s| format!("/{s}")).unwrap_or_default()
                ),
            )
            .with_details(json!({}))),
        };
        match result {
            Ok((code, v)) => out.respond(code, &v),
            Err(s) => out.status(&s),
        }
    }

    async fn get(&self, req: &ResourceRequest, out: Output) -> ApiResult<(u16, Value)> {
        let name = required_name(req)?;
        let key = self.object_key(&req.meta, req.namespace.as_deref(), name);
        let cur = self
            .read(&req.meta, &key)
            .await?
            .ok_or_else(|| not_found(&req.meta, name))?;
        Ok((200, present_one(&req.meta, cur.obj, cur.rev, out)))
    }

    async fn list(
        &self,
        req: &ResourceRequest,
        query: &Query,
        out: Output,
    ) -> ApiResult<(u16, Value)> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
        let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))?;
        let limit = query.int("limit")?.filter(|l| *l > 0);
        let base = self.list_key(&req.meta, req.namespace.as_deref());
        let range_end = prefix_end(&format!("{base}/"));
        let token = query
            .get("continue")
            .map(ContinueToken::decode)
            .transpose()?;
        let (mut read_rev, mut start) = match &token {
            Some(t) => {
                let s = if t.start.starts_with('/') {
                    t.start.clone()
                } else {
                    format!("/{}", t.start)
                };
                (t.rv.max(0), format!("{base}{s}"))
            }
            None => {
                let rv = match query.get("resourceVersion") {
                    Some(v) => v.parse::<i64>().map_err(|_| bad_rv(v))?,
                    None => 0,
                };
                let exact = query.get("resourceVersionMatch") == Some("Exact") && rv > 0;
                (if exact { rv } else { 0 }, format!("{base}/"))
            }
        };
        let mut items: Vec<(String, Value)> = Vec::new();
        let mut remaining: Option<i64> = None;
        let mut next: Option<String> = None;
        loop {
            let want = limit.map(|l| l - items.len() as i64).unwrap_or(0);
            let mut opts = GetOptions::new()
                .with_range(range_end.clone())
                .with_revision(read_rev);
            if want > 0 {
                opts = opts.with_limit(want);
            }
            let resp = match self
                .client
                .kv_client()
                .get(start.as_str(), Some(opts))
                .await
            {
                Ok(r) => r,
                Err(e) if error::is_compacted(&e) => {
                    return match &token {
                        Some(t) => Ok((410, expired_continue(t))),
                        None => Err(StoreError::Compacted {
                            key: base.clone(),
                            requested: Some(read_rev),
                        }
                        .to_status()),
                    };
                }
                Err(e) if e.to_string().contains("future revision") => {
                    return Err(Status::new(
                        504,
                        "Timeout",
                        format!("Too large resource version: {read_rev}, current: unknown"),
                    )
                    .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1})));
                }
                Err(e) => return Err(StoreError::etcd("range", &start, e).into()),
            };
            if read_rev == 0 {
                read_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            let kvs = resp.kvs();
            for kv in kvs {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let obj = decode(&req.meta, &key, kv.value(), kv.mod_revision())?;
                if labels.matches(&obj) && fields.matches(&obj) {
                    items.push((key, obj));
                }
            }
            let full = limit.is_some_and(|l| items.len() as i64 >= l);
            if full && resp.more() {
                let last = items.last().map(|(k, _)| k.clone()).unwrap_or_default();
                next = Some(format!("{}\u{0}", &last[base.len()..]));
                if labels.is_empty() && fields.is_empty() {
                    remaining = Some(resp.count() - kvs.len() as i64);
                }
                break;
            }
            if !resp.more() || limit.is_none() {
                break;
            }
            let last = kvs.last().map(|kv| kv.key().to_vec()).unwrap_or_default();
            start = format!("{}\u{0}", String::from_utf8_lossy(&last));
        }
        let mut metadata = Map::new();
        metadata.insert("resourceVersion".into(), json!(read_rev.to_string()));
        if let Some(n) = next {
            metadata.insert(
                "continue".into(),
                json!(ContinueToken::new(read_rev, n).encode()),
            );
            if let Some(r) = remaining {
                metadata.insert("remainingItemCount".into(), json!(r));
            }
        }
        let objs: Vec<Value> = items
            .into_iter()
            .map(|(_, mut o)| {
                set_type(&req.meta, &mut o);
                o
            })
            .collect();
        Ok((
            200,
            present_list(&req.meta, objs, Value::Object(metadata), out),
        ))
    }

    async fn create(
        &self,
        req: &ResourceRequest,
        parts: &http::request::Parts,
        body: &Bytes,
        dry_run: bool,
    ) -> ApiResult<(u16, Value)> {
        let obj = decode_body(parts, body, &req.meta)?;
        self.create_object(req, obj, dry_run).await
    }

    /// Create `obj` (already decoded) as kube-apiserver's create handler does.
    async fn create_object(
        &self,
        req: &ResourceRequest,
        mut obj: Value,
        dry_run: bool,
    ) -> ApiResult<(u16, Value)> {
        let meta = &req.meta;
        let ns = if meta.namespaced {
            let path_ns = req.namespace.clone().unwrap_or_else(|| "default".into());
            match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
                Some(b) if !b.is_empty() && b != path_ns => {
                    return Err(Status::new(
                        400,
                        "BadRequest",
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => Some(path_ns),
            }
        } else {
            None
        };
        let md = obj["metadata"].as_object().cloned().unwrap_or_default();
        let name = match (
            md.get("name").and_then(Value::as_str),
            md.get("generateName").and_then(Value::as_str),
        ) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(g)) if !g.is_empty() => util::generate_name(g),
            _ => {
                return Err(invalid(
                    &meta.kind,
                    "",
                    vec![(
                        "metadata.name".into(),
                        "FieldValueRequired",
                        "Required value: name or generateName is required".into(),
                    )],
                ));
            }
        };
        validate(meta, &name, &obj)?;
        if let Some(ns) = &ns
            && !self.namespace_exists(ns).await?
        {
            return Err(not_found(&namespaces_meta(), ns));
        }
        prepare_create(meta, &mut obj, &name, ns.as_deref());
        let key = self.object_key(meta, ns.as_deref(), &name);
        let is_service = meta.group.is_empty() && meta.resource == "services";
        // Services reserve their cluster IP in the same transaction (see service.rs).
        let wanted_ip = if is_service {
            service::requested_ip(&obj).ok()
        } else {
            None
        };
        for _ in 0..MAX_ATTEMPTS {
            let ip = match &wanted_ip {
                Some(Some(explicit)) => Some(explicit.clone()),
                Some(None) => Some(service::random_ip()),
                None => None,
            };
            if is_service {
                service::default_service(&mut obj, ip.as_deref());
            }
            let mut cmps = vec![Compare::create_revision(key.as_str(), CompareOp::Equal, 0)];
            let mut writes = vec![TxnOp::put(key.as_str(), to_stored(&obj), None)];
            if let Some(ip) = &ip {
                let ik = service::ip_key(&self.prefix, ip);
                cmps.push(Compare::create_revision(ik.as_str(), CompareOp::Equal, 0));
                writes.push(TxnOp::put(ik.as_str(), key.as_str(), None));
            }
            let txn = Txn::new()
                .when(cmps)
                .and_then(if dry_run { vec![] } else { writes });
            let resp = self
                .client
                .kv_client()
                .txn(txn)
                .await
                .map_err(|e| StoreError::etcd("txn", &key, e))?;
            if resp.succeeded() {
                let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                set_rv(&mut obj, rev);
                set_type(meta, &mut obj);
                return Ok((201, obj));
            }
            if self.read(meta, &key).await?.is_some() {
                return Err(Status::new(
                    409,
                    "AlreadyExists",
                    format!(
                        "{} \"{name}\" already exists",
                        qualified(&meta.group, &meta.resource)
                    ),
                )
                .with_details(details(meta, &name)));
            }
            // The IP is reserved: reclaim it when its Service is gone, else try another.
            if let Some(ip) = &ip {
                let reclaimed = self.reclaim_ip(ip).await?;
                if !reclaimed && matches!(wanted_ip, Some(Some(_))) {
                    return Err(invalid(
                        &meta.kind,
                        &name,
                        vec![(
                            "spec.clusterIPs".into(),
                            "FieldValueInvalid",
                            format!(
                                "Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: provided IP is already allocated"
                            ),
                        )],
                    ));
                }
            }
        }
        Err(StoreError::TooManyConflicts {
            key,
            attempts: MAX_ATTEMPTS,
        }
        .into())
    }

    /// Drop the reservation of `ip` if the Service holding it no longer exists.
    async fn reclaim_ip(&self, ip: &str) -> ApiResult<bool> {
        let ik = service::ip_key(&self.prefix, ip);
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(ik.as_str(), None)
            .await
            .map_err(|e| StoreError::etcd("get", &ik, e))?;
        let Some(res) = resp.kvs().first() else {
            return Ok(true);
        };
        let owner = res.value().to_vec();
        let owner_exists = kv
            .get(owner.clone(), Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| StoreError::etcd("get", &ik, e))?
            .count()
            > 0;
        if owner_exists {
            return Ok(false);
        }
        let txn = Txn::new()
            .when([Compare::value(ik.as_str(), CompareOp::Equal, owner)])
            .and_then([TxnOp::delete(ik.as_str(), None)]);
        kv.txn(txn)
            .await
            .map_err(|e| StoreError::etcd("txn", &ik, e))?;
        Ok(true)
    }

    /// PUT and PATCH, on the object or its `status`/`scale` subresource.
    async fn update_or_patch(
        &self,
        req: &ResourceRequest,
        parts: &http::request::Parts,
        body: &Bytes,
        dry_run: bool,
    ) -> ApiResult<(u16, Value)> {
        let meta = &req.meta;
        let name = required_name(req)?.to_string();
        let key = self.object_key(meta, req.namespace.as_deref(), &name);
        let sub = req.subresource.as_deref();
        let has_status = meta.subresources.iter().any(|s| s == "status");
        enum Change {
            Put(Value),
            Patch(PatchKind, Value),
        }
        let change = if req.verb == Verb::Patch {
            let kind = PatchKind::from_headers(&parts.headers)?;
            let p = if kind == PatchKind::Apply {
                // Server-side apply: a full object in YAML (or JSON, which is YAML).
                let v: Value = serde_yaml::from_slice(body).map_err(|e| {
                    Status::new(400, "BadRequest", format!("error decoding YAML: {e}"))
                })?;
                if !v.is_object() {
                    return Err(Status::new(
                        400,
                        "BadRequest",
                        "error decoding YAML: the apply configuration is not an object",
                    ));
                }
                check_shape(&meta.kind, &meta.resource, &v)?;
                v
            } else {
                serde_json::from_slice::<Value>(body).map_err(|e| {
                    Status::new(400, "BadRequest", format!("error decoding patch: {e}"))
                })?
            };
            Change::Patch(kind, p)
        } else {
            let obj = decode_body(parts, body, meta)?;
            if sub != Some("scale") {
                if let Some(n) = obj.pointer("/metadata/name").and_then(Value::as_str)
                    && n != name
                {
                    return Err(Status::new(
                        400,
                        "BadRequest",
                        format!(
                            "the name of the object ({n}) does not match the name on the URL ({name})"
                        ),
                    ));
                }
                if let (Some(n), Some(ns)) = (
                    obj.pointer("/metadata/namespace").and_then(Value::as_str),
                    req.namespace.as_deref(),
                ) && !n.is_empty()
                    && n != ns
                    && meta.namespaced
                {
                    return Err(Status::new(
                        400,
                        "BadRequest",
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
            Change::Put(obj)
        };
        let apply_config = match &change {
            Change::Patch(PatchKind::Apply, p) if sub.is_none() => Some(p.clone()),
            _ => None,
        };
        let updated = self
            .guaranteed_update(meta, &key, &name, dry_run, |cur| {
                // The object the change applies to: the object itself or its Scale view.
                let base = if sub == Some("scale") {
                    scale_of(cur)
                } else {
                    cur.clone()
                };
                let mut next = match &change {
                    Change::Put(o) => o.clone(),
                    Change::Patch(kind, p) => kind.apply(base.clone(), p)?,
                };
                check_shape(&meta.kind, &meta.resource, &next)?;
                // Precondition: a resourceVersion in the new object must match.
                let precondition = match next.pointer("/metadata/resourceVersion") {
                    Some(Value::String(s)) if !s.is_empty() => {
                        Some(s.parse::<i64>().map_err(|_| bad_rv(s))?)
                    }
                    _ => None,
                };
                let cur_rv = rv_of(cur);
                if precondition.is_some_and(|p| p != cur_rv) {
                    return Err(conflict(meta, &name));
                }
                match sub {
                    Some("status") => {
                        let mut o = cur.clone();
                        o["status"] = next.get("status").cloned().unwrap_or(json!({}));
                        Ok(o)
                    }
                    Some("scale") => {
                        let replicas = next.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
                        let mut o = cur.clone();
                        object_field(&mut o, "spec").insert("replicas".into(), replicas);
                        Ok(o)
                    }
                    _ => {
                        if has_status {
                            match cur.get("status") {
                                Some(s) => next["status"] = s.clone(),
                                None => {
                                    if let Some(o) = next.as_object_mut() {
                                        o.shift_remove("status");
                                    }
                                }
                            }
                        }
                        Ok(next)
                    }
                }
            })
            .await;
        let updated = match (updated, apply_config) {
            // Server-side apply of an object that does not exist creates it.
            (Err(s), Some(mut obj)) if s.code == 404 && s.reason == "NotFound" => {
                if obj.pointer("/metadata/name").is_none() {
                    obj["metadata"]["name"] = json!(name);
                }
                return self.create_object(req, obj, dry_run).await;
            }
            (r, _) => r?,
        };
        let out = if sub == Some("scale") {
            scale_of(&updated)
        } else {
            updated
        };
        Ok((200, out))
    }

    /// Read-modify-write with optimistic concurrency: `mutate` gets the current object
    /// (rv set) and returns the desired one; system metadata is carried over. Retries on
    /// concurrent writes; a resourceVersion precondition failing is the closure's 409.
    async fn guaranteed_update(
        &self,
        meta: &ResourceMeta,
        key: &str,
        name: &str,
        dry_run: bool,
        mut mutate: impl FnMut(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Value> {
        for _ in 0..MAX_ATTEMPTS {
            let cur = self
                .read(meta, key)
                .await?
                .ok_or_else(|| not_found(meta, name))?;
            let mut next = mutate(&cur.obj)?;
            if !next.is_object() {
                return Err(Status::new(
                    400,
                    "BadRequest",
                    "the object must be a JSON object",
                ));
            }
            check_shape(&meta.kind, &meta.resource, &next)?;
            carry_system_fields(meta, &cur.obj, &mut next, name);
            validate(meta, name, &next)?;
            validate_update(meta, name, &cur.obj, &next)?;
            if to_stored(&next) == to_stored(&cur.obj) {
                let mut o = cur.obj;
                set_type(meta, &mut o);
                return Ok(o);
            }
            let finalized = next.pointer("/metadata/deletionTimestamp").is_some()
                && next
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
            let op = if finalized {
                TxnOp::delete(key, None)
            } else {
                TxnOp::put(key, to_stored(&next), None)
            };
            let txn = Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, cur.rev)])
                .and_then(ops(dry_run, op));
            let resp = self
                .client
                .kv_client()
                .txn(txn)
                .await
                .map_err(|e| StoreError::etcd("txn", key, e))?;
            if resp.succeeded() {
                set_rv(&mut next, resp.header().map(|h| h.revision()).unwrap_or(0));
                set_type(meta, &mut next);
                return Ok(next);
            }
        }
        Err(StoreError::TooManyConflicts {
            key: key.to_string(),
            attempts: MAX_ATTEMPTS,
        }
        .into())
    }

    async fn delete(
        &self,
        req: &ResourceRequest,
        body: &Bytes,
        dry_run: bool,
    ) -> ApiResult<(u16, Value)> {
        let meta = &req.meta;
        let name = required_name(req)?.to_string();
        let key = self.object_key(meta, req.namespace.as_deref(), &name);
        let opts: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body).map_err(|e| {
                Status::new(
                    400,
                    "BadRequest",
                    format!("error decoding DeleteOptions: {e}"),
                )
            })?
        };
        if meta.group.is_empty()
            && meta.resource == "namespaces"
            && matches!(name.as_str(), "default" | "kube-system" | "kube-public")
        {
            return Err(Status::new(
                403,
                "Forbidden",
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
            )
            .with_details(details(meta, &name)));
        }
        let pre_uid = opts.pointer("/preconditions/uid").and_then(Value::as_str);
        let pre_rv = opts
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str);
        for _ in 0..MAX_ATTEMPTS {
            let cur = self
                .read(meta, &key)
                .await?
                .ok_or_else(|| not_found(meta, &name))?;
            let uid = cur
                .obj
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let Some(p) = pre_uid.filter(|p| *p != uid) {
                return Err(conflict_msg(
                    meta,
                    &name,
                    &format!(
                        "Precondition failed: UID in precondition: {p}, UID in object meta: {uid}"
                    ),
                ));
            }
            if let Some(p) = pre_rv.filter(|p| *p != cur.rev.to_string()) {
                return Err(conflict_msg(
                    meta,
                    &name,
                    &format!(
                        "the ResourceVersion in the precondition ({p}) does not match the ResourceVersion in record ({}). The object might have been modified",
                        cur.rev
                    ),
                ));
            }
            let has_finalizers = cur
                .obj
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
            let now = util::rfc3339(util::now_unix());
            if has_finalizers {
                // Finalizers pending: mark for deletion; the object goes when they are removed.
                if cur.obj.pointer("/metadata/deletionTimestamp").is_some() {
                    let mut o = cur.obj;
                    set_type(meta, &mut o);
                    return Ok((200, o));
                }
                let mut next = cur.obj.clone();
                next["metadata"]["deletionTimestamp"] = json!(now);
                next["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        cur.rev,
                    )])
                    .and_then(ops(
                        dry_run,
                        TxnOp::put(key.as_str(), to_stored(&canonical(next.clone())), None),
                    ));
                let resp = self
                    .client
                    .kv_client()
                    .txn(txn)
                    .await
                    .map_err(|e| StoreError::etcd("txn", &key, e))?;
                if resp.succeeded() {
                    set_rv(&mut next, resp.header().map(|h| h.revision()).unwrap_or(0));
                    set_type(meta, &mut next);
                    return Ok((200, canonical(next)));
                }
                continue;
            }
            // A Service's cluster IP reservation goes with it.
            let mut deletes = vec![TxnOp::delete(key.as_str(), None)];
            if meta.group.is_empty()
                && meta.resource == "services"
                && let Ok(Some(ip)) = service::requested_ip(&cur.obj)
            {
                deletes.push(TxnOp::delete(service::ip_key(&self.prefix, &ip), None));
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    cur.rev,
                )])
                .and_then(if dry_run { vec![] } else { deletes });
            let resp = self
                .client
                .kv_client()
                .txn(txn)
                .await
                .map_err(|e| StoreError::etcd("txn", &key, e))?;
            if !resp.succeeded() {
                continue;
            }
            let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            if meta.group.is_empty() && meta.resource == "namespaces" && !dry_run {
                self.delete_namespace_contents(&name).await?;
            }
            if returns_deleted_object(&meta.resource) {
                let mut o = cur.obj;
                set_rv(&mut o, rev);
                o["metadata"]["deletionTimestamp"] = json!(now);
                o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                if meta.resource == "pods" {
                    let g = o
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    o["metadata"]["generation"] = json!(g + 1);
                }
                if meta.resource == "namespaces" {
                    object_field(&mut o, "status").insert("phase".into(), json!("Terminating"));
                }
                set_type(meta, &mut o);
                return Ok((200, canonical(o)));
            }
            let mut d = details(meta, &name);
            d["uid"] = json!(uid);
            return Ok((
                200,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d}),
            ));
        }
        Err(StoreError::TooManyConflicts {
            key,
            attempts: MAX_ATTEMPTS,
        }
        .into())
    }

    /// What kube's namespace controller does after a namespace is deleted: remove every
    /// namespaced object in it (all resources, all groups). The lab does it synchronously,
    /// before answering the DELETE, instead of through a `Terminating` phase.
    async fn delete_namespace_contents(&self, ns: &str) -> ApiResult<()> {
        let base = format!("{}/", self.prefix);
        let resp = self
            .client
            .kv_client()
            .get(
                base.as_str(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .map_err(|e| StoreError::etcd("range", &base, e))?;
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            if namespace_of_key(&key[base.len()..]) != Some(ns) {
                continue;
            }
            self.client
                .kv_client()
                .delete(key.as_str(), None)
                .await
                .map_err(|e| StoreError::etcd("delete", &key, e))?;
        }
        Ok(())
    }

    async fn delete_collection(
        &self,
        req: &ResourceRequest,
        query: &Query,
    ) -> ApiResult<(u16, Value)> {
        let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
        let fields = FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))?;
        let dry_run = query.get("dryRun").is_some();
        let base = format!("{}/", self.list_key(&req.meta, req.namespace.as_deref()));
        let resp = self
            .client
            .kv_client()
            .get(base.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| StoreError::etcd("range", &base, e))?;
        let mut deleted = Vec::new();
        let mut last_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let obj = decode(&req.meta, &key, kv.value(), kv.mod_revision())?;
            if !(labels.matches(&obj) && fields.matches(&obj)) {
                continue;
            }
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then(ops(dry_run, TxnOp::delete(key.as_str(), None)));
            let r = self
                .client
                .kv_client()
                .txn(txn)
                .await
                .map_err(|e| StoreError::etcd("txn", &key, e))?;
            // A concurrent writer won: that object is not deleted by this call (as if it
            // had been created after the list).
            if r.succeeded() {
                last_rev = r.header().map(|h| h.revision()).unwrap_or(last_rev);
                let mut o = obj;
                strip_type(&mut o);
                deleted.push(o);
            }
        }
        Ok((
            200,
            json!({"kind": format!("{}List", req.meta.kind), "apiVersion": req.meta.api_version(),
                "metadata": {"resourceVersion": last_rev.to_string()}, "items": deleted}),
        ))
    }

    async fn get_scale(&self, req: &ResourceRequest) -> ApiResult<Value> {
        let name = required_name(req)?;
        let key = self.object_key(&req.meta, req.namespace.as_deref(), name);
        let cur = self
            .read(&req.meta, &key)
            .await?
            .ok_or_else(|| not_found(&req.meta, name))?;
        Ok(scale_of(&cur.obj))
    }

    /// `pods/log`: a few synthetic lines; `?follow=true` streams one more line per second
    /// until the client goes away.
    async fn log(&self, req: &ResourceRequest, query: &Query, out: Output) -> LabResponse {
        let name = match required_name(req) {
            Ok(n) => n.to_string(),
            Err(s) => return out.status(&s),
        };
        let key = self.object_key(&req.meta, req.namespace.as_deref(), &name);
        let pod = match self.read(&req.meta, &key).await {
            Ok(Some(c)) => c.obj,
            Ok(None) => return out.status(&not_found(&req.meta, &name)),
            Err(s) => return out.status(&s),
        };
        let containers: Vec<String> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let container = match query.get("container") {
            Some(c) if containers.iter().any(|x| x == c) => c.to_string(),
            Some(c) => {
                return out.status(&Status::new(
                    400,
                    "BadRequest",
                    format!("container {c} is not valid for pod {name}"),
                ));
            }
            None if containers.len() <= 1 => containers.first().cloned().unwrap_or_default(),
            None => {
                return out.status(&Status::new(
                    400,
                    "BadRequest",
                    format!(
                        "a container name must be specified for pod {name}, choose one of: [{}]",
                        containers.join(" ")
                    ),
                ));
            }
        };
        let ns = req.namespace.clone().unwrap_or_default();
        let line = move |i: u64| {
            Bytes::from(format!(
                "{} lab log line {i} of pod {ns}/{name} container {container}\n",
                util::rfc3339(util::now_unix())
            ))
        };
        let mut first: Vec<Bytes> = (1..=3).map(&line).collect();
        if let Some(t) = query.int("tailLines").ok().flatten() {
            let skip = first.len().saturating_sub(t.max(0) as usize);
            first.drain(..skip);
        }
        if !query.flag("follow") {
            let body: Vec<u8> = first.concat();
            return format::response(200, "text/plain", body);
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            for b in first {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
            let mut i = 4;
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tick.tick() => {}
                }
                if tx.send(line(i)).await.is_err() {
                    return;
                }
                i += 1;
            }
        });
        watch::stream_response("text/plain", rx)
    }
}

impl ResourceHandler for Store {
    fn handle(
        &self,
        req: ResourceRequest,
        http: http::Request<hyper::body::Incoming>,
    ) -> Pin<Box<dyn std::future::Future<Output = LabResponse> + Send + '_>> {
        Box::pin(self.serve(req, http))
    }
}

impl Store {
    /// pods/exec and pods/attach: the pod must exist and the container be one of its own (or
    /// the only one), as kube-apiserver checks; then the exec module takes the upgrade.
    async fn connect_exec(
        &self,
        req: ResourceRequest,
        http: http::Request<hyper::body::Incoming>,
    ) -> LabResponse {
        let name = match required_name(&req) {
            Ok(name) => name.to_string(),
            Err(s) => return s.response(),
        };
        let key = self.object_key(&req.meta, req.namespace.as_deref(), &name);
        let pod = match self.read(&req.meta, &key).await {
            Ok(Some(cur)) => cur.obj,
            Ok(None) => return not_found(&req.meta, &name).response(),
            Err(s) => return s.response(),
        };
        let container = Query::parse(http.uri().query())
            .get("container")
            .map(str::to_string);
        if let Err(s) = check_container(&pod, &name, container.as_deref()) {
            return s.response();
        }
        super::exec::serve(req, http).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_of_keys() {
        assert_eq!(namespace_of_key("configmaps/fx/a"), Some("fx"));
        assert_eq!(namespace_of_key("apps/deployments/fx/d"), Some("fx"));
        assert_eq!(namespace_of_key("example.com/widgets/fx/w"), Some("fx"));
        assert_eq!(namespace_of_key("namespaces/fx"), None);
        assert_eq!(namespace_of_key("ranges/serviceips/10.96.0.1"), None);
        assert_eq!(namespace_of_key("resource.k8s.io/deviceclasses/gpu"), None);
    }

    #[test]
    fn prefix_end_is_exclusive_upper_bound() {
        assert_eq!(prefix_end("/r/cm/"), b"/r/cm0".to_vec());
    }

    #[test]
    fn invalid_matches_recorded_shape() {
        let s = invalid(
            "ConfigMap",
            "",
            vec![(
                "metadata.name".into(),
                "FieldValueRequired",
                "Required value: name or generateName is required".into(),
            )],
        );
        assert_eq!(
            s.message,
            "ConfigMap \"\" is invalid: metadata.name: Required value: name or generateName is required"
        );
        assert_eq!(s.details.unwrap()["kind"], "ConfigMap");
    }
}
