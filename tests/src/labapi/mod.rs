//! The lab apiserver: a test double with kube-apiserver's wire semantics, built from the
//! real discovery documents in `shared/fixtures/discovery` and storing objects in a real
//! etcd. Its binary is `mvp-lab-apiserver`.
//!
//! Rooms:
//! - [`types`]: what the HTTP layer hands the storage layer (identity, resource request).
//! - [`status`]: `Status` objects shaped exactly like kube-apiserver's.
//! - the server (TLS, authentication, discovery, OpenAPI, health, audit) and the storage
//!   (etcd CRUD, watch, patch, exec) live in their own modules.
pub mod exec;
pub mod status;
pub mod types;
