//! mvp: the Kubernetes Mixed Version Proxy as a node daemon.
//!
//! Rooms, bottom to top (see ARCHITECTURE.md):
//! - [`steer`]: eBPF sk_lookup steering; the only module that touches the kernel
//!   (bpf(), setns). Exposes [`steer::ListenerSource`] and [`steer::UpstreamConnector`].
//! - [`addr`]: typed addresses so client, original destination and upstream cannot be confused.
//! - [`tls`]: serving TLS (the apiserver's reloaded cert, client certs judged like
//!   kube-apiserver) and upstream TLS (plain and front-proxy client configs).
//! - [`identity`]: who is calling (x509, front proxy, bearer, anonymous) and how that
//!   identity travels upstream.
//! - [`proxy`]: upstream pools, streaming forwarding, upgrades, the `Route` seam.
//! - [`status`]: Kubernetes `Status` responses mvp writes itself.
//! - [`frontdoor`]: the L7 front door tying TLS → HTTP → identity → route → proxy.
//! - [`relay`]: the L4 relay (`mvp run` without TLS flags: steering only, no TLS termination).
//! - [`admin`]: /healthz, /readyz, /metrics.
//! - [`cli`], [`app`]: the command line and the wiring of the daemon (`mvp run`).
//! - [`doctor`]: `mvp doctor`, the preflight (PASS/WARN/FAIL with fixes).
//! - [`detect`]: zero-config detection of kube-apiserver's settings (manifest, /proc).
//! - [`discovery`], [`request_info`], [`route`]: the brain — pure, I/O-free decisions.
#![forbid(unsafe_code)]

pub mod addr;
pub mod admin;
pub mod app;
pub mod brain;
pub mod cli;
pub mod detect;
pub mod doctor;
pub mod frontdoor;
pub mod identity;
pub mod proxy;
pub mod relay;
pub mod status;
pub mod steer;
pub mod tls;

// Brain (pure core, no I/O).
pub mod discovery;
pub mod request_info;
pub mod route;
#[cfg(test)]
mod test_fixtures;
