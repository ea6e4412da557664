//! Accept negotiation for `/api` and `/apis`, mirroring kube-apiserver
//! (goautoneg `ParseAccept` + `NegotiateMediaTypeOptions` with the aggregated-discovery
//! endpoint restrictions, and the `/apis` wrapper's `profile=nopeer` switch):
//!
//! - clauses are ordered as goautoneg orders them: higher q first, and a concrete type before
//!   a wildcard (even one with a higher q: goautoneg's comparison allows that); q only orders
//!   (1.35/1.36 do not drop `q=0`; a later upstream negotiation rejects q<=0 per RFC 9110 —
//!   not mirrored here, the recorded server is 1.36); an unparsable q is 0;
//! - each clause is tried against `application/json`, `application/yaml`,
//!   `application/vnd.kubernetes.protobuf` (that order; `*/*` and `application/*` therefore
//!   pick JSON); parameters `g`/`v`/`as` ask for a conversion, allowed only to
//!   `apidiscovery.k8s.io` `APIGroupDiscoveryList` v2 (and v2beta1 on servers before 1.36);
//!   `sv` and a `stream` other than `watch` reject the clause; other parameters (`profile`,
//!   `pretty`, …) are ignored by matching;
//! - no Accept header → legacy JSON; nothing acceptable → 406 (recorded: a pretty-printed
//!   Status, see [`NOT_ACCEPTABLE_BODY`]);
//! - the aggregated v2 answer is peer-aggregated unless the chosen clause says
//!   `profile=nopeer`; v2beta1 is never peer-aggregated (upstream §8 case 40).
//!
//! Ours: we encode JSON only. A YAML or protobuf clause is passed over when a later clause
//! gets JSON (so `protobuf, json` yields the merged JSON view instead of a local protobuf
//! one); when only YAML/protobuf is acceptable the answer is [`DiscoveryAnswer::LocalOnly`]
//! (the local apiserver answers it, un-merged), never a 406 kube would not give.

use super::model::AggregatedVersion;

/// What to answer a discovery request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryAnswer {
    /// `APIGroupDiscoveryList` as JSON; merged across servers when `peer_aggregated`.
    Aggregated {
        version: AggregatedVersion,
        peer_aggregated: bool,
    },
    /// Legacy `APIVersions` / `APIGroupList` as JSON.
    Legacy,
    /// Only a representation we do not encode is acceptable: forward to the local apiserver.
    LocalOnly,
    /// 406 with [`NOT_ACCEPTABLE_BODY`].
    NotAcceptable,
}

impl DiscoveryAnswer {
    /// The response `Content-Type` for answers we write ourselves.
    pub fn content_type(self) -> Option<&'static str> {
        match self {
            DiscoveryAnswer::Aggregated { version, .. } => Some(version.content_type()),
            DiscoveryAnswer::Legacy | DiscoveryAnswer::NotAcceptable => Some("application/json"),
            DiscoveryAnswer::LocalOnly => None,
        }
    }
}

/// Which aggregated versions the emulated server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiationPolicy {
    /// kube-apiserver removed v2beta1 in 1.36 (a v2beta1-only Accept gets 406 there).
    pub accept_v2beta1: bool,
}

impl NegotiationPolicy {
    /// As a 1.36 kube-apiserver: v2 only.
    pub const KUBE_1_36: NegotiationPolicy = NegotiationPolicy {
        accept_v2beta1: false,
    };
}

/// Accept for fetching a server's own view (upstream's peer fetch, §3.1, verbatim): v2 with
/// `profile=nopeer` so a 1.35+ server does not answer with its own merged view; older servers
/// ignore the profile.
pub const SERVER_VIEW_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";

/// Same, also accepting v2beta1 for 1.26–1.29 servers that predate v2 (the answer may then
/// be v2beta1 — same shape — or legacy JSON from servers without aggregated discovery).
pub const SERVER_VIEW_ACCEPT_WITH_V2BETA1: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

/// Body of the discovery 406, byte-identical to the recorded 1.36 answer (always
/// pretty-printed, no `details`, no trailing newline).
pub const NOT_ACCEPTABLE_BODY: &str = "{\n  \"kind\": \"Status\",\n  \"apiVersion\": \"v1\",\n  \"metadata\": {},\n  \"status\": \"Failure\",\n  \"message\": \"only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf\",\n  \"reason\": \"NotAcceptable\",\n  \"code\": 406\n}";

