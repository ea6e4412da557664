//! Project tasks. `cargo xtask setup | test | lab | lint | bench`.
//!
//! xtask deliberately depends on nothing that needs the machine set up (no eBPF, no
//! protoc), so `cargo xtask setup` works on a fresh machine.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod run;
mod setup;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "mvp project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what a fresh machine lacks (idempotent): eBPF toolchain, Debian packages,
    /// the Python kubernetes client.
    Setup,
    /// The whole suite: setup, build (with the real eBPF object), fmt/clippy, all tests.
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Bring up the lab control plane (three nodes: two at 1.33, one at 1.36) and show the
    /// mixed-version problem and what mvp does about it. Stays up until Ctrl-C.
    Lab {
        /// Extra arguments passed to `mvp-lab` (e.g. `--no-wait`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// cargo fmt --check and clippy -D warnings.
    Lint,
    /// mvp (release, `--no-steer`) as a TLS front door side by side with the anchors
    /// (direct nginx, HAProxy, nginx proxy) from one run of shared/bench/anchors.sh.
    Bench,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::setup().map(|_| ()),
        Command::Test { args } => run::test(&args),
        Command::Lab { args } => run::lab(&args),
        Command::Lint => run::lint(),
        Command::Bench => bench::bench(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
