//! `cargo xtask demo`: the product's story on an embedded example app.
//!
//! A shop (frontend, api, db, cache) and a DNS server run in a mini-cluster of network namespaces,
//! with an external payment host. A NetworkPolicy already exists and is too permissive in one
//! place and wrong in another. The demo observes the traffic with the real agent, learns
//! least-privilege policies, diffs them against the existing one, prints the would-deny
//! flags and the lint findings, and draws the flow map.

use std::{
    net::{IpAddr, SocketAddr},
    process::Command,
    time::Duration,
};

use trustmap_e2e::{
    Agent, Cluster, ClusterSpec, Pod, TcpServer, UdpServer,
    manifests::{self, PodOptions},
    tcp_connect, udp_request,
};

/// The policy the shop already has: api open to every namespace on every port (too wide), and a
/// db policy that expects a `tier: backend` label the api pods do not carry (wrong).
const EXISTING_POLICY: &str = r#"---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: api-open
  namespace: shop
spec:
  podSelector:
    matchLabels: {app: api}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: db-from-backend
  namespace: shop
spec:
  podSelector:
    matchLabels: {app: db}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {tier: backend}
    ports:
    - port: 5432
"#;

fn trustmap(args: &[&str]) -> (bool, String) {
    let bin = std::env::var_os("TRUSTMAP_BIN").unwrap_or_else(|| "target/debug/trustmap".into());
    let out = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running trustmap");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() && out.status.code() != Some(1) {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), text)
}

