//! Table tests, one per lint rule, each named for what it pins. The base cluster is clean and
//! strict (no finding); each test plants one mistake by adding or replacing a policy (a later
//! policy with the same name replaces an earlier one) and checks exactly what is reported.

use std::path::Path;

use super::{Finding, LintInput, LintOptions, ObservedConnection, Sources, lint};
use crate::{
    flow::{Endpoint, Protocol},
    inventory::{Loaded, Manifests},
    policy::Connection,
};

/// shop: web-1, web-2 (app=web, http 8080, metrics 9100, scraped), db (app=db, 5432), with
/// Services web and db; front: gateway; monitoring: prometheus; kube-system: coredns.
/// Policies: default-deny both ways and DNS in every namespace but kube-system, and exactly
/// gateway → web 8080, web → db 5432, prometheus → web 9100.
const BASE: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: front}
---
apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  labels: {app: web}
  annotations: {prometheus.io/scrape: "true", prometheus.io/port: "9100"}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}, {name: metrics, containerPort: 9100}]}]}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-2
  namespace: shop
  labels: {app: web}
  annotations: {prometheus.io/scrape: "true", prometheus.io/port: "9100"}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}, {name: metrics, containerPort: 9100}]}]}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {containers: [{name: c, ports: [{containerPort: 5432}]}]}
status: {podIP: 10.0.1.3}
---
apiVersion: v1
kind: Pod
metadata: {name: gateway, namespace: front, labels: {app: gateway}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.2.1}
---
apiVersion: v1
kind: Pod
metadata: {name: prometheus, namespace: monitoring, labels: {app.kubernetes.io/name: prometheus}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.3.1}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec: {containers: [{name: c, ports: [{containerPort: 53, protocol: UDP}]}]}
status: {podIP: 10.0.4.1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {selector: {app: db}, ports: [{port: 5432}]}
"#;

fn np(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}\n"
    )
}

fn strict() -> String {
    let mut s = String::new();
    for ns in ["shop", "front", "monitoring"] {
        s += &np(
            ns,
            "default-deny",
            "  podSelector: {}\n  policyTypes: [Ingress, Egress]",
        );
        s += &np(
            ns,
            "allow-dns",
            "  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
      podSelector: {matchLabels: {k8s-app: kube-dns}}
    ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]",
        );
    }
    s += &np(
        "shop",
        "web",
        "  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: front}}
      podSelector: {matchLabels: {app: gateway}}
    ports: [{port: 8080}]
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
      podSelector: {matchLabels: {app.kubernetes.io/name: prometheus}}
    ports: [{port: 9100}]
  egress:
  - to:
    - podSelector: {matchLabels: {app: db}}
    ports: [{port: 5432}]",
    );
    s += &np(
        "shop",
        "db",
        "  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
    ports: [{port: 5432}]",
    );
    s += &np(
        "front",
        "gateway",
        "  podSelector: {matchLabels: {app: gateway}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}
      podSelector: {matchLabels: {app: web}}
    ports: [{port: 8080}]",
    );
    s += &np(
        "monitoring",
        "prometheus",
        "  podSelector: {matchLabels: {app.kubernetes.io/name: prometheus}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}
      podSelector: {matchLabels: {app: web}}
    ports: [{port: 9100}]",
    );
    s
}

struct Run {
    loaded: Loaded,
    sources: Sources,
}

fn load(extra: &str) -> Run {
    let mut m = Manifests::new();
    let mut sources = Sources::new();
    for (file, text) in [
        ("base.yaml", BASE.to_owned()),
        ("policies.yaml", strict() + extra),
    ] {
        m.add_text(Path::new(file), &text).expect("manifests load");
        sources.add_text(Path::new(file), &text);
    }
    Run {
        loaded: m.finish(),
        sources,
    }
}

