//! Composition root: builds `Shared` and the pingora server, then runs it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::apps::http_app::HttpServer;
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
use crate::edge::{Acceptor, ClientSide, Edge, Front};
use crate::hub::{Gauges, Hub, LocalHub};
use crate::metrics::Metrics;
use crate::ops::admin::Admin;
use crate::ops::reload::Reloader;
use crate::ops::tls::{CertStore, TlsError};
use crate::ops::upgrade::{self, UpgradeError};
use crate::routes::Routes;
use crate::state::Shared;

/// Why the gateway did not start. A message names what failed; its cause is the `source`, so
/// `main` prints the chain and each cause appears once.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot build the upstream HTTP client")]
    Client(#[source] reqwest::Error),
    #[error(transparent)]
    Hub(#[from] crate::hub::HubStartError),
    #[error("cannot start the poller runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot register the metrics")]
    Metrics(#[source] prometheus::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
    #[error("cannot listen on {addr} ({what})")]
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
    let (hub, metrics) = hub(config.cluster.clone())?;
    let max_connections = preflight(&config, upgrade)?;
    let upgrade_sock = upgrade::socket(config.upgrade_sock.as_deref())?;
    let certs = match &config.tls {
        Some(tls) => Some(Arc::new(CertStore::load(&tls.cert, &tls.key)?)),
        None => None,
    };
    let routes = Routes::new(config);
    let config = routes.config.clone();
    let (shared, side) = state(routes, hub, metrics, certs.clone(), max_connections);

    let mut server = server(&config, &upgrade_sock, upgrade);
    server.add_service(background_service(
        "config reload",
        Reloader::new(shared.clone(), certs.clone(), path),
    ));
    server.add_service(background_service(
        "shutdown relay",
        ShutdownRelay(side.clone(), shared.hub.clone()),
    ));
    add_admin(&mut server, shared.clone(), config.admin.listen);
    // Held until the process exits (`run_forever` never returns): pingora drops its services as
    // shutdown begins, and a hub dropped with them would end every instance ("stream instance
    // stopped", a sub-second retry) before the streams' own goodbye had gone out.
    let _hub = shared.hub.clone();
    add_client_listener(&mut server, Edge::new(shared, side), certs, &config)?;
    if let Some(demo) = &config.demo {
        add_demo(&mut server, demo.listen);
    }
    server.bootstrap();
    info!(
        listen = %config.listen,
        threads = config.threads,
        admin = %config.admin.listen,
        cluster = config.cluster.as_ref().map(|c| format!("{} as {} ({})", c.shown_redis(), c.node_id, c.prefix)),
        "gateway listening"
    );
    // The running config is `shared.routes` from here on: the start-up one must not keep its
    // streams alive after a reload has replaced them.
    drop(config);
    server.run_forever()
}

/// The upstream clients, the metrics and the hub that polls with them.
fn hub(
    cluster: Option<Arc<crate::config::Cluster>>,
) -> Result<(Arc<LocalHub>, Arc<Metrics>), AppError> {
    let client = crate::upstream::Clients::new(|| {
        reqwest::Client::builder()
            .user_agent(concat!("sse-gateway/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
    })
    .map_err(AppError::Client)?;
    let metrics = Arc::new(Metrics::new().map_err(AppError::Metrics)?);
    let hub = Arc::new(LocalHub::new(client, metrics.clone(), cluster).map_err(AppError::Hub)?);
    let gauges = Gauges::new(Arc::downgrade(&hub) as Weak<dyn Hub>).map_err(AppError::Metrics)?;
    metrics.register(gauges).map_err(AppError::Metrics)?;
    Ok((hub, metrics))
}

/// `Shared`, holding the first routes, and the client side's own state.
fn state(
    routes: Routes,
    hub: Arc<LocalHub>,
    metrics: Arc<Metrics>,
    certs: Option<Arc<CertStore>>,
    max_connections: usize,
) -> (Arc<Shared>, Arc<ClientSide>) {
    hub.reconcile(&routes.config.streams);
    let shared = Arc::new(Shared {
        routes: ArcSwap::from_pointee(routes),
        hub,
        metrics: metrics.clone(),
    });
    let side = Arc::new(ClientSide::new(
        Conns::new(max_connections, metrics.clone()),
        certs,
        metrics,
    ));
    (shared, side)
}

/// What must hold before pingora starts, where its own failure would be late or unclear: the
/// addresses are free, the open-file limit is raised, SIGHUP is claimed. Returns the
/// connection limit.
fn preflight(config: &Config, upgrade: bool) -> Result<usize, AppError> {
    if !upgrade {
        check_addresses(config)?;
    }
    let open_files = raise_open_file_limit(config.limits.max_clients);
    let max_connections = connection_limit(open_files, config.limits.max_connections);
    claim_sighup().map_err(AppError::Runtime)?;
    Ok(max_connections)
}

fn server(config: &Config, upgrade_sock: &Path, upgrade: bool) -> Server {
    let conf = ServerConf {
        threads: config.threads,
        upgrade_sock: upgrade_sock.to_string_lossy().into_owned(),
        // pingora counts whole seconds; round up so a grace of 500ms is not none.
        grace_period_seconds: Some(config.shutdown_grace.as_millis().div_ceil(1000) as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    Server::new_with_opt_and_conf(opt, conf)
}

fn add_admin(server: &mut Server, shared: Arc<Shared>, listen: SocketAddr) {
    let mut admin = Service::new("admin".into(), Admin::new(shared));
    admin.add_tcp(&listen.to_string());
    server.add_service(admin);
}

/// The gateway's own listener: plain TCP either way, since `Front` does the TLS handshake under
/// the head timeout.
fn add_client_listener(
    server: &mut Server,
    edge: Edge,
    certs: Option<Arc<CertStore>>,
    config: &Config,
) -> Result<(), AppError> {
    // HTTP/2 connections never reach pingora's own h2 server (`edge/http2.rs` serves them, with
    // their idle timeout), so its `HttpServerOptions` stay at their defaults.
    let proxy_app = pingora::proxy::http_proxy(&server.configuration, edge.clone());
    let mut listener = ListenerConfig::tcp(config.listen.to_string());
    let tls = certs.map(Acceptor::new);
    // No L4 buffers: pingora's HTTP/1 session and rustls read into their own, and the 64 KB read
    // buffer would otherwise stay allocated under every idle SSE client.
    listener = listener.l4_buffer(L4BufferSettings::unbuffered());
    let mut proxy = Service::new("gateway".into(), Front::new(edge, proxy_app, tls));
    proxy.add_listener(listener);
    server.add_service(proxy);
    Ok(())
}

fn add_demo(server: &mut Server, listen: SocketAddr) {
    let mut svc = Service::new("demo api".into(), HttpServer::new_app(DemoApi));
    svc.add_tcp(&listen.to_string());
    server.add_service(svc);
    info!(%listen, "demo api listening");
}

/// Hands pingora's shutdown signal (SIGTERM, SIGINT) to the streams, which pingora's request
/// callbacks never see.
struct ShutdownRelay(Arc<ClientSide>, Arc<dyn Hub>);

#[async_trait::async_trait]
impl BackgroundService for ShutdownRelay {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = shutdown.changed().await;
        info!("shutting down: telling clients to reconnect");
        self.0.shut_down();
        // Leases first go to the others, so the instances' cadence goes on without a gap.
        self.1.shut_down().await;
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
