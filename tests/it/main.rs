//! Integration tests: the real gateway binary, a real HTTP upstream, a real SSE parser.

mod support;

mod admin;
mod array_keys;
mod browser;
mod cli;
mod client_script;
mod cluster;
mod config_errors;
mod connections;
mod cors;
mod credentials;
mod demo;
mod deploy;
mod events;
mod http2;
mod limits;
mod proxy;
mod reload;
mod resume;
mod sharing;
mod slow_clients;
mod tls;
mod tree;
mod upstream_failures;
