//! A TCP relay on a free loopback port that can make every connection through it go silent:
//! bytes stop flowing both ways but the sockets stay open, as when a NAT or load balancer
//! forgets a flow. Only a deadline or a probe notices such a connection; new connections work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    pub port: u16,
    /// Connections accepted before this generation forward nothing.
    silenced: Arc<AtomicU64>,
    generation: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Relays 127.0.0.1:`port` (free) to 127.0.0.1:`to`.
    pub async fn to(to: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let silenced = Arc::new(AtomicU64::new(0));
        let generation = Arc::new(AtomicU64::new(0));
        let (s, g) = (silenced.clone(), generation.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let born = g.load(Ordering::Acquire);
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, born, s.clone()));
                tokio::spawn(pump(sr, cw, born, s.clone()));
            }
        });
        Proxy {
            port,
            silenced,
            generation,
            task,
        }
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Every open connection goes silent for good; connections made from now on work.
    pub fn silence_open_connections(&self) {
        let next = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.silenced.store(next, Ordering::Release);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` until either closes; once the connection is silenced, reads on and
/// forwards nothing, so neither side sees a close.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    born: u64,
    silenced: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if born < silenced.load(Ordering::Acquire) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
