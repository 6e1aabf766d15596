//! `trustmap observe` reports exactly the connections made: right initiator, right server port,
//! each exactly once, nothing spurious.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use trustmap_e2e::{
    Agent, Cluster, ClusterSpec, PodSpec, TcpServer, UdpServer, craft_malformed_frames, icmp_echo,
    require_root, sctp_init, tcp_connect, tcp_connect_unanswered, udp_request,
};

/// The fields a test can predict: protocol, src, src_port, dst, port, interface, initiator.
pub(crate) type Key = (
    String,
    String,
    Option<u64>,
    String,
    Option<u64>,
    String,
    String,
);

pub(crate) fn key(r: &serde_json::Value) -> Key {
    let s = |f: &str| r[f].as_str().unwrap_or("").to_owned();
    (
        s("protocol"),
        s("src"),
        r["src_port"].as_u64(),
        s("dst"),
        r["port"].as_u64(),
        s("interface"),
        s("initiator"),
    )
}

pub(crate) fn expect(
    protocol: &str,
    src: IpAddr,
    src_port: Option<u16>,
    dst: IpAddr,
    port: Option<u16>,
    interface: &str,
    initiator: &str,
) -> Key {
    (
        protocol.into(),
        src.to_string(),
        src_port.map(u64::from),
        dst.to_string(),
        port.map(u64::from),
        interface.into(),
        initiator.into(),
    )
}

/// Counts records per key, so that duplicates show.
fn tally(records: &[serde_json::Value]) -> BTreeMap<Key, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(key(r)).or_insert(0) += 1;
    }
    m
}

pub(crate) fn assert_exact(records: &[serde_json::Value], expected: Vec<Key>) {
    let mut want = BTreeMap::new();
    for k in expected {
        *want.entry(k).or_insert(0) += 1;
    }
    let got = tally(records);
    if got != want {
        let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        let spurious: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        let dup: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
        panic!(
            "flow records differ\nmissing: {missing:#?}\nspurious: {spurious:#?}\n\
             duplicated: {dup:#?}\nall records: {records:#?}"
        );
    }
    for r in records {
        let first_seen = r["first_seen"].as_str().unwrap_or("");
        assert!(
            chrono_like(first_seen),
            "first_seen is not RFC 3339: {first_seen:?}"
        );
    }
}

fn chrono_like(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.contains('T') && s.ends_with('Z')
}

fn spec() -> ClusterSpec {
    ClusterSpec::new(2)
        .pod(1, "web", &[("app", "web")])
        .pod(1, "api", &[("app", "api")])
        .pod(2, "db", &[("app", "db")])
        .external("payment")
}

#[test]
fn observe_reports_exactly_the_connections_made() {
    require_root();
    let cluster = Cluster::start(&spec());
    let (web, api, db) = (cluster.pod("web"), cluster.pod("api"), cluster.pod("db"));
    let (pay_ns, pay_ip) = cluster.external("payment");
    let pattern = cluster.pod_interface_pattern();
    let mut agent = Agent::start("exact", &["observe", "--interface", &pattern]);

    let api_tcp = TcpServer::start(
        &api.netns,
        SocketAddr::new(IpAddr::V6("::".parse().unwrap()), 8080),
    );
    let db_tcp = TcpServer::start(&db.netns, SocketAddr::new(IpAddr::V4(db.ipv4), 5432));
    let pay_tcp = TcpServer::start(pay_ns, SocketAddr::new(pay_ip, 443));
    let api_udp = UdpServer::start(&api.netns, SocketAddr::new(IpAddr::V4(api.ipv4), 5353));
    let web_udp = UdpServer::start(&web.netns, SocketAddr::new(IpAddr::V6(web.ipv6), 6000));

    let mut expected = Vec::new();
    // Short-lived TCP connections, same node, IPv4: three of them, three records.
    for _ in 0..3 {
        let local = tcp_connect(&web.netns, SocketAddr::new(IpAddr::V4(api.ipv4), 8080));
        expected.push(expect(
            "TCP",
            IpAddr::V4(web.ipv4),
            Some(local.port()),
            IpAddr::V4(api.ipv4),
            Some(8080),
            &web.host_if,
            "syn",
        ));
    }
    // Across nodes, through the router.
    let local = tcp_connect(&api.netns, SocketAddr::new(IpAddr::V4(db.ipv4), 5432));
    expected.push(expect(
        "TCP",
        IpAddr::V4(api.ipv4),
        Some(local.port()),
        IpAddr::V4(db.ipv4),
        Some(5432),
        &api.host_if,
        "syn",
    ));
    // To an external host.
    let local = tcp_connect(&api.netns, SocketAddr::new(pay_ip, 443));
    expected.push(expect(
        "TCP",
        IpAddr::V4(api.ipv4),
        Some(local.port()),
        pay_ip,
        Some(443),
        &api.host_if,
        "syn",
    ));
    // IPv6 across nodes.
    let local = tcp_connect(&db.netns, SocketAddr::new(IpAddr::V6(api.ipv6), 8080));
    expected.push(expect(
        "TCP",
        IpAddr::V6(db.ipv6),
        Some(local.port()),
        IpAddr::V6(api.ipv6),
        Some(8080),
        &db.host_if,
        "syn",
    ));
    // A server that never answers: the SYN is retransmitted, the record appears once.
    let unanswered: IpAddr = "203.0.113.99".parse().unwrap();
    let port = tcp_connect_unanswered(
        &web.netns,
        SocketAddr::new(unanswered, 81),
        Duration::from_millis(2500),
    );
    expected.push(expect(
        "TCP",
        IpAddr::V4(web.ipv4),
        Some(port),
        unanswered,
        Some(81),
        &web.host_if,
        "syn",
    ));
    // UDP both ways: web asks api, api asks web; the answers are not new flows.
    let local = udp_request(&web.netns, SocketAddr::new(IpAddr::V4(api.ipv4), 5353));
    expected.push(expect(
        "UDP",
        IpAddr::V4(web.ipv4),
        Some(local.port()),
        IpAddr::V4(api.ipv4),
        Some(5353),
        &web.host_if,
        "first_seen",
    ));
    let local = udp_request(&api.netns, SocketAddr::new(IpAddr::V6(web.ipv6), 6000));
    expected.push(expect(
        "UDP",
        IpAddr::V6(api.ipv6),
        Some(local.port()),
        IpAddr::V6(web.ipv6),
        Some(6000),
        &api.host_if,
        "first_seen",
    ));
    // ICMP and ICMPv6 echo.
    icmp_echo(&web.netns, IpAddr::V4(db.ipv4), 0x1111);
    expected.push(expect(
        "ICMP",
        IpAddr::V4(web.ipv4),
        None,
        IpAddr::V4(db.ipv4),
        None,
        &web.host_if,
        "echo_request",
    ));
    icmp_echo(&db.netns, IpAddr::V6(api.ipv6), 0x2222);
    expected.push(expect(
        "ICMPv6",
        IpAddr::V6(db.ipv6),
        None,
        IpAddr::V6(api.ipv6),
        None,
        &db.host_if,
        "echo_request",
    ));
    // SCTP, crafted by hand: an INIT names the initiator.
    sctp_init(&web.netns, IpAddr::V4(api.ipv4), 5000, 3868);
    expected.push(expect(
        "SCTP",
        IpAddr::V4(web.ipv4),
        Some(5000),
        IpAddr::V4(api.ipv4),
        Some(3868),
        &web.host_if,
        "sctp_init",
    ));
    // Malformed frames: counted, never reported.
    let malformed = craft_malformed_frames(&web.netns, cluster.router_mac(1));

    std::thread::sleep(Duration::from_millis(200));
    let records = agent.stop();
    assert_exact(&records, expected);
    assert_eq!(
        agent.final_counter("malformed"),
        malformed as u64,
        "{}",
        agent.log_text()
    );
    assert_eq!(agent.final_counter("events_dropped"), 0);
    // Every ICMP record carries the echo request's type.
    for r in records.iter().filter(|r| r["protocol"] == "ICMP") {
        assert_eq!(
            (r["icmp_type"].as_u64(), r["icmp_code"].as_u64()),
            (Some(8), Some(0))
        );
    }
    drop((api_tcp, db_tcp, pay_tcp, api_udp, web_udp));
}

