//! Watch + SIGHUP → load → reconcile → store: the sole writer of `Shared::routes`.
//!
//! A new config is validated in full before anything changes; a refused one leaves the running
//! config serving and logs every error with its line.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::causes;
use crate::config::{self, Cluster, Config};
use crate::ops::tls::CertStore;
use crate::routes::Routes;
use crate::state::Shared;

/// Editors and Kubernetes write in several steps; one reload after the burst is enough.
const SETTLE: Duration = Duration::from_millis(150);
/// A writer that never pauses is read after this many settles (3 s) anyway.
const MAX_SETTLES: usize = 20;

pub struct Reloader {
    pub shared: Arc<Shared>,
    /// The client listener's certificate, read again on every reload.
    certs: Option<Arc<CertStore>>,
    pub path: PathBuf,
    /// Hash of the text last applied, so a touch without a change reloads nothing.
    last: Mutex<u64>,
}

/// What a reload did; the log and the `reloads` counter say the same to the operator.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Unchanged,
    Refused,
}

impl Reloader {
    pub fn new(shared: Arc<Shared>, certs: Option<Arc<CertStore>>, path: PathBuf) -> Reloader {
        let last = Mutex::new(std::fs::read(&path).map(|t| hash(&t)).unwrap_or(0));
        Reloader {
            shared,
            certs,
            path,
            last,
        }
    }

    /// Loads the file and, if it is valid and differs from what runs, applies it.
    pub fn reload(&self, trigger: &str, force: bool) -> Outcome {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) => {
                let why = format!("cannot read {}: {e}", self.path.display());
                return self.refuse(trigger, &why);
            }
        };
        if !self.changed(&text, force) {
            return Outcome::Unchanged;
        }
        let old = self.shared.routes.load_full();
        let new = match config::from_bytes_reloading(&self.path, &text, &old.config) {
            Ok(c) => c,
            Err(errors) => return self.refuse(trigger, &errors),
        };
        if let Err(why) = self.prepare(&new, &old.config) {
            return self.refuse(trigger, &why);
        }
        let routes = Routes::new(keep_unchanged(new, &old.config));
        let routes = Arc::new(routes);
        // Stored first, so no request can reach a stream that reconcile is about to close.
        self.shared.routes.store(routes.clone());
        self.shared.hub.reconcile(&routes.config.streams);
        self.shared
            .metrics
            .reloads
            .with_label_values(&["applied"])
            .inc();
        info!(
            trigger,
            streams = routes.config.streams.len(),
            "config reloaded"
        );
        Outcome::Applied
    }

    /// Whether `text` differs from the text last read (or `force`); remembers it either way, so
    /// the same broken text is not re-read on every event.
    fn changed(&self, text: &[u8], force: bool) -> bool {
        let h = hash(text);
        let mut last = self.last.lock();
        let changed = force || *last != h;
        *last = h;
        changed
    }

    /// Says what only a restart applies, refuses what must not run, and reads the renewed
    /// certificate last: a config refused for any reason leaves the running certificate too.
    fn prepare(&self, new: &Config, old: &Config) -> Result<(), String> {
        if new.tls.is_some() != old.tls.is_some() {
            warn!("tls switched on or off: it takes effect only after a restart");
        }
        if new.listen != old.listen {
            warn!(
                running = %old.listen,
                configured = %new.listen,
                "listen address changed: it takes effect only after a restart"
            );
        }
        if new.admin.listen != old.admin.listen {
            warn!(
                running = %old.admin.listen,
                configured = %new.admin.listen,
                "admin.listen changed: it takes effect only after a restart"
            );
        }
        // The hub joined the cluster at start-up, with these settings.
        if let Some(why) = cluster_change(new.cluster.as_deref(), old.cluster.as_deref()) {
            return Err(format!(
                "{why}: only a restart applies a change to `cluster:` (a stream's own \
                 `cluster` flag may change live)"
            ));
        }
        // Validation saw the configured address; the one bound is what decides who can reach it.
        let bound = old.admin.listen;
        if !bound.ip().is_loopback() && new.admin.token.is_none() {
            return Err(format!(
                "admin listens on {bound}, beyond loopback: a reload cannot remove admin.token"
            ));
        }
        if let (Some(tls), Some(certs)) = (&new.tls, &self.certs) {
            certs
                .reload(&tls.cert, &tls.key)
                .map_err(|e| causes::with_causes(&e))?;
        }
        Ok(())
    }

    fn refuse(&self, trigger: &str, why: &dyn std::fmt::Display) -> Outcome {
        self.shared
            .metrics
            .reloads
            .with_label_values(&["refused"])
            .inc();
        error!(trigger, errors = %why, "config reload refused; the running config stays");
        Outcome::Refused
    }
}

