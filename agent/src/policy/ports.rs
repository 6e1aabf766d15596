//! Sets of ports and protocols, for "what may A open to B" questions (the matrix, learning).

use std::fmt;

use serde::{Serialize, Serializer};

use crate::flow::Protocol;

/// Sorted, disjoint, non-adjacent inclusive port ranges of one protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortRanges(Vec<(u16, u16)>);

impl PortRanges {
    pub fn empty() -> Self {
        Self(Vec::new())
    }

    /// Every port, 0-65535 (0 stands for "no port", so that `all` is the full range).
    pub fn all() -> Self {
        Self(vec![(0, u16::MAX)])
    }

    pub fn range(start: u16, end: u16) -> Self {
        Self(vec![(start.min(end), start.max(end))])
    }

    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn is_all(&self) -> bool {
        self.0 == [(0, u16::MAX)]
    }

    pub fn contains(&self, port: u16) -> bool {
        let i = self.0.partition_point(|r| r.1 < port);
        self.0.get(i).is_some_and(|r| r.0 <= port)
    }

    pub fn union(&self, other: &Self) -> Self {
        let mut all: Vec<(u16, u16)> = self.0.iter().chain(&other.0).copied().collect();
        all.sort_unstable();
        let mut out: Vec<(u16, u16)> = Vec::with_capacity(all.len());
        for (s, e) in all {
            match out.last_mut() {
                Some(last) if u32::from(s) <= u32::from(last.1) + 1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        Self(out)
    }

    /// The ports in `self` and not in `other`.
    pub fn minus(&self, other: &Self) -> Self {
        let mut out = Vec::new();
        for &(s, e) in &self.0 {
            let mut start = u32::from(s);
            let end = u32::from(e);
            for &(os, oe) in &other.0 {
                let (os, oe) = (u32::from(os), u32::from(oe));
                if oe < start || os > end {
                    continue;
                }
                if os > start {
                    out.push((start as u16, (os - 1) as u16));
                }
                start = oe + 1;
                if start > end {
                    break;
                }
            }
            if start <= end {
                out.push((start as u16, end as u16));
            }
        }
        Self(out)
    }

    pub fn intersect(&self, other: &Self) -> Self {
        let (mut i, mut j, mut out) = (0, 0, Vec::new());
        while i < self.0.len() && j < other.0.len() {
            let (a, b) = (self.0[i], other.0[j]);
            let (s, e) = (a.0.max(b.0), a.1.min(b.1));
            if s <= e {
                out.push((s, e));
            }
            if a.1 < b.1 { i += 1 } else { j += 1 }
        }
        Self(out)
    }
}

impl fmt::Display for PortRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            return f.write_str("all");
        }
        for (i, (s, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if s == e {
                write!(f, "{s}")?
            } else {
                write!(f, "{s}-{e}")?
            }
        }
        Ok(())
    }
}

/// Ports per protocol, plus whether protocols without ports (ICMP, ICMPv6) are included.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortSet {
    pub tcp: PortRanges,
    pub udp: PortRanges,
    pub sctp: PortRanges,
    /// ICMP and ICMPv6, which a rule allows only when it lists no ports.
    pub portless: bool,
}

impl PortSet {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn all() -> Self {
        Self {
            tcp: PortRanges::all(),
            udp: PortRanges::all(),
            sctp: PortRanges::all(),
            portless: true,
        }
    }

    /// The ports of one protocol (empty for portless protocols).
    pub fn ranges(&self, protocol: Protocol) -> Option<&PortRanges> {
        match protocol {
            Protocol::Tcp => Some(&self.tcp),
            Protocol::Udp => Some(&self.udp),
            Protocol::Sctp => Some(&self.sctp),
            Protocol::Icmp | Protocol::Icmpv6 => None,
        }
    }

