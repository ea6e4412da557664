//! The lab "container": runs nothing, echoes stdin to stdout.
//!
//! Commands it knows (anything else, and attach, behaves as `cat`):
//! - `cat`: echo stdin to stdout, exit 0 when stdin closes (at once without stdin).
//! - `echo ARGS...`: print ARGS joined by spaces and a newline, exit 0.
//! - `whoami`: print the caller's user name as the lab saw it (identity checks through mvp).
//! - `lab-identity`: print the caller's whole identity as JSON.
//! - `true` / `false`: exit 0 / 1 with no output.
//!
//! Protocol code drives it: [`Container::start`] once all streams exist, then
//! [`Container::stdin`] / [`Container::stdin_closed`]; each returns what the container did.
use bytes::Bytes;

use super::ExecOptions;
use crate::labapi::types::Identity;

/// A process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCode(pub i32);

/// What the container did in reaction to an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes written to stdout (the tty when `tty=true`).
    Stdout(Bytes),
    /// The process exited; nothing follows.
    Exit(ExitCode),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Program {
    Cat,
    Print { output: Vec<u8>, exit: ExitCode },
}

/// One lab container process.
#[derive(Debug)]
pub struct Container {
    program: Program,
    /// The request asked for stdin.
    has_stdin: bool,
    command: Vec<String>,
    exited: bool,
}

impl Container {
    /// The process for this request and caller.
    pub fn new(opts: &ExecOptions, identity: &Identity) -> Self {
        let program = match opts.command.first().map(String::as_str) {
            Some("echo") => Program::Print {
                output: format!("{}\n", opts.command[1..].join(" ")).into_bytes(),
                exit: ExitCode(0),
            },
            Some("whoami") => Program::Print {
                output: format!("{}\n", identity.user).into_bytes(),
                exit: ExitCode(0),
            },
            Some("lab-identity") => Program::Print {
                output: {
                    let mut v = serde_json::to_vec(identity).expect("Identity serialises");
                    v.push(b'\n');
                    v
                },
                exit: ExitCode(0),
            },
            Some("true") => Program::Print {
                output: Vec::new(),
                exit: ExitCode(0),
            },
            Some("false") => Program::Print {
                output: Vec::new(),
                exit: ExitCode(1),
            },
            _ => Program::Cat,
        };
        Container {
            program,
            has_stdin: opts.stdin,
            command: opts.command.clone(),
            exited: false,
        }
    }

    /// The command line (for exit messages).
    pub fn command(&self) -> &[String] {
        &self.command
    }

    /// True once the process exited.
    pub fn exited(&self) -> bool {
        self.exited
    }

    /// Start the process (all streams are connected).
    pub fn start(&mut self) -> Vec<Output> {
        match &self.program {
            Program::Print { output, exit } => {
                let mut out = Vec::new();
                if !output.is_empty() {
                    out.push(Output::Stdout(Bytes::from(output.clone())));
                }
                out.push(Output::Exit(*exit));
                self.exited = true;
                out
            }
            Program::Cat if !self.has_stdin => {
                self.exited = true;
                vec![Output::Exit(ExitCode(0))]
            }
            Program::Cat => Vec::new(),
        }
    }

    /// Bytes arrived on stdin.
    pub fn stdin(&mut self, data: Bytes) -> Vec<Output> {
        match self.program {
            Program::Cat if !self.exited && !data.is_empty() => vec![Output::Stdout(data)],
            _ => Vec::new(),
        }
    }

    /// Stdin reached end of file (half-close).
    pub fn stdin_closed(&mut self) -> Vec<Output> {
        match self.program {
            Program::Cat if !self.exited => {
                self.exited = true;
                vec![Output::Exit(ExitCode(0))]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(command: &[&str], stdin: bool) -> ExecOptions {
        ExecOptions {
            command: command.iter().map(|s| s.to_string()).collect(),
            stdin,
            stdout: true,
            ..Default::default()
        }
    }

    #[test]
    fn cat_echoes_until_stdin_closes() {
        let mut c = Container::new(&opts(&["cat"], true), &Identity::default());
        assert!(c.start().is_empty());
        assert_eq!(
            c.stdin(Bytes::from_static(b"hi")),
            vec![Output::Stdout(Bytes::from_static(b"hi"))]
        );
        assert_eq!(c.stdin_closed(), vec![Output::Exit(ExitCode(0))]);
        assert!(c.exited());
        assert!(c.stdin(Bytes::from_static(b"late")).is_empty());
    }

    #[test]
    fn print_commands_exit_at_once() {
        let id = Identity {
            user: "alice".into(),
            ..Default::default()
        };
        let mut c = Container::new(&opts(&["echo", "a", "b"], true), &id);
        assert_eq!(
            c.start(),
            vec![
                Output::Stdout(Bytes::from_static(b"a b\n")),
                Output::Exit(ExitCode(0))
            ]
        );
        let mut c = Container::new(&opts(&["whoami"], false), &id);
        assert_eq!(c.start()[0], Output::Stdout(Bytes::from_static(b"alice\n")));
        let mut c = Container::new(&opts(&["false"], false), &id);
        assert_eq!(c.start(), vec![Output::Exit(ExitCode(1))]);
        let mut c = Container::new(&opts(&["cat"], false), &id);
        assert_eq!(c.start(), vec![Output::Exit(ExitCode(0))]);
    }
}
