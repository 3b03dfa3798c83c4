//! Configs for the hub's unit tests, parsed by the real loader.

use std::sync::Arc;

use crate::config::{self, Config, StreamSpec};

/// A config with one upstream, `api` at `http://127.0.0.1:1/base/` (nothing listens there:
/// tests script the answers), also the proxy, and these `streams:` entries.
pub fn config(streams: &str) -> Config {
    let yaml = format!(
        "upstreams:\n  api:\n    url: http://127.0.0.1:1/base/\nproxy: api\nstreams:\n{streams}"
    );
    config::parse("t.yaml", &yaml, &|_| None, &|_, _| None).expect("a valid test config")
}

/// The stream `/s` on `api`, with `extra` lines of its own (indented four spaces).
pub fn spec(extra: &str) -> Arc<StreamSpec> {
    config(&format!("  - path: /s\n    upstream: api\n{extra}")).streams[0].clone()
}
