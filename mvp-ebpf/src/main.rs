//! The sk_lookup program (written by the steering work).
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("mvp-ebpf builds only for bpfel-unknown-none (via mvp-userspace/build.rs)");
}
