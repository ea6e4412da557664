//! A cluster PKI in kubeadm's layout, generated with rcgen (ECDSA P-256, ring).
//!
//! [`Pki::generate`] makes the shared authorities and client identities under a root
//! directory; [`Pki::write_node`] lays out one control-plane node's
//! `/etc/kubernetes/pki` equivalent (`<root>/<node>/pki/`) with its own serving cert, the
//! way kubeadm copies the CAs to every control-plane node:
//!
//! | file | what |
//! |---|---|
//! | `ca.crt`, `ca.key` | client CA, CN `kubernetes` (`--client-ca-file`) |
//! | `front-proxy-ca.crt`, `.key` | requestheader CA (`--requestheader-client-ca-file`) |
//! | `front-proxy-client.crt`, `.key` | CN `front-proxy-client` (`--proxy-client-cert-file`) |
//! | `apiserver.crt`, `.key` | serving cert for this node's addresses (`--tls-cert-file`) |
//! | `sa.key`, `sa.pub` | service-account signing key pair |
//! | `tokens.csv` | static bearer tokens (`--token-auth-file`), not kubeadm but kube's format |
//!
//! It also issues the odd credentials tests need: a client cert from an unknown CA, an
//! expired client cert, a front-proxy cert with a CN that is not allowed; and it re-issues
//! a node's serving cert ([`NodePki::rotate_serving`]).
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// CN of the front-proxy client cert, the only name `--requestheader-allowed-names` allows.
pub const FRONT_PROXY_CLIENT_CN: &str = "front-proxy-client";
/// The admin user kubeadm writes into `admin.conf`.
pub const ADMIN_USER: &str = "kubernetes-admin";
/// The admin's group.
pub const ADMIN_GROUP: &str = "system:masters";
/// The static-token user.
pub const TOKEN_USER: &str = "lab-token-user";
/// The static-token user's uid.
pub const TOKEN_UID: &str = "lab-token-uid";
/// The static-token user's groups.
pub const TOKEN_GROUPS: &[&str] = &["system:masters", "lab:token-users"];

/// DNS names every kube-apiserver serving cert carries.
pub const APISERVER_DNS_SANS: &[&str] = &[
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// A PKI failure: what was being made or written, and why.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode kubeconfig: {0}")]
    Kubeconfig(#[from] serde_yaml::Error),
}

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Generate {
        what: what.to_string(),
        source,
    }
}

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertKey {
    /// Write `<dir>/<stem>.crt` and `<dir>/<stem>.key` (key mode 0600); returns both paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), PkiError> {
        let crt = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        write_file(&crt, &self.cert_pem, false)?;
        write_file(&key, &self.key_pem, true)?;
        Ok((crt, key))
    }
}

/// A certificate authority that can sign.
struct Authority {
    cert: Certificate,
    key: KeyPair,
}

impl Authority {
    fn new(cn: &str) -> Result<Self, PkiError> {
        let what = format!("CA {cn}");
        let key = KeyPair::generate().map_err(gen_err(&what))?;
        let mut params = base_params(cn, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyCertSign,
        ];
        params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        let cert = params.self_signed(&key).map_err(gen_err(&what))?;
        Ok(Authority { cert, key })
    }

    fn pem(&self) -> CertKey {
        CertKey {
            cert_pem: self.cert.pem(),
            key_pem: self.key.serialize_pem(),
        }
    }

    fn sign(&self, what: &str, params: CertificateParams) -> Result<CertKey, PkiError> {
        let key = KeyPair::generate().map_err(gen_err(what))?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(gen_err(what))?;
        Ok(CertKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    fn client(&self, cn: &str, orgs: &[&str], what: &str) -> Result<CertKey, PkiError> {
        let mut params = base_params(cn, orgs);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(what, params)
    }
}

fn base_params(cn: &str, orgs: &[&str]) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks, like kubeadm's backdating.
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(365);
    let serial: [u8; 16] = rand::random();
    let mut serial = serial.to_vec();
    serial[0] &= 0x7f; // positive
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params
}

fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(err)?;
    }
    // Write then rename, so a reader (a watching server) never sees half a file.
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    fs::write(&tmp, contents).map_err(err)?;
    let mode = if secret { 0o600 } else { 0o644 };
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// A line of kube's static token file: `token,user,uid,"group1,group2"`.
pub fn token_csv_line(token: &str, user: &str, uid: &str, groups: &[&str]) -> String {
    format!("{token},{user},{uid},\"{}\"\n", groups.join(","))
}

