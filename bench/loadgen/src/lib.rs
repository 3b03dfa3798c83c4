//! What both load generators share: `sse-loadgen` (one server, bench/run.sh) and `sse-cluster`
//! (six gateways on one Redis, bench/cluster.sh); and sse-loadgen's clients over TLS and HTTP/2
//! (`transport`, `tls`) with its handshake-rate mode (`handshakes`).

pub mod handshakes;
pub mod http1;
pub mod procfs;
pub mod stamp;
pub mod tls;
pub mod transport;
