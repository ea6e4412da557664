//! eBPF sk_lookup steering: the only module tree that talks to the kernel beyond
//! ordinary sockets (bpf(), setns, map updates).
//!
//! - [`Steering`] loads the program, fills the steer set and attaches one unpinned link
//!   to a network namespace (process exit detaches it: fail-open).
//! - [`listener`]: [`ListenerSource`] — plain bind, or bind + register in the SOCKMAP.
//! - [`upstream`]: [`UpstreamConnector`] — plain connect, or connect through the bypass map.
//!
//! Being in the SOCKMAP is the readiness state: an empty slot makes the program pass
//! and the kernel's normal lookup delivers the connection to whoever listens behind.
pub mod listener;
pub mod upstream;

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mvp_common::{Counter, EndpointKey};

pub use listener::{ListenError, ListenerSource, PlainListeners, SteeredListeners};
pub use upstream::{BypassConnector, ConnectError, DirectConnector, Upstream, UpstreamConnector};

/// Errors of the steering boundary (loading, attaching, map updates).
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// Built with `AYA_BUILD_SKIP=1`: there is no program to load.
    #[error(
        "steer: this mvp was built without the eBPF object (AYA_BUILD_SKIP=1); rebuild without it to steer"
    )]
    NotBuilt,
    /// Missing privileges for bpf() or setns().
    #[error(
        "steer: {what} needs privileges: run mvp as root (or with CAP_BPF, CAP_NET_ADMIN and, for --netns, CAP_SYS_ADMIN)"
    )]
    Permission {
        /// What was attempted.
        what: &'static str,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The kernel cannot run sk_lookup programs.
    #[error(
        "steer: this kernel does not support BPF sk_lookup programs (needs Linux >= 5.9 with CONFIG_BPF_SYSCALL); mvp cannot steer here"
    )]
    Unsupported,
    /// The network namespace file could not be opened or joined.
    #[error("steer: cannot use network namespace {path}: check the path (e.g. /run/netns/NAME)")]
    Netns {
        /// The namespace path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Any other failure of the eBPF layer: a bug or an unusual kernel.
    #[error(
        "steer: {what} failed (a bug or an unusual kernel; please report with the kernel version)"
    )]
    Ebpf {
        /// What was attempted.
        what: &'static str,
        /// The underlying aya error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SteerError {
    /// Whether retrying the same operation could succeed without operator action.
    pub fn retry_allowed(&self) -> bool {
        false
    }

    // Without the eBPF object nothing is loaded, so nothing needs classifying.
    #[cfg_attr(mvp_no_ebpf, allow(dead_code))]
    fn classify(
        what: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> SteerError {
        if let Some(code) = os_error(&source)
            && code == nix::libc::EPERM
        {
            return SteerError::Permission {
                what,
                source: io::Error::from_raw_os_error(code),
            };
        }
        SteerError::Ebpf {
            what,
            source: Box::new(source),
        }
    }
}

/// The first OS error code in an error's source chain.
#[cfg_attr(mvp_no_ebpf, allow(dead_code))]
fn os_error(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(code) = e
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            return Some(code);
        }
        cur = e.source();
    }
    None
}

/// Join the network namespace at `path` with the calling thread. Call before starting
/// any other thread: threads inherit the namespace of their creator, so every socket
/// mvp opens afterwards (listeners, upstreams, admin) lives in that namespace.
pub fn enter_netns(path: &Path) -> Result<(), SteerError> {
    let file = File::open(path).map_err(|source| SteerError::Netns {
        path: path.to_path_buf(),
        source,
    })?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|errno| {
        let source = io::Error::from_raw_os_error(errno as i32);
        if errno == nix::errno::Errno::EPERM {
            SteerError::Permission {
                what: "joining a network namespace",
                source,
            }
        } else {
            SteerError::Netns {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Steering counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    values: [u64; mvp_common::COUNTERS as usize],
}

impl Counters {
    /// Value of one counter.
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c.index() as usize]
    }

    /// All counters with their names.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.iter().map(|c| (*c, self.get(*c)))
    }

    /// Build from explicit values (tests, other sources).
    pub fn from_values(values: [u64; mvp_common::COUNTERS as usize]) -> Counters {
        Counters { values }
    }
}

