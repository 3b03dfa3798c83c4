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
    let number = |key: &str| -> Option<u64> {
        let after = |pattern: String| data.find(&pattern).map(|i| i + pattern.len());
        let at = after(format!("\"path\":\"/{key}\",\"value\":"))
            .or_else(|| after(format!("\"{key}\":")))?;
        let digits: String = data[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    Some((number("seq")?, number("t")?))
}

/// The `p` quantile of sorted latencies in µs, in ms.
pub fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}
