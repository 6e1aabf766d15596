//! What the kernel has attached to an interface, asked directly (BPF_PROG_QUERY for TCX, tc for
//! clsact): Debian 12's bpftool predates TCX and lists no TCX links.

use std::process::Command;

use aya::{
    Ebpf,
    maps::Array,
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions},
    },
};

/// Names of the programs attached to `interface`: TCX programs as `tcx/<hook>/<name>`, clsact
/// filters as `clsact/<hook>/<line of tc filter show>`.
pub fn attached_programs(interface: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (hook, ty) in [
        ("ingress", TcAttachType::Ingress),
        ("egress", TcAttachType::Egress),
    ] {
        if let Ok((_, progs)) = SchedClassifier::query_tcx(interface, ty) {
            for p in progs {
                out.push(format!("tcx/{hook}/{}", p.name_as_str().unwrap_or("?")));
            }
        }
        let tc = Command::new("tc")
            .args(["filter", "show", "dev", interface, hook])
            .output()
            .expect("tc filter show");
        for line in String::from_utf8_lossy(&tc.stdout).lines() {
            if line.contains(" bpf ") {
                out.push(format!("clsact/{hook}/{line}"));
            }
        }
    }
    out
}

/// A stand-in for a CNI's filter on the ingress hook: it counts packets and returns `TC_ACT_OK`,
/// which ends processing on the hook. Detached when dropped.
pub struct CniStandin {
    ebpf: Ebpf,
    _link: SchedClassifierLink,
    interface: String,
    clsact: bool,
}

impl CniStandin {
    /// Attaches to the ingress hook after whatever is there: TCX last, or a clsact filter of
    /// priority 10.
    pub fn attach(interface: &str, clsact: bool) -> Self {
        Self::attach_with(interface, clsact, TcAttachType::Ingress, LinkOrder::last())
    }

    /// Attaches by TCX to `hook` in front of every program there (trustmap's included), as a
    /// CNI that takes its packets past the programs behind it.
    pub fn attach_first(interface: &str, hook: TcAttachType) -> Self {
        Self::attach_with(interface, false, hook, LinkOrder::first())
    }

    fn attach_with(interface: &str, clsact: bool, hook: TcAttachType, order: LinkOrder) -> Self {
        let mut ebpf = Ebpf::load(trustmap::datapath::BENCH_OBJECT).expect("loading test programs");
        let prog: &mut SchedClassifier = ebpf
            .program_mut("cni_standin")
            .expect("cni_standin")
            .try_into()
            .expect("classifier");
        prog.load().expect("load cni_standin");
        let options = if clsact {
            let _ = tc::qdisc_add_clsact(interface);
            TcAttachOptions::Netlink(NlOptions {
                priority: 10,
                ..NlOptions::default()
            })
        } else {
            TcAttachOptions::TcxOrder(order)
        };
        let id = prog
            .attach_with_options(interface, hook, options)
            .expect("attach cni_standin");
        let link = prog.take_link(id).expect("take link");
        Self {
            ebpf,
            _link: link,
            interface: interface.to_owned(),
            clsact,
        }
    }

    /// Packets the stand-in has seen.
    pub fn packets(&self) -> u64 {
        let map: Array<_, u64> =
            Array::try_from(self.ebpf.map("STANDIN_PACKETS").expect("map")).expect("array");
        map.get(&0, 0).expect("read counter")
    }
}

impl Drop for CniStandin {
    fn drop(&mut self) {
        if self.clsact {
            let _ = Command::new("tc")
                .args(["qdisc", "del", "dev", &self.interface, "clsact"])
                .status();
        }
    }
}
