//! `cargo xtask demo`: the product's story on an embedded example app.
//!
//! A shop (frontend, api, db, cache) and a DNS server pod run in a mini-cluster of network
//! namespaces, with an external payment host. The real agent observes their traffic; the demo
//! prints what it saw.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use trustmap_e2e::{Agent, Cluster, ClusterSpec, TcpServer, UdpServer, tcp_connect, udp_request};

fn main() {
    trustmap_e2e::require_root();
    let spec = ClusterSpec::new(2)
        .pod(1, "frontend", &[("app", "frontend")])
        .pod(1, "api", &[("app", "api")])
        .pod(2, "db", &[("app", "db")])
        .pod(2, "cache", &[("app", "cache")])
        .pod(1, "coredns", &[("k8s-app", "kube-dns")])
        .external("payment");
    println!("== building the mini-cluster: 2 nodes, 5 pods, 1 external host");
    let cluster = Cluster::start(&spec);
    for p in cluster.pods() {
        println!(
            "   pod {:<9} node {}  {:<14} {:<18} veth {}",
            p.spec.name, p.spec.node, p.ipv4, p.ipv6, p.host_if
        );
    }
    let (pay_ns, pay_ip) = cluster.external("payment");
    println!("   external payment  {pay_ip}");

    let pattern = cluster.pod_interface_pattern();
    println!("\n== trustmap observe --interface '{pattern}'");
    let mut agent = Agent::start("demo", &["observe", "--interface", &pattern]);

    let pod = |n: &str| cluster.pod(n).clone();
    let (frontend, api, db, cache, dns) = (
        pod("frontend"),
        pod("api"),
        pod("db"),
        pod("cache"),
        pod("coredns"),
    );
    let v4 = |p: &trustmap_e2e::Pod, port| SocketAddr::new(IpAddr::V4(p.ipv4), port);
    let _servers = (
        TcpServer::start(&api.netns, v4(&api, 8080)),
        TcpServer::start(&db.netns, v4(&db, 5432)),
        TcpServer::start(&cache.netns, v4(&cache, 6379)),
        TcpServer::start(pay_ns, SocketAddr::new(pay_ip, 443)),
        UdpServer::start(&dns.netns, v4(&dns, 53)),
    );
    for _ in 0..3 {
        udp_request(&frontend.netns, v4(&dns, 53));
        tcp_connect(&frontend.netns, v4(&api, 8080));
    }
    udp_request(&api.netns, v4(&dns, 53));
    tcp_connect(&api.netns, v4(&db, 5432));
    tcp_connect(&api.netns, v4(&cache, 6379));
    tcp_connect(&api.netns, SocketAddr::new(pay_ip, 443));
    std::thread::sleep(Duration::from_millis(200));
    let records = agent.stop();

    let name_of = |ip: &str| -> String {
        cluster
            .pods()
            .iter()
            .find(|p| p.ipv4.to_string() == ip || p.ipv6.to_string() == ip)
            .map(|p| p.spec.name.clone())
            .unwrap_or_else(|| {
                if ip == pay_ip.to_string() {
                    "payment".into()
                } else {
                    ip.into()
                }
            })
    };
    println!(
        "\n== observed connection starts ({} records)",
        records.len()
    );
    println!(
        "   {:<7} {:<22} {:<22} {:>5}  {:<10} initiator",
        "proto", "src", "dst", "port", "seen on"
    );
    for r in &records {
        let s = |f: &str| r[f].as_str().unwrap_or("").to_owned();
        println!(
            "   {:<7} {:<22} {:<22} {:>5}  {:<10} {}",
            s("protocol"),
            format!("{} ({})", s("src"), name_of(&s("src"))),
            format!("{} ({})", s("dst"), name_of(&s("dst"))),
            r["port"]
                .as_u64()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            s("interface"),
            s("initiator"),
        );
    }
    println!(
        "\n   raw JSON line: {}",
        records.first().map(|r| r.to_string()).unwrap_or_default()
    );
}
