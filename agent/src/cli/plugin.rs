//! kubectl plugin mode. Installed as `kubectl-trustmap` on PATH, the binary runs as
//! `kubectl trustmap ...`: kubectl finds it by name and passes every argument after the plugin
//! name through unchanged (flags before the name are kubectl's own errors, and no `KUBECTL_*`
//! variable reaches the plugin). So the plugin takes kubectl's flags itself: `--kubeconfig`,
//! `--context` and `-n/--namespace` on every command that reads the cluster, and those commands
//! read the live cluster unless `--manifests` is given, as kubectl commands do.

use std::{ffi::OsString, path::Path};

/// What the binary's file name starts with when it runs as a kubectl plugin.
pub const PREFIX: &str = "kubectl-";

/// How help and errors name the program in plugin mode.
pub const BIN_NAME: &str = "kubectl trustmap";

/// What the binary's file name starts with when kubectl (1.26 and later) asks it to complete
/// `kubectl trustmap ...`: installed as `kubectl_complete-trustmap` on PATH.
pub const COMPLETER_PREFIX: &str = "kubectl_complete-";

/// The commands that read the live cluster by default in plugin mode.
const LIVE_BY_DEFAULT: &[&str] = &[
    "check",
    "explain",
    "matrix",
    "lint",
    "blast-radius",
    "graph",
    "diff",
    "export",
];

/// Whether `argv0` names a kubectl plugin (`kubectl-trustmap`, or any `kubectl-` name).
pub fn is_plugin(argv0: &OsString) -> bool {
    Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(PREFIX))
}

/// Whether `argv0` names kubectl's completer for a plugin (`kubectl_complete-trustmap`).
pub fn is_completer(argv0: &OsString) -> bool {
    Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(COMPLETER_PREFIX))
}

/// Completes `kubectl trustmap WORDS...`, the last word being the one under the cursor, in the
/// format kubectl reads from a plugin's completer (cobra's): one candidate a line, `value` or
/// `value<TAB>description`, then `:DIRECTIVE`, where 4 means "no file completion" and 0 lets
/// the shell complete file names.
pub fn complete(root: &clap::Command, words: &[String]) -> String {
    const FILES: u8 = 0;
    const NO_FILES: u8 = 4;
    let (partial, before) = match words.split_last() {
        Some((p, b)) => (p.as_str(), b),
        None => ("", &[][..]),
    };
    let mut cmd = root;
    let mut pending: Option<&clap::Arg> = None;
    for w in before {
        if pending.take().is_some() {
            continue;
        }
        if let Some(arg) = flag(cmd, w) {
            if takes_value(arg) && !w.contains('=') {
                pending = Some(arg);
            }
        } else if !w.starts_with('-')
            && let Some(sub) = cmd.find_subcommand(w)
        {
            cmd = sub;
        }
    }
    let mut out = String::new();
    let directive = if let Some(arg) = pending {
        // The value of a flag: its choices, or file names.
        let values = arg.get_possible_values();
        for v in values.iter().filter(|v| !v.is_hide_set()) {
            if v.get_name().starts_with(partial) {
                line(
                    &mut out,
                    v.get_name(),
                    v.get_help().map(ToString::to_string),
                );
            }
        }
        if values.is_empty() { FILES } else { NO_FILES }
    } else if partial.starts_with('-') {
        for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = a.get_long() {
                let name = format!("--{long}");
                if name.starts_with(partial) {
                    line(&mut out, &name, a.get_help().map(first_sentence));
                }
            }
        }
        NO_FILES
    } else if cmd.has_subcommands() {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name().starts_with(partial) {
                line(
                    &mut out,
                    sub.get_name(),
                    sub.get_about().map(first_sentence),
                );
            }
        }
        NO_FILES
    } else {
        FILES
    };
    out.push_str(&format!(":{directive}\n"));
    out
}

fn flag<'c>(cmd: &'c clap::Command, word: &str) -> Option<&'c clap::Arg> {
    let name = word.split('=').next().unwrap_or(word);
    if let Some(long) = name.strip_prefix("--") {
        return cmd.get_arguments().find(|a| a.get_long() == Some(long));
    }
    let mut chars = name.strip_prefix('-')?.chars();
    let short = chars.next()?;
    cmd.get_arguments().find(|a| a.get_short() == Some(short))
}

fn takes_value(arg: &clap::Arg) -> bool {
    arg.get_num_args().is_none_or(|n| n.takes_values())
        && !matches!(
            arg.get_action(),
            clap::ArgAction::SetTrue
                | clap::ArgAction::SetFalse
                | clap::ArgAction::Count
                | clap::ArgAction::Help
                | clap::ArgAction::HelpShort
                | clap::ArgAction::HelpLong
                | clap::ArgAction::Version
        )
}

