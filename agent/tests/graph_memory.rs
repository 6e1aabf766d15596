//! Bounded memory: a flow graph of 100 000 edges, measured with a counting allocator and
//! compared with `FlowGraph::memory_estimate`. The figure is recorded in BENCHMARKS.md.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
};

use trustmap::{
    flow::Protocol,
    graph::{EdgeStats, FlowGraph},
    identity::{Peer, Sample, SampleEnd, WorkloadRef},
};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn a_hundred_thousand_edges_fit_well_under_64_mib() {
    // 1 000 workloads in 20 namespaces, 1 000 externals; 100 000 distinct edges.
    let workloads: Vec<Peer> = (0..1000)
        .map(|i| {
            Peer::Workload(WorkloadRef::new(
                &format!("namespace-{}", i % 20),
                "Deployment",
                &format!("service-number-{i}"),
            ))
        })
        .collect();
    let before = LIVE.load(Ordering::Relaxed);
    let mut g = FlowGraph::new();
    let at = Some("2026-11-24T10:00:00Z".parse().unwrap());
    for i in 0..100_000u32 {
        let src = &workloads[(i % 1000) as usize];
        let dst = if i % 4 == 0 {
            Peer::External(std::net::IpAddr::from([
                203,
                0,
                (i / 256 % 4) as u8,
                (i % 256) as u8,
            ]))
        } else {
            workloads[((i / 1000) * 7 % 1000) as usize].clone()
        };
        let port = Some(1 + (i % 50_000) as u16);
        let stats = EdgeStats {
            count: 1,
            first_seen: at,
            last_seen: at,
            sample: Sample {
                src: SampleEnd::Ip([10, 0, 0, 1].into()),
                src_port: Some(40000),
                dst: SampleEnd::Ip([10, 0, 0, 2].into()),
                port,
                initiator: None,
                outcome: None,
            },
            alerted: Default::default(),
            names: Vec::new(),
        };
        g.add(src, &dst, Protocol::Tcp, port, stats);
    }
    let measured = LIVE.load(Ordering::Relaxed) - before;
    let estimate = g.memory_estimate();
    let edges = g.len();
    eprintln!(
        "edges={edges} measured={measured} B ({:.1} MiB, {} B/edge) estimate={estimate} B",
        measured as f64 / (1 << 20) as f64,
        measured / edges
    );
    assert!(edges >= 90_000, "{edges} distinct edges");
    assert!(measured < 32 << 20, "{measured} bytes for {edges} edges");
    // The estimate is within 25% of what the allocator saw.
    let ratio = estimate as f64 / measured as f64;
    assert!(
        (0.75..1.25).contains(&ratio),
        "estimate {estimate} vs measured {measured}"
    );
}
