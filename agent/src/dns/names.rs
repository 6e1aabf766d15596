//! What each pod has resolved: per pod, the names its DNS answers gave to each address, kept for
//! the answer's TTL plus a grace period (applications keep using an address a while after its
//! TTL ends, and connection pools far longer). Pure: the caller gives the time.
//!
//! A connection from a pod to an external address then carries the names that pod resolved to
//! that address before it connected, which is the only sound attribution: two pods may resolve
//! different names to one shared address (a CDN), and a name another pod resolved says nothing
//! about this one.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    time::Duration,
};

use chrono::{DateTime, Utc};

use super::answers::Resolution;

/// The defaults: grace after the TTL, and the most names kept per pod.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
pub const DEFAULT_PER_POD: usize = 4096;

/// When a name was first given to an address for a pod, and until when it is remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    since: DateTime<Utc>,
    until: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NameMap {
    grace: chrono::Duration,
    per_pod: usize,
    /// Pod address → resolved address → name → (first answered, may be forgotten after).
    pods: HashMap<IpAddr, HashMap<IpAddr, HashMap<String, Span>>>,
    /// Entries dropped because a pod was at its limit.
    pub evicted: u64,
}

impl Default for NameMap {
    fn default() -> Self {
        Self::new(DEFAULT_GRACE, DEFAULT_PER_POD)
    }
}

impl NameMap {
    pub fn new(grace: Duration, per_pod: usize) -> Self {
        Self {
            grace: chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX),
            per_pod: per_pod.max(1),
            pods: HashMap::new(),
            evicted: 0,
        }
    }

    /// Records the answers `pod` received at `at`. A name seen again has its time extended,
    /// never shortened, and keeps when it was first seen.
    pub fn record(&mut self, pod: IpAddr, answers: &[Resolution], at: DateTime<Utc>) {
        let entries = self.pods.entry(pod).or_default();
        for r in answers {
            let until = at + chrono::Duration::seconds(i64::from(r.ttl)) + self.grace;
            let names = entries.entry(r.ip).or_default();
            let e = names
                .entry(r.name.clone())
                .or_insert(Span { since: at, until });
            e.since = e.since.min(at);
            e.until = e.until.max(until);
        }
        let count: usize = entries.values().map(HashMap::len).sum();
        if count > self.per_pod {
            self.evicted += evict(entries, count - self.per_pod) as u64;
        }
    }

    /// The names `pod` had resolved to `ip` by `at` and still remembers then, sorted: an
    /// answer that came after `at` does not name a connection that started at `at`.
    pub fn names(&self, pod: IpAddr, ip: IpAddr, at: DateTime<Utc>) -> Vec<String> {
        self.pods
            .get(&pod)
            .and_then(|m| m.get(&ip))
            .map(|names| {
                names
                    .iter()
                    .filter(|(_, span)| span.since <= at && at <= span.until)
                    .map(|(n, _)| n.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets what has expired at `at`, and pods with nothing left.
    pub fn prune(&mut self, at: DateTime<Utc>) {
        self.pods.retain(|_, m| {
            m.retain(|_, names| {
                names.retain(|_, span| span.until >= at);
                !names.is_empty()
            });
            !m.is_empty()
        });
    }

    /// Forgets a pod (it is gone, and its address may be given to another).
    pub fn forget_pod(&mut self, pod: IpAddr) {
        self.pods.remove(&pod);
    }

    /// Names remembered, over all pods.
    pub fn len(&self) -> usize {
        self.pods
            .values()
            .flat_map(HashMap::values)
            .map(HashMap::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

/// Drops the `n` entries that expire first; returns how many were dropped.
fn evict(entries: &mut HashMap<IpAddr, HashMap<String, Span>>, n: usize) -> usize {
    let mut all: Vec<(DateTime<Utc>, IpAddr, String)> = entries
        .iter()
        .flat_map(|(ip, names)| names.iter().map(|(name, s)| (s.until, *ip, name.clone())))
        .collect();
    all.sort();
    for (_, ip, name) in all.iter().take(n) {
        if let Some(names) = entries.get_mut(ip) {
            names.remove(name);
            if names.is_empty() {
                entries.remove(ip);
            }
        }
    }
    n.min(all.len())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, last))
    }

    fn pod(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    fn r(name: &str, last: u8, ttl: u32) -> Resolution {
        Resolution {
            name: name.into(),
            ip: ip(last),
            ttl,
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_name_is_kept_for_its_ttl_and_the_grace_then_forgotten() {
        let mut m = NameMap::new(Duration::from_secs(60), 100);
        m.record(pod(1), &[r("api.payments.example", 10, 30)], t(0));
        assert_eq!(m.names(pod(1), ip(10), t(90)), ["api.payments.example"]);
        assert_eq!(m.names(pod(1), ip(10), t(91)), [] as [String; 0]);
        m.prune(t(91));
        assert!(m.is_empty());
    }

    #[test]
    fn an_answer_after_the_connection_started_does_not_name_it() {
        let mut m = NameMap::new(Duration::ZERO, 100);
        m.record(pod(1), &[r("late.example", 10, 300)], t(10));
        assert_eq!(m.names(pod(1), ip(10), t(9)), [] as [String; 0]);
        assert_eq!(m.names(pod(1), ip(10), t(10)), ["late.example"]);
        // An earlier answer for the same name moves its start back.
        m.record(pod(1), &[r("late.example", 10, 300)], t(5));
        assert_eq!(m.names(pod(1), ip(10), t(9)), ["late.example"]);
    }

    #[test]
    fn names_are_per_pod_and_per_address() {
        let mut m = NameMap::new(Duration::ZERO, 100);
        m.record(
            pod(1),
            &[r("a.example", 10, 30), r("cdn.example", 10, 30)],
            t(0),
        );
        m.record(pod(2), &[r("b.example", 10, 30)], t(0));
        assert_eq!(m.names(pod(1), ip(10), t(1)), ["a.example", "cdn.example"]);
        assert_eq!(m.names(pod(2), ip(10), t(1)), ["b.example"]);
        assert_eq!(m.names(pod(2), ip(11), t(1)), [] as [String; 0]);
        assert_eq!(m.names(pod(3), ip(10), t(1)), [] as [String; 0]);
        m.forget_pod(pod(1));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn a_new_answer_extends_a_name_and_an_older_one_does_not_shorten_it() {
        let mut m = NameMap::new(Duration::ZERO, 100);
        m.record(pod(1), &[r("a.example", 10, 300)], t(0));
        m.record(pod(1), &[r("a.example", 10, 5)], t(10));
        assert_eq!(m.names(pod(1), ip(10), t(299)), ["a.example"]);
        // The address moved: the old one is kept until it expires, the new one is known.
        m.record(pod(1), &[r("a.example", 11, 60)], t(20));
        assert_eq!(m.names(pod(1), ip(11), t(21)), ["a.example"]);
        assert_eq!(m.names(pod(1), ip(10), t(21)), ["a.example"]);
    }

    #[test]
    fn a_pod_over_its_limit_loses_the_names_that_expire_first() {
        let mut m = NameMap::new(Duration::ZERO, 2);
        m.record(pod(1), &[r("a.example", 1, 10)], t(0));
        m.record(pod(1), &[r("b.example", 2, 100)], t(0));
        m.record(pod(1), &[r("c.example", 3, 50)], t(0));
        assert_eq!(m.len(), 2);
        assert_eq!(m.evicted, 1);
        assert_eq!(m.names(pod(1), ip(1), t(1)), [] as [String; 0]);
        assert_eq!(m.names(pod(1), ip(3), t(1)), ["c.example"]);
    }
}