/// Reuses the running `Arc` of every stream whose spec did not change, so its instances carry
/// on exactly as they were.
fn keep_unchanged(mut new: Config, old: &Config) -> Config {
    for spec in &mut new.streams {
        if let Some(same) = old.streams.iter().find(|o| ***o == **spec) {
            *spec = same.clone();
        }
    }
    // `prepare` refused any other: the hub keeps the section it joined with.
    if new.cluster == old.cluster {
        new.cluster = old.cluster.clone();
    }
    // The listeners are bound once; keep reporting the addresses actually served.
    new.listen = old.listen;
    new.admin.listen = old.admin.listen;
    new
}

/// What differs between the running `cluster:` section and the configured one, if anything.
fn cluster_change(new: Option<&Cluster>, old: Option<&Cluster>) -> Option<String> {
    let (new, old) = match (new, old) {
        (None, None) => return None,
        (Some(_), None) => return Some("`cluster:` was added".into()),
        (None, Some(_)) => return Some("`cluster:` was removed".into()),
        (Some(new), Some(old)) if new == old => return None,
        (Some(new), Some(old)) => (new, old),
    };
    let Cluster {
        redis,
        prefix,
        node_id,
        key_secret,
        lease_ttl,
        timeout,
        on_redis_down,
        history_ttl,
    } = new;
    let changed: Vec<String> = [
        ("redis", *redis != old.redis),
        ("prefix", *prefix != old.prefix),
        ("node_id", *node_id != old.node_id),
        ("key_secret", *key_secret != old.key_secret),
        ("lease_ttl", *lease_ttl != old.lease_ttl),
        ("timeout", *timeout != old.timeout),
        ("on_redis_down", *on_redis_down != old.on_redis_down),
        ("history_ttl", *history_ttl != old.history_ttl),
    ]
    .into_iter()
    .filter(|(_, differs)| *differs)
    .map(|(key, _)| format!("`cluster.{key}`"))
    .collect();
    Some(format!("{} changed", changed.join(", ")))
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Watches the directories of the file and of its symlink target: editors replace the file by
/// rename, and a Kubernetes ConfigMap swaps a `..data` symlink beside it. Only events that can
/// change what a read returns count: the reloader's own reads (inotify's open and close) must not
/// trigger another read, or one `cat gateway.yaml` would start a re-read every `SETTLE` forever.
fn watch(path: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let real = std::fs::canonicalize(path).ok();
    let mut dirs = Vec::new();
    dirs.extend(abs.parent().map(Path::to_path_buf));
    dirs.extend(
        real.as_ref()
            .and_then(|r| r.parent())
            .map(Path::to_path_buf),
    );
    dirs.dedup();
    let watched = Watched { file: abs, real };
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|ev| {
            changes_content(&ev.kind) && ev.paths.iter().any(|p| watched.concerns(p))
        }) {
            let _ = tx.try_send(());
        }
    })?;
    for dir in dirs {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// The config file as the watcher sees it.
struct Watched {
    /// As given (made absolute, symlinks kept): editors and the symlink swap act on this name.
    file: PathBuf,
    /// Its target at start-up, when it is a symlink.
    real: Option<PathBuf>,
}

impl Watched {
    /// Whether an event on `p` can change what reading the config returns: the file, its target,
    /// or a `..name` beside it (Kubernetes' atomic writer swaps `..data` and its `..<time>` dirs).
    fn concerns(&self, p: &Path) -> bool {
        let beside = p.parent() == self.file.parent()
            && p.file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b".."));
        p == self.file || self.real.as_deref() == Some(p) || beside
    }
}

