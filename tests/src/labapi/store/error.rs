//! The storage boundary's error: what went wrong talking to etcd, whether a retry can
//! help, and what an operator should do. HTTP handlers turn it into a kube-shaped Status.
use serde_json::json;

use crate::labapi::status::Status;

/// Failures at the etcd boundary of the lab store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The etcd client could not be created or the cluster is unreachable at connect time.
    #[error(
        "store: cannot connect to etcd at {endpoints:?}: {source} (retryable; check that etcd runs and listens there)"
    )]
    Connect {
        endpoints: Vec<String>,
        #[source]
        source: etcd_client::Error,
    },
    /// An etcd RPC failed (timeout, leader change, connection loss).
    #[error(
        "store: etcd {op} on {key:?} failed: {source} (retryable; check etcd health and the lab's etcd endpoint)"
    )]
    Etcd {
        op: &'static str,
        key: String,
        #[source]
        source: etcd_client::Error,
    },
    /// The revision asked for (when known) has been compacted away by etcd.
    #[error(
        "store: the revision{} asked for {key:?} is compacted (not retryable with the same revision; start a new list/watch)",
        requested.map(|r| format!(" {r}")).unwrap_or_default()
    )]
    Compacted { key: String, requested: Option<i64> },
    /// A stored value is not a JSON object (someone else wrote the key).
    #[error(
        "store: value at {key:?} is not a JSON object: {reason} (not retryable; remove or fix the key in etcd)"
    )]
    Corrupt { key: String, reason: String },
    /// Optimistic concurrency kept losing against concurrent writers.
    #[error(
        "store: gave up updating {key:?} after {attempts} conflicting concurrent writes (retryable)"
    )]
    TooManyConflicts { key: String, attempts: u32 },
}

impl StoreError {
    /// Whether retrying the same request can succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Connect { .. }
                | StoreError::Etcd { .. }
                | StoreError::TooManyConflicts { .. }
        )
    }

    pub(crate) fn etcd(op: &'static str, key: &str, source: etcd_client::Error) -> StoreError {
        if is_compacted(&source) {
            return StoreError::Compacted {
                key: key.to_string(),
                requested: None,
            };
        }
        StoreError::Etcd {
            op,
            key: key.to_string(),
            source,
        }
    }

    /// The Status kube-apiserver would answer with for this storage failure.
    pub fn to_status(&self) -> Status {
        match self {
            StoreError::Compacted { .. } => Status::new(
                410,
                "Expired",
                "The resourceVersion for the provided list is too old.",
            ),
            StoreError::TooManyConflicts { .. } => Status::new(
                409,
                "Conflict",
                format!("Operation cannot be fulfilled: {self}"),
            ),
            _ => Status::new(
                500,
                "InternalError",
                format!("Internal error occurred: {self}"),
            )
            .with_details(json!({"causes": [{"message": self.to_string()}]})),
        }
    }
}

/// True for etcd's "required revision has been compacted".
pub(crate) fn is_compacted(e: &etcd_client::Error) -> bool {
    e.to_string().contains("compacted")
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        tracing::warn!(error = %e, "lab store error");
        e.to_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_where_whether_to_retry_and_what_to_do() {
        let e = StoreError::Compacted {
            key: "/registry/configmaps/fx".into(),
            requested: Some(2),
        };
        assert!(!e.retryable());
        assert!(
            e.to_string()
                .contains("revision 2 asked for \"/registry/configmaps/fx\"")
        );
        assert_eq!(e.to_status().code, 410);
        let e = StoreError::TooManyConflicts {
            key: "k".into(),
            attempts: 16,
        };
        assert!(e.retryable());
        assert_eq!(e.to_status().reason, "Conflict");
        let e = StoreError::Corrupt {
            key: "k".into(),
            reason: "not JSON".into(),
        };
        assert!(!e.retryable() && e.to_string().contains("remove or fix the key"));
        assert_eq!(e.to_status().code, 500);
    }
}
