//! Logs: nothing per request or per connection at info or above on the success path. The
//! request path is code that runs once per connection or request; it may log at debug
//! (or warn/error for failures an operator must act on), never at info, which stays for
//! lifecycle events (attach, ready, reload, drain, stop).
use std::path::{Path, PathBuf};

/// Modules that run per connection or per request (directories are scanned whole).
const REQUEST_PATH: &[&str] = &[
    "relay.rs",
    "admin.rs",
    "frontdoor",
    "proxy",
    "identity.rs",
    "tls/client_auth.rs",
    "tls/upstream.rs",
    "steer/upstream.rs",
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for e in std::fs::read_dir(path).expect("read_dir") {
            rust_files(&e.expect("entry").path(), out);
        }
    } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

#[test]
fn request_path_never_logs_at_info() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for p in REQUEST_PATH {
        rust_files(&src.join(p), &mut files);
    }
    // relay.rs and admin.rs exist today; the list must keep finding real code.
    assert!(files.len() >= 2, "request-path modules moved? {files:?}");
    let mut offenders = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        for (n, line) in text.lines().enumerate() {
            if line.contains("info!(") {
                offenders.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "per-request info logs (use debug!):\n{}",
        offenders.join("\n")
    );
}
