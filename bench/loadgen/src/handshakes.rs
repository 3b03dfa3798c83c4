//! `--handshakes SECONDS`: fresh connections, a few at a time, each through its handshake and a
//! subscription's response head and then closed. What a wave of reconnecting clients (a deploy,
//! a network blip) costs the server, per connection and in connections per second.

use std::cell::Cell;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::procfs::{cpu_ms, tree_cpu_ms};
use crate::transport::Connector;

/// Opens connections to `url` for `seconds`, `in_flight` at a time, and reports the rate and
/// the CPU each one cost the server (`pid`'s process tree) and the load generator.
pub async fn measure(
    connector: &Connector,
    url: &str,
    seconds: f64,
    in_flight: usize,
    pid: u32,
) -> Value {
    let done = Cell::new(0u64);
    let failed = Cell::new(0u64);
    let cpu0 = tree_cpu_ms(pid);
    let own0 = cpu_ms("self");
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let in_flight = in_flight.max(1);
    join_all((0..in_flight).map(|w| {
        let (done, failed) = (&done, &failed);
        async move {
            // Worker w takes connections w, w + in_flight, ...: the source addresses in turn.
            let mut k = w;
            while Instant::now() < deadline {
                match connector.handshake(k, url).await {
                    Ok(()) => done.set(done.get() + 1),
                    Err(e) => {
                        if failed.get() == 0 {
                            eprintln!("sse-loadgen: a handshake failed: {e:?}");
                        }
                        failed.set(failed.get() + 1);
                    }
                }
                k += in_flight;
            }
        }
    }))
    .await;
    let secs = started.elapsed().as_secs_f64();
    let cpu = tree_cpu_ms(pid) - cpu0;
    let own = cpu_ms("self") - own0;
    let n = done.get().max(1) as f64;
    json!({
        "scenario": "handshakes",
        "seconds": secs,
        "in_flight": in_flight,
        "handshakes": done.get(),
        "failed": failed.get(),
        "handshakes_per_s": done.get() as f64 / secs,
        "server_cpu_ms_per_handshake": cpu / n,
        "loadgen_cpu_ms_per_handshake": own / n,
    })
}