#[cfg(not(mvp_no_ebpf))]
mod maps {
    use aya::maps::{HashMap, MapData, PerCpuArray, SockMap};
    use parking_lot::Mutex;

    use super::*;

    /// The userspace ends of the program's maps.
    pub(super) struct Maps {
        pub listeners: Mutex<SockMap<MapData>>,
        pub bypass: Mutex<HashMap<MapData, EndpointKey, u8>>,
        pub stats: PerCpuArray<MapData, u64>,
    }

    impl Maps {
        pub fn set_listener(&self, slot: u32, fd: &impl std::os::fd::AsRawFd) -> io::Result<()> {
            self.listeners.lock().set(slot, fd, 0).map_err(map_io)
        }
        pub fn clear_listener(&self, slot: u32) -> io::Result<()> {
            match self.listeners.lock().clear_index(&slot) {
                Ok(()) => Ok(()),
                // Already empty (e.g. the socket closed and the kernel removed it).
                Err(e) if super::os_error(&e) == Some(nix::libc::ENOENT) => Ok(()),
                Err(e) => Err(map_io(e)),
            }
        }
        pub fn bypass_insert(&self, key: EndpointKey) -> io::Result<()> {
            self.bypass.lock().insert(key, 1, 0).map_err(map_io)
        }
        pub fn bypass_remove(&self, key: &EndpointKey) {
            // A missing key is fine: the LRU may have evicted it.
            let _ = self.bypass.lock().remove(key);
        }
        pub fn counters(&self) -> io::Result<Counters> {
            let mut c = Counters::default();
            for counter in Counter::ALL {
                let per_cpu = self.stats.get(&counter.index(), 0).map_err(map_io)?;
                c.values[counter.index() as usize] = per_cpu.iter().sum();
            }
            Ok(c)
        }
    }

    fn map_io(e: aya::maps::MapError) -> io::Error {
        match super::os_error(&e) {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::other(e.to_string()),
        }
    }
}

#[cfg(mvp_no_ebpf)]
mod maps {
    use super::*;

    /// Never constructed: without the eBPF object [`Steering::load`] refuses.
    pub(super) enum Maps {}

    impl Maps {
        pub fn set_listener(&self, _: u32, _: &impl std::os::fd::AsRawFd) -> io::Result<()> {
            match *self {}
        }
        pub fn clear_listener(&self, _: u32) -> io::Result<()> {
            match *self {}
        }
        pub fn bypass_insert(&self, _: EndpointKey) -> io::Result<()> {
            match *self {}
        }
        pub fn bypass_remove(&self, _: &EndpointKey) {
            match *self {}
        }
        pub fn counters(&self) -> io::Result<Counters> {
            match *self {}
        }
    }
}

