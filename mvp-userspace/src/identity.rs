//! Who is calling, decided as kube-apiserver's authenticator union would, and how that identity
//! is carried to the upstream.
//!
//! kube-apiserver's order (k8s `pkg/kubeapiserver/authenticator`): the front-proxy
//! (requestheader) authenticator, then x509 client certs, then tokens; anonymous only when none
//! of them *failed* (a presented certificate that does not verify is a failure → 401, unless a
//! later authenticator, e.g. a bearer token, succeeds). mvp mirrors that per request from the
//! connection's judged certificate ([`PeerCertAuth`]) and the request headers:
//!
//! | caller | upstream connection | headers |
//! |---|---|---|
//! | trusted front proxy (requestheader CA, allowed CN, user header set) | front-proxy cert | kept as they are |
//! | x509 from the client CA | front-proxy cert | identity headers stripped, then user = CN, one group per O, credential-id extra; `Authorization` dropped (the apiserver would ignore it) |
//! | bearer token / any `Authorization` | no client cert | identity headers stripped; `Authorization` untouched |
//! | anonymous | no client cert | identity headers stripped |
//! | a presented cert that authenticates nothing, no bearer token | — | mvp answers 401 itself |
//!
//! Impersonation headers are never touched: the apiserver decides on them.
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, SEC_WEBSOCKET_PROTOCOL};

use crate::tls::{PeerCertAuth, X509User};

/// The kube-apiserver requestheader settings mvp must speak (the apiserver's own flags).
#[derive(Debug, Clone)]
pub struct RequestHeaderNames {
    /// `--requestheader-username-headers`.
    pub username: Vec<HeaderName>,
    /// `--requestheader-uid-headers`.
    pub uid: Vec<HeaderName>,
    /// `--requestheader-group-headers`.
    pub group: Vec<HeaderName>,
    /// `--requestheader-extra-headers-prefix`, lower-cased.
    pub extra_prefix: Vec<String>,
}

impl Default for RequestHeaderNames {
    /// kubeadm's settings.
    fn default() -> Self {
        RequestHeaderNames {
            username: vec![HeaderName::from_static("x-remote-user")],
            uid: vec![HeaderName::from_static("x-remote-uid")],
            group: vec![HeaderName::from_static("x-remote-group")],
            extra_prefix: vec!["x-remote-extra-".to_owned()],
        }
    }
}

/// Why mvp refuses to forward a request on authentication grounds.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// A client certificate was presented, it authenticates nothing, and no bearer token was
    /// sent: kube-apiserver answers 401 here, so does mvp. Downstream error; not retryable.
    #[error(
        "client certificate rejected ({0}); the client should use a certificate from --client-ca-file"
    )]
    ClientCertRejected(String),
    /// The user or a group of an x509 cert cannot be written as an HTTP header value.
    /// Downstream error; not retryable.
    #[error("client certificate subject {0:?} cannot be forwarded as a header")]
    UnforwardableSubject(String),
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerIdentity {
    /// A client certificate from the client CA.
    X509 {
        /// CN.
        user: String,
        /// O values.
        groups: Vec<String>,
    },
    /// A trusted front proxy (requestheader CA, allowed CN) that sent a user header.
    FrontProxy {
        /// The proxy cert's CN.
        cn: String,
        /// The user it asserts (first configured user header), for logs.
        user: String,
    },
    /// Credentials in `Authorization` (or a WebSocket bearer protocol): the apiserver judges them.
    Bearer,
    /// No credentials.
    Anonymous,
}

impl CallerIdentity {
    /// Whether the upstream connection must carry mvp's front-proxy client certificate.
    pub fn needs_front_proxy_cert(&self) -> bool {
        matches!(
            self,
            CallerIdentity::X509 { .. } | CallerIdentity::FrontProxy { .. }
        )
    }

    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CallerIdentity::X509 { .. } => "x509",
            CallerIdentity::FrontProxy { .. } => "front-proxy",
            CallerIdentity::Bearer => "bearer",
            CallerIdentity::Anonymous => "anonymous",
        }
    }
}

const WEBSOCKET_BEARER_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