fn run_with(extra: &str, observed: Option<&[(&str, &str, Protocol, u16)]>) -> Vec<Finding> {
    let r = load(extra);
    let inv = &r.loaded.inventory;
    let conns: Option<Vec<ObservedConnection>> = observed.map(|o| {
        o.iter()
            .map(|(s, d, proto, port)| {
                let end = |e: &str| inv.resolve(&e.parse::<Endpoint>().unwrap()).unwrap();
                ObservedConnection {
                    connection: Connection {
                        src: end(s),
                        dst: end(d),
                        protocol: *proto,
                        port: Some(*port),
                        dst_names: &[],
                    },
                    src_peer: crate::identity::Peer::ClusterDns,
                    dst_peer: crate::identity::Peer::ClusterDns,
                    src: (*s).to_owned(),
                    dst: (*d).to_owned(),
                    count: 1,
                }
            })
            .collect()
    });
    let opts = LintOptions::default();
    lint(&LintInput {
        inventory: inv,
        policies: &r.loaded.policies,
        admin: &r.loaded.admin,
        sources: &r.sources,
        observed: conns.as_deref(),
        options: &opts,
    })
}

fn run(extra: &str) -> Vec<Finding> {
    run_with(extra, None)
}

fn codes(f: &[Finding]) -> Vec<&'static str> {
    let mut v: Vec<&str> = f.iter().map(|f| f.rule.info().code).collect();
    v.sort();
    v
}

fn assert_codes(f: &[Finding], want: &[&str]) {
    assert_eq!(codes(f), want, "{}", super::to_table(f));
}

#[test]
fn clean_strict_policies_have_no_finding() {
    assert_codes(&run(""), &[]);
}

#[test]
fn missing_default_deny_ingress_is_reported_when_policy_types_name_only_egress() {
    let f = run(&np(
        "shop",
        "default-deny",
        "  podSelector: {}\n  policyTypes: [Egress]",
    ));
    assert_codes(&f, &["TM001"]);
    assert!(
        f[0].message.contains("covers only Egress"),
        "{}",
        f[0].message
    );
    assert!(
        f[0].fix_yaml
            .as_ref()
            .unwrap()
            .contains("policyTypes: [Ingress]")
    );
    // Points at the policyTypes line of the one-sided default deny.
    let loc = f[0].location.as_ref().unwrap();
    assert_eq!(loc.file, Path::new("policies.yaml"));
}

#[test]
fn missing_default_deny_egress_is_reported_when_policy_types_are_left_out() {
    // Without policyTypes and without egress rules, a policy isolates ingress only.
    let mut planted = np("front", "default-deny", "  podSelector: {}");
    // allow-dns selects every pod for egress too: narrow it so that it no longer does.
    planted += &np(
        "front",
        "allow-dns",
        "  podSelector: {matchLabels: {app: gateway}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
      podSelector: {matchLabels: {k8s-app: kube-dns}}
    ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]",
    );
    let f = run(&planted);
    assert_codes(&f, &["TM002"]);
    assert_eq!(f[0].subject.object.as_deref(), Some("namespace front"));
}

#[test]
fn egress_deny_without_dns_is_reported_once_per_namespace() {
    let f = run(&np(
        "shop",
        "allow-dns",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}\n      podSelector: {matchLabels: {k8s-app: kube-dns}}\n    ports: [{protocol: TCP, port: 53}]",
    ));
    assert_codes(&f, &["TM003"]);
    assert!(
        f[0].message.contains("shop/Pod") || f[0].message.contains("shop/web-1"),
        "{}",
        f[0].message
    );
    assert!(
        f[0].fix_yaml
            .as_ref()
            .unwrap()
            .contains("protocol: UDP, port: 53")
    );
}

#[test]
fn metrics_scrape_blocked_by_target_ingress_is_reported_with_an_ingress_fix() {
    let f = run(&np(
        "shop",
        "web",
        "  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: front}}
      podSelector: {matchLabels: {app: gateway}}
    ports: [{port: 8080}]
  egress:
  - to:
    - podSelector: {matchLabels: {app: db}}
    ports: [{port: 5432}]",
    ));
    // The prometheus egress rule to web now allows nothing web accepts: scrape blocked.
    assert_codes(&f, &["TM004", "TM004"]);
    assert!(
        f.iter()
            .all(|x| x.subject.direction == Some(crate::policy::Direction::Ingress))
    );
    assert!(f[0].fix_yaml.as_ref().unwrap().contains("port: 9100"));
}

