//! `cargo xtask test | lab | lint`.
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::setup::{repo_root, setup};

pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(repo_root());
    // The whole suite always builds and loads the real eBPF object.
    cmd.env_remove("AYA_BUILD_SKIP");
    cmd
}

pub(crate) fn run(what: &str, mut cmd: Command) -> Result<()> {
    eprintln!("xtask: {what}");
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

pub fn lint() -> Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run("cargo fmt --check", fmt).context("fix: run `cargo fmt --all`")?;
    let mut clippy = cargo();
    clippy.args(["clippy", "--all-targets", "--", "-D", "warnings"]);
    run("cargo clippy -D warnings", clippy)
}

pub fn test(extra: &[String]) -> Result<()> {
    let started = Instant::now();
    setup()?;
    let setup_done = started.elapsed();

    let mut build = cargo();
    build.args(["build", "--all-targets"]);
    run("building the workspace (real eBPF object included)", build)?;
    lint()?;

    if !is_root() {
        eprintln!(
            "xtask: WARNING: not root — privileged tests (eBPF, network namespaces) will be SKIPPED; run `sudo -E cargo xtask test` for the whole suite"
        );
    }
    let mut test = cargo();
    test.args(["test", "--no-fail-fast"]).args(extra);
    let result = run("running the test suite", test);
    eprintln!(
        "xtask: setup took {:.0}s; build, lint and tests took {:.0}s",
        setup_done.as_secs_f64(),
        (started.elapsed() - setup_done).as_secs_f64()
    );
    result
}

pub fn lab(extra: &[String]) -> Result<()> {
    setup()?;
    if !is_root() {
        bail!("the lab creates network namespaces and loads eBPF: run `sudo -E cargo xtask lab`");
    }
    let mut build = cargo();
    build.args(["build", "--bins"]);
    run("building mvp, the lab apiserver and the lab", build)?;
    let lab = repo_root().join("target/debug/mvp-lab");
    let mut cmd = Command::new(&lab);
    cmd.args(extra);
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", lab.display()))?;
    if !status.success() {
        bail!("the lab exited with {status}");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
