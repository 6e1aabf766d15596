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
