//! `mvp`: thin entry point; the work is in the `mvp` library (`app`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use mvp::app::{self, RunConfig};
use mvp::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            app::init_logging(args.log_format);
            match RunConfig::from_args(&args).and_then(app::run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // One actionable line, no backtrace.
                    eprintln!("mvp: error: {}", app::one_line(&e));
                    ExitCode::FAILURE
                }
            }
        }
    }
}
