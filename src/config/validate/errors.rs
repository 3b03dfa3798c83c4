//! How validation reports: `Errors` collects every problem with its place in the file, and the
//! checks every part of the file shares (addresses, durations) report through it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::super::defaults::MAX_DURATION;
use super::super::index::KeyIndex;
use super::super::ConfigError;

/// Collects errors with their place in the file.
pub(super) struct Errors {
    pub(super) source: Arc<str>,
    pub(super) index: KeyIndex,
    pub(super) list: Vec<ConfigError>,
}

impl Errors {
    pub(super) fn add(&mut self, key: impl Into<String>, msg: impl Into<String>) {
        let key = key.into();
        let (line, col) = self.index.locate(&key);
        self.list.push(ConfigError {
            file: self.source.clone(),
            line,
            col,
            key,
            msg: msg.into(),
        });
    }

    /// Every error once: a bad value in `defaults` is found again in each stream that takes it.
    pub(super) fn take_distinct(&mut self) -> Vec<ConfigError> {
        let mut seen = std::collections::HashSet::new();
        let mut list = std::mem::take(&mut self.list);
        list.retain(|e| seen.insert((e.key.clone(), e.msg.clone())));
        list
    }
}

/// The address written at `key`; an error (and a placeholder) if it is not one.
pub(super) fn socket_addr(errs: &mut Errors, key: &str, value: &str) -> SocketAddr {
    value.parse().unwrap_or_else(|_| {
        errs.add(
            key,
            format!("`{value}` is not an address like 0.0.0.0:8080"),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

/// A duration that must be more than zero and at most a year: `own` if set, else `default`.
pub(super) fn positive(
    errs: &mut Errors,
    key: &str,
    own: Option<Duration>,
    default: Duration,
) -> Duration {
    let d = own.unwrap_or(default);
    if d.is_zero() {
        errs.add(key, "must be more than zero");
    }
    capped(errs, key, d)
}

/// `d`, or an error at `key` when it is past `MAX_DURATION` (then the maximum, so later checks
/// run on a value that can't overflow).
pub(super) fn capped(errs: &mut Errors, key: &str, d: Duration) -> Duration {
    if d > MAX_DURATION {
        errs.add(key, "at most a year (1y)");
        return MAX_DURATION;
    }
    d
}