/// The cluster's authorities and client identities (see the module docs for the layout).
pub struct Pki {
    root: PathBuf,
    ca: Authority,
    front_proxy_ca: Authority,
    front_proxy_client: CertKey,
    sa: KeyPair,
    admin: CertKey,
    token: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("root", &self.root).finish()
    }
}

impl Pki {
    /// Generate the authorities, the front-proxy client, the admin cert and a bearer
    /// token; writes `ca.crt`, `front-proxy-ca.crt`, `admin.crt/.key` and `tokens.csv` to
    /// `root` (node layouts come from [`Pki::write_node`]).
    pub fn generate(root: &Path) -> Result<Pki, PkiError> {
        let ca = Authority::new("kubernetes")?;
        let front_proxy_ca = Authority::new("front-proxy-ca")?;
        let front_proxy_client =
            front_proxy_ca.client(FRONT_PROXY_CLIENT_CN, &[], "front-proxy client cert")?;
        let sa = KeyPair::generate().map_err(gen_err("service-account key"))?;
        let admin = ca.client(ADMIN_USER, &[ADMIN_GROUP], "admin client cert")?;
        let token = hex::encode(rand::random::<[u8; 16]>());
        let pki = Pki {
            root: root.to_path_buf(),
            ca,
            front_proxy_ca,
            front_proxy_client,
            sa,
            admin,
            token,
        };
        write_file(&root.join("ca.crt"), &pki.ca.cert.pem(), false)?;
        write_file(
            &root.join("front-proxy-ca.crt"),
            &pki.front_proxy_ca.cert.pem(),
            false,
        )?;
        pki.admin.write(root, "admin")?;
        write_file(&root.join("tokens.csv"), &pki.tokens_csv(), true)?;
        Ok(pki)
    }

    /// The directory this PKI lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The client CA (`ca.crt`), PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.cert.pem()
    }

    /// The requestheader CA (`front-proxy-ca.crt`), PEM.
    pub fn front_proxy_ca_pem(&self) -> String {
        self.front_proxy_ca.cert.pem()
    }

    /// The front-proxy client identity (CN `front-proxy-client`).
    pub fn front_proxy_client(&self) -> &CertKey {
        &self.front_proxy_client
    }

    /// The admin client cert (CN `kubernetes-admin`, O `system:masters`).
    pub fn admin(&self) -> &CertKey {
        &self.admin
    }

    /// The bearer token of [`TOKEN_USER`].
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The static token file's contents.
    pub fn tokens_csv(&self) -> String {
        token_csv_line(&self.token, TOKEN_USER, TOKEN_UID, TOKEN_GROUPS)
    }

    /// A client cert signed by the client CA for any user and groups.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<CertKey, PkiError> {
        self.ca.client(user, groups, "client cert")
    }

    /// A client cert signed by the client CA whose validity ended an hour ago.
    pub fn expired_client_cert(&self, user: &str, groups: &[&str]) -> Result<CertKey, PkiError> {
        let mut params = base_params(user, groups);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(30);
        params.not_after = now - Duration::hours(1);
        self.ca.sign("expired client cert", params)
    }

    /// A client cert from a fresh CA nobody trusts (CN `kubernetes`, like the real one).
    pub fn unknown_ca_client_cert(user: &str, groups: &[&str]) -> Result<CertKey, PkiError> {
        Authority::new("kubernetes")?.client(user, groups, "client cert from an unknown CA")
    }

    /// A cert signed by the front-proxy CA with any CN (e.g. one not in
    /// `--requestheader-allowed-names`).
    pub fn front_proxy_cert(&self, cn: &str) -> Result<CertKey, PkiError> {
        self.front_proxy_ca.client(cn, &[], "front-proxy cert")
    }

    /// The serving cert for a node: `ips` plus 127.0.0.1, ::1 and the usual DNS names.
    pub fn serving_cert(&self, node: &str, ips: &[IpAddr]) -> Result<CertKey, PkiError> {
        let mut params = base_params("kube-apiserver", &[]);
        let mut sans: Vec<SanType> = Vec::new();
        sans.push(SanType::DnsName(
            node.try_into().map_err(gen_err("serving cert SAN"))?,
        ));
        for dns in APISERVER_DNS_SANS {
            sans.push(SanType::DnsName(
                (*dns).try_into().map_err(gen_err("serving cert SAN"))?,
            ));
        }
        let mut all_ips: Vec<IpAddr> = ips.to_vec();
        for lo in [
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ] {
            if !all_ips.contains(&lo) {
                all_ips.push(lo);
            }
        }
        sans.extend(all_ips.into_iter().map(SanType::IpAddress));
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.ca.sign("apiserver serving cert", params)
    }

    /// Lay out `<root>/<node>/pki/` like kubeadm's `/etc/kubernetes/pki` on a control-plane
    /// node, with a serving cert for `ips`.
    pub fn write_node(&self, node: &str, ips: &[IpAddr]) -> Result<NodePki, PkiError> {
        let dir = self.root.join(node).join("pki");
        self.ca.pem().write(&dir, "ca")?;
        self.front_proxy_ca.pem().write(&dir, "front-proxy-ca")?;
        self.front_proxy_client.write(&dir, "front-proxy-client")?;
        write_file(&dir.join("sa.key"), &self.sa.serialize_pem(), true)?;
        write_file(&dir.join("sa.pub"), &self.sa.public_key_pem(), false)?;
        write_file(&dir.join("tokens.csv"), &self.tokens_csv(), true)?;
        let node_pki = NodePki {
            name: node.to_string(),
            dir,
            ips: ips.to_vec(),
        };
        node_pki.rotate_serving(self)?;
        Ok(node_pki)
    }
}

