//! DNS-aware capture: a pod's connection to an external address carries the names the pod
//! resolved to that address, over UDP and TCP, as the address behind a name moves; malformed
//! answers are counted and change nothing.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
};

use trustmap_e2e::{
    Agent, Cluster, ClusterSpec, DnsAnswer, DnsServer, TcpServer, dns_query, require_root,
    tcp_connect,
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
}
