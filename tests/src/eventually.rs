//! Wait for a condition with bounded patience instead of sleeping a fixed time.
//! Patience scales with `MVP_TEST_PATIENCE_MS` (default 20 000 ms) so a slow CI machine
//! can be given more time without editing tests.
use std::time::{Duration, Instant};

/// The default patience for eventually-asserts.
pub fn patience() -> Duration {
    std::env::var("MVP_TEST_PATIENCE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(20))
}

/// Poll `check` until it returns `Ok`, or panic with the last error after `patience()`.
pub fn eventually<T, E: std::fmt::Display>(what: &str, check: impl FnMut() -> Result<T, E>) -> T {
    eventually_within(what, patience(), check)
}

/// Like [`eventually`] with an explicit patience.
pub fn eventually_within<T, E: std::fmt::Display>(
    what: &str,
    patience: Duration,
    mut check: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + patience;
    let mut delay = Duration::from_millis(10);
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("gave up after {patience:?} waiting for {what}: {e}")
            }
            Err(_) => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(250));
            }
        }
    }
}

/// Async flavour of [`eventually`].
pub async fn eventually_async<T, E, F, Fut>(what: &str, mut check: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let patience = patience();
    let deadline = Instant::now() + patience;
    let mut delay = Duration::from_millis(10);
    loop {
        match check().await {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("gave up after {patience:?} waiting for {what}: {e}")
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(250));
            }
        }
    }
}
