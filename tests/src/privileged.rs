//! Privileged tests (eBPF, network namespaces) are first-class: they run as root in CI.
//! Locally, without root, they skip loudly; under `CI=true` a skip is a failure.

/// True when the process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True under CI (`CI=true`), where privileged tests must not skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Call at the top of a privileged test: returns `false` (after a loud message) when the
/// test must skip, panics when it would skip under CI.
#[must_use]
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    let msg = format!(
        "SKIPPED privileged test `{test}`: needs root (eBPF and network namespaces); run `sudo -E cargo xtask test`"
    );
    if in_ci() {
        panic!("{msg} — and CI=true, where a skipped privileged test is a failure");
    }
    eprintln!("\n!!!!! {msg} !!!!!\n");
    false
}

/// Skip the rest of the test body unless running as root (see [`require_root`]).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::privileged::require_root(module_path!()) {
            return;
        }
    };
}
