//! A throw-away single-member etcd (the real `/usr/bin/etcd`) on free loopback ports,
//! killed and its data removed on drop. Small on purpose; the lab control plane may grow
//! its own.
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Failures starting etcd.
#[derive(Debug, thiserror::Error)]
pub enum TestEtcdError {
    #[error("creating etcd's data dir: {0}")]
    TempDir(std::io::Error),
    #[error("finding a free port: {0}")]
    Port(std::io::Error),
    #[error("starting {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
}

/// A running etcd.
pub struct TestEtcd {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn healthy(port: u16) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    if out.contains("\"health\":\"true\"") {
        Ok(())
    } else {
        Err(format!("etcd not healthy yet: {out}"))
    }
}

impl TestEtcd {
    /// Starts etcd (`$MVP_ETCD` or `etcd` on PATH) and waits until `/health` says true.
    pub fn start() -> Result<TestEtcd, TestEtcdError> {
        let dir = tempfile::tempdir().map_err(TestEtcdError::TempDir)?;
        let client = free_port().map_err(TestEtcdError::Port)?;
        let peer = free_port().map_err(TestEtcdError::Port)?;
        let bin = std::env::var_os("MVP_ETCD")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("etcd"));
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(&bin)
            .arg("--name=lab")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=lab={peer_url}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| TestEtcdError::Spawn { bin, source })?;
        let etcd = TestEtcd {
            child,
            endpoint: client_url,
            _dir: dir,
        };
        crate::eventually::eventually("etcd to report healthy", || healthy(client));
        Ok(etcd)
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
