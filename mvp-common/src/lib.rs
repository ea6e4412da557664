//! Shared between the eBPF program (`mvp-ebpf`) and userspace (`mvp-userspace`).
//! `no_std` so the same definitions compile for `bpfel-unknown-none`.
//!
//! The steering decision lives here as a pure function ([`decide`]) so the kernel
//! program and the unprivileged unit tests run the very same code.
//!
//! Map keys and values are plain arrays of integers: aya implements `aya::Pod` for
//! arrays of primitives, so no `unsafe impl` is needed on either side.
#![no_std]
#![forbid(unsafe_code)]

/// `IPPROTO_TCP`.
pub const PROTO_TCP: u32 = 6;
/// `AF_INET` as the kernel reports it in `bpf_sk_lookup.family`.
pub const AF_INET: u32 = 2;
/// `AF_INET6` as the kernel reports it in `bpf_sk_lookup.family`.
pub const AF_INET6: u32 = 10;

/// Map names, shared so userspace cannot ask for a map the program does not define.
pub mod maps {
    /// SOCKMAP: [`super::listener_slot`] → the proxy's listening socket.
    pub const LISTENERS: &str = "LISTENERS";
    /// HASH: [`super::EndpointKey`] of a steered (destination, port) → 1.
    pub const STEER_DST: &str = "STEER_DST";
    /// ARRAY: bitmap of steered ports, [`super::PORT_WORDS`] × u64.
    pub const STEER_PORTS: &str = "STEER_PORTS";
    /// LRU_HASH: [`super::EndpointKey`] of an mvp upstream socket's (source, port) → 1.
    pub const BYPASS_SRC: &str = "BYPASS_SRC";
    /// PERCPU_ARRAY: [`super::Counter`] → count.
    pub const STATS: &str = "STATS";
}

/// The program's name (the function carrying `#[sk_lookup]`).
pub const PROGRAM: &str = "mvp_steer";

/// Number of SOCKMAP slots: one listener per address family.
pub const LISTENER_SLOTS: u32 = 2;
/// Capacity of the steer set.
pub const STEER_DST_MAX: u32 = 256;
/// Capacity of the bypass LRU. In-flight connects only; LRU eviction covers crashes.
pub const BYPASS_SRC_MAX: u32 = 16_384;
/// The port bitmap: 65 536 bits in u64 words.
pub const PORT_WORDS: u32 = 1024;

/// The SOCKMAP slot holding the listener for connections of `family`.
/// IPv4 and IPv6 use separate listeners because `bpf_sk_assign` refuses an
/// IPv4 socket for an IPv6 lookup.
pub const fn listener_slot(family: Family) -> u32 {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// Word index and bit mask of `port` in the [`maps::STEER_PORTS`] bitmap.
pub const fn port_bit(port: u16) -> (u32, u64) {
    ((port as u32) >> 6, 1u64 << (port & 63))
}

/// Address family of a lookup or endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The `AF_*` constant.
    pub const fn af(self) -> u32 {
        match self {
            Family::V4 => AF_INET,
            Family::V6 => AF_INET6,
        }
    }

    /// From the kernel's `AF_*` value; `None` for anything else.
    pub const fn from_af(af: u32) -> Option<Family> {
        match af {
            AF_INET => Some(Family::V4),
            AF_INET6 => Some(Family::V6),
            _ => None,
        }
    }
}

/// Raw map key: `[family, port (host order), addr word 0..4]`. The address words are
/// the 16 address octets (IPv4 as IPv4-mapped IPv6) read as native-endian u32, which
/// is exactly how the kernel hands network-order words to the program.
pub type EndpointKey = [u32; 6];

/// An (address, port) as the program sees it; IPv4 addresses are kept IPv4-mapped
/// (`::ffff:a.b.c.d`) so one 16-byte form covers both families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The family of the lookup (not of the address form).
    pub family: Family,
    /// 16 octets; IPv4 as IPv4-mapped.
    pub addr: [u8; 16],
    /// Host-order port.
    pub port: u16,
}

