//! Empty library target: lets mvp-userspace list this crate as a build-dependency
//! so cargo rebuilds the eBPF object when its sources change (aya-template pattern).
#![no_std]