#[test]
fn metrics_scrape_blocked_by_scraper_egress_is_reported() {
    let f = run(&np(
        "monitoring",
        "prometheus",
        "  podSelector: {matchLabels: {app.kubernetes.io/name: prometheus}}\n  policyTypes: [Egress]\n  egress: []",
    ));
    assert_codes(&f, &["TM004", "TM004"]);
    assert!(
        f.iter()
            .all(|x| x.subject.direction == Some(crate::policy::Direction::Egress))
    );
}

#[test]
fn service_monitor_targets_resolve_through_the_service_port() {
    let monitor = "---
apiVersion: v1
kind: Service
metadata: {name: db-metrics, namespace: shop, labels: {monitor: db}}
spec: {selector: {app: db}, ports: [{name: metrics, port: 9187, targetPort: 9187}]}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: db, namespace: monitoring}
spec:
  namespaceSelector: {matchNames: [shop]}
  selector: {matchLabels: {monitor: db}}
  endpoints: [{port: metrics}]
";
    let f = run(monitor);
    // Both sides deny prometheus -> db on 9187.
    assert_codes(&f, &["TM004", "TM004"]);
    assert!(
        f[0].message.contains("ServiceMonitor monitoring/db"),
        "{}",
        f[0].message
    );
}

#[test]
fn namespace_selector_everything_is_reported_as_every_namespace() {
    let f = run(&np(
        "shop",
        "db",
        "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - namespaceSelector: {}\n      podSelector: {matchLabels: {app: web}}\n    ports: [{port: 5432}]",
    ));
    assert_codes(&f, &["TM010"]);
    assert_eq!(f[0].subject.peer, Some(0));
    // Line 11 of the planted document: `- namespaceSelector: {}`.
    assert_eq!(f[0].location.as_ref().unwrap().line, planted_line(11));
}

/// The line of policies.yaml holding line `line` (1-based) of the first planted document,
/// which follows the strict policies and its `---`.
fn planted_line(line: usize) -> usize {
    strict().lines().count() + 1 + line
}

#[test]
fn pod_selector_everything_in_a_peer_is_reported_as_every_pod_of_the_namespace() {
    let f = run(&np(
        "shop",
        "db",
        "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {}\n    ports: [{port: 5432}]",
    ));
    assert_codes(&f, &["TM011"]);
}

#[test]
fn ip_block_default_route_is_reported() {
    let f = run(&np(
        "front",
        "gateway",
        "  podSelector: {matchLabels: {app: gateway}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}\n      podSelector: {matchLabels: {app: web}}\n    ports: [{port: 8080}]\n  - to:\n    - ipBlock: {cidr: 0.0.0.0/0}\n    ports: [{port: 443}]",
    ));
    assert_codes(&f, &["TM012"]);
    assert_eq!(f[0].subject.rule, Some(1));
}

#[test]
fn ip_block_covering_the_pod_cidr_is_reported() {
    let f = run(&np(
        "shop",
        "db",
        "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8}\n    ports: [{port: 5432}]",
    ));
    assert_codes(&f, &["TM013"]);
    assert!(
        f[0].fix_yaml
            .as_ref()
            .unwrap()
            .contains("except: [10.0.0.0/16]")
    );
}

#[test]
fn ip_block_with_the_pod_cidr_excepted_is_not_reported() {
    let f = run(&np(
        "front",
        "gateway",
        "  podSelector: {matchLabels: {app: gateway}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}\n      podSelector: {matchLabels: {app: web}}\n    ports: [{port: 8080}]\n  - to:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/16]}\n    ports: [{port: 443}]",
    ));
    assert_codes(&f, &[]);
}

#[test]
fn rule_without_ports_is_reported() {
    let f = run(&np(
        "shop",
        "db",
        "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {app: web}}",
    ));
    assert_codes(&f, &["TM014"]);
}

