//! The L4 relay: an honest stand-in until the L7 front door lands. Each steered
//! connection is copied byte for byte to its original destination (the accepted
//! socket's local address) through an [`UpstreamConnector`] — in production the
//! bypassed one, so the relayed SYN reaches the real server instead of mvp again.
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpStream;

use crate::addr::{ClientAddr, OrigDstAddr};
use crate::steer::{ConnectError, UpstreamConnector};

/// Errors of one relayed connection.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The connection points back at mvp itself; relaying would loop forever.
    #[error(
        "relay: refusing {client} -> {orig_dst}: it points back at mvp itself (loop guard; is the bypass map working?)"
    )]
    Loop {
        /// The peer.
        client: ClientAddr,
        /// The original destination.
        orig_dst: OrigDstAddr,
    },
    /// The accepted socket's addresses could not be read (the client already left).
    #[error("relay: cannot read the accepted connection's addresses (client gone)")]
    Addresses(#[source] io::Error),
    /// The upstream could not be reached; the client's connection is closed.
    #[error("relay: {client} -> {orig_dst}")]
    Upstream {
        /// The peer.
        client: ClientAddr,
        /// The original destination.
        orig_dst: OrigDstAddr,
        /// Why (boxed: keeps the error small on the hot path).
        #[source]
        source: Box<ConnectError>,
    },
    /// Copying ended with an I/O error (a reset on either side).
    #[error("relay: {client} -> {orig_dst}: connection ended with an error")]
    Copy {
        /// The peer.
        client: ClientAddr,
        /// The original destination.
        orig_dst: OrigDstAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl RelayError {
    /// Whether the client may retry (a new connection could succeed).
    pub fn retry_allowed(&self) -> bool {
        match self {
            RelayError::Loop { .. } => false,
            RelayError::Addresses(_) | RelayError::Copy { .. } => true,
            RelayError::Upstream { source, .. } => source.retry_allowed(),
        }
    }
}

/// Relay counters for the admin endpoint.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Connections accepted from the listener(s).
    pub accepted: AtomicU64,
    /// Connections refused by the loop guard.
    pub refused_loop: AtomicU64,
    /// Connections whose upstream could not be reached.
    pub upstream_failed: AtomicU64,
    /// Connections relayed to the end.
    pub completed: AtomicU64,
}

/// The client and original destination of an accepted connection.
pub fn addresses(conn: &TcpStream) -> Result<(ClientAddr, OrigDstAddr), RelayError> {
    let client = conn.peer_addr().map_err(RelayError::Addresses)?;
    let orig = conn.local_addr().map_err(RelayError::Addresses)?;
    Ok((ClientAddr::new(client), OrigDstAddr::new(orig)))
}

/// Relays accepted connections to their original destination.
#[derive(Debug)]
pub struct Relay<C> {
    connector: C,
    own_listeners: Vec<SocketAddr>,
    stats: Arc<RelayStats>,
}

impl<C: UpstreamConnector> Relay<C> {
    /// A relay whose loop guard knows mvp's own listener addresses.
    pub fn new(connector: C, own_listeners: Vec<SocketAddr>, stats: Arc<RelayStats>) -> Self {
        let own_listeners = own_listeners
            .into_iter()
            .map(crate::addr::canonical)
            .collect();
        Relay {
            connector,
            own_listeners,
            stats,
        }
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<RelayStats> {
        &self.stats
    }

    fn is_self(&self, orig_dst: OrigDstAddr) -> bool {
        self.own_listeners.iter().any(|l| {
            l.port() == orig_dst.port() && (l.ip() == orig_dst.ip() || l.ip().is_unspecified())
        })
    }

    /// Relay `conn` (from `client`, meant for `orig_dst`) until both sides close.
    /// Returns bytes copied (client → upstream, upstream → client).
    pub async fn relay(
        &self,
        mut conn: TcpStream,
        client: ClientAddr,
        orig_dst: OrigDstAddr,
    ) -> Result<(u64, u64), RelayError> {
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        if self.is_self(orig_dst) || self.connector.is_own(client) {
            self.stats.refused_loop.fetch_add(1, Ordering::Relaxed);
            return Err(RelayError::Loop { client, orig_dst });
        }
        tracing::debug!(%client, original_dst = %orig_dst, "relaying steered connection");
        let mut upstream = match self.connector.connect(orig_dst.as_upstream()).await {
            Ok(u) => u,
            Err(source) => {
                self.stats.upstream_failed.fetch_add(1, Ordering::Relaxed);
                return Err(RelayError::Upstream {
                    client,
                    orig_dst,
                    source: Box::new(source),
                });
            }
        };
        let copied = tokio::io::copy_bidirectional(&mut conn, &mut upstream)
            .await
            .map_err(|source| RelayError::Copy {
                client,
                orig_dst,
                source,
            })?;
        self.stats.completed.fetch_add(1, Ordering::Relaxed);
        Ok(copied)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::steer::DirectConnector;

    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let addr = listener.local_addr().expect("addr");
        let (c, s) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (c.expect("connect"), s.expect("accept").0)
    }

    #[tokio::test]
    async fn refuses_a_connection_to_its_own_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let relay = Relay::new(
            DirectConnector::default(),
            vec![listener.local_addr().expect("addr")],
            Arc::default(),
        );
        let (_client, accepted) = pair(&listener).await;
        let (client, orig) = addresses(&accepted).expect("addresses");
        let err = relay.relay(accepted, client, orig).await.expect_err("loop");
        assert!(matches!(err, RelayError::Loop { .. }), "{err}");
        assert!(!err.retry_allowed());
        assert_eq!(relay.stats().refused_loop.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn copies_both_ways_to_the_original_destination() {
        let backend = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let backend_addr = backend.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.expect("accept");
            s.write_all(b"backend\n").await.expect("write");
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.expect("read");
            got
        });
        let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let relay = Relay::new(
            DirectConnector::default(),
            vec![front.local_addr().expect("addr")],
            Arc::default(),
        );
        let (mut client, accepted) = pair(&front).await;
        let (peer, _) = addresses(&accepted).expect("addresses");
        // Without the kernel, name the original destination explicitly.
        let task = tokio::spawn(async move {
            relay
                .relay(accepted, peer, OrigDstAddr::new(backend_addr))
                .await
        });
        let mut greeting = [0u8; 8];
        client.read_exact(&mut greeting).await.expect("greeting");
        assert_eq!(&greeting, b"backend\n");
        client.write_all(b"hello").await.expect("write");
        client.shutdown().await.expect("shutdown");
        assert_eq!(server.await.expect("server"), b"hello");
        let (up, down) = task.await.expect("join").expect("relay");
        assert_eq!((up, down), (5, 8));
    }

    #[tokio::test]
    async fn upstream_failure_is_reported_with_both_addresses() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("probe");
        let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let relay = Relay::new(DirectConnector::default(), vec![], Arc::default());
        let (_c, accepted) = pair(&front).await;
        let (peer, _) = addresses(&accepted).expect("addresses");
        let err = relay
            .relay(accepted, peer, OrigDstAddr::new(dead))
            .await
            .expect_err("dead upstream");
        assert!(err.retry_allowed());
        assert!(err.to_string().contains(&dead.to_string()), "{err}");
        assert_eq!(relay.stats().upstream_failed.load(Ordering::Relaxed), 1);
    }
}
