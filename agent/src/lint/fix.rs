//! Fixes as YAML a person can paste: selectors in flow style, whole policies for what is
//! missing, rule fragments for what should change.

use std::fmt::Write as _;

use crate::{
    flow::Protocol,
    inventory::NAMESPACE_NAME_LABEL,
    policy::{Direction, Operator, Selector},
};

/// A selector in flow style: `{matchLabels: {app: web}}`, `{}` for everything.
pub fn selector(s: &Selector) -> String {
    if s.is_everything() {
        return "{}".into();
    }
    let mut labels = Vec::new();
    let mut exprs = Vec::new();
    for r in s.requirements() {
        match &r.operator {
            Operator::In(v) if v.len() == 1 => labels.push(format!("{}: {}", r.key, quote(&v[0]))),
            Operator::In(v) | Operator::NotIn(v) => {
                let op = if matches!(r.operator, Operator::In(_)) {
                    "In"
                } else {
                    "NotIn"
                };
                let vals: Vec<String> = v.iter().map(|x| quote(x)).collect();
                exprs.push(format!(
                    "{{key: {}, operator: {op}, values: [{}]}}",
                    r.key,
                    vals.join(", ")
                ));
            }
            Operator::Exists => exprs.push(format!("{{key: {}, operator: Exists}}", r.key)),
            Operator::DoesNotExist => {
                exprs.push(format!("{{key: {}, operator: DoesNotExist}}", r.key))
            }
        }
    }
    let mut parts = Vec::new();
    if !labels.is_empty() {
        parts.push(format!("matchLabels: {{{}}}", labels.join(", ")));
    }
    if !exprs.is_empty() {
        parts.push(format!("matchExpressions: [{}]", exprs.join(", ")));
    }
    format!("{{{}}}", parts.join(", "))
}

/// A YAML scalar, quoted when plain style would change its meaning.
fn quote(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !matches!(v, "true" | "false" | "null" | "yes" | "no" | "on" | "off")
        && v.parse::<f64>().is_err();
    if plain {
        v.to_owned()
    } else {
        format!("{v:?}")
    }
}

/// The selector of one namespace by name.
pub fn namespace_named(ns: &str) -> String {
    format!("{{matchLabels: {{{NAMESPACE_NAME_LABEL}: {}}}}}", quote(ns))
}

fn types(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "Ingress",
        Direction::Egress => "Egress",
    }
}

/// A policy selecting every pod of `ns` for one direction, with no rules.
pub fn default_deny(ns: &str, d: Direction) -> String {
    let dir = types(d);
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: default-deny-{}\n  namespace: {ns}\nspec:\n  podSelector: {{}}\n  policyTypes: [{dir}]\n",
        dir.to_lowercase()
    )
}

/// A port list in flow style.
pub fn ports(ports: &[(Protocol, u16)]) -> String {
    let items: Vec<String> = ports
        .iter()
        .map(|(p, n)| format!("{{protocol: {p}, port: {n}}}"))
        .collect();
    format!("[{}]", items.join(", "))
}

/// A policy allowing `subject` pods of `ns` one direction to a peer on ports.
pub fn allow_policy(
    name: &str,
    ns: &str,
    subject: &Selector,
    d: Direction,
    peer: &str,
    port_list: &[(Protocol, u16)],
) -> String {
    let (list, key) = match d {
        Direction::Ingress => ("ingress", "from"),
        Direction::Egress => ("egress", "to"),
    };
    let mut s = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  podSelector: {}\n  policyTypes: [{}]\n  {list}:\n  - {key}:\n    - {peer}\n",
        selector(subject),
        types(d)
    );
    let _ = writeln!(s, "    ports: {}", ports(port_list));
    s
}

/// A pod peer in flow style, `namespaceSelector` and `podSelector` in one item.
pub fn pod_peer(namespace: Option<&str>, pods: &Selector) -> String {
    match namespace {
        Some(ns) => format!(
            "{{namespaceSelector: {}, podSelector: {}}}",
            namespace_named(ns),
            selector(pods)
        ),
        None => format!("{{podSelector: {}}}", selector(pods)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_render_as_flow_yaml_that_parses_back() {
        let s = Selector::from_labels([("app", "web"), ("version", "1.0")]);
        let y = selector(&s);
        assert_eq!(y, r#"{matchLabels: {app: web, version: "1.0"}}"#);
        let k: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
            serde_yaml::from_str(&y).unwrap();
        assert_eq!(Selector::from_k8s(&k, "s").unwrap(), s);
    }

    #[test]
    fn default_deny_parses_as_a_policy_of_one_direction() {
        let y = default_deny("shop", Direction::Egress);
        let np: k8s_openapi::api::networking::v1::NetworkPolicy = serde_yaml::from_str(&y).unwrap();
        let p = crate::policy::Policy::from_k8s(&np).unwrap();
        assert!(p.ingress.is_none());
        assert_eq!(p.egress, Some(vec![]));
    }
}
