//! End-to-end runs of `check`, `explain` and `matrix` on the online-boutique test data, and of
//! the errors users get for invalid manifests. Unprivileged: files and pipes only.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/online-boutique")
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trustmap"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("trustmap runs");
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.unwrap_or_default().to_owned();
    // Write from another thread: the child fills its stdout while we fill its stdin.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_writes_one_verdict_per_record_in_input_order() {
    let d = data();
    let flows = d.join("flows.jsonl");
    let out = run(
        &[
            "check",
            "--manifests",
            d.to_str().unwrap(),
            "--flows",
            flows.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let verdicts: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {}",
                v["dst"].as_str().unwrap(),
                v["verdict"].as_str().unwrap()
            )
        })
        .collect();
    let want = [
        "10.244.2.20 allow",
        "10.244.2.21 deny",
        "10.244.2.21 allow",
        "10.244.1.10 allow",
        "198.18.0.1 allow",
        "10.1.2.3 deny",
        "kube-system/Deployment/coredns allow",
        "10.244.2.20 allow",
        "10.244.2.20 allow",
        "10.244.2.20 deny",
        "10.244.1.99 allow",
        "10.244.1.12 deny",
        "198.51.100.25 allow",
        "boutique/frontend-7d9c8b6f5-x2x4z deny",
    ];
    assert_eq!(verdicts, want);
    let first: serde_json::Value =
        serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(
        first["ingress"]["allowed_by"]["policy"],
        "boutique/cartservice-ingress"
    );
    assert_eq!(first["egress"]["isolated"], true);
}

#[test]
fn check_reads_stdin_prints_tables_and_fails_on_deny_when_asked() {
    let d = data();
    let flows =
        "{\"protocol\":\"TCP\",\"src\":\"10.244.1.10\",\"dst\":\"10.244.2.21\",\"port\":6379}\n";
    let args = [
        "check",
        "--manifests",
        d.to_str().unwrap(),
        "--flows",
        "-",
        "-o",
        "table",
        "--fail-on-deny",
    ];
    let out = run(&args, Some(flows));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.starts_with("VERDICT") && t.contains("DENY"), "{t}");
}

#[test]
fn check_reports_bad_records_in_place_and_exits_2() {
    let d = data();
    let flows = "{\"protocol\":\"TCP\",\"src\":\"boutique/nope\",\"dst\":\"10.244.2.21\",\"port\":1}\nnot json\n{\"protocol\":\"UDP\",\"src\":\"10.244.1.10\",\"dst\":\"10.0.0.1\",\"port\":53}\n";
    let out = run(
        &["check", "--manifests", d.to_str().unwrap(), "--flows", "-"],
        Some(flows),
    );
    assert_eq!(out.status.code(), Some(2));
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines[0].contains("\"line\":1") && lines[0].contains("unknown pod"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains("\"line\":2"), "{}", lines[1]);
    assert!(lines[2].contains("\"verdict\""), "{}", lines[2]);
}

#[test]
fn check_streams_many_records() {
    let d = data();
    let line =
        "{\"protocol\":\"TCP\",\"src\":\"10.244.1.10\",\"dst\":\"10.244.2.20\",\"port\":7070}\n";
    let input = line.repeat(50_000);
    let out = run(
        &["check", "--manifests", d.to_str().unwrap(), "--flows", "-"],
        Some(&input),
    );
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).lines().count(), 50_000);
}

