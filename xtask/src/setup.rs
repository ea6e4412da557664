//! `cargo xtask setup`: make a fresh machine of this kind ready, idempotently.
//!
//! Each requirement is checked first; only missing pieces are installed, and a run that
//! finds everything present says so in one line.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Debian packages the project needs beyond the LLVM ones (which depend on nightly's LLVM).
/// etcd-server: the lab's real etcd. protobuf-compiler: etcd-client's build. iproute2:
/// network namespaces. nghttp2-client, haproxy, nginx, wrk: benchmarks (anchors.sh).
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("etcd-server", "/usr/bin/etcd"),
    ("protobuf-compiler", "/usr/bin/protoc"),
    ("iproute2", "/usr/bin/ip"),
    ("curl", "/usr/bin/curl"),
    ("nghttp2-client", "/usr/bin/h2load"),
    ("haproxy", "/usr/sbin/haproxy"),
    ("nginx", "/usr/sbin/nginx"),
    ("wrk", "/usr/bin/wrk"),
];

/// Python packages for the real-client tests.
const PYTHON_PACKAGES: &[(&str, &str)] = &[("kubernetes", "kubernetes")];

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The pinned nightly used to build the eBPF object (one line in mvp-ebpf/NIGHTLY).
pub fn pinned_nightly() -> Result<String> {
    let path = repo_root().join("mvp-ebpf/NIGHTLY");
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_string())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("setup: {what}");
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); command: {cmd:?}");
    }
    Ok(())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// LLVM major version of a rustc toolchain (`rustc +T -vV` → `LLVM version: 22.1.4`).
fn llvm_major(toolchain: &str) -> Option<u32> {
    let out = output(
        Command::new("rustc")
            .arg(format!("+{toolchain}"))
            .arg("-vV"),
    )?;
    out.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
}

fn has_rust_src(toolchain: &str) -> bool {
    output(
        Command::new("rustc")
            .arg(format!("+{toolchain}"))
            .args(["--print", "sysroot"]),
    )
    .map(|root| {
        Path::new(root.trim())
            .join("lib/rustlib/src/rust/library/core/Cargo.toml")
            .exists()
    })
    .unwrap_or(false)
}

/// The LLVM major bpf-linker was built against, read from the libLLVM it links.
fn bpf_linker_llvm_major() -> Option<u32> {
    let path = output(Command::new("which").arg("bpf-linker"))?;
    let ldd = output(Command::new("ldd").arg(path.trim()))?;
    ldd.lines()
        .find_map(|l| l.trim().strip_prefix("libLLVM"))
        .and_then(|rest| {
            // libLLVM.so.22.1 or libLLVM-22.so
            let digits: String = rest
                .trim_start_matches(['.', '-', 's', 'o'])
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse().ok()
        })
}

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Returns true when something was installed.
pub fn setup() -> Result<bool> {
    let nightly = pinned_nightly()?;
    let mut did = Vec::new();

    // 1. The pinned nightly with rust-src (eBPF is built with -Z build-std=core).
    if llvm_major(&nightly).is_none() || !has_rust_src(&nightly) {
        run(
            &format!("installing Rust toolchain {nightly} with rust-src"),
            Command::new("rustup").args([
                "toolchain",
                "install",
                &nightly,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]),
        )
        .context("fix: check that rustup can reach its distribution server")?;
        did.push(format!("{nightly}+rust-src"));
    }
    let llvm = llvm_major(&nightly).with_context(|| {
        format!("cannot read the LLVM version of {nightly} (`rustc +{nightly} -vV`)")
    })?;

    // 2. Debian packages: LLVM dev files matching nightly's LLVM (bpf-linker links them),
    //    and the rest.
    let llvm_config = format!("/usr/lib/llvm-{llvm}/bin/llvm-config");
    let libclang = format!("/usr/lib/llvm-{llvm}/lib/libclang.so");
    let mut missing: Vec<String> = Vec::new();
    if !Path::new(&llvm_config).exists() {
        missing.push(format!("llvm-{llvm}-dev"));
    }
    if !Path::new(&libclang).exists() {
        missing.push(format!("libclang-{llvm}-dev"));
    }
    for (pkg, file) in DEBIAN_PACKAGES {
        if !Path::new(file).exists() {
            missing.push(pkg.to_string());
        }
    }
    if !missing.is_empty() {
        if !is_root() {
            bail!(
                "missing Debian packages: {}; fix: run `sudo cargo xtask setup` or `sudo apt-get install {}`",
                missing.join(" "),
                missing.join(" ")
            );
        }
        run(
            "apt-get update",
            Command::new("apt-get").args(["update", "-qq"]),
        )?;
        run(
            &format!("installing {}", missing.join(" ")),
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .with_context(|| {
            format!(
                "fix: is llvm-{llvm}-dev packaged here? If not, pin mvp-ebpf/NIGHTLY to a nightly whose LLVM major Debian has"
            )
        })?;
        did.extend(missing);
    }

    // 3. bpf-linker built against that LLVM major.
    if bpf_linker_llvm_major() != Some(llvm) {
        let prefix = format!("/usr/lib/llvm-{llvm}");
        run(
            &format!("building bpf-linker against LLVM {llvm}"),
            Command::new("cargo")
                .args([
                    "install",
                    "--force",
                    "bpf-linker",
                    "--no-default-features",
                    "--features",
                    &format!("llvm-{llvm}"),
                ])
                .env("LLVM_PREFIX", &prefix)
                .env(format!("LLVM_SYS_{llvm}1_PREFIX"), &prefix),
        )
        .with_context(|| {
            format!("fix: check that llvm-{llvm}-dev and libclang-{llvm}-dev are installed")
        })?;
        did.push(format!("bpf-linker(LLVM {llvm})"));
    }

    // 4. Real clients: kubectl must be on the machine; the Python client from PyPI.
    if output(Command::new("kubectl").args(["version", "--client"])).is_none() {
        bail!(
            "kubectl not found on PATH; fix: install kubectl v1.32 (it ships with machines of this kind)"
        );
    }
    for (pkg, module) in PYTHON_PACKAGES {
        if !python_has(module) {
            run(
                &format!("installing Python package {pkg}"),
                Command::new("python3").args(["-m", "pip", "install", "--quiet", pkg]),
            )?;
            did.push(format!("python:{pkg}"));
        }
    }

    if did.is_empty() {
        println!(
            "setup: nothing to do ({nightly}+rust-src, LLVM {llvm} dev files, bpf-linker for LLVM {llvm}, etcd, protoc, kubectl, python kubernetes all present)"
        );
        Ok(false)
    } else {
        println!("setup: installed {}", did.join(", "));
        Ok(true)
    }
}