impl Endpoint {
    /// An IPv4 endpoint.
    pub const fn v4(octets: [u8; 4], port: u16) -> Endpoint {
        Endpoint {
            family: Family::V4,
            addr: [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2],
                octets[3],
            ],
            port,
        }
    }

    /// An IPv6 endpoint.
    pub const fn v6(octets: [u8; 16], port: u16) -> Endpoint {
        Endpoint {
            family: Family::V6,
            addr: octets,
            port,
        }
    }

    /// An endpoint from address words as the kernel stores them in `bpf_sk_lookup`
    /// (`*_ip4` / `*_ip6`: network byte order in native-endian u32 words).
    pub fn from_kernel_words(family: Family, ip4: u32, ip6: [u32; 4], port: u16) -> Endpoint {
        match family {
            Family::V4 => Endpoint::v4(ip4.to_ne_bytes(), port),
            Family::V6 => {
                let mut addr = [0u8; 16];
                let mut i = 0;
                while i < 4 {
                    let b = ip6[i].to_ne_bytes();
                    addr[4 * i] = b[0];
                    addr[4 * i + 1] = b[1];
                    addr[4 * i + 2] = b[2];
                    addr[4 * i + 3] = b[3];
                    i += 1;
                }
                Endpoint::v6(addr, port)
            }
        }
    }

    /// True when the address is IPv4-mapped (`::ffff:0:0/96`).
    pub const fn is_v4_mapped(&self) -> bool {
        let a = &self.addr;
        a[0] == 0
            && a[1] == 0
            && a[2] == 0
            && a[3] == 0
            && a[4] == 0
            && a[5] == 0
            && a[6] == 0
            && a[7] == 0
            && a[8] == 0
            && a[9] == 0
            && a[10] == 0xff
            && a[11] == 0xff
    }

    /// Loopback in any spelling: 127.0.0.0/8, `::1`, and `::ffff:127.0.0.0/104`.
    pub const fn is_loopback(&self) -> bool {
        if self.is_v4_mapped() {
            return self.addr[12] == 127;
        }
        let a = &self.addr;
        let mut i = 0;
        while i < 15 {
            if a[i] != 0 {
                return false;
            }
            i += 1;
        }
        a[15] == 1
    }

    /// The raw map key.
    pub fn key(&self) -> EndpointKey {
        let a = &self.addr;
        let w = |i: usize| u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]);
        [self.family.af(), self.port as u32, w(0), w(1), w(2), w(3)]
    }
}

/// One socket lookup: what the kernel asks the program about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lookup {
    /// `IPPROTO_*`.
    pub protocol: u32,
    /// The packet's destination: the original destination of the connection.
    pub local: Endpoint,
    /// The packet's source: the client.
    pub remote: Endpoint,
}

/// The steering state the decision consults (the BPF maps in the kernel, plain sets in
/// unit tests).
pub trait Tables {
    /// Is any (address, `port`) steered? The cheap first filter.
    fn port_steered(&self, port: u16) -> bool;
    /// Is this exact (destination, port) steered?
    fn destination_steered(&self, key: &EndpointKey) -> bool;
    /// Is this (source, port) one of mvp's own upstream sockets?
    fn source_bypassed(&self, key: &EndpointKey) -> bool;
}

/// What the program does with a lookup. Every outcome lets the lookup pass; only
/// [`Decision::Steer`] selects a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not TCP, or a port nobody steers: not counted (almost every SYN on a node).
    Ignore,
    /// The port is steered but this destination is not, or it is loopback.
    NotMatched,
    /// Would be steered, but the source is an mvp upstream socket (loopback source,
    /// or a registered tuple).
    Bypass,
    /// Select the proxy's listener for this family.
    Steer,
}

/// Decide a lookup: protocol → port → destination → loopback → bypass.
///
/// Loopback is checked even for configured destinations so a misconfiguration can
/// never capture kube-apiserver's own loopback client.
///
/// Bypass has two forms. A loopback *source* with a non-loopback destination only
/// arises from a socket explicitly bound to loopback (the kernel picks the destination
/// itself as source for local addresses, and drops loopback sources arriving from the
/// wire): mvp's upstream sockets do that, so every instance's program recognises every
/// instance's upstreams without shared state — two overlapping instances would
/// otherwise relay each other's upstreams back and forth forever (a later program
/// cannot undo an earlier program's selection: the kernel keeps the last non-NULL
/// one). The per-instance tuple map covers upstreams that cannot use a loopback source.
pub fn decide<T: Tables>(lookup: &Lookup, tables: &T) -> Decision {
    if lookup.protocol != PROTO_TCP || !tables.port_steered(lookup.local.port) {
        return Decision::Ignore;
    }
    if !tables.destination_steered(&lookup.local.key()) || lookup.local.is_loopback() {
        return Decision::NotMatched;
    }
    if lookup.remote.is_loopback() || tables.source_bypassed(&lookup.remote.key()) {
        return Decision::Bypass;
    }
    Decision::Steer
}