#[test]
fn explain_prints_both_sides_and_the_cni_rule_that_decided() {
    let d = data();
    let m = d.to_str().unwrap();
    let out = run(
        &[
            "explain",
            "--manifests",
            m,
            "--from",
            "boutique/Deployment/frontend",
            "--to",
            "boutique/Deployment/redis-cart",
            "--port",
            "6379/TCP",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(
        t.starts_with(
            "DENY: boutique/Deployment/frontend -> boutique/Deployment/redis-cart on 6379/TCP"
        ),
        "{t}"
    );
    assert!(
        t.contains("boutique/redis-cart-ingress ingress rule 0: no peer matches"),
        "{t}"
    );
    let out = run(
        &[
            "explain",
            "--manifests",
            m,
            "--from",
            "192.168.10.12",
            "--to",
            "10.244.2.20",
            "--port",
            "7070",
        ],
        None,
    );
    let t = text(&out.stdout);
    assert!(
        t.starts_with("ALLOW") && t.contains("kubelet probes"),
        "{t}"
    );
    let out = run(
        &[
            "explain",
            "--manifests",
            m,
            "--from",
            "boutique/nope",
            "--to",
            "10.244.2.20",
            "--port",
            "7070",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown pod"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn matrix_lists_allowed_pairs_with_ports_in_three_formats() {
    let d = data();
    let m = d.to_str().unwrap();
    let table = text(&run(&["matrix", "--manifests", m], None).stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("boutique/Deployment/cartservice ") && l.contains("redis-cart"))
        .expect(&table);
    assert!(row.ends_with("TCP:6379"), "{row}");
    assert!(
        !table
            .contains("boutique/Deployment/frontend               boutique/Deployment/redis-cart")
    );
    let csv = text(&run(&["matrix", "--manifests", m, "-o", "csv"], None).stdout);
    assert!(
        csv.contains("boutique/Deployment/emailservice,198.51.100.0/24,\"TCP:587,2525-2530\""),
        "{csv}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&run(&["matrix", "--manifests", m, "-o", "json"], None).stdout)
            .unwrap();
    assert!(
        json["allowed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["src"] == "external"
                && c["dst"] == "boutique/Deployment/frontend"
                && c["ports"] == "TCP:8080")
    );
}

/// Writes one manifest to a fresh directory and returns the directory.
fn manifest_dir(name: &str, yaml: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trustmap-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("np.yaml"), yaml).unwrap();
    dir
}

#[test]
fn invalid_policies_exit_2_naming_file_document_and_field() {
    let cases = [
        (
            "cidr",
            "ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/40}}]}]",
            "spec.ingress[0].from[0].ipBlock.cidr",
        ),
        (
            "operator",
            "ingress: [{from: [{podSelector: {matchExpressions: [{key: a, operator: Has}]}}]}]",
            "matchExpressions[0].operator",
        ),
        (
            "range",
            "ingress: [{ports: [{port: 65536}]}]",
            "spec.ingress[0].ports[0].port",
        ),
        (
            "endport",
            "egress: [{ports: [{port: 90, endPort: 80}]}]",
            "spec.egress[0].ports[0].endPort",
        ),
        (
            "named",
            "egress: [{ports: [{port: http, endPort: 80}]}]",
            "spec.egress[0].ports[0].endPort",
        ),
        (
            "protocol",
            "egress: [{ports: [{port: 80, protocol: HTTP}]}]",
            "spec.egress[0].ports[0].protocol",
        ),
    ];
    for (name, spec, field) in cases {
        let yaml = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: x}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: bad, namespace: x}}\nspec:\n  podSelector: {{}}\n  {spec}\n"
        );
        let dir = manifest_dir(name, &yaml);
        let out = run(&["matrix", "--manifests", dir.to_str().unwrap()], None);
        let err = text(&out.stderr);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains("np.yaml: document 2") && err.contains(field) && !err.contains("panicked"),
            "{name}: {err}"
        );
    }
}

