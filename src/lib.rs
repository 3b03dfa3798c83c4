//! sse-gateway: polls existing HTTP APIs and pushes their changes to clients as Server-Sent Events.
//!
//! # Layout
//!
//! ```text
//! gateway.yaml ─► config ─► Routes ══ArcSwap══► edge ── not a stream ──► upstream, unchanged
//!                                                │ a stream: hub.subscribe(key) → Subscription
//!                                                ▼
//!  hub ─► poller ─► fetch ─► diff ─► topic ─► broadcast<Frame> ─► session ─► client
//! ```
//!
//! - `config/`: gateway.yaml → validated, immutable `Config`.
//! - `routes`: request path → stream and instance key. Pure.
//! - `edge/`: what a request is (`Edge::answer`), pingora's `ProxyHttp` on top of it (`proxy`:
//!   forwarding headers, base path, body limit, DNS), `front`: every connection, TLS handshake
//!   included, and subscriptions on HTTP/1.1 served on the socket itself; `head`: reading one
//!   request head within its deadline; `conns`: the connection count.
//! - `hub/`: `trait Hub`, the in-process hub, and one topic per stream instance.
//! - `poller`: an instance's schedule, backoff and change detection; `fetch`: one upstream GET.
//! - `diff`, `sse`: pure encoders of changes and events.
//! - `demo`: the built-in demo API and page.
//! - `reload`: file watch and SIGHUP → validated config → hub reconcile → routes swap.
//! - `admin`: the operator's listener: metrics, health, stream list, refresh.
//! - `metrics`: the Prometheus registry.
//! - `tls`: the client listener's certificate, reloadable.
//! - `upgrade`: where `--upgrade` finds the running gateway's sockets, in a private directory.
//! - `app`: the composition root.
//! - `fuzz` (tests only): fuzz targets as property tests; `cargo test fuzz`.

pub mod app;
mod codec;
pub mod config;
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