fn section(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

fn main() {
    trustmap_e2e::require_root();
    let spec = ClusterSpec::new(2)
        .pod(1, "frontend", &[("app", "frontend")])
        .pod(1, "api", &[("app", "api")])
        .pod(2, "db", &[("app", "db")])
        .pod(2, "cache", &[("app", "cache")])
        .pod(1, "coredns", &[("k8s-app", "kube-dns")])
        .external("payment");
    section("building the mini-cluster: 2 nodes, 5 pods, 1 external host");
    let cluster = Cluster::start(&spec);
    for p in cluster.pods() {
        println!(
            "   pod {:<9} node {}  {:<14} {:<18} veth {}",
            p.spec.name, p.spec.node, p.ipv4, p.ipv6, p.host_if
        );
    }
    let (pay_ns, pay_ip) = cluster.external("payment");
    println!("   external payment  {pay_ip}");

    // The manifests that describe the cluster (there is no API server here).
    let work = std::env::temp_dir().join(format!("trustmap-demo-{}", cluster.prefix));
    let (manifests_dir, current, learned) = (
        work.join("manifests"),
        work.join("current"),
        work.join("learned"),
    );
    for d in [&manifests_dir, &current] {
        std::fs::create_dir_all(d).expect("demo dirs");
    }
    let p = |n: &str| cluster.pod(n).clone();
    let (frontend, api, db, cache, dns) =
        (p("frontend"), p("api"), p("db"), p("cache"), p("coredns"));
    let mut text = manifests::namespace("shop", &[]) + &manifests::namespace("kube-system", &[]);
    let app = |v| [("app", v)];
    for (pd, ns, name, labels, ports) in [
        (&frontend, "shop", "frontend", app("frontend"), &[][..]),
        (
            &api,
            "shop",
            "api",
            app("api"),
            &[(8080, Some("http"), "TCP")][..],
        ),
        (
            &db,
            "shop",
            "db",
            app("db"),
            &[(5432, Some("postgres"), "TCP")][..],
        ),
        (
            &cache,
            "shop",
            "cache",
            app("cache"),
            &[(6379, Some("redis"), "TCP")][..],
        ),
        (
            &dns,
            "kube-system",
            "coredns",
            [("k8s-app", "kube-dns")],
            &[(53, Some("dns"), "UDP")][..],
        ),
    ] {
        text += &manifests::deployment(name, ns, &labels, ports);
        let owner = format!("{name}-5d8f7c");
        let options = PodOptions {
            owner: Some(("ReplicaSet", &owner)),
            ports,
        };
        text += &manifests::pod(pd, ns, &options);
    }
    std::fs::write(manifests_dir.join("cluster.yaml"), &text).expect("manifests");
    std::fs::write(current.join("existing.yaml"), EXISTING_POLICY).expect("policy");
    let all_manifests = [
        manifests_dir.display().to_string(),
        current.display().to_string(),
    ];

    let pattern = cluster.pod_interface_pattern();
    section(&format!(
        "1. observe: trustmap observe --interface '{pattern}'"
    ));
    let mut agent = Agent::start("demo", &["observe", "--interface", &pattern]);
    let v4 = |p: &Pod, port| SocketAddr::new(IpAddr::V4(p.ipv4), port);
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
    let flows = work.join("flows.jsonl");
    std::fs::copy(&agent.output, &flows).expect("keep flows");
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
    println!("   {} connection starts observed:", records.len());
    println!(
        "   {:<7} {:<24} {:<24} {:>5}  initiator",
        "proto", "src", "dst", "port"
    );
    for r in &records {
        let s = |f: &str| r[f].as_str().unwrap_or("").to_owned();
        println!(
            "   {:<7} {:<24} {:<24} {:>5}  {}",
            s("protocol"),
            format!("{} ({})", s("src"), name_of(&s("src"))),
            format!("{} ({})", s("dst"), name_of(&s("dst"))),
            r["port"]
                .as_u64()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            s("initiator"),
        );
    }
    println!(
        "   raw record: {}",
        records.first().map(|r| r.to_string()).unwrap_or_default()
    );

    section("2. learn: trustmap learn --manifests ... --flows flows.jsonl --output learned/");
    let flows_s = flows.display().to_string();
    let learned_s = learned.display().to_string();
    trustmap(&[
        "learn",
        "--manifests",
        &all_manifests[0],
        "--flows",
        &flows_s,
        "--output",
        &learned_s,
    ]);
    let (_, yaml) = trustmap(&[
        "learn",
        "--manifests",
        &all_manifests[0],
        "--flows",
        &flows_s,
    ]);
    for line in yaml.lines() {
        println!("   {line}");
    }

    section("3. would-deny: trustmap check --manifests ... --flows flows.jsonl -o table");
    let (_, table) = trustmap(&[
        "check",
        "--manifests",
        &all_manifests[0],
        &all_manifests[1],
        "--flows",
        &flows_s,
        "-o",
        "table",
    ]);
    for line in table.lines() {
        println!("   {line}");
    }

    section("4. review: trustmap diff --manifests ... --current current/ --learned learned/");
    let (_, diff) = trustmap(&[
        "diff",
        "--manifests",
        &all_manifests[0],
        "--current",
        &all_manifests[1],
        "--learned",
        &learned_s,
    ]);
    // What enforcing the current policies would break first, then the excess privilege.
    let mut lines: Vec<&str> = diff.lines().collect();
    if !lines.is_empty() {
        let header = lines.remove(0);
        lines.sort_by_key(|l| !l.starts_with("DENIED"));
        println!("   {header}");
    }
    for line in lines.iter().take(24) {
        println!("   {line}");
    }
    if lines.len() > 24 {
        println!(
            "   ... ({} rows in all; -o json for everything)",
            lines.len()
        );
    }
    section("5. audit: trustmap lint and trustmap blast-radius --flows flows.jsonl");
    let (_, lint) = trustmap(&["lint", "--manifests", &all_manifests[0], &all_manifests[1]]);
    for line in lint
        .lines()
        .filter(|l| l.starts_with("WARNING") || l.starts_with("ERROR") || l.starts_with("NOTE"))
    {
        println!("   {line}");
    }
    let (_, blast) = trustmap(&[
        "blast-radius",
        "--manifests",
        &all_manifests[0],
        &all_manifests[1],
        "--flows",
        &flows_s,
    ]);
    for line in blast.lines() {
        println!("   {line}");
    }
    section("6. map: trustmap graph --manifests ... --flows flows.jsonl -o html");
    let (ok, page) = trustmap(&[
        "graph",
        "--manifests",
        &all_manifests[0],
        &all_manifests[1],
        "--flows",
        &flows_s,
        "-o",
        "html",
    ]);
    let map = work.join("flow-map.html");
    if ok {
        std::fs::write(&map, page).expect("flow map");
        println!("   open {} in a browser", map.display());
    } else {
        println!("   trustmap graph failed: {page}");
    }
    println!("\n   files: {}", work.display());
}
