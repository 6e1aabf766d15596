//! Learn only what was answered: a pod makes the connections it needs, then scans its
//! neighbours (TCP refused by RST, TCP into a blackhole, UDP answered by ICMP port
//! unreachable). The capture reports each start with its outcome; `learn` allows exactly the
//! needed connections; `check` denies every scanned port; the agent raises one scan alert.

use std::{
    collections::BTreeSet,
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use trustmap_e2e::{
    Agent, Cluster, ClusterSpec, Pod, TcpServer, UdpServer, in_netns,
    manifests::{self, PodOptions},
    require_root, run_trustmap, tcp_connect, tcp_connect_unanswered, udp_request,
};

/// Sends one datagram from `netns` to `dst` and does not wait for anything.
fn udp_send(netns: &str, dst: SocketAddr) {
    in_netns(netns, move || {
        let s =
            UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)).expect("bind");
        s.send_to(b"probe", dst).expect("send");
    });
}

/// A UDP sink that never answers (statsd-like).
fn udp_sink(netns: &str, addr: SocketAddr) -> std::thread::JoinHandle<()> {
    let sock = in_netns(netns, move || UdpSocket::bind(addr)).expect("bind sink");
    sock.set_read_timeout(Some(Duration::from_millis(100))).ok();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..300 {
            let _ = sock.recv_from(&mut buf);
        }
    })
}

fn key(r: &serde_json::Value) -> String {
    format!(
        "{} {} -> {}:{} {}",
        r["protocol"].as_str().unwrap_or("?"),
        r["src"].as_str().unwrap_or("?"),
        r["dst"].as_str().unwrap_or("?"),
        r["port"],
        r["outcome"].as_str().unwrap_or("none")
    )
}