#[test]
fn rule_without_peers_is_reported() {
    let f = run(&np(
        "shop",
        "db",
        "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Ingress]\n  ingress:\n  - ports: [{port: 5432}]",
    ));
    assert_codes(&f, &["TM015"]);
}

#[test]
fn selector_matching_most_of_the_cluster_is_reported() {
    let f = run(&np(
        "shop",
        "db",
        "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [shop, front, monitoring, kube-system]}]}\n      podSelector: {matchExpressions: [{key: app, operator: Exists}]}\n    ports: [{port: 5432}]",
    ));
    assert_codes(&f, &["TM016"]);
    assert!(
        f[0].message.contains("4 of the cluster's 6 pods"),
        "{}",
        f[0].message
    );
}

#[test]
fn pod_selector_without_namespace_selector_for_pods_of_another_namespace_is_reported() {
    let f = run(&np(
        "shop",
        "web",
        "  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: gateway}}
    ports: [{port: 8080}]
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
      podSelector: {matchLabels: {app.kubernetes.io/name: prometheus}}
    ports: [{port: 9100}]
  egress:
  - to:
    - podSelector: {matchLabels: {app: db}}
    ports: [{port: 5432}]",
    ));
    assert_codes(&f, &["TM020"]);
    assert!(
        f[0].fix_yaml
            .as_ref()
            .unwrap()
            .contains("kubernetes.io/metadata.name: front")
    );
}

#[test]
fn policy_selecting_no_pod_is_reported() {
    let f = run(&np(
        "shop",
        "typo",
        "  podSelector: {matchLabels: {app: wbe}}\n  policyTypes: [Ingress]",
    ));
    assert_codes(&f, &["TM030"]);
}

#[test]
fn peer_matching_no_pod_is_reported() {
    let f = run(&np(
        "shop",
        "db",
        "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {app: web}}\n    - namespaceSelector: {matchLabels: {team: nobody}}\n      podSelector: {matchLabels: {app: web}}\n    ports: [{port: 5432}]",
    ));
    assert_codes(&f, &["TM031"]);
    assert_eq!(f[0].subject.peer, Some(1));
}

#[test]
fn rule_covered_by_a_broader_rule_for_the_same_pods_is_reported() {
    let f = run(&np(
        "shop",
        "db-extra",
        "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {app: web}}\n    ports: [{port: 5432}]",
    ));
    // Identical to shop/db's rule: only the later one (by policy name) is reported.
    assert_codes(&f, &["TM032"]);
    assert_eq!(f[0].subject.policy.as_deref(), Some("shop/db-extra"));
}

#[test]
fn internal_service_whose_pods_are_not_isolated_for_ingress_is_reported() {
    let extra = "---
apiVersion: v1
kind: Pod
metadata: {name: cache, namespace: shop, labels: {app: cache}}
spec: {containers: [{name: c, ports: [{containerPort: 6379}]}]}
status: {podIP: 10.0.1.4}
---
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: shop}
spec: {selector: {app: cache}, ports: [{port: 6379}]}
";
    // The namespace default-deny isolates cache: nothing to report.
    assert_codes(&run(extra), &[]);
    let f = run(&(extra.to_owned()
        + &np(
            "shop",
            "default-deny",
            "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress, Egress]",
        )));
    let c = codes(&f);
    assert!(c.contains(&"TM040"), "{}", super::to_table(&f));
    let svc = f.iter().find(|x| x.rule.info().code == "TM040").unwrap();
    assert!(
        svc.message.contains("Service shop/cache"),
        "{}",
        svc.message
    );
}

#[test]
fn service_behind_an_ingress_is_not_internal() {
    let extra = "---
apiVersion: v1
kind: Pod
metadata: {name: cache, namespace: shop, labels: {app: cache}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.1.4}
---
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: shop}
spec: {selector: {app: cache}, ports: [{port: 6379}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: cache, namespace: shop}
spec: {defaultBackend: {service: {name: cache, port: {number: 6379}}}}
";
    let f = run(&(extra.to_owned()
        + &np(
            "shop",
            "default-deny",
            "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress, Egress]",
        )));
    assert!(!codes(&f).contains(&"TM040"), "{}", super::to_table(&f));
}

