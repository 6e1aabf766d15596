//! Conversion of k8s-openapi `NetworkPolicy` objects into the validated [`Policy`] model, with
//! the API server's defaulting and the validation errors it would give, each naming its field.

use ipnet::IpNet;
use k8s_openapi::{
    api::networking::v1::{IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::{
    PolicyError,
    model::{IpBlock, NamespaceScope, Peer, Policy, PortMatcher, PortSpec, Rule},
    selector::Selector,
};
use crate::flow::Protocol;

impl Policy {
    /// Converts and validates a NetworkPolicy. An object without a namespace is in `default`.
    pub fn from_k8s(np: &NetworkPolicy) -> Result<Self, PolicyError> {
        let namespace = np
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = np.metadata.name.clone().ok_or(PolicyError::MissingName)?;
        let spec = np.spec.clone().unwrap_or_default();
        let pod_selector = match &spec.pod_selector {
            Some(s) => Selector::from_k8s(s, "spec.podSelector")?,
            None => Selector::everything(),
        };

        // Defaulting as the API server does it: no policyTypes means Ingress, plus Egress when
        // there is at least one egress rule.
        let types = spec.policy_types.clone().unwrap_or_default();
        let (has_ingress, has_egress) = if types.is_empty() {
            (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty()))
        } else {
            let mut flags = (false, false);
            for (i, t) in types.iter().enumerate() {
                match t.as_str() {
                    "Ingress" => flags.0 = true,
                    "Egress" => flags.1 = true,
                    other => {
                        return Err(PolicyError::UnknownPolicyType {
                            field: format!("spec.policyTypes[{i}]"),
                            value: other.to_owned(),
                        });
                    }
                }
            }
            flags
        };

        let mut ingress = Vec::new();
        for (i, r) in spec.ingress.iter().flatten().enumerate() {
            let at = format!("spec.ingress[{i}]");
            ingress.push(Rule {
                peers: peers(r.from.as_deref(), &namespace, &format!("{at}.from"))?,
                ports: ports(r.ports.as_deref(), &format!("{at}.ports"))?,
            });
        }
        let mut egress = Vec::new();
        for (i, r) in spec.egress.iter().flatten().enumerate() {
            let at = format!("spec.egress[{i}]");
            egress.push(Rule {
                peers: peers(r.to.as_deref(), &namespace, &format!("{at}.to"))?,
                ports: ports(r.ports.as_deref(), &format!("{at}.ports"))?,
            });
        }
        Ok(Self {
            kind: super::model::PolicyKind::NetworkPolicy,
            namespace,
            name,
            pod_selector,
            ingress: has_ingress.then_some(ingress),
            egress: has_egress.then_some(egress),
        })
    }
}

fn peers(
    list: Option<&[NetworkPolicyPeer]>,
    namespace: &str,
    field: &str,
) -> Result<Vec<Peer>, PolicyError> {
    let mut out = Vec::new();
    for (i, p) in list.unwrap_or_default().iter().enumerate() {
        let at = format!("{field}[{i}]");
        let has_selector = p.pod_selector.is_some() || p.namespace_selector.is_some();
        out.push(match (&p.ip_block, has_selector) {
            (Some(_), true) => {
                return Err(PolicyError::InvalidPeer {
                    field: at,
                    reason: "ipBlock cannot be combined with podSelector or namespaceSelector",
                });
            }
            (None, false) => {
                return Err(PolicyError::InvalidPeer {
                    field: at,
                    reason: "must specify podSelector, namespaceSelector or ipBlock",
                });
            }
            (Some(b), false) => Peer::IpBlock(ip_block(b, &format!("{at}.ipBlock"))?),
            (None, true) => {
                let namespaces = match &p.namespace_selector {
                    Some(s) => NamespaceScope::Selector(Selector::from_k8s(
                        s,
                        &format!("{at}.namespaceSelector"),
                    )?),
                    None => NamespaceScope::Named(namespace.to_owned()),
                };
                let pods = match &p.pod_selector {
                    Some(s) => Selector::from_k8s(s, &format!("{at}.podSelector"))?,
                    None => Selector::everything(),
                };
                Peer::Pods { namespaces, pods }
            }
        });
    }
    Ok(out)
}

fn parse_cidr(value: &str, field: String) -> Result<IpNet, PolicyError> {
    value
        .parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| PolicyError::InvalidCidr {
            field,
            value: value.to_owned(),
        })
}

fn ip_block(b: &IPBlock, field: &str) -> Result<IpBlock, PolicyError> {
    let cidr = parse_cidr(&b.cidr, format!("{field}.cidr"))?;
    let mut except = Vec::new();
    for (i, e) in b.except.iter().flatten().enumerate() {
        let at = format!("{field}.except[{i}]");
        let net = parse_cidr(e, at.clone())?;
        if !cidr.contains(&net) || net == cidr {
            return Err(PolicyError::ExceptOutsideCidr {
                field: at,
                except: e.clone(),
                cidr: b.cidr.clone(),
            });
        }
        except.push(net);
    }
    Ok(IpBlock { cidr, except })
}