/// A shared handle on a loaded program's maps: registers listeners and bypass tuples,
/// reads counters. Cheap to clone.
#[derive(Clone)]
pub struct SteerHandle {
    maps: Arc<maps::Maps>,
    ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for SteerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SteerHandle")
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl SteerHandle {
    /// Counters summed over CPUs.
    pub fn counters(&self) -> io::Result<Counters> {
        self.maps.counters()
    }

    /// True while mvp's listener(s) are in the SOCKMAP.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// A loaded and attached sk_lookup program. Dropping it (or process exit) detaches it.
pub struct Steering {
    #[cfg(not(mvp_no_ebpf))]
    ebpf: aya::Ebpf,
    #[cfg(not(mvp_no_ebpf))]
    link: Option<aya::programs::sk_lookup::SkLookupLinkId>,
    handle: SteerHandle,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl Steering {
    /// Load the program, steer `targets` (canonical, non-loopback — see
    /// [`crate::addr::SteerTarget`]) and attach to the namespace at `netns`.
    /// Nothing is steered until a listener is registered ([`SteeredListeners`]).
    #[cfg(mvp_no_ebpf)]
    pub fn load(_targets: &[SocketAddr], _netns: &Path) -> Result<Steering, SteerError> {
        Err(SteerError::NotBuilt)
    }

    /// Load the program, steer `targets` (canonical, non-loopback — see
    /// [`crate::addr::SteerTarget`]) and attach to the namespace at `netns`.
    /// Nothing is steered until a listener is registered ([`SteeredListeners`]).
    #[cfg(not(mvp_no_ebpf))]
    pub fn load(targets: &[SocketAddr], netns: &Path) -> Result<Steering, SteerError> {
        use aya::maps::{Array, HashMap, PerCpuArray, SockMap};
        use aya::programs::{ProgramType, SkLookup};
        use mvp_common::maps as names;

        match aya::sys::is_program_supported(ProgramType::SkLookup) {
            Ok(true) => {}
            // The probe also fails without privileges; tell those two apart.
            Ok(false) if !nix::unistd::geteuid().is_root() => {
                return Err(SteerError::Permission {
                    what: "loading the sk_lookup program",
                    source: io::Error::from_raw_os_error(nix::libc::EPERM),
                });
            }
            Ok(false) => return Err(SteerError::Unsupported),
            Err(e) => return Err(SteerError::classify("probing for sk_lookup support", e)),
        }

        let mut ebpf = aya::Ebpf::load(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/mvp-ebpf"
        )))
        .map_err(|e| SteerError::classify("loading the eBPF object", e))?;

        let take = |ebpf: &mut aya::Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or_else(|| SteerError::Ebpf {
                what: "finding a map in the eBPF object",
                source: format!("map {name} missing").into(),
            })
        };
        let mut steer_dst: HashMap<_, EndpointKey, u8> =
            HashMap::try_from(take(&mut ebpf, names::STEER_DST)?)
                .map_err(|e| SteerError::classify("opening STEER_DST", e))?;
        let mut ports: Array<_, u64> = Array::try_from(take(&mut ebpf, names::STEER_PORTS)?)
            .map_err(|e| SteerError::classify("opening STEER_PORTS", e))?;
        for t in targets {
            let ep = crate::addr::endpoint(*t);
            steer_dst
                .insert(ep.key(), 1, 0)
                .map_err(|e| SteerError::classify("adding a steer target", e))?;
            let (word, mask) = mvp_common::port_bit(ep.port);
            let old = ports
                .get(&word, 0)
                .map_err(|e| SteerError::classify("reading STEER_PORTS", e))?;
            ports
                .set(word, old | mask, 0)
                .map_err(|e| SteerError::classify("adding a steered port", e))?;
        }
        let maps = maps::Maps {
            listeners: parking_lot::Mutex::new(
                SockMap::try_from(take(&mut ebpf, names::LISTENERS)?)
                    .map_err(|e| SteerError::classify("opening LISTENERS", e))?,
            ),
            bypass: parking_lot::Mutex::new(
                HashMap::try_from(take(&mut ebpf, names::BYPASS_SRC)?)
                    .map_err(|e| SteerError::classify("opening BYPASS_SRC", e))?,
            ),
            stats: PerCpuArray::try_from(take(&mut ebpf, names::STATS)?)
                .map_err(|e| SteerError::classify("opening STATS", e))?,
        };

        let ns = File::open(netns).map_err(|source| SteerError::Netns {
            path: netns.to_path_buf(),
            source,
        })?;
        let program: &mut SkLookup = ebpf
            .program_mut(mvp_common::PROGRAM)
            .ok_or_else(|| SteerError::Ebpf {
                what: "finding the program in the eBPF object",
                source: format!("program {} missing", mvp_common::PROGRAM).into(),
            })?
            .try_into()
            .map_err(|e| SteerError::classify("opening the sk_lookup program", e))?;
        program
            .load()
            .map_err(|e| SteerError::classify("loading the sk_lookup program", e))?;
        // Not pinned: the link lives exactly as long as this process.
        let link = program
            .attach(&ns)
            .map_err(|e| SteerError::classify("attaching to the network namespace", e))?;
        tracing::info!(netns = %netns.display(), targets = ?targets, "sk_lookup program attached");
        Ok(Steering {
            ebpf,
            link: Some(link),
            handle: SteerHandle {
                maps: Arc::new(maps),
                ready: Arc::new(AtomicBool::new(false)),
            },
        })
    }

