//! Which privilege a refused operation lacked, said in one line (IO: reads /proc/self/status).
//!
//! The kernel answers a missing capability, a seccomp filter and an LSM alike, with `EPERM` or
//! `EACCES`. The process's own status tells them apart: the effective capability set (`CapEff`)
//! says whether the capability the operation needs is held, and `Seccomp` whether a filter is
//! installed. So a refusal names the capability to add, or, when it is held, the seccomp profile
//! or LSM that refused anyway. docs/deploy.md has the table these messages follow.

use std::io;

/// The capabilities the agent uses (numbers from linux/capability.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    NetAdmin = 12,
    Perfmon = 38,
    Bpf = 39,
}

impl Capability {
    /// `CAP_BPF`, as the kernel's headers and `capsh` write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::NetAdmin => "CAP_NET_ADMIN",
            Self::Perfmon => "CAP_PERFMON",
            Self::Bpf => "CAP_BPF",
        }
    }

    /// `BPF`, as a Kubernetes securityContext lists it.
    pub fn k8s_name(self) -> &'static str {
        &self.name()[4..]
    }
}

/// What /proc/self/status says about this process's privileges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The effective capability set, one bit per capability number.
    pub effective: u64,
    /// `Seccomp:` 0 (none), 1 (strict) or 2 (filter).
    pub seccomp: u8,
}

impl Status {
    /// Reads this process's status; `None` where /proc is not mounted.
    pub fn current() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/self/status").ok()?)
    }

    /// Parses the `CapEff:` and `Seccomp:` lines of a /proc/PID/status text.
    pub fn parse(text: &str) -> Option<Self> {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        Some(Self {
            effective: u64::from_str_radix(field("CapEff:")?, 16).ok()?,
            seccomp: field("Seccomp:").and_then(|s| s.parse().ok()).unwrap_or(0),
        })
    }

    pub fn has(&self, cap: Capability) -> bool {
        self.effective & (1 << cap as u64) != 0
    }
}

/// Whether an error, or any error it wraps, is the kernel's `EPERM` or `EACCES`.
pub fn is_refusal(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// The one line that says why `what` was refused, given the capabilities it `needs` (each with
/// the reason it is needed) and the process's `status`.
pub fn refusal(what: &str, needs: &[(Capability, &str)], status: Option<Status>) -> String {
    let Some(status) = status else {
        return format!(
            "{what} was refused, and /proc/self/status could not be read to say why; the agent \
             needs {} (docs/deploy.md#capabilities)",
            needs
                .iter()
                .map(|(c, _)| c.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let missing: Vec<&(Capability, &str)> = needs.iter().filter(|(c, _)| !status.has(*c)).collect();
    if !missing.is_empty() {
        let list = missing
            .iter()
            .map(|(c, why)| format!("{} ({why})", c.name()))
            .collect::<Vec<_>>()
            .join(", ");
        let add = missing
            .iter()
            .map(|(c, _)| c.k8s_name())
            .collect::<Vec<_>>()
            .join(", ");
        return format!(
            "{what} was refused: missing capability {list}; add {add} to the container's \
             securityContext.capabilities.add (docs/deploy.md#capabilities)"
        );
    }
    let held = needs
        .iter()
        .map(|(c, _)| c.name())
        .collect::<Vec<_>>()
        .join(" and ");
    let are = if needs.len() == 1 { "is" } else { "are" };
    if status.seccomp == 2 {
        format!(
            "{what} was refused although {held} {are} effective: the container's seccomp profile \
             blocks the system call (some runtimes' default profiles allow bpf(2) only with \
             CAP_SYS_ADMIN); use the profile trustmap ships, deploy/seccomp/trustmap-agent.json, \
             as seccompProfile type Localhost (docs/deploy.md#seccomp)"
        )
    } else {
        format!(
            "{what} was refused although {held} {are} effective and no seccomp filter is \
             installed: a Linux security module (SELinux, AppArmor, a BPF LSM) or a user \
             namespace without these capabilities on the host refused it"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CapEff of a container with BPF, NET_ADMIN and PERFMON only: bits 39, 12 and 38.
    const BPF_NET_PERFMON: u64 = (1 << 39) | (1 << 12) | (1 << 38);

    #[test]
    fn parses_the_status_lines_it_needs() {
        let text = "Name:\ttrustmap\nCapInh:\t0000000000000000\nCapEff:\t000000c000001000\n\
                    NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n";
        let s = Status::parse(text).unwrap();
        assert_eq!(s.effective, BPF_NET_PERFMON);
        assert_eq!(s.seccomp, 2);
        assert!(s.has(Capability::Bpf) && s.has(Capability::NetAdmin));
        let without_perfmon = Status {
            effective: s.effective & !(1 << 38),
            ..s
        };
        assert!(!without_perfmon.has(Capability::Perfmon));
        assert_eq!(Status::parse("Name:\tx\n"), None);
    }

    #[test]
    fn names_the_missing_capability_and_the_securitycontext_value() {
        let status = Status {
            effective: (1 << 12) | (1 << 38),
            seccomp: 2,
        };
        assert_eq!(
            refusal(
                "loading the eBPF object",
                &[(Capability::Bpf, "bpf(2): maps and programs")],
                Some(status)
            ),
            "loading the eBPF object was refused: missing capability CAP_BPF (bpf(2): maps and \
             programs); add BPF to the container's securityContext.capabilities.add \
             (docs/deploy.md#capabilities)"
        );
    }

    #[test]
    fn blames_seccomp_when_the_capability_is_held_under_a_filter() {
        let status = Status {
            effective: BPF_NET_PERFMON,
            seccomp: 2,
        };
        let line = refusal(
            "loading the eBPF object",
            &[(Capability::Bpf, "maps")],
            Some(status),
        );
        assert!(
            line.starts_with(
                "loading the eBPF object was refused although CAP_BPF is effective: the \
                 container's seccomp profile blocks the system call"
            ),
            "{line}"
        );
        assert!(
            line.contains("deploy/seccomp/trustmap-agent.json"),
            "{line}"
        );
        let unfiltered = refusal(
            "loading the eBPF object",
            &[(Capability::Bpf, "maps")],
            Some(Status {
                seccomp: 0,
                ..status
            }),
        );
        assert!(unfiltered.contains("Linux security module"), "{unfiltered}");
    }

    #[test]
    fn finds_eperm_and_eacces_under_wrappers() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] io::Error);
        assert!(is_refusal(&Outer(io::Error::from_raw_os_error(
            libc::EPERM
        ))));
        assert!(is_refusal(&Outer(io::Error::from_raw_os_error(
            libc::EACCES
        ))));
        assert!(!is_refusal(&Outer(io::Error::from_raw_os_error(
            libc::ENOENT
        ))));
    }
}
