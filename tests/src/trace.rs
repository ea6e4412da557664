//! Tracing for tests: call [`init`] at the top of each test; `RUST_LOG` tunes it.
use std::sync::Once;

static INIT: Once = Once::new();

/// Install a test-friendly subscriber once per test binary (output captured per test).
pub fn init() {
    INIT.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}
