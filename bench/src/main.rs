//! `cohort-bench`: Cohort's benchmark harness. One subcommand per scenario.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cohort_bench::ceiling;

#[derive(Parser)]
#[command(name = "cohort-bench", version, about = "Cohort benchmark harness")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Raw ceiling: packed messages over plain UDP (or memory), no protocol, per driver and size.
    Ceiling(ceiling::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ceiling(args) => ceiling::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cohort-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