/// One node's PKI directory (kubeadm's `/etc/kubernetes/pki`).
#[derive(Debug, Clone)]
pub struct NodePki {
    name: String,
    dir: PathBuf,
    ips: Vec<IpAddr>,
}

impl NodePki {
    /// The directory (`.../<node>/pki`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn ca_crt(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn front_proxy_ca_crt(&self) -> PathBuf {
        self.dir.join("front-proxy-ca.crt")
    }
    pub fn front_proxy_client_crt(&self) -> PathBuf {
        self.dir.join("front-proxy-client.crt")
    }
    pub fn front_proxy_client_key(&self) -> PathBuf {
        self.dir.join("front-proxy-client.key")
    }
    pub fn apiserver_crt(&self) -> PathBuf {
        self.dir.join("apiserver.crt")
    }
    pub fn apiserver_key(&self) -> PathBuf {
        self.dir.join("apiserver.key")
    }
    pub fn tokens_csv(&self) -> PathBuf {
        self.dir.join("tokens.csv")
    }

    /// The serving cert now on disk, PEM.
    pub fn serving_cert_pem(&self) -> Result<String, PkiError> {
        let path = self.apiserver_crt();
        fs::read_to_string(&path).map_err(|source| PkiError::Read { path, source })
    }

    /// Re-issue `apiserver.crt`/`.key` (new key, new serial, same SANs), replacing the files
    /// atomically; returns the new pair.
    pub fn rotate_serving(&self, pki: &Pki) -> Result<CertKey, PkiError> {
        let pair = pki.serving_cert(&self.name, &self.ips)?;
        // Key first: a server reloading on the cert's change then finds the matching key.
        write_file(&self.apiserver_key(), &pair.key_pem, true)?;
        write_file(&self.apiserver_crt(), &pair.cert_pem, false)?;
        Ok(pair)
    }
}

/// How a kubeconfig user authenticates.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A client certificate (embedded as `client-certificate-data`).
    Cert(CertKey),
    /// A bearer token.
    Token(String),
}

/// A single-context kubeconfig with every secret embedded (`*-data`).
#[derive(Debug, Clone)]
pub struct Kubeconfig {
    pub server: String,
    pub ca_pem: String,
    pub user: String,
    pub credentials: Credentials,
}

impl Kubeconfig {
    /// The admin kubeconfig for `server` (e.g. `https://198.18.0.11:6443`).
    pub fn admin(pki: &Pki, server: &str) -> Self {
        Kubeconfig {
            server: server.to_string(),
            ca_pem: pki.ca_pem(),
            user: ADMIN_USER.to_string(),
            credentials: Credentials::Cert(pki.admin().clone()),
        }
    }

    /// The bearer-token kubeconfig for `server`.
    pub fn token(pki: &Pki, server: &str) -> Self {
        Kubeconfig {
            server: server.to_string(),
            ca_pem: pki.ca_pem(),
            user: TOKEN_USER.to_string(),
            credentials: Credentials::Token(pki.token().to_string()),
        }
    }

