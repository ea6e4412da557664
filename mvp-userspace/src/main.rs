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
                Err(e) => fail(&e),
            }
        }
        Command::Doctor(args) => {
            app::init_cli_logging();
            match mvp::doctor::run_cli(&args) {
                Ok((report, failed)) => {
                    out(&report);
                    if failed {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => fail(&e),
            }
        }
        Command::Status(args) => {
            app::init_cli_logging();
            match mvp::admin::run_status_cli(&args) {
                Ok(report) => {
                    out(&report);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

/// Write the report; a closed pipe (`mvp doctor | head`) is not an error worth a panic.
fn out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// One actionable line, no backtrace.
fn fail(e: &(dyn std::error::Error + 'static)) -> ExitCode {
    eprintln!("mvp: error: {}", app::one_line(e));
    ExitCode::FAILURE
}
