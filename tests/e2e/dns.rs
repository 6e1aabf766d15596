//! DNS-aware capture: a pod's connection to an external address carries the names the pod
//! resolved to that address, over UDP and TCP, as the address behind a name moves; malformed
//! answers are counted and change nothing; the agent's alerts name the destination.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
};

use trustmap_e2e::{
    Agent, Cluster, ClusterSpec, DnsAnswer, DnsServer, TcpServer, dns_query,
    manifests::{self, PodOptions},
    require_root, tcp_connect,
};

const NAME: &str = "api.payments.example";

#[test]
fn connections_carry_the_names_their_pod_resolved_as_the_address_moves() {
    require_root();
    let spec = ClusterSpec::new(2)
        .pod(1, "web", &[("app", "web")])
        .pod(2, "dns", &[("app", "dns")])
        .external("pay-a")
        .external("pay-b");
    let cluster = Cluster::start(&spec);
    let (web, dns) = (cluster.pod("web"), cluster.pod("dns"));
    let (a_ns, a_ip) = cluster.external("pay-a");
    let (b_ns, b_ip) = cluster.external("pay-b");
    let (IpAddr::V4(a4), IpAddr::V4(_)) = (a_ip, b_ip) else {
        panic!("external hosts are IPv4");
    };
    let server = SocketAddr::new(IpAddr::V4(dns.ipv4), 53);
    let zone = HashMap::from([
        (NAME.to_owned(), DnsAnswer::A(a4, 30)),
        ("loop.example".to_owned(), DnsAnswer::PointerLoop),
    ]);
    let resolver = DnsServer::start(&dns.netns, server, zone);
    let pay_a = TcpServer::start(a_ns, SocketAddr::new(a_ip, 443));
    let pay_b = TcpServer::start(b_ns, SocketAddr::new(b_ip, 443));
    let pattern = cluster.pod_interface_pattern();
    let mut agent = Agent::start("dns", &["observe", "--interface", &pattern]);

    // Resolve over UDP, connect; the provider moves; resolve over TCP, connect to the new
    // address. Then a malformed answer, and a connection to an address never resolved.
    dns_query(&web.netns, server, NAME, false);
    tcp_connect(&web.netns, SocketAddr::new(a_ip, 443));
    let IpAddr::V4(b4) = b_ip else { unreachable!() };
    resolver.set(NAME, DnsAnswer::A(b4, 30));
    dns_query(&web.netns, server, NAME, true);
    tcp_connect(&web.netns, SocketAddr::new(b_ip, 443));
    let bad = dns_query(&web.netns, server, "loop.example", false);
    assert!(bad.len() > 12, "the malformed answer reached the pod");
    // The dns pod never resolved anything: its connection to pay-a has no name.
    tcp_connect(&dns.netns, SocketAddr::new(a_ip, 443));

    let records = agent.stop();
    let names: BTreeMap<(String, String, u64), Vec<String>> = records
        .iter()
        .map(|r| {
            (
                (
                    r["src"].as_str().unwrap_or_default().to_owned(),
                    r["dst"].as_str().unwrap_or_default().to_owned(),
                    r["port"].as_u64().unwrap_or(0),
                ),
                r["dst_names"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|n| n.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            )
        })
        .collect();
    let (w, d) = (web.ipv4.to_string(), dns.ipv4.to_string());
    let named = || vec![NAME.to_owned()];
    let want = BTreeMap::from([
        ((w.clone(), a_ip.to_string(), 443), named()),
        ((w.clone(), b_ip.to_string(), 443), named()),
        ((d.clone(), a_ip.to_string(), 443), vec![]),
        ((w.clone(), d.clone(), 53), vec![]),
    ]);
    assert_eq!(names, want, "records: {records:#?}");
    assert_eq!(agent.final_counter("dns_responses"), 2);
    assert_eq!(agent.final_counter("dns_malformed"), 1);
    assert_eq!(agent.final_counter("dns_dropped"), 0);
    drop((pay_a, pay_b, resolver));

    learn_both_formats(&cluster.prefix, web, dns, &records, a_ip, b_ip);
}

/// From the records: the Cilium policy names the domain and allows it by name, not by
/// address; the NetworkPolicy covers both addresses in one rule, the name in its evidence;
/// `check` allows every recorded connection under the Cilium policies.
fn learn_both_formats(
    prefix: &str,
    web: &trustmap_e2e::Pod,
    dns: &trustmap_e2e::Pod,
    records: &[serde_json::Value],
    a_ip: IpAddr,
    b_ip: IpAddr,
) {
    let work = std::env::temp_dir().join(format!("trustmap-dns-learn-{prefix}"));
    let (dir, k8s, cilium) = (
        work.join("manifests"),
        work.join("k8s"),
        work.join("cilium"),
    );
    std::fs::create_dir_all(&dir).expect("dirs");
    // The resolver is the cluster DNS, in kube-system (which gets no policy).
    let text = manifests::namespace("shop", &[])
        + &manifests::namespace("kube-system", &[])
        + &manifests::pod(web, "shop", &PodOptions::default())
        + &manifests::pod(dns, "kube-system", &PodOptions::default());
    std::fs::write(dir.join("cluster.yaml"), text).expect("manifests");
    let flows = work.join("flows.jsonl");
    let lines: Vec<String> = records.iter().map(ToString::to_string).collect();
    std::fs::write(&flows, lines.join("\n") + "\n").expect("flows");
    for (format, out) in [("k8s", &k8s), ("cilium", &cilium)] {
        let (ok, _, stderr) = trustmap_e2e::run_trustmap(&[
            "learn",
            "--manifests",
            dir.to_str().unwrap(),
            "--flows",
            flows.to_str().unwrap(),
            "--dns-namespace",
            "kube-system",
            "--dns-label",
            "app=dns",
            "--policy-format",
            format,
            "--output",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "learn --policy-format {format}: {stderr}");
    }
    let read = |dir: &std::path::Path| -> serde_json::Value {
        let text = std::fs::read_to_string(dir.join("shop.web-pod-learned.yaml")).expect("policy");
        serde_yaml::from_str(&text).expect("YAML")
    };

    // Cilium: DNS through the proxy for the name (and the cluster's own names), 443 by name.
    let cnp = read(&cilium);
    assert_eq!(cnp["kind"], "CiliumNetworkPolicy");
    let dns_rule = serde_json::json!({
        "toEndpoints": [{"matchLabels": {"app": "dns", "k8s:io.kubernetes.pod.namespace": "kube-system"}}],
        "toPorts": [{
            "ports": [{"port": "53", "protocol": "TCP"}, {"port": "53", "protocol": "UDP"}],
            "rules": {"dns": [{"matchName": NAME}, {"matchPattern": "**.cluster.local"}]}
        }]
    });
    let fqdn_rule = serde_json::json!({
        "toFQDNs": [{"matchName": NAME}],
        "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]
    });
    assert_eq!(
        cnp["spec"]["egress"],
        serde_json::json!([dns_rule, fqdn_rule]),
        "{cnp:#}"
    );
    assert_eq!(cnp["spec"]["ingress"], serde_json::json!([{}]), "{cnp:#}");

    // NetworkPolicy: both addresses the name had, in one rule, the name in the evidence.
    let np = read(&k8s);
    let blocks = serde_json::json!([
        {"ipBlock": {"cidr": format!("{a_ip}/32")}},
        {"ipBlock": {"cidr": format!("{b_ip}/32")}}
    ]);
    let rule = np["spec"]["egress"]
        .as_array()
        .expect("egress rules")
        .iter()
        .find(|r| r["to"] == blocks)
        .unwrap_or_else(|| panic!("no rule for both addresses: {np:#}"));
    assert_eq!(
        rule["ports"],
        serde_json::json!([{"port": 443, "protocol": "TCP"}])
    );
    let evidence = np["metadata"]["annotations"]["trustmap.dev/evidence"]
        .as_str()
        .unwrap_or_default();
    for ip in [a_ip, b_ip] {
        assert!(
            evidence.contains(&format!("{ip} ({NAME}) 443/TCP: 1 connection(s)")),
            "{evidence}"
        );
    }

    // Every recorded connection is allowed by the learned Cilium policies, names included.
    let verdicts = crate::learn::verdicts(&dir, &cilium, &flows);
    assert_eq!(verdicts.len(), records.len());
    for (v, line) in &verdicts {
        assert_eq!(v, "allow", "{line}");
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// The accepted egress of `web`: DNS to the `dns` pod, nothing else.
const BASELINE: &str = r#"---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: dns}}}]
    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
"#;

#[test]
fn an_unexpected_external_flow_alert_names_the_domain() {
    require_root();
    let spec = ClusterSpec::new(1)
        .pod(1, "web", &[("app", "web")])
        .pod(1, "dns", &[("app", "dns")])
        .external("pay");
    let cluster = Cluster::start(&spec);
    let (web, dns) = (cluster.pod("web"), cluster.pod("dns"));
    let (pay_ns, pay_ip) = cluster.external("pay");
    let IpAddr::V4(pay4) = pay_ip else {
        panic!("external hosts are IPv4");
    };
    let work = std::env::temp_dir().join(format!("trustmap-dns-e2e-{}", cluster.prefix));
    let (dir, baseline, state) = (
        work.join("manifests"),
        work.join("baseline"),
        work.join("state"),
    );
    for d in [&dir, &baseline, &state] {
        std::fs::create_dir_all(d).expect("dirs");
    }
    let mut text = manifests::namespace("shop", &[("trustmap.dev/mode", "alert")]);
    for p in [web, dns] {
        text += &manifests::pod(p, "shop", &PodOptions::default());
    }
    std::fs::write(dir.join("cluster.yaml"), text).expect("manifests");
    std::fs::write(baseline.join("accepted.yaml"), BASELINE).expect("baseline");
    let alerts_file = work.join("alerts.jsonl");
    let server = SocketAddr::new(IpAddr::V4(dns.ipv4), 53);
    let _resolver = DnsServer::start(
        &dns.netns,
        server,
        HashMap::from([
            (NAME.to_owned(), DnsAnswer::A(pay4, 300)),
            ("loop.example".to_owned(), DnsAnswer::PointerLoop),
        ]),
    );
    let _pay = TcpServer::start(pay_ns, SocketAddr::new(pay_ip, 443));
    let pattern = cluster.pod_interface_pattern();
    let args = [
        "agent",
        "--inventory",
        "manifests",
        "--manifests",
        &dir.display().to_string(),
        "--baseline",
        &baseline.display().to_string(),
        "--state-dir",
        &state.display().to_string(),
        "--alerts",
        &alerts_file.display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--interface",
        &pattern,
    ]
    .map(str::to_owned);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Agent::start_in("dns-agent", &argv, false);

    dns_query(&web.netns, server, NAME, false);
    dns_query(&web.netns, server, "loop.example", false);
    tcp_connect(&web.netns, SocketAddr::new(pay_ip, 443));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let alert = loop {
        let text = std::fs::read_to_string(&alerts_file).unwrap_or_default();
        if let Some(a) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|a| a["kind"] == "unexpected_flow")
        {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no unexpected-flow alert; log:\n{}",
            agent.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(
        (
            &alert["src"],
            &alert["dst"],
            &alert["port"],
            &alert["dst_names"]
        ),
        (
            &serde_json::json!("shop/Pod/web"),
            &serde_json::json!(pay_ip.to_string()),
            &serde_json::json!(443),
            &serde_json::json!([NAME])
        ),
        "{alert}"
    );
    assert!(agent.signal_and_wait(libc::SIGTERM), "{}", agent.log_text());
}
