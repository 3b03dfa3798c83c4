//! The `sse-gateway` command: CLI, tracing set-up and exit codes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use sse_gateway::{app, load_config, with_causes};
use tracing_subscriber::EnvFilter;

/// jemalloc, because of how a gateway allocates: every connection goes through a burst of
/// short-lived state (pingora's accept task, the request head) before it settles into a
/// stream that holds about 2 KB. glibc keeps the freed bursts resident between the long-lived
/// blocks (6 KB per idle client measured); jemalloc's size classes keep them apart and its
/// background thread hands emptied pages back (2.5 KB). See README, "Performance".
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads its options from this symbol: purge freed pages after a second from a
/// background thread, so an idle gateway returns a burst's memory without waiting for an
/// allocation to trigger it. `_RJEM_MALLOC_CONF` in the environment overrides any of them.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Polls existing HTTP APIs and pushes their changes to clients as Server-Sent Events.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The gateway config.
    #[arg(long, short, global = true, default_value = "gateway.yaml")]
    config: PathBuf,
    /// How log lines are written to stderr; filter them with RUST_LOG (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Take the listening sockets over from a running gateway, which hands them over on SIGQUIT
    /// (zero-downtime upgrade; both must use the same `shutdown.upgrade_sock`).
    #[arg(long)]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config and print what it would serve, without starting.
    Check {
        /// The config to check (default: --config).
        file: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }

    match cli.command {
        Some(Command::Check { file }) => {
            let path = file.unwrap_or(cli.config);
            match load_config(&path) {
                Ok(config) => {
                    println!("{} is valid.\n{}", path.display(), config.describe());
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::from(2)
                }
            }
        }
        None => {
            let config = match load_config(&cli.config) {
                Ok(config) => config,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            };
            match app::run(config, cli.config, cli.upgrade) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sse-gateway: {}", with_causes(&e));
                    ExitCode::FAILURE
                }
            }
        }
    }
}
