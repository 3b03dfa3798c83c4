//! File structs → `Config`: every semantic check, every error reported. No I/O: the
//! environment, name resolution and the host's default node id come in as functions.

mod cluster;
mod cors;
mod env;
mod errors;
mod limits;
mod script;
mod size;
mod stream;
mod upstream;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::defaults;
use super::file::{AdminFile, DemoFile, File, ShutdownFile, StreamFile};
use super::index::KeyIndex;
use super::{Admin, Config, ConfigErrors, Cors, Demo, StreamSpec, Tls, Upstream};
use cors::cors;
use errors::{capped, socket_addr, Errors};
#[cfg(test)]
pub(super) use size::parse_size;
use stream::{stream, Upstreams};

pub fn validate(
    source: Arc<str>,
    text: &str,
    file: File,
    env: &dyn Fn(&str) -> Option<String>,
    resolve: &dyn Fn(&str, u16) -> Option<SocketAddr>,
    node_id: &dyn Fn() -> String,
) -> Result<Config, ConfigErrors> {
    let mut errs = Errors {
        source: source.clone(),
        index: KeyIndex::build(text),
        list: Vec::new(),
    };
    let errs = &mut errs;
    let listen_set = file.listen.as_deref().unwrap_or(defaults::LISTEN);
    let listen = socket_addr(errs, "listen", listen_set);
    let threads = threads(errs, file.threads);
    let mut upstreams = BTreeMap::new();
    for (name, up) in &file.upstreams {
        if let Some(u) = upstream::upstream(errs, name, up, env, resolve) {
            upstreams.insert(name.clone(), Arc::new(u));
        }
    }
    let ups = Upstreams {
        declared: &file.upstreams,
        valid: &upstreams,
    };
    let streams = streams(errs, &file, &ups);
    let cluster = file
        .cluster
        .as_ref()
        .and_then(|c| cluster::cluster(errs, c, &streams, env, node_id))
        .map(Arc::new);
    let proxy = file.proxy.as_ref().and_then(|name| proxy(errs, name, &ups));
    let demo = file.demo.as_ref().map(|d| demo(errs, d));
    let demo_page = demo.as_ref().is_some_and(|d| d.page);
    let client_script =
        script::client_script(errs, file.client_script.as_ref(), &streams, demo_page);
    let limits = limits::limits(errs, file.limits.as_ref());
    let forwarding = limits::forwarding(errs, &file);
    let admin = admin(errs, file.admin.as_ref(), listen_set, env);
    // Relative paths are relative to the config file, like every path in it.
    let base = Path::new(&*source)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let tls = file.tls.as_ref().map(|t| Tls {
        cert: base.join(&t.cert),
        key: base.join(&t.key),
    });
    let (shutdown_grace, upgrade_sock) = shutdown(errs, file.shutdown.as_ref(), &base);
    // An empty or cut-short file is valid YAML: refusing it keeps a half-written reload from
    // closing every stream and the proxy (security review F7).
    if file.streams.is_empty() && file.proxy.is_none() {
        errs.add(
            "streams",
            "nothing to serve: no `streams` and no `proxy` (is the file empty or cut short?)",
        );
    }
    if !errs.list.is_empty() {
        return Err(ConfigErrors(errs.take_distinct()));
    }
    Ok(Config {
        source,
        listen,
        threads,
        upstreams,
        streams,
        proxy,
        demo,
        limits,
        shutdown_grace,
        upgrade_sock,
        admin,
        tls,
        forwarding,
        cluster,
        client_script,
    })
}

/// `shutdown`: the grace period, and the hand-over socket (relative to the config file).
fn shutdown(
    errs: &mut Errors,
    s: Option<&ShutdownFile>,
    base: &Path,
) -> (std::time::Duration, Option<PathBuf>) {
    let grace = s.and_then(|s| s.grace).unwrap_or(defaults::SHUTDOWN_GRACE);
    let upgrade_sock = s
        .and_then(|s| s.upgrade_sock.as_ref())
        .map(|p| base.join(p));
    (capped(errs, "shutdown.grace", grace), upgrade_sock)
}

