//! A TCP relay on a free loopback port that can make every connection through it go silent:
//! bytes stop flowing both ways but the sockets stay open, as when a NAT or load balancer
//! forgets a flow. Only a deadline or a probe notices such a connection; new connections work.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    pub port: u16,
    silence: Arc<Silence>,
    task: JoinHandle<()>,
}

/// Which connections forward nothing: by the generation they were accepted in.
#[derive(Default)]
struct Silence {
    generation: AtomicU64,
    /// Every connection accepted before this generation.
    all_before: AtomicU64,
    /// Connections that subscribed (a Redis feed), accepted before this generation.
    subscribers_before: AtomicU64,
}

/// One relayed connection.
struct Flow {
    born: u64,
    /// The client sent SUBSCRIBE or PSUBSCRIBE.
    subscriber: AtomicBool,
}

impl Silence {
    fn mutes(&self, flow: &Flow) -> bool {
        flow.born < self.all_before.load(Ordering::Acquire)
            || (flow.subscriber.load(Ordering::Acquire)
                && flow.born < self.subscribers_before.load(Ordering::Acquire))
    }

    fn next(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }
}

impl Proxy {
    /// Relays 127.0.0.1:`port` (free) to 127.0.0.1:`to`.
    pub async fn to(to: u16) -> Proxy {
        let silence = Arc::new(Silence::default());
        let s = silence.clone();
        let (port, task) = relay(to, move |client, server| {
            let flow = Arc::new(Flow {
                born: s.generation.load(Ordering::Acquire),
                subscriber: AtomicBool::new(false),
            });
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, flow.clone(), s.clone(), true));
            tokio::spawn(pump(sr, cw, flow, s.clone(), false));
        })
        .await;
        Proxy {
            port,
            silence,
            task,
        }
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Every open connection goes silent for good; connections made from now on work.
    pub fn silence_open_connections(&self) {
        let next = self.silence.next();
        self.silence.all_before.store(next, Ordering::Release);
    }

    /// Open subscriptions go silent for good, while commands flow: the feed looks healthy and
    /// carries nothing.
    pub fn silence_open_subscriptions(&self) {
        let next = self.silence.next();
        self.silence
            .subscribers_before
            .store(next, Ordering::Release);
    }
}

/// Listens on a free loopback port and hands each connection, with a fresh one to
/// 127.0.0.1:`to`, to `serve`, which relays them as it likes (this relay and `tamper::Relay`).
/// Returns the port and the accepting task, to abort on drop.
pub(super) async fn relay(
    to: u16,
    serve: impl Fn(TcpStream, TcpStream) + Send + 'static,
) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let task = tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            if let Ok(server) = TcpStream::connect(("127.0.0.1", to)).await {
                serve(client, server);
            }
        }
    });
    (port, task)
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` until either closes; once the flow is silenced, reads on and forwards
/// nothing, so neither side sees a close. From the client, notes whether it subscribed.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    flow: Arc<Flow>,
    silence: Arc<Silence>,
    from_client: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if from_client
            && buf[..n]
                .to_ascii_lowercase()
                .windows(9)
                .any(|w| w == b"subscribe")
        {
            flow.subscriber.store(true, Ordering::Release);
        }
        if silence.mutes(&flow) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
