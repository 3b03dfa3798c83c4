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
mod validate;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

pub use error::{ConfigError, ConfigErrors};
pub use model::{
    Admin, Cluster, Config, Cors, Demo, DiffMode, Forwarding, Idle, Limits, OnRedisDown, Pattern,
    StreamSpec, Tls, Upstream,
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
    let text =
        std::str::from_utf8(bytes).map_err(|e| file_error(path, format!("not UTF-8: {e}")))?;
    let source = path.display().to_string();
    parse(&source, text, &|var| std::env::var(var).ok(), &resolve)
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
    let source: Arc<str> = Arc::from(source);
    let file = file::parse(&source, text).map_err(|e| ConfigErrors(vec![e]))?;
    validate::validate(source, text, file, env, resolve)
}

/// Resolves a host name once, at load time.
pub fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    (host, port).to_socket_addrs().ok()?.next()
}
