//! Query parameters: label and field selectors, list/watch options, continue tokens.
use std::collections::HashMap;

use base64::Engine;
use serde_json::Value;

use crate::labapi::status::Status;

/// Decoded query string (last value wins, as Go's `Query().Get`).
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let mut m = HashMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            m.insert(dec(k), dec(v));
        }
        Query(m)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.0.get(k).map(String::as_str), Some("true" | "1" | ""))
            && self.0.contains_key(k)
    }

    /// A non-negative integer parameter; `Err` is a 400 Status.
    pub fn int(&self, k: &str) -> Result<Option<i64>, Status> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                Status::new(
                    400,
                    "BadRequest",
                    format!("invalid value for {k}: {v:?} is not an integer"),
                )
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

/// One `key op value` requirement.
#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, value: Option<&str>) -> bool {
        match (&self.op, value) {
            (Op::Eq(v), Some(x)) => x == v,
            (Op::Eq(_), None) => false,
            (Op::NotEq(v), x) => x != Some(v.as_str()),
            (Op::In(vs), Some(x)) => vs.iter().any(|v| v == x),
            (Op::In(_), None) => false,
            (Op::NotIn(vs), x) => x.is_none_or(|x| !vs.iter().any(|v| v == x)),
            (Op::Exists, x) => x.is_some(),
            (Op::NotExists, x) => x.is_none(),
            (Op::Gt(n), Some(x)) => x.parse::<i64>().is_ok_and(|x| x > *n),
            (Op::Lt(n), Some(x)) => x.parse::<i64>().is_ok_and(|x| x < *n),
            (Op::Gt(_) | Op::Lt(_), None) => false,
        }
    }
}

/// Split on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set_values(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

/// A label selector (`app=x,tier!=db,env in (a,b),!legacy,has`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, Status> {
        let bad = |why: &str| {
            Status::new(
                400,
                "BadRequest",
                format!("unable to parse requirement: {why}: {s:?}"),
            )
        };
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let req = if let Some(k) = part.strip_prefix('!') {
                Requirement {
                    key: k.trim().into(),
                    op: Op::NotExists,
                }
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement {
                    key: k.trim().into(),
                    op: Op::NotEq(v.trim().into()),
                }
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement {
                    key: k.trim().into(),
                    op: Op::Eq(v.trim().into()),
                }
            } else if let Some((k, v)) = part.split_once(" notin ") {
                Requirement {
                    key: k.trim().into(),
                    op: Op::NotIn(set_values(v).ok_or_else(|| bad("expected (values)"))?),
                }
            } else if let Some((k, v)) = part.split_once(" in ") {
                Requirement {
                    key: k.trim().into(),
                    op: Op::In(set_values(v).ok_or_else(|| bad("expected (values)"))?),
                }
            } else if let Some((k, v)) = part.split_once('>') {
                Requirement {
                    key: k.trim().into(),
                    op: Op::Gt(v.trim().parse().map_err(|_| bad("expected an integer"))?),
                }
            } else if let Some((k, v)) = part.split_once('<') {
                Requirement {
                    key: k.trim().into(),
                    op: Op::Lt(v.trim().parse().map_err(|_| bad("expected an integer"))?),
                }
            } else {
                Requirement {
                    key: part.into(),
                    op: Op::Exists,
                }
            };
            if req.key.is_empty() || req.key.contains(char::is_whitespace) {
                return Err(bad("invalid label key"));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        self.0
            .iter()
            .all(|r| r.matches(labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str)))
    }
}

/// A field selector: `=`, `==` and `!=` on dotted paths (`metadata.name`,
/// `metadata.namespace`, `spec.nodeName`, `status.phase`, ...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<Requirement>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<FieldSelector, Status> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement {
                    key: k.trim().into(),
                    op: Op::NotEq(v.trim().into()),
                }
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement {
                    key: k.trim().into(),
                    op: Op::Eq(v.trim().into()),
                }
            } else {
                return Err(Status::new(
                    400,
                    "BadRequest",
                    format!("invalid selector: '{s}'; can't understand '{part}'"),
                ));
            };
            reqs.push(req);
        }
        Ok(FieldSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Add `metadata.name=<name>` (watch of a single object).
    pub fn with_name(mut self, name: &str) -> Self {
        self.0.push(Requirement {
            key: "metadata.name".into(),
            op: Op::Eq(name.into()),
        });
        self
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| {
            let mut cur = Some(obj);
            for seg in r.key.split('.') {
                cur = cur.and_then(|c| c.get(seg));
            }
            let s = cur.map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            // kube treats a missing field as the empty string.
            r.matches(Some(s.as_deref().unwrap_or("")))
        })
    }
}

/// A list continue token: base64url(JSON) as kube-apiserver's storage layer encodes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContinueToken {
    pub v: String,
    pub rv: i64,
    pub start: String,
}

impl ContinueToken {
    pub fn new(rv: i64, start: String) -> Self {
        ContinueToken {
            v: "meta.k8s.io/v1".into(),
            rv,
            start,
        }
    }

    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("token serialises");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(s: &str) -> Result<ContinueToken, Status> {
        let bad = |why: String| {
            Status::new(
                400,
                "BadRequest",
                format!("continue key is not valid: {why}"),
            )
        };
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|e| bad(e.to_string()))?;
        let t: ContinueToken = serde_json::from_slice(&raw).map_err(|e| bad(e.to_string()))?;
        if t.v != "meta.k8s.io/v1" {
            return Err(bad(format!(
                "incorrect encoded start resourceVersion (version {})",
                t.v
            )));
        }
        if t.start.contains("..") || !t.start.starts_with('/') && t.rv != -1 {
            return Err(bad("continue key is not valid: invalid start".into()));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recorded_continue_token_decodes() {
        let t = ContinueToken::decode(
            "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MjE5LCJzdGFydCI6Ii9jbS1iXHUwMDAwIn0",
        )
        .unwrap();
        assert_eq!(t, ContinueToken::new(219, "/cm-b\u{0}".into()));
        assert_eq!(
            t.encode(),
            "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MjE5LCJzdGFydCI6Ii9jbS1iXHUwMDAwIn0"
        );
        assert!(ContinueToken::decode("not base64!").is_err());
    }

    #[test]
    fn selectors() {
        let o = json!({"metadata": {"name": "a", "labels": {"app": "x", "n": "5"}}, "status": {"phase": "Running"}});
        let t = |s: &str| LabelSelector::parse(s).unwrap().matches(&o);
        assert!(t("app=x") && t("app==x") && t("app") && t("!b") && t("app in (y, x)"));
        assert!(t("n>4") && !t("n<4") && !t("app!=x") && !t("app notin (x)") && t(""));
        assert!(t("app=x,b notin (c)"));
        let f = |s: &str| FieldSelector::parse(s).unwrap().matches(&o);
        assert!(f("metadata.name=a") && f("status.phase==Running") && !f("metadata.name!=a"));
        assert!(f("metadata.namespace=") && !f("metadata.namespace=x"));
        assert!(FieldSelector::parse("bogus").is_err());
    }
}
