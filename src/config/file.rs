//! The serde mirror of gateway.yaml; the only file naming serde_yaml (it is deprecated, so
//! replacing it touches this file alone).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::index::KeyIndex;
use super::{DiffMode, OnRedisDown};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub listen: Option<String>,
    pub threads: Option<usize>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamFile>,
    pub defaults: Option<StreamFile>,
    #[serde(default)]
    pub streams: Vec<StreamFile>,
    pub proxy: Option<String>,
    pub demo: Option<DemoFile>,
    pub limits: Option<LimitsFile>,
    pub shutdown: Option<ShutdownFile>,
    pub admin: Option<AdminFile>,
    pub cors: Option<CorsFile>,
    pub tls: Option<TlsFile>,
    pub proxy_trust_forwarded: Option<bool>,
    pub preserve_host: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub proxy_resolve_interval: Option<Duration>,
    pub cluster: Option<ClusterFile>,
    pub client_script: Option<ClientScriptFile>,
}

/// `client_script`: `true`, `false` or the path to serve it at.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ClientScriptFile {
    On(bool),
    At(String),
}

/// `cluster:`: absent, every stream stays in this process.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub redis: String,
    pub prefix: Option<String>,
    pub node_id: Option<String>,
    pub key_secret: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub lease_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    pub on_redis_down: Option<OnRedisDown>,
    #[serde(default, with = "humantime_serde")]
    pub history_ttl: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownFile {
    #[serde(default, with = "humantime_serde")]
    pub grace: Option<Duration>,
    pub upgrade_sock: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// A stream, and also `defaults` (which refuses `path`, `poll` and `params`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamFile {
    pub path: Option<String>,
    pub upstream: Option<String>,
    pub poll: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub heartbeat: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub retry: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub backoff_max: Option<Duration>,
    pub diff: Option<DiffMode>,
    pub replay: Option<usize>,
    pub replay_bytes: Option<Size>,
    pub idle: Option<IdleFile>,
    pub ignore: Option<Vec<String>>,
    pub array_keys: Option<BTreeMap<String, String>>,
    pub forward_headers: Option<Vec<String>>,
    pub forward_query: Option<bool>,
    pub max_instances: Option<usize>,
    pub max_body: Option<Size>,
    pub params: Option<BTreeMap<String, String>>,
    pub cors: Option<CorsFile>,
    pub follow_redirects: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub refresh_limit: Option<Duration>,
    pub cluster: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsFile {
    pub origins: Vec<String>,
    #[serde(default)]
    pub credentials: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoFile {
    pub listen: Option<String>,
    pub page: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_clients: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub write_timeout: Option<Duration>,
    pub max_connections: Option<usize>,
    pub max_clients_per_ip: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub head_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub keepalive: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub proxy_connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub proxy_timeout: Option<Duration>,
    pub proxy_max_body: Option<Size>,
}

/// A byte size: a number of bytes or a string with a unit (`512KiB`, `8MiB`, `1MB`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

/// `idle`: a duration, or `never`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub enum IdleFile {
    Never,
    After(Duration),
}

impl TryFrom<String> for IdleFile {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s == "never" {
            return Ok(IdleFile::Never);
        }
        humantime::parse_duration(&s)
            .map(IdleFile::After)
            .map_err(|e| format!("`{s}` is neither a duration nor `never`: {e}"))
    }
}

/// Parses the text; a syntax or type error names its line, column and key path.
pub fn parse(source: &Arc<str>, text: &str) -> Result<File, ConfigError> {
    if text.trim().is_empty() {
        return Ok(File::default());
    }
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        // serde_yaml places an error raised while converting a value (`idle: soon`) at the map
        // that holds it, lines above the key: the key's own line, when the file has it, is right.
        let found = inner.location().map(|l| (l.line(), l.column()));
        let (line, col) = match (found, KeyIndex::build(text).exact(&key)) {
            (Some(at), Some(key_at)) if at.0 != key_at.0 => key_at,
            (Some(at), _) => at,
            (None, key_at) => key_at.unwrap_or((0, 0)),
        };
        let msg = inner.to_string();
        // serde_yaml appends the location we already print in front.
        let msg = match msg.find(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        // serde_yaml also puts its own key path in front, which we print ourselves: the same
        // path, or for an unknown field the map's (`streams[0]: unknown field `intervall``).
        let msg = ancestors(&key)
            .find_map(|p| msg.strip_prefix(&format!("{p}: ")))
            .map_or(msg.clone(), str::to_string);
        ConfigError {
            file: source.clone(),
            line,
            col,
            // `.` is the document itself; an empty path, a top-level key named `""` or `?`.
            key: if key == "." || key.is_empty() {
                "(top level)".into()
            } else {
                key
            },
            msg,
        }
    })
}

/// `a.b[0].c`, then `a.b[0]`, `a.b`, `a`.
fn ancestors(key: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(key), |k| k.rfind(['.', '[']).map(|i| &k[..i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_its_key_once() {
        for (text, key, msg) in [
            (
                "streams:\n  - path: /a\n    intervall: 1s\n",
                "streams[0].intervall",
                "unknown field `intervall`",
            ),
            ("limits:\n  key: 1\n", "limits.key", "unknown field `key`"),
            ("replay: 1\n", "replay", "unknown field `replay`"),
            (
                "streams:\n  - replay: many\n",
                "streams[0].replay",
                "invalid type",
            ),
        ] {
            let e = parse(&Arc::from("g.yaml"), text).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.msg.starts_with(msg), "{e}");
        }
    }

    /// Found by fuzz_config_any_text: the error's key was empty, so `check` printed `g.yaml:1:2: : ...`.
    #[test]
    fn a_key_without_a_name_is_still_named() {
        for text in ["?", "\"\": 1\n", "? \n"] {
            let e = parse(&Arc::from("g.yaml"), text).unwrap_err();
            assert_eq!(e.key, "(top level)", "{e}");
            assert!(e.msg.starts_with("unknown field ``"), "{e}");
        }
    }
}
