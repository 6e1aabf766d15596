//! Invariants of NetworkPolicy semantics, checked on random clusters.

#[allow(dead_code, reason = "shared by several test crates; each uses a part")]
mod common;

use common::generate::{self, PORTS, PROTOCOLS, Rng};
use proptest::prelude::*;
use serde_json::{Value, json};
use trustmap::{
    flow::{FlowRecord, Protocol},
    inventory::Loaded,
    policy::Evaluator,
};

type Flow = (String, String, Protocol, Option<u16>);

fn flows(seed: u64, endpoints: &[String], n: usize) -> Vec<Flow> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    (0..n)
        .map(|_| {
            let proto = *rng.pick(PROTOCOLS);
            let port = (proto != "ICMP").then(|| *rng.pick(PORTS));
            (
                rng.pick(endpoints).clone(),
                rng.pick(endpoints).clone(),
                proto.parse().unwrap(),
                port,
            )
        })
        .collect()
}

fn verdicts(loaded: &Loaded, flows: &[Flow]) -> Vec<bool> {
    let ev = Evaluator::new(&loaded.inventory, &loaded.policies);
    flows
        .iter()
        .map(|(s, d, proto, port)| {
            let r = FlowRecord::new(*proto, s.parse().unwrap(), d.parse().unwrap(), *port);
            ev.evaluate(&ev.connection(&r).unwrap()).allowed()
        })
        .collect()
}

/// Reverses every list whose order carries no meaning: documents, rules, peers, ports.
fn reorder(v: &mut Value, rng: &mut Rng) {
    match v {
        Value::Array(items) => {
            let n = items.len();
            for i in (1..n).rev() {
                items.swap(i, rng.below(i + 1));
            }
            items.iter_mut().for_each(|x| reorder(x, rng));
        }
        Value::Object(o) => o.values_mut().for_each(|x| reorder(x, rng)),
        _ => {}
    }
}

fn is_policy(d: &Value) -> bool {
    d["kind"] == "NetworkPolicy"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn verdict_does_not_depend_on_policy_or_rule_order(seed in any::<u64>()) {
        let c = generate::cluster(seed, 4, 20, 14);
        let fl = flows(seed, &c.endpoints, 300);
        let before = verdicts(&common::load(&c.docs), &fl);
        let mut rng = Rng::new(seed);
        let (mut policies, others): (Vec<Value>, Vec<Value>) = c.docs.into_iter().partition(is_policy);
        for p in &mut policies {
            if let Some(spec) = p.get_mut("spec") {
                for key in ["ingress", "egress"] {
                    if let Some(r) = spec.get_mut(key) {
                        reorder(r, &mut rng);
                    }
                }
            }
        }
        let mut shuffled = Value::Array(policies);
        if let Value::Array(items) = &mut shuffled {
            let n = items.len();
            for i in (1..n).rev() {
                items.swap(i, rng.below(i + 1));
            }
        }
        let mut docs = others;
        docs.extend(shuffled.as_array().unwrap().iter().cloned());
        prop_assert_eq!(before, verdicts(&common::load(&docs), &fl));
    }

    #[test]
    fn allow_all_policies_on_both_sides_allow_everything(seed in any::<u64>()) {
        let mut c = generate::cluster(seed, 4, 20, 14);
        for n in 0..4 {
            c.docs.push(json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "zz-allow-all", "namespace": format!("ns{n}")},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{}]}}));
        }
        let fl = flows(seed, &c.endpoints, 300);
        prop_assert!(verdicts(&common::load(&c.docs), &fl).iter().all(|&a| a));
    }

    #[test]
    fn adding_a_rule_never_removes_an_allowed_connection(seed in any::<u64>()) {
        let c = generate::cluster(seed, 4, 20, 14);
        let fl = flows(seed, &c.endpoints, 300);
        let before = verdicts(&common::load(&c.docs), &fl);
        let mut rng = Rng::new(seed.rotate_left(17));
        let mut docs = c.docs.clone();
        let policies: Vec<usize> = (0..docs.len()).filter(|&i| is_policy(&docs[i])).collect();
        let target = *rng.pick(&policies);
        let extra = generate::policy(&mut rng, "ns0", "donor");
        for key in ["ingress", "egress"] {
            // Only add to a list that exists, so that policyTypes defaulting is unchanged.
            let rule = extra["spec"][key].get(0).cloned().unwrap_or_else(|| json!({}));
            if let Some(Value::Array(rules)) = docs[target]["spec"].get_mut(key)
                && !rules.is_empty()
            {
                rules.push(rule);
            }
        }
        let after = verdicts(&common::load(&docs), &fl);
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            prop_assert!(!b || *a, "flow {:?} was allowed and is now denied", fl[i]);
        }
    }

    #[test]
    fn explanations_agree_with_verdicts(seed in any::<u64>()) {
        let c = generate::cluster(seed, 4, 20, 14);
        let loaded = common::load(&c.docs);
        let ev = Evaluator::new(&loaded.inventory, &loaded.policies);
        for (s, d, proto, port) in flows(seed, &c.endpoints, 200) {
            let record = FlowRecord::new(proto, s.parse().unwrap(), d.parse().unwrap(), port);
            let conn = ev.connection(&record).unwrap();
            let v = ev.evaluate(&conn);
            let e = ev.explain(&conn);
            prop_assert_eq!(e.verdict == "allow", v.allowed());
            for side in [&e.egress, &e.ingress] {
                prop_assert_eq!(side.decision == "deny", side.isolated && side.allowed_by.is_none());
                prop_assert_eq!(side.misses.len(), if side.decision == "deny" { side.policies.len() } else { 0 });
            }
        }
    }
}