/// Per-CPU counters in [`maps::STATS`], by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Counter {
    /// A socket was selected.
    Steered = 0,
    /// Skipped: the source is an mvp upstream socket.
    Bypassed = 1,
    /// Would steer, but no listener is in the slot (mvp not ready, draining or dead).
    NoListener = 2,
    /// `bpf_sk_assign` refused the listener (wrong family/state); the lookup passed.
    AssignError = 3,
    /// The port is steered, the destination is not (or is loopback).
    NotMatched = 4,
}

/// Number of counters.
pub const COUNTERS: u32 = 5;

impl Counter {
    /// All counters, in index order.
    pub const ALL: [Counter; COUNTERS as usize] = [
        Counter::Steered,
        Counter::Bypassed,
        Counter::NoListener,
        Counter::AssignError,
        Counter::NotMatched,
    ];

    /// The `outcome` label used in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Steered => "steered",
            Counter::Bypassed => "bypassed",
            Counter::NoListener => "no_listener",
            Counter::AssignError => "assign_error",
            Counter::NotMatched => "not_matched",
        }
    }

    /// Index in [`maps::STATS`].
    pub const fn index(self) -> u32 {
        self as u32
    }
}

#[cfg(feature = "user")]
const _: () = {
    // The map types must stay plain data that aya can copy to and from the kernel.
    const fn pod<T: aya::Pod>() {}
    pod::<EndpointKey>();
    pod::<u64>();
    pod::<u8>();
};

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::HashSet;

    use super::*;

    #[derive(Default)]
    struct Sets {
        ports: HashSet<u16>,
        dsts: HashSet<EndpointKey>,
        bypass: HashSet<EndpointKey>,
    }

    impl Sets {
        fn steer(mut self, e: Endpoint) -> Self {
            self.ports.insert(e.port);
            self.dsts.insert(e.key());
            self
        }
        fn bypass(mut self, e: Endpoint) -> Self {
            self.bypass.insert(e.key());
            self
        }
    }

    impl Tables for Sets {
        fn port_steered(&self, port: u16) -> bool {
            self.ports.contains(&port)
        }
        fn destination_steered(&self, key: &EndpointKey) -> bool {
            self.dsts.contains(key)
        }
        fn source_bypassed(&self, key: &EndpointKey) -> bool {
            self.bypass.contains(key)
        }
    }

    const NODE: [u8; 4] = [198, 18, 0, 1];
    const CLIENT: [u8; 4] = [198, 18, 0, 2];
    const NODE6: [u8; 16] = [0xfd, 0, 0x6d, 0x76, 0, 0x70, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    fn tcp(local: Endpoint, remote: Endpoint) -> Lookup {
        Lookup {
            protocol: PROTO_TCP,
            local,
            remote,
        }
    }

    #[test]
    fn steers_a_configured_destination() {
        let t = Sets::default().steer(Endpoint::v4(NODE, 6443));
        let l = tcp(Endpoint::v4(NODE, 6443), Endpoint::v4(CLIENT, 40000));
        assert_eq!(decide(&l, &t), Decision::Steer);
    }

    #[test]
    fn ignores_other_ports_and_udp() {
        let t = Sets::default().steer(Endpoint::v4(NODE, 6443));
        let other_port = tcp(Endpoint::v4(NODE, 2379), Endpoint::v4(CLIENT, 1));
        assert_eq!(decide(&other_port, &t), Decision::Ignore);
        let udp = Lookup {
            protocol: 17,
            ..tcp(Endpoint::v4(NODE, 6443), Endpoint::v4(CLIENT, 1))
        };
        assert_eq!(decide(&udp, &t), Decision::Ignore);
    }

    #[test]
    fn other_destination_on_steered_port_is_not_matched() {
        let t = Sets::default().steer(Endpoint::v4(NODE, 6443));
        let l = tcp(Endpoint::v4([198, 18, 0, 9], 6443), Endpoint::v4(CLIENT, 1));
        assert_eq!(decide(&l, &t), Decision::NotMatched);
    }

    #[test]
    fn loopback_is_never_steered_even_when_configured() {
        for local in [
            Endpoint::v4([127, 0, 0, 1], 6443),
            Endpoint::v4([127, 9, 9, 9], 6443),
            Endpoint::v6([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 6443),
            Endpoint::v6(
                [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1],
                6443,
            ),
        ] {
            let t = Sets::default().steer(local);
            let l = tcp(local, Endpoint::v4(CLIENT, 1));
            assert_eq!(decide(&l, &t), Decision::NotMatched, "{local:?}");
        }
    }

    #[test]
    fn bypassed_source_is_not_steered() {
        let src = Endpoint::v4(NODE, 50000);
        let t = Sets::default().steer(Endpoint::v4(NODE, 6443)).bypass(src);
        assert_eq!(
            decide(&tcp(Endpoint::v4(NODE, 6443), src), &t),
            Decision::Bypass
        );
        // Another source port from the same address is still steered.
        let other = tcp(Endpoint::v4(NODE, 6443), Endpoint::v4(NODE, 50001));
        assert_eq!(decide(&other, &t), Decision::Steer);
    }

    #[test]
    fn loopback_source_is_always_bypassed() {
        // Another mvp instance's upstream: not in our tuple map, but from loopback.
        let t = Sets::default().steer(Endpoint::v4(NODE, 6443));
        let l = tcp(
            Endpoint::v4(NODE, 6443),
            Endpoint::v4([127, 0, 0, 1], 50000),
        );
        assert_eq!(decide(&l, &t), Decision::Bypass);
        let t6 = Sets::default().steer(Endpoint::v6(NODE6, 6443));
        let mut lo6 = [0u8; 16];
        lo6[15] = 1;
        let l6 = tcp(Endpoint::v6(NODE6, 6443), Endpoint::v6(lo6, 50000));
        assert_eq!(decide(&l6, &t6), Decision::Bypass);
    }

    #[test]
    fn families_do_not_alias() {
        // ::ffff:198.18.0.1 looked up as IPv6 is a different key from 198.18.0.1 as IPv4.
        let t = Sets::default().steer(Endpoint::v4(NODE, 6443));
        let mapped = Endpoint::v6(Endpoint::v4(NODE, 6443).addr, 6443);
        assert_ne!(mapped.key(), Endpoint::v4(NODE, 6443).key());
        assert_eq!(
            decide(&tcp(mapped, Endpoint::v6(NODE6, 1)), &t),
            Decision::NotMatched
        );
    }

    #[test]
    fn ipv6_steer_and_bypass() {
        let src = Endpoint::v6(NODE6, 40000);
        let t = Sets::default().steer(Endpoint::v6(NODE6, 6443));
        let l = tcp(Endpoint::v6(NODE6, 6443), src);
        assert_eq!(decide(&l, &t), Decision::Steer);
        assert_eq!(decide(&l, &t.bypass(src)), Decision::Bypass);
    }

    #[test]
    fn kernel_words_match_octets() {
        // The kernel stores 198.18.0.1 as the network-order bytes in a native u32.
        let ip4 = u32::from_ne_bytes(NODE);
        let e = Endpoint::from_kernel_words(Family::V4, ip4, [0; 4], 6443);
        assert_eq!(e, Endpoint::v4(NODE, 6443));
        let mut w = [0u32; 4];
        for (i, word) in w.iter_mut().enumerate() {
            *word = u32::from_ne_bytes([
                NODE6[4 * i],
                NODE6[4 * i + 1],
                NODE6[4 * i + 2],
                NODE6[4 * i + 3],
            ]);
        }
        let e6 = Endpoint::from_kernel_words(Family::V6, 0, w, 6443);
        assert_eq!(e6, Endpoint::v6(NODE6, 6443));
    }

    #[test]
    fn port_bitmap_covers_every_port() {
        assert_eq!(port_bit(0), (0, 1));
        assert_eq!(port_bit(6443), (100, 1 << 43));
        assert_eq!(port_bit(u16::MAX).0, PORT_WORDS - 1);
    }

    #[test]
    fn counter_indices_are_dense() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index() as usize, i);
        }
    }
}