#[test]
fn check_judges_a_service_clusterip_as_its_backend_on_the_target_port() {
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/service");
    let flows = concat!(
        r#"{"protocol":"TCP","src":"198.18.1.10","dst":"10.96.0.20","port":80}"#,
        "\n",
        r#"{"protocol":"TCP","src":"198.18.1.12","dst":"10.96.0.20","port":80}"#,
        "\n",
    );
    let out = run(
        &["check", "--manifests", m.to_str().unwrap(), "--flows", "-"],
        Some(flows),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(&str, &str, u64)> = lines
        .iter()
        .map(|v| {
            (
                v["verdict"].as_str().unwrap(),
                v["destination"].as_str().unwrap(),
                v["port"].as_u64().unwrap(),
            )
        })
        .collect();
    // The records keep what was observed; the verdict is on api-1:8080, where policy applies.
    assert_eq!(
        got,
        [("allow", "shop/api-1", 8080), ("deny", "shop/api-1", 8080)],
        "{lines:#?}"
    );
    assert_eq!(lines[0]["dst"], "10.96.0.20");
}

#[test]
fn an_unknown_field_is_an_error_naming_file_line_and_the_field_meant_unless_lenient() {
    let dir = std::env::temp_dir().join(format!("trustmap-cli-strict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: egress-only\n  \
         namespace: shop\nspec:\n  podSelector: {}\n  polcyTypes: [Egress]\n",
    )
    .unwrap();
    let path = file.display().to_string();
    let out = run(&["matrix", "--manifests", &path], None);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{path}: document 2: NetworkPolicy egress-only"))
            && err.contains("unknown field spec.polcyTypes (line 12, did you mean policyTypes?)")
            && err.contains("--lenient"),
        "{err}"
    );
    // Each cause once.
    assert_eq!(err.matches("polcyTypes").count(), 1, "{err}");
    let out = run(&["matrix", "--manifests", &path, "--lenient"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn explain_names_the_admin_tier_rule_that_decided() {
    let d = data();
    let cnp = manifest_dir(
        "cnp",
        r#"apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: guard}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: boutique}}}
  ingress:
  - name: no-redis-from-frontend
    action: Deny
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: frontend}}}}]
    protocols: [{tcp: {destinationPort: {number: 6379}}}]
"#,
    );
    let out = run(
        &[
            "explain",
            "--manifests",
            d.to_str().unwrap(),
            cnp.to_str().unwrap(),
            "--from",
            "boutique/Deployment/frontend",
            "--to",
            "boutique/Deployment/redis-cart",
            "--port",
            "6379/TCP",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.starts_with("DENY"), "{t}");
    assert!(
        t.contains(
            "denied by ClusterNetworkPolicy/guard (tier Admin, priority 5) rule 0 \"no-redis-from-frontend\": Deny"
        ),
        "{t}"
    );
    let _ = std::fs::remove_dir_all(&cnp);
}