#[test]
fn observe_attaches_to_a_pod_created_while_running_and_detaches_when_it_goes() {
    require_root();
    let mut cluster = Cluster::start(&ClusterSpec::new(1).pod(1, "server", &[("app", "server")]));
    let server = cluster.pod("server").clone();
    let pattern = cluster.pod_interface_pattern();
    let mut agent = Agent::start("late-pod", &["observe", "--interface", &pattern]);
    let _tcp = TcpServer::start(
        &server.netns,
        SocketAddr::new(IpAddr::V4(server.ipv4), 9000),
    );

    let late = cluster.add_pod(PodSpec {
        name: "late".into(),
        node: 1,
        labels: BTreeMap::new(),
    });
    agent.wait_for_log(
        &format!("attached interface=\"{}\"", late.host_if),
        Duration::from_secs(5),
    );
    let local = tcp_connect(&late.netns, SocketAddr::new(IpAddr::V4(server.ipv4), 9000));

    let gone = std::process::Command::new("ip")
        .args(["link", "del", &late.host_if])
        .status()
        .expect("ip link del");
    assert!(gone.success());
    agent.wait_for_log(
        &format!("detached interface=\"{}\"", late.host_if),
        Duration::from_secs(5),
    );

    let records = agent.stop();
    assert_exact(
        &records,
        vec![expect(
            "TCP",
            IpAddr::V4(late.ipv4),
            Some(local.port()),
            IpAddr::V4(server.ipv4),
            Some(9000),
            &late.host_if,
            "syn",
        )],
    );
}

#[test]
fn observe_reports_connections_established_before_it_started_once() {
    require_root();
    let cluster = Cluster::start(&ClusterSpec::client_and_server());
    let (client, server) = (cluster.pod("client"), cluster.pod("server"));
    let addr = SocketAddr::new(IpAddr::V4(server.ipv4), 7443);
    // A connection that lives across the agent's start: listener, client and accepted socket
    // all stay open until the end of the test.
    let listener = trustmap_e2e::in_netns(&server.netns, move || {
        std::net::TcpListener::bind(addr).expect("bind")
    });
    let stream = trustmap_e2e::in_netns(&client.netns, move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("connect")
    });
    let (accepted, _) = listener.accept().expect("accept");
    let local = stream.local_addr().expect("local addr");

    let pattern = cluster.pod_interface_pattern();
    let mut agent = Agent::start("pre-existing", &["observe", "--interface", &pattern]);
    let records = agent.stop();
    assert_exact(
        &records,
        vec![expect(
            "TCP",
            IpAddr::V4(client.ipv4),
            Some(local.port()),
            IpAddr::V4(server.ipv4),
            Some(7443),
            "",
            "pre_existing",
        )],
    );
    drop((stream, accepted, listener));
}
