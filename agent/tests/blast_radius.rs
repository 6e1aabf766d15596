//! Blast radius against brute force: on random small clusters, every figure of
//! `reach::blast_radius` equals what asking the evaluator about single connections gives,
//! port by port (one probe per stretch of ports over which no policy or container port
//! changes), with hop counts from a naive fixed-point relaxation.

#[allow(dead_code, reason = "shared by several test crates; each uses a part")]
mod common;

use common::generate;
use proptest::prelude::*;
use trustmap::{
    flow::Protocol,
    inventory::{Inventory, Resolved},
    policy::{Connection, Entity, Evaluator, Policy, PortSpec},
    reach::blast_radius,
};

/// Port numbers at which what is allowed may change: 1, every range start and end + 1, and
/// every container port and the next.
fn breakpoints(inv: &Inventory, policies: &[Policy]) -> Vec<u32> {
    let mut b = vec![1u32];
    for p in policies {
        for r in p.ingress.iter().chain(&p.egress).flatten() {
            for m in &r.ports {
                if let PortSpec::Range { start, end } = m.port {
                    b.extend([u32::from(start), u32::from(end) + 1]);
                }
            }
        }
    }
    for pod in inv.pods() {
        for cp in &pod.ports {
            b.extend([u32::from(cp.port), u32::from(cp.port) + 1]);
        }
    }
    b.retain(|&x| (1..=65535).contains(&x));
    b.sort_unstable();
    b.dedup();
    b
}

/// Allowed port numbers from `a` to `b`, counted with one evaluation per stretch.
fn brute_ports(ev: &Evaluator<'_>, a: &Resolved, b: &Resolved, cuts: &[u32]) -> u64 {
    let mut n = 0;
    for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
        for (i, &start) in cuts.iter().enumerate() {
            let end = cuts.get(i + 1).map_or(65535, |&next| next - 1);
            let c = Connection {
                src: *a,
                dst: *b,
                protocol,
                port: Some(start as u16),
                dst_names: &[],
            };
            if ev.evaluate(&c).allowed() {
                n += u64::from(end - start + 1);
            }
        }
    }
    n
}

fn inside(e: &Entity) -> bool {
    matches!(
        e.end,
        Resolved::Pod { .. } | Resolved::Host { pod: Some(_), .. }
    )
}

fn pods(inv: &Inventory, e: &Entity) -> u64 {
    match e.end {
        Resolved::Pod { pod, .. } | Resolved::Host { pod: Some(pod), .. } => {
            match inv.pod(pod).workload {
                Some(w) => (inv.workload(w).pods.len() as u64).max(1),
                None => 1,
            }
        }
        _ => 0,
    }
}

fn check(seed: u64) {
    let c = generate::cluster(seed, 3, 5, 6);
    let loaded = common::load(&c.docs);
    let inv = &loaded.inventory;
    let ev = Evaluator::new(inv, &loaded.policies);
    let report = blast_radius(&ev);
    let entities = ev.matrix_entities();
    let cuts = breakpoints(inv, &loaded.policies);
    let n = entities.len();
    let mut ports = vec![vec![0u64; n]; n];
    for i in 0..n {
        for j in 0..n {
            if i != j && (inside(&entities[i]) || inside(&entities[j])) {
                ports[i][j] = brute_ports(&ev, &entities[i].end, &entities[j].end, &cuts);
            }
        }
    }
    let pod_counts: Vec<u64> = entities.iter().map(|e| pods(inv, e)).collect();
    for (s, e) in entities.iter().enumerate() {
        if !inside(e) {
            continue;
        }
        let row = report
            .rows
            .iter()
            .find(|r| r.workload == e.name)
            .unwrap_or_else(|| panic!("seed {seed}: no row for {}", e.name));
        let reach: u64 = (0..n)
            .filter(|&t| ports[s][t] > 0)
            .map(|t| pod_counts[t])
            .sum();
        let reach_ports: u64 = (0..n)
            .filter(|&t| inside(&entities[t]))
            .map(|t| ports[s][t])
            .sum();
        let by: u64 = (0..n)
            .filter(|&t| ports[t][s] > 0)
            .map(|t| pod_counts[t])
            .sum();
        let ext_out = (0..n).any(|t| !inside(&entities[t]) && ports[s][t] > 0);
        let ext_in = (0..n).any(|t| !inside(&entities[t]) && ports[t][s] > 0);
        // Hops by relaxation until nothing changes, through in-cluster entities only.
        let mut dist = vec![u32::MAX; n];
        dist[s] = 0;
        loop {
            let mut changed = false;
            for a in 0..n {
                for b in 0..n {
                    if dist[a] != u32::MAX
                        && ports[a][b] > 0
                        && inside(&entities[b])
                        && dist[a] + 1 < dist[b]
                    {
                        dist[b] = dist[a] + 1;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let max = dist
            .iter()
            .filter(|&&d| d != u32::MAX)
            .max()
            .copied()
            .unwrap_or(0);
        let hops: Vec<u64> = (1..=max)
            .map(|h| {
                (0..n)
                    .filter(|&b| dist[b] == h)
                    .map(|b| pod_counts[b])
                    .sum()
            })
            .collect();
        let ctx = format!("seed {seed}, {}", e.name);
        assert_eq!(row.reach_pods, reach, "{ctx}: reach_pods");
        assert_eq!(row.reach_ports, reach_ports, "{ctx}: reach_ports");
        assert_eq!(row.reached_by_pods, by, "{ctx}: reached_by_pods");
        assert_eq!(row.reach_external, ext_out, "{ctx}: reach_external");
        assert_eq!(
            row.reached_by_external, ext_in,
            "{ctx}: reached_by_external"
        );
        assert_eq!(row.hops, hops, "{ctx}: hops");
        for r in &row.reached {
            let b = entities.iter().position(|x| x.name == r.workload).unwrap();
            assert_eq!(r.hops, dist[b], "{ctx}: hops to {}", r.workload);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn blast_radius_agrees_with_brute_force_reachability_over_the_evaluator(seed: u64) {
        check(seed);
    }
}

#[test]
fn generated_clusters_have_multi_hop_and_partial_reach() {
    // Guards the property above against vacuity: some workloads reach others only by
    // hopping, and some reach fewer than all.
    let (mut multi_hop, mut partial) = (false, false);
    for seed in 0..20 {
        let c = generate::cluster(seed, 3, 5, 6);
        let loaded = common::load(&c.docs);
        let ev = Evaluator::new(&loaded.inventory, &loaded.policies);
        let report = blast_radius(&ev);
        let max = report
            .rows
            .iter()
            .map(|r| r.transitive_pods)
            .max()
            .unwrap_or(0);
        multi_hop |= report.rows.iter().any(|r| r.hops.len() >= 2);
        partial |= report.rows.iter().any(|r| r.transitive_pods < max);
    }
    assert!(
        multi_hop && partial,
        "multi-hop {multi_hop}, partial {partial}"
    );
}
