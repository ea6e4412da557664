//! Where the proxy's accepted connections come from.
//!
//! [`ListenerSource`] separates binding from *becoming ready*: a [`SteeredListeners`]
//! registers its sockets in the SOCKMAP only on [`ListenerSource::activate`] and clears
//! them first on [`ListenerSource::deactivate`], so readiness and draining are one
//! switch. [`PlainListeners`] does the same without the kernel, for unprivileged tests.
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use mvp_common::{Family, listener_slot};
use tokio::net::TcpListener;

use super::SteerHandle;

/// Errors of the listener boundary.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Binding failed.
    #[error(
        "listen: cannot bind {addr} (is it in use, or not an address of this namespace? choose another --listen)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Two listeners of the same family: each family has one SOCKMAP slot.
    #[error("listen: more than one {0:?} listener; give at most one --listen per address family")]
    DuplicateFamily(Family),
    /// Registering in the SOCKMAP failed.
    #[error(
        "listen: cannot register listener {addr} in the SOCKMAP (mvp stays out of the path; traffic goes to the server behind)"
    )]
    Register {
        /// The listener's address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Clearing the SOCKMAP slot failed.
    #[error(
        "listen: cannot clear SOCKMAP slot {slot}; exiting detaches the program, which also stops steering"
    )]
    Clear {
        /// The slot.
        slot: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl ListenError {
    /// Whether retrying could succeed without operator action.
    pub fn retry_allowed(&self) -> bool {
        matches!(
            self,
            ListenError::Register { .. } | ListenError::Clear { .. }
        )
    }
}

/// Family of a socket address after canonicalisation.
pub fn family_of(addr: SocketAddr) -> Family {
    match crate::addr::canonical(addr) {
        SocketAddr::V4(_) => Family::V4,
        SocketAddr::V6(_) => Family::V6,
    }
}

/// Binds the proxy's listeners and switches them in and out of the traffic path.
pub trait ListenerSource: Send + Sync {
    /// Bind one listener per address (at most one per family). Needs a tokio runtime.
    fn bind(&self, addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, ListenError>;
    /// Start receiving traffic (steered: insert into the SOCKMAP). This is readiness.
    fn activate(&self, listeners: &[TcpListener]) -> Result<(), ListenError>;
    /// Stop receiving new traffic; call first on shutdown, then drain.
    fn deactivate(&self) -> Result<(), ListenError>;
    /// True between `activate` and `deactivate`.
    fn is_active(&self) -> bool;
}

fn bind_all(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, ListenError> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for &addr in addrs {
        let fam = family_of(addr);
        if seen.contains(&fam) {
            return Err(ListenError::DuplicateFamily(fam));
        }
        seen.push(fam);
        let bind = || -> io::Result<TcpListener> {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        };
        out.push(bind().map_err(|source| ListenError::Bind { addr, source })?);
    }
    Ok(out)
}

/// Plain listeners: reachable only at their own address. Tests and "no steering" use.
#[derive(Debug, Default)]
pub struct PlainListeners {
    active: AtomicBool,
}

impl ListenerSource for PlainListeners {
    fn bind(&self, addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, ListenError> {
        bind_all(addrs)
    }
    fn activate(&self, _: &[TcpListener]) -> Result<(), ListenError> {
        self.active.store(true, Ordering::SeqCst);
        Ok(())
    }
    fn deactivate(&self) -> Result<(), ListenError> {
        self.active.store(false, Ordering::SeqCst);
        Ok(())
    }
    fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }
}

/// Listeners that receive steered connections once registered in the SOCKMAP.
/// Bind them anywhere (e.g. 127.0.0.1:0): sk_lookup delivers regardless of the bound
/// address, and the accepted socket's local address is the original destination.
#[derive(Debug)]
pub struct SteeredListeners {
    handle: SteerHandle,
    slots: parking_lot::Mutex<Vec<u32>>,
}

impl SteeredListeners {
    /// Listeners registered through `handle`.
    pub fn new(handle: SteerHandle) -> Self {
        SteeredListeners {
            handle,
            slots: parking_lot::Mutex::new(Vec::new()),
        }
    }
}

impl ListenerSource for SteeredListeners {
    fn bind(&self, addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, ListenError> {
        bind_all(addrs)
    }

    fn activate(&self, listeners: &[TcpListener]) -> Result<(), ListenError> {
        let mut slots = self.slots.lock();
        for l in listeners {
            let addr = l.local_addr().map_err(|source| ListenError::Register {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
            let slot = listener_slot(family_of(addr));
            self.handle
                .maps
                .set_listener(slot, l)
                .map_err(|source| ListenError::Register { addr, source })?;
            slots.push(slot);
            tracing::info!(listener = %addr, slot, "listener registered in the SOCKMAP");
        }
        self.handle.ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn deactivate(&self) -> Result<(), ListenError> {
        // Not ready from the first cleared slot on.
        self.handle.ready.store(false, Ordering::SeqCst);
        let mut slots = self.slots.lock();
        for slot in slots.drain(..) {
            self.handle
                .maps
                .clear_listener(slot)
                .map_err(|source| ListenError::Clear { slot, source })?;
            tracing::info!(slot, "listener slot cleared");
        }
        Ok(())
    }

    fn is_active(&self) -> bool {
        self.handle.is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_listeners_bind_and_toggle() {
        let src = PlainListeners::default();
        let ls = src
            .bind(&["127.0.0.1:0".parse().expect("addr")])
            .expect("bind");
        assert_eq!(ls.len(), 1);
        assert!(!src.is_active());
        src.activate(&ls).expect("activate");
        assert!(src.is_active());
        src.deactivate().expect("deactivate");
        assert!(!src.is_active());
    }

    #[tokio::test]
    async fn one_listener_per_family() {
        let err = PlainListeners::default()
            .bind(&[
                "127.0.0.1:0".parse().expect("addr"),
                "127.0.0.2:0".parse().expect("addr"),
            ])
            .expect_err("two v4 listeners");
        assert!(matches!(err, ListenError::DuplicateFamily(Family::V4)));
    }
}
