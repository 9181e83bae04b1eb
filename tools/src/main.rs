//! The `cohort` program.
//!
//! Each subcommand lives in its own module with an `Args` (clap) and a `run` returning the
//! process exit code.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod check_trace;
mod demo;
mod member;
mod sim;
mod stat;
mod tune;

#[derive(Parser)]
#[command(
    name = "cohort",
    version,
    about = "Cohort: virtual synchrony process groups"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the deterministic simulator over a range of seeds and check every trace.
    Sim(sim::Args),
    /// Check a directory of trace files against the virtual synchrony properties.
    CheckTrace(check_trace::Args),
    /// Print the counters of running cohort processes (from their counters files), live.
    Stat(stat::Args),
    /// Run one member of a group (static member list) that sends its share and delivers all.
    Member(member::Args),
    /// Start a local 3-member group on loopback, stream traffic, check the traces.
    Demo(demo::Args),
    /// Check (and report on) this host's tuning for Cohort.
    Tune(tune::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => sim::run(args),
        Command::CheckTrace(args) => check_trace::run(args),
        Command::Stat(args) => stat::run(args),
        Command::Tune(args) => tune::run(args),
        Command::Member(args) => member::run(args),
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cohort: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