    /// A set of one protocol's ranges.
    pub fn of(protocol: Protocol, ranges: PortRanges) -> Self {
        let mut s = Self::empty();
        match protocol {
            Protocol::Tcp => s.tcp = ranges,
            Protocol::Udp => s.udp = ranges,
            Protocol::Sctp => s.sctp = ranges,
            Protocol::Icmp | Protocol::Icmpv6 => s.portless = !ranges.is_empty(),
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        !self.portless && self.tcp.is_empty() && self.udp.is_empty() && self.sctp.is_empty()
    }

    pub fn is_all(&self) -> bool {
        *self == Self::all()
    }

    /// Whether a connection is in the set; a ported protocol without a port is in it only when
    /// all of that protocol's ports are.
    pub fn contains(&self, protocol: Protocol, port: Option<u16>) -> bool {
        match (self.ranges(protocol), port) {
            (None, _) => self.portless,
            (Some(r), Some(p)) => r.contains(p),
            (Some(r), None) => r.is_all(),
        }
    }

    pub fn union(&self, o: &Self) -> Self {
        Self {
            tcp: self.tcp.union(&o.tcp),
            udp: self.udp.union(&o.udp),
            sctp: self.sctp.union(&o.sctp),
            portless: self.portless || o.portless,
        }
    }

    /// What is in `self` and not in `o`.
    pub fn minus(&self, o: &Self) -> Self {
        Self {
            tcp: self.tcp.minus(&o.tcp),
            udp: self.udp.minus(&o.udp),
            sctp: self.sctp.minus(&o.sctp),
            portless: self.portless && !o.portless,
        }
    }

    pub fn intersect(&self, o: &Self) -> Self {
        Self {
            tcp: self.tcp.intersect(&o.tcp),
            udp: self.udp.intersect(&o.udp),
            sctp: self.sctp.intersect(&o.sctp),
            portless: self.portless && o.portless,
        }
    }
}

/// `all`, `none`, or for example `TCP:80,443,8000-8080 UDP:53 ICMP`.
impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            return f.write_str("all");
        }
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut parts = Vec::new();
        for (name, r) in [("TCP", &self.tcp), ("UDP", &self.udp), ("SCTP", &self.sctp)] {
            if !r.is_empty() {
                parts.push(format!("{name}:{r}"));
            }
        }
        if self.portless {
            parts.push("ICMP".into());
        }
        f.write_str(&parts.join(" "))
    }
}

impl Serialize for PortSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ranges() -> impl Strategy<Value = PortRanges> {
        prop::collection::vec((any::<u16>(), any::<u16>()), 0..5).prop_map(|v| {
            v.into_iter().fold(PortRanges::empty(), |acc, (a, b)| {
                acc.union(&PortRanges::range(a, b))
            })
        })
    }

    #[test]
    fn union_merges_adjacent_ranges() {
        let r = PortRanges::range(80, 80).union(&PortRanges::range(81, 90));
        assert_eq!(r.ranges(), &[(80, 90)]);
        assert_eq!(r.to_string(), "80-90");
    }

    #[test]
    fn display_names_protocols() {
        let s = PortSet::of(Protocol::Tcp, PortRanges::range(443, 443))
            .union(&PortSet::of(Protocol::Udp, PortRanges::range(53, 53)));
        assert_eq!(s.to_string(), "TCP:443 UDP:53");
        assert_eq!(PortSet::all().to_string(), "all");
        assert_eq!(PortSet::empty().to_string(), "none");
    }

    proptest! {
        #[test]
        fn union_and_intersection_agree_with_membership(a in ranges(), b in ranges(), p: u16) {
            prop_assert_eq!(a.union(&b).contains(p), a.contains(p) || b.contains(p));
            prop_assert_eq!(a.intersect(&b).contains(p), a.contains(p) && b.contains(p));
            prop_assert_eq!(a.minus(&b).contains(p), a.contains(p) && !b.contains(p));
            // Still sorted, disjoint and non-adjacent: the canonical form equality relies on.
            let m = a.minus(&b);
            prop_assert_eq!(m.union(&PortRanges::empty()), m);
        }
    }
}
