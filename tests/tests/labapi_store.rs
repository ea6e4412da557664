//! The lab store against a real etcd, driven over real HTTP (a tiny hyper server that does
//! the path classification the lab apiserver's HTTP layer does), compared with the
//! exchanges recorded from a real kube-apiserver v1.36.2.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use test_support::etcd::Etcd;
use test_support::eventually::{eventually_async, patience};
use test_support::labapi::store::Store;
use test_support::labapi::types::{Identity, ResourceHandler, ResourceMeta, ResourceRequest, Verb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------- harness

fn meta(
    group: &str,
    version: &str,
    resource: &str,
    kind: &str,
    namespaced: bool,
    subs: &[&str],
) -> ResourceMeta {
    ResourceMeta {
        group: group.into(),
        version: version.into(),
        resource: resource.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        namespaced,
        verbs: vec![],
        subresources: subs.iter().map(|s| s.to_string()).collect(),
    }
}

fn surface() -> Vec<ResourceMeta> {
    vec![
        meta("", "v1", "configmaps", "ConfigMap", true, &[]),
        meta("", "v1", "pods", "Pod", true, &["status", "log", "exec"]),
        meta(
            "",
            "v1",
            "namespaces",
            "Namespace",
            false,
            &["status", "finalize"],
        ),
        meta(
            "apps",
            "v1",
            "deployments",
            "Deployment",
            true,
            &["status", "scale"],
        ),
        meta(
            "resource.k8s.io",
            "v1",
            "deviceclasses",
            "DeviceClass",
            false,
            &[],
        ),
        meta(
            "resource.k8s.io",
            "v1beta2",
            "deviceclasses",
            "DeviceClass",
            false,
            &[],
        ),
        meta("", "v1", "services", "Service", true, &["status"]),
        ResourceMeta {
            verbs: vec!["create".into()],
            ..meta(
                "authorization.k8s.io",
                "v1",
                "selfsubjectaccessreviews",
                "SelfSubjectAccessReview",
                false,
                &[],
            )
        },
    ]
}

/// The classification the lab apiserver's HTTP layer does, just enough for these tests.
fn classify(method: &Method, path: &str, query: &str) -> Option<ResourceRequest> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest.to_vec()),
        ["apis", g, v, rest @ ..] => (*g, *v, rest.to_vec()),
        _ => return None,
    };
    let mut watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    if rest.first() == Some(&"watch") {
        watch = true;
        rest.remove(0);
    }
    let (namespace, resource, name, sub) = match rest.as_slice() {
        ["namespaces", ns, r, tail @ ..] if !matches!(*r, "status" | "finalize") => (
            Some(ns.to_string()),
            *r,
            tail.first().copied(),
            tail.get(1).copied(),
        ),
        ["namespaces", tail @ ..] => (
            None,
            "namespaces",
            tail.first().copied(),
            tail.get(1).copied(),
        ),
        [r, tail @ ..] => (None, *r, tail.first().copied(), tail.get(1).copied()),
        [] => return None,
    };
    let meta = surface()
        .into_iter()
        .find(|m| m.group == group && m.version == version && m.resource == resource)?;
    let verb = match (method.as_str(), name.is_some()) {
        _ if watch => Verb::Watch,
        ("GET", true) => Verb::Get,
        ("GET", false) => Verb::List,
        ("POST", _) if matches!(sub, Some("exec" | "attach")) => Verb::Connect,
        ("POST", _) => Verb::Create,
        ("PUT", _) => Verb::Update,
        ("PATCH", _) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => return None,
    };
    Some(ResourceRequest {
        meta,
        verb,
        namespace,
        name: name.map(String::from),
        subresource: sub.map(String::from),
        identity: Identity {
            user: "admin".into(),
            ..Default::default()
        },
    })
}

