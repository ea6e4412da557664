//! Watch: newline-delimited JSON events streamed from an etcd watch, one body frame (one
//! HTTP/1.1 chunk, one HTTP/2 DATA frame) per event, flushed as it happens.
//!
//! - `resourceVersion` unset or `0`, or `sendInitialEvents=true`: ADDED for every current
//!   object first (then, with `sendInitialEvents` and bookmarks, a BOOKMARK annotated
//!   `k8s.io/initial-events-end`), then changes.
//! - `resourceVersion=N`: changes after N; N compacted → one ERROR event (410 Expired) as
//!   kube-apiserver sends it, then the stream ends.
//! - `timeoutSeconds` (default 30 min) ends the stream; with `allowWatchBookmarks` a
//!   BOOKMARK is sent 2 s before that and every minute, at etcd's current revision (from an
//!   etcd watch progress request).
//! - label/field selectors: an object moving out of the selection is a DELETED, into it an
//!   ADDED, as kube's watch filtering does.
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{EventType, GetOptions, WatchOptions};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::format::{Format, Output};
use super::query::{FieldSelector, LabelSelector, Query};
use super::{Store, decode, prefix_end, set_rv, set_type, table};
use crate::labapi::status::Status;
use crate::labapi::types::{BoxError, LabResponse, ResourceMeta, ResourceRequest};

/// A streaming response fed by a channel; ends when the sender is dropped.
pub fn stream_response(content_type: &str, rx: mpsc::Receiver<Bytes>) -> LabResponse {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CACHE_CONTROL, "no-cache, private")
        .body(StreamBody::new(stream).boxed_unsync())
        .expect("valid response")
}

struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, o: &Value) -> bool {
        self.labels.matches(o) && self.fields.matches(o)
    }
}

/// Encodes events for one watch (JSON or Table rows).
struct Encoder {
    meta: ResourceMeta,
    out: Output,
    first_table: bool,
}

impl Encoder {
    fn event(&mut self, kind: &str, obj: &Value) -> Bytes {
        let object = match (kind, self.out.format) {
            ("BOOKMARK" | "ERROR", _) => obj.clone(),
            (_, Format::Table { version, include }) => {
                let t = table::table(
                    version,
                    &self.meta.resource,
                    std::slice::from_ref(obj),
                    json!({"resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))}),
                    include,
                    self.first_table,
                );
                self.first_table = false;
                t
            }
            (_, Format::Metadata) => super::partial(obj),
            _ => obj.clone(),
        };
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object}))
            .expect("JSON values serialise");
        line.push(b'\n');
        Bytes::from(line)
    }

    fn bookmark(&mut self, rev: i64, initial_end: bool) -> Bytes {
        let mut md = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.meta.kind, "apiVersion": self.meta.api_version(), "metadata": md});
        self.event("BOOKMARK", &obj)
    }
}

fn too_old(requested: i64, oldest: i64) -> Value {
    Status::new(
        410,
        "Expired",
        format!("too old resource version: {requested} ({oldest})"),
    )
    .to_value()
}

