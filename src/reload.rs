//! Watch + SIGHUP → load → reconcile → store: the sole writer of `Shared::routes`.
//!
//! A new config is validated in full before anything changes; a refused one leaves the running
//! config serving and logs every error with its line.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::app::Shared;
use crate::config::{self, Config};
use crate::routes::Routes;

/// Editors and Kubernetes write in several steps; one reload after the burst is enough.
const SETTLE: Duration = Duration::from_millis(150);

pub struct Reloader {
    pub shared: Arc<Shared>,
    pub path: PathBuf,
    /// Hash of the text last applied, so a touch without a change reloads nothing.
    last: Mutex<u64>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Unchanged,
    Refused,
}

impl Reloader {
    pub fn new(shared: Arc<Shared>, path: PathBuf) -> Reloader {
        let last = Mutex::new(std::fs::read(&path).map(|t| hash(&t)).unwrap_or(0));
        Reloader { shared, path, last }
    }

    /// Loads the file and, if it is valid and differs from what runs, applies it.
    pub fn reload(&self, trigger: &str, force: bool) -> Outcome {
        let text = std::fs::read(&self.path).unwrap_or_default();
        let h = hash(&text);
        {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if !force && *last == h {
                return Outcome::Unchanged;
            }
        }
        // Remembered even when refused: the same broken text is not re-read on every event.
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = h;
        let new = match config::load(&self.path) {
            Ok(c) => c,
            Err(errors) => {
                self.shared
                    .metrics
                    .reloads
                    .with_label_values(&["refused"])
                    .inc();
                error!(trigger, %errors, "config reload refused; the running config stays");
                return Outcome::Refused;
            }
        };
        let old = self.shared.routes.load_full();
        if new.tls.is_some() != old.config.tls.is_some() {
            warn!("tls switched on or off: it takes effect only after a restart");
        }
        if let (Some(tls), Some(certs)) = (&new.tls, &self.shared.certs) {
            if let Err(e) = certs.reload(&tls.cert, &tls.key) {
                self.shared
                    .metrics
                    .reloads
                    .with_label_values(&["refused"])
                    .inc();
                error!(trigger, error = %e, "config reload refused; the running config stays");
                return Outcome::Refused;
            }
        }
        if new.listen != old.config.listen {
            warn!(
                running = %old.config.listen,
                configured = %new.listen,
                "listen address changed: it takes effect only after a restart"
            );
        }
        let routes = Routes::new(keep_unchanged(new, &old.config));
        let routes = Arc::new(routes);
        // Stored first, so no request can reach a stream that reconcile is about to close.
        self.shared.routes.store(routes.clone());
        self.shared.hub.reconcile(&routes);
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
}

/// Reuses the running `Arc` of every stream whose spec did not change, so its instances carry
/// on exactly as they were.
fn keep_unchanged(mut new: Config, old: &Config) -> Config {
    for spec in &mut new.streams {
        if let Some(same) = old.streams.iter().find(|o| ***o == **spec) {
            *spec = same.clone();
        }
    }
    // `listen` is bound once; keep reporting the address actually served.
    new.listen = old.listen;
    new
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Watches the directories of the file and of its symlink target: editors replace the file by
/// rename, and a Kubernetes ConfigMap swaps a `..data` symlink beside it.
fn watch(path: &Path, tx: mpsc::Sender<()>) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = tx.try_send(());
        }
    })?;
    let mut dirs = Vec::new();
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    dirs.extend(abs.parent().map(Path::to_path_buf));
    if let Ok(real) = std::fs::canonicalize(path) {
        dirs.extend(real.parent().map(Path::to_path_buf));
    }
    dirs.dedup();
    for dir in dirs {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
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
                    tokio::time::sleep(SETTLE).await;
                    while changed.try_recv().is_ok() {}
                    self.reload("file changed", false);
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}