fn ports(list: Option<&[NetworkPolicyPort]>, field: &str) -> Result<Vec<PortMatcher>, PolicyError> {
    let mut out = Vec::new();
    for (i, p) in list.unwrap_or_default().iter().enumerate() {
        let at = format!("{field}[{i}]");
        let protocol = match p.protocol.as_deref() {
            None | Some("TCP") => Protocol::Tcp,
            Some("UDP") => Protocol::Udp,
            Some("SCTP") => Protocol::Sctp,
            Some(other) => {
                return Err(PolicyError::UnknownProtocol {
                    field: format!("{at}.protocol"),
                    value: other.to_owned(),
                });
            }
        };
        let port = match (&p.port, p.end_port) {
            (None, None) => PortSpec::All,
            (None, Some(_)) => {
                return Err(PolicyError::EndPortWithoutPort {
                    field: format!("{at}.endPort"),
                });
            }
            (Some(IntOrString::String(name)), Some(_)) => {
                return Err(PolicyError::EndPortWithNamedPort {
                    field: format!("{at}.endPort"),
                    name: name.clone(),
                });
            }
            (Some(IntOrString::String(name)), None) => {
                // The API server rejects names that are not IANA service names; so do we,
                // loosely: 1-15 lowercase letters, digits and dashes, with a letter.
                let ok = (1..=15).contains(&name.len())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && name.chars().any(|c| c.is_ascii_lowercase());
                if !ok {
                    return Err(PolicyError::InvalidPortName {
                        field: format!("{at}.port"),
                        name: name.clone(),
                    });
                }
                PortSpec::Named(name.clone())
            }
            (Some(IntOrString::Int(n)), end) => {
                let start = port_number(*n, format!("{at}.port"))?;
                let end = match end {
                    None => start,
                    Some(e) => {
                        let end = port_number(e, format!("{at}.endPort"))?;
                        if end < start {
                            return Err(PolicyError::EndPortBelowPort {
                                field: format!("{at}.endPort"),
                                port: start,
                                end_port: end,
                            });
                        }
                        end
                    }
                };
                PortSpec::Range { start, end }
            }
        };
        out.push(PortMatcher { protocol, port });
    }
    Ok(out)
}

fn port_number(n: i32, field: String) -> Result<u16, PolicyError> {
    match u16::try_from(n) {
        Ok(p) if p >= 1 => Ok(p),
        _ => Err(PolicyError::PortOutOfRange { field, value: n }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Result<Policy, PolicyError> {
        let np: NetworkPolicy = serde_yaml::from_str(yaml).expect("test YAML parses");
        Policy::from_k8s(&np)
    }

    const HEAD: &str =
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\n";

    fn err_field(spec: &str) -> String {
        let err = policy(&format!("{HEAD}spec:\n{spec}")).unwrap_err();
        err.to_string()
    }

    #[test]
    fn policy_types_default_to_ingress_and_egress_when_egress_rules_exist() {
        let p = policy(&format!("{HEAD}spec: {{podSelector: {{}}}}")).unwrap();
        assert_eq!((p.ingress.is_some(), p.egress.is_some()), (true, false));
        assert_eq!(p.namespace, "default");
        let p = policy(&format!(
            "{HEAD}spec: {{podSelector: {{}}, egress: [{{}}]}}"
        ))
        .unwrap();
        assert_eq!((p.ingress.is_some(), p.egress.is_some()), (true, true));
        let p = policy(&format!("{HEAD}spec: {{podSelector: {{}}, egress: []}}")).unwrap();
        assert_eq!((p.ingress.is_some(), p.egress.is_some()), (true, false));
    }

    #[test]
    fn listed_policy_types_decide_which_directions_apply() {
        let p = policy(&format!(
            "{HEAD}spec: {{podSelector: {{}}, policyTypes: [Egress], ingress: [{{}}]}}"
        ))
        .unwrap();
        assert_eq!(p.ingress, None);
        assert_eq!(p.egress, Some(vec![]));
    }

    #[test]
    fn invalid_fields_are_named_in_errors() {
        let cases = [
            (
                "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]",
                "spec.ingress[0].from[0].ipBlock.cidr",
            ),
            (
                "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]",
                "spec.ingress[0].from[0].ipBlock.except[0]",
            ),
            (
                "  egress: [{ports: [{port: 70000}]}]",
                "spec.egress[0].ports[0].port",
            ),
            (
                "  egress: [{ports: [{port: 0}]}]",
                "spec.egress[0].ports[0].port",
            ),
            (
                "  egress: [{ports: [{port: 90, endPort: 80}]}]",
                "spec.egress[0].ports[0].endPort",
            ),
            (
                "  egress: [{ports: [{port: http, endPort: 80}]}]",
                "spec.egress[0].ports[0].endPort",
            ),
            (
                "  egress: [{ports: [{endPort: 80}]}]",
                "spec.egress[0].ports[0].endPort",
            ),
            (
                "  ingress: [{ports: [{protocol: ICMP}]}]",
                "spec.ingress[0].ports[0].protocol",
            ),
            (
                "  ingress: [{from: [{podSelector: {matchExpressions: [{key: a, operator: Is}]}}]}]",
                "spec.ingress[0].from[0].podSelector.matchExpressions[0].operator",
            ),
            ("  policyTypes: [Sideways]", "spec.policyTypes[0]"),
            (
                "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]",
                "spec.ingress[0].from[0]",
            ),
            ("  ingress: [{from: [{}]}]", "spec.ingress[0].from[0]"),
        ];
        for (spec, field) in cases {
            let msg = err_field(spec);
            assert!(msg.contains(field), "{spec}: {msg}");
        }
    }

    #[test]
    fn pod_selector_alone_means_the_policy_namespace() {
        let p = policy(
            "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {name: p, namespace: shop}\nspec:\n  podSelector: {}\n  ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{port: 80, endPort: 90, protocol: UDP}]}]",
        )
        .unwrap();
        let rule = &p.ingress.unwrap()[0];
        assert_eq!(
            rule.peers[0],
            Peer::Pods {
                namespaces: NamespaceScope::Named("shop".into()),
                pods: Selector::from_labels([("app", "a")]),
            }
        );
        assert_eq!(
            rule.ports[0],
            PortMatcher {
                protocol: Protocol::Udp,
                port: PortSpec::Range { start: 80, end: 90 }
            }
        );
    }
}
