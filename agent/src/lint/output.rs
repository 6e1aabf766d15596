//! Findings for people (a table), for programs (JSON) and for code-scanning tools (SARIF
//! 2.1.0, with the rule catalog as `tool.driver.rules` and one physical location per result).

use std::{fmt::Write as _, path::Path};

use serde_json::{Value, json};

use super::{Finding, RULES};

/// Aligned text: one block per finding, then a count per severity.
pub fn to_table(findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        let loc = f
            .location
            .as_ref()
            .map(|l| format!("{}:{}", l.file.display(), l.line))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{:<7} {} {:<32} {loc}",
            f.severity.as_str().to_uppercase(),
            f.rule.info().code,
            f.rule.info().name
        );
        let _ = writeln!(s, "        {}", f.message);
        let _ = writeln!(s, "        fix: {}", f.fix);
        if let Some(y) = &f.fix_yaml {
            for line in y.lines() {
                let _ = writeln!(s, "          {line}");
            }
        }
    }
    let count = |sev| findings.iter().filter(|f| f.severity == sev).count();
    let _ = writeln!(
        s,
        "{} finding(s): {} error, {} warning, {} note",
        findings.len(),
        count(super::Severity::Error),
        count(super::Severity::Warning),
        count(super::Severity::Note)
    );
    s
}

/// A JSON array of findings.
pub fn to_json(findings: &[Finding]) -> String {
    serde_json::to_string_pretty(findings).expect("findings serialize")
}

/// A relative URI reference for a path: forward slashes, and percent-encoding of what a URI
/// may not hold.
fn uri(path: &Path) -> String {
    let s = path.to_string_lossy().replace('\\', "/");
    let s = s.strip_prefix("./").unwrap_or(&s);
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A SARIF 2.1.0 log with one run.
pub fn to_sarif(findings: &[Finding], version: &str) -> String {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.code,
                "name": r.name,
                "shortDescription": {"text": r.summary},
                "fullDescription": {"text": r.rationale},
                "help": {
                    "text": format!("{} Fix: {}", r.rationale, r.fix),
                    "markdown": format!("{}\n\n**Fix:** {}", r.rationale, r.fix),
                },
                "defaultConfiguration": {"level": r.severity.as_str()},
                "properties": {"tags": ["security", "kubernetes", "networkpolicy"]},
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut text = format!("{} Fix: {}", f.message, f.fix);
            if let Some(y) = &f.fix_yaml {
                text.push_str("\n\n");
                text.push_str(y);
            }
            let mut r = json!({
                "ruleId": f.rule.info().code,
                "ruleIndex": f.rule.index(),
                "level": f.severity.as_str(),
                "message": {"text": text},
                "partialFingerprints": {
                    "trustmapFinding/v1": fingerprint(f),
                },
                "properties": {"subject": f.subject},
            });
            if let Some(l) = &f.location {
                r["locations"] = json!([{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri(&l.file)},
                        "region": {"startLine": l.line.max(1)},
                    }
                }]);
            }
            r
        })
        .collect();
    let log = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "trustmap",
                "version": version,
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    });
    serde_json::to_string_pretty(&log).expect("SARIF serializes")
}

/// Stable across runs and line moves: rule, subject and message.
fn fingerprint(f: &Finding) -> String {
    // FNV-1a: small, stable, dependency-free.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let key = format!("{}|{:?}|{}", f.rule.info().code, f.subject, f.message);
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