/// One media range of an Accept header.
#[derive(Debug, Clone, PartialEq)]
struct Clause<'a> {
    media_type: &'a str,
    subtype: &'a str,
    quality: f64,
    params: Vec<(&'a str, &'a str)>,
}

impl<'a> Clause<'a> {
    fn param(&self, key: &str) -> Option<&'a str> {
        // Go fills a map, so a repeated parameter keeps its last value.
        self.params
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }
}

/// goautoneg's `ParseAccept`: parts split on `,` and trimmed of spaces; a range is `*` or
/// `type/subtype` (anything else is skipped); parameters without `=` are skipped; `q` is
/// parsed untrimmed (failure → 0).
fn parse_accept(header: &str) -> Vec<Clause<'_>> {
    let mut clauses: Vec<Clause<'_>> = header
        .split(',')
        .filter_map(|part| {
            let mut pieces = part.trim_matches(' ').split(';');
            let range = pieces.next().unwrap_or("");
            let halves: Vec<&str> = range.split('/').collect();
            let media_type = halves[0].trim_matches(' ');
            let subtype = match halves.as_slice() {
                [_] if media_type == "*" => "*",
                [_, subtype] => subtype.trim_matches(' '),
                _ => return None,
            };
            let mut clause = Clause {
                media_type,
                subtype,
                quality: 1.0,
                params: Vec::new(),
            };
            for param in pieces {
                let Some((key, value)) = param.split_once('=') else {
                    continue;
                };
                let key = key.trim_matches(' ');
                if key == "q" {
                    clause.quality = value.parse::<f32>().map(f64::from).unwrap_or(0.0);
                } else {
                    clause.params.push((key, value.trim_matches(' ')));
                }
            }
            Some(clause)
        })
        .collect();
    // goautoneg sorts with this "less", which is not a strict order (a concrete type beats a
    // wildcard whatever the q); Go's sort.Sort runs insertion sort on short slices, so the
    // same insertion sort gives the same order for any realistic header (< 12 clauses).
    let less = |a: &Clause<'_>, b: &Clause<'_>| {
        a.quality > b.quality
            || (a.media_type != "*" && b.media_type == "*")
            || (a.subtype != "*" && b.subtype == "*")
    };
    for i in 1..clauses.len() {
        let mut j = i;
        while j > 0 && less(&clauses[j], &clauses[j - 1]) {
            clauses.swap(j, j - 1);
            j -= 1;
        }
    }
    clauses
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Yaml,
    Protobuf,
}

const SERVED: [(&str, &str, Encoding); 3] = [
    ("application", "json", Encoding::Json),
    ("application", "yaml", Encoding::Yaml),
    ("application", "vnd.kubernetes.protobuf", Encoding::Protobuf),
];

/// What a clause asks of one served type, if it is acceptable at all.
fn accept_clause(
    clause: &Clause<'_>,
    policy: NegotiationPolicy,
) -> Option<Option<AggregatedVersion>> {
    if clause.param("sv").is_some_and(|v| !v.is_empty())
        || clause
            .param("stream")
            .is_some_and(|v| !v.is_empty() && v != "watch")
    {
        return None;
    }
    let (group, version, kind) = (clause.param("g"), clause.param("v"), clause.param("as"));
    if group.is_none() && version.is_none() && kind.is_none() {
        return Some(None);
    }
    if group != Some("apidiscovery.k8s.io") || kind != Some("APIGroupDiscoveryList") {
        return None;
    }
    match version {
        Some("v2") => Some(Some(AggregatedVersion::V2)),
        Some("v2beta1") if policy.accept_v2beta1 => Some(Some(AggregatedVersion::V2Beta1)),
        _ => None,
    }
}

