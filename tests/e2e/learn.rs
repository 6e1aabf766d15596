//! Observe → learn → check, end to end: traffic in the netns cluster is recorded by
//! `trustmap observe`, `trustmap learn` writes policies from the records and manifests that
//! describe the pods, and `trustmap check` allows every observed flow and denies unobserved
//! probes (other ports, protocols, peers).

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use trustmap_e2e::{
    Agent, Cluster, ClusterSpec, Pod, TcpServer, UdpServer,
    manifests::{self, PodOptions},
    require_root, run_trustmap, tcp_connect, udp_request,
};

pub(crate) fn verdicts(
    manifests: &Path,
    policies: &Path,
    flows: &Path,
) -> Vec<(String, serde_json::Value)> {
    let (ok, stdout, stderr) = run_trustmap(&[
        "check",
        "--manifests",
        manifests.to_str().unwrap(),
        policies.to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
    ]);
    assert!(ok, "check failed: {stderr}");
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("check writes JSON lines");
            (v["verdict"].as_str().unwrap_or("error").to_owned(), v)
        })
        .collect()
}

#[test]
fn learned_policies_allow_observed_flows_and_deny_unobserved_probes() {
    require_root();
    let spec = ClusterSpec::new(2)
        .pod(1, "web", &[("app", "web")])
        .pod(1, "api", &[("app", "api")])
        .pod(2, "db", &[("app", "db")])
        .external("payment");
    let cluster = Cluster::start(&spec);
    let (web, api, db) = (cluster.pod("web"), cluster.pod("api"), cluster.pod("db"));
    let (pay_ns, pay_ip) = cluster.external("payment");
    let pattern = cluster.pod_interface_pattern();
    let mut agent = Agent::start("learn", &["observe", "--interface", &pattern]);

    let v4 = |p: &Pod| IpAddr::V4(p.ipv4);
    let _servers = (
        TcpServer::start(&api.netns, SocketAddr::new(v4(api), 8080)),
        TcpServer::start(&db.netns, SocketAddr::new(v4(db), 5432)),
        TcpServer::start(pay_ns, SocketAddr::new(pay_ip, 443)),
        UdpServer::start(&api.netns, SocketAddr::new(v4(api), 5353)),
    );
    for _ in 0..2 {
        tcp_connect(&web.netns, SocketAddr::new(v4(api), 8080));
    }
    tcp_connect(&api.netns, SocketAddr::new(v4(db), 5432));
    tcp_connect(&api.netns, SocketAddr::new(pay_ip, 443));
    udp_request(&web.netns, SocketAddr::new(v4(api), 5353));
    std::thread::sleep(Duration::from_millis(200));
    let records = agent.stop();
    assert_eq!(records.len(), 5, "records: {records:#?}");

    let dir = std::env::temp_dir().join(format!("trustmap-e2e-learn-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let flows = dir.join("flows.jsonl");
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    fs::write(&flows, text).unwrap();
    let manifests = dir.join("cluster.yaml");
    let mut m = manifests::namespace("e2e", &[]);
    let pod = |p, owner, ports| manifests::pod(p, "e2e", &PodOptions { owner, ports });
    m += &pod(web, Some(("ReplicaSet", "web-5f7c8")), &[]);
    m += &pod(
        api,
        None,
        &[(8080, Some("http"), "TCP"), (5353, None, "UDP")],
    );
    m += &pod(db, Some(("StatefulSet", "db")), &[(5432, None, "TCP")]);
    fs::write(&manifests, m).unwrap();

    let learned = dir.join("learned");
    let args = [
        "learn",
        "--manifests",
        manifests.to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
        "--output",
        learned.to_str().unwrap(),
    ];
    let (ok, _, stderr) = run_trustmap(&args);
    assert!(ok, "learn failed: {stderr}");
    let mut files: Vec<String> = fs::read_dir(&learned)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "e2e.api-pod-learned.yaml",
            "e2e.db-statefulset-learned.yaml",
            "e2e.web-deployment-learned.yaml",
            "kustomization.yaml"
        ]
    );
    // A second run writes the same bytes.
    let first = fs::read_to_string(learned.join("e2e.api-pod-learned.yaml")).unwrap();
    assert!(run_trustmap(&args).0);
    assert_eq!(
        first,
        fs::read_to_string(learned.join("e2e.api-pod-learned.yaml")).unwrap()
    );
    assert!(first.contains("port: http"), "{first}");

    for (verdict, v) in verdicts(&manifests, &learned, &flows) {
        assert_eq!(verdict, "allow", "observed flow not allowed: {v:#}");
    }

    let probe = |proto: &str, src: IpAddr, dst: IpAddr, port: u16| {
        format!(r#"{{"protocol":"{proto}","src":"{src}","dst":"{dst}","port":{port}}}"#)
    };
    let probes = [
        probe("TCP", v4(web), v4(api), 8081), // other port
        probe("UDP", v4(web), v4(api), 8080), // other protocol
        probe("TCP", v4(web), v4(db), 5432),  // other peer
        probe("TCP", v4(db), v4(api), 8080),  // other direction
        probe("TCP", v4(api), pay_ip, 444),   // other external port
        probe("TCP", v4(web), pay_ip, 443),   // other source to the external
        probe("TCP", v4(api), "203.0.113.99".parse().unwrap(), 443), // other external
        probe("TCP", IpAddr::V6(web.ipv6), IpAddr::V6(db.ipv6), 5432), // IPv6, other peer
    ];
    let probe_file = dir.join("probes.jsonl");
    fs::write(&probe_file, probes.join("\n") + "\n").unwrap();
    for (i, (verdict, v)) in verdicts(&manifests, &learned, &probe_file)
        .into_iter()
        .enumerate()
    {
        assert_eq!(verdict, "deny", "probe {} allowed: {v:#}", probes[i]);
    }
    fs::remove_dir_all(&dir).unwrap();
}