const TRAFFIC: &[(&str, &str, Protocol, u16)] = &[
    ("front/gateway", "shop/web-1", Protocol::Tcp, 8080),
    ("shop/web-1", "shop/db", Protocol::Tcp, 5432),
    ("monitoring/prometheus", "shop/web-1", Protocol::Tcp, 9100),
    ("shop/web-1", "kube-system/coredns", Protocol::Udp, 53),
    ("front/gateway", "kube-system/coredns", Protocol::Udp, 53),
    (
        "monitoring/prometheus",
        "kube-system/coredns",
        Protocol::Udp,
        53,
    ),
    ("shop/db", "kube-system/coredns", Protocol::Udp, 53),
];

#[test]
fn observed_traffic_using_every_rule_leaves_only_unused_tcp_dns_ports() {
    let f = run_with("", Some(TRAFFIC));
    // DNS over TCP was never seen: the DNS rules' TCP 53 is unused in each namespace.
    assert_codes(&f, &["TM051", "TM051", "TM051"]);
    assert!(f[0].message.contains("53/TCP"), "{}", f[0].message);
}

#[test]
fn rule_no_observed_connection_used_is_reported() {
    let traffic: Vec<_> = TRAFFIC
        .iter()
        .filter(|t| !t.0.starts_with("monitoring"))
        .copied()
        .collect();
    let f = run_with("", Some(&traffic));
    let unused: Vec<String> = f
        .iter()
        .filter(|x| x.rule.info().code == "TM050")
        .map(|x| {
            format!(
                "{} {:?}",
                x.subject.policy.as_deref().unwrap(),
                x.subject.rule
            )
        })
        .collect();
    let mut unused = unused;
    unused.sort();
    assert_eq!(
        unused,
        [
            "monitoring/allow-dns Some(0)",
            "monitoring/prometheus Some(0)",
            "shop/web Some(1)"
        ],
        "{}",
        super::to_table(&f)
    );
}

#[test]
fn ports_and_peers_of_a_broad_rule_are_narrowed_to_what_was_observed() {
    let f = run_with(
        &np(
            "shop",
            "db",
            "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Ingress]\n  ingress:\n  - {}",
        ),
        Some(TRAFFIC),
    );
    let db: Vec<&Finding> = f
        .iter()
        .filter(|x| x.subject.policy.as_deref() == Some("shop/db"))
        .collect();
    let c: Vec<&str> = db.iter().map(|x| x.rule.info().code).collect();
    assert_eq!(
        c,
        ["TM014", "TM015", "TM051", "TM052"],
        "{}",
        super::to_table(&f)
    );
    let ports = db.iter().find(|x| x.rule.info().code == "TM051").unwrap();
    assert_eq!(
        ports.fix_yaml.as_deref(),
        Some("ports: [{protocol: TCP, port: 5432}]\n")
    );
    let peers = db.iter().find(|x| x.rule.info().code == "TM052").unwrap();
    assert!(
        peers.message.ends_with("observed from: shop/web-1"),
        "{}",
        peers.message
    );
}

/// An admin policy of the v1alpha2 API, selecting namespace `shop` unless told otherwise.
fn cnp(name: &str, tier: &str, priority: u32, subject: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n  tier: {tier}\n  priority: {priority}\n  subject: {subject}\n{rules}\n"
    )
}

const SHOP: &str = "{namespaces: {matchLabels: {kubernetes.io/metadata.name: shop}}}";
const MON: &str = "{namespaces: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}";

#[test]
fn an_admin_accept_for_every_peer_overrides_isolation() {
    let f = run(&cnp(
        "open",
        "Admin",
        5,
        SHOP,
        "  ingress:\n  - action: Accept\n    from:\n    - namespaces: {matchLabels: {team: a}}\n    - namespaces: {}",
    ));
    assert_codes(&f, &["TM061"]);
    // At the broad peer: the rule starts at line 8 of the document, its second peer is line 12.
    let loc = f[0].location.as_ref().expect("a location");
    assert_eq!(
        (loc.file.as_path(), loc.line),
        (Path::new("policies.yaml"), planted_line(12))
    );
    assert!(
        f[0].message
            .contains("ClusterNetworkPolicy/open ingress rule 0"),
        "{}",
        f[0].message
    );
}