    /// The handle for listeners, upstream connectors and metrics.
    pub fn handle(&self) -> SteerHandle {
        self.handle.clone()
    }

    /// Detach the program now (after the listener slots were cleared).
    pub fn detach(mut self) -> Result<(), SteerError> {
        self.detach_inner()
    }

    #[cfg(not(mvp_no_ebpf))]
    fn detach_inner(&mut self) -> Result<(), SteerError> {
        use aya::programs::SkLookup;
        let Some(link) = self.link.take() else {
            return Ok(());
        };
        let program: &mut SkLookup = self
            .ebpf
            .program_mut(mvp_common::PROGRAM)
            .ok_or_else(|| SteerError::Ebpf {
                what: "finding the program to detach",
                source: "program missing".into(),
            })?
            .try_into()
            .map_err(|e| SteerError::classify("detaching", e))?;
        program
            .detach(link)
            .map_err(|e| SteerError::classify("detaching", e))?;
        tracing::info!("sk_lookup program detached");
        Ok(())
    }

    #[cfg(mvp_no_ebpf)]
    fn detach_inner(&mut self) -> Result<(), SteerError> {
        Ok(())
    }
}

/// What the kernel and mvp's privileges allow for steering, for `mvp doctor`. Gathered
/// here because it asks the kernel (bpf(), unshare(), /proc/self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelProbe {
    /// `uname -r`, from /proc/sys/kernel/osrelease.
    pub kernel_release: Option<String>,
    /// Effective uid is 0.
    pub root: bool,
    /// Effective capability mask (CapEff in /proc/self/status).
    pub effective_caps: Option<u64>,
    /// /proc/self/ns/net exists (network namespaces are available).
    pub netns: bool,
    /// The kernel accepted a minimal sk_lookup program (aya's feature probe).
    pub sk_lookup: Result<(), String>,
    /// mvp's own program loaded and attached in a throwaway namespace.
    pub attach: AttachProbe,
}

/// Outcome of loading and attaching mvp's own program in a throwaway namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachProbe {
    /// Loaded, attached, detached.
    Ok,
    /// Not tried: built without the eBPF object, or not asked for.
    NotTried,
    /// No throwaway namespace (unshare needs CAP_SYS_ADMIN, which mvp itself does not).
    NoNamespace(String),
    /// Loading or attaching failed.
    Failed(String),
}

/// Capability bit numbers (linux/capability.h).
pub mod caps {
    /// CAP_NET_ADMIN.
    pub const NET_ADMIN: u32 = 12;
    /// CAP_SYS_ADMIN.
    pub const SYS_ADMIN: u32 = 21;
    /// CAP_BPF (Linux >= 5.8).
    pub const BPF: u32 = 39;
}

/// Probe the kernel for sk_lookup steering. With `attach`, also load mvp's program and
/// attach it in a new network namespace owned by a short-lived thread, so nothing on
/// the node is touched (the namespace and the link vanish with the thread).
pub fn probe(attach: bool) -> KernelProbe {
    let kernel_release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_owned());
    let effective_caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        });
    let sk_lookup = match aya::sys::is_program_supported(aya::programs::ProgramType::SkLookup) {
        Ok(true) => Ok(()),
        Ok(false) => Err("the kernel refused a minimal sk_lookup program".to_owned()),
        Err(e) => Err(e.to_string()),
    };
    let attach = if attach && cfg!(not(mvp_no_ebpf)) {
        probe_attach()
    } else {
        AttachProbe::NotTried
    };
    KernelProbe {
        kernel_release,
        root: nix::unistd::geteuid().is_root(),
        effective_caps,
        netns: Path::new("/proc/self/ns/net").exists(),
        sk_lookup,
        attach,
    }
}

