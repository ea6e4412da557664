//! How mvp connects to upstreams without steering its own connections back to itself.
//!
//! sk_lookup runs on the receiving side of *every* local delivery, so mvp's own
//! connection to a steered (address, port) on this node would be steered into mvp
//! again. The program sees no uid/cgroup/mark, so the source is the only handle.
//! [`BypassConnector`]:
//! 1. picks the source: for a destination on this node, the loopback address of its
//!    family (every instance's program bypasses loopback sources — overlapping
//!    instances cannot see each other's tuple maps), else the route's source;
//! 2. binds port 0 and learns the tuple (getsockname);
//! 3. registers the tuple in the bypass LRU (belt and braces; the LRU covers a crash);
//! 4. connects, and removes the tuple once established.
use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

use super::SteerHandle;
use crate::addr::{ClientAddr, UpstreamAddr, canonical, endpoint, is_loopback};

/// Errors of the upstream boundary. All are upstream-side; see [`ConnectError::retry_allowed`].
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No route / no usable source address to the upstream.
    #[error("upstream {upstream}: no route or source address (check the node's routes)")]
    Route {
        /// The upstream.
        upstream: UpstreamAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Creating or binding the socket failed.
    #[error(
        "upstream {upstream}: cannot create or bind the upstream socket (out of ports or file descriptors?)"
    )]
    Socket {
        /// The upstream.
        upstream: UpstreamAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Registering the bypass tuple failed: connecting now would loop back into mvp.
    #[error(
        "upstream {upstream}: cannot register bypass tuple {local}; not connecting (it would be steered back into mvp)"
    )]
    Bypass {
        /// The upstream.
        upstream: UpstreamAddr,
        /// The socket's local address.
        local: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The TCP connect failed.
    #[error("upstream {upstream}: connect failed (is the server behind running?)")]
    Connect {
        /// The upstream.
        upstream: UpstreamAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl ConnectError {
    /// A connect may be retried (also against another upstream); setup failures may not.
    pub fn retry_allowed(&self) -> bool {
        matches!(
            self,
            ConnectError::Connect { .. } | ConnectError::Route { .. }
        )
    }
}

/// An established upstream connection. Holds mvp's claim on its local tuple (for the
/// loop guard) until dropped.
#[derive(Debug)]
pub struct Upstream {
    stream: TcpStream,
    local: SocketAddr,
    _own: Option<OwnTuple>,
}

impl Upstream {
    /// The socket's canonical local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The underlying stream, e.g. for socket options (keeps the loop-guard claim).
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    /// The underlying stream (ends the loop-guard claim).
    pub fn into_inner(self) -> TcpStream {
        self.stream
    }
}

impl AsyncRead for Upstream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Opens upstream connections on behalf of clients.
pub trait UpstreamConnector: Send + Sync + 'static {
    /// Connect to `upstream`.
    fn connect(
        &self,
        upstream: UpstreamAddr,
    ) -> impl Future<Output = Result<Upstream, ConnectError>> + Send;

    /// Loop guard: is `peer` the local tuple of one of our own live upstream sockets?
    /// Then an accepted connection is mvp talking to itself.
    fn is_own(&self, peer: ClientAddr) -> bool;
}

/// Live local tuples of our upstream sockets.
#[derive(Debug, Default, Clone)]
struct OwnTuples(Arc<Mutex<HashSet<SocketAddr>>>);

#[derive(Debug)]
struct OwnTuple {
    set: OwnTuples,
    addr: SocketAddr,
}

impl Drop for OwnTuple {
    fn drop(&mut self) {
        self.set.0.lock().remove(&self.addr);
    }
}

impl OwnTuples {
    fn claim(&self, addr: SocketAddr) -> OwnTuple {
        self.0.lock().insert(addr);
        OwnTuple {
            set: self.clone(),
            addr,
        }
    }
    fn contains(&self, addr: SocketAddr) -> bool {
        self.0.lock().contains(&addr)
    }
}

/// Plain connects: for unsteered setups and unprivileged tests.
#[derive(Debug, Default, Clone)]
pub struct DirectConnector {
    own: OwnTuples,
}

impl UpstreamConnector for DirectConnector {
    async fn connect(&self, upstream: UpstreamAddr) -> Result<Upstream, ConnectError> {
        let stream = TcpStream::connect(upstream.get())
            .await
            .map_err(|source| ConnectError::Connect { upstream, source })?;
        let local = canonical(
            stream
                .local_addr()
                .map_err(|source| ConnectError::Socket { upstream, source })?,
        );
        Ok(Upstream {
            stream,
            local,
            _own: Some(self.own.claim(local)),
        })
    }

    fn is_own(&self, peer: ClientAddr) -> bool {
        self.own.contains(peer.get())
    }
}

/// Connects through the bypass map so the program lets mvp's own SYN through.
#[derive(Debug, Clone)]
pub struct BypassConnector {
    handle: SteerHandle,
    own: OwnTuples,
    source: Option<IpAddr>,
}

impl BypassConnector {
    /// A connector registering its tuples through `handle`; the source address is
    /// chosen per destination (see the module docs).
    pub fn new(handle: SteerHandle) -> Self {
        BypassConnector {
            handle,
            own: OwnTuples::default(),
            source: None,
        }
    }

    /// Always bind `source` (e.g. a dedicated address). A non-loopback source relies
    /// on the tuple map alone, so only this instance's program bypasses it.
    pub fn with_source(handle: SteerHandle, source: IpAddr) -> Self {
        BypassConnector {
            source: Some(source),
            ..Self::new(handle)
        }
    }
}

/// The source address the kernel would pick for `dst` (a UDP connect sends nothing).
fn route_source(dst: SocketAddr) -> io::Result<IpAddr> {
    let any: SocketAddr = match dst {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let probe = std::net::UdpSocket::bind(any)?;
    probe.connect(dst)?;
    Ok(probe.local_addr()?.ip())
}

/// The source to bind for `dst`: loopback for destinations on this node (the kernel
/// chooses the destination itself as source for those), else the route's source.
fn source_for(dst: SocketAddr) -> io::Result<IpAddr> {
    let src = route_source(dst)?;
    if src != dst.ip() {
        return Ok(src);
    }
    Ok(match dst {
        SocketAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    })
}

impl UpstreamConnector for BypassConnector {
    async fn connect(&self, upstream: UpstreamAddr) -> Result<Upstream, ConnectError> {
        let dst = upstream.get();
        let src = match self.source {
            Some(ip) => ip,
            None => source_for(dst).map_err(|source| ConnectError::Route { upstream, source })?,
        };
        let socket = match dst {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .and_then(|s| {
            s.bind(SocketAddr::new(src, 0))?;
            Ok(s)
        })
        .map_err(|source| ConnectError::Socket { upstream, source })?;
        let local = canonical(
            socket
                .local_addr()
                .map_err(|source| ConnectError::Socket { upstream, source })?,
        );
        let own = self.own.claim(local);
        // Loopback is never steered: no map entry needed.
        let key = (!is_loopback(dst.ip())).then(|| endpoint(local).key());
        if let Some(key) = key {
            self.handle
                .maps
                .bypass_insert(key)
                .map_err(|source| ConnectError::Bypass {
                    upstream,
                    local,
                    source,
                })?;
        }
        let result = socket.connect(dst).await;
        // The SYN has been looked up by now (or never will be); the entry is spent.
        if let Some(key) = key {
            self.handle.maps.bypass_remove(&key);
        }
        let stream = result.map_err(|source| ConnectError::Connect { upstream, source })?;
        Ok(Upstream {
            stream,
            local,
            _own: Some(own),
        })
    }

    fn is_own(&self, peer: ClientAddr) -> bool {
        self.own.contains(peer.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn direct_connector_claims_its_tuple_while_alive() {
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = backend.local_addr().expect("addr");
        let c = DirectConnector::default();
        let up = c.connect(UpstreamAddr::new(addr)).await.expect("connect");
        let local = up.local_addr();
        assert!(c.is_own(ClientAddr::new(local)));
        drop(up);
        assert!(!c.is_own(ClientAddr::new(local)));
    }

    #[tokio::test]
    async fn connect_refused_is_retryable_and_names_the_upstream() {
        // Bind then drop to get a port with nothing listening.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("probe port");
        let err = DirectConnector::default()
            .connect(UpstreamAddr::new(addr))
            .await
            .expect_err("nothing listens");
        assert!(err.retry_allowed());
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[test]
    fn source_for_loopback_is_loopback() {
        let ip = source_for("127.0.0.1:6443".parse().expect("addr")).expect("route");
        assert!(ip.is_loopback());
    }
}