#[test]
fn scans_are_reported_and_alerted_but_never_learned() {
    require_root();
    let spec = ClusterSpec::new(2)
        .pod(1, "client", &[("app", "client")])
        .pod(2, "api", &[("app", "api")])
        .pod(2, "metrics", &[("app", "metrics")])
        .external("payment");
    let cluster = Cluster::start(&spec);
    let (client, api, metrics) = (
        cluster.pod("client"),
        cluster.pod("api"),
        cluster.pod("metrics"),
    );
    let (pay_ns, pay_ip) = cluster.external("payment");
    let v4 = |p: &Pod| IpAddr::V4(p.ipv4);
    let pattern = cluster.pod_interface_pattern();

    let dir = std::env::temp_dir().join(format!("trustmap-e2e-integrity-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let manifests = dir.join("cluster.yaml");
    let mut m = manifests::namespace("e2e", &[]);
    let pod = |p, owner, ports| manifests::pod(p, "e2e", &PodOptions { owner, ports });
    m += &pod(client, Some(("ReplicaSet", "client-6d9f")), &[]);
    m += &pod(
        api,
        Some(("ReplicaSet", "api-7c4b")),
        &[(8080, Some("http"), "TCP"), (5353, None, "UDP")],
    );
    m += &pod(
        metrics,
        Some(("StatefulSet", "metrics")),
        &[(8125, None, "UDP"), (9090, None, "TCP")],
    );
    fs::write(&manifests, &m).unwrap();
    let alerts = dir.join("alerts.jsonl");

    let mut observe = Agent::start(
        "integrity-observe",
        &["observe", "--interface", &pattern, "--answer-timeout", "2"],
    );
    let mut agent = Agent::start_in(
        "integrity-agent",
        &[
            "agent",
            "--manifests",
            manifests.to_str().unwrap(),
            "--interface",
            &pattern,
            "--answer-timeout",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            dir.join("state").to_str().unwrap(),
            "--alerts",
            alerts.to_str().unwrap(),
        ],
        false,
    );

    let _servers = (
        TcpServer::start(&api.netns, SocketAddr::new(v4(api), 8080)),
        UdpServer::start(&api.netns, SocketAddr::new(v4(api), 5353)),
        TcpServer::start(&metrics.netns, SocketAddr::new(v4(metrics), 9090)),
        TcpServer::start(pay_ns, SocketAddr::new(pay_ip, 443)),
    );
    let sink = udp_sink(&metrics.netns, SocketAddr::new(v4(metrics), 8125));

    // The 6 connections the client needs.
    tcp_connect(&client.netns, SocketAddr::new(v4(api), 8080));
    udp_request(&client.netns, SocketAddr::new(v4(api), 5353));
    tcp_connect(&client.netns, SocketAddr::new(v4(metrics), 9090));
    udp_send(&client.netns, SocketAddr::new(v4(metrics), 8125)); // one-way, like statsd
    tcp_connect(&client.netns, SocketAddr::new(pay_ip, 443));
    tcp_connect(&api.netns, SocketAddr::new(v4(metrics), 9090));

    // 22 probes: 10 TCP refused by RST, 6 TCP into a blackhole, 6 UDP refused by ICMP.
    let refused_tcp: Vec<u16> = (9000..9010).collect();
    let blackholed: Vec<u16> = (1..=6).collect();
    let refused_udp: Vec<u16> = (7000..7006).collect();
    for &p in &refused_tcp {
        let dst = SocketAddr::new(v4(api), p);
        in_netns(&client.netns, move || {
            let r = std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(2));
            assert!(r.is_err(), "port {p} should be closed");
        });
    }
    let blackhole = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 99));
    for p in &blackholed {
        tcp_connect_unanswered(
            &client.netns,
            SocketAddr::new(blackhole, *p),
            Duration::from_millis(50),
        );
    }
    for p in &refused_udp {
        udp_send(&client.netns, SocketAddr::new(v4(metrics), *p));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Past the answer timeout, so that the unanswered and one-way starts are reported.
    std::thread::sleep(Duration::from_secs(4));
    let records = observe.stop();
    let _ = sink.join();

    let got: BTreeSet<String> = records.iter().map(key).collect();
    let (c, a, me) = (v4(client), v4(api), v4(metrics));
    let mut want: BTreeSet<String> = [
        format!("TCP {c} -> {a}:8080 answered"),
        format!("UDP {c} -> {a}:5353 answered"),
        format!("TCP {c} -> {me}:9090 answered"),
        format!("UDP {c} -> {me}:8125 one_way"),
        format!("TCP {c} -> {pay_ip}:443 answered"),
        format!("TCP {a} -> {me}:9090 answered"),
    ]
    .into();
    want.extend(
        refused_tcp
            .iter()
            .map(|p| format!("TCP {c} -> {a}:{p} refused")),
    );
    want.extend(
        blackholed
            .iter()
            .map(|p| format!("TCP {c} -> {blackhole}:{p} unanswered")),
    );
    want.extend(
        refused_udp
            .iter()
            .map(|p| format!("UDP {c} -> {me}:{p} refused")),
    );
    assert_eq!(got, want, "records: {records:#?}");
    assert_eq!(records.len(), 28, "one record per connection start");

    let flows = dir.join("flows.jsonl");
    fs::write(
        &flows,
        records.iter().map(|r| format!("{r}\n")).collect::<String>(),
    )
    .unwrap();
    let learned = dir.join("learned");
    let (ok, _, stderr) = run_trustmap(&[
        "learn",
        "--manifests",
        manifests.to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
        "--output",
        learned.to_str().unwrap(),
    ]);
    assert!(ok, "learn failed: {stderr}");
    let client_policy =
        fs::read_to_string(learned.join("e2e.client-deployment-learned.yaml")).unwrap();
    assert!(
        client_policy.contains("one-way"),
        "the evidence marks the statsd flow one-way:\n{client_policy}"
    );

    let (ok, stdout, stderr) = run_trustmap(&[
        "check",
        "--manifests",
        manifests.to_str().unwrap(),
        learned.to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
    ]);
    assert!(ok, "check failed: {stderr}");
    let mut allowed = BTreeSet::new();
    let mut denied = BTreeSet::new();
    for (line, r) in stdout.lines().zip(&records) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        match v["verdict"].as_str() {
            Some("allow") => allowed.insert(key(r)),
            _ => denied.insert(key(r)),
        };
    }
    assert_eq!(
        allowed.len(),
        6,
        "exactly the needed connections are allowed: {allowed:#?}"
    );
    assert!(
        allowed
            .iter()
            .all(|k| k.ends_with("answered") || k.ends_with("one_way"))
    );
    assert_eq!(
        denied.len(),
        22,
        "every scanned port is denied: {denied:#?}"
    );

    // The agent raised one scan alert, naming the ports.
    std::thread::sleep(Duration::from_secs(1));
    assert!(agent.signal_and_wait(libc::SIGINT), "{}", agent.log_text());
    let text = fs::read_to_string(&alerts).unwrap_or_default();
    let scans: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|a| a["kind"] == "scan")
        .collect();
    assert_eq!(scans.len(), 1, "alerts:\n{text}");
    let ports: BTreeSet<u64> = scans[0]["explanation"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    // Raised at the 10th distinct target (the default threshold): the refused TCP ports,
    // which the client tried first.
    assert_eq!(ports, (9000..9010).collect::<BTreeSet<u64>>());
    assert_eq!(scans[0]["explanation"]["refused"], 10);
    assert_eq!(scans[0]["src"], "e2e/Deployment/client");
    fs::remove_dir_all(&dir).unwrap();
}
