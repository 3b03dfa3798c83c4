//! Composition root: builds `Shared` and the pingora server, then runs it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use tracing::{info, warn};

use crate::config::Config;
use crate::demo::DemoApi;
use crate::edge::conns::{self, Conns};
use crate::edge::{ClientSide, Edge, Front};
use crate::hub::{Gauges, Hub, LocalHub};
use crate::metrics::Metrics;
use crate::ops::admin::Admin;
use crate::ops::reload::Reloader;
use crate::ops::tls::{CertStore, TlsError};
use crate::routes::Routes;
use crate::state::Shared;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("cannot start the poller runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot register the metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot set up the TLS listener: {0}")]
    Listener(#[source] Box<pingora::Error>),
    #[error("the upgrade socket's directory {} {why}: another user could take the listening sockets (set shutdown.upgrade_sock, or fix the directory)", dir.display())]
    UpgradeDir { dir: PathBuf, why: &'static str },
    #[error("cannot check the upgrade socket's directory {}: {source}", dir.display())]
    UpgradeDirStat {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the gateway until a signal stops it; `path` is watched for changes. With `upgrade`, the
/// listening sockets are taken over from a running instance (pingora's zero-downtime upgrade:
/// the old one hands them over on SIGQUIT).
pub fn run(config: Config, path: PathBuf, upgrade: bool) -> Result<(), AppError> {
    pingora::tls::install_default_crypto_provider();
    let client = crate::upstream::Clients::new(|| {
        reqwest::Client::builder()
            .user_agent(concat!("sse-gateway/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
    })
    .map_err(AppError::Client)?;
    let metrics = Arc::new(Metrics::new().map_err(AppError::Metrics)?);
    let hub = Arc::new(LocalHub::new(client, metrics.clone()).map_err(AppError::Runtime)?);
    let gauges = Gauges::new(Arc::downgrade(&hub) as Weak<dyn Hub>).map_err(AppError::Metrics)?;
    metrics.register(gauges).map_err(AppError::Metrics)?;

    if !upgrade {
        check_addresses(&config)?;
    }
    let open_files = raise_open_file_limit(config.limits.max_clients);
    let auto_connections = connection_limit(open_files, config.limits.max_connections);
    claim_sighup().map_err(AppError::Runtime)?;
    let listen = config.listen;
    let threads = config.threads;
    let demo = config.demo.clone();
    let admin_listen = config.admin.listen;
    let upgrade_sock = upgrade_socket(config.upgrade_sock.as_deref())?;
    let keepalive = config.limits.keepalive;
    let certs = match &config.tls {
        Some(tls) => Some(Arc::new(CertStore::load(&tls.cert, &tls.key)?)),
        None => None,
    };
    // pingora counts whole seconds; round up so a grace of 500ms is not none.
    let grace = config.shutdown_grace.as_millis().div_ceil(1000) as u64;
    let routes = Routes::new(config);
    hub.reconcile(&routes.config.streams);
    let shared = Arc::new(Shared {
        routes: ArcSwap::from_pointee(routes),
        hub,
        metrics: metrics.clone(),
    });
    let side = Arc::new(ClientSide::new(
        Conns::new(auto_connections, metrics.clone()),
        certs.clone(),
        metrics,
    ));

    let conf = ServerConf {
        threads,
        upgrade_sock: upgrade_sock.to_string_lossy().into_owned(),
        grace_period_seconds: Some(grace),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.add_service(background_service(
        "config reload",
        Reloader::new(shared.clone(), certs.clone(), path),
    ));
    server.add_service(background_service(
        "shutdown relay",
        ShutdownRelay(side.clone()),
    ));
    let mut admin = Service::new(
        "admin".into(),
        HttpServer::new_app(Admin {
            shared: shared.clone(),
        }),
    );
    admin.add_tcp(&admin_listen.to_string());
    server.add_service(admin);
    let edge = Edge::new(shared, side);
    let mut proxy_app = pingora::proxy::http_proxy(&server.configuration, edge.clone());
    // An HTTP/2 connection with no stream open waits as long as a kept-alive HTTP/1 one (from
    // the config at start-up: pingora reads it once). pingora caps streams per connection at 100.
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(keepalive);
    proxy_app.server_options = Some(options);
    // The listener is plain TCP either way: `Front` does the TLS handshake, under the head
    // timeout.
    let mut listener = ListenerConfig::tcp(listen.to_string());
    let tls = match certs {
        Some(certs) => {
            let mut tls = TlsSettings::intermediate("", "").map_err(AppError::Listener)?;
            tls.set_cert_resolver(certs);
            // HTTP/2 by ALPN: browsers then multiplex many streams over one connection instead
            // of stopping at six per host.
            tls.enable_h2();
            Some(tls.build())
        }
        // No L4 buffers on plain connections: pingora's HTTP/1 session reads into its own, and
        // the 64 KB read buffer would otherwise stay allocated under every idle SSE client.
        None => {
            listener = listener.l4_buffer(L4BufferSettings::unbuffered());
            None
        }
    };
    let mut proxy = Service::new("gateway".into(), Front::new(edge, proxy_app, tls));
    proxy.add_listener(listener);
    server.add_service(proxy);
    if let Some(demo) = demo {
        let mut svc = Service::new("demo api".into(), HttpServer::new_app(DemoApi::new()));
        svc.add_tcp(&demo.listen.to_string());
        server.add_service(svc);
        info!(listen = %demo.listen, "demo api listening");
    }
    server.bootstrap();
    info!(%listen, threads, admin = %admin_listen, "gateway listening");
    server.run_forever()
}

/// Hands pingora's shutdown signal (SIGTERM, SIGINT) to the streams, which pingora's request
/// callbacks never see.
struct ShutdownRelay(Arc<ClientSide>);

#[async_trait::async_trait]
impl BackgroundService for ShutdownRelay {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = shutdown.changed().await;
        info!("shutting down: telling clients to reconnect");
        self.0.shut_down();
    }
}

/// A busy or forbidden address must stop the start with its name: pingora would retry a busy
/// port for 30 seconds and then panic. (With `--upgrade` the sockets come from the old process.)
fn check_addresses(config: &Config) -> Result<(), AppError> {
    let mut wanted = vec![
        ("listen", config.listen),
        ("admin.listen", config.admin.listen),
    ];
    if let Some(demo) = &config.demo {
        wanted.push(("demo.listen", demo.listen));
    }
    for (what, addr) in wanted {
        // std sets SO_REUSEADDR, as pingora does: connections of a previous run in TIME_WAIT
        // do not count as busy.
        std::net::TcpListener::bind(addr).map_err(|source| AppError::Bind {
            what,
            addr,
            source,
        })?;
    }
    Ok(())
}

/// Each client holds a socket: lift the soft open-file limit to the hard one, and say so when
/// `max_clients` still can't fit (a client past the limit would fail to connect, not be told).
fn raise_open_file_limit(max_clients: usize) -> u64 {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((0, 0));
    let raised = rlimit::increase_nofile_limit(hard).unwrap_or(soft);
    info!(soft = soft, hard = hard, now = raised, "open-file limit");
    // Upstream connections, listeners and the process's own files need some room too.
    let needed = max_clients as u64 + 256;
    if raised < needed {
        warn!(
            limit = raised,
            max_clients,
            "the open-file limit is below limits.max_clients: raise it (ulimit -n, LimitNOFILE)"
        );
    }
    raised
}

/// The connection limit to use when the config leaves it out; warns when a configured one
/// leaves the process no files of its own: `accept` would then fail (EMFILE), upstream polls
/// could not connect, and the admin listener would stop answering.
fn connection_limit(open_files: u64, configured: Option<usize>) -> usize {
    let auto = conns::auto_max_connections(open_files);
    match configured {
        None => info!(max_connections = auto, open_files, "connection limit"),
        Some(max) if max as u64 + conns::RESERVED_FILES > open_files => warn!(
            max_connections = max,
            open_files,
            "limits.max_connections leaves no room below the open-file limit: raise the limit \
             (ulimit -n, LimitNOFILE) or lower max_connections"
        ),
        Some(_) => {}
    }
    auto
}

/// SIGHUP's default action ends the process. The reloader listens for it once its service runs,
/// which under load can be a moment after the listener accepts: claim the signal now, so an
/// early SIGHUP is harmless. tokio keeps a signal's handler for the life of the process.
fn claim_sighup() -> std::io::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) })
        .map(drop)
}

/// Where the listening sockets are handed over on `--upgrade`: the old process connects there and
/// sends them to whoever listens. Its directory must be one only this user can write, or another
/// local user could bind the name first and receive every client (security review F19).
fn upgrade_socket(configured: Option<&Path>) -> Result<PathBuf, AppError> {
    let path = configured.map_or_else(
        || default_upgrade_socket(&|var| std::env::var_os(var), euid()),
        Path::to_path_buf,
    );
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    Ok(path)
}

/// systemd's `RuntimeDirectory=`, else the user's runtime directory, else `/run` for root, else a
/// per-user directory in the temp dir (checked like the others).
fn default_upgrade_socket(env: &dyn Fn(&str) -> Option<OsString>, euid: u32) -> PathBuf {
    let absolute = |var: &str| env(var).map(PathBuf::from).filter(|p| p.is_absolute());
    let dir = if let Some(dir) = absolute("RUNTIME_DIRECTORY") {
        dir
    } else if let Some(dir) = absolute("XDG_RUNTIME_DIR") {
        dir.join("sse-gateway")
    } else if euid == 0 {
        PathBuf::from("/run/sse-gateway")
    } else {
        std::env::temp_dir().join(format!("sse-gateway-{euid}"))
    };
    dir.join("upgrade.sock")
}

/// Creates `dir` with mode 0700 if it is missing, and refuses one this user does not own or that
/// others may write. A directory that cannot be created (a read-only file system) only costs
/// the hand-over, so it is a warning.
fn private_dir(dir: &Path) -> Result<(), AppError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "cannot create the upgrade socket's directory: --upgrade will not find this process");
            return Ok(());
        }
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|source| AppError::UpgradeDirStat {
        dir: dir.to_path_buf(),
        source,
    })?;
    let why = if !meta.is_dir() {
        Some("is not a directory")
    } else if meta.uid() != euid() {
        Some("belongs to another user")
    } else if meta.mode() & 0o022 != 0 {
        Some("is writable by group or others")
    } else {
        None
    };
    match why {
        Some(why) => Err(AppError::UpgradeDir {
            dir: dir.to_path_buf(),
            why,
        }),
        None => Ok(()),
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail (POSIX).
    unsafe { libc::geteuid() }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_default_upgrade_socket_is_in_a_runtime_directory() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |v: &str| {
                vars.iter()
                    .find(|(k, _)| *k == v)
                    .map(|(_, x)| OsString::from(x))
            }
        };
        let systemd = env(&[
            ("RUNTIME_DIRECTORY", "/run/sse-gateway"),
            ("XDG_RUNTIME_DIR", "/run/user/1"),
        ]);
        assert_eq!(
            default_upgrade_socket(&systemd, 1),
            Path::new("/run/sse-gateway/upgrade.sock")
        );
        let user = env(&[("XDG_RUNTIME_DIR", "/run/user/1000")]);
        assert_eq!(
            default_upgrade_socket(&user, 1000),
            Path::new("/run/user/1000/sse-gateway/upgrade.sock")
        );
        let none = env(&[("XDG_RUNTIME_DIR", "relative")]);
        assert_eq!(
            default_upgrade_socket(&none, 0),
            Path::new("/run/sse-gateway/upgrade.sock")
        );
        let other = default_upgrade_socket(&none, 1000);
        assert!(
            other.ends_with("sse-gateway-1000/upgrade.sock"),
            "{}",
            other.display()
        );
        assert!(
            !other.starts_with("/tmp/sse-gateway-upgrade"),
            "never a shared name"
        );
    }

    #[test]
    fn the_socket_directory_is_created_private_and_a_shared_one_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        private_dir(&dir).unwrap();

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = private_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("writable by group or others"), "{err}");

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = private_dir(&link).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }
}
