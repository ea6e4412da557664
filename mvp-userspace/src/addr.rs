//! Typed socket addresses, so the client, the original destination and the upstream
//! cannot be confused. All are canonical: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
//! becomes plain IPv4, so comparisons and map keys agree with what the kernel reports.
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use mvp_common::Endpoint;

/// Un-map IPv4-mapped IPv6 addresses; everything else is returned unchanged.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// True for 127.0.0.0/8, `::1` and IPv4-mapped loopback.
pub fn is_loopback(ip: IpAddr) -> bool {
    canonical(SocketAddr::new(ip, 0)).ip().is_loopback()
}

/// The steering map's view of a (canonical) socket address.
pub fn endpoint(addr: SocketAddr) -> Endpoint {
    match canonical(addr) {
        SocketAddr::V4(a) => Endpoint::v4(a.ip().octets(), a.port()),
        SocketAddr::V6(a) => Endpoint::v6(a.ip().octets(), a.port()),
    }
}

macro_rules! typed_addr {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(SocketAddr);

        impl $name {
            /// Wrap an address, canonicalising IPv4-mapped IPv6.
            pub fn new(addr: SocketAddr) -> Self {
                Self(canonical(addr))
            }

            /// The canonical socket address.
            pub fn get(self) -> SocketAddr {
                self.0
            }

            /// The IP address.
            pub fn ip(self) -> IpAddr {
                self.0.ip()
            }

            /// The port.
            pub fn port(self) -> u16 {
                self.0.port()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

typed_addr!(
    /// The peer of an accepted connection: who is calling.
    ClientAddr
);
typed_addr!(
    /// Where the client meant to go: the accepted socket's local address (sk_lookup
    /// steers without rewriting the packet).
    OrigDstAddr
);
typed_addr!(
    /// Where mvp connects on the client's behalf.
    UpstreamAddr
);

impl OrigDstAddr {
    /// Relay straight to the original destination (the L4 relay's routing decision).
    /// Explicit so that "connect to where the client wanted to go" is a visible choice.
    pub fn as_upstream(self) -> UpstreamAddr {
        UpstreamAddr(self.0)
    }
}

/// Why a `--steer` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SteerTargetError {
    /// Not `ADDR:PORT`.
    #[error("`{0}` is not ADDR:PORT (e.g. 198.18.0.1:6443 or [fd00::1]:6443)")]
    Syntax(String),
    /// Loopback destinations are never steered.
    #[error(
        "`{0}` is loopback: never steered (kube-apiserver's loopback client must reach it directly); steer the node address instead"
    )]
    Loopback(SocketAddr),
    /// A wildcard address matches no packet.
    #[error("`{0}` is a wildcard address: steer concrete node addresses")]
    Unspecified(SocketAddr),
    /// Port 0 matches no packet.
    #[error("`{0}` has port 0: give the real port (e.g. 6443)")]
    PortZero(SocketAddr),
}

/// A (destination address, port) to steer into mvp: canonical, not loopback, not a
/// wildcard, port not 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SteerTarget(SocketAddr);

impl SteerTarget {
    /// Validate an address.
    pub fn new(addr: SocketAddr) -> Result<Self, SteerTargetError> {
        let addr = canonical(addr);
        if addr.ip().is_loopback() {
            return Err(SteerTargetError::Loopback(addr));
        }
        if addr.ip().is_unspecified() {
            return Err(SteerTargetError::Unspecified(addr));
        }
        if addr.port() == 0 {
            return Err(SteerTargetError::PortZero(addr));
        }
        Ok(SteerTarget(addr))
    }

    /// The canonical address.
    pub fn get(self) -> SocketAddr {
        self.0
    }
}

impl std::str::FromStr for SteerTarget {
    type Err = SteerTargetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let addr: SocketAddr = s
            .trim()
            .parse()
            .map_err(|_| SteerTargetError::Syntax(s.to_string()))?;
        SteerTarget::new(addr)
    }
}

impl fmt::Display for SteerTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn steer_targets_are_validated() {
        let ok: SteerTarget = "[::ffff:198.18.0.1]:6443".parse().expect("valid");
        assert_eq!(ok.get(), sa("198.18.0.1:6443"));
        assert!("[fd00:6d76:70::1]:6443".parse::<SteerTarget>().is_ok());
        for (bad, want) in [
            ("127.0.0.1:6443", "loopback"),
            ("[::1]:6443", "loopback"),
            ("[::ffff:127.0.0.1]:6443", "loopback"),
            ("0.0.0.0:6443", "wildcard"),
            ("198.18.0.1:0", "port 0"),
            ("198.18.0.1", "not ADDR:PORT"),
            ("node:6443", "not ADDR:PORT"),
            ("", "not ADDR:PORT"),
        ] {
            let err = bad.parse::<SteerTarget>().expect_err(bad);
            assert!(err.to_string().contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn v4_mapped_is_canonicalised() {
        let c = ClientAddr::new(sa("[::ffff:198.18.0.2]:40000"));
        assert_eq!(c.get(), sa("198.18.0.2:40000"));
        assert_eq!(c, ClientAddr::new(sa("198.18.0.2:40000")));
    }

    #[test]
    fn real_v6_is_kept() {
        let o = OrigDstAddr::new(sa("[fd00:6d76:70::1]:6443"));
        assert_eq!(o.get(), sa("[fd00:6d76:70::1]:6443"));
        assert_eq!(o.to_string(), "[fd00:6d76:70::1]:6443");
    }

    #[test]
    fn orig_dst_becomes_upstream_only_explicitly() {
        let o = OrigDstAddr::new(sa("198.18.0.1:6443"));
        let u: UpstreamAddr = o.as_upstream();
        assert_eq!(u.get(), o.get());
    }

    #[test]
    fn loopback_in_every_spelling() {
        for ip in ["127.0.0.1", "127.5.6.7", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["198.18.0.1", "fd00:6d76:70::1", "::ffff:198.18.0.1", "::"] {
            assert!(!is_loopback(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn endpoint_keys_agree_across_spellings() {
        assert_eq!(
            endpoint(sa("[::ffff:198.18.0.1]:6443")).key(),
            endpoint(sa("198.18.0.1:6443")).key()
        );
        assert_eq!(
            endpoint(sa("198.18.0.1:6443")).family,
            mvp_common::Family::V4
        );
        assert_eq!(
            endpoint(sa("[fd00:6d76:70::1]:6443")).family,
            mvp_common::Family::V6
        );
    }
}
