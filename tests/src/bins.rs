//! Paths of the workspace's binaries, as built by `cargo build` (`cargo xtask test`
//! builds them before running the suite).
use std::path::PathBuf;

/// The target profile directory the running test binary lives in
/// (`target/<profile>/deps/<test>` → `target/<profile>`), or `MVP_BIN_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MVP_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("test binary has a parent dir")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary; panics with the fix when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not found: build it first (`cargo build --workspace --bins`; `cargo xtask test` does this)",
        path.display()
    );
    path
}

/// The `mvp` daemon binary.
pub fn mvp() -> PathBuf {
    bin("mvp")
}

/// The lab apiserver binary.
pub fn lab_apiserver() -> PathBuf {
    bin("mvp-lab-apiserver")
}

/// The repository root (parent of the `tests` crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent")
        .to_path_buf()
}

/// `shared/fixtures` next to the checkout or next to any folder above it (a worktree under
/// `wt/<name>` finds the main checkout's), or `MVP_FIXTURES`.
pub fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MVP_FIXTURES") {
        return PathBuf::from(dir);
    }
    let root = repo_root();
    let found = root
        .ancestors()
        .skip(1)
        .map(|a| a.join("shared/fixtures"))
        .find(|d| d.is_dir());
    match found {
        Some(dir) => dir,
        None => panic!(
            "fixtures not found: no shared/fixtures folder next to {} or above it (or set MVP_FIXTURES)",
            root.display()
        ),
    }
}
