//! Upstream connections: a [`Dial`] (any of steer's [`UpstreamConnector`]s: the
//! bypass-registering one under steering, a plain one otherwise) followed by a rustls client
//! handshake. Implements the connector the pooled client needs.
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use crate::addr::{ClientAddr, UpstreamAddr};
use crate::steer::{self, UpstreamConnector};

/// The TCP stream under an upstream TLS connection (holds steer's loop-guard claim).
pub type TcpUpstream = steer::Upstream;

/// Opens the TCP connection to an upstream address: an object-safe view of steer's
/// [`UpstreamConnector`] (implemented for all of them).
pub trait Dial: Send + Sync + 'static {
    /// Connect to `addr`.
    fn dial(&self, addr: UpstreamAddr) -> BoxFuture<'_, Result<TcpUpstream, steer::ConnectError>>;
    /// Loop guard: is `peer` one of our own upstream sockets?
    fn is_own(&self, peer: ClientAddr) -> bool;
}

impl<C: UpstreamConnector> Dial for C {
    fn dial(&self, addr: UpstreamAddr) -> BoxFuture<'_, Result<TcpUpstream, steer::ConnectError>> {
        Box::pin(self.connect(addr))
    }

    fn is_own(&self, peer: ClientAddr) -> bool {
        UpstreamConnector::is_own(self, peer)
    }
}

/// Why an upstream connection could not be made. Nothing was sent, so the request may be
/// retried (here or on another upstream).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed (steer's error says whether a retry is allowed and what to check).
    #[error(
        "connecting to upstream {addr} (is the apiserver running and listening there? see --upstream)"
    )]
    Dial {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: steer::ConnectError,
    },
    /// TLS handshake failed (often: cert not valid for --upstream-server-name, or not signed by
    /// --upstream-ca-file).
    #[error(
        "TLS handshake with upstream {addr}: {source} (check --upstream-ca-file and --upstream-server-name)"
    )]
    Tls {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Dials one upstream address and speaks TLS with one client config.
#[derive(Clone)]
pub struct TlsConnector {
    addr: SocketAddr,
    /// Set to what ALPN chose on each connect (shared per upstream; None: don't record).
    speaks_h2: Option<Arc<AtomicBool>>,
    dial: Arc<dyn Dial>,
    tls: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsConnector {
    /// A connector for `addr`, verifying the upstream as `server_name`.
    pub fn new(
        addr: SocketAddr,
        dial: Arc<dyn Dial>,
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
        speaks_h2: Option<Arc<AtomicBool>>,
    ) -> Self {
        TlsConnector {
            addr,
            speaks_h2,
            dial,
            tls: tokio_rustls::TlsConnector::from(config),
            server_name,
        }
    }

    /// Open one TLS connection.
    pub async fn connect(&self) -> Result<TlsConn, ConnectError> {
        let addr = self.addr;
        let tcp = self
            .dial
            .dial(UpstreamAddr::new(addr))
            .await
            .map_err(|source| ConnectError::Dial { addr, source })?;
        // TLS records + Nagle + delayed ACK would stall small writes (h2 frames, watch events).
        let _ = tcp.get_ref().set_nodelay(true);
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|source| ConnectError::Tls { addr, source })?;
        if let Some(flag) = &self.speaks_h2 {
            flag.store(
                tls.get_ref().1.alpn_protocol() == Some(b"h2"),
                Ordering::Relaxed,
            );
        }
        Ok(TlsConn(TokioIo::new(tls)))
    }
}

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TlsConn;
    type Error = ConnectError;
    type Future = BoxFuture<'static, Result<TlsConn, ConnectError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        // The URI carries the client's authority (kept for Host/:authority); where to connect
        // is this connector's fixed upstream address.
        let this = self.clone();
        Box::pin(async move { this.connect().await })
    }
}

/// A TLS connection to an upstream, reporting ALPN h2 to the pool.
#[derive(Debug)]
pub struct TlsConn(TokioIo<tokio_rustls::client::TlsStream<TcpUpstream>>);

impl TlsConn {
    /// The raw stream (for upgrade connections driven by hand).
    pub fn into_inner(self) -> TokioIo<tokio_rustls::client::TlsStream<TcpUpstream>> {
        self.0
    }
}

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        let h2 = self.0.inner().get_ref().1.alpn_protocol() == Some(b"h2");
        let connected = Connected::new();
        if h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
