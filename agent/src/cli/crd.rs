//! `trustmap crd`: print the `FlowEdges` CustomResourceDefinition (deploy/crd.yaml is its output).

use std::{io::Write as _, process::ExitCode};

#[derive(Debug, clap::Args)]
pub struct CrdArgs {}

pub fn run(_: CrdArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(crate::kube::crd::crd_yaml().as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