#[test]
fn an_admin_pass_with_nothing_below_allows() {
    // shop is isolated by its NetworkPolicies; kube-system has none, so a Pass for coredns
    // reaches nothing below it.
    let ks = "{namespaces: {matchLabels: {kubernetes.io/metadata.name: kube-system}}}";
    let f = run(&(cnp(
        "pass-shop",
        "Admin",
        5,
        SHOP,
        &format!("  ingress: [{{action: Pass, from: [{MON}]}}]"),
    ) + &cnp(
        "pass-dns",
        "Admin",
        6,
        ks,
        &format!("  ingress: [{{action: Pass, from: [{SHOP}]}}]"),
    )));
    assert_codes(&f, &["TM060"]);
    // The second document's rule: 9 lines after the first's `---`, then 8 more.
    assert_eq!(
        f[0].location.as_ref().expect("a location").line,
        planted_line(17)
    );
    assert!(
        f[0].message.contains("pass-dns") && f[0].message.contains("kube-system/coredns"),
        "{}",
        f[0].message
    );
}

#[test]
fn an_admin_rule_decided_first_by_a_higher_priority_policy_is_shadowed() {
    let f = run(&(cnp(
        "deny-all-in",
        "Admin",
        1,
        SHOP,
        "  ingress: [{action: Deny, from: [{namespaces: {}}]}]",
    ) + &cnp(
        "deny-mon",
        "Admin",
        9,
        SHOP,
        &format!("  ingress: [{{action: Deny, from: [{MON}]}}]"),
    )));
    assert_codes(&f, &["TM062"]);
    assert_eq!(
        f[0].location.as_ref().expect("a location").line,
        planted_line(17)
    );
    assert!(
        f[0].message.contains("ClusterNetworkPolicy/deny-all-in"),
        "{}",
        f[0].message
    );
}

#[test]
fn equal_priorities_over_the_same_pods_are_reported() {
    let f = run(&(cnp(
        "a",
        "Admin",
        7,
        SHOP,
        &format!("  ingress: [{{action: Deny, from: [{MON}]}}]"),
    ) + &cnp(
        "b",
        "Admin",
        7,
        SHOP,
        &format!("  ingress: [{{action: Pass, from: [{MON}]}}]"),
    )));
    assert_codes(&f, &["TM063"]);
    // At the first policy's priority.
    assert_eq!(
        f[0].location.as_ref().expect("a location").line,
        planted_line(6)
    );
}

#[test]
fn a_baseline_that_accepts_everything_is_reported() {
    let f = run(&cnp(
        "allow-all",
        "Baseline",
        7,
        SHOP,
        "  egress: [{action: Accept, to: [{networks: [0.0.0.0/0]}]}]",
    ));
    assert_codes(&f, &["TM064"]);
    assert_eq!(
        f[0].location.as_ref().expect("a location").line,
        planted_line(8)
    );
}

#[test]
fn the_cluster_dns_admitting_every_namespace_on_port_53_is_a_note_not_a_warning() {
    let dns_in = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: dns-in, namespace: kube-system}\nspec:\n  podSelector: {matchLabels: {k8s-app: kube-dns}}\n  ingress:\n  - from: [{namespaceSelector: {}}]\n    ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]\n";
    let f = run(dns_in);
    assert_codes(&f, &["TM010"]);
    assert_eq!(f[0].severity, super::Severity::Note, "{}", f[0].message);
    assert!(
        f[0].message
            .contains("the cluster DNS serves every namespace")
    );
    // The same breadth on another port is a warning.
    let f = run(&dns_in.replace("port: 53, protocol: TCP", "port: 8080, protocol: TCP"));
    assert_codes(&f, &["TM010"]);
    assert_eq!(f[0].severity, super::Severity::Warning);
}
