//! Shared between the eBPF program (`mvp-ebpf`) and userspace (`mvp-userspace`).
//! `no_std` so the same definitions compile for `bpfel-unknown-none`.
#![no_std]
#![forbid(unsafe_code)]
