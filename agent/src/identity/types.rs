//! The identities flows are learned in: workload references, peers, observations.

use std::{fmt, net::IpAddr, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::flow::{Endpoint, Initiator, Protocol};

/// A workload: `namespace/Kind/name`. A pod without owner is its own workload, of kind `Pod`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadRef {
    pub namespace: String,
    pub kind: String,
    pub name: String,
}

impl WorkloadRef {
    pub fn new(namespace: &str, kind: &str, name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            kind: kind.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind, self.name)
    }
}

impl FromStr for WorkloadRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split('/').collect::<Vec<_>>().as_slice() {
            [ns, kind, name] if !ns.is_empty() && !kind.is_empty() && !name.is_empty() => {
                Ok(Self::new(ns, kind, name))
            }
            _ => Err(format!(
                "invalid workload {s:?}: expected namespace/Kind/name"
            )),
        }
    }
}

impl Serialize for WorkloadRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WorkloadRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// One end of a learned edge.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer {
    /// Pods of a workload on the pod network.
    Workload(WorkloadRef),
    /// A node address, also that of a hostNetwork pod. `name` is the node's name, or its
    /// address when the manifests do not name it.
    Node { name: String, ip: IpAddr },
    /// An address outside the cluster.
    External(IpAddr),
    /// The cluster DNS service (its pods, whatever their IPs), on port 53.
    ClusterDns,
}

impl Peer {
    pub fn workload(&self) -> Option<&WorkloadRef> {
        match self {
            Self::Workload(w) => Some(w),
            _ => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Workload(w) => write!(f, "{w}"),
            Self::Node { name, ip } if name == &ip.to_string() => write!(f, "node {ip}"),
            Self::Node { name, ip } => write!(f, "node {name} ({ip})"),
            Self::External(ip) => write!(f, "external {ip}"),
            Self::ClusterDns => f.write_str("cluster DNS"),
        }
    }
}

/// An end of a sample connection, as recorded: an address, or a name in hand-written records.
/// Kept small (24 bytes) since every edge holds two.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SampleEnd {
    Ip(IpAddr),
    Named(Box<str>),
}

impl From<&Endpoint> for SampleEnd {
    fn from(e: &Endpoint) -> Self {
        match e {
            Endpoint::Ip(ip) => Self::Ip(*ip),
            other => Self::Named(other.to_string().into()),
        }
    }
}

impl fmt::Display for SampleEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Named(n) => f.write_str(n),
        }
    }
}

impl Serialize for SampleEnd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SampleEnd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.parse() {
            Ok(ip) => Self::Ip(ip),
            Err(_) => Self::Named(s.into()),
        })
    }
}

/// One connection of an edge, as it was recorded (before identity), kept as evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub src: SampleEnd,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    pub dst: SampleEnd,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<Initiator>,
    /// How that connection start ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<crate::flow::Outcome>,
}

/// A connection in learned terms: who to whom, on which pod port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub src: Peer,
    pub dst: Peer,
    pub protocol: Protocol,
    /// The destination pod's port (a Service's targetPort, not its port); `None` for ICMP.
    pub port: Option<u16>,
    pub seen: Option<DateTime<Utc>>,
    pub sample: Sample,
    /// For a destination outside the cluster: the names the source resolved to its address
    /// before connecting (the record's `dst_names`). Empty otherwise.
    pub dst_names: Vec<String>,
}
