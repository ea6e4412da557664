//! The serving certificate, reloaded from disk without a restart.
//!
//! kubeadm (and cert-manager, and `kubeadm certs renew`) rewrite the apiserver's cert and key in
//! place or by rename; kube-apiserver notices and serves the new pair. mvp does the same by
//! polling the two files' identity (inode, size, mtime in ns) and swapping an `Arc` that the
//! TLS resolver hands to each new handshake. Connections already up keep the cert they got.
//! A half-written or mismatched pair is not taken: the old pair stays and the next tick retries.
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
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
    // Follow symlinks: Kubernetes secret volumes swap a `..data` symlink.
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    })
}

/// A `ResolvesServerCert` whose cert can be swapped while serving.
#[derive(Debug)]
pub struct ReloadingServerCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<(Option<FileStamp>, Option<FileStamp>)>,
}

impl ReloadingServerCert {
    /// Load the pair now; fails if it cannot (start-up must not serve without a cert).
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let seen = (stamp(cert_path), stamp(key_path));
        let key = load_certified_key(cert_path, key_path, &provider)?;
        Ok(ReloadingServerCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(seen),
        })
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().clone()
    }

    /// Reload if either file changed since the last successful load.
    /// Returns `Ok(true)` when a new pair was taken.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = (stamp(&self.cert_path), stamp(&self.key_path));
        if *self.seen.lock() == now {
            return Ok(false);
        }
        let key = load_certified_key(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.write() = Arc::new(key);
        *self.seen.lock() = now;
        Ok(true)
    }
}

impl ResolvesServerCert for ReloadingServerCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Poll the files every `interval` until the returned task is aborted.
pub fn spawn_reloader(
    cert: Arc<ReloadingServerCert>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // File reads are small and rare; a blocking read on the runtime is acceptable here,
            // but keep it off the reactor thread anyway.
            let cert = cert.clone();
            let result = tokio::task::spawn_blocking(move || cert.reload_if_changed()).await;
            match result {
                Ok(Ok(true)) => tracing::info!("serving certificate reloaded from disk"),
                Ok(Ok(false)) => {}
                Ok(Err(error)) => tracing::warn!(
                    %error,
                    "serving certificate changed on disk but could not be loaded; \
                     still serving the previous one, retrying"
                ),
                Err(error) => tracing::error!(%error, "certificate reload task failed"),
            }
        }
    })
}