fn first_non_empty(headers: &HeaderMap, names: &[HeaderName]) -> Option<String> {
    names.iter().find_map(|name| {
        headers
            .get_all(name)
            .iter()
            .find(|v| !v.is_empty())
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    })
}

fn has_bearer_token(headers: &HeaderMap) -> bool {
    let authorization = headers.get(AUTHORIZATION).is_some_and(|v| {
        let mut parts = v.as_bytes().splitn(3, |b| *b == b' ');
        let scheme = parts.next().unwrap_or_default();
        let token = parts.next().unwrap_or_default();
        scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()
    });
    authorization
        || headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|p| p.trim().starts_with(WEBSOCKET_BEARER_PREFIX))
            })
        })
}

/// Decide the caller of one request.
pub fn authenticate(
    peer: &PeerCertAuth,
    headers: &HeaderMap,
    names: &RequestHeaderNames,
) -> Result<CallerIdentity, AuthError> {
    if let Some(cn) = &peer.front_proxy
        && let Some(user) = first_non_empty(headers, &names.username)
    {
        return Ok(CallerIdentity::FrontProxy {
            cn: cn.clone(),
            user,
        });
    }
    if let Some(X509User { name, groups, .. }) = &peer.x509 {
        return Ok(CallerIdentity::X509 {
            user: name.clone(),
            groups: groups.clone(),
        });
    }
    if peer.presented {
        // The certificate failed every authenticator; only a token can still succeed.
        if has_bearer_token(headers) {
            return Ok(CallerIdentity::Bearer);
        }
        let why = if peer.front_proxy.is_some() {
            "front-proxy certificate without a user header".to_owned()
        } else {
            peer.rejected_because.join("; ")
        };
        return Err(AuthError::ClientCertRejected(why));
    }
    if headers.contains_key(AUTHORIZATION) || has_bearer_token(headers) {
        return Ok(CallerIdentity::Bearer);
    }
    Ok(CallerIdentity::Anonymous)
}

fn is_identity_header(name: &HeaderName, names: &RequestHeaderNames) -> bool {
    let n = name.as_str();
    n == "x-remote-user"
        || n == "x-remote-uid"
        || n == "x-remote-group"
        || n.starts_with("x-remote-extra-")
        || names.username.contains(name)
        || names.uid.contains(name)
        || names.group.contains(name)
        || names.extra_prefix.iter().any(|p| n.starts_with(p.as_str()))
}

