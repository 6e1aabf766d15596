//! `trustmap observe`: attach, stream connection starts as JSON lines, detach on exit.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ObserveArgs {}

pub fn run(_args: ObserveArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}
