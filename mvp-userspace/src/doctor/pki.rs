//! PKI checks: every file present, readable and parseable; validity windows; the serving
//! cert's SANs and chain; the front-proxy client cert's chain and CN; requestheader names.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::client::danger::ServerCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;

use super::Check;
use crate::detect::{Detected, Sourced};

/// Every apiserver serving cert must carry this name: peers (and mvp) verify it.
pub const PEER_SERVER_NAME: &str = "kubernetes.default.svc";
/// Validity left below which doctor warns.
pub const WARN_BEFORE_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);

/// A file named by a setting, and what came of reading it.
#[derive(Debug)]
pub enum FileState<T> {
    /// The setting is not set.
    NotSet,
    /// The setting names a file that is not there.
    Missing(PathBuf),
    /// Present but unreadable or not the expected PEM.
    Invalid(PathBuf, String),
    /// Loaded.
    Ok(PathBuf, T),
}

impl<T> FileState<T> {
    /// The loaded value.
    pub fn get(&self) -> Option<&T> {
        match self {
            FileState::Ok(_, t) => Some(t),
            _ => None,
        }
    }
    /// The path, if set.
    pub fn path(&self) -> Option<&Path> {
        match self {
            FileState::NotSet => None,
            FileState::Missing(p) | FileState::Invalid(p, _) | FileState::Ok(p, _) => Some(p),
        }
    }
}

type Certs = Vec<CertificateDer<'static>>;

/// The PKI files kube-apiserver uses, loaded.
#[derive(Debug)]
pub struct Material {
    /// --tls-cert-file.
    pub serving_cert: FileState<Certs>,
    /// --tls-private-key-file.
    pub serving_key: FileState<PrivateKeyDer<'static>>,
    /// --client-ca-file.
    pub client_ca: FileState<Certs>,
    /// --requestheader-client-ca-file.
    pub requestheader_ca: FileState<Certs>,
    /// --proxy-client-cert-file.
    pub proxy_cert: FileState<Certs>,
    /// --proxy-client-key-file.
    pub proxy_key: FileState<PrivateKeyDer<'static>>,
    /// --peer-ca-file (or the client CA).
    pub peer_ca: FileState<Certs>,
}

fn read(path: &Path) -> Result<Vec<u8>, FileState<()>> {
    match std::fs::read(path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(FileState::Missing(path.to_owned()))
        }
        Err(e) => Err(FileState::Invalid(
            path.to_owned(),
            format!("unreadable: {e}"),
        )),
    }
}

fn recast<T>(s: FileState<()>) -> FileState<T> {
    match s {
        FileState::NotSet => FileState::NotSet,
        FileState::Missing(p) => FileState::Missing(p),
        FileState::Invalid(p, w) => FileState::Invalid(p, w),
        FileState::Ok(p, ()) => FileState::Invalid(p, "internal".into()),
    }
}

/// Load PEM certificates (at least one, each a parseable X.509).
pub fn load_certs(path: Option<&Sourced<PathBuf>>) -> FileState<Certs> {
    let Some(path) = path.map(|p| p.value.as_path()) else {
        return FileState::NotSet;
    };
    let bytes = match read(path) {
        Ok(b) => b,
        Err(s) => return recast(s),
    };
    let certs: Result<Certs, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    match certs {
        Ok(c) if c.is_empty() => {
            FileState::Invalid(path.to_owned(), "no PEM CERTIFICATE block".into())
        }
        Ok(c) => match c
            .iter()
            .find_map(|d| x509_parser::parse_x509_certificate(d).err())
        {
            Some(e) => FileState::Invalid(path.to_owned(), format!("not X.509: {e}")),
            None => FileState::Ok(path.to_owned(), c),
        },
        Err(e) => FileState::Invalid(path.to_owned(), format!("bad PEM: {e}")),
    }
}

/// Load a PEM private key.
pub fn load_key(path: Option<&Sourced<PathBuf>>) -> FileState<PrivateKeyDer<'static>> {
    let Some(path) = path.map(|p| p.value.as_path()) else {
        return FileState::NotSet;
    };
    let bytes = match read(path) {
        Ok(b) => b,
        Err(s) => return recast(s),
    };
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(k) => FileState::Ok(path.to_owned(), k),
        Err(e) => FileState::Invalid(path.to_owned(), format!("no PEM private key: {e}")),
    }
}

impl Material {
    /// Read every file the detected settings name.
    pub fn load(d: &Detected) -> Material {
        Material {
            serving_cert: load_certs(Some(&d.tls_cert_file)),
            serving_key: load_key(Some(&d.tls_private_key_file)),
            client_ca: load_certs(d.client_ca_file.as_ref()),
            requestheader_ca: load_certs(d.requestheader_client_ca_file.as_ref()),
            proxy_cert: load_certs(d.proxy_client_cert_file.as_ref()),
            proxy_key: load_key(d.proxy_client_key_file.as_ref()),
            peer_ca: load_certs(d.peer_ca_file.as_ref()),
        }
    }
}

