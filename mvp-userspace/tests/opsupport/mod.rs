//! Operator-test support: a generated PKI laid out like kubeadm's, the kubeadm fixture
//! manifest rewritten to point at it, and fake /proc trees.
#![allow(dead_code)] // each test binary uses a different subset

pub mod apiserver;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The fixture's advertise address.
pub const NODE_IP: &str = "192.168.56.11";

pub fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MVP_FIXTURES") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("shared/fixtures"))
        .find(|d| d.is_dir())
        .expect("shared/fixtures not found above the crate: set MVP_FIXTURES")
}

pub struct Ca {
    pub cert: Certificate,
    pub key: KeyPair,
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }
}

/// How the generated PKI deviates from a good kubeadm one.
#[derive(Clone, Debug)]
pub struct PkiSpec {
    /// IP SANs of the serving cert.
    pub serving_ips: Vec<IpAddr>,
    /// Serving cert signed by an unrelated CA.
    pub serving_wrong_ca: bool,
    /// Serving cert expired (2020–2021).
    pub serving_expired: bool,
    /// Serving cert expiring in 10 days.
    pub serving_expires_soon: bool,
    /// Front-proxy client signed by an unrelated CA.
    pub front_proxy_wrong_ca: bool,
    /// CN of the front-proxy client.
    pub front_proxy_cn: String,
    /// Leave out front-proxy-client.crt.
    pub omit_front_proxy_cert: bool,
}

impl Default for PkiSpec {
    fn default() -> Self {
        PkiSpec {
            serving_ips: vec![NODE_IP.parse().unwrap(), "10.96.0.1".parse().unwrap()],
            serving_wrong_ca: false,
            serving_expired: false,
            serving_expires_soon: false,
            front_proxy_wrong_ca: false,
            front_proxy_cn: "front-proxy-client".into(),
            omit_front_proxy_cert: false,
        }
    }
}

/// A kubeadm-shaped PKI in `dir`: ca.crt/key, front-proxy-ca.crt/key,
/// front-proxy-client.crt/key, apiserver.crt/key.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: Ca,
    pub front_proxy_ca: Ca,
}

fn write(dir: &Path, name: &str, cert: &Certificate, key: &KeyPair) {
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

impl Pki {
    pub fn generate(dir: &Path, spec: &PkiSpec) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let ca = Ca::new("kubernetes");
        let front_proxy_ca = Ca::new("front-proxy-ca");
        let other = Ca::new("someone-else");
        write(dir, "ca", &ca.cert, &ca.key);
        write(
            dir,
            "front-proxy-ca",
            &front_proxy_ca.cert,
            &front_proxy_ca.key,
        );

        let mut sans: Vec<String> = [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "node1",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        sans.extend(spec.serving_ips.iter().map(IpAddr::to_string));
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(365);
        if spec.serving_expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        if spec.serving_expires_soon {
            p.not_after = now + time::Duration::days(10);
        }
        let key = KeyPair::generate().unwrap();
        let signer = if spec.serving_wrong_ca { &other } else { &ca };
        let cert = p.signed_by(&key, &signer.cert, &signer.key).unwrap();
        write(dir, "apiserver", &cert, &key);

        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, spec.front_proxy_cn.as_str());
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(365);
        let key = KeyPair::generate().unwrap();
        let signer = if spec.front_proxy_wrong_ca {
            &other
        } else {
            &front_proxy_ca
        };
        let cert = p.signed_by(&key, &signer.cert, &signer.key).unwrap();
        write(dir, "front-proxy-client", &cert, &key);
        if spec.omit_front_proxy_cert {
            std::fs::remove_file(dir.join("front-proxy-client.crt")).unwrap();
        }
        Pki {
            dir: dir.to_owned(),
            ca,
            front_proxy_ca,
        }
    }
}

/// The kubeadm fixture manifest's text with /etc/kubernetes/pki → `pki_dir`.
pub fn manifest_text(pki_dir: &Path) -> String {
    let text = std::fs::read_to_string(fixtures_dir().join("kubeadm/kube-apiserver.yaml")).unwrap();
    text.replace("/etc/kubernetes/pki", pki_dir.to_str().unwrap())
}

/// Write the rewritten manifest into `dir`; returns its path.
pub fn write_manifest(dir: &Path, pki_dir: &Path) -> PathBuf {
    let path = dir.join("kube-apiserver.yaml");
    std::fs::write(&path, manifest_text(pki_dir)).unwrap();
    path
}

/// The fixture's kube-apiserver command line (argv, from the rewritten manifest).
pub fn manifest_argv(pki_dir: &Path) -> Vec<String> {
    let v: serde_yaml::Value = serde_yaml::from_str(&manifest_text(pki_dir)).unwrap();
    v["spec"]["containers"][0]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// A fake /proc under `root` with one process per (pid, argv).
pub fn fake_proc(root: &Path, procs: &[(u32, Vec<String>)]) {
    for (pid, argv) in procs {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let mut raw = Vec::new();
        for a in argv {
            raw.extend_from_slice(a.as_bytes());
            raw.push(0);
        }
        std::fs::write(dir.join("cmdline"), raw).unwrap();
    }
    // Non-process entries of a real /proc.
    std::fs::create_dir_all(root.join("sys")).unwrap();
    std::fs::write(root.join("uptime"), "1.0 1.0\n").unwrap();
}
