//! `pods/exec` and `pods/attach` for the lab apiserver.
//!
//! The lab "container" runs nothing: it echoes stdin to stdout (`cat`, and any command it
//! does not know), and knows a few commands that print without reading stdin (see
//! [`container`]). Its exit status goes back on the error stream as kube-apiserver sends
//! it (v4/v5: a `metav1.Status`, `Success` or `Failure`/`NonZeroExitCode`).
//!
//! Two wire protocols, picked from the request's `Upgrade` header:
//! - WebSocket (RFC 6455) with `v5.channel.k8s.io`, `v4.channel.k8s.io` and
//!   `v4.base64.channel.k8s.io` ([`websocket`]); kubectl ≥ 1.30 uses v5 by default.
//! - SPDY/3.1 with `X-Stream-Protocol-Version` v5…v2 ([`spdy`]); kubectl falls back to it,
//!   and `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false` forces it.
//!
//! Contract with the layers around it:
//! - the store calls [`serve`] for `Verb::Connect` on `pods/exec` / `pods/attach` after
//!   checking that the pod (and the named container) exists;
//! - the HTTP server serves connections with upgrades enabled (hyper
//!   `serve_connection_with_upgrades`) and writes the audit entry (code 101 for a session);
//! - the caller's [`Identity`] reaches the container: `whoami` / `lab-identity` print it.
use std::time::Duration;

use super::status::Status;
use super::types::{Identity, LabResponse, ResourceRequest};

pub mod container;
pub mod spdy;
pub mod websocket;

pub use container::{Container, ExitCode, Output};

/// How long the client has to finish the upgrade after the 101 went out.
pub(crate) const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// Wait, bounded by [`UPGRADE_TIMEOUT`], for the client side of an HTTP upgrade; logs why
/// and gives `None` when it fails (the 101 is already sent: there is no one to answer).
pub(crate) async fn await_upgrade(
    on_upgrade: hyper::upgrade::OnUpgrade,
    pod: &str,
    transport: &str,
) -> Option<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>> {
    match tokio::time::timeout(UPGRADE_TIMEOUT, on_upgrade).await {
        Ok(Ok(upgraded)) => Some(hyper_util::rt::TokioIo::new(upgraded)),
        Ok(Err(e)) => {
            tracing::warn!(pod = %pod, error = %ExecError::Upgrade(e), "lab exec");
            None
        }
        Err(_) => {
            tracing::warn!(pod = %pod, "lab exec: {transport} upgrade timed out");
            None
        }
    }
}
/// How long SPDY clients have to create their streams (kube-apiserver: 30 s).
pub(crate) const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// A session with no frame or message at all for this long is dropped (client pings count).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// After the container exited: how long to wait for the client to hang up.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong in an exec/attach session after the upgrade (logged: the HTTP
/// response is gone by then).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP upgrade failed: {0}")]
    Upgrade(#[source] hyper::Error),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("websocket: {0}")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("spdy protocol error: {0}")]
    Spdy(String),
    #[error("spdy header compression: {0}")]
    Compression(String),
}

impl From<tokio_tungstenite::tungstenite::Error> for ExecError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        ExecError::WebSocket(Box::new(e))
    }
}

/// The query parameters of an exec/attach request, as kube-apiserver reads them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOptions {
    /// `command` parameters in order (empty for attach).
    pub command: Vec<String>,
    pub container: Option<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl ExecOptions {
    /// Parse and validate the query string. `attach` requests take no command.
    pub fn from_query(query: &str, attach: bool) -> Result<Self, BadOptions> {
        let mut opts = ExecOptions::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = form_decode(k);
            let v = form_decode(v);
            match k.as_str() {
                "command" => opts.command.push(v),
                "container" => opts.container = Some(v).filter(|c| !c.is_empty()),
                "stdin" => opts.stdin = parse_bool(&k, &v)?,
                "stdout" => opts.stdout = parse_bool(&k, &v)?,
                "stderr" => opts.stderr = parse_bool(&k, &v)?,
                "tty" => opts.tty = parse_bool(&k, &v)?,
                _ => {}
            }
        }
        if !opts.stdin && !opts.stdout && !opts.stderr {
            return Err(bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        if opts.tty && opts.stderr {
            return Err(bad_request("stdout and stderr cannot both be set with tty"));
        }
        if !attach && opts.command.is_empty() {
            return Err(bad_request(
                "you must specify at least one command for the container",
            ));
        }
        Ok(opts)
    }
}

/// Invalid exec/attach query parameters (answered with a 400 `BadRequest` Status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadOptions(pub String);

impl BadOptions {
    /// The kube-shaped 400.
    pub fn status(&self) -> Status {
        Status::new(400, "BadRequest", self.0.clone())
    }
}

fn bad_request(message: &str) -> BadOptions {
    BadOptions(message.to_string())
}

fn parse_bool(key: &str, value: &str) -> Result<bool, BadOptions> {
    match value.to_ascii_lowercase().as_str() {
        "" | "0" | "false" => Ok(false),
        "1" | "true" => Ok(true),
        _ => Err(bad_request(&format!(
            "invalid value for {key}: {value:?} (want true or false)"
        ))),
    }
}

/// `application/x-www-form-urlencoded` decoding of one key or value.
fn form_decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// One exec/attach session, for logs.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub namespace: String,
    pub pod: String,
    pub subresource: &'static str,
    pub identity: Identity,
}

