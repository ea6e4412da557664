//! The sk_lookup program: steers TCP connections for configured (destination, port)
//! pairs into mvp's listener, and always lets the lookup pass (fail-open).
//!
//! The decision is `mvp_common::decide`; this file only reads the context, consults the
//! maps and counts. No logging here: the program runs for every SYN in the namespace.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::{
        bindings::{BPF_SK_LOOKUP_F_NO_REUSEPORT, BPF_SK_LOOKUP_F_REPLACE, sk_action::SK_PASS},
        macros::{map, sk_lookup},
        maps::{Array, HashMap, LruHashMap, PerCpuArray, SockMap},
        programs::SkLookupContext,
    };
    use mvp_common::{
        BYPASS_SRC_MAX, COUNTERS, Counter, Decision, Endpoint, EndpointKey, Family, LISTENER_SLOTS,
        Lookup, PORT_WORDS, STEER_DST_MAX, Tables, decide, listener_slot, port_bit,
    };

    const ENOENT: i32 = 2;

    #[map]
    static LISTENERS: SockMap = SockMap::with_max_entries(LISTENER_SLOTS, 0);
    #[map]
    static STEER_DST: HashMap<EndpointKey, u8> = HashMap::with_max_entries(STEER_DST_MAX, 0);
    #[map]
    static STEER_PORTS: Array<u64> = Array::with_max_entries(PORT_WORDS, 0);
    #[map]
    static BYPASS_SRC: LruHashMap<EndpointKey, u8> =
        LruHashMap::with_max_entries(BYPASS_SRC_MAX, 0);
    #[map]
    static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);

    struct Maps;

    impl Tables for Maps {
        #[inline(always)]
        fn port_steered(&self, port: u16) -> bool {
            let (word, mask) = port_bit(port);
            STEER_PORTS.get(word).is_some_and(|w| *w & mask != 0)
        }
        #[inline(always)]
        fn destination_steered(&self, key: &EndpointKey) -> bool {
            STEER_DST.get_ptr(key).is_some()
        }
        #[inline(always)]
        fn source_bypassed(&self, key: &EndpointKey) -> bool {
            BYPASS_SRC.get_ptr(key).is_some()
        }
    }

    #[inline(always)]
    fn count(c: Counter) {
        if let Some(p) = STATS.get_ptr_mut(c.index()) {
            // SAFETY: a per-CPU slot of this program's own map; no other writer on this CPU.
            unsafe { *p += 1 };
        }
    }

    fn read(ctx: &SkLookupContext) -> Option<Lookup> {
        use core::ptr::{addr_of, read_volatile};
        let l = ctx.lookup;
        // SAFETY: the kernel passes a valid `bpf_sk_lookup`. Volatile reads, all up
        // front: the verifier only accepts ctx loads at constant offsets from the ctx
        // pointer itself, so the compiler must not keep derived pointers around.
        let (
            family,
            protocol,
            remote_ip4,
            remote_ip6,
            remote_port,
            local_ip4,
            local_ip6,
            local_port,
        ) = unsafe {
            (
                read_volatile(addr_of!((*l).family)),
                read_volatile(addr_of!((*l).protocol)),
                read_volatile(addr_of!((*l).remote_ip4)),
                [
                    read_volatile(addr_of!((*l).remote_ip6[0])),
                    read_volatile(addr_of!((*l).remote_ip6[1])),
                    read_volatile(addr_of!((*l).remote_ip6[2])),
                    read_volatile(addr_of!((*l).remote_ip6[3])),
                ],
                read_volatile(addr_of!((*l).remote_port)),
                read_volatile(addr_of!((*l).local_ip4)),
                [
                    read_volatile(addr_of!((*l).local_ip6[0])),
                    read_volatile(addr_of!((*l).local_ip6[1])),
                    read_volatile(addr_of!((*l).local_ip6[2])),
                    read_volatile(addr_of!((*l).local_ip6[3])),
                ],
                read_volatile(addr_of!((*l).local_port)),
            )
        };
        let family = Family::from_af(family)?;
        Some(Lookup {
            protocol,
            // local_port is host order; remote_port is network order.
            local: Endpoint::from_kernel_words(family, local_ip4, local_ip6, local_port as u16),
            remote: Endpoint::from_kernel_words(
                family,
                remote_ip4,
                remote_ip6,
                u16::from_be(remote_port),
            ),
        })
    }

    #[sk_lookup]
    pub fn mvp_steer(ctx: SkLookupContext) -> u32 {
        let Some(lookup) = read(&ctx) else {
            return SK_PASS;
        };
        match decide(&lookup, &Maps) {
            Decision::Ignore => {}
            Decision::NotMatched => count(Counter::NotMatched),
            Decision::Bypass => count(Counter::Bypassed),
            Decision::Steer => {
                // REPLACE: the newest instance (attached last) wins an overlap.
                // NO_REUSEPORT: exactly the socket in the slot, no group fan-out.
                let flags = (BPF_SK_LOOKUP_F_REPLACE | BPF_SK_LOOKUP_F_NO_REUSEPORT) as u64;
                match LISTENERS.redirect_sk_lookup(&ctx, listener_slot(lookup.local.family), flags)
                {
                    Ok(()) => count(Counter::Steered),
                    // Empty slot: mvp not ready, draining or gone. Pass = fail open.
                    Err(e) if e == -ENOENT => count(Counter::NoListener),
                    Err(_) => count(Counter::AssignError),
                }
            }
        }
        SK_PASS
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("mvp-ebpf builds only for bpfel-unknown-none (via mvp-userspace/build.rs)");
}