/// Decide the answer for a discovery request's `Accept` header (several header lines
/// joined with `,` by the caller).
pub fn negotiate_discovery(accept: Option<&str>, policy: NegotiationPolicy) -> DiscoveryAnswer {
    let Some(header) = accept.filter(|h| !h.is_empty()) else {
        return DiscoveryAnswer::Legacy;
    };
    let mut other_encoding_acceptable = false;
    for clause in parse_accept(header) {
        for (media_type, subtype, encoding) in SERVED {
            let matches = (clause.media_type == media_type
                && (clause.subtype == subtype || clause.subtype == "*"))
                || (clause.media_type == "*" && clause.subtype == "*");
            if !matches {
                continue;
            }
            let Some(conversion) = accept_clause(&clause, policy) else {
                continue;
            };
            if encoding != Encoding::Json {
                other_encoding_acceptable = true;
                continue;
            }
            return match conversion {
                None => DiscoveryAnswer::Legacy,
                Some(version) => DiscoveryAnswer::Aggregated {
                    version,
                    peer_aggregated: version == AggregatedVersion::V2
                        && clause.param("profile") != Some("nopeer"),
                },
            };
        }
    }
    if other_encoding_acceptable {
        DiscoveryAnswer::LocalOnly
    } else {
        DiscoveryAnswer::NotAcceptable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{fixtures_dir, real_apiserver};

    const V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    const V2_NOPEER: &str =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer";
    const V2BETA1: &str =
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
    const PEER_AGGREGATED: DiscoveryAnswer = DiscoveryAnswer::Aggregated {
        version: AggregatedVersion::V2,
        peer_aggregated: true,
    };
    const LOCAL_V2: DiscoveryAnswer = DiscoveryAnswer::Aggregated {
        version: AggregatedVersion::V2,
        peer_aggregated: false,
    };

    fn kube(accept: &str) -> DiscoveryAnswer {
        negotiate_discovery(Some(accept), NegotiationPolicy::KUBE_1_36)
    }

    #[test]
    fn every_recorded_discovery_exchange_negotiates_like_the_real_server() {
        let dir = fixtures_dir().join("real-apiserver/v1.36.2");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let file = entry.unwrap().file_name().into_string().unwrap();
            let Some(name) = file.strip_suffix(".request.txt") else {
                continue;
            };
            if !name.starts_with("discovery-") {
                continue;
            }
            let request = String::from_utf8(real_apiserver(&file)).unwrap();
            let response =
                String::from_utf8(real_apiserver(&format!("{name}.response-headers.txt"))).unwrap();
            let accept = request.lines().find_map(|l| l.strip_prefix("accept: "));
            let status = response.lines().next().unwrap();
            let content_type = response
                .lines()
                .find_map(|l| l.strip_prefix("content-type: "));
            let expected = if status.contains(" 406") {
                DiscoveryAnswer::NotAcceptable
            } else if status.contains(" 304")
                || content_type.is_some_and(|t| t.contains("as=APIGroupDiscoveryList"))
            {
                let no_peer = accept.is_some_and(|a| a.contains("profile=nopeer"));
                DiscoveryAnswer::Aggregated {
                    version: AggregatedVersion::V2,
                    peer_aggregated: !no_peer,
                }
            } else {
                assert_eq!(content_type, Some("application/json"), "{name}");
                DiscoveryAnswer::Legacy
            };
            let answer = negotiate_discovery(accept, NegotiationPolicy::KUBE_1_36);
            assert_eq!(answer, expected, "{name} (accept {accept:?})");
            if let (Some(ours), Some(theirs)) = (answer.content_type(), content_type) {
                assert_eq!(ours, theirs, "{name}");
            }
            checked += 1;
        }
        assert!(
            checked >= 50,
            "only {checked} recorded discovery exchanges found"
        );
    }

    #[test]
    fn recorded_406_body_is_reproduced() {
        let recorded = real_apiserver("discovery-apis-v2beta1-only-accept.json");
        assert_eq!(NOT_ACCEPTABLE_BODY.as_bytes(), &recorded[..]);
        let recorded = real_apiserver("discovery-api-v2beta1-only-accept.json");
        assert_eq!(NOT_ACCEPTABLE_BODY.as_bytes(), &recorded[..]);
    }

    #[test]
    fn basic_forms() {
        assert_eq!(
            negotiate_discovery(None, NegotiationPolicy::KUBE_1_36),
            DiscoveryAnswer::Legacy
        );
        assert_eq!(kube(""), DiscoveryAnswer::Legacy);
        assert_eq!(kube("*/*"), DiscoveryAnswer::Legacy);
        assert_eq!(kube("*"), DiscoveryAnswer::Legacy);
        assert_eq!(kube("application/*"), DiscoveryAnswer::Legacy);
        assert_eq!(kube("application/json, */*"), DiscoveryAnswer::Legacy);
        assert_eq!(kube(V2), PEER_AGGREGATED);
        assert_eq!(kube(V2_NOPEER), LOCAL_V2);
        assert_eq!(kube(V2BETA1), DiscoveryAnswer::NotAcceptable);
        assert_eq!(kube("text/html"), DiscoveryAnswer::NotAcceptable);
        assert_eq!(
            kube(" "),
            DiscoveryAnswer::NotAcceptable,
            "goautoneg finds no clause"
        );
        assert_eq!(kube("garbage"), DiscoveryAnswer::NotAcceptable);
    }

    #[test]
    fn client_go_accept_lists() {
        // client-go AcceptV2NoPeer first, then its normal list (upstream §5.1).
        assert_eq!(
            kube(&format!("{V2_NOPEER},{V2},application/json")),
            LOCAL_V2
        );
        // The peer fetch Accept of upstream (§3.1).
        assert_eq!(
            kube(&format!("{V2_NOPEER},{V2},application/json")),
            LOCAL_V2
        );
        assert_eq!(
            kube(&format!("{V2},{V2BETA1},application/json")),
            PEER_AGGREGATED
        );
        assert_eq!(
            kube(&format!("{V2BETA1},application/json")),
            DiscoveryAnswer::Legacy
        );
        assert_eq!(kube(&format!("{V2BETA1},{V2}")), PEER_AGGREGATED);
    }

    #[test]
    fn profiles() {
        // §8 case 23: unknown profile → peer-aggregated; case 24: nopeer → local.
        assert_eq!(kube(&format!("{V2};profile=foo")), PEER_AGGREGATED);
        assert_eq!(kube(&format!("{V2};profile=nopeer")), LOCAL_V2);
        assert_eq!(kube(&format!("{V2}; profile=nopeer")), LOCAL_V2);
        assert_eq!(kube(&format!("{V2};profile=NOPEER")), PEER_AGGREGATED);
        // Repeated parameter: the last value wins (Go map).
        assert_eq!(
            kube(&format!("{V2};profile=nopeer;profile=x")),
            PEER_AGGREGATED
        );
    }

    #[test]
    fn v2beta1_when_the_emulated_server_still_serves_it() {
        let old = NegotiationPolicy {
            accept_v2beta1: true,
        };
        let v2beta1 = DiscoveryAnswer::Aggregated {
            version: AggregatedVersion::V2Beta1,
            peer_aggregated: false,
        };
        assert_eq!(negotiate_discovery(Some(V2BETA1), old), v2beta1);
        // §8 case 40: v2beta1 is never peer-aggregated, profile or not.
        assert_eq!(
            negotiate_discovery(Some(&format!("{V2BETA1};profile=foo")), old),
            v2beta1
        );
        assert_eq!(
            negotiate_discovery(Some(&format!("{V2},{V2BETA1}")), old),
            PEER_AGGREGATED
        );
        assert_eq!(v2beta1.content_type(), Some(V2BETA1));
    }

    #[test]
    fn quality_values_order_clauses() {
        assert_eq!(
            kube(&format!("application/json;q=0.5,{V2}")),
            PEER_AGGREGATED
        );
        assert_eq!(
            kube(&format!("{V2};q=0.5,application/json")),
            DiscoveryAnswer::Legacy
        );
        assert_eq!(
            kube(&format!("{V2};q=0.9,application/json;q=0.8")),
            PEER_AGGREGATED
        );
        // q=0 only sorts last (kube does not drop it).
        assert_eq!(kube(&format!("{V2};q=0")), PEER_AGGREGATED);
        // Unparsable q counts as 0.
        assert_eq!(
            kube(&format!("{V2};q=abc,application/json")),
            DiscoveryAnswer::Legacy
        );
        // Equal q: concrete types before wildcards, then header order.
        assert_eq!(kube(&format!("*/*,{V2}")), PEER_AGGREGATED);
        assert_eq!(
            kube(&format!("application/json,{V2}")),
            DiscoveryAnswer::Legacy
        );
    }

    #[test]
    fn conversion_parameters_must_name_the_discovery_list() {
        for accept in [
            "application/json;as=APIGroupDiscoveryList",
            "application/json;g=apidiscovery.k8s.io;v=v2",
            "application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList",
            "application/json;g=meta.k8s.io;v=v1;as=Table",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscovery",
            "application/json;sv=v1",
            "application/json;stream=other",
        ] {
            assert_eq!(kube(accept), DiscoveryAnswer::NotAcceptable, "{accept}");
        }
        // Unknown parameters do not matter, nor does stream=watch.
        assert_eq!(
            kube("application/json;pretty=1;x=y"),
            DiscoveryAnswer::Legacy
        );
        assert_eq!(
            kube("application/json;stream=watch"),
            DiscoveryAnswer::Legacy
        );
        // Matching is case-sensitive, as in Go.
        assert_eq!(kube("Application/JSON"), DiscoveryAnswer::NotAcceptable);
    }

    #[test]
    fn protobuf_and_yaml_fall_back_to_json_or_local() {
        let pb_v2 = "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
        assert_eq!(
            kube(&format!("{pb_v2},{V2},application/json")),
            PEER_AGGREGATED
        );
        assert_eq!(
            kube(&format!("{pb_v2},application/json")),
            DiscoveryAnswer::Legacy
        );
        assert_eq!(kube(pb_v2), DiscoveryAnswer::LocalOnly);
        assert_eq!(
            kube("application/vnd.kubernetes.protobuf"),
            DiscoveryAnswer::LocalOnly
        );
        assert_eq!(kube("application/yaml"), DiscoveryAnswer::LocalOnly);
        assert_eq!(DiscoveryAnswer::LocalOnly.content_type(), None);
        // A protobuf v2beta1 request on a 1.36-like server is still a 406.
        assert_eq!(
            kube(
                "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
            ),
            DiscoveryAnswer::NotAcceptable
        );
    }

    #[test]
    fn parse_accept_mirrors_goautoneg() {
        let clauses = parse_accept("text/html;level=1;q=0.5, */*;q=0.1 ,application/json");
        let types: Vec<(&str, &str)> = clauses.iter().map(|c| (c.media_type, c.subtype)).collect();
        assert_eq!(
            types,
            [("application", "json"), ("text", "html"), ("*", "*")]
        );
        assert_eq!(clauses[1].param("level"), Some("1"));
        assert!(parse_accept("a/b/c,noslash").is_empty());
        assert_eq!(parse_accept("a/b;novalue;k=v")[0].params, [("k", "v")]);
    }

    #[test]
    fn arbitrary_accept_headers_never_panic() {
        use rand::{Rng, SeedableRng};
        let pieces = [
            "application",
            "json",
            "/",
            "*",
            ";",
            ",",
            "=",
            "q",
            "0.5",
            "g",
            "v",
            "as",
            "v2",
            "apidiscovery.k8s.io",
            "APIGroupDiscoveryList",
            " ",
            "profile",
            "nopeer",
            "é",
            "",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for _ in 0..20_000 {
            let header: String = (0..rng.gen_range(0..16))
                .map(|_| pieces[rng.gen_range(0..pieces.len())])
                .collect();
            let _ = negotiate_discovery(
                Some(&header),
                NegotiationPolicy {
                    accept_v2beta1: rng.gen_bool(0.5),
                },
            );
        }
    }

    #[test]
    fn server_view_accepts_get_the_local_document() {
        assert_eq!(kube(SERVER_VIEW_ACCEPT), LOCAL_V2);
        assert_eq!(kube(SERVER_VIEW_ACCEPT_WITH_V2BETA1), LOCAL_V2);
        // A server with v2beta1 only (no v2) answers v2beta1; one with neither, legacy.
        let v2beta1_only = NegotiationPolicy {
            accept_v2beta1: true,
        };
        let without_v2 = SERVER_VIEW_ACCEPT_WITH_V2BETA1.replace(";v=v2;", ";v=v3;");
        assert_eq!(
            negotiate_discovery(Some(&without_v2), v2beta1_only),
            DiscoveryAnswer::Aggregated {
                version: AggregatedVersion::V2Beta1,
                peer_aggregated: false
            }
        );
        assert_eq!(kube(&without_v2), DiscoveryAnswer::Legacy);
    }

    #[test]
    fn goautoneg_ordering_quirks() {
        // Concrete beats wildcard regardless of q in goautoneg's comparison: insertion sort
        // on [text/html;q=0.1, */*] swaps (*/* has the higher q), giving */* first ...
        let clauses = parse_accept("text/html;q=0.1,*/*");
        assert_eq!(
            (clauses[0].media_type, clauses[1].media_type),
            ("*", "text")
        );
        // ... while [*/*, text/html;q=0.1] also swaps (text/html is concrete).
        let clauses = parse_accept("*/*,text/html;q=0.1");
        assert_eq!(
            (clauses[0].media_type, clauses[1].media_type),
            ("text", "*")
        );
        // Tabs are not trimmed (Go trims spaces only), so this range is not application/json.
        assert_eq!(kube("\tapplication/json"), DiscoveryAnswer::NotAcceptable);
        // A space before q's value makes it unparsable: q=0.
        assert_eq!(
            kube(&format!("{V2};q= 0.9,application/json;q=0.5")),
            DiscoveryAnswer::Legacy
        );
    }
}
