//! ETags and response bodies for aggregated discovery.
//!
//! Upstream (`discovery/aggregated/etag.go`) hashes Go's `json.Marshal` of the typed list, in
//! which `kind`/`apiVersion` are empty and therefore omitted, and writes the digest as
//! uppercase hex SHA-512 in double quotes. Checked against the recorded 1.36 responses: the
//! SHA-512 of the recorded body with the `"kind":…,"apiVersion":…,` prefix removed and without
//! the trailing newline reproduces the recorded `etag` header exactly, for both `/api` and
//! `/apis` (see the tests). Hashing the body as sent does not.

use sha2::{Digest, Sha512};

use super::model::{APIGroupDiscovery, APIGroupDiscoveryList, ExtraFields};

/// Encoding a discovery document failed (only possible for values serde_json refuses, such as
/// maps with non-string keys; kept typed so callers answer without an ETag like upstream).
#[derive(Debug, thiserror::Error)]
pub enum EtagError {
    #[error("encoding discovery document: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A strong entity tag, stored with its quotes as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// The quoted header value, e.g. `"A745…77"`.
    pub fn header_value(&self) -> &str {
        &self.0
    }

    /// Upstream answers 304 only when `If-None-Match` equals the quoted hash exactly (no list
    /// parsing, no weak comparison); mirrored so clients see the same behaviour.
    pub fn matches_if_none_match(&self, if_none_match: Option<&str>) -> bool {
        if_none_match == Some(self.0.as_str())
    }
}

/// The hashed form: the list without its type information, fields in Go struct order.
#[derive(serde::Serialize)]
struct HashedList<'a> {
    metadata: &'a ExtraFields,
    items: &'a [APIGroupDiscovery],
    #[serde(flatten)]
    extra: &'a ExtraFields,
}

/// The ETag upstream computes for an aggregated discovery list.
pub fn discovery_etag(list: &APIGroupDiscoveryList) -> Result<ETag, EtagError> {
    let encoded = serde_json::to_vec(&HashedList {
        metadata: &list.metadata,
        items: &list.items,
        extra: &list.extra,
    })?;
    Ok(etag_of_bytes(&encoded))
}

/// Quoted uppercase-hex SHA-512 of `bytes`.
pub fn etag_of_bytes(bytes: &[u8]) -> ETag {
    let digest = Sha512::digest(bytes);
    ETag(format!("\"{}\"", hex::encode_upper(digest)))
}

/// The response body kube-apiserver writes: compact JSON and one trailing newline.
pub fn encode_body(list: &APIGroupDiscoveryList) -> Result<Vec<u8>, EtagError> {
    let mut body = serde_json::to_vec(list)?;
    body.push(b'\n');
    Ok(body)
}

/// A document ready to serve: bytes and ETag computed once per change of the input views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedDiscovery {
    pub body: Vec<u8>,
    pub etag: ETag,
}