fn file_check<T>(
    flag: &str,
    state: &FileState<T>,
    describe: impl Fn(&T) -> String,
    not_set: Option<(&str, &str)>,
) -> Check {
    let id = format!("file/{}", flag.trim_start_matches('-'));
    match state {
        FileState::Ok(p, t) => Check::pass(id, format!("{}: {}", p.display(), describe(t))),
        FileState::NotSet => match not_set {
            Some((msg, fix)) => Check::fail(id, format!("{flag} not set: {msg}"), fix),
            None => Check::pass(id, format!("{flag} not set")),
        },
        FileState::Missing(p) => Check::fail(
            id,
            format!("{} does not exist", p.display()),
            format!(
                "mount the PKI read-only where kube-apiserver's {flag} says (hostPath /etc/kubernetes/pki), or pass {flag}"
            ),
        ),
        FileState::Invalid(p, why) => Check::fail(
            id,
            format!("{}: {why}", p.display()),
            format!("point {flag} at the PEM file kube-apiserver uses, readable by mvp"),
        ),
    }
}

fn subject_cn(der: &CertificateDer<'_>) -> String {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, c)| {
            c.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok().map(str::to_owned))
        })
        .unwrap_or_default()
}

fn describe_certs(c: &Certs) -> String {
    let cns: Vec<String> = c.iter().map(|d| format!("CN={}", subject_cn(d))).collect();
    format!("{} certificate(s) ({})", c.len(), cns.join(", "))
}

fn secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn validity(der: &CertificateDer<'_>) -> Option<(i64, i64)> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((
        c.validity().not_before.timestamp(),
        c.validity().not_after.timestamp(),
    ))
}

fn date(ts: i64) -> String {
    x509_parser::time::ASN1Time::from_timestamp(ts)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ts.to_string())
}

fn validity_check(flag: &str, certs: &Certs, now: SystemTime) -> Check {
    let id = format!("validity/{}", flag.trim_start_matches('-'));
    let now = secs(now);
    let renew = format!(
        "renew it (kubeadm: `kubeadm certs renew`; then restart kube-apiserver) — file named by {flag}"
    );
    let mut soonest: Option<(i64, String)> = None;
    for der in certs {
        let cn = subject_cn(der);
        let Some((nb, na)) = validity(der) else {
            continue;
        };
        if now < nb {
            return Check::fail(
                id,
                format!("CN={cn} is not valid before {}", date(nb)),
                format!(
                    "check the node's clock, or reissue the certificate — file named by {flag}"
                ),
            );
        }
        if now > na {
            return Check::fail(id, format!("CN={cn} expired on {}", date(na)), renew);
        }
        if soonest.as_ref().is_none_or(|(t, _)| na < *t) {
            soonest = Some((na, cn));
        }
    }
    match soonest {
        Some((na, cn)) => {
            let days = (na - now) / 86_400;
            let left = i64::try_from(WARN_BEFORE_EXPIRY.as_secs()).unwrap_or(i64::MAX);
            if na - now < left {
                Check::warn(
                    id,
                    format!("CN={cn} expires in {days} days ({})", date(na)),
                    renew,
                )
            } else {
                Check::pass(id, format!("valid until {} ({days} days)", date(na)))
            }
        }
        None => Check::pass(id, "no certificates"),
    }
}

/// A time inside the leaf's validity: `now` when it is valid, else its midpoint, so chain
/// checks report chains and the validity check reports time.
fn chain_time(leaf: &CertificateDer<'_>, now: SystemTime) -> UnixTime {
    let n = secs(now);
    let t = match validity(leaf) {
        Some((nb, na)) if !(nb..=na).contains(&n) => nb + (na - nb) / 2,
        _ => n,
    };
    UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(t).unwrap_or(0)))
}

fn roots(cas: &Certs) -> Arc<RootCertStore> {
    let mut r = RootCertStore::empty();
    for c in cas {
        // A CA bundle entry webpki cannot use is simply not a root; the chain check says so.
        let _ = r.add(c.clone());
    }
    Arc::new(r)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verify a serving chain against `cas`; `Ok` also when only the name differs.
fn verify_serving(chain: &Certs, cas: &Certs, now: SystemTime) -> Result<(), String> {
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(cas), provider())
            .build()
            .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(PEER_SERVER_NAME).map_err(|e| e.to_string())?;
    match verifier.verify_server_cert(
        &chain[0],
        &chain[1..],
        &name,
        &[],
        chain_time(&chain[0], now),
    ) {
        Ok(_) => Ok(()),
        // Chain verified first; the name is the SAN check's business.
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
        | Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForNameContext { .. },
        )) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Verify a client chain against `cas`, as kube-apiserver's requestheader authenticator does.
