//! Discovery: documents, per-server served sets, the merged (peer-aggregated) view, ETags and
//! Accept negotiation. Pure data transformations, no I/O: the discovery cache feeds server
//! documents in, the front door asks for answers.

pub mod etag;
pub mod exclusion;
pub mod legacy;
pub mod merge;
pub mod model;
pub mod negotiate;
pub mod served;
pub mod view;
