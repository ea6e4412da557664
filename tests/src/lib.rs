//! Shared test support for mvp: a product, not an afterthought.
//!
//! - [`netns`]: network namespaces and veth links, removed on drop (also on panic).
//! - [`privileged`]: root detection; loud skips, which fail under `CI=true`.
//! - [`eventually`]: eventually-asserts with patience tunable by `MVP_TEST_PATIENCE_MS`.
//! - [`trace`]: tracing set up once per test binary.
//! - [`bins`]: paths of the workspace's built binaries.
//! - [`pki`]: a kubeadm-layout PKI and kubeconfigs.
//! - [`lab`]: [`lab::LabCluster`], a mixed-version control plane in network namespaces.
//! - [`https`]: a small HTTPS client for probes and set-up writes.
//! - [`etcd`]: a real throw-away etcd (loopback, or on a lab segment), killed on drop.
//! - [`echo`]: name-echo servers and dials that prove which socket got a connection.
#![forbid(unsafe_code)]

pub mod bins;
pub mod echo;
pub mod etcd;
pub mod eventually;
pub mod https;
pub mod lab;
pub mod labapi;
pub mod mvp_args;
pub mod netns;
pub mod pki;
pub mod privileged;
pub mod surface;
pub mod trace;