/// Serve `pods/exec` or `pods/attach`: validate, answer 101 with the negotiated protocol and
/// run the lab container on the upgraded connection in a task of its own. Bad requests get a
/// kube-shaped `Status` (400 for non-upgrade or HTTP/2 requests, 403 when no protocol can be
/// negotiated, 404 without a pod name).
pub async fn serve(
    req: ResourceRequest,
    http: http::Request<hyper::body::Incoming>,
) -> LabResponse {
    let Some(pod) = req.name.clone() else {
        return Status::path_not_found().response();
    };
    let subresource = match req.subresource.as_deref() {
        Some("exec") => "exec",
        Some("attach") => "attach",
        _ => return Status::path_not_found().response(),
    };
    let opts =
        match ExecOptions::from_query(http.uri().query().unwrap_or(""), subresource == "attach") {
            Ok(opts) => opts,
            Err(bad) => return bad.status().response(),
        };
    let session = Session {
        namespace: req.namespace.clone().unwrap_or_default(),
        pod,
        subresource,
        identity: req.identity.clone(),
    };
    if http.version() != http::Version::HTTP_11 && http.version() != http::Version::HTTP_10 {
        // Upgrade is HTTP/1.1 only; kubectl opens exec/attach connections with HTTP/1.1.
        return upgrade_required();
    }
    let upgrade = header_str(&http, http::header::UPGRADE).to_ascii_lowercase();
    let container = Container::new(&opts, &session.identity);
    // tests/labapi_exec.rs reads `upgrade=` from this line to tell WebSocket from SPDY.
    tracing::info!(
        namespace = %session.namespace,
        pod = %session.pod,
        subresource,
        user = %session.identity.user,
        command = ?opts.command,
        upgrade = %upgrade,
        "lab exec request"
    );
    if upgrade.split(',').any(|u| u.trim() == "websocket") {
        websocket::accept(session, opts, container, http)
    } else if upgrade.split(',').any(|u| u.trim() == "spdy/3.1") {
        spdy::accept(session, opts, container, http)
    } else {
        upgrade_required()
    }
}

fn upgrade_required() -> LabResponse {
    Status::new(400, "BadRequest", "Upgrade request required").response()
}

/// All values of a header joined with `,` (lossy: non-UTF-8 values are skipped).
pub(crate) fn header_str(
    http: &http::Request<hyper::body::Incoming>,
    name: http::header::HeaderName,
) -> String {
    http.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
}

/// Comma-separated tokens of all values of a header, trimmed, in order.
pub(crate) fn header_tokens(
    http: &http::Request<hyper::body::Incoming>,
    name: &str,
) -> Vec<String> {
    http.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The exit status on the error stream for v4/v5 (and the WebSocket protocols): a
/// `metav1.Status` without type meta, as kube-apiserver writes it.
pub(crate) fn exit_status_json(code: ExitCode, command: &[String]) -> Vec<u8> {
    let value = if code.0 == 0 {
        serde_json::json!({"metadata": {}, "status": "Success"})
    } else {
        serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": exit_message(code, command),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.0.to_string()}]},
        })
    };
    serde_json::to_vec(&value).expect("Status serialises")
}

/// The failure message kube sends for a non-zero exit.
pub(crate) fn exit_message(code: ExitCode, command: &[String]) -> String {
    format!(
        "command terminated with non-zero exit code: error executing command [{}], exit code {}",
        command.join(" "),
        code.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_parsed_like_kube() {
        let o = ExecOptions::from_query(
            "command=echo&command=hello+w%C3%B6rld&container=c&stdin=true&stdout=1&stderr=false&tty=false",
            false,
        )
        .unwrap();
        assert_eq!(o.command, vec!["echo", "hello wörld"]);
        assert_eq!(o.container.as_deref(), Some("c"));
        assert!(o.stdin && o.stdout && !o.stderr && !o.tty);
    }

    #[test]
    fn bad_queries_are_400() {
        for (q, attach) in [
            ("command=cat", false),
            ("stdout=true", false),
            ("command=cat&stdout=maybe", false),
            ("command=sh&stdout=true&stderr=true&tty=true", false),
        ] {
            let s = ExecOptions::from_query(q, attach).unwrap_err().status();
            assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"), "{q}");
        }
        assert!(ExecOptions::from_query("stdout=true&stdin=true", true).is_ok());
    }

    #[test]
    fn exit_status_is_kube_shaped() {
        assert_eq!(
            exit_status_json(ExitCode(0), &["true".into()]),
            br#"{"metadata":{},"status":"Success"}"#
        );
        let v: serde_json::Value =
            serde_json::from_slice(&exit_status_json(ExitCode(3), &["false".into()])).unwrap();
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
    }
}
