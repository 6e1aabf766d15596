//! The flow map in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `cargo xtask setup`) loads the page from a file inside a network namespace with no network
//! (`unshare -rn`), lays it out with the inlined elkjs, and draws it. The page writes a
//! self-check into `body[data-selfcheck]` after every layout: label and box overlaps, labels
//! outside their boxes, edges crossing a box that is not one of their ends, and which observed
//! edges were drawn. The tests read it from the DOM, check the screenshot's colours, and compare
//! the drawn edges with the model inside the page.
//!
//! Apps: the demo's shop (recorded from `cargo xtask demo`, in tests/data/demo-shop), a
//! generated 50-workload app, and a generated 500-workload app, which must start with its
//! namespaces collapsed. Without Chromium the tests are skipped, except in CI (`CI=true`),
//! where they fail.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

fn data(app: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(app)
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH");
    let found = path.and_then(|path| {
        ["chromium", "chromium-browser"].iter().find_map(|name| {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    });
    if found.is_none() {
        let msg = "chromium is not installed: run `cargo xtask setup` (Debian package chromium)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}; in CI this test must run");
        }
        eprintln!("skipped: {msg}");
    }
    found
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let d =
            std::env::temp_dir().join(format!("trustmap-graph-test-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        Self(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // TRUSTMAP_KEEP_PAGES=1 keeps the pages to look at.
        if std::env::var_os("TRUSTMAP_KEEP_PAGES").is_some() {
            eprintln!("kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Chromium on `url`, with no network at all: a new network namespace holds only a loopback
/// that is down.
fn browser(bin: &Path, args: &[&str], url: &str, profile: &Path) -> std::process::Output {
    Command::new("unshare")
        .arg("-rn")
        .arg(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--window-size=1400,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("running unshare -rn {}: {e}", bin.display()))
}

fn trustmap_graph(manifests: &[PathBuf], flows: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_trustmap"))
        .arg("graph")
        .arg("--manifests")
        .args(manifests)
        .arg("--flows")
        .arg(flows)
        .args(["-o", "html"])
        .env("RUST_LOG", "error")
        .output()
        .expect("trustmap runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The model the page carries: `(nodes' ids, observed edges as "src -> dst")`.
fn model(html: &str) -> (Value, BTreeSet<String>) {
    let start = html
        .find("id=\"graph-data\">")
        .expect("the page carries its model")
        + "id=\"graph-data\">".len();
    let end = start + html[start..].find("</script>").expect("model ends");
    let m: Value = serde_json::from_str(&html[start..end]).expect("the model is JSON");
    let id = |i: &Value| {
        m["nodes"][i.as_u64().unwrap() as usize]["id"]
            .as_str()
            .unwrap()
    };
    let observed = m["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["verdict"] == "observed")
        .map(|e| format!("{} -> {}", id(&e["src"]), id(&e["dst"])))
        .collect();
    (m, observed)
}

/// What the page reported, decoded from the dumped DOM.
struct Rendered {
    dom: String,
    check: Value,
    stderr: String,
}

fn attr(dom: &str, name: &str) -> Option<String> {
    let pat = format!("{name}=\"");
    let start = dom.find(&pat)? + pat.len();
    let end = start + dom[start..].find('"')?;
    Some(
        dom[start..end]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

fn render(bin: &Path, page: &Path, fragment: &str, dir: &Path) -> Rendered {
    let url = format!("file://{}{fragment}", page.display());
    let out = browser(
        bin,
        &["--virtual-time-budget=20000", "--dump-dom"],
        &url,
        &dir.join("profile-dom"),
    );
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let check = attr(&dom, "data-selfcheck")
        .unwrap_or_else(|| panic!("the page wrote no self-check; chromium said: {stderr}"));
    let check: Value = serde_json::from_str(&check).expect("the self-check is JSON");
    assert!(check.get("error").is_none(), "layout failed: {check}");
    Rendered { dom, check, stderr }
}

/// The checks every readable map passes.
fn assert_readable(r: &Rendered, observed: &BTreeSet<String>) {
    let c = &r.check;
    for key in ["overlaps", "outside", "crossings", "observedMissing"] {
        assert_eq!(c[key], serde_json::json!([]), "{key}: {c}");
    }
    assert_eq!(c["observed"], observed.len(), "{c}");
    assert_eq!(
        c["observedDrawn"].as_u64().unwrap() + c["observedInsideCollapsed"].as_u64().unwrap(),
        observed.len() as u64,
        "{c}"
    );
    // Nothing was fetched: the page has no outside resource, and the browser had no network.
    for bad in ["Refused to", "ERR_", "Uncaught"] {
        let lines: Vec<&str> = r.stderr.lines().filter(|l| l.contains(bad)).collect();
        assert!(lines.is_empty(), "the browser logged {bad}: {lines:?}");
    }
}

fn assert_self_contained(html: &str) {
    // elkjs is inlined whole; our own part of the page must not refer to anything outside.
    let ours: String = html
        .split("<script>/* elkjs")
        .next()
        .expect("page head")
        .to_owned();
    assert!(
        html.contains("default-src 'none'"),
        "the page must forbid fetching"
    );
    for forbidden in ["http://", "https://", "src=\"", "<link", "@import"] {
        let hits: Vec<&str> = ours
            .match_indices(forbidden)
            .map(|(i, _)| &ours[i..(i + 60).min(ours.len())])
            .filter(|s| !s.starts_with("http://www.w3.org/2000/svg"))
            .collect();
        assert!(
            hits.is_empty(),
            "the page refers to outside resources: {hits:?}"
        );
    }
}

/// Pixels within `tol` of `rgb` drawn at `alpha` over `bg`.
fn count_colour(img: &[u8], channels: usize, rgb: [u8; 3], alpha: f64, bg: u8, tol: i32) -> usize {
    let want: Vec<i32> = rgb
        .iter()
        .map(|&c| (alpha * f64::from(c) + (1.0 - alpha) * f64::from(bg)).round() as i32)
        .collect();
    img.chunks(channels)
        .filter(|px| (0..3).all(|i| (i32::from(px[i]) - want[i]).abs() <= tol))
        .count()
}

#[test]
fn the_demo_apps_flow_map_is_readable_offline_and_draws_every_observed_edge() {
    let Some(bin) = chromium() else { return };
    let d = data("demo-shop");
    let html = trustmap_graph(
        &[d.join("cluster.yaml"), d.join("existing.yaml")],
        &d.join("flows.jsonl"),
    );
    assert_self_contained(&html);
    let (model, observed) = model(&html);
    let want: BTreeSet<String> = [
        "shop/Deployment/frontend -> kube-system/Deployment/coredns",
        "shop/Deployment/frontend -> shop/Deployment/api",
        "shop/Deployment/api -> kube-system/Deployment/coredns",
        "shop/Deployment/api -> shop/Deployment/cache",
        "shop/Deployment/api -> external 203.0.113.10",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(observed, want);
    // The learned policies ride along, one per workload that was seen.
    let policies: BTreeSet<&str> = model["policies"]
        .as_object()
        .expect("policies")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        policies,
        BTreeSet::from([
            "shop/Deployment/api",
            "shop/Deployment/cache",
            "shop/Deployment/db",
            "shop/Deployment/frontend"
        ])
    );

    let dir = TempDir::new("demo");
    let page = dir.0.join("flow-map.html");
    std::fs::write(&page, &html).expect("page written");
    let r = render(&bin, &page, "", &dir.0);
    assert_readable(&r, &observed);
    // Observed edges only, by default; excess and refused edges wait behind their toggles.
    assert_eq!(r.check["edges"], 5, "{}", r.check);
    assert_eq!(r.check["collapsed"], 0);
    assert!(
        r.check["fontPx"].as_f64().unwrap() >= 11.0,
        "labels too small to read at the default zoom: {}",
        r.check
    );

    // The screenshot: observed edges in green, node borders in grey.
    let shot = dir.0.join("flow-map.png");
    let s = browser(
        &bin,
        &[
            "--virtual-time-budget=20000",
            &format!("--screenshot={}", shot.display()),
        ],
        &format!("file://{}", page.display()),
        &dir.0.join("profile-shot"),
    );
    assert!(
        shot.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&s.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot");
    let mut reader = png::Decoder::new(png.as_slice())
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let img = &buf[..info.buffer_size()];
    let channels = info.color_type.samples();
    assert_eq!((info.width, info.height), (1400, 900));
    let green = count_colour(img, channels, [0x2e, 0x9e, 0x44], 0.85, 0xff, 24)
        + count_colour(img, channels, [0x2e, 0x9e, 0x44], 0.85, 0xee, 24);
    assert!(green > 300, "observed edges: {green} green pixels");
    let borders = count_colour(img, channels, [0x7b, 0x87, 0x94], 1.0, 0xff, 20);
    assert!(borders > 500, "node borders: {borders} pixels");
    if std::env::var_os("TRUSTMAP_UPDATE_DOCS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/flow-map.png");
        std::fs::write(&docs, &png).expect("docs screenshot");
    }
}

/// A generated app: `namespaces` namespaces of `per_ns` Deployments each, plus kube-system's
/// DNS and monitoring's Prometheus. In each namespace the workloads call each other in a chain
/// on TCP 8080; the first is called from outside on 443, the last calls an external API;
/// every third workload calls the next namespace's first; every workload asks DNS; Prometheus
/// scrapes every workload on 9090. Returns the manifests and the flow records.
fn generated_app(namespaces: usize, per_ns: usize) -> (String, String) {
    let mut yaml = String::new();
    let mut flows = String::new();
    let mut ip_of = std::collections::BTreeMap::new();
    let mut next_ip = 10u32;
    let mut add = |yaml: &mut String, ns: &str, name: &str, ports: &[u16]| {
        let ip = format!("198.18.{}.{}", next_ip / 250, next_ip % 250 + 1);
        next_ip += 1;
        let ports: Vec<Value> = ports
            .iter()
            .map(|p| serde_json::json!({"containerPort": p, "protocol": if *p == 53 { "UDP" } else { "TCP" }}))
            .collect();
        let labels = serde_json::json!({"app": name});
        let pod_labels = serde_json::json!({"app": name, "pod-template-hash": "5d8f7c"});
        let deploy = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "example", "ports": ports}]}}}});
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{name}-5d8f7c-abcde"), "namespace": ns, "labels": pod_labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "controller": true,
                    "name": format!("{name}-5d8f7c"), "uid": "00000000-0000-0000-0000-000000000001"}]},
            "spec": {"nodeName": "node1", "containers": [{"name": "main", "image": "example", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
        let _ = write!(yaml, "---\n{deploy}\n---\n{pod}\n");
        ip
    };
    let ns_name = |n: usize| format!("team-{n:02}");
    for ns in ["kube-system", "monitoring"]
        .into_iter()
        .map(str::to_owned)
        .chain((0..namespaces).map(ns_name))
    {
        let _ = write!(
            yaml,
            "---\n{}\n",
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        );
    }
    let dns = add(&mut yaml, "kube-system", "coredns", &[53]);
    let prom = add(&mut yaml, "monitoring", "prometheus", &[9090]);
    for n in 0..namespaces {
        for w in 0..per_ns {
            let name = format!("svc-{n:02}-{w:02}");
            let ip = add(&mut yaml, &ns_name(n), &name, &[8080, 9090]);
            ip_of.insert((n, w), ip);
        }
    }
    let mut port = 30000u32;
    let mut flow = |flows: &mut String, proto: &str, src: &str, dst: &str, dport: u16| {
        port += 1;
        let _ = writeln!(
            flows,
            "{}",
            serde_json::json!({"protocol": proto, "src": src, "src_port": port, "dst": dst, "port": dport,
                "first_seen": "2026-11-29T12:00:00Z", "initiator": if proto == "TCP" { "syn" } else { "first_seen" },
                "outcome": "answered"})
        );
    };
    for n in 0..namespaces {
        for w in 0..per_ns {
            let me = &ip_of[&(n, w)];
            flow(&mut flows, "UDP", me, &dns, 53);
            flow(&mut flows, "TCP", &prom, me, 9090);
            if w + 1 < per_ns {
                flow(&mut flows, "TCP", me, &ip_of[&(n, w + 1)], 8080);
            } else {
                flow(&mut flows, "TCP", me, &format!("203.0.113.{}", 10 + n), 443);
            }
            if w == 0 {
                flow(&mut flows, "TCP", "203.0.113.200", me, 8080);
            }
            if w % 3 == 2 && n + 1 < namespaces {
                flow(&mut flows, "TCP", me, &ip_of[&(n + 1, 0)], 8080);
            }
        }
    }
    (yaml, flows)
}

fn generated_page(dir: &Path, namespaces: usize, per_ns: usize) -> (PathBuf, String) {
    let (yaml, flows) = generated_app(namespaces, per_ns);
    let (m, f) = (dir.join("app.yaml"), dir.join("flows.jsonl"));
    std::fs::write(&m, yaml).expect("manifests");
    std::fs::write(&f, flows).expect("flows");
    let html = trustmap_graph(&[m], &f);
    let page = dir.join("flow-map.html");
    std::fs::write(&page, &html).expect("page written");
    (page, html)
}

#[test]
fn a_fifty_workload_flow_map_has_no_overlapping_labels_and_draws_every_observed_edge() {
    let Some(bin) = chromium() else { return };
    let dir = TempDir::new("fifty");
    // 6 namespaces of 8, plus DNS and Prometheus: 50 workloads.
    let (page, html) = generated_page(&dir.0, 6, 8);
    assert_self_contained(&html);
    let (model, observed) = model(&html);
    let workloads = model["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "workload")
        .count();
    assert_eq!(workloads, 50);
    // 48 DNS, 48 scrapes, 42 chain links, 6 external APIs, 6 callers from outside and 10
    // calls into the next namespace.
    assert_eq!(observed.len(), 48 + 48 + 42 + 6 + 6 + 10);
    let r = render(&bin, &page, "", &dir.0);
    assert_readable(&r, &observed);
    assert_eq!(r.check["collapsed"], 0, "{}", r.check);
    assert_eq!(r.check["observedDrawn"], observed.len(), "{}", r.check);
    // Fitting all of it would shrink the labels to a pixel; the page starts at a readable
    // scale instead (and "fit" shows everything).
    assert!(
        r.check["fontPx"].as_f64().unwrap() >= 9.0,
        "labels too small to read at the default zoom: {}",
        r.check
    );
}

#[test]
fn five_hundred_workloads_start_collapsed_by_namespace_and_a_search_expands_one() {
    let Some(bin) = chromium() else { return };
    let dir = TempDir::new("five-hundred");
    // 50 namespaces of 10, plus DNS and Prometheus.
    let (page, html) = generated_page(&dir.0, 50, 10);
    let (_, observed) = model(&html);
    let r = render(&bin, &page, "", &dir.0);
    assert_readable(&r, &observed);
    // Every namespace with more than one member is one box: the 50 teams and the outside.
    assert_eq!(r.check["collapsed"], 51, "{}", r.check);
    // Edges inside a team are inside its box; the rest are drawn between boxes.
    assert_eq!(r.check["observedInsideCollapsed"], 50 * 9, "{}", r.check);

    // A link that finds a workload expands its namespace, selects it, and shows its reach
    // and its learned policy.
    let r = render(&bin, &page, "#find=team-07/Deployment/svc-07-02", &dir.0);
    assert_readable(&r, &observed);
    assert_eq!(r.check["collapsed"], 50, "{}", r.check);
    assert_eq!(
        attr(&r.dom, "data-selected").as_deref(),
        Some("team-07/Deployment/svc-07-02")
    );
    let panel = &r.dom[r.dom.find("id=\"details\"").expect("the panel")..];
    // svc-07-02 calls svc-07-03 .. svc-07-09 down the chain, team-08's first (and so on down
    // every later team), the external APIs and DNS.
    assert!(panel.contains("Blast radius"), "{panel:.2000}");
    assert!(panel.contains("team-07/Deployment/svc-07-03: TCP 8080"));
    assert!(
        panel.contains("kind: NetworkPolicy"),
        "no learned policy shown"
    );
    assert!(panel.contains("name: svc-07-02"));
}
