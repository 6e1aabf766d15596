//! Policy kinds trustmap does not evaluate, looked for in a live cluster: the API groups of
//! [`UNEVALUATED_POLICY_KINDS`] are discovered, and the objects of each such kind listed, so
//! that a verdict read from the cluster never hides that other policies apply too. The
//! offline commands read CiliumNetworkPolicies and evaluate them; the agent does not watch
//! them yet, so for the agent they stay a warning.

use kube::{
    Api, Client, ResourceExt as _,
    api::{ApiResource, DynamicObject, ListParams},
    discovery::{Discovery, verbs},
};

use crate::{
    inventory::UNEVALUATED_POLICY_KINDS,
    policy::{Policy, cilium::CiliumNetworkPolicy},
};

/// How many object names a warning lists before it says how many more there are.
const NAMES_SHOWN: usize = 5;

/// The unevaluated policy kinds the cluster serves (discovery only: every authenticated user
/// may read it, so no RBAC is needed).
pub async fn served_kinds(client: &Client) -> Result<Vec<ApiResource>, kube::Error> {
    let groups: Vec<&str> = UNEVALUATED_POLICY_KINDS.iter().map(|(g, _)| *g).collect();
    let discovery = Discovery::new(client.clone()).filter(&groups).run().await?;
    let mut served = Vec::new();
    for group in discovery.groups_alphabetical() {
        let Some((_, kinds)) = UNEVALUATED_POLICY_KINDS
            .iter()
            .find(|(g, _)| *g == group.name())
        else {
            continue;
        };
        served.extend(
            group
                .recommended_resources()
                .into_iter()
                .filter(|(ar, caps)| {
                    kinds.contains(&ar.kind.as_str()) && caps.supports_operation(verbs::LIST)
                })
                .map(|(ar, _)| ar),
        );
    }
    Ok(served)
}

/// For the agent, which reads no objects of these kinds: one warning per unevaluated policy
/// kind the cluster serves.
pub async fn served_kinds_warnings(client: &Client) -> Vec<String> {
    match served_kinds(client).await {
        Ok(served) => served
            .iter()
            .map(|ar| {
                format!(
                    "the cluster serves {} {}, which trustmap does not evaluate: where such \
                     policies exist, verdicts ignore them and may be wrong",
                    ar.api_version, ar.kind
                )
            })
            .collect(),
        Err(e) => vec![format!(
            "could not look for policy kinds trustmap does not evaluate: {e}"
        )],
    }
}

/// What the offline commands read besides the inventory: the CiliumNetworkPolicies, which they
/// evaluate, and warnings.
#[derive(Debug, Default)]
pub struct LivePolicies {
    pub cilium: Vec<Policy>,
    pub warnings: Vec<String>,
}

/// Whether a served kind is CiliumNetworkPolicy, which the offline commands read and evaluate.
fn is_cilium_network_policy(ar: &ApiResource) -> bool {
    ar.group == "cilium.io" && ar.kind == "CiliumNetworkPolicy"
}

/// The live CiliumNetworkPolicies as the evaluator reads them; one that it cannot decide is
/// left out with a warning naming it and the field, as from manifests.
async fn cilium_policies(client: &Client, ar: &ApiResource, out: &mut LivePolicies) {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let list = match api.list(&ListParams::default()).await {
        Ok(l) => l,
        Err(e) => {
            out.warnings.push(format!(
                "could not list {} {} ({e}): verdicts ignore them and may be wrong where they \
                 apply",
                ar.api_version, ar.kind
            ));
            return;
        }
    };
    for o in list.items {
        let name = format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any());
        let parsed = serde_json::to_value(&o)
            .and_then(serde_json::from_value::<CiliumNetworkPolicy>)
            .map_err(|e| e.to_string())
            .and_then(|c| Policy::from_cilium(&c).map_err(|e| e.to_string()));
        match parsed {
            Ok(p) => out.cilium.push(p),
            Err(e) => out.warnings.push(format!(
                "CiliumNetworkPolicy {name} is not evaluated: {e}; verdicts ignore it and may \
                 be wrong where it applies"
            )),
        }
    }
}

/// For the offline commands: the live CiliumNetworkPolicies, and one warning per unevaluated
/// policy kind that has objects in the cluster, and per such kind that could not be listed;
/// none when the cluster has none. A failed discovery is a warning too: it is never a reason
/// to stop.
pub async fn live_policies(client: &Client) -> LivePolicies {
    let mut out = LivePolicies::default();
    let served = match served_kinds(client).await {
        Ok(s) => s,
        Err(e) => {
            out.warnings.push(format!(
                "could not look for policy kinds trustmap does not evaluate: {e}"
            ));
            return out;
        }
    };
    let warnings = &mut Vec::new();
    for ar in served {
        if is_cilium_network_policy(&ar) {
            cilium_policies(client, &ar, &mut out).await;
            continue;
        }
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        match api.list_metadata(&ListParams::default()).await {
            Ok(list) => {
                let names: Vec<String> = list
                    .items
                    .iter()
                    .map(|o| match o.namespace() {
                        Some(ns) => format!("{ns}/{}", o.name_any()),
                        None => o.name_any(),
                    })
                    .collect();
                if let Some(w) = warning(&ar.api_version, &ar.kind, &names) {
                    warnings.push(w);
                }
            }
            Err(e) => warnings.push(format!(
                "could not list {} {} ({e}): trustmap does not evaluate this kind, and cannot \
                 say whether the cluster has any",
                ar.api_version, ar.kind
            )),
        }
    }
    out.warnings.append(warnings);
    out
}

/// The warning for `names`, objects of an unevaluated kind; `None` when there are none.
pub fn warning(api_version: &str, kind: &str, names: &[String]) -> Option<String> {
    if names.is_empty() {
        return None;
    }
    let mut shown = names[..names.len().min(NAMES_SHOWN)].join(", ");
    if names.len() > NAMES_SHOWN {
        shown.push_str(&format!(" and {} more", names.len() - NAMES_SHOWN));
    }
    Some(format!(
        "the live cluster has {} {api_version} {kind} object(s) ({shown}): they are not \
         evaluated, so verdicts ignore them and may be wrong where they apply",
        names.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_names_the_kind_and_up_to_five_objects() {
        assert_eq!(warning("cilium.io/v2", "CiliumNetworkPolicy", &[]), None);
        let names: Vec<String> = (1..=7).map(|i| format!("shop/p{i}")).collect();
        assert_eq!(
            warning("cilium.io/v2", "CiliumNetworkPolicy", &names).as_deref(),
            Some(
                "the live cluster has 7 cilium.io/v2 CiliumNetworkPolicy object(s) (shop/p1, \
                 shop/p2, shop/p3, shop/p4, shop/p5 and 2 more): they are not evaluated, so \
                 verdicts ignore them and may be wrong where they apply"
            )
        );
    }
}