fn probe_attach() -> AttachProbe {
    std::thread::spawn(|| {
        // unshare(CLONE_NEWNET) moves only this thread; the namespace dies with it.
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
            return AttachProbe::NoNamespace(format!("unshare(CLONE_NEWNET): {e}"));
        }
        match Steering::load(&[], &own_netns()).and_then(Steering::detach) {
            Ok(()) => AttachProbe::Ok,
            Err(e) => AttachProbe::Failed(crate::app::one_line(&e)),
        }
    })
    .join()
    .unwrap_or_else(|_| AttachProbe::Failed("the probe thread panicked".to_owned()))
}

/// The node's interface addresses (every family, loopback included; callers filter).
/// Lives here because it asks the kernel (netlink via getifaddrs).
pub fn node_addresses() -> io::Result<Vec<std::net::IpAddr>> {
    node_addresses_in(None)
}

/// [`node_addresses`] of the network namespace at `netns` (None: the caller's), asked from
/// a short-lived thread that joins it, so the caller's namespace never changes.
pub fn node_addresses_in(netns: Option<&Path>) -> io::Result<Vec<std::net::IpAddr>> {
    let Some(path) = netns else {
        return list_addresses();
    };
    let file = File::open(path)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            list_addresses()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("address listing thread panicked")))
    })
}

fn list_addresses() -> io::Result<Vec<std::net::IpAddr>> {
    let mut out: Vec<std::net::IpAddr> = nix::ifaddrs::getifaddrs()
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?
        .filter_map(|ifa| {
            let a = ifa.address?;
            if let Some(v4) = a.as_sockaddr_in() {
                Some(std::net::IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The namespace file of the calling thread (the default attach target).
pub fn own_netns() -> PathBuf {
    PathBuf::from("/proc/thread-self/ns/net")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_errors_are_recognised_through_the_chain() {
        let inner = io::Error::from_raw_os_error(nix::libc::EPERM);
        let e = SteerError::classify("loading", inner);
        assert!(matches!(e, SteerError::Permission { .. }), "{e:?}");
        assert!(e.to_string().contains("run mvp as root"));
        let other =
            SteerError::classify("loading", io::Error::from_raw_os_error(nix::libc::EINVAL));
        assert!(matches!(other, SteerError::Ebpf { .. }));
    }

    #[test]
    fn counters_sum_by_name() {
        let c = Counters::from_values([1, 2, 3, 4, 5]);
        assert_eq!(c.get(Counter::NotMatched), 5);
        let names: Vec<_> = c.iter().map(|(c, _)| c.name()).collect();
        assert_eq!(
            names,
            [
                "steered",
                "bypassed",
                "no_listener",
                "assign_error",
                "not_matched"
            ]
        );
    }

    #[test]
    fn probe_reports_this_kernel() {
        let p = probe(false);
        assert_eq!(p.attach, AttachProbe::NotTried);
        let release = p.kernel_release.expect("/proc/sys/kernel/osrelease");
        assert!(
            release.starts_with(|c: char| c.is_ascii_digit()),
            "{release}"
        );
        assert!(p.netns);
        assert!(p.effective_caps.is_some());
        // This project's kernels (>= 5.10) run sk_lookup for root.
        if p.root {
            assert_eq!(p.sk_lookup, Ok(()));
        }
    }

    #[test]
    fn node_addresses_include_loopback() {
        let a = node_addresses().expect("getifaddrs");
        assert!(a.iter().any(|ip| ip.is_loopback()), "{a:?}");
    }

    #[test]
    fn missing_netns_is_a_clear_error() {
        let e = enter_netns(Path::new("/nonexistent/netns")).expect_err("must fail");
        assert!(e.to_string().contains("/nonexistent/netns"), "{e}");
    }
}