/// Serve a Store over HTTP/1.1 and h2c on a loopback port.
async fn serve(store: Store) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move {
                            let classified = classify(
                                req.method(),
                                req.uri().path(),
                                req.uri().query().unwrap_or(""),
                            );
                            let resp = match classified {
                                Some(r) => store.handle(r, req).await,
                                None => test_support::labapi::status::Status::path_not_found()
                                    .response(),
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

struct Lab {
    etcd: Etcd,
    nodes: Vec<Node>,
}

#[derive(Clone)]
struct Node {
    addr: SocketAddr,
    h1: Client<HttpConnector, Full<Bytes>>,
    h2: Client<HttpConnector, Full<Bytes>>,
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Lab {
    async fn start(nodes: usize) -> Result<Lab> {
        test_support::trace::init();
        let etcd = tokio::task::spawn_blocking(Etcd::start).await??;
        let mut out = Vec::new();
        for _ in 0..nodes {
            let store = Store::connect(vec![etcd.endpoint()], "/registry".into()).await?;
            let addr = serve(store).await?;
            out.push(Node {
                addr,
                h1: Client::builder(TokioExecutor::new()).build_http(),
                h2: Client::builder(TokioExecutor::new())
                    .http2_only(true)
                    .build_http(),
            });
        }
        Ok(Lab { etcd, nodes: out })
    }

    fn node(&self) -> &Node {
        &self.nodes[0]
    }

    async fn etcd_client(&self) -> Result<etcd_client::Client> {
        Ok(etcd_client::Client::connect([self.etcd.endpoint()], None).await?)
    }
}

impl Node {
    async fn req(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Resp> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
        {
            b = b.header(
                "user-agent",
                "kubectl/v1.36.2 (linux/amd64) kubernetes/98b3519",
            );
        }
        let mut has_accept = false;
        for (k, v) in headers {
            has_accept |= k.eq_ignore_ascii_case("accept");
            b = b.header(*k, *v);
        }
        if !has_accept {
            b = b.header("accept", "application/json, */*");
        }
        if !body.is_empty()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            b = b.header("content-type", "application/json");
        }
        let resp = self
            .h2
            .request(b.body(Full::new(Bytes::from(body.to_string())))?)
            .await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = tokio::time::timeout(patience(), resp.into_body().collect())
            .await
            .context("body did not end")??
            .to_bytes();
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    async fn get(&self, path: &str) -> Result<Resp> {
        self.req("GET", path, &[], "").await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Resp> {
        self.req("POST", path, &[], &body.to_string()).await
    }

    async fn put(&self, path: &str, body: Value) -> Result<Resp> {
        self.req("PUT", path, &[], &body.to_string()).await
    }

    async fn patch(&self, path: &str, ct: &str, body: Value) -> Result<Resp> {
        self.req("PATCH", path, &[("content-type", ct)], &body.to_string())
            .await
    }

    async fn delete(&self, path: &str) -> Result<Resp> {
        self.req("DELETE", path, &[], "").await
    }

    async fn create_ok(&self, path: &str, body: Value) -> Result<Value> {
        let r = self.post(path, body).await?;
        ensure!(
            r.status == 201,
            "create {path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        Ok(r.json())
    }

    /// Open a streaming GET over HTTP/2 (or HTTP/1.1) and return the body.
    async fn stream(&self, path: &str, h2: bool) -> Result<(Resp, hyper::body::Incoming)> {
        let req = http::Request::builder()
            .uri(format!("http://{}{path}", self.addr))
            .header("accept", "application/json, */*")
            .body(Full::new(Bytes::new()))?;
        let client = if h2 { &self.h2 } else { &self.h1 };
        let resp = client.request(req).await?;
        let head = Resp {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: Bytes::new(),
        };
        Ok((head, resp.into_body()))
    }
}

/// Reads newline-delimited events from a streaming body, bounded by the test patience.
struct Lines {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Lines {
    fn new(body: hyper::body::Incoming) -> Self {
        Lines {
            body,
            buf: Vec::new(),
        }
    }

    /// The next line, or `None` when the stream ended.
    async fn next(&mut self) -> Result<Option<String>> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(Some(String::from_utf8(line)?.trim_end().to_string()));
            }
            let frame = tokio::time::timeout(patience(), self.body.frame())
                .await
                .context("no event within the test patience")?;
            match frame {
                None => return Ok(None),
                Some(f) => {
                    if let Ok(d) = f?.into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
            }
        }
    }

    /// The next DATA frame as it arrived (nothing buffered may be pending).
    async fn raw_frame(&mut self) -> Result<Bytes> {
        loop {
            let frame = tokio::time::timeout(patience(), self.body.frame())
                .await
                .context("no frame within the test patience")?
                .ok_or_else(|| anyhow!("stream ended"))??;
            if let Ok(d) = frame.into_data() {
                return Ok(d);
            }
        }
    }

    async fn event(&mut self) -> Result<Value> {
        let line = self.next().await?.ok_or_else(|| anyhow!("watch ended"))?;
        Ok(serde_json::from_str(&line)?)
    }
}

fn fixture(name: &str) -> Value {
    let path = test_support::bins::fixtures_dir()
        .join("real-apiserver/v1.36.2")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Drop what differs run to run (uid, timestamps, resourceVersions, managedFields).
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "uid"
                            | "creationTimestamp"
                            | "resourceVersion"
                            | "managedFields"
                            | "deletionTimestamp"
                    )
                })
                .map(|(k, v)| (k.clone(), shape(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        other => other.clone(),
    }
}

fn rv(v: &Value) -> i64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn setup_fx(n: &Node) -> Result<()> {
    n.create_ok(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "fx"}}),
    )
    .await?;
    Ok(())
}

fn cm(name: &str, v: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": v}})
}

