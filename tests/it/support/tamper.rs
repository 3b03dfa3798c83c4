//! A TCP relay between a browser and the gateway that plays the network's tricks on what the
//! gateway sends: it cuts every open connection (a lost Wi-Fi, a restarted load balancer), or
//! changes one digit in the next event of a kind. The altered event is still valid JSON and a
//! valid patch of the same length (so HTTP framing holds): only its id's hash can tell.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Relay {
    pub port: u16,
    state: Arc<State>,
    task: JoinHandle<()>,
}

struct State {
    /// Connections accepted before this number are cut.
    cut_before: watch::Sender<u64>,
    accepted: AtomicU64,
    /// The event name (`patch`, `merge-patch`) whose next occurrence gets a digit changed.
    armed: Mutex<Option<String>>,
    altered: AtomicUsize,
}

impl Relay {
    /// Relays 127.0.0.1:`port` (free) to the gateway at 127.0.0.1:`to`.
    pub async fn to(to: u16) -> Relay {
        let state = Arc::new(State {
            cut_before: watch::channel(0).0,
            accepted: AtomicU64::new(0),
            armed: Mutex::new(None),
            altered: AtomicUsize::new(0),
        });
        let s = state.clone();
        let (port, task) = super::proxy::relay(to, move |client, server| {
            let born = s.accepted.fetch_add(1, Ordering::AcqRel);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, born, s.clone(), false));
            tokio::spawn(pump(sr, cw, born, s.clone(), true));
        })
        .await;
        Relay { port, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Closes every open connection, both ways; new connections work.
    pub fn cut(&self) {
        let now = self.state.accepted.load(Ordering::Acquire);
        self.state.cut_before.send_replace(now);
    }

    /// The next `event: <name>` the gateway sends reaches the client with one digit changed.
    pub fn alter_next(&self, name: &str) {
        *self.state.armed.lock().expect("relay state") = Some(name.to_string());
    }

    /// How many events were altered so far.
    pub fn altered(&self) -> usize {
        self.state.altered.load(Ordering::Acquire)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to` until either closes or the connection is cut; what the gateway sends
/// goes through `alter`.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    born: u64,
    state: Arc<State>,
    from_gateway: bool,
) {
    let mut cut = state.cut_before.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = Vec::new();
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = cut.wait_for(|&before| born < before) => return,
        };
        if from_gateway {
            alter(&state, &mut seen, &mut buf[..n]);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// When armed, finds the armed event in what this connection carried so far (`seen`, which
/// `chunk` extends) and changes the first digit after a `":` in its block. Events that went
/// out before the relay was armed are passed over: their digits are no longer in `chunk`.
fn alter(state: &State, seen: &mut Vec<u8>, chunk: &mut [u8]) {
    let start = seen.len();
    seen.extend_from_slice(chunk);
    let mut armed = state.armed.lock().expect("relay state");
    let Some(name) = armed.clone() else {
        return;
    };
    let head = format!("\nevent: {name}\n");
    let mut from = 0;
    while let Some(at) = find(seen, head.as_bytes(), from) {
        let end = find(seen, b"\n\n", at + 1).unwrap_or(seen.len());
        let digit = (at..end.saturating_sub(2))
            .find(|&i| &seen[i..i + 2] == b"\":" && seen[i + 2].is_ascii_digit())
            .map(|i| i + 2);
        if let Some(digit) = digit.filter(|&d| d >= start) {
            let new = match seen[digit] {
                b'9' => b'1',
                d => d + 1,
            };
            seen[digit] = new;
            chunk[digit - start] = new;
            *armed = None;
            state.altered.fetch_add(1, Ordering::AcqRel);
            return;
        }
        from = end;
    }
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}
