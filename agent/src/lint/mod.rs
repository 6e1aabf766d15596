//! Zero-Trust lint: finds NetworkPolicies that allow more than they should, isolate less than
//! people assume, or do nothing at all, and says how to fix each, as YAML where one fits.
//!
//! ```text
//!   Inventory + Policy[] ──Evaluator──┐
//!   Sources (file/line, scrape       ├─▶ rules::* ──▶ Finding[] ──▶ table | JSON | SARIF 2.1.0
//!     annotations, monitors, Services)│
//!   observed connections (--flows) ──┘
//! ```
//!
//! Every rule has a stable id ([`RuleId`]) and a default severity; the catalog ([`RULES`]) is
//! what SARIF's rule metadata and docs/audit.md say. Pure: the CLI reads files and flows.

mod catalog;
mod fix;
pub mod locate;
mod output;
mod rules;
mod source;

#[cfg(test)]
mod tests;

use ipnet::IpNet;
use serde::Serialize;

pub use catalog::{RULES, RuleId, RuleInfo, Severity};
pub use output::{to_json, to_sarif, to_table};
pub use source::{
    ScrapeNamespaces, ScrapePort, ScrapeTarget, ServiceFacts, SourceLocation, Sources,
};

pub use crate::reach::ObservedConnection;
use crate::{
    inventory::Inventory,
    policy::{Direction, Labels, Policy, Selector},
};

/// Why lint could not run.
#[derive(Debug, thiserror::Error)]
pub enum LintError {
    /// `--max-selector-share` outside (0, 1].
    #[error("max selector share {value} is outside (0, 1]: give a fraction such as 0.5")]
    InvalidShare { value: f64 },
    /// A scraper selector that is not `key=value[,key=value]`.
    #[error("invalid scraper selector {value:?}: expected key=value[,key=value...]")]
    InvalidScraper { value: String },
}

/// What the rules may assume about the cluster.
#[derive(Clone, Debug)]
pub struct LintOptions {
    /// A peer selecting more than this share of the cluster's pods is too broad.
    pub max_selector_share: f64,
    /// The share rule applies only to clusters with at least this many pods.
    pub min_pods_for_share: usize,
    /// Pod CIDRs; empty: inferred from pod IPs.
    pub pod_cidrs: Vec<IpNet>,
    /// Namespace and labels of the cluster DNS pods.
    pub dns_namespace: String,
    pub dns_labels: Labels,
    /// Selectors of the metrics scrapers (Prometheus pods); any of them.
    pub scrapers: Vec<Selector>,
    /// Namespaces whose own isolation is not checked (their policies still are).
    pub skip_namespaces: Vec<String>,
}

impl Default for LintOptions {
    fn default() -> Self {
        Self {
            max_selector_share: 0.5,
            min_pods_for_share: 6,
            pod_cidrs: Vec::new(),
            dns_namespace: "kube-system".into(),
            dns_labels: [("k8s-app".to_owned(), "kube-dns".to_owned())].into(),
            scrapers: vec![
                Selector::from_labels([("app.kubernetes.io/name", "prometheus")]),
                Selector::from_labels([("app", "prometheus")]),
            ],
            skip_namespaces: vec![
                "kube-system".into(),
                "kube-public".into(),
                "kube-node-lease".into(),
            ],
        }
    }
}

impl LintOptions {
    /// Checks the options that come from users.
    pub fn validate(&self) -> Result<(), LintError> {
        if !(self.max_selector_share > 0.0 && self.max_selector_share <= 1.0) {
            return Err(LintError::InvalidShare {
                value: self.max_selector_share,
            });
        }
        Ok(())
    }

    /// Parses `key=value[,key=value]` into a scraper selector.
    pub fn parse_scraper(value: &str) -> Result<Selector, LintError> {
        let pairs: Option<Vec<(&str, &str)>> = value
            .split(',')
            .map(|kv| kv.split_once('=').filter(|(k, _)| !k.is_empty()))
            .collect();
        pairs
            .map(Selector::from_labels)
            .ok_or_else(|| LintError::InvalidScraper {
                value: value.to_owned(),
            })
    }
}

/// Everything lint looks at.
pub struct LintInput<'a> {
    pub inventory: &'a Inventory,
    pub policies: &'a [Policy],
    /// The admin tiers in force: findings about what a pod can reach account for them.
    pub admin: &'a [crate::policy::AdminPolicy],
    pub sources: &'a Sources,
    /// `Some` when flows were given (possibly none observed).
    pub observed: Option<&'a [ObservedConnection<'a>]>,
    pub options: &'a LintOptions,
}

/// What a finding is about: a policy and, inside it, a rule and a peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Subject {
    /// `namespace/name` of the policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Index of the rule in the direction's list.
    #[serde(rename = "rule_index", skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    /// Index of the peer in the rule's `from`/`to`.
    #[serde(rename = "peer_index", skip_serializing_if = "Option::is_none")]
    pub peer: Option<usize>,
    /// The namespace, workload or Service concerned, when it is not a policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

impl Subject {
    /// The namespace the finding is about: the object's (`namespace shop`, `Service shop/api`,
    /// `shop/Deployment/api`), else the policy's. `None` for cluster-scoped subjects: the
    /// admin layers (`ClusterNetworkPolicy/name` and the like).
    pub fn namespace(&self) -> Option<&str> {
        if let Some(o) = &self.object {
            let o = o
                .strip_prefix("namespace ")
                .or_else(|| o.strip_prefix("Service "))
                .unwrap_or(o);
            return o.split('/').next();
        }
        let p = self.policy.as_deref()?;
        let (first, _) = p.split_once('/')?;
        let cluster_scoped = [
            "ClusterNetworkPolicy",
            "AdminNetworkPolicy",
            "BaselineAdminNetworkPolicy",
        ];
        (!cluster_scoped.contains(&first)).then_some(first)
    }
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: RuleId,
    pub severity: Severity,
    #[serde(flatten)]
    pub subject: Subject,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<SourceLocation>,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub fix: String,
    /// The fix as YAML, where one fits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix_yaml: Option<String>,
}

impl Finding {
    fn new(rule: RuleId, subject: Subject, message: String, fix: String) -> Self {
        Self {
            rule,
            severity: rule.info().severity,
            subject,
            location: None,
            message,
            fix,
            fix_yaml: None,
        }
    }

    fn yaml(mut self, yaml: String) -> Self {
        self.fix_yaml = Some(yaml);
        self
    }

    fn at(mut self, location: Option<SourceLocation>) -> Self {
        self.location = location;
        self
    }
}

/// Runs every rule. Findings are sorted by file, line, rule and message.
pub fn lint(input: &LintInput<'_>) -> Vec<Finding> {
    let ctx = rules::Ctx::new(input);
    let mut out = Vec::new();
    rules::isolation::check(&ctx, &mut out);
    rules::breadth::check(&ctx, &mut out);
    rules::dead::check(&ctx, &mut out);
    rules::exposure::check(&ctx, &mut out);
    rules::layers::check(&ctx, input.admin, &mut out);
    if let Some(observed) = input.observed {
        rules::usage::check(&ctx, observed, &mut out);
    }
    out.sort_by(|a, b| {
        let key = |f: &Finding| {
            (
                f.location.as_ref().map(|l| (l.file.clone(), l.line)),
                f.rule,
                f.message.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    out.dedup();
    out
}
