//! Composition root: builds `Shared` and the pingora server, then runs it.

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::apps::http_app::HttpServer;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::admin::Admin;
use crate::config::Config;
use crate::demo::DemoApi;
use crate::edge::{Edge, Front};
use crate::hub::{Hub, LocalHub};
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::routes::Routes;
use crate::tls::{CertStore, TlsError};

/// State every request shares; built once here and passed down, never a `static`.
pub struct Shared {
    /// Replaced whole by a reload; a request loads it once and sees one consistent table.
    pub routes: ArcSwap<Routes>,
    pub hub: Arc<dyn Hub>,
    /// SSE clients attached now, against `limits.max_clients`.
    pub clients: AtomicUsize,
    pub metrics: Arc<Metrics>,
    /// The client listener's certificate, when it serves TLS.
    pub certs: Option<Arc<CertStore>>,
    /// Becomes true when the process starts shutting down, so streams can say goodbye.
    pub shutdown: watch::Sender<bool>,
}

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
    let client = crate::fetch::Clients::new(|| {
        reqwest::Client::builder()
            .user_agent(concat!("sse-gateway/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
    })
    .map_err(AppError::Client)?;
    let metrics = Arc::new(Metrics::new().map_err(AppError::Metrics)?);
    let hub = Arc::new(LocalHub::new(client, metrics.clone()).map_err(AppError::Runtime)?);

    if !upgrade {
        check_addresses(&config)?;
    }
    raise_open_file_limit(config.limits.max_clients);
    claim_sighup().map_err(AppError::Runtime)?;
    let listen = config.listen;
    let threads = config.threads;
    let demo = config.demo.clone();
    let admin_listen = config.admin.listen;
    let upgrade_sock = config.upgrade_sock.clone();
    let certs = match &config.tls {
        Some(tls) => Some(Arc::new(CertStore::load(&tls.cert, &tls.key)?)),
        None => None,
    };
    // pingora counts whole seconds; round up so a grace of 500ms is not none.
    let grace = config.shutdown_grace.as_millis().div_ceil(1000) as u64;
    let routes = Routes::new(config);
    hub.reconcile(&routes);
    let shared = Arc::new(Shared {
        routes: ArcSwap::from_pointee(routes),
        hub,
        clients: AtomicUsize::new(0),
        metrics,
        certs: certs.clone(),
        shutdown: watch::channel(false).0,
    });

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
        Reloader::new(shared.clone(), path),
    ));
    server.add_service(background_service(
        "shutdown relay",
        ShutdownRelay(shared.clone()),
    ));
    let mut admin = Service::new(
        "admin".into(),
        HttpServer::new_app(Admin {
            shared: shared.clone(),
        }),
    );
    admin.add_tcp(&admin_listen.to_string());
    server.add_service(admin);
    let edge = Edge { shared };
    let proxy_app = pingora::proxy::http_proxy(&server.configuration, edge.clone());
    let mut proxy = Service::new("gateway".into(), Front::new(edge, proxy_app));
    match certs {
        Some(certs) => {
            let mut tls = TlsSettings::intermediate("", "").map_err(AppError::Listener)?;
            tls.set_cert_resolver(certs);
            // HTTP/2 by ALPN: browsers then multiplex many streams over one connection instead
            // of stopping at six per host.
            tls.enable_h2();
            proxy.add_tls_with_settings(&listen.to_string(), None, tls);
        }
        // No L4 buffers on plain connections: pingora's HTTP/1 session reads into its own, and
        // the 64 KB read buffer would otherwise stay allocated under every idle SSE client.
        None => proxy.add_listener(
            ListenerConfig::tcp(listen.to_string()).l4_buffer(L4BufferSettings::unbuffered()),
        ),
    }
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
struct ShutdownRelay(Arc<Shared>);

#[async_trait::async_trait]
impl BackgroundService for ShutdownRelay {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = shutdown.changed().await;
        info!("shutting down: telling clients to reconnect");
        self.0.shutdown.send_replace(true);
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
fn raise_open_file_limit(max_clients: usize) {
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