fn proxy(errs: &mut Errors, name: &str, ups: &Upstreams) -> Option<Arc<Upstream>> {
    let found = ups.valid.get(name).cloned();
    // A declared upstream that failed validation has its own error already.
    if found.is_none() && !ups.declared.contains_key(name) {
        errs.add("proxy", format!("no upstream named `{name}`"));
    }
    found
}

fn threads(errs: &mut Errors, set: Option<usize>) -> usize {
    match set {
        Some(0) => {
            errs.add("threads", "must be at least 1");
            1
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

fn demo(errs: &mut Errors, d: &DemoFile) -> Demo {
    Demo {
        listen: socket_addr(
            errs,
            "demo.listen",
            d.listen.as_deref().unwrap_or(defaults::DEMO_LISTEN),
        ),
        page: d.page.unwrap_or(defaults::DEMO_PAGE),
    }
}

/// Every stream, merged with `defaults` (which may not set what belongs to one stream).
fn streams(errs: &mut Errors, file: &File, ups: &Upstreams) -> Vec<Arc<StreamSpec>> {
    let no_defaults = StreamFile::default();
    let defaults = file.defaults.as_ref().unwrap_or(&no_defaults);
    for (key, set) in [
        ("path", defaults.path.is_some()),
        ("poll", defaults.poll.is_some()),
        ("params", defaults.params.is_some()),
    ] {
        if set {
            errs.add(
                format!("defaults.{key}"),
                "belongs to each stream, not to defaults",
            );
        }
    }
    let global_cors: Option<Cors> = file.cors.as_ref().and_then(|c| cors(errs, "cors", c));
    if defaults.cors.is_some() {
        errs.add(
            "defaults.cors",
            "set `cors` at the top level, or per stream",
        );
    }
    let mut streams = Vec::new();
    let mut seen = HashSet::new();
    for (i, st) in file.streams.iter().enumerate() {
        let key = format!("streams[{i}]");
        let Some(mut spec) = stream(errs, &key, st, defaults, ups) else {
            continue;
        };
        spec.cors = match &st.cors {
            Some(c) => cors(errs, &format!("{key}.cors"), c),
            None => global_cors.clone(),
        };
        if !seen.insert(spec.path.as_str().to_string()) {
            errs.add(
                format!("{key}.path"),
                format!("two streams have the path `{}`", spec.path.as_str()),
            );
        }
        streams.push(Arc::new(spec));
    }
    streams
}

/// `admin`: `listen_set` is the client listener's address as written, which it must not be.
fn admin(
    errs: &mut Errors,
    a: Option<&AdminFile>,
    listen_set: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Admin {
    let listen = socket_addr(
        errs,
        "admin.listen",
        a.and_then(|a| a.listen.as_deref())
            .unwrap_or(defaults::ADMIN_LISTEN),
    );
    let token = a.and_then(|a| a.token.as_deref()).and_then(|t| {
        let t = env::expand(errs, "admin.token", t, env)?;
        if t.is_empty() {
            errs.add(
                "admin.token",
                "is empty: omit `token` to serve admin without one",
            );
        }
        Some(t)
    });
    if listen_set.parse().ok() == Some(listen) {
        errs.add("admin.listen", "must differ from `listen`");
    }
    // Anyone who reaches it can read every instance and trigger polls (security review F8).
    if !listen.ip().is_loopback() && a.and_then(|a| a.token.as_ref()).is_none() {
        errs.add(
            "admin.listen",
            format!(
                "`{listen}` is not a loopback address: set `admin.token` (e.g. \"${{ADMIN_TOKEN}}\") \
                 so that only operators reach /metrics, /streams and refresh"
            ),
        );
    }
    Admin { listen, token }
}