/// Remove every header an apiserver could read an identity from (configured names and the
/// X-Remote-* defaults).
pub fn strip_identity_headers(headers: &mut HeaderMap, names: &RequestHeaderNames) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_identity_header(name, names))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Rewrite `headers` to carry `identity` upstream. `x509` must be the connection's cert user
/// when `identity` is [`CallerIdentity::X509`].
pub fn apply(
    identity: &CallerIdentity,
    x509: Option<&X509User>,
    headers: &mut HeaderMap,
    names: &RequestHeaderNames,
) -> Result<(), AuthError> {
    match identity {
        CallerIdentity::FrontProxy { .. } => Ok(()),
        CallerIdentity::Bearer | CallerIdentity::Anonymous => {
            strip_identity_headers(headers, names);
            Ok(())
        }
        CallerIdentity::X509 { user, groups } => {
            strip_identity_headers(headers, names);
            // The apiserver authenticates the front-proxy headers first and never looks at a
            // token on this hop; do not carry the credential further.
            headers.remove(AUTHORIZATION);
            let value = |s: &str| {
                HeaderValue::from_bytes(s.as_bytes())
                    .map_err(|_| AuthError::UnforwardableSubject(s.to_owned()))
            };
            if let Some(user_header) = names.username.first() {
                headers.insert(user_header.clone(), value(user)?);
            }
            if let Some(group_header) = names.group.first() {
                for group in groups {
                    headers.append(group_header.clone(), value(group)?);
                }
            }
            if let (Some(prefix), Some(cert)) = (names.extra_prefix.first(), x509) {
                // kube-apiserver (1.32+) gives x509 users this extra; keep it.
                let name = format!("{prefix}authentication.kubernetes.io%2fcredential-id");
                if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                    headers.append(name, value(&cert.credential_id)?);
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> RequestHeaderNames {
        RequestHeaderNames::default()
    }

    fn spoofed() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-remote-user", HeaderValue::from_static("bob"));
        h.append("x-remote-group", HeaderValue::from_static("system:masters"));
        h.insert("x-remote-extra-scopes", HeaderValue::from_static("all"));
        h.insert("impersonate-user", HeaderValue::from_static("carol"));
        h
    }

    fn alice() -> X509User {
        X509User {
            name: "alice".into(),
            groups: vec!["dev".into(), "ops".into()],
            credential_id: "X509SHA256=ab".into(),
        }
    }

    #[test]
    fn x509_replaces_spoofed_identity_and_keeps_impersonation() {
        let peer = PeerCertAuth {
            presented: true,
            x509: Some(alice()),
            ..Default::default()
        };
        let mut h = spoofed();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        let id = authenticate(&peer, &h, &names()).unwrap();
        apply(&id, peer.x509.as_ref(), &mut h, &names()).unwrap();
        assert_eq!(h["x-remote-user"], "alice");
        let groups: Vec<_> = h.get_all("x-remote-group").iter().collect();
        assert_eq!(groups, ["dev", "ops"]);
        assert!(h.get("x-remote-extra-scopes").is_none());
        assert_eq!(
            h["x-remote-extra-authentication.kubernetes.io%2fcredential-id"],
            "X509SHA256=ab"
        );
        assert!(h.get(AUTHORIZATION).is_none());
        assert_eq!(h["impersonate-user"], "carol");
    }

    #[test]
    fn anonymous_and_bearer_lose_spoofed_identity() {
        let peer = PeerCertAuth::default();
        let mut h = spoofed();
        let id = authenticate(&peer, &h, &names()).unwrap();
        assert_eq!(id, CallerIdentity::Anonymous);
        apply(&id, None, &mut h, &names()).unwrap();
        assert!(h.get("x-remote-user").is_none() && h.get("x-remote-group").is_none());

        let mut h = spoofed();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        let id = authenticate(&peer, &h, &names()).unwrap();
        assert_eq!(id, CallerIdentity::Bearer);
        apply(&id, None, &mut h, &names()).unwrap();
        assert!(h.get("x-remote-user").is_none());
        assert_eq!(h[AUTHORIZATION], "Bearer t");
    }

    #[test]
    fn configured_custom_header_names_are_stripped_too() {
        let names = RequestHeaderNames {
            username: vec![HeaderName::from_static("x-user")],
            uid: vec![],
            group: vec![HeaderName::from_static("x-groups")],
            extra_prefix: vec!["x-extra-".into()],
        };
        let mut h = spoofed();
        h.insert("x-user", HeaderValue::from_static("bob"));
        h.insert("x-groups", HeaderValue::from_static("g"));
        h.insert("x-extra-a", HeaderValue::from_static("b"));
        strip_identity_headers(&mut h, &names);
        assert_eq!(h.len(), 1, "only impersonate-user is left: {h:?}");
    }

    #[test]
    fn trusted_front_proxy_keeps_headers_but_needs_a_user() {
        let peer = PeerCertAuth {
            presented: true,
            front_proxy: Some("front-proxy-client".into()),
            ..Default::default()
        };
        let mut h = spoofed();
        let id = authenticate(&peer, &h, &names()).unwrap();
        assert!(matches!(id, CallerIdentity::FrontProxy { ref user, .. } if user == "bob"));
        apply(&id, None, &mut h, &names()).unwrap();
        assert_eq!(h["x-remote-group"], "system:masters");

        let h = HeaderMap::new();
        assert!(matches!(
            authenticate(&peer, &h, &names()),
            Err(AuthError::ClientCertRejected(_))
        ));
    }

    #[test]
    fn rejected_cert_is_401_unless_a_bearer_token_authenticates() {
        let peer = PeerCertAuth {
            presented: true,
            rejected_because: vec!["client CA: UnknownIssuer".into()],
            ..Default::default()
        };
        assert!(authenticate(&peer, &HeaderMap::new(), &names()).is_err());
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic Zm9v"));
        assert!(authenticate(&peer, &h, &names()).is_err());
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer tok"));
        assert_eq!(
            authenticate(&peer, &h, &names()).unwrap(),
            CallerIdentity::Bearer
        );
    }
}
