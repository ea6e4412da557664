//! TLS material reloaded from disk without a restart.
//!
//! kubeadm (`kubeadm certs renew`), cert-manager and Kubernetes secret volumes rewrite certs in
//! place or by rename; kube-apiserver notices and uses the new files. mvp does the same for
//! everything it reads: the serving pair (new handshakes get the new cert), the front-proxy
//! client pair (new upstream connections present the new cert) and the client CAs (new
//! connections are judged against the new bundles). Files are polled by identity (device,
//! inode, size, mtime in ns; symlinks followed) and the parsed result swapped behind an `Arc`.
//! A half-written or mismatched pair is not taken: the old one stays, the next tick retries.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{TlsError, load_certified_key};

/// Identity of a file's current content, cheap to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    })
}

/// A set of files and the stamps of their last successful load.
#[derive(Debug)]
pub struct WatchedFiles {
    paths: Vec<PathBuf>,
    seen: Mutex<Vec<Option<FileStamp>>>,
}

impl WatchedFiles {
    /// Start watching `paths` as they are now (call before the first load).
    pub fn new(paths: Vec<PathBuf>) -> Self {
        let seen = paths.iter().map(|p| stamp(p)).collect();
        WatchedFiles {
            paths,
            seen: Mutex::new(seen),
        }
    }

    /// Run `load` if any file changed since the last successful load; keep the new stamps
    /// only if it succeeded. `Ok(true)` when something was loaded.
    pub fn reload_with(
        &self,
        load: impl FnOnce() -> Result<(), TlsError>,
    ) -> Result<bool, TlsError> {
        let now: Vec<_> = self.paths.iter().map(|p| stamp(p)).collect();
        if *self.seen.lock() == now {
            return Ok(false);
        }
        load()?;
        *self.seen.lock() = now;
        Ok(true)
    }
}

/// Something that reloads itself from files when they change.
pub trait Reload: Send + Sync + 'static {
    /// What this is, for logs (e.g. "--tls-cert-file/--tls-private-key-file").
    fn what(&self) -> &str;
    /// Reload if the files changed. `Ok(true)` when new material was taken.
    fn reload_if_changed(&self) -> Result<bool, TlsError>;
}

/// A cert/key pair that can be swapped while in use: a `ResolvesServerCert` for serving and a
/// `ResolvesClientCert` for mvp's front-proxy client certificate.
#[derive(Debug)]
pub struct ReloadingKeyPair {
    what: String,
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    files: WatchedFiles,
}

impl ReloadingKeyPair {
    /// Load the pair now; fails if it cannot (start-up must not run without it).
    pub fn load(
        what: &str,
        cert_path: &Path,
        key_path: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let files = WatchedFiles::new(vec![cert_path.to_owned(), key_path.to_owned()]);
        let key = load_certified_key(cert_path, key_path, &provider)?;
        Ok(ReloadingKeyPair {
            what: what.to_owned(),
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: RwLock::new(Arc::new(key)),
            files,
        })
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().clone()
    }
}

impl Reload for ReloadingKeyPair {
    fn what(&self) -> &str {
        &self.what
    }

    fn reload_if_changed(&self) -> Result<bool, TlsError> {
        self.files.reload_with(|| {
            let key = load_certified_key(&self.cert_path, &self.key_path, &self.provider)?;
            *self.current.write() = Arc::new(key);
            Ok(())
        })
    }
}

impl ResolvesServerCert for ReloadingKeyPair {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for ReloadingKeyPair {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Poll every `reloadable` each `interval` until the returned task is aborted.
pub fn spawn_reloader(
    reloadable: Vec<Arc<dyn Reload>>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            for item in &reloadable {
                // Small, rare file reads: keep them off the reactor threads anyway.
                let item = item.clone();
                let result = tokio::task::spawn_blocking(move || {
                    let result = item.reload_if_changed();
                    (item, result)
                })
                .await;
                match result {
                    Ok((item, Ok(true))) => {
                        tracing::info!(what = item.what(), "reloaded from disk")
                    }
                    Ok((_, Ok(false))) => {}
                    Ok((item, Err(error))) => tracing::warn!(
                        what = item.what(),
                        %error,
                        "changed on disk but could not be loaded; keeping the previous one, retrying"
                    ),
                    Err(error) => tracing::error!(%error, "TLS reload task failed"),
                }
            }
        }
    })
}
