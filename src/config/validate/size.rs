//! Byte sizes: a number of bytes, or a number with a unit (`512KiB`, `8MiB`, `1MB`).

use super::super::file::Size;
use super::errors::Errors;

/// A size more than zero, or an error at `key`.
pub(super) fn size(errs: &mut Errors, key: &str, s: &Size) -> Option<usize> {
    let n = match s {
        Size::Bytes(n) => Some(*n),
        Size::Text(t) => parse_size(t),
    };
    match n {
        Some(0) => {
            errs.add(key, "must be more than zero");
            None
        }
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => {
            errs.add(
                key,
                "not a size like `8MiB`, `512KiB`, `1MB` or a number of bytes",
            );
            None
        }
    }
}

pub(in super::super) fn parse_size(t: &str) -> Option<u64> {
    let t = t.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}