fn verify_client(chain: &Certs, cas: &Certs, now: SystemTime) -> Result<(), String> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(cas), provider())
        .build()
        .map_err(|e| e.to_string())?;
    verifier
        .verify_client_cert(&chain[0], &chain[1..], chain_time(&chain[0], now))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn keys_match(chain: &Certs, key: &PrivateKeyDer<'static>) -> Result<(), String> {
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn sans(der: &CertificateDer<'_>) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok((_, c)) = x509_parser::parse_x509_certificate(der)
        && let Ok(Some(ext)) = c.subject_alternative_name()
    {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    (dns, ips)
}

/// Every PKI check, in order.
pub fn checks(d: &Detected, m: &Material, now: SystemTime) -> Vec<Check> {
    let mut out = vec![
        file_check("--tls-cert-file", &m.serving_cert, describe_certs, None),
        file_check(
            "--tls-private-key-file",
            &m.serving_key,
            |_| "private key".into(),
            None,
        ),
        file_check(
            "--client-ca-file",
            &m.client_ca,
            describe_certs,
            Some((
                "x509 client certificates cannot be authenticated",
                "set --client-ca-file on kube-apiserver (kubeadm: /etc/kubernetes/pki/ca.crt)",
            )),
        ),
        file_check(
            "--requestheader-client-ca-file",
            &m.requestheader_ca,
            describe_certs,
            Some((
                "the front-proxy path (x509 callers, peers) is off",
                "set --requestheader-client-ca-file on kube-apiserver (kubeadm: front-proxy-ca.crt)",
            )),
        ),
        file_check(
            "--proxy-client-cert-file",
            &m.proxy_cert,
            describe_certs,
            Some((
                "mvp needs the front-proxy client cert to forward x509 callers and reach peers",
                "set --proxy-client-cert-file/--proxy-client-key-file on kube-apiserver (kubeadm: front-proxy-client.crt/.key)",
            )),
        ),
        file_check(
            "--proxy-client-key-file",
            &m.proxy_key,
            |_| "private key".into(),
            Some((
                "mvp needs the front-proxy client key",
                "set --proxy-client-key-file on kube-apiserver (kubeadm: front-proxy-client.key)",
            )),
        ),
    ];
    // The peer CA is usually the client CA file: report it once.
    if m.peer_ca.path() != m.client_ca.path() {
        out.push(file_check(
            "--peer-ca-file",
            &m.peer_ca,
            describe_certs,
            Some((
                "peers' serving certs cannot be verified",
                "pass --peer-ca-file with the CA that signs apiserver serving certs",
            )),
        ));
    }

    for (flag, state) in [
        ("--tls-cert-file", &m.serving_cert),
        ("--client-ca-file", &m.client_ca),
        ("--requestheader-client-ca-file", &m.requestheader_ca),
        ("--proxy-client-cert-file", &m.proxy_cert),
        ("--peer-ca-file", &m.peer_ca),
    ] {
        if flag == "--peer-ca-file" && m.peer_ca.path() == m.client_ca.path() {
            continue;
        }
        if let Some(certs) = state.get() {
            out.push(validity_check(flag, certs, now));
        }
    }

    if let (Some(chain), Some(key)) = (m.serving_cert.get(), m.serving_key.get()) {
        out.push(match keys_match(chain, key) {
            Ok(()) => Check::pass("cert/serving-key", "serving key matches the serving cert"),
            Err(e) => Check::fail(
                "cert/serving-key",
                format!("serving key does not match the cert: {e}"),
                "point --tls-private-key-file at the key of --tls-cert-file",
            ),
        });
    }
    if let Some(chain) = m.serving_cert.get() {
        let (dns, ips) = sans(&chain[0]);
        let uncovered = |node: bool| -> Vec<String> {
            d.steer
                .iter()
                .filter(|s| (s.source == crate::detect::Source::NodeAddresses) == node)
                .map(|s| s.value.ip())
                .filter(|ip| !ips.contains(ip))
                .map(|ip| ip.to_string())
                .collect()
        };
        let mut missing = uncovered(false);
        if !dns.iter().any(|n| n == PEER_SERVER_NAME) {
            missing.push(PEER_SERVER_NAME.to_owned());
        }
        // Other node addresses (kube-apiserver binds a wildcard) were never promised by
        // the cert: their clients see the same cert from kube-apiserver today.
        let others = uncovered(true);
        let note = if others.is_empty() {
            String::new()
        } else {
            format!(
                "; other node addresses {} are not in the SANs (as with kube-apiserver itself)",
                others.join(", ")
            )
        };
        out.push(if missing.is_empty() {
            Check::pass(
                "cert/serving-sans",
                format!(
                    "serving cert covers {PEER_SERVER_NAME} and the advertised/configured addresses{note}"
                ),
            )
        } else {
            Check::fail(
                "cert/serving-sans",
                format!("serving cert SANs lack {}", missing.join(", ")),
                "reissue the apiserver serving cert with those SANs (kubeadm: apiServer.certSANs, then `kubeadm init phase certs apiserver`); clients of steered addresses would reject mvp",
            )
        });
        if let Some(cas) = m.peer_ca.get() {
            let ca_path = m.peer_ca.path().map(Path::display);
            out.push(match verify_serving(chain, cas, now) {
                Ok(()) => Check::pass(
                    "cert/serving-chain",
                    format!(
                        "serving cert chains to the peer CA {}",
                        ca_path.map(|p| p.to_string()).unwrap_or_default()
                    ),
                ),
                Err(e) => Check::fail(
                    "cert/serving-chain",
                    format!(
                        "serving cert does not chain to the peer CA {}: {e}",
                        ca_path.map(|p| p.to_string()).unwrap_or_default()
                    ),
                    "pass --peer-ca-file with the CA that signed every apiserver's serving cert (peers and mvp verify with it)",
                ),
            });
        }
    }

    if let (Some(chain), Some(key)) = (m.proxy_cert.get(), m.proxy_key.get()) {
        out.push(match keys_match(chain, key) {
            Ok(()) => Check::pass("cert/front-proxy-key", "front-proxy key matches its cert"),
            Err(e) => Check::fail(
                "cert/front-proxy-key",
                format!("front-proxy key does not match its cert: {e}"),
                "point --proxy-client-key-file at the key of --proxy-client-cert-file",
            ),
        });
    }
    if let Some(chain) = m.proxy_cert.get() {
        if let Some(cas) = m.requestheader_ca.get() {
            out.push(match verify_client(chain, cas, now) {
                Ok(()) => Check::pass(
                    "cert/front-proxy-chain",
                    "front-proxy client cert chains to the requestheader CA",
                ),
                Err(e) => Check::fail(
                    "cert/front-proxy-chain",
                    format!("front-proxy client cert does not chain to the requestheader CA: {e}"),
                    "reissue --proxy-client-cert-file from --requestheader-client-ca-file's CA (kubeadm: `kubeadm init phase certs front-proxy-client`)",
                ),
            });
        }
        let cn = subject_cn(&chain[0]);
        let allowed = &d.requestheader_allowed_names.value;
        out.push(if allowed.is_empty() {
            Check::pass(
                "requestheader/allowed-names",
                format!("any CN allowed; front-proxy CN is {cn}"),
            )
        } else if allowed.contains(&cn) {
            Check::pass(
                "requestheader/allowed-names",
                format!("front-proxy CN {cn} is in --requestheader-allowed-names"),
            )
        } else {
            Check::fail(
                "requestheader/allowed-names",
                format!(
                    "front-proxy CN {cn:?} is not in --requestheader-allowed-names ({})",
                    allowed.join(",")
                ),
                format!(
                    "add {cn} to kube-apiserver's --requestheader-allowed-names on every apiserver, or reissue the front-proxy cert with an allowed CN"
                ),
            )
        });
    }

    let user = &d.requestheader_username_headers.value;
    let group = &d.requestheader_group_headers.value;
    let has = |l: &[String], want: &str| l.iter().any(|h| h.eq_ignore_ascii_case(want));
    out.push(if user.is_empty() || group.is_empty() {
        Check::fail(
            "requestheader/headers",
            "--requestheader-username-headers or --requestheader-group-headers not set",
            "set --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group --requestheader-extra-headers-prefix=X-Remote-Extra- on kube-apiserver",
        )
    } else if !has(user, "X-Remote-User") || !has(group, "X-Remote-Group") {
        Check::warn(
            "requestheader/headers",
            format!("user headers {user:?}, group headers {group:?}"),
            "peers (mvp and upstream MVP) send X-Remote-User/X-Remote-Group: include those names on every apiserver",
        )
    } else {
        let uid = &d.requestheader_uid_headers.value;
        Check::pass(
            "requestheader/headers",
            format!(
                "user {}, group {}, extra {}, uid {}",
                user.join(","),
                group.join(","),
                d.requestheader_extra_headers_prefix.value.join(","),
                if uid.is_empty() {
                    "none (kubeadm default)".to_owned()
                } else {
                    uid.join(",")
                }
            ),
        )
    });
    out
}