    /// The kubeconfig as YAML.
    pub fn to_yaml(&self) -> Result<String, PkiError> {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let user = match &self.credentials {
            Credentials::Cert(ck) => serde_json::json!({
                "client-certificate-data": b64(&ck.cert_pem),
                "client-key-data": b64(&ck.key_pem),
            }),
            Credentials::Token(t) => serde_json::json!({ "token": t }),
        };
        let doc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "lab",
                "cluster": {
                    "server": self.server,
                    "certificate-authority-data": b64(&self.ca_pem),
                },
            }],
            "users": [{ "name": self.user, "user": user }],
            "contexts": [{
                "name": "lab",
                "context": { "cluster": "lab", "user": self.user, "namespace": "default" },
            }],
            "current-context": "lab",
            "preferences": {},
        });
        Ok(serde_yaml::to_string(&doc)?)
    }

    /// Write the kubeconfig (mode 0600).
    pub fn write(&self, path: &Path) -> Result<(), PkiError> {
        write_file(path, &self.to_yaml()?, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pem: &str) -> x509_parser::pem::Pem {
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap().1
    }

    #[test]
    fn node_layout_and_serving_sans() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(dir.path()).unwrap();
        let ip: IpAddr = "198.18.0.11".parse().unwrap();
        let node = pki.write_node("node-a", &[ip]).unwrap();
        for f in [
            "ca.crt",
            "ca.key",
            "front-proxy-ca.crt",
            "front-proxy-ca.key",
            "front-proxy-client.crt",
            "front-proxy-client.key",
            "apiserver.crt",
            "apiserver.key",
            "sa.key",
            "sa.pub",
            "tokens.csv",
        ] {
            assert!(node.dir().join(f).is_file(), "{f} missing");
        }
        let pem = node.serving_cert_pem().unwrap();
        let p = parse(&pem);
        let cert = p.parse_x509().unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        let names: Vec<String> = san.general_names.iter().map(|g| format!("{g:?}")).collect();
        let joined = names.join(" ");
        for want in [
            "kubernetes.default.svc.cluster.local",
            "localhost",
            "node-a",
        ] {
            assert!(joined.contains(want), "{want} not in {joined}");
        }
        // 198.18.0.11, 127.0.0.1 and ::1 (16 bytes) as IP SANs.
        let ips: Vec<&[u8]> = san
            .general_names
            .iter()
            .filter_map(|g| match g {
                x509_parser::extensions::GeneralName::IPAddress(b) => Some(*b),
                _ => None,
            })
            .collect();
        assert!(ips.contains(&&[198u8, 18, 0, 11][..]));
        assert!(ips.contains(&&[127u8, 0, 0, 1][..]));
        assert!(ips.iter().any(|b| b.len() == 16));

        let rotated = node.rotate_serving(&pki).unwrap();
        assert_ne!(rotated.cert_pem, pem);
        assert_eq!(node.serving_cert_pem().unwrap(), rotated.cert_pem);
    }

    #[test]
    fn admin_subject_and_expired_validity() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(dir.path()).unwrap();
        let admin = parse(&pki.admin().cert_pem);
        let admin = admin.parse_x509().unwrap();
        let subject = admin.subject().to_string();
        assert!(subject.contains("CN=kubernetes-admin"), "{subject}");
        assert!(subject.contains("O=system:masters"), "{subject}");
        assert!(admin.validity().is_valid());

        let expired = pki.expired_client_cert("late", &[]).unwrap();
        let expired = parse(&expired.cert_pem);
        assert!(!expired.parse_x509().unwrap().validity().is_valid());

        let csv = std::fs::read_to_string(dir.path().join("tokens.csv")).unwrap();
        assert_eq!(
            csv,
            format!(
                "{},lab-token-user,lab-token-uid,\"system:masters,lab:token-users\"\n",
                pki.token()
            )
        );
    }

    #[test]
    fn kubeconfig_embeds_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(dir.path()).unwrap();
        let y = Kubeconfig::admin(&pki, "https://198.18.0.11:6443")
            .to_yaml()
            .unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&y).unwrap();
        assert_eq!(
            v["clusters"][0]["cluster"]["server"].as_str(),
            Some("https://198.18.0.11:6443")
        );
        assert!(v["users"][0]["user"]["client-key-data"].is_string());
        let t = Kubeconfig::token(&pki, "https://x:6443").to_yaml().unwrap();
        assert!(t.contains(pki.token()));
    }
}
