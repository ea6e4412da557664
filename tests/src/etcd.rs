//! A real, throw-away etcd for tests and the lab: `/usr/bin/etcd` (or `MVP_ETCD`) on a
//! temporary data dir with free loopback client and peer ports; killed (and its data dir
//! removed) on drop, also on panic.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Why an etcd could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd: cannot create a temporary data dir: {0}; check that $TMPDIR is writable")]
    TempDir(#[source] std::io::Error),
    #[error("etcd: cannot pick a free loopback port: {0}")]
    Port(#[source] std::io::Error),
    #[error(
        "etcd: cannot run {binary}: {source}; install etcd (Debian package `etcd-server`) or set MVP_ETCD"
    )]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd exited before becoming healthy ({status}); its log:\n{log}")]
    Exited { status: String, log: String },
    #[error("etcd did not become healthy on {endpoint} within {patience:?}; its log:\n{log}")]
    Unhealthy {
        endpoint: String,
        patience: Duration,
        log: String,
    },
}

/// A running single-member etcd on loopback.
#[derive(Debug)]
pub struct Etcd {
    child: Child,
    endpoint: String,
    dir: tempfile::TempDir,
}

fn free_port() -> Result<u16, EtcdError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(EtcdError::Port)?;
    Ok(l.local_addr().map_err(EtcdError::Port)?.port())
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains("\"health\":\"true\"")
}

impl Etcd {
    /// Start etcd and wait (with [`crate::eventually::patience`]) until `/health` is true.
    pub fn start() -> Result<Etcd, EtcdError> {
        let binary = std::env::var_os("MVP_ETCD")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
        let dir = tempfile::Builder::new()
            .prefix("mvp-etcd-")
            .tempdir()
            .map_err(EtcdError::TempDir)?;
        let client = free_port()?;
        let mut peer = free_port()?;
        while peer == client {
            peer = free_port()?;
        }
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log_path = dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).map_err(EtcdError::TempDir)?;
        let log2 = log.try_clone().map_err(EtcdError::TempDir)?;
        let child = Command::new(&binary)
            .arg("--name=lab")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=lab={peer_url}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| EtcdError::Spawn {
                binary: binary.clone(),
                source,
            })?;
        let mut etcd = Etcd {
            child,
            endpoint,
            dir,
        };
        let patience = crate::eventually::patience();
        let deadline = std::time::Instant::now() + patience;
        let mut delay = Duration::from_millis(20);
        loop {
            if let Ok(Some(status)) = etcd.child.try_wait() {
                return Err(EtcdError::Exited {
                    status: status.to_string(),
                    log: etcd.log(),
                });
            }
            if healthy(client) {
                return Ok(etcd);
            }
            if std::time::Instant::now() >= deadline {
                return Err(EtcdError::Unhealthy {
                    endpoint: etcd.endpoint.clone(),
                    patience,
                    log: etcd.log(),
                });
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// etcd's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
