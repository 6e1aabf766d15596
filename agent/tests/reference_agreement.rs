//! trustmap's evaluator agrees with the naive reference evaluator (tests/common/reference.rs)
//! on generated clusters with hundreds of workloads and on the online-boutique manifests.

#[allow(dead_code, reason = "shared by several test crates; each uses a part")]
mod common;

use std::{fs, path::Path};

use common::{
    generate::{self, PORTS, PROTOCOLS, Rng},
    reference::Reference,
};
use serde_json::Value;
use trustmap::{
    flow::{FlowRecord, Protocol},
    policy::Evaluator,
};

/// Checks `(src, dst, protocol, port)` cases; panics with both explanations on disagreement.
/// Returns the number of cases and how many were allowed.
fn agree(
    docs: &[Value],
    cases: impl Iterator<Item = (String, String, &'static str, Option<u16>)>,
) -> (usize, usize) {
    let loaded = common::load(docs);
    let ev = Evaluator::new(&loaded.inventory, &loaded.policies);
    let reference = Reference::new(docs);
    let (mut n, mut allowed) = (0, 0);
    for (src, dst, proto, port) in cases {
        let protocol: Protocol = proto.parse().unwrap();
        let record = FlowRecord::new(protocol, src.parse().unwrap(), dst.parse().unwrap(), port);
        let conn = ev
            .connection(&record)
            .unwrap_or_else(|e| panic!("{src} -> {dst}: {e}"));
        let ours = ev.evaluate(&conn).allowed();
        let theirs = reference.allowed(&src, &dst, proto, port);
        assert_eq!(
            ours,
            theirs,
            "{src} -> {dst} {proto} {port:?}: trustmap says {ours}, reference {theirs}\n{}",
            ev.explain(&conn)
        );
        let by_ports = ev
            .allowed_ports(&conn.src, &conn.dst)
            .contains(protocol, port);
        assert_eq!(
            ours, by_ports,
            "allowed_ports disagrees with evaluate on {src} -> {dst} {proto} {port:?}"
        );
        n += 1;
        allowed += usize::from(ours);
    }
    (n, allowed)
}

fn random_flows(
    rng: &mut Rng,
    endpoints: &[String],
    n: usize,
) -> Vec<(String, String, &'static str, Option<u16>)> {
    (0..n)
        .map(|_| {
            let proto = *rng.pick(PROTOCOLS);
            let port = (proto != "ICMP").then(|| *rng.pick(PORTS));
            (
                rng.pick(endpoints).clone(),
                rng.pick(endpoints).clone(),
                proto,
                port,
            )
        })
        .collect()
}

#[test]
fn agrees_with_reference_on_large_generated_clusters() {
    for seed in 1..=3 {
        let c = generate::cluster(seed, 12, 300, 200);
        let mut rng = Rng::new(seed * 7919);
        let flows = random_flows(&mut rng, &c.endpoints, 4000);
        let (n, allowed) = agree(&c.docs, flows.into_iter());
        // Both outcomes must be common, or the comparison proves little.
        assert!(
            allowed > n / 5 && allowed < n * 4 / 5,
            "seed {seed}: {allowed} of {n} allowed"
        );
    }
}

#[test]
fn agrees_with_reference_on_many_small_clusters() {
    let (mut total, mut total_allowed) = (0, 0);
    for seed in 100..160 {
        let c = generate::cluster(seed, 3, 8, 6);
        let mut rng = Rng::new(seed);
        let flows = random_flows(&mut rng, &c.endpoints, 400);
        let (n, allowed) = agree(&c.docs, flows.into_iter());
        (total, total_allowed) = (total + n, total_allowed + allowed);
    }
    assert!(
        total_allowed > total / 5 && total_allowed < total * 4 / 5,
        "{total_allowed} of {total} allowed"
    );
}

fn boutique_docs() -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/online-boutique");
    let mut docs = Vec::new();
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        match f.extension().and_then(|e| e.to_str()) {
            Some("json") => docs.push(serde_json::from_str(&text).unwrap()),
            Some("yaml") => {
                for d in serde_yaml::Deserializer::from_str(&text) {
                    let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
                    docs.push(serde_json::to_value(v).unwrap());
                }
            }
            _ => {}
        }
    }
    docs
}

#[test]
fn agrees_with_reference_on_online_boutique_for_every_pair_and_port() {
    let docs = boutique_docs();
    let mut endpoints: Vec<String> = Vec::new();
    for d in &docs {
        for o in d
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_else(|| vec![d.clone()])
        {
            let kind = o["kind"].as_str().unwrap_or("");
            let ns = o
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            let name = o
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            match kind {
                "Pod" => {
                    endpoints.push(format!("{ns}/{name}"));
                    endpoints.extend(
                        o.pointer("/status/podIP")
                            .and_then(Value::as_str)
                            .map(String::from),
                    );
                }
                "Deployment" | "StatefulSet" | "DaemonSet" | "CronJob" => {
                    endpoints.push(format!("{ns}/{kind}/{name}"))
                }
                _ => {}
            }
        }
    }
    endpoints.extend(
        [
            "192.168.10.11",
            "192.168.10.12",
            "203.0.113.9",
            "10.9.8.7",
            "198.51.100.25",
            "fd00::1",
        ]
        .map(String::from),
    );
    let ports = [
        53u16, 80, 443, 587, 2525, 2527, 3550, 5000, 5050, 6379, 7000, 7070, 8080, 9090, 9555,
        50051,
    ];
    let mut cases = Vec::new();
    for s in &endpoints {
        for d in &endpoints {
            for p in ports {
                cases.push((s.clone(), d.clone(), "TCP", Some(p)));
            }
            cases.push((s.clone(), d.clone(), "UDP", Some(53)));
            cases.push((s.clone(), d.clone(), "ICMP", None));
        }
    }
    let (n, allowed) = agree(&docs, cases.into_iter());
    assert!(
        n > 10_000 && allowed > 100 && allowed < n / 2,
        "{allowed} of {n} allowed"
    );
}
