//! sse-gateway: polls existing HTTP APIs and pushes their changes to clients as Server-Sent Events.
//!
//! # Layout
//!
//! ```text
//! gateway.yaml ─► config ─► Routes ══ArcSwap══► edge ── not a stream ──► upstream, unchanged
//!                                                │ a stream: hub.subscribe(key) → Subscription
//!                                                ▼
//!  hub ─► poller ─► Source (upstream GET) ─► diff ─► Publish (topic) ─► broadcast ─► session
//! ```
//!
//! Modules import only downwards through these layers, never back (`cargo test --test it
//! tree` checks it); README "Where things live" has the file-by-file map.
//!
//! - `app`: the composition root; `state`: the `Shared` handles every request reads.
//! - `edge/`: the client side: connections, request heads, pingora's `ProxyHttp`, SSE sessions.
//! - `ops/`: the operator's side: admin listener and its console, config reload, the listener's certificate,
//!   the upgrade socket.
//! - `routes`: request path → stream and instance key. Pure.
//! - `hub/`: stream instances; the hub owns each poller's life (`Source` in, `Publish` out).
//! - `upstream`: one GET. `codec/`: pure SSE encoding and diffs. `metrics`: the registry.
//!   `causes`: an error and its causes on one line.
//! - `config/`: gateway.yaml → validated, immutable `Config`. `demo/`: the built-in demo.
//! - `fuzz` (tests only): fuzz targets as property tests; `cargo test fuzz`.

pub mod app;
mod assets;
mod causes;
mod codec;
mod config;
mod demo;
mod edge;
#[cfg(test)]
mod fuzz;
mod hub;
mod metrics;
mod ops;
mod routes;
mod state;
mod upstream;

/// All `main.rs` needs of the config: read and validate a file (`check` prints what it loaded).
pub use causes::with_causes;
pub use config::{load as load_config, Config};
