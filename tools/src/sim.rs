//! Placeholder while this subcommand is being written in this session.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("this subcommand is not built yet")
}
