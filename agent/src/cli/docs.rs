//! `trustmap completion SHELL` and `trustmap man --dir DIR`: shell completions and man pages,
//! both generated from the command-line definition itself, so they never drift from it.

use std::{io::Write, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::CommandFactory;

use super::Cli;

#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete for. Source the output from the shell's start-up file, for
    /// example `source <(trustmap completion bash)`.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Directory to write the pages to: trustmap.1, and trustmap-<command>.1 for each command.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn completion(args: CompletionArgs) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    write_completion(args.shell, &mut out);
    std::io::stdout()
        .write_all(&out)
        .context("writing the completion script")?;
    Ok(ExitCode::SUCCESS)
}

fn write_completion(shell: clap_complete::Shell, out: &mut Vec<u8>) {
    clap_complete::generate(shell, &mut Cli::command(), "trustmap", out);
}

pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    clap_mangen::generate_to(Cli::command(), &args.dir)
        .with_context(|| format!("writing man pages to {}", args.dir.display()))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_completion_offers_every_command_and_their_flags() {
        let mut out = Vec::new();
        write_completion(clap_complete::Shell::Bash, &mut out);
        let script = String::from_utf8(out).expect("UTF-8");
        for word in [
            "observe",
            "learn",
            "blast-radius",
            "completion",
            "--policy-format",
            "--flow-stats",
        ] {
            assert!(
                script.contains(word),
                "{word} is not in the bash completion"
            );
        }
    }

    #[test]
    fn man_pages_are_written_for_the_tool_and_each_command() {
        let dir = std::env::temp_dir().join(format!("trustmap-man-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        man(ManArgs { dir: dir.clone() }).expect("man pages");
        let page = |name: &str| {
            std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let top = page("trustmap.1");
        assert!(top.contains("\n.TH trustmap 1 "), "{top}");
        assert!(top.contains("\ntrustmap\\-learn(1)\n"), "{top}");
        let learn = page("trustmap-learn.1");
        assert!(learn.contains(".TH trustmap-learn 1"), "{learn}");
        assert!(learn.contains("policy\\-format"), "{learn}");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