impl EncodedDiscovery {
    pub fn encode(list: &APIGroupDiscoveryList) -> Result<Self, EtagError> {
        Ok(EncodedDiscovery {
            body: encode_body(list)?,
            etag: discovery_etag(list)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::model::AggregatedVersion;
    use crate::test_fixtures::{real_apiserver, real_apiserver_emulating_135, recorded_etag};

    fn check_recorded(name: &str, body: &[u8], headers: &[u8]) {
        let list: APIGroupDiscoveryList = serde_json::from_slice(body).unwrap();
        let recorded = recorded_etag(headers).expect("recorded response has an etag");
        assert_eq!(
            discovery_etag(&list).unwrap().header_value(),
            recorded,
            "{name}"
        );
        // Our encoding of the parsed document is byte-identical to what the server sent.
        assert_eq!(encode_body(&list).unwrap(), body, "{name}");
    }

    #[test]
    fn reproduces_recorded_etags_of_real_apiserver() {
        for name in [
            "discovery-apis-aggregated-v2",
            "discovery-api-aggregated-v2",
            "discovery-apis-aggregated-v2-nopeer",
            "discovery-api-clientgo-default-accept",
        ] {
            check_recorded(
                name,
                &real_apiserver(&format!("{name}.json")),
                &real_apiserver(&format!("{name}.response-headers.txt")),
            );
        }
    }

    #[test]
    fn reproduces_recorded_etag_of_server_emulating_135() {
        let name = "discovery-apis-aggregated-v2";
        let body = real_apiserver_emulating_135(&format!("{name}.json"));
        let headers = real_apiserver_emulating_135(&format!("{name}.response-headers.txt"));
        check_recorded(name, &body, &headers);
        // A different API set gives a different tag (README: emulating 1.35 differs).
        let current = recorded_etag(&real_apiserver(&format!("{name}.response-headers.txt")));
        assert_ne!(recorded_etag(&headers), current);
    }

    #[test]
    fn hashing_the_body_as_sent_does_not_reproduce_the_etag() {
        let body = real_apiserver("discovery-apis-aggregated-v2.json");
        let recorded = recorded_etag(&real_apiserver(
            "discovery-apis-aggregated-v2.response-headers.txt",
        ));
        assert_ne!(Some(etag_of_bytes(&body).0), recorded);
        assert_ne!(Some(etag_of_bytes(&body[..body.len() - 1]).0), recorded);
    }

    #[test]
    fn etag_format_is_quoted_uppercase_hex_sha512() {
        let tag =
            discovery_etag(&APIGroupDiscoveryList::new(AggregatedVersion::V2, vec![])).unwrap();
        let value = tag.header_value();
        assert_eq!(value.len(), 128 + 2);
        assert!(value.starts_with('"') && value.ends_with('"'));
        assert!(
            value[1..129]
                .chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
        );
        // Empty list: Go marshals `{"metadata":{},"items":[]}`.
        assert_eq!(tag, etag_of_bytes(br#"{"metadata":{},"items":[]}"#));
    }

    #[test]
    fn etag_ignores_type_information_but_not_content() {
        let v2 = APIGroupDiscoveryList::new(AggregatedVersion::V2, vec![]);
        let v2beta1 = APIGroupDiscoveryList::new(AggregatedVersion::V2Beta1, vec![]);
        assert_eq!(
            discovery_etag(&v2).unwrap(),
            discovery_etag(&v2beta1).unwrap()
        );
        let mut with_group = v2.clone();
        with_group.items.push(APIGroupDiscovery::default());
        assert_ne!(
            discovery_etag(&v2).unwrap(),
            discovery_etag(&with_group).unwrap()
        );
    }

    #[test]
    fn if_none_match_must_equal_the_quoted_tag_exactly() {
        let tag = etag_of_bytes(b"x");
        let quoted = tag.header_value().to_owned();
        assert!(tag.matches_if_none_match(Some(&quoted)));
        assert!(!tag.matches_if_none_match(None));
        assert!(!tag.matches_if_none_match(Some(quoted.trim_matches('"'))));
        assert!(!tag.matches_if_none_match(Some(&format!("W/{quoted}"))));
        assert!(!tag.matches_if_none_match(Some(&quoted.to_lowercase())));
        assert!(!tag.matches_if_none_match(Some("*")));
    }

    #[test]
    fn recorded_if_none_match_request_carries_the_recorded_tag() {
        let request = real_apiserver("discovery-apis-aggregated-v2-if-none-match.request.txt");
        let sent = String::from_utf8_lossy(&request)
            .lines()
            .find_map(|l| l.strip_prefix("if-none-match: ").map(str::to_owned))
            .unwrap();
        let list: APIGroupDiscoveryList =
            serde_json::from_slice(&real_apiserver("discovery-apis-aggregated-v2.json")).unwrap();
        // The server answered that request with 304: our tag must match it the same way.
        assert!(
            discovery_etag(&list)
                .unwrap()
                .matches_if_none_match(Some(&sent))
        );
    }
}