const CMS: &str = "/api/v1/namespaces/fx/configmaps";

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_and_error_bodies_match_the_recordings() -> Result<()> {
    let lab = Lab::start(1).await?;
    let n = lab.node();
    setup_fx(n).await?;

    // create: 201, server fields set, shape as recorded.
    let created = n.create_ok(CMS, cm("dup", "v1")).await?;
    assert_eq!(shape(&created), shape(&fixture("create-configmap")));
    assert_eq!(created["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(
        created["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert!(
        created["metadata"].get("generation").is_none(),
        "ConfigMaps have no generation"
    );
    let r = n.get(&format!("{CMS}/dup")).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["cache-control"], "no-cache, private");
    assert_eq!(r.json(), created, "get returns what create returned");

    // 409 AlreadyExists, byte-for-byte.
    let r = n.post(CMS, cm("dup", "v1")).await?;
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json(),
        fixture("err-create-configmap-again-409-alreadyexists")
    );

    // update, then a stale resourceVersion → 409 Conflict.
    let mut upd = cm("dup", "v2");
    upd["metadata"]["namespace"] = json!("fx");
    upd["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"].clone();
    let r = n.put(&format!("{CMS}/dup"), upd.clone()).await?;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let updated = r.json();
    assert_eq!(shape(&updated), shape(&fixture("update-configmap")));
    assert!(rv(&updated) > rv(&created));
    upd["data"]["k"] = json!("v3");
    let r = n.put(&format!("{CMS}/dup"), upd).await?;
    assert_eq!(r.status, 409);
    assert_eq!(
        r.json(),
        fixture("err-update-stale-resourceversion-409-conflict")
    );

    // 422, 404s, 415, 406.
    let r = n
        .post(CMS, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Invalid_Name"}, "data": {"bad key!": "v"}}))
        .await?;
    assert_eq!(r.status, 422);
    assert_eq!(r.json(), fixture("err-create-invalid-422"));
    let r = n
        .post("/api/v1/namespaces/no-such-ns/configmaps", cm("x", "v"))
        .await?;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), fixture("err-create-in-missing-namespace-404"));
    let r = n.get("/api/v1/namespaces/fx/pods/no-such-pod").await?;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), fixture("err-get-missing-pod-404"));
    let r = n.delete(&format!("{CMS}/no-such-cm")).await?;
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), fixture("err-delete-missing-configmap-404"));
    let r = n
        .patch(
            &format!("{CMS}/dup"),
            "application/json",
            json!({"data": {"k": "v9"}}),
        )
        .await?;
    assert_eq!(r.status, 415);
    assert_eq!(r.json(), fixture("err-patch-unsupported-content-type-415"));
    let r = n
        .req("GET", CMS, &[("accept", "application/xml")], "")
        .await?;
    assert_eq!(r.status, 406);
    let recorded = std::fs::read(
        test_support::bins::fixtures_dir()
            .join("real-apiserver/v1.36.2/err-unsupported-accept-406.json"),
    )?;
    assert_eq!(
        r.body, recorded,
        "406 is pretty-printed like kube-apiserver's"
    );
    let r = n
        .post(
            CMS,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
        )
        .await?;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json()["message"],
        "ConfigMap \"\" is invalid: metadata.name: Required value: name or generateName is required"
    );
    let r = n
        .post(
            CMS,
            json!({"metadata": {"name": "x", "namespace": "other"}}),
        )
        .await?;
    assert_eq!(r.status, 400);
    let r = n.req("POST", CMS, &[], "{not json").await?;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["reason"], "BadRequest");

    // Reviews are computed and not stored.
    let ssar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}});
    let r = n
        .post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            ssar,
        )
        .await?;
    assert_eq!(r.status, 201);
    let v = r.json();
    assert_eq!(
        (
            v["status"]["allowed"].as_bool(),
            v["spec"]["resourceAttributes"]["verb"].as_str()
        ),
        (Some(true), Some("get"))
    );
    let mut etcd = lab.etcd_client().await?;
    let stored = etcd
        .get(
            "/registry/authorization.k8s.io",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await?;
    assert_eq!(stored.count(), 0, "reviews are not stored");

    // Bodies of the wrong shape are 400s, never a crash; the server keeps serving.
    let deps = "/apis/apps/v1/namespaces/fx/deployments";
    for (path, body) in [
        (CMS, "[]"),
        (CMS, "null"),
        (CMS, "\"str\""),
        (CMS, r#"{"metadata": "x"}"#),
        (CMS, r#"{"metadata": {"name": 5}}"#),
        (CMS, r#"{"metadata": {"name": "a", "labels": "x"}}"#),
        (CMS, r#"{"metadata": {"name": "a", "labels": {"k": 1}}}"#),
        (CMS, r#"{"metadata": {"name": "a", "finalizers": "x"}}"#),
        (CMS, r#"{"metadata": {"name": "a"}, "data": ["x"]}"#),
        (
            "/api/v1/namespaces",
            r#"{"metadata": {"name": "a", "labels": 3}, "spec": "x"}"#,
        ),
        (deps, r#"{"metadata": {"name": "a"}, "spec": "x"}"#),
        (deps, r#"{"metadata": {"name": "a"}, "status": 1}"#),
    ] {
        let r = n.req("POST", path, &[], body).await?;
        assert_eq!(
            r.status,
            400,
            "{path} {body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["kind"], "Status");
    }
    let r = n
        .post(CMS, json!({"metadata": {"name": "a", "labels": {"k": 1}}}))
        .await?;
    assert_eq!(
        r.json()["message"],
        "json: cannot unmarshal object into Go struct field ConfigMap.metadata.labels of type map[string]string"
    );
    n.create_ok(
        deps,
        json!({"metadata": {"name": "shape"}, "spec": {"replicas": 1}}),
    )
    .await?;
    for (ct, body) in [
        ("application/merge-patch+json", "[1, 2]"),
        ("application/merge-patch+json", r#"{"spec": "x"}"#),
        (
            "application/merge-patch+json",
            r#"{"metadata": {"labels": [1]}}"#,
        ),
        ("application/strategic-merge-patch+json", r#"{"status": 3}"#),
        (
            "application/json-patch+json",
            r#"[{"op": "replace", "path": "", "value": 1}]"#,
        ),
        ("application/json-patch+json", r#"{"op": "add"}"#),
        (
            "application/json-patch+json",
            r#"[{"op": "add", "path": "/spec", "value": 1}]"#,
        ),
        ("application/merge-patch+json", "{not json"),
    ] {
        for sub in ["", "/status", "/scale"] {
            let r = n
                .req(
                    "PATCH",
                    &format!("{deps}/shape{sub}"),
                    &[("content-type", ct)],
                    body,
                )
                .await?;
            assert!(
                r.status.is_client_error(),
                "{sub} {ct} {body}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
    }
    let r = n
        .req(
            "PUT",
            &format!("{deps}/shape/status"),
            &[],
            r#"{"metadata": {"name": "shape"}, "status": "x"}"#,
        )
        .await?;
    assert_eq!(r.status, 400);
    assert_eq!(
        n.get(&format!("{deps}/shape")).await?.json()["spec"]["replicas"],
        1
    );

    // generateName.
    let g = n
        .create_ok(CMS, json!({"metadata": {"generateName": "gen-"}}))
        .await?;
    let gname = g["metadata"]["name"].as_str().unwrap();
    assert!(gname.starts_with("gen-") && gname.len() == 9, "{gname}");

    // delete: ConfigMaps answer Status Success (as delete-configmap-big), pods the object.
    let r = n.delete(&format!("{CMS}/dup")).await?;
    assert_eq!(r.status, 200);
    let mut expected = fixture("delete-configmap-big");
    expected["details"]["name"] = json!("dup");
    expected["details"]["uid"] = created["metadata"]["uid"].clone();
    assert_eq!(r.json(), expected);
    assert_eq!(n.get(&format!("{CMS}/dup")).await?.status, 404);

    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p2", "labels": {"app": "fx"}},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}, "status": {"phase": "Running"}});
    let p = n.create_ok("/api/v1/namespaces/fx/pods", pod).await?;
    assert_eq!(p["metadata"]["generation"], 1);
    assert_eq!(
        p["status"],
        json!({"phase": "Pending", "qosClass": "BestEffort"}),
        "status is the server's on create"
    );
    // Pod defaults as recorded (except the ServiceAccount token volume, not emulated).
    let p1 = n
        .create_ok("/api/v1/namespaces/fx/pods", json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p1","labels":{"app":"fx"}},"spec":{"containers":[{"name":"c","image":"registry.k8s.io/pause:3.10"}]}}))
        .await?;
    let mut rec = fixture("setup-create-pod-p1");
    rec["spec"].as_object_mut().unwrap().shift_remove("volumes");
    rec["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .shift_remove("volumeMounts");
    assert_eq!(
        serde_json::to_string(&p1["spec"])?,
        serde_json::to_string(&rec["spec"])?,
        "same defaults, same field order"
    );
    assert_eq!(shape(&p1), shape(&rec));
    let r = n.delete("/api/v1/namespaces/fx/pods/p2").await?;
    assert_eq!(r.status, 200);
    let d = r.json();
    let rec = fixture("delete-pod");
    assert_eq!(d["kind"], rec["kind"]);
    assert_eq!(d["metadata"]["generation"], rec["metadata"]["generation"]);
    assert_eq!(d["metadata"]["deletionGracePeriodSeconds"], 0);
    assert!(d["metadata"]["deletionTimestamp"].is_string());
    assert!(rv(&d) > rv(&p));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_with_continue_and_selectors() -> Result<()> {
    let lab = Lab::start(1).await?;
    let n = lab.node();
    setup_fx(n).await?;
    for name in ["cm-a", "cm-b", "cm-c", "dup"] {
        let mut o = cm(name, "v");
        o["metadata"]["labels"] = json!({"tier": if name == "dup" { "x" } else { "y" }});
        n.create_ok(CMS, o).await?;
    }
    n.create_ok(
        "/api/v1/namespaces/default/configmaps",
        cm("elsewhere", "v"),
    )
    .await?;

    let page1 = n.get(&format!("{CMS}?limit=2")).await?.json();
    let rec = fixture("list-configmaps-limit2");
    assert_eq!(page1["kind"], rec["kind"]);
    assert_eq!(page1["apiVersion"], rec["apiVersion"]);
    let names = |l: &Value| -> Vec<String> {
        l["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&page1), ["cm-a", "cm-b"]);
    assert!(
        page1["items"][0].get("kind").is_none(),
        "list items carry no kind, as recorded"
    );
    assert_eq!(page1["metadata"]["remainingItemCount"], 2);
    let token = page1["metadata"]["continue"].as_str().unwrap();
    let decoded = test_support::labapi::store::ContinueToken::decode(token)
        .map_err(|s| anyhow!(s.message))?;
    assert_eq!(decoded.start, "/cm-b\u{0}");
    assert_eq!(decoded.rv, rv(&page1));

    // A write between pages does not show up: the continuation reads the first page's revision.
    n.create_ok(CMS, cm("cm-bb", "v")).await?;
    let page2 = n
        .get(&format!("{CMS}?limit=2&continue={token}"))
        .await?
        .json();
    assert_eq!(names(&page2), ["cm-c", "dup"]);
    assert!(page2["metadata"].get("continue").is_none());
    assert_eq!(
        page2["metadata"]["resourceVersion"],
        page1["metadata"]["resourceVersion"]
    );

    let all = n.get("/api/v1/configmaps").await?.json();
    assert!(
        names(&all).contains(&"elsewhere".to_string()) && names(&all).contains(&"cm-a".to_string())
    );
    let sel = n
        .get(&format!("{CMS}?labelSelector=tier%3Dx"))
        .await?
        .json();
    assert_eq!(names(&sel), ["dup"]);
    let sel = n
        .get(&format!("{CMS}?labelSelector=tier!%3Dx&limit=1"))
        .await?
        .json();
    assert_eq!(names(&sel), ["cm-a"]);
    assert!(sel["metadata"]["continue"].is_string());
    let sel = n
        .get("/api/v1/configmaps?fieldSelector=metadata.namespace%3Ddefault")
        .await?
        .json();
    assert_eq!(names(&sel), ["elsewhere"]);
    let sel = n
        .get(&format!("{CMS}?fieldSelector=metadata.name%3Dcm-c"))
        .await?
        .json();
    assert_eq!(names(&sel), ["cm-c"]);
    let r = n.get(&format!("{CMS}?continue=garbage")).await?;
    assert_eq!(r.status, 400);

    // Compaction: the old token and an exact old revision are 410 as recorded.
    let mut etcd = lab.etcd_client().await?;
    let now = etcd.get("x", None).await?.header().unwrap().revision();
    etcd.compact(now, None).await?;
    let r = n.get(&format!("{CMS}?limit=2&continue={token}")).await?;
    assert_eq!(r.status, 410);
    assert_eq!(
        r.json(),
        fixture("list-configmaps-continue-token-expired-410")
    );
    let r = n
        .get(&format!(
            "{CMS}?resourceVersion=2&resourceVersionMatch=Exact"
        ))
        .await?;
    assert_eq!(r.status, 410);
    assert_eq!(
        r.json(),
        fixture("list-configmaps-resourceversion-exact-compacted-410")
    );
    // The recovery token from the 410 continues (inconsistently) after cm-b.
    let r410 = n
        .get(&format!("{CMS}?limit=2&continue={token}"))
        .await?
        .json();
    let recovery = r410["metadata"]["continue"].as_str().unwrap();
    let rest = n
        .get(&format!("{CMS}?limit=10&continue={recovery}"))
        .await?
        .json();
    assert_eq!(names(&rest), ["cm-bb", "cm-c", "dup"]);

    // Watching from a compacted revision: one ERROR event, 410 Expired.
    let (head, body) = n
        .stream(
            &format!("{CMS}?watch=true&resourceVersion=2&allowWatchBookmarks=true"),
            true,
        )
        .await?;
    assert_eq!(head.status, 200);
    let mut lines = Lines::new(body);
    let ev = lines.event().await?;
    let rec: Value = serde_json::from_slice(&std::fs::read(
        test_support::bins::fixtures_dir()
            .join("real-apiserver/v1.36.2/watch-configmaps-resourceversion-too-old-http2.body"),
    )?)?;
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(
        shape(&ev["object"])
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        rec["object"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>()
    );
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");
    assert!(
        ev["object"]["message"]
            .as_str()
            .unwrap()
            .starts_with("too old resource version: 2 (")
    );
    assert_eq!(lines.next().await?, None, "the stream ends after the ERROR");
    Ok(())
}

/// HTTP/1.1 watch, read raw: one chunk per event, as the chunked recording shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_each_event_as_its_own_chunk_in_order() -> Result<()> {
    let lab = Lab::start(1).await?;
    let n = lab.node();
    setup_fx(n).await?;
    let base = n.create_ok(CMS, cm("before", "v")).await?;
    let mut sock = tokio::net::TcpStream::connect(n.addr).await?;
    let req = format!(
        "GET {CMS}?watch=true&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds=4 HTTP/1.1\r\nHost: x\r\nAccept: application/json, */*\r\n\r\n",
        rv(&base)
    );
    sock.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    // Read the response head, then do each mutation once the previous event arrived.
    let mut read_until = async |raw: &mut Vec<u8>, needle: &str| -> Result<()> {
        while !String::from_utf8_lossy(raw).contains(needle) {
            let k = tokio::time::timeout(patience(), sock.read(&mut buf)).await??;
            if k == 0 {
                bail!(
                    "connection closed before {needle:?}: {}",
                    String::from_utf8_lossy(raw)
                );
            }
            raw.extend_from_slice(&buf[..k]);
        }
        Ok(())
    };
    read_until(&mut raw, "\r\n\r\n").await?;
    let c = n.create_ok(CMS, cm("cm-w1", "v1")).await?;
    read_until(&mut raw, "\"ADDED\"").await?;
    let m = n
        .patch(
            &format!("{CMS}/cm-w1"),
            "application/merge-patch+json",
            json!({"data": {"k": "v2"}}),
        )
        .await?
        .json();
    read_until(&mut raw, "\"MODIFIED\"").await?;
    let d = n.delete(&format!("{CMS}/cm-w1")).await?;
    assert_eq!(d.status, 200);
    read_until(&mut raw, "\"DELETED\"").await?;
    // A write outside the watched namespace moves etcd's revision: the bookmark carries it.
    let elsewhere = n
        .create_ok(
            "/api/v1/namespaces/default/configmaps",
            cm("elsewhere", "v"),
        )
        .await?;
    read_until(&mut raw, "\r\n0\r\n\r\n").await?;
    let text = String::from_utf8(raw)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("transfer-encoding: chunked")
            && lower.contains("content-type: application/json")
    );
    // Parse chunks: each is exactly one JSON event followed by '\n'.
    let mut rest = body;
    let mut events = Vec::new();
    loop {
        let (size, after) = rest.split_once("\r\n").context("chunk size")?;
        let size = usize::from_str_radix(size, 16)?;
        if size == 0 {
            break;
        }
        let chunk = &after[..size];
        assert!(
            chunk.ends_with('\n') && chunk.matches('\n').count() == 1,
            "one event per chunk: {chunk:?}"
        );
        events.push(serde_json::from_str::<Value>(chunk)?);
        rest = &after[size + 2..];
    }
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]);
    assert_eq!(events[0]["object"], c);
    assert_eq!(events[1]["object"], m);
    assert_eq!(events[2]["object"]["metadata"]["name"], "cm-w1");
    assert!(
        rv(&events[2]["object"]) > rv(&m),
        "DELETED carries the deletion revision"
    );
    let rec_bookmark: Value = json!({"type":"BOOKMARK","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"resourceVersion": elsewhere["metadata"]["resourceVersion"]}}});
    assert_eq!(
        events[3], rec_bookmark,
        "bookmark shaped as recorded, at etcd's current revision"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_over_http2_initial_events_selectors_and_legacy_path() -> Result<()> {
    let lab = Lab::start(1).await?;
    let n = lab.node();
    setup_fx(n).await?;
    n.create_ok(CMS, cm("cm-a", "v")).await?;
    n.create_ok(CMS, cm("cm-b", "v")).await?;
    let (head, body) = n
        .stream(&format!("{CMS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"), true)
        .await?;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-type"], "application/json");
    let mut w = Lines::new(body);
    let a = w.event().await?;
    let b = w.event().await?;
    assert_eq!(
        (a["type"].as_str(), b["type"].as_str()),
        (Some("ADDED"), Some("ADDED"))
    );
    assert_eq!(
        (
            a["object"]["metadata"]["name"].as_str(),
            b["object"]["metadata"]["name"].as_str()
        ),
        (Some("cm-a"), Some("cm-b"))
    );
    let bm = w.event().await?;
    assert_eq!(bm["type"], "BOOKMARK");
    assert_eq!(
        bm["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    let c = n.create_ok(CMS, cm("cm-c", "v")).await?;
    // One HTTP/2 DATA frame per event, flushed as it happens.
    assert!(w.buf.is_empty(), "frames ended on event boundaries");
    let frame = w.raw_frame().await?;
    assert!(
        frame.ends_with(b"\n") && frame.iter().filter(|b| **b == b'\n').count() == 1,
        "one event per frame: {}",
        String::from_utf8_lossy(&frame)
    );
    let ev: Value = serde_json::from_slice(&frame)?;
    assert_eq!(ev, json!({"type": "ADDED", "object": c}));

    // Legacy /watch/ path on one object, and a label selector moving objects in and out.
    let (_, body) = n
        .stream(
            "/api/v1/watch/namespaces/fx/configmaps/cm-c?resourceVersion=0",
            true,
        )
        .await?;
    let mut one = Lines::new(body);
    assert_eq!(one.event().await?["object"]["metadata"]["name"], "cm-c");
    let (_, body) = n
        .stream(
            &format!(
                "{CMS}?watch=1&labelSelector=sel%3Dyes&resourceVersion={}",
                rv(&c)
            ),
            true,
        )
        .await?;
    let mut sel = Lines::new(body);
    let p = |v: &str| json!({"metadata": {"labels": {"sel": v}}});
    n.patch(
        &format!("{CMS}/cm-a"),
        "application/merge-patch+json",
        p("yes"),
    )
    .await?;
    n.patch(
        &format!("{CMS}/cm-a"),
        "application/merge-patch+json",
        json!({"data": {"k": "2"}}),
    )
    .await?;
    n.patch(
        &format!("{CMS}/cm-a"),
        "application/merge-patch+json",
        p("no"),
    )
    .await?;
    n.patch(
        &format!("{CMS}/cm-c"),
        "application/merge-patch+json",
        json!({"data": {"k": "3"}}),
    )
    .await?;
    let types: Vec<String> = [sel.event().await?, sel.event().await?, sel.event().await?]
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(types, ["ADDED cm-a", "MODIFIED cm-a", "DELETED cm-a"]);
    let ev = one.event().await?;
    assert_eq!(
        (ev["type"].as_str(), ev["object"]["data"]["k"].as_str()),
        (Some("MODIFIED"), Some("3"))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_status_subresource_generation_and_finalizers() -> Result<()> {
    let lab = Lab::start(1).await?;
    let n = lab.node();
    setup_fx(n).await?;
    let deps = "/apis/apps/v1/namespaces/fx/deployments";
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "1"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}},
        "spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}}}});
    let d0 = n.create_ok(deps, dep).await?;
    assert_eq!(d0["metadata"]["generation"], 1);
    assert_eq!(d0["status"], json!({}));

    // Strategic merge: containers merged by name (kubectl set image / apply).
    let r = n
        .patch(&format!("{deps}/d"), "application/strategic-merge-patch+json",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "y:2"}]}}}}))
        .await?;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let d1 = r.json();
    assert_eq!(
        d1["spec"]["template"]["spec"]["containers"],
        json!([{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:2"}])
    );
    assert_eq!(
        d1["metadata"]["generation"], 2,
        "spec change bumps generation"
    );
    // Merge patch on metadata only: generation unchanged; list replaced wholesale.
    let d2 = n
        .patch(
            &format!("{deps}/d"),
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"a": null, "b": "2"}}}),
        )
        .await?
        .json();
    assert_eq!(d2["metadata"]["labels"], json!({"b": "2"}));
    assert_eq!(d2["metadata"]["generation"], 2);
    // A patch that changes nothing does not write.
    let same = n
        .patch(
            &format!("{deps}/d"),
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"b": "2"}}}),
        )
        .await?
        .json();
    assert_eq!(
        same["metadata"]["resourceVersion"],
        d2["metadata"]["resourceVersion"]
    );
    // JSON patch, and a failing test op → 422, object untouched.
    let d3 = n
        .patch(
            &format!("{deps}/d"),
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
        )
        .await?
        .json();
    assert_eq!(d3["spec"]["replicas"], 3);
    let r = n
        .patch(
            &format!("{deps}/d"),
            "application/json-patch+json",
            json!([{"op": "test", "path": "/spec/replicas", "value": 9}]),
        )
        .await?;
    assert_eq!(r.status, 422);
    // Patch with a stale resourceVersion → 409.
    let r = n.patch(&format!("{deps}/d"), "application/merge-patch+json", json!({"metadata": {"resourceVersion": d0["metadata"]["resourceVersion"]}, "spec": {"replicas": 5}})).await?;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["reason"], "Conflict");

    // status: PUT/PATCH /status change only .status; main-resource writes ignore .status.
    let mut s = d3.clone();
    s["status"] = json!({"replicas": 3, "readyReplicas": 3});
    s["spec"]["replicas"] = json!(7);
    let st = n.put(&format!("{deps}/d/status"), s).await?.json();
    assert_eq!(st["status"], json!({"replicas": 3, "readyReplicas": 3}));
    assert_eq!(st["spec"]["replicas"], 3, "status update leaves spec alone");
    let st = n
        .patch(
            &format!("{deps}/d/status"),
            "application/merge-patch+json",
            json!({"status": {"readyReplicas": 1}, "metadata": {"labels": {"z": "z"}}}),
        )
        .await?
        .json();
    assert_eq!(st["status"]["readyReplicas"], 1);
    assert!(st["metadata"]["labels"].get("z").is_none());
    let main = n
        .patch(
            &format!("{deps}/d"),
            "application/merge-patch+json",
            json!({"status": {"readyReplicas": 99}}),
        )
        .await?
        .json();
    assert_eq!(
        main["status"]["readyReplicas"], 1,
        "main resource ignores status"
    );
    let got = n.get(&format!("{deps}/d/status")).await?.json();
    assert_eq!(got, main);
    // scale subresource.
    let sc = n.get(&format!("{deps}/d/scale")).await?.json();
    assert_eq!(
        (
            sc["kind"].as_str(),
            sc["spec"]["replicas"].as_i64(),
            sc["status"]["selector"].as_str()
        ),
        (Some("Scale"), Some(3), Some("app=d"))
    );
    let sc = n
        .patch(
            &format!("{deps}/d/scale"),
            "application/merge-patch+json",
            json!({"spec": {"replicas": 4}}),
        )
        .await?
        .json();
    assert_eq!(sc["spec"]["replicas"], 4);
    assert_eq!(
        n.get(&format!("{deps}/d")).await?.json()["spec"]["replicas"],
        4
    );

    // Finalizers hold a delete until removed.
    let mut f = cm("fin", "v");
    f["metadata"]["finalizers"] = json!(["example.com/hold"]);
    n.create_ok(CMS, f).await?;
    let r = n.delete(&format!("{CMS}/fin")).await?;
    assert_eq!(r.status, 200);
    assert!(r.json()["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        n.get(&format!("{CMS}/fin")).await?.status,
        200,
        "still there while finalizers remain"
    );
    let r = n
        .patch(
            &format!("{CMS}/fin"),
            "application/merge-patch+json",
            json!({"metadata": {"finalizers": null}}),
        )
        .await?;
    assert_eq!(r.status, 200);
    assert_eq!(n.get(&format!("{CMS}/fin")).await?.status, 404);

    // Deleting a namespace removes what is in it; system namespaces cannot be deleted.
    let r = n.delete("/api/v1/namespaces/default").await?;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["message"],
        "namespaces \"default\" is forbidden: this namespace may not be deleted"
    );
    n.create_ok("/api/v1/namespaces", json!({"metadata": {"name": "gone"}}))
        .await?;
    n.create_ok("/api/v1/namespaces/gone/configmaps", cm("c", "v"))
        .await?;
    n.create_ok(
        "/apis/apps/v1/namespaces/gone/deployments",
        json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}}),
    )
    .await?;
    let r = n.delete("/api/v1/namespaces/gone").await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"]["phase"], "Terminating");
    assert_eq!(
        n.get("/api/v1/namespaces/gone/configmaps/c").await?.status,
        404
    );
    assert_eq!(
        n.get("/apis/apps/v1/namespaces/gone/deployments/d")
            .await?
            .status,
        404
    );
    assert_eq!(
        n.get(&format!("{deps}/d")).await?.status,
        200,
        "other namespaces untouched"
    );

    // Immutable ConfigMaps keep their data; invalid keys are refused on update too.
    let mut im = cm("frozen", "v");
    im["immutable"] = json!(true);
    n.create_ok(CMS, im).await?;
    let r = n
        .patch(
            &format!("{CMS}/frozen"),
            "application/merge-patch+json",
            json!({"data": {"k": "w"}}),
        )
        .await?;
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json()["message"],
        "ConfigMap \"frozen\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
    );
    let r = n
        .patch(
            &format!("{CMS}/frozen"),
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"ok": "yes"}}}),
        )
        .await?;
    assert_eq!(
        r.status, 200,
        "metadata of an immutable ConfigMap can change"
    );
    let r = n
        .patch(
            &format!("{CMS}/fin2"),
            "application/merge-patch+json",
            json!({}),
        )
        .await?;
    assert_eq!(r.status, 404);
    n.create_ok(CMS, cm("keys", "v")).await?;
    let r = n
        .patch(
            &format!("{CMS}/keys"),
            "application/merge-patch+json",
            json!({"data": {"bad key!": "v"}}),
        )
        .await?;
    assert_eq!(r.status, 422);

    // ?dryRun=All checks everything and writes nothing.
    let r = n
        .req(
            "POST",
            &format!("{CMS}?dryRun=All"),
            &[],
            &cm("dry", "v").to_string(),
        )
        .await?;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["metadata"]["name"], "dry");
    assert_eq!(n.get(&format!("{CMS}/dry")).await?.status, 404);
    let r = n
        .req("DELETE", &format!("{deps}/d?dryRun=All"), &[], "")
        .await?;
    assert_eq!(r.status, 200);
    let before = n.get(&format!("{deps}/d")).await?.json();
    let r = n
        .req(
            "PATCH",
            &format!("{deps}/d?dryRun=All"),
            &[("content-type", "application/merge-patch+json")],
            r#"{"spec":{"replicas":9}}"#,
        )
        .await?;
    assert_eq!(r.json()["spec"]["replicas"], 9);
    assert_eq!(
        n.get(&format!("{deps}/d")).await?.json(),
        before,
        "dry runs leave the object alone"
    );

    // Server-side apply (approximated as a strategic merge): creates, then merges.
    let apply = |data: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  {data}\n")
    };
    let ct = [("content-type", "application/apply-patch+yaml")];
    let r = n
        .req(
            "PATCH",
            &format!("{CMS}/ssa?fieldManager=t"),
            &ct,
            &apply("a: '1'"),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = n
        .req(
            "PATCH",
            &format!("{CMS}/ssa?fieldManager=t"),
            &ct,
            &apply("b: '2'"),
        )
        .await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"], json!({"a": "1", "b": "2"}));
    let r = n
        .req("PATCH", &format!("{CMS}/ssa"), &ct, "- not an object")
        .await?;
    assert_eq!(r.status, 400);

    // deletecollection by label.
    for (name, l) in [("dc-1", "x"), ("dc-2", "x"), ("dc-3", "y")] {
        let mut o = cm(name, "v");
        o["metadata"]["labels"] = json!({"dc": l});
        n.create_ok(CMS, o).await?;
    }
    let r = n.delete(&format!("{CMS}?labelSelector=dc%3Dx")).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 2);
    let left = n.get(&format!("{CMS}?labelSelector=dc")).await?.json();
    assert_eq!(left["items"][0]["metadata"]["name"], "dc-3");
    assert_eq!(left["items"].as_array().unwrap().len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_etcd_see_each_others_writes_and_watches() -> Result<()> {
    let lab = Lab::start(2).await?;
    let (a, b) = (&lab.nodes[0], &lab.nodes[1]);
    // System namespaces exist once, even though two stores created them.
    let nss = b.get("/api/v1/namespaces").await?.json();
    let names: Vec<&str> = nss["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    setup_fx(a).await?;
    let (_, body) = b
        .stream(&format!("{CMS}?watch=true&resourceVersion=0"), true)
        .await?;
    let mut w = Lines::new(body);
    let created = b.create_ok(CMS, cm("from-b", "v")).await?;
    assert_eq!(a.get(&format!("{CMS}/from-b")).await?.json(), created);
    assert_eq!(w.event().await?["object"], created);
    let upd = a
        .patch(
            &format!("{CMS}/from-b"),
            "application/merge-patch+json",
            json!({"data": {"k": "a"}}),
        )
        .await?
        .json();
    let ev = w.event().await?;
    assert_eq!(
        (ev["type"].as_str(), &ev["object"]),
        (Some("MODIFIED"), &upd)
    );
    // Concurrent creates of one name through both nodes: exactly one wins.
    let (ra, rb) = tokio::join!(a.post(CMS, cm("race", "a")), b.post(CMS, cm("race", "b")));
    let mut codes = [ra?.status.as_u16(), rb?.status.as_u16()];
    codes.sort();
    assert_eq!(codes, [201, 409]);
    w.event().await?; // the winner's ADDED

    // Concurrent updates through both nodes without preconditions: none is lost.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let node = lab.nodes[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            node.patch(
                &format!("{CMS}/from-b"),
                "application/merge-patch+json",
                json!({"data": {format!("k{i}"): "x"}}),
            )
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await??.status, 200);
    }
    let fin = b.get(&format!("{CMS}/from-b")).await?.json();
    assert_eq!(fin["data"].as_object().unwrap().len(), 11, "{fin}");

    // Service cluster IPs are allocated once across nodes, released on delete.
    let svcs = "/api/v1/namespaces/fx/services";
    let svc = |name: &str, ip: Option<&str>| {
        let mut v = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"port": 443}], "selector": {"app": name}}});
        if let Some(ip) = ip {
            v["spec"]["clusterIP"] = json!(ip);
        }
        v
    };
    let s1 = a.create_ok(svcs, svc("s1", None)).await?;
    let s2 = b.create_ok(svcs, svc("s2", None)).await?;
    let ip1 = s1["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(ip1.starts_with("10.96."), "{s1}");
    assert_ne!(s1["spec"]["clusterIP"], s2["spec"]["clusterIP"]);
    assert_eq!(
        s1["spec"]["ports"],
        json!([{"port": 443, "protocol": "TCP", "targetPort": 443}])
    );
    assert_eq!(
        (
            s1["spec"]["type"].as_str(),
            s1["spec"]["sessionAffinity"].as_str()
        ),
        (Some("ClusterIP"), Some("None"))
    );
    let r = b.post(svcs, svc("s3", Some(&ip1))).await?;
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("provided IP is already allocated")
    );
    // An update that omits the IP keeps it; changing it is refused.
    let r = a.put(&format!("{svcs}/s1"), svc("s1", None)).await?;
    assert_eq!(r.json()["spec"]["clusterIP"], s1["spec"]["clusterIP"]);
    let r = a
        .put(&format!("{svcs}/s1"), svc("s1", Some("10.96.0.2")))
        .await?;
    assert_eq!(r.status, 422);
    assert_eq!(a.delete(&format!("{svcs}/s1")).await?.status, 200);
    b.create_ok(svcs, svc("s3", Some(&ip1))).await?;
    let headless = a.create_ok(svcs, svc("h", Some("None"))).await?;
    assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));

    // One resource served at two versions by different nodes: same object, requested apiVersion.
    let dc = json!({"apiVersion": "resource.k8s.io/v1beta2", "kind": "DeviceClass", "metadata": {"name": "gpu"}, "spec": {}});
    a.create_ok("/apis/resource.k8s.io/v1beta2/deviceclasses", dc)
        .await?;
    let v1 = b
        .get("/apis/resource.k8s.io/v1/deviceclasses/gpu")
        .await?
        .json();
    assert_eq!(v1["apiVersion"], "resource.k8s.io/v1");
    let list = eventually_async("deviceclass listed at v1", || async {
        let l = b
            .get("/apis/resource.k8s.io/v1/deviceclasses")
            .await
            .map_err(|e| e.to_string())?
            .json();
        if l["items"].as_array().map(Vec::len) == Some(1) {
            Ok(l)
        } else {
            Err(format!("{l}"))
        }
    })
    .await;
    assert_eq!(list["kind"], "DeviceClassList");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_content_negotiation_and_pod_logs() -> Result<()> {
    let lab = Lab::start(1).await?;
    let n = lab.node();
    setup_fx(n).await?;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"},
        "spec": {"containers": [{"name": "c", "image": "pause"}]}});
    n.create_ok("/api/v1/namespaces/fx/pods", pod).await?;
    let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let t = n
        .req(
            "GET",
            "/api/v1/namespaces/fx/pods?limit=500",
            &[("accept", kubectl)],
            "",
        )
        .await?
        .json();
    let rec = fixture("list-pods-table-kubectl-accept");
    assert_eq!(
        (&t["kind"], &t["apiVersion"]),
        (&rec["kind"], &rec["apiVersion"])
    );
    assert_eq!(
        t["columnDefinitions"], rec["columnDefinitions"],
        "kube's pod columns"
    );
    let mut cells = t["rows"][0]["cells"].clone();
    let mut rec_cells = rec["rows"][0]["cells"].clone();
    assert!(cells[4].as_str().unwrap().ends_with('s'), "age in seconds");
    cells[4] = json!("age");
    rec_cells[4] = json!("age");
    assert_eq!(cells, rec_cells, "a fresh pending pod prints as recorded");
    assert_eq!(t["rows"][0]["cells"][0], "p1");
    assert_eq!(
        t["rows"][0]["object"]["kind"],
        rec["rows"][0]["object"]["kind"]
    );
    assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "p1");
    let t = n
        .req(
            "GET",
            "/api/v1/namespaces/fx/pods/p1",
            &[(
                "accept",
                "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
            )],
            "",
        )
        .await?
        .json();
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1beta1");
    assert_eq!(t["rows"].as_array().unwrap().len(), 1);
    let t = n
        .req("GET", "/api/v1/namespaces", &[("accept", kubectl)], "")
        .await?
        .json();
    let rec = fixture("list-namespaces-table-kubectl-accept");
    assert_eq!(t["columnDefinitions"], rec["columnDefinitions"]);
    let fx = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "fx")
        .unwrap();
    assert_eq!(fx["cells"][1], "Active");

    // Protobuf first, JSON acceptable: JSON. Protobuf only: 406. YAML works.
    let r = n
        .req(
            "GET",
            "/api/v1/namespaces/fx/pods/p1",
            &[(
                "accept",
                "application/vnd.kubernetes.protobuf, application/json",
            )],
            "",
        )
        .await?;
    assert_eq!(
        (r.status.as_u16(), r.headers["content-type"].to_str()?),
        (200, "application/json")
    );
    let r = n
        .req(
            "GET",
            "/api/v1/namespaces/fx/pods/p1",
            &[("accept", "application/vnd.kubernetes.protobuf")],
            "",
        )
        .await?;
    assert_eq!(r.status, 406);
    let r = n
        .req(
            "GET",
            "/api/v1/namespaces/fx/pods/p1",
            &[("accept", "application/yaml")],
            "",
        )
        .await?;
    assert_eq!(r.headers["content-type"], "application/yaml");
    assert!(String::from_utf8_lossy(&r.body).contains("name: p1"));
    // curl's User-Agent → pretty JSON, as recorded.
    let r = n
        .req(
            "GET",
            "/api/v1/namespaces/fx/pods/no-such-pod",
            &[("user-agent", "curl/7.88.1")],
            "",
        )
        .await?;
    let recorded = std::fs::read(
        test_support::bins::fixtures_dir()
            .join("real-apiserver/v1.36.2/pretty-print-curl-user-agent-get-missing-pod.json"),
    )?;
    assert_eq!(r.body, recorded);

    // Logs: plain text; follow keeps streaming until the client leaves.
    let r = n.get("/api/v1/namespaces/fx/pods/p1/log").await?;
    assert_eq!(
        (r.status.as_u16(), r.headers["content-type"].to_str()?),
        (200, "text/plain")
    );
    assert_eq!(String::from_utf8_lossy(&r.body).lines().count(), 3);
    assert_eq!(
        n.get("/api/v1/namespaces/fx/pods/nope/log").await?.status,
        404
    );
    let (head, body) = n
        .stream("/api/v1/namespaces/fx/pods/p1/log?follow=true", true)
        .await?;
    assert_eq!(head.status, 200);
    let mut lines = Lines::new(body);
    for i in 1..=4 {
        let l = lines.next().await?.context("log ended")?;
        assert!(
            l.contains(&format!("line {i} of pod fx/p1 container c")),
            "{l}"
        );
    }
    drop(lines);
    let _ = Duration::ZERO;
    Ok(())
}
