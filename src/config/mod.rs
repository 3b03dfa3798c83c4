//! The gateway's configuration, the bottom layer: every other module reads it, and it reads none
//! of them. Validated and immutable once loaded.
//!
//! `file.rs` mirrors gateway.yaml for serde, `validate/` turns it into the types of `model.rs`
//! (re-exported here) and reports every problem with its line (`index.rs` finds those lines),
//! filling unset keys from `defaults.rs`.

mod defaults;
mod describe;
mod error;
mod file;
mod index;
mod model;
#[cfg(test)]
mod readme;
mod template;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cluster;
#[cfg(test)]
mod tests_script;
mod validate;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

pub use error::{ConfigError, ConfigErrors};
pub use model::{
    Admin, ArrayKeys, Cluster, Config, Cors, Demo, DiffMode, Forwarding, Idle, Limits, OnRedisDown,
    Pattern, StreamSpec, Tls, Upstream,
};
pub use template::PathTemplate;

/// Reads, validates and resolves a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, format!("cannot read: {e}")))?;
    from_bytes(path, &bytes)
}

/// Validates and resolves what was read from `path`: a reload checks and applies the very bytes
/// it compared with the running config, never a second read that a writer may have changed.
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Config, ConfigErrors> {
    let text = utf8(path, bytes)?;
    parse(&path.display().to_string(), text, &env, &resolve)
}

/// `from_bytes` for a reload of `running`: an unset `cluster.node_id` keeps the running one, so
/// the random suffix the other gateways know this one by stays, and an unchanged `cluster:`
/// section compares equal.
pub fn from_bytes_reloading(
    path: &Path,
    bytes: &[u8],
    running: &Config,
) -> Result<Config, ConfigErrors> {
    let text = utf8(path, bytes)?;
    let source = path.display().to_string();
    match &running.cluster {
        Some(c) => parse_with(&source, text, &env, &resolve, &|| c.node_id.clone()),
        None => parse_with(&source, text, &env, &resolve, &default_node_id),
    }
}

fn utf8<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, ConfigErrors> {
    std::str::from_utf8(bytes).map_err(|e| file_error(path, format!("not UTF-8: {e}")))
}

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

fn file_error(path: &Path, msg: String) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: Arc::from(path.display().to_string()),
        line: 0,
        col: 0,
        key: "(file)".into(),
        msg,
    }])
}

/// Validates config text. `env` looks up `${VAR}`s and `resolve` turns host and port into an
/// address, so tests can run it without touching the environment or DNS.
pub fn parse(
    source: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    resolve: &dyn Fn(&str, u16) -> Option<SocketAddr>,
) -> Result<Config, ConfigErrors> {
    parse_with(source, text, env, resolve, &default_node_id)
}

/// `parse`, with the `cluster.node_id` an unset one takes.
fn parse_with(
    source: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    resolve: &dyn Fn(&str, u16) -> Option<SocketAddr>,
    node_id: &dyn Fn() -> String,
) -> Result<Config, ConfigErrors> {
    let source: Arc<str> = Arc::from(source);
    let file = file::parse(&source, text).map_err(|e| ConfigErrors(vec![e]))?;
    validate::validate(source, text, file, env, resolve, node_id)
}

/// Resolves a host name once, at load time.
pub fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    (host, port).to_socket_addrs().ok()?.next()
}

/// `cluster.node_id` when unset: the host name, then 4 random hex digits, so two gateways on
/// one host (or one restarted) are told apart. Always a valid node id: at most 64 bytes, no
/// space or control character.
fn default_node_id() -> String {
    let host: String = host_name()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .scan(0, |len, c| {
            *len += c.len_utf8();
            (*len <= 59).then_some(c)
        })
        .collect();
    let host = if host.is_empty() {
        defaults::cluster::HOST_FALLBACK
    } else {
        &host
    };
    format!("{host}-{:04x}", rand::random::<u16>())
}

/// gethostname(2), or /etc/hostname where that fails.
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    // POSIX leaves a truncated name unterminated: take it up to the first NUL, if any.
    let from_libc = (rc == 0)
        .then(|| buf.split(|&b| b == 0).next().unwrap_or_default().to_vec())
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|h| !h.is_empty());
    from_libc.or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
    })
}
