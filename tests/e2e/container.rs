//! The agent's image run as the DaemonSet runs it: podman with runc, exactly the securityContext
//! and hostPath mounts of deploy/daemonset.yaml. Under the seccomp profile trustmap ships,
//! capture is exact, the pre-existing scan works from inside the container, nothing stays
//! attached, and without any one of the capabilities the agent fails with one line naming it.
//! Under podman 4.3's own default profile, which allows bpf(2) only with CAP_SYS_ADMIN, the
//! agent says so and names the shipped profile.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use trustmap_e2e::{
    Cluster, ClusterSpec, Pod, TcpServer, UdpServer, attached_programs,
    container::{Container, Seccomp, SecurityContext},
    require_root, tcp_connect, udp_request,
};

use crate::observe::{assert_exact, expect};

fn spec() -> ClusterSpec {
    ClusterSpec::new(2)
        .pod(1, "web", &[("app", "web")])
        .pod(2, "db", &[("app", "db")])
}

/// The profile trustmap ships for runtimes whose default blocks bpf(2) without CAP_SYS_ADMIN.
fn shipped_profile() -> Seccomp {
    Seccomp::Localhost(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/seccomp/trustmap-agent.json"),
    )
}

fn observe_args(pattern: &str) -> Vec<String> {
    [
        "observe",
        "--interface",
        pattern,
        "--output",
        "/out/flows.jsonl",
        "--proc-root",
        "/host/proc",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A TCP connection from `from` to `to`'s port 5432 (a server must listen there), made from
/// inside `from`'s namespace and held open by the caller.
fn hold_connection(from: &Pod, to: &Pod) -> std::net::TcpStream {
    let addr = SocketAddr::new(IpAddr::V4(to.ipv4), 5432);
    trustmap_e2e::in_netns(&from.netns, move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .expect("connecting before the agent")
    })
}

/// Connections made before and after the agent starts, in the container, under `seccomp`.
fn captures_exactly(seccomp: &Seccomp, name: &str) {
    require_root();
    let cluster = Cluster::start(&spec());
    let (web, db) = (cluster.pod("web"), cluster.pod("db"));
    let pattern = cluster.pod_interface_pattern();
    let db_tcp = TcpServer::start(&db.netns, SocketAddr::new(IpAddr::V4(db.ipv4), 5432));
    let db_udp = UdpServer::start(&db.netns, SocketAddr::new(IpAddr::V6(db.ipv6), 5353));
    // Established before the agent: read from the pods' socket tables at its start.
    let pre = hold_connection(web, db);
    let pre_port = pre.local_addr().expect("local address").port();

    let sc = SecurityContext::of_daemonset();
    let args = observe_args(&pattern);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = Container::start(name, &sc, seccomp, &args);
    agent.wait_for_log("ready interfaces=", Duration::from_secs(60));

    let mut expected = vec![expect(
        "TCP",
        IpAddr::V4(web.ipv4),
        Some(pre_port),
        IpAddr::V4(db.ipv4),
        Some(5432),
        "",
        "pre_existing",
    )];
    for _ in 0..2 {
        let local = tcp_connect(&web.netns, SocketAddr::new(IpAddr::V4(db.ipv4), 5432));
        expected.push(expect(
            "TCP",
            IpAddr::V4(web.ipv4),
            Some(local.port()),
            IpAddr::V4(db.ipv4),
            Some(5432),
            &web.host_if,
            "syn",
        ));
    }
    let local = udp_request(&web.netns, SocketAddr::new(IpAddr::V6(db.ipv6), 5353));
    expected.push(expect(
        "UDP",
        IpAddr::V6(web.ipv6),
        Some(local.port()),
        IpAddr::V6(db.ipv6),
        Some(5353),
        &web.host_if,
        "first_seen",
    ));
    std::thread::sleep(Duration::from_millis(300));
    let records = agent.stop();
    let logs = agent.logs();
    // The pre-existing record comes from the socket tables, not an interface: it names none.
    assert_exact(&records, expected);
    for pod in [web, db] {
        assert_eq!(
            attached_programs(&pod.host_if),
            Vec::<String>::new(),
            "programs left on {} after the container stopped:\n{logs}",
            pod.host_if
        );
    }
    drop((pre, db_tcp, db_udp));
}

#[test]
fn image_captures_exactly_under_the_daemonsets_security_context() {
    captures_exactly(&shipped_profile(), "capture");
}

/// Each capability the DaemonSet adds, removed in turn: the agent must exit non-zero with one
/// line naming it, never run on with a partial capture. A capability without which capture
/// still works is not needed, and fails this test until the DaemonSet stops asking for it.
#[test]
fn image_without_each_capability_fails_naming_it() {
    require_root();
    let cluster = Cluster::start(&spec());
    let (web, db) = (cluster.pod("web"), cluster.pod("db"));
    let db_tcp = TcpServer::start(&db.netns, SocketAddr::new(IpAddr::V4(db.ipv4), 5432));
    // A connection held open, so that the pre-existing scan has a namespace to read.
    let held = hold_connection(web, db);
    let pattern = cluster.pod_interface_pattern();
    let args = observe_args(&pattern);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let full = SecurityContext::of_daemonset();
    let mut report = Vec::new();
    for cap in &full.add {
        let sc = full.without(cap);
        let agent = Container::start(
            &format!("no-{}", cap.to_lowercase().replace('_', "-")),
            &sc,
            &shipped_profile(),
            &args,
        );
        let (code, logs) = agent.wait_exit(Duration::from_secs(60));
        let needle = format!("missing capability CAP_{cap}");
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&needle)).collect();
        report.push(format!("{cap}: exit {code}, {} line(s)", lines.len()));
        assert!(
            code != 0 && lines.len() == 1,
            "without {cap} the agent must exit non-zero with one line saying {needle:?}; it \
             exited {code} and logged:\n{logs}"
        );
        drop(agent);
        // Nothing left behind by the failed start.
        assert_eq!(attached_programs(&web.host_if), Vec::<String>::new());
    }
    eprintln!("{}", report.join("\n"));
    drop((held, db_tcp));
}

/// podman 4.3's own default profile (like containerd before 1.7 and CRI-O before 1.31) allows
/// bpf(2) only with CAP_SYS_ADMIN, which the DaemonSet does not ask for. The agent says that the
/// seccomp profile refused bpf(2) although CAP_BPF is effective, and names the profile to use.
#[test]
fn image_under_a_default_profile_that_blocks_bpf_names_seccomp_and_the_shipped_profile() {
    require_root();
    let cluster = Cluster::start(&spec());
    let pattern = cluster.pod_interface_pattern();
    let args = observe_args(&pattern);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sc = SecurityContext::of_daemonset();
    let agent = Container::start("seccomp", &sc, &Seccomp::RuntimeDefault, &args);
    let (code, logs) = agent.wait_exit(Duration::from_secs(60));
    assert_ne!(code, 0, "{logs}");
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("seccomp profile blocks the system call"))
        .collect();
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(
        lines[0].starts_with(
            "error: loading the eBPF object was refused although CAP_BPF is effective: the \
             container's seccomp profile blocks the system call"
        ) && lines[0].contains("deploy/seccomp/trustmap-agent.json"),
        "{logs}"
    );
}