/// Creating, writing, renaming and removing change what a read returns; opening, reading and
/// metadata (touch, chmod) don't.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Any
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Other => true,
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (tx, mut changed) = mpsc::channel(64);
        let _watcher = watch(&self.path, tx)
            .map_err(|e| warn!(error = %e, "cannot watch the config file; SIGHUP still reloads"))
            .ok();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| warn!(error = %e, "cannot listen for SIGHUP"))
            .ok();
        info!(config = %self.path.display(), "watching the config for changes and SIGHUP");
        loop {
            tokio::select! {
                Some(()) = async { hup.as_mut()?.recv().await } => {
                    self.reload("SIGHUP", true);
                }
                Some(()) = changed.recv() => {
                    // Wait until the writer has been quiet for `SETTLE`, so a slow write is read
                    // whole (a cut-short file may still be valid YAML).
                    for _ in 0..MAX_SETTLES {
                        tokio::time::sleep(SETTLE).await;
                        let mut more = false;
                        while changed.try_recv().is_ok() {
                            more = true;
                        }
                        if !more {
                            break;
                        }
                    }
                    self.reload("file changed", false);
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind, RemoveKind, RenameMode};

    const CONFIG: &str = "listen: 127.0.0.1:1\nadmin:\n  listen: 127.0.0.1:2\nupstreams:\n  api:\n    url: http://127.0.0.1:9\nstreams:\n  - path: /sse/doc\n    upstream: api\n";

    fn reloader(path: &Path) -> Reloader {
        reloader_running(path, CONFIG)
    }

    fn reloader_running(path: &Path, text: &str) -> Reloader {
        std::fs::write(path, text).unwrap();
        let config = config::load(path).unwrap();
        pingora::tls::install_default_crypto_provider();
        let clients = crate::upstream::Clients::new(reqwest::Client::builder).unwrap();
        let metrics = Arc::new(crate::metrics::Metrics::new().unwrap());
        let hub = crate::hub::LocalHub::new(clients, metrics.clone(), None).unwrap();
        let shared = Arc::new(Shared {
            routes: arc_swap::ArcSwap::from_pointee(Routes::new(config)),
            hub: Arc::new(hub),
            metrics,
        });
        Reloader::new(shared, None, path.to_path_buf())
    }

    /// A self-signed certificate for `localhost` in `dir`, as `<name>.crt` and `<name>.key`.
    fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn a_refused_reload_keeps_the_running_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.yaml");
        let (old_cert, old_key) = certificate(dir.path(), "old");
        certificate(dir.path(), "new");
        let tls = |name: &str| format!("tls:\n  cert: {name}.crt\n  key: {name}.key\n");
        // Bound beyond loopback with a token; the new text moves admin to loopback without one.
        let running = format!(
            "{}{}",
            CONFIG.replace(
                "  listen: 127.0.0.1:2\n",
                "  listen: 0.0.0.0:2\n  token: t\n"
            ),
            tls("old")
        );
        let shared = reloader(&path).shared;
        std::fs::write(&path, &running).unwrap();
        shared
            .routes
            .store(Arc::new(Routes::new(config::load(&path).unwrap())));
        let certs = Arc::new(CertStore::load(&old_cert, &old_key).unwrap());
        let r = Reloader::new(shared, Some(certs.clone()), path.clone());
        let serving = certs.serving();
        std::fs::write(&path, format!("{CONFIG}{}", tls("new"))).unwrap();
        assert_eq!(r.reload("test", false), Outcome::Refused);
        assert!(
            Arc::ptr_eq(&certs.serving(), &serving),
            "the certificate stays"
        );
        // The same renewal with the token kept is applied, certificate and all.
        let renewed = running.replace(
            "cert: old.crt\n  key: old.key",
            "cert: new.crt\n  key: new.key",
        );
        std::fs::write(&path, renewed).unwrap();
        assert_eq!(r.reload("test", false), Outcome::Applied);
        assert!(
            !Arc::ptr_eq(&certs.serving(), &serving),
            "the renewed one serves"
        );
    }

    #[test]
    fn a_reload_applies_a_change_once_and_refuses_a_broken_text_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.yaml");
        let r = reloader(&path);
        assert_eq!(r.reload("test", false), Outcome::Unchanged);
        assert_eq!(r.reload("test", true), Outcome::Applied);
        std::fs::write(&path, CONFIG.replace("/sse/doc", "/sse/other")).unwrap();
        assert_eq!(r.reload("test", false), Outcome::Applied);
        assert_eq!(r.reload("test", false), Outcome::Unchanged);
        std::fs::write(&path, "streams: [").unwrap();
        assert_eq!(r.reload("test", false), Outcome::Refused);
        assert_eq!(r.reload("test", false), Outcome::Unchanged, "remembered");
        assert_eq!(
            r.shared.routes.load().config.streams[0].path.as_str(),
            "/sse/other"
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(r.reload("test", false), Outcome::Refused);
    }

    #[test]
    fn a_changed_cluster_section_waits_for_a_restart_but_a_streams_flag_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.yaml");
        let running = format!("{CONFIG}cluster:\n  redis: redis://127.0.0.1:6379/0\n");
        let r = reloader_running(&path, &running);
        let joined = r.shared.routes.load().config.cluster.clone().unwrap();
        // An unset node_id keeps the running one's random suffix, so the section is unchanged.
        std::fs::write(&path, running.replace("/sse/doc", "/sse/other")).unwrap();
        assert_eq!(r.reload("test", false), Outcome::Applied);
        let now = r.shared.routes.load_full();
        assert!(Arc::ptr_eq(now.config.cluster.as_ref().unwrap(), &joined));
        let local = running.replace("upstream: api\n", "upstream: api\n    cluster: false\n");
        std::fs::write(&path, &local).unwrap();
        assert_eq!(r.reload("test", false), Outcome::Applied);
        assert!(!r.shared.routes.load().config.streams[0].cluster);
        for refused in [
            format!("{local}  timeout: 200ms\n"),
            local.replace("127.0.0.1:6379", "10.0.0.2:6379"),
            CONFIG.to_string(),
        ] {
            std::fs::write(&path, &refused).unwrap();
            assert_eq!(r.reload("test", false), Outcome::Refused, "{refused}");
            let still = r.shared.routes.load().config.cluster.clone().unwrap();
            assert!(Arc::ptr_eq(&still, &joined), "the running config stays");
        }
    }

    #[test]
    fn a_cluster_change_names_each_key_that_changed() {
        let c = |text: &str| {
            let yaml = format!("{CONFIG}cluster:\n  redis: redis://h\n  node_id: n\n{text}");
            let resolve = |_: &str, port| Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            config::parse("g.yaml", &yaml, &|_| None, &resolve)
                .unwrap()
                .cluster
                .unwrap()
        };
        let (old, new) = (c(""), c("  timeout: 200ms\n  prefix: p\n"));
        assert_eq!(cluster_change(Some(&old), Some(&old)), None);
        assert_eq!(
            cluster_change(Some(&new), Some(&old)).unwrap(),
            "`cluster.prefix`, `cluster.timeout` changed"
        );
        assert_eq!(
            cluster_change(None, Some(&old)).unwrap(),
            "`cluster:` was removed"
        );
        assert_eq!(
            cluster_change(Some(&old), None).unwrap(),
            "`cluster:` was added"
        );
    }

    #[test]
    fn only_events_that_change_content_count() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
        ] {
            assert!(!changes_content(&kind), "{kind:?}");
        }
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
        ] {
            assert!(changes_content(&kind), "{kind:?}");
        }
    }

    #[test]
    fn only_the_file_its_target_and_configmap_swaps_concern_the_config() {
        let w = Watched {
            file: PathBuf::from("/etc/gw/gateway.yaml"),
            real: Some(PathBuf::from("/etc/gw/..2026_12_01/gateway.yaml")),
        };
        for p in [
            "/etc/gw/gateway.yaml",
            "/etc/gw/..2026_12_01/gateway.yaml",
            "/etc/gw/..data",
            "/etc/gw/..data_tmp",
        ] {
            assert!(w.concerns(Path::new(p)), "{p}");
        }
        for p in [
            "/etc/gw/other.yaml",
            "/etc/gw/gateway.yaml.swp",
            "/etc/gw/..2026_12_01/other",
            "/etc/gateway.yaml",
        ] {
            assert!(!w.concerns(Path::new(p)), "{p}");
        }
    }
}
