//! Small wire-format helpers shared by the lab apiserver's handlers: JSON encoding the way
//! kube-apiserver writes it, timestamps, audit ids.
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore as _;

/// kube-apiserver's JSON: compact with one trailing newline, or (curl/Wget/browser
/// User-Agent, `?pretty=true`, and a few fixed endpoints) 2-space indented without one.
pub fn json_bytes<T: serde::Serialize>(value: &T, pretty: bool) -> Vec<u8> {
    if pretty {
        serde_json::to_vec_pretty(value).expect("JSON values serialise")
    } else {
        let mut v = serde_json::to_vec(value).expect("JSON values serialise");
        v.push(b'\n');
        v
    }
}

/// Whether kube-apiserver would pretty-print for this request.
pub fn wants_pretty(headers: &http::HeaderMap, query: Option<&str>) -> bool {
    let ua = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let by_agent = ["curl", "Wget", "Mozilla/5.0"]
        .iter()
        .any(|p| ua.starts_with(p));
    let by_param = query.into_iter().flat_map(|q| q.split('&')).any(|kv| {
        matches!(
            kv,
            "pretty=true" | "pretty=1" | "pretty=True" | "pretty=TRUE" | "pretty=t"
        )
    });
    by_agent || by_param
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's
/// algorithm), so the lab needs no date crate.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn split(t: SystemTime) -> (i64, u32, u32, u64, u64, u64, i64) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u64;
    let (y, m, d) = civil(days);
    (y, m, d, rem / 3600, rem / 60 % 60, rem % 60, days)
}

/// RFC 3339 in UTC with second precision, as `metav1.Time` marshals.
pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, _) = split(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// An HTTP date (`Tue, 24 Nov 2026 09:15:42 GMT`) for `last-modified`/`expires`.
pub fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, days) = split(t);
    format!(
        "{}, {d:02} {} {y:04} {h:02}:{mi:02}:{s:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(mo - 1) as usize]
    )
}

/// A random (version 4) UUID, for `audit-id`.
pub fn uuid4() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        // 2026-11-24T09:15:42Z, the recordings' date (a Tuesday).
        let t = UNIX_EPOCH + Duration::from_secs(1_795_511_742);
        assert_eq!(rfc3339(t), "2026-11-24T09:15:42Z");
        assert_eq!(http_date(t), "Tue, 24 Nov 2026 09:15:42 GMT");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn uuid_shape() {
        let u = uuid4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