fn first_sentence(s: &clap::builder::StyledStr) -> String {
    let text = s.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.split(". ")
        .next()
        .unwrap_or(line)
        .trim_end_matches('.')
        .to_owned()
}

fn line(out: &mut String, value: &str, help: Option<String>) {
    out.push_str(value);
    if let Some(h) = help.filter(|h| !h.is_empty()) {
        out.push('\t');
        out.push_str(&h);
    }
    out.push('\n');
}

/// The arguments with `--from-cluster` added after the subcommand when it reads the cluster
/// and neither `--manifests` nor `--from-cluster` is given.
pub fn plugin_args(args: Vec<OsString>) -> Vec<OsString> {
    let mut at = None;
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--log-format" {
            i += 2;
            continue;
        }
        if !a.starts_with('-') {
            at = Some(i);
            break;
        }
        i += 1;
    }
    let Some(at) = at else { return args };
    let sub = args[at].to_string_lossy().into_owned();
    let chosen = args[at + 1..].iter().any(|a| {
        let a = a.to_string_lossy();
        a == "--from-cluster" || a == "--manifests" || a.starts_with("--manifests=")
    });
    if !LIVE_BY_DEFAULT.contains(&sub.as_str()) || chosen {
        return args;
    }
    let mut out = args;
    out.insert(at + 1, OsString::from("--from-cluster"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    fn completions(words: &[&str]) -> (Vec<String>, String) {
        use clap::CommandFactory as _;
        let words: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
        let out = complete(&crate::cli::Cli::command(), &words);
        let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
        let directive = lines.pop().expect("a directive");
        let values = lines
            .iter()
            .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
            .collect();
        (values, directive)
    }

    #[test]
    fn completes_commands_flags_and_flag_values_for_kubectl() {
        let (v, d) = completions(&["li"]);
        assert_eq!((v, d.as_str()), (vec!["lint".to_owned()], ":4"));
        let (v, _) = completions(&[""]);
        for c in ["lint", "graph", "export", "blast-radius", "learn"] {
            assert!(v.contains(&c.to_owned()), "{c} in {v:?}");
        }
        let (v, d) = completions(&["lint", "--con"]);
        assert_eq!((v, d.as_str()), (vec!["--context".to_owned()], ":4"));
        let (v, d) = completions(&["lint", "-o", ""]);
        assert_eq!(
            (v, d.as_str()),
            (
                vec!["table".to_owned(), "json".to_owned(), "sarif".to_owned()],
                ":4"
            )
        );
        // A flag whose value is a path, and a command's free arguments: file names.
        assert_eq!(completions(&["lint", "--kubeconfig", ""]).1, ":0");
        assert_eq!(
            completions(&["graph", "-n", "shop", "--manifests", "de"]).1,
            ":0"
        );
        assert!(is_completer(&"/usr/bin/kubectl_complete-trustmap".into()));
        assert!(!is_completer(&"kubectl-trustmap".into()));
    }

    #[test]
    fn only_kubectl_names_are_plugins() {
        assert!(is_plugin(&"/usr/local/bin/kubectl-trustmap".into()));
        assert!(is_plugin(&"kubectl-trustmap".into()));
        assert!(!is_plugin(&"/usr/bin/trustmap".into()));
        assert!(!is_plugin(&"/opt/kubectl/trustmap".into()));
    }

    #[test]
    fn commands_that_read_the_cluster_read_the_live_one_unless_given_manifests() {
        assert_eq!(
            plugin_args(args(&["kubectl-trustmap", "lint", "-n", "shop"])),
            args(&["kubectl-trustmap", "lint", "--from-cluster", "-n", "shop"])
        );
        assert_eq!(
            plugin_args(args(&[
                "kubectl-trustmap",
                "--log-format",
                "json",
                "graph",
                "--context",
                "prod"
            ])),
            args(&[
                "kubectl-trustmap",
                "--log-format",
                "json",
                "graph",
                "--from-cluster",
                "--context",
                "prod"
            ])
        );
        for unchanged in [
            &["kubectl-trustmap", "lint", "--manifests", "a.yaml"][..],
            &["kubectl-trustmap", "lint", "--manifests=a.yaml"],
            &["kubectl-trustmap", "export", "--from-cluster"],
            &["kubectl-trustmap", "learn", "--flows", "f.jsonl"],
            &["kubectl-trustmap", "--help"],
            &["kubectl-trustmap"],
        ] {
            assert_eq!(plugin_args(args(unchanged)), args(unchanged));
        }
    }
}
