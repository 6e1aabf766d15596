//! The `trustmap` binary: parse the command line, set up logging, run the subcommand.

use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser as _};
use trustmap::cli::{Cli, plugin};

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.first().is_some_and(plugin::is_completer) {
        // kubectl asks for the completions of `kubectl trustmap ...`.
        let words: Vec<String> = args[1..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        print!("{}", plugin::complete(&Cli::command(), &words));
        return ExitCode::SUCCESS;
    }
    let cli = if args.first().is_some_and(plugin::is_plugin) {
        // Run as `kubectl trustmap`: help and errors say so.
        let matches = Cli::command()
            .bin_name(plugin::BIN_NAME)
            .get_matches_from(plugin::plugin_args(args));
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    } else {
        Cli::parse()
    };
    trustmap::cli::init_tracing(cli.log_format);
    match cli.command.run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", trustmap::cli::error_chain(&err));
            ExitCode::from(2)
        }
    }
}
