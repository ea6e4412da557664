//! The lab apiserver: a test double with kube-apiserver's wire semantics, built from the
//! real discovery documents in `shared/fixtures/discovery` and storing objects in a real
//! etcd. Its binary is `mvp-lab-apiserver`.
//!
//! Rooms:
//! - [`types`]: what the HTTP layer hands the storage layer (identity, resource request).
//! - [`status`]: `Status` objects shaped exactly like kube-apiserver's.
//! - [`surface`]: the served groups/versions/resources, from the discovery fixtures.
//! - [`server`]: TLS, [`authn`], authorization, [`classify`], [`discovery`], [`openapi`],
//!   version, health, SelfSubjectReview, SelfSubjectAccessReview ([`review`]), audit log.
//! - [`testpki`]: a minimal rcgen PKI (server, client CA, front-proxy CA) for tests.
//! - [`store`]: the storage (etcd CRUD, watch, patch).
//! - [`exec`]: pods/exec and pods/attach (WebSocket and SPDY), an echoing lab container.
pub mod authn;
pub mod classify;
pub mod discovery;
pub mod exec;
pub mod openapi;
pub mod review;
pub mod server;
pub mod status;
pub mod store;
pub mod surface;
pub mod testpki;
pub mod types;
pub mod wire;
