//! The stamps each change carries, `seq` and `t`, and the clock `t` is read from.

use serde_json::Value;

/// Nanoseconds on CLOCK_MONOTONIC: one clock for every process on the machine (the wall clock
/// can step under NTP), so a change stamped by one process can be timed by another.
pub fn now_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// (seq, t) from whatever the event carries: a document, a JSON Patch, a merge patch.
pub fn stamp(data: &str) -> Option<(u64, u64)> {
    if data.len() > 4096 {
        return stamp_scan(data);
    }
    let v: Value = serde_json::from_str(data).ok()?;
    let find = |key: &str| -> Option<u64> {
        match &v {
            Value::Object(m) => m.get(key)?.as_u64(),
            Value::Array(ops) => ops
                .iter()
                .find(|op| op["path"] == format!("/{key}"))?
                .get("value")?
                .as_u64(),
            _ => None,
        }
    };
    Some((find("seq")?, find("t")?))
}

/// `stamp` for large events (polled mode), or for many clients (sse-cluster), without parsing
/// the JSON: the stamps are top-level numbers in a document, or `replace` ops in a patch.
pub fn stamp_scan(data: &str) -> Option<(u64, u64)> {
    let number = |in_patch: &str, in_doc: &str| -> Option<u64> {
        let after = |pattern: &str| data.find(pattern).map(|i| i + pattern.len());
        let at = after(in_patch).or_else(|| after(in_doc))?;
        let digits = data[at..].bytes().take_while(u8::is_ascii_digit).count();
        data[at..at + digits].parse().ok()
    };
    Some((
        number(r#""path":"/seq","value":"#, r#""seq":"#)?,
        number(r#""path":"/t","value":"#, r#""t":"#)?,
    ))
}

/// The `p` quantile of sorted latencies in µs, in ms.
pub fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_found_in_a_snapshot_and_in_a_patch() {
        let snapshot = r#"event: snapshot
data: {"pad":"bbb","seq":2,"t":123}"#;
        let patch = r#"data: [{"op":"replace","path":"/pad","value":"ccc"},{"op":"replace","path":"/seq","value":3},{"op":"replace","path":"/t","value":456}]"#;
        assert_eq!(stamp_scan(snapshot), Some((2, 123)));
        assert_eq!(stamp_scan(patch), Some((3, 456)));
        assert_eq!(stamp(r#"{"seq":2,"t":123}"#), Some((2, 123)));
        assert_eq!(stamp_scan(": heartbeat"), None);
    }
}
