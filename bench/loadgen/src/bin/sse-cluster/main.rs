//! `sse-cluster`: the load generator of bench/cluster.sh. `run` is the coordinator (it serves
//! the upstream, starts the agents and measures); `agent` is one of the processes holding the
//! clients, started by `run`.

mod agent;
mod agents;
mod gateways;
mod redis;
mod run;
mod takeover;
mod upstream;
mod wire;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure: prints one JSON object.
    Run(run::RunArgs),
    /// Hold a slice of the clients (started by `run`; questions on stdin, answers on stdout).
    Agent(agent::AgentArgs),
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sse-cluster: {e}");
            std::process::exit(1);
        }
    };
    let local = tokio::task::LocalSet::new();
    match cli.cmd {
        Cmd::Run(args) => {
            let report = local.block_on(&rt, run::run(args));
            println!("{report}");
        }
        Cmd::Agent(args) => local.block_on(&rt, agent::run(args)),
    }
}
