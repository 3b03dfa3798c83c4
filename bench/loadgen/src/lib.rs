//! What both load generators share: `sse-loadgen` (one server, bench/run.sh) and `sse-cluster`
//! (six gateways on one Redis, bench/cluster.sh).

pub mod http1;
pub mod procfs;
pub mod stamp;
