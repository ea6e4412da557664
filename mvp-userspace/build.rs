//! Builds the sk_lookup program (mvp-ebpf) for bpfel-unknown-none with the pinned
//! nightly and bpf-linker, and embeds it. `AYA_BUILD_SKIP=1` skips it for fast
//! userspace iteration: the binary then refuses to steer and says why.
use std::path::PathBuf;

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg(mvp_no_ebpf)");
    println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("mvp-userspace has no parent directory"))?
        .join("mvp-ebpf");
    let nightly_file = ebpf_dir.join("NIGHTLY");
    println!("cargo::rerun-if-changed={}", nightly_file.display());

    if std::env::var_os("AYA_BUILD_SKIP").is_some_and(|v| v != "0" && !v.is_empty()) {
        println!("cargo::rustc-cfg=mvp_no_ebpf");
        return Ok(());
    }
    let nightly = std::fs::read_to_string(&nightly_file)
        .with_context(|| format!("reading {}", nightly_file.display()))?;
    let nightly = nightly.trim();
    let package = aya_build::Package {
        name: "mvp-ebpf",
        root_dir: ebpf_dir
            .to_str()
            .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom(nightly)).with_context(|| {
        format!(
            "building the eBPF object with {nightly} failed; run `cargo xtask setup` \
             (installs rust-src for {nightly} and bpf-linker), or set AYA_BUILD_SKIP=1 \
             to build userspace only"
        )
    })
}
