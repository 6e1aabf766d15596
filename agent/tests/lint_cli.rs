//! `trustmap lint` end to end on files: every planted mistake is reported, at its line, and a
//! clean strict policy set gives nothing; SARIF output has what SARIF 2.1.0 requires.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

fn data(set: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/audit")
        .join(set)
}

fn lint(set: &str, format: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trustmap"))
        .args(["lint", "--fail-on", "note", "-o", format, "--manifests"])
        .arg(data(set))
        .env("RUST_LOG", "warn")
        .output()
        .expect("trustmap runs")
}

fn findings(out: &Output) -> Vec<Value> {
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn clean_strict_policy_set_has_no_finding_and_exits_zero() {
    let out = lint("clean", "json");
    assert_eq!(findings(&out), Vec::<Value>::new());
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn every_planted_mistake_is_reported_and_the_exit_code_is_one() {
    let out = lint("planted", "json");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = findings(&out);
    let codes: BTreeSet<&str> = f.iter().map(|x| x["rule"].as_str().unwrap()).collect();
    let want: BTreeSet<&str> = [
        "TM001", "TM002", "TM003", "TM004", "TM010", "TM011", "TM012", "TM013", "TM014", "TM015",
        "TM020", "TM030", "TM031",
    ]
    .into();
    assert_eq!(codes, want, "{f:#?}");
    // Peers point at their own line.
    let text = std::fs::read_to_string(data("planted").join("policies.yaml")).unwrap();
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let at = |code: &str| {
        f.iter()
            .find(|x| x["rule"] == code)
            .map(|x| x["location"]["line"].as_u64().unwrap() as usize)
            .unwrap()
    };
    assert_eq!(at("TM012"), line_of("- ipBlock:"));
    assert_eq!(
        at("TM013"),
        text.lines()
            .enumerate()
            .filter(|(_, l)| l.contains("- ipBlock:"))
            .nth(1)
            .unwrap()
            .0
            + 1
    );
    assert_eq!(at("TM010"), line_of("- namespaceSelector: {}"));
    assert_eq!(at("TM011"), line_of("- podSelector: {}"));
}

#[test]
fn sarif_output_has_rule_metadata_and_locations() {
    let out = lint("planted", "sarif");
    let log: Value = serde_json::from_slice(&out.stdout).expect("SARIF is JSON");
    assert_eq!(log["version"], "2.1.0");
    assert!(log["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run = &log["runs"][0];
    let driver = &run["tool"]["driver"];
    assert_eq!(driver["name"], "trustmap");
    let rules = driver["rules"].as_array().unwrap();
    for r in rules {
        assert!(
            r["id"].is_string() && r["shortDescription"]["text"].is_string(),
            "{r}"
        );
        let level = r["defaultConfiguration"]["level"].as_str().unwrap();
        assert!(["note", "warning", "error"].contains(&level));
    }
    let results = run["results"].as_array().unwrap();
    assert!(!results.is_empty());
    for r in results {
        let i = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[i]["id"], r["ruleId"], "ruleIndex points at the rule");
        assert!(r["message"]["text"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(["note", "warning", "error"].contains(&r["level"].as_str().unwrap()));
        let loc = &r["locations"][0]["physicalLocation"];
        let uri = loc["artifactLocation"]["uri"].as_str().unwrap();
        assert!(
            uri.ends_with(".yaml") && !uri.contains('\\') && !uri.contains(' '),
            "{uri}"
        );
        assert!(loc["region"]["startLine"].as_u64().unwrap() >= 1);
        assert!(r["partialFingerprints"].is_object());
    }
}

/// `-n NAMESPACE`, as kubectl scopes a command: exactly the findings about that namespace,
/// and the same ones `trustmap lint` gives without it.
#[test]
fn namespace_flag_keeps_exactly_that_namespaces_findings() {
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_trustmap"))
            .args(["lint", "--fail-on", "never", "-o", "json", "--manifests"])
            .arg(data("planted"))
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .expect("trustmap runs");
        assert_eq!(out.status.code(), Some(0));
        findings(&out)
    };
    let all = run(&[]);
    let namespace_of = |f: &Value| -> Option<String> {
        let name = match f["object"].as_str() {
            Some(o) => o
                .strip_prefix("namespace ")
                .or_else(|| o.strip_prefix("Service "))
                .unwrap_or(o)
                .to_owned(),
            None => f["policy"].as_str()?.to_owned(),
        };
        name.split('/').next().map(str::to_owned)
    };
    let namespaces: BTreeSet<String> = all.iter().filter_map(namespace_of).collect();
    assert!(namespaces.len() >= 2, "{namespaces:?}");
    let mut covered = 0;
    for ns in &namespaces {
        let scoped = run(&["-n", ns]);
        let want: Vec<Value> = all
            .iter()
            .filter(|f| namespace_of(f).as_deref() == Some(ns.as_str()))
            .cloned()
            .collect();
        assert!(!scoped.is_empty(), "{ns}");
        assert_eq!(scoped, want, "-n {ns}");
        covered += scoped.len();
    }
    // Only cluster-scoped findings (the admin layers) are in no namespace.
    let cluster_scoped = all
        .iter()
        .filter(|f| {
            f["policy"].as_str().is_some_and(|p| {
                p.starts_with("ClusterNetworkPolicy/") || p.contains("AdminNetworkPolicy/")
            }) && f["object"].is_null()
        })
        .count();
    assert_eq!(covered + cluster_scoped, all.len());
    assert_eq!(run(&["-n", "no-such-namespace"]), Vec::<Value>::new());
}
