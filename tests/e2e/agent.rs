//! `trustmap agent` end to end on the netns cluster with a static inventory: would-deny flags
//! for a planted policy, unexpected-flow alerts outside a baseline, `/metrics`, and a restart
//! that keeps the learned graph; without `--baseline`, the learned policies frozen when a
//! namespace switches to `alert`.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    path::Path,
    time::Duration,
};

use trustmap_e2e::{
    Agent, Cluster, ClusterSpec, Pod, TcpServer,
    manifests::{self, PodOptions},
    require_root, tcp_connect,
};

const CURRENT_POLICY: &str = r#"---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: db-from-api
  namespace: shop
spec:
  podSelector:
    matchLabels: {app: db}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {app: api}
    ports:
    - port: 5432
"#;

/// The accepted policies: the current one, plus web to api on 8080.
const BASELINE_EXTRA: &str = r#"---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: api-from-web
  namespace: shop
spec:
  podSelector:
    matchLabels: {app: api}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {app: web}
    ports:
    - port: 8080
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the agent");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read");
    body
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

fn alerts(path: &Path) -> BTreeSet<(String, String, String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("alert JSON");
            (
                v["kind"].as_str().unwrap_or("").to_owned(),
                v["src"].as_str().unwrap_or("").to_owned(),
                v["dst"].as_str().unwrap_or("").to_owned(),
                v["port"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn set(items: &[(&str, &str, &str, u64)]) -> BTreeSet<(String, String, String, u64)> {
    items
        .iter()
        .map(|(k, s, d, p)| ((*k).into(), (*s).into(), (*d).into(), *p))
        .collect()
}

#[test]
fn agent_flags_would_deny_alerts_outside_the_baseline_counts_and_keeps_its_graph() {
    require_root();
    let cluster = Cluster::start(
        &ClusterSpec::new(1)
            .pod(1, "web", &[("app", "web")])
            .pod(1, "api", &[("app", "api")])
            .pod(1, "db", &[("app", "db")]),
    );
    let (web, api, db) = (cluster.pod("web"), cluster.pod("api"), cluster.pod("db"));
    let work = std::env::temp_dir().join(format!("trustmap-agent-e2e-{}", cluster.prefix));
    let (manifests, baseline, state) = (
        work.join("manifests"),
        work.join("baseline"),
        work.join("state"),
    );
    for d in [&manifests, &baseline, &state] {
        std::fs::create_dir_all(d).expect("dirs");
    }
    let mut text = manifests::namespace("shop", &[("trustmap.dev/mode", "alert")]);
    for p in [web, api, db] {
        text += &manifests::pod(p, "shop", &PodOptions::default());
    }
    text += CURRENT_POLICY;
    std::fs::write(manifests.join("cluster.yaml"), text).expect("manifests");
    std::fs::write(
        baseline.join("accepted.yaml"),
        format!("{BASELINE_EXTRA}{CURRENT_POLICY}"),
    )
    .expect("baseline");
    let alerts_file = work.join("alerts.jsonl");

    let v4 = |p: &Pod, port| SocketAddr::new(IpAddr::V4(p.ipv4), port);
    let _servers = (
        TcpServer::start(&api.netns, v4(api, 8080)),
        TcpServer::start(&api.netns, v4(api, 9000)),
        TcpServer::start(&db.netns, v4(db, 5432)),
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let pattern = cluster.pod_interface_pattern();
    let args = |_: ()| {
        vec![
            "agent".to_owned(),
            "--inventory".into(),
            "manifests".into(),
            "--manifests".into(),
            manifests.display().to_string(),
            "--baseline".into(),
            baseline.display().to_string(),
            "--state-dir".into(),
            state.display().to_string(),
            "--alerts".into(),
            alerts_file.display().to_string(),
            "--listen".into(),
            listen.clone(),
            "--interface".into(),
            pattern.clone(),
        ]
    };
    let a = args(());
    let argv: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut agent = Agent::start_in("agent", &argv, false);
    let ready = http_get(port, "/readyz");
    assert!(ready.contains("200 OK"), "{ready}\n{}", agent.log_text());

    tcp_connect(&web.netns, v4(api, 8080)); // allowed now, inside the baseline
    tcp_connect(&api.netns, v4(db, 5432)); // allowed now, inside the baseline
    tcp_connect(&web.netns, v4(db, 5432)); // denied now, outside the baseline
    tcp_connect(&web.netns, v4(api, 9000)); // allowed now, outside the baseline
    tcp_connect(&web.netns, v4(db, 5432)); // same edge again: no second alert
    std::thread::sleep(Duration::from_millis(300));

    let metrics = http_get(port, "/metrics");
    assert_eq!(
        metric(&metrics, "trustmap_flows_observed_total"),
        5,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "trustmap_would_deny_flows_total"), 1);
    assert_eq!(metric(&metrics, "trustmap_unexpected_flows_total"), 2);
    assert_eq!(metric(&metrics, "trustmap_events_dropped_total"), 0);
    assert_eq!(metric(&metrics, "trustmap_attached_interfaces"), 3);
    assert_eq!(metric(&metrics, "trustmap_edges"), 4);
    assert!(agent.signal_and_wait(libc::SIGTERM), "{}", agent.log_text());

    let expected = set(&[
        ("would_deny", "shop/Pod/web", "shop/Pod/db", 5432),
        ("unexpected_flow", "shop/Pod/web", "shop/Pod/db", 5432),
        ("unexpected_flow", "shop/Pod/web", "shop/Pod/api", 9000),
    ]);
    assert_eq!(alerts(&alerts_file), expected);
    let first_run_lines = std::fs::read_to_string(&alerts_file)
        .unwrap_or_default()
        .lines()
        .count();
    assert_eq!(first_run_lines, 3, "one alert per edge and kind");

    // While the agent is down, api gets an ingress policy that admits web on 8080 only: the
    // edge web -> api:9000, allowed until now, would be denied.
    let mut text = std::fs::read_to_string(manifests.join("cluster.yaml")).expect("manifests");
    text += BASELINE_EXTRA;
    std::fs::write(manifests.join("cluster.yaml"), text).expect("manifests");

    // Restart: the graph survives, known edges do not alert again, and the edge whose verdict
    // changed while the agent was down does.
    let mut again = Agent::start_in("agent-restart", &argv, false);
    // The live graph page draws the restored edges too.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let page = loop {
        let page = http_get(port, "/graph");
        if page.contains("<svg") || std::time::Instant::now() > deadline {
            break page;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        page.contains("text/html")
            && page.contains("<svg")
            && page.contains("elkjs 0.12.1")
            && page.contains("\"group\":\"shop\""),
        "/graph is not the flow graph page:\n{}",
        &page[..page.len().min(2000)]
    );
    let flows = http_get(port, "/flows");
    for (src, dst, p) in [
        ("shop/Pod/web", "shop/Pod/api", 8080),
        ("shop/Pod/api", "shop/Pod/db", 5432),
        ("shop/Pod/web", "shop/Pod/db", 5432),
        ("shop/Pod/web", "shop/Pod/api", 9000),
    ] {
        assert!(
            flows.contains(&format!(
                r#""src":"{src}","dst":"{dst}","protocol":"TCP","port":{p}"#
            )),
            "edge {src} -> {dst}:{p} lost across the restart:\n{flows}"
        );
    }
    tcp_connect(&web.netns, v4(db, 5432));
    tcp_connect(&web.netns, v4(api, 9000));
    std::thread::sleep(Duration::from_millis(300));
    assert!(again.signal_and_wait(libc::SIGTERM));
    let lines = std::fs::read_to_string(&alerts_file)
        .unwrap_or_default()
        .lines()
        .count();
    assert_eq!(lines, 4, "{}", again.log_text());
    let mut after = expected.clone();
    after.insert((
        "would_deny".into(),
        "shop/Pod/web".into(),
        "shop/Pod/api".into(),
        9000,
    ));
    assert_eq!(alerts(&alerts_file), after);
    let _ = std::fs::remove_dir_all(&work);
}

/// Without `--baseline`, switching a namespace to `alert` freezes what was learned until then:
/// a flow learned before the switch does not alert after it, a new one does. The switch is an
/// annotation written into the manifests, which the agent reads again when they change.
#[test]
fn agent_freezes_the_learned_policies_when_a_namespace_switches_to_alert() {
    require_root();
    let cluster = Cluster::start(&ClusterSpec::new(1).pod(1, "web", &[("app", "web")]).pod(
        1,
        "api",
        &[("app", "api")],
    ));
    let (web, api) = (cluster.pod("web"), cluster.pod("api"));
    let work = std::env::temp_dir().join(format!("trustmap-agent-freeze-{}", cluster.prefix));
    let (manifests, state) = (work.join("manifests"), work.join("state"));
    for d in [&manifests, &state] {
        std::fs::create_dir_all(d).expect("dirs");
    }
    let write_manifests = |mode: Option<&str>| {
        let annotations: Vec<(&str, &str)> =
            mode.map(|m| ("trustmap.dev/mode", m)).into_iter().collect();
        let mut text = manifests::namespace("shop", &annotations);
        for p in [web, api] {
            text += &manifests::pod(p, "shop", &PodOptions::default());
        }
        std::fs::write(manifests.join("cluster.yaml"), text).expect("manifests");
    };
    write_manifests(None);
    let alerts_file = work.join("alerts.jsonl");
    let v4 = |p: &Pod, port| SocketAddr::new(IpAddr::V4(p.ipv4), port);
    let _servers = (
        TcpServer::start(&api.netns, v4(api, 8080)),
        TcpServer::start(&api.netns, v4(api, 9000)),
    );
    let port = free_port();
    let a = [
        "agent".to_owned(),
        "--inventory".into(),
        "manifests".into(),
        "--manifests".into(),
        manifests.display().to_string(),
        "--state-dir".into(),
        state.display().to_string(),
        "--alerts".into(),
        alerts_file.display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--refresh-interval".into(),
        "0.2".into(),
        "--interface".into(),
        cluster.pod_interface_pattern(),
    ];
    let argv: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut agent = Agent::start_in("agent-freeze", &argv, false);

    tcp_connect(&web.netns, v4(api, 8080)); // learned in observe mode
    let flows_have = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if http_get(port, "/flows").contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    assert!(
        flows_have(r#""src":"shop/Pod/web","dst":"shop/Pod/api","protocol":"TCP","port":8080"#),
        "the first edge was not learned:\n{}",
        agent.log_text()
    );

    write_manifests(Some("alert"));
    agent.wait_for_log("froze the learned policies", Duration::from_secs(10));
    let frozen = std::fs::read_to_string(state.join("baseline/shop.yaml")).expect("frozen file");
    assert!(frozen.contains("default-deny"), "{frozen}");

    tcp_connect(&web.netns, v4(api, 8080)); // learned before the switch: no alert
    tcp_connect(&web.netns, v4(api, 9000)); // new after the switch: alert
    assert!(
        flows_have(r#""src":"shop/Pod/web","dst":"shop/Pod/api","protocol":"TCP","port":9000"#),
        "{}",
        agent.log_text()
    );
    assert!(agent.signal_and_wait(libc::SIGTERM), "{}", agent.log_text());
    assert_eq!(
        alerts(&alerts_file),
        set(&[("unexpected_flow", "shop/Pod/web", "shop/Pod/api", 9000)]),
        "{}",
        agent.log_text()
    );

    // A restart keeps the frozen baseline rather than freezing the grown graph again.
    let again = Agent::start_in("agent-freeze-restart", &argv, false);
    tcp_connect(&web.netns, v4(api, 9000));
    std::thread::sleep(Duration::from_millis(300));
    drop(again);
    assert_eq!(
        std::fs::read_to_string(state.join("baseline/shop.yaml")).expect("frozen file"),
        frozen
    );
    let _ = std::fs::remove_dir_all(&work);
}
