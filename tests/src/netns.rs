//! Network namespaces and links for tests and the lab, made with iproute2 and removed on
//! drop — also when a test panics. Names carry the creating pid (`mvpt<pid>x<n>`), so
//! [`cleanup_stale`] can remove what a crashed earlier run left behind.
use std::ffi::OsStr;
use std::fs::File;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every namespace this crate creates.
pub const PREFIX: &str = "mvpt";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// An error from the `ip` tool, with the command that failed.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed: {detail}")]
pub struct NetnsError {
    command: String,
    detail: String,
}

fn run_ip(args: &[&str]) -> Result<String, NetnsError> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetnsError {
            command: command.clone(),
            detail: format!("cannot run ip (install iproute2): {e}"),
        })?;
    if !out.status.success() {
        return Err(NetnsError {
            command,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace named `mvpt<pid>x<n>`, with `lo` up. Dropping it kills every
/// process still inside and deletes it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Create a fresh namespace with loopback up.
    pub fn new() -> Result<Self, NetnsError> {
        let name = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run_ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind-mount path, usable as `mvp run --netns PATH`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Run `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<String, NetnsError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ip(&full)
    }

    /// A command that runs `program` inside this namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Add an address (CIDR form, v4 or v6) to `dev`; IPv6 without duplicate detection so
    /// it is usable at once.
    pub fn add_addr(&self, dev: &str, cidr: &str) -> Result<(), NetnsError> {
        if cidr.contains(':') {
            self.ip(&["-6", "addr", "add", cidr, "dev", dev, "nodad"])?;
        } else {
            self.ip(&["addr", "add", cidr, "dev", dev])?;
        }
        Ok(())
    }

    /// Run `f` on a new OS thread that has joined this namespace (setns is per thread),
    /// and return its result. Sockets made inside `f` belong to this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.try_run(f).expect("enter test namespace")
    }

    /// Like [`Netns::run`], but entering the namespace failing is an error, not a panic.
    pub fn try_run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let enter_err = |detail: String| NetnsError {
            command: format!("setns {}", self.path().display()),
            detail,
        };
        let file = File::open(self.path()).map_err(|e| enter_err(e.to_string()))?;
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| e.to_string())?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
        .map_err(enter_err)
    }

    /// PIDs of processes inside the namespace.
    pub fn pids(&self) -> Vec<i32> {
        run_ip(&["netns", "pids", &self.name])
            .map(|s| {
                s.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove_namespace(&self.name);
    }
}

fn remove_namespace(name: &str) {
    if let Ok(pids) = run_ip(&["netns", "pids", name]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    if let Err(e) = run_ip(&["netns", "del", name]) {
        eprintln!("warning: could not remove network namespace {name}: {e}");
    }
}

/// Connect `a` and `b` with a veth pair named `a_if` (in `a`) and `b_if` (in `b`), both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<(), NetnsError> {
    a.ip(&[
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// A shared link: a bridge in its own hub namespace. Each attached namespace gets an
/// interface (default `eth0`) on the bridge, like hosts on one switch.
#[derive(Debug)]
pub struct Segment {
    hub: Netns,
    ports: u32,
}

impl Segment {
    /// A new, empty segment.
    pub fn new() -> Result<Self, NetnsError> {
        let hub = Netns::new()?;
        hub.ip(&["link", "add", "br0", "type", "bridge"])?;
        hub.ip(&["link", "set", "br0", "up"])?;
        Ok(Segment { hub, ports: 0 })
    }

    /// Plug `ns` into the segment as interface `ifname` with the given addresses (CIDR).
    pub fn attach(&mut self, ns: &Netns, ifname: &str, addrs: &[&str]) -> Result<(), NetnsError> {
        let port = format!("p{}", self.ports);
        self.ports += 1;
        veth(&self.hub, &port, ns, ifname)?;
        self.hub.ip(&["link", "set", &port, "master", "br0"])?;
        for a in addrs {
            ns.add_addr(ifname, a)?;
        }
        Ok(())
    }

    /// The hub namespace (holds the bridge).
    pub fn hub(&self) -> &Netns {
        &self.hub
    }
}

/// Remove namespaces named by this crate whose creating process is gone (a crashed or
/// killed earlier run). Returns how many were removed.
pub fn cleanup_stale() -> usize {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !PathBuf::from(format!("/proc/{pid}")).exists() {
            remove_namespace(&name);
            removed += 1;
        }
    }
    removed
}