/// web resolved api.pay.example to two addresses in turn, and connected to each on 443; it
/// also reached 203.0.113.99 with no name. Its policy lets it out to anyone on 443 and 8443.
const NAMED: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c, image: x}]}
status: {podIP: 10.1.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec: {containers: [{name: c, image: x}]}
status: {podIP: 10.1.0.6}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-out, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - ports: [{port: 443, protocol: TCP}, {port: 8443, protocol: TCP}]
"#;

const NAMED_FLOWS: &str = concat!(
    r#"{"protocol":"TCP","src":"10.1.0.5","dst":"203.0.113.10","port":443,"dst_names":["api.pay.example"]}"#,
    "\n",
    r#"{"protocol":"TCP","src":"10.1.0.5","dst":"203.0.113.11","port":443,"dst_names":["api.pay.example"]}"#,
    "\n",
    r#"{"protocol":"TCP","src":"10.1.0.5","dst":"203.0.113.99","port":8443}"#,
    "\n",
);

#[test]
fn externals_are_named_by_dns_name_in_diff_graph_lint_and_blast_radius() {
    let dir = manifest_dir("named", NAMED);
    let flows = dir.join("flows.jsonl.txt");
    std::fs::write(&flows, NAMED_FLOWS).unwrap();
    let (m, f) = (dir.to_str().unwrap(), flows.to_str().unwrap());
    let ok = |args: &[&str]| {
        let out = run(args, None);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    // diff: 8443 to the named addresses and 443 to the other are excess, each end by its name.
    let diff = ok(&[
        "diff",
        "--manifests",
        m,
        "--current",
        m,
        "--flows",
        f,
        "-o",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&diff).unwrap();
    let rows: std::collections::BTreeSet<(String, String)> = v["excess"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["src"] == "shop/web")
        .map(|r| {
            (
                r["dst"].as_str().unwrap().to_owned(),
                r["ports"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (dst, ports) in [
        ("203.0.113.10 (api.pay.example)", "TCP:8443"),
        ("203.0.113.11 (api.pay.example)", "TCP:8443"),
        ("203.0.113.99", "TCP:443"),
    ] {
        assert!(
            rows.contains(&(dst.to_owned(), ports.to_owned())),
            "{dst} {ports}: {rows:?}"
        );
    }
    // graph: the external node reads as its name.
    let dot = ok(&["graph", "--manifests", m, "--flows", f, "-o", "dot"]);
    assert!(dot.contains("api.pay.example (203.0.113.10)"), "{dot}");
    // blast radius: what each workload reaches outside, by name and port.
    let blast = ok(&["blast-radius", "--manifests", m, "--flows", f, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&blast).unwrap();
    for set in ["current", "learned"] {
        let web = v[set]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["workload"] == "shop/web")
            .unwrap_or_else(|| panic!("{blast}"));
        assert_eq!(
            web["external_names"],
            serde_json::json!(["api.pay.example:443/TCP"]),
            "{set}: {blast}"
        );
    }
    // lint with flows: the rule that lets web out to anyone lists what it was used for, by name.
    let lint = run(
        &["lint", "--manifests", m, "--flows", f, "-o", "json"],
        None,
    );
    let lint = text(&lint.stdout);
    assert!(
        lint.contains(
            "observed to: external 203.0.113.10 (api.pay.example), external 203.0.113.11 (api.pay.example), external 203.0.113.99"
        ),
        "{lint}"
    );
}

/// Progress bars appear on a terminal (a pseudo-terminal from util-linux's `script`) and never
/// in a pipe, and they never change what goes to stdout.
#[test]
fn progress_is_drawn_on_a_terminal_only_and_leaves_stdout_alone() {
    let dir = std::env::temp_dir().join(format!("trustmap-progress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let flows = dir.join("flows.jsonl");
    let mut text = String::new();
    for i in 0..60_000u32 {
        text.push_str(&format!(
            "{{\"protocol\":\"TCP\",\"src\":\"198.18.1.10\",\"src_port\":{},\"dst\":\"198.18.1.11\",\"port\":8080,\"first_seen\":\"2026-11-29T12:00:00Z\",\"initiator\":\"syn\",\"outcome\":\"answered\"}}\n",
            30_000 + i % 30_000
        ));
    }
    std::fs::write(&flows, text).expect("flows");
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/demo-shop");
    let bin = env!("CARGO_BIN_EXE_trustmap");
    let args = format!(
        "learn --manifests {} --flows {} -o graph",
        manifests.display(),
        flows.display()
    );

    // A pipe: no bar, no terminal control.
    let piped = Command::new(bin)
        .args(args.split(' '))
        .env_remove("CI")
        .env("TERM", "xterm")
        .output()
        .expect("trustmap runs");
    assert!(piped.status.success(), "{}", text_of(&piped.stderr));
    let err = text_of(&piped.stderr);
    assert!(!err.contains("reading ") && !err.contains('\x1b'), "{err}");

    // A terminal: the bar names the file; stdout (to a file) is the same bytes.
    let out_file = dir.join("stdout");
    let terminal = Command::new("script")
        .args(["-qec"])
        .arg(format!("{bin} {args} > {}", out_file.display()))
        .arg("/dev/null")
        .env_remove("CI")
        .env("TERM", "xterm")
        .output()
        .expect("script runs");
    let screen = text_of(&terminal.stdout);
    assert!(terminal.status.success(), "{screen}");
    assert!(
        screen.contains(&format!("reading {}", flows.display())) && screen.contains("MiB"),
        "no progress on the terminal: {screen}"
    );
    assert_eq!(std::fs::read(&out_file).expect("stdout file"), piped.stdout);

    // CI=true: no bar even on a terminal.
    let ci = Command::new("script")
        .args(["-qec"])
        .arg(format!("{bin} {args} > /dev/null"))
        .arg("/dev/null")
        .env("CI", "true")
        .env("TERM", "xterm")
        .output()
        .expect("script runs");
    assert!(!text_of(&ci.stdout).contains("reading "));
    let _ = std::fs::remove_dir_all(&dir);
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
