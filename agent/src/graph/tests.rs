//! Flow graph rules: counting, merging, the JSON-lines form, the state file, confidence.

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::identity::{Peer, Sample, SampleEnd};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn obs(src: &str, dst: &str, port: u16, at: &str) -> Observation {
    Observation {
        src: Peer::Workload(src.parse().unwrap()),
        dst: Peer::Workload(dst.parse().unwrap()),
        protocol: Protocol::Tcp,
        port: Some(port),
        seen: Some(t(at)),
        sample: Sample {
            src: SampleEnd::Ip("10.0.0.1".parse().unwrap()),
            src_port: Some(40000),
            dst: SampleEnd::Ip("10.0.0.2".parse().unwrap()),
            port: Some(port),
            initiator: None,
            outcome: None,
        },
        dst_names: Vec::new(),
    }
}

#[test]
fn repeated_connections_count_on_one_edge_with_first_and_last_seen() {
    let mut g = FlowGraph::new();
    assert!(g.observe(&obs(
        "a/Deployment/web",
        "a/Deployment/api",
        80,
        "2026-11-24T10:00:00Z"
    )));
    assert!(!g.observe(&obs(
        "a/Deployment/web",
        "a/Deployment/api",
        80,
        "2026-11-24T09:00:00Z"
    )));
    assert!(g.observe(&obs(
        "a/Deployment/web",
        "a/Deployment/api",
        81,
        "2026-11-24T11:00:00Z"
    )));
    let e = &g.edges()[0];
    assert_eq!((e.port, e.stats.count), (Some(80), 2));
    assert_eq!(e.stats.first_seen, Some(t("2026-11-24T09:00:00Z")));
    assert_eq!(e.stats.last_seen, Some(t("2026-11-24T10:00:00Z")));
}

#[test]
fn merging_node_graphs_equals_observing_everything_in_one() {
    let all = [
        obs(
            "a/Deployment/web",
            "a/Deployment/api",
            80,
            "2026-11-24T10:00:00Z",
        ),
        obs(
            "a/Deployment/api",
            "a/StatefulSet/db",
            5432,
            "2026-11-24T10:01:00Z",
        ),
        obs(
            "a/Deployment/web",
            "a/Deployment/api",
            80,
            "2026-11-24T10:02:00Z",
        ),
    ];
    let (mut one, mut n1, mut n2) = (FlowGraph::new(), FlowGraph::new(), FlowGraph::new());
    for (i, o) in all.iter().enumerate() {
        one.observe(o);
        if i % 2 == 0 {
            n1.observe(o)
        } else {
            n2.observe(o)
        };
    }
    n1.merge(&n2);
    assert_eq!(n1.edges(), one.edges());
}

#[test]
fn json_lines_round_trip_and_state_file_survives_restart() {
    let mut g = FlowGraph::new();
    g.observe(&obs(
        "a/Deployment/web",
        "a/Deployment/api",
        80,
        "2026-11-24T10:00:00Z",
    ));
    g.add(
        &Peer::Workload("a/Deployment/web".parse().unwrap()),
        &Peer::ClusterDns,
        Protocol::Udp,
        Some(53),
        EdgeStats {
            count: 7,
            first_seen: None,
            last_seen: None,
            sample: obs("x/Pod/a", "x/Pod/b", 53, "2026-11-24T10:00:00Z").sample,
            alerted: Default::default(),
            names: Vec::new(),
        },
    );
    let mut buf = Vec::new();
    g.write_json_lines(&mut buf).unwrap();
    let mut back = FlowGraph::new();
    back.read_json_lines(&buf[..], "buf").unwrap();
    assert_eq!(back.edges(), g.edges());

    let dir = std::env::temp_dir().join(format!("trustmap-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("graph.jsonl");
    assert!(
        state::load(&path).unwrap().is_empty(),
        "missing file is empty"
    );
    state::save(&path, &g).unwrap();
    assert_eq!(state::load(&path).unwrap().edges(), g.edges());
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_lines_are_named_by_source_and_line() {
    let mut g = FlowGraph::new();
    let err = g
        .read_json_lines(&b"\n{\"src\":1}\n"[..], "node-a.jsonl")
        .unwrap_err();
    assert!(
        err.to_string().starts_with("node-a.jsonl: line 2:"),
        "{err}"
    );
}

#[test]
fn workload_is_stable_after_the_quiet_period_without_new_edges() {
    let mut g = FlowGraph::new();
    g.observe(&obs(
        "a/Deployment/web",
        "a/Deployment/api",
        80,
        "2026-11-24T10:00:00Z",
    ));
    g.observe(&obs(
        "a/Deployment/api",
        "a/StatefulSet/db",
        5432,
        "2026-11-24T12:00:00Z",
    ));
    let c = g.confidence(t("2026-11-24T13:00:00Z"), TimeDelta::hours(2));
    let by: Vec<(String, bool)> = c
        .iter()
        .map(|c| (c.workload.to_string(), c.stable))
        .collect();
    assert_eq!(
        by,
        [
            ("a/Deployment/api".into(), false),
            ("a/Deployment/web".into(), true),
            ("a/StatefulSet/db".into(), false)
        ]
    );
    assert_eq!(c[1].quiet_seconds, Some(3 * 3600));
}

#[test]
fn an_external_edge_keeps_every_name_its_connections_had_through_files_and_records() {
    let named = |ip: &str, names: &[&str], at: &str| {
        let mut o = obs("a/Deployment/web", "a/Deployment/web", 443, at);
        o.dst = Peer::External(ip.parse().unwrap());
        o.dst_names = names.iter().map(|n| (*n).to_owned()).collect();
        o
    };
    let mut g = FlowGraph::new();
    g.observe(&named(
        "203.0.113.10",
        &["api.pay.example"],
        "2026-11-24T10:00:00Z",
    ));
    g.observe(&named("203.0.113.10", &[], "2026-11-24T10:01:00Z"));
    g.observe(&named(
        "203.0.113.10",
        &["b.pay.example", "api.pay.example"],
        "2026-11-24T10:02:00Z",
    ));
    let edge = g.edges()[0].stats.clone();
    assert_eq!(edge.names, ["api.pay.example", "b.pay.example"]);
    assert_eq!(edge.count, 3);

    let mut buf = Vec::new();
    g.write_json_lines(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf)
            .contains(r#""dst_names":["api.pay.example","b.pay.example"]"#),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    let mut back = FlowGraph::new();
    back.read_json_lines(&buf[..], "buf").unwrap();
    assert_eq!(back.edges()[0].stats.names, edge.names);

    let records = crate::kube::graph_to_records(&g, t("2026-11-24T10:00:00Z"));
    assert_eq!(records[0].dst_names, edge.names);
    let (again, bad) = crate::kube::records_to_graph(&records);
    assert!(bad.is_empty());
    assert_eq!(again.edges()[0].stats.names, edge.names);
}

#[test]
fn an_edge_keeps_at_most_max_names_the_same_whatever_the_merge_order() {
    let names: Vec<String> = (0..40).map(|i| format!("n{i:02}.cdn.example")).collect();
    let mut forward = Vec::new();
    for n in &names {
        merge_names(&mut forward, std::slice::from_ref(n));
    }
    let mut backward = Vec::new();
    for n in names.iter().rev() {
        merge_names(&mut backward, std::slice::from_ref(n));
    }
    assert_eq!(forward, backward);
    assert_eq!(forward, names[..MAX_NAMES]);
}