/// Serve a watch request.
pub async fn watch(
    store: &Store,
    req: &ResourceRequest,
    query: &Query,
    out: Output,
) -> LabResponse {
    let mut fields = match FieldSelector::parse(query.get("fieldSelector").unwrap_or("")) {
        Ok(f) => f,
        Err(s) => return out.status(&s),
    };
    if let Some(n) = &req.name {
        fields = fields.with_name(n);
    }
    let labels = match LabelSelector::parse(query.get("labelSelector").unwrap_or("")) {
        Ok(l) => l,
        Err(s) => return out.status(&s),
    };
    let timeout = match query.int("timeoutSeconds") {
        Ok(t) => Duration::from_secs(t.filter(|t| *t > 0).unwrap_or(1800) as u64),
        Err(s) => return out.status(&s),
    };
    let rv = match query.get("resourceVersion") {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n >= 0 => Some(n),
            _ => return out.status(&super::bad_rv(v)),
        },
    };
    let send_initial = query.flag("sendInitialEvents") || matches!(rv, None | Some(0));
    let initial_end_marker = query.flag("sendInitialEvents");
    let bookmarks = query.flag("allowWatchBookmarks");
    let base = format!("{}/", store.list_key(&req.meta, req.namespace.as_deref()));
    let filter = Filter { labels, fields };
    let mut enc = Encoder {
        meta: req.meta.clone(),
        out,
        first_table: true,
    };
    let client = store.client.clone();
    let meta = req.meta.clone();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_rev;
        let start;
        if send_initial {
            let opts = GetOptions::new().with_range(prefix_end(&base));
            let resp = match client.kv_client().get(base.as_str(), Some(opts)).await {
                Ok(r) => r,
                Err(e) => {
                    let s = Status::new(
                        500,
                        "InternalError",
                        format!("Internal error occurred: etcd range {base}: {e}"),
                    );
                    let _ = tx.send(enc.event("ERROR", &s.to_value())).await;
                    return;
                }
            };
            last_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            for kv in resp.kvs() {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let Ok(obj) = decode(&meta, &key, kv.value(), kv.mod_revision()) else {
                    continue;
                };
                if filter.matches(&obj) && tx.send(enc.event("ADDED", &obj)).await.is_err() {
                    return;
                }
            }
            if initial_end_marker
                && bookmarks
                && tx.send(enc.bookmark(last_rev, true)).await.is_err()
            {
                return;
            }
            start = last_rev + 1;
        } else {
            let n = rv.unwrap_or(0);
            last_rev = n;
            start = n + 1;
        }
        let opts = WatchOptions::new()
            .with_range(prefix_end(&base))
            .with_start_revision(start)
            .with_prev_key();
        let (mut progress, mut stream) =
            match client.watch_client().watch(base.as_str(), Some(opts)).await {
                Ok(s) => s.split(),
                Err(e) => {
                    let s = Status::new(
                        500,
                        "InternalError",
                        format!("Internal error occurred: etcd watch {base}: {e}"),
                    );
                    let _ = tx.send(enc.event("ERROR", &s.to_value())).await;
                    return;
                }
            };
        let bookmark_every = Duration::from_secs(60);
        let last_bookmark_at = deadline.checked_sub(Duration::from_secs(2));
        let mut next_bookmark = tokio::time::Instant::now() + bookmark_every;
        if let Some(at) = last_bookmark_at {
            next_bookmark = next_bookmark.min(at);
        }
        // A bookmark carries etcd's current revision: ask etcd for watch progress and send
        // the bookmark when the progress notification (an event-less response) arrives.
        let mut bookmark_pending = false;
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    if bookmark_pending {
                        let _ = tx.send(enc.bookmark(last_rev, false)).await;
                    }
                    return;
                }
                _ = tokio::time::sleep_until(next_bookmark), if bookmarks => {
                    if progress.request_progress().await.is_ok() {
                        bookmark_pending = true;
                    } else if tx.send(enc.bookmark(last_rev, false)).await.is_err() {
                        return;
                    }
                    next_bookmark = tokio::time::Instant::now() + bookmark_every;
                    if let Some(at) = last_bookmark_at.filter(|at| *at > tokio::time::Instant::now()) {
                        next_bookmark = next_bookmark.min(at);
                    } else {
                        next_bookmark = deadline + bookmark_every;
                    }
                }
                msg = stream.message() => {
                    let resp = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => return,
                        Err(e) => {
                            let obj = if super::error::is_compacted(&e) {
                                too_old(start - 1, 0)
                            } else {
                                Status::new(500, "InternalError", format!("Internal error occurred: etcd watch: {e}")).to_value()
                            };
                            let _ = tx.send(enc.event("ERROR", &obj)).await;
                            return;
                        }
                    };
                    if resp.canceled() {
                        let obj = if resp.compact_revision() > 0 {
                            too_old(start - 1, resp.compact_revision())
                        } else {
                            Status::new(500, "InternalError", format!("Internal error occurred: etcd cancelled the watch: {}", resp.cancel_reason())).to_value()
                        };
                        let _ = tx.send(enc.event("ERROR", &obj)).await;
                        return;
                    }
                    if resp.events().is_empty() && !resp.created() {
                        if let Some(h) = resp.header() {
                            last_rev = last_rev.max(h.revision());
                        }
                        if bookmark_pending {
                            bookmark_pending = false;
                            if tx.send(enc.bookmark(last_rev, false)).await.is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        let rev = kv.mod_revision();
                        last_rev = last_rev.max(rev);
                        let prev = ev
                            .prev_kv()
                            .and_then(|p| decode(&meta, &key, p.value(), p.mod_revision()).ok());
                        // Without a previous value (compacted), a non-first version of a
                        // key is a modification of an object that was already selected.
                        let prev_match = match &prev {
                            Some(p) => filter.matches(p),
                            None => ev.event_type() == EventType::Put
                                && kv.version() > 1
                                && decode(&meta, &key, kv.value(), rev).is_ok_and(|o| filter.matches(&o)),
                        };
                        let (kind, obj) = match ev.event_type() {
                            EventType::Put => {
                                let Ok(obj) = decode(&meta, &key, kv.value(), rev) else { continue };
                                match (prev_match, filter.matches(&obj)) {
                                    (false, true) => ("ADDED", obj),
                                    (true, true) => ("MODIFIED", obj),
                                    (true, false) => ("DELETED", obj),
                                    (false, false) => continue,
                                }
                            }
                            EventType::Delete => {
                                if !prev_match {
                                    continue;
                                }
                                let mut obj = prev.expect("prev matched");
                                set_rv(&mut obj, rev);
                                set_type(&meta, &mut obj);
                                ("DELETED", obj)
                            }
                        };
                        if tx.send(enc.event(kind, &obj)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    stream_response("application/json", rx)
}
