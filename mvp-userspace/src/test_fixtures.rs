//! Test-only access to the shared, read-only fixtures (`shared/fixtures` next to the
//! checkout, found by walking up from this crate, or `MVP_FIXTURES`).
use std::path::PathBuf;

pub fn fixtures_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MVP_FIXTURES") {
        return PathBuf::from(dir);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("shared/fixtures"))
        .find(|candidate| candidate.is_dir())
        .expect("shared/fixtures not found above the crate: set MVP_FIXTURES")
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

/// A file recorded from the real v1.36.2 apiserver.
pub fn real_apiserver(name: &str) -> Vec<u8> {
    read(fixtures_dir().join("real-apiserver/v1.36.2").join(name))
}

/// A recorded JSON body, parsed.
pub fn real_apiserver_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&real_apiserver(name)).unwrap()
}

/// A file recorded from the same binary emulating 1.35.
pub fn real_apiserver_emulating_135(name: &str) -> Vec<u8> {
    read(
        fixtures_dir()
            .join("real-apiserver/v1.36.2-emulating-1.35")
            .join(name),
    )
}

/// `discovery/<release>/<file>` (release `k8s-1.33`, `k8s-1.36`, `k8s-1.37-dev`).
pub fn discovery(release: &str, name: &str) -> Vec<u8> {
    read(fixtures_dir().join("discovery").join(release).join(name))
}

/// The recorded `etag` response header (quoted), if any.
pub fn recorded_etag(headers_file: &[u8]) -> Option<String> {
    String::from_utf8_lossy(headers_file)
        .lines()
        .find_map(|line| line.strip_prefix("etag: ").map(|v| v.trim().to_owned()))
}
