//! Shared test support for mvp: a product, not an afterthought.
//!
//! - [`netns`]: network namespaces and veth links, removed on drop (also on panic).
//! - [`privileged`]: root detection; loud skips, which fail under `CI=true`.
//! - [`eventually`]: eventually-asserts with patience tunable by `MVP_TEST_PATIENCE_MS`.
//! - [`trace`]: tracing set up once per test binary.
//! - [`bins`]: paths of the workspace's built binaries.
//! - [`echo`]: name-echo servers and dials that prove which socket got a connection.
#![forbid(unsafe_code)]

pub mod bins;
pub mod echo;
pub mod eventually;
pub mod labapi;
pub mod netns;
pub mod privileged;
pub mod trace;
