//! A real, throw-away etcd for tests and the lab: `/usr/bin/etcd` (or `MVP_ETCD`) on a
//! temporary data dir — [`Etcd::start`] on free loopback ports, [`Etcd::start_in`] inside a
//! network namespace on a segment address (the lab's one shared etcd); killed (and its data
//! dir removed) on drop, also on panic.
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::netns::Netns;

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

/// A running single-member etcd (on loopback, or on an address in a lab namespace).
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

fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.contains("\"health\":\"true\"")
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

impl Etcd {
    /// Start etcd on loopback (free ports) and wait (with [`crate::eventually::patience`])
    /// until `/health` is true.
    pub fn start() -> Result<Etcd, EtcdError> {
        let dir = tempfile::Builder::new()
            .prefix("mvp-etcd-")
            .tempdir()
            .map_err(EtcdError::TempDir)?;
        let client = free_port()?;
        let mut peer = free_port()?;
        while peer == client {
            peer = free_port()?;
        }
        let lo = IpAddr::from([127, 0, 0, 1]);
        Self::launch(
            None,
            dir,
            SocketAddr::new(lo, client),
            SocketAddr::new(lo, peer),
        )
    }

    /// Start etcd inside network namespace `ns`, serving clients on `addr:2379` (and on
    /// the namespace's loopback), with its data dir under `parent` — for a lab whose nodes
    /// live in other namespaces on the same segment. The process gets its own process
    /// group, so a terminal's Ctrl-C reaches only the owner, which stops it in order.
    pub fn start_in(ns: &Netns, addr: IpAddr, parent: &Path) -> Result<Etcd, EtcdError> {
        let dir = tempfile::Builder::new()
            .prefix("etcd-")
            .tempdir_in(parent)
            .map_err(EtcdError::TempDir)?;
        let lo = IpAddr::from([127, 0, 0, 1]);
        Self::launch(
            Some(ns),
            dir,
            SocketAddr::new(addr, 2379),
            SocketAddr::new(lo, 2380),
        )
    }

    fn launch(
        ns: Option<&Netns>,
        dir: tempfile::TempDir,
        client: SocketAddr,
        peer: SocketAddr,
    ) -> Result<Etcd, EtcdError> {
        let binary = std::env::var_os("MVP_ETCD")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
        let endpoint = url(client);
        let mut listen = endpoint.clone();
        if !client.ip().is_loopback() {
            listen.push_str(&format!(",http://127.0.0.1:{}", client.port()));
        }
        let peer_url = url(peer);
        let log_path = dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).map_err(EtcdError::TempDir)?;
        let log2 = log.try_clone().map_err(EtcdError::TempDir)?;
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = ns.command(&binary);
                c.process_group(0);
                c
            }
            None => Command::new(&binary),
        };
        let child = cmd
            .arg("--name=lab")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={listen}"))
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
        let check = || match ns {
            Some(ns) => ns.try_run(|| healthy(client)).unwrap_or(false),
            None => healthy(client),
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
            if check() {
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

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The etcd log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
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
