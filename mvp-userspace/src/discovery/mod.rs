//! Discovery: documents, per-server served sets, the merged (peer-aggregated) view, ETags and
//! Accept negotiation. Pure data transformations, no I/O.
//!
//! How the pieces fit (the I/O around them belongs to the discovery cache and front door):
//! 1. per server, fetch `/api` and `/apis` with the `profile=nopeer` Accept and parse with
//!    [`model::parse_aggregated`]; a server without aggregated discovery: fetch the legacy
//!    documents and convert with [`legacy::aggregated_from_legacy`]. → [`view::ServerDiscovery`]
//! 2. keep the CRD/APIService exclusion set with [`exclusion::ExclusionTracker`]
//!    ([`served::ExclusionSet::add_crds`], [`served::ExclusionSet::add_api_services`]);
//! 3. on any change, [`view::DiscoveryView::build`]: merged and local aggregated documents
//!    (encoded once, with ETags), legacy documents, and the [`crate::route::RoutingTable`];
//! 4. per request: [`crate::request_info::classify`]; a non-resource path that
//!    [`view::DiscoveryPath::parse`] recognises → [`view::DiscoveryView::respond`]; a resource
//!    request → [`crate::route::RoutingTable::decide`].

pub mod etag;
pub mod exclusion;
pub mod http;
pub mod legacy;
pub mod merge;
pub mod model;
pub mod negotiate;
pub mod openapi;
pub mod served;
pub mod view;
