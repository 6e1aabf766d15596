//! The `trustmap` binary: parse the command line, set up logging, run the subcommand.

use std::process::ExitCode;

use clap::Parser as _;
use trustmap::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    trustmap::cli::init_tracing(cli.log_format);
    match cli.command.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", trustmap::cli::error_chain(&err));
            ExitCode::from(2)
        }
    }
}
