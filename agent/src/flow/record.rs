//! The JSON-lines flow record format, documented in docs/flow-records.md.

use std::{fmt, net::IpAddr, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Transport protocol of a connection, spelled as Kubernetes spells it where it can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
    #[serde(rename = "ICMP")]
    Icmp,
    #[serde(rename = "ICMPv6")]
    Icmpv6,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
            Self::Icmp => 1,
            Self::Icmpv6 => 58,
        }
    }

    /// The protocol of an IP protocol number, if trustmap tracks it.
    pub fn from_number(n: u8) -> Option<Self> {
        Some(match n {
            6 => Self::Tcp,
            17 => Self::Udp,
            132 => Self::Sctp,
            1 => Self::Icmp,
            58 => Self::Icmpv6,
            _ => return None,
        })
    }

    /// Whether connections of this protocol have ports (ICMP has none).
    pub fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp | Self::Sctp)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
            Self::Icmp => "ICMP",
            Self::Icmpv6 => "ICMPv6",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Self::Tcp),
            "UDP" => Ok(Self::Udp),
            "SCTP" => Ok(Self::Sctp),
            "ICMP" => Ok(Self::Icmp),
            "ICMPV6" => Ok(Self::Icmpv6),
            _ => Err(format!(
                "unknown protocol {s:?}: expected TCP, UDP, SCTP, ICMP or ICMPv6"
            )),
        }
    }
}

/// How the initiator of a connection was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Initiator {
    /// A TCP SYN without ACK was seen: certain.
    Syn,
    /// An SCTP INIT chunk was seen: certain.
    SctpInit,
    /// An ICMP echo request was seen: certain.
    EchoRequest,
    /// The first packet seen for a connectionless 5-tuple: its sender is taken as the initiator.
    FirstSeen,
    /// The connection existed before the agent started; read from the kernel's tables.
    PreExisting,
}

/// How a connection start ended (docs/flow-records.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The responder answered (TCP SYN-ACK, a UDP packet back, SCTP INIT-ACK, ICMP echo reply).
    Answered,
    /// The responder refused (TCP RST, SCTP ABORT, ICMP or ICMPv6 destination unreachable).
    Refused,
    /// No answer within the answer timeout (TCP, SCTP, ICMP).
    Unanswered,
    /// UDP with no packet back within the answer timeout: fire-and-forget traffic such as
    /// statsd or syslog, or a dead server. Learned by default.
    OneWay,
    /// The capture stopped before an answer or the timeout.
    Pending,
}

impl Outcome {
    /// A failed or unfinished attempt: not learned unless asked (`--include-unanswered`).
    pub fn is_attempt(self) -> bool {
        matches!(self, Self::Refused | Self::Unanswered | Self::Pending)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Refused => "refused",
            Self::Unanswered => "unanswered",
            Self::OneWay => "one_way",
            Self::Pending => "pending",
        }
    }
}

/// One end of a connection: an IP address, a pod (`namespace/name`) or a workload
/// (`namespace/Kind/name`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    Ip(IpAddr),
    Pod {
        namespace: String,
        name: String,
    },
    Workload {
        namespace: String,
        kind: String,
        name: String,
    },
}

/// Why a string is not an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint {input:?}: expected an IP address, namespace/pod or namespace/Kind/name")]
pub struct EndpointParseError {
    pub input: String,
}

impl FromStr for Endpoint {
    type Err = EndpointParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let err = || EndpointParseError { input: s.into() };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(err());
        }
        match parts.as_slice() {
            [namespace, name] => Ok(Self::Pod {
                namespace: (*namespace).into(),
                name: (*name).into(),
            }),
            [namespace, kind, name] => Ok(Self::Workload {
                namespace: (*namespace).into(),
                kind: (*kind).into(),
                name: (*name).into(),
            }),
            _ => Err(err()),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::Pod { namespace, name } => write!(f, "{namespace}/{name}"),
            Self::Workload {
                namespace,
                kind,
                name,
            } => write!(f, "{namespace}/{kind}/{name}"),
        }
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One observed connection start. `src` is always the initiator and `port` the server port, so
/// that learned rules never contain ephemeral ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    pub protocol: Protocol,
    pub src: Endpoint,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    pub dst: Endpoint,
    /// Destination (server) port; absent for ICMP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Host-side interface the connection start was seen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<DateTime<Utc>>,
    /// How `src` was decided to be the initiator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<Initiator>,
    /// ICMP type and code of the first packet, for ICMP and ICMPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// How the connection start ended. Absent in records written before trustmap knew, which
    /// are taken as answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The names the source resolved to the destination's address (DNS answers it received
    /// before the connection started, within their TTL and a grace period), sorted. Empty when
    /// none is known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dst_names: Vec<String>,
}

impl FlowRecord {
    /// A record with only the fields `check` and `learn` need.
    pub fn new(protocol: Protocol, src: Endpoint, dst: Endpoint, port: Option<u16>) -> Self {
        Self {
            protocol,
            src,
            src_port: None,
            dst,
            port,
            interface: None,
            first_seen: None,
            initiator: None,
            icmp_type: None,
            icmp_code: None,
            outcome: None,
            dst_names: Vec::new(),
        }
    }

    /// A refused, unanswered or unfinished attempt (see [`Outcome::is_attempt`]).
    pub fn is_attempt(&self) -> bool {
        self.outcome.is_some_and(Outcome::is_attempt)
    }

    /// Whether learning turns this record into an allow rule.
    pub fn learnable(&self, include_unanswered: bool) -> bool {
        include_unanswered || !self.is_attempt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parses_ip_pod_and_workload() {
        assert_eq!(
            "198.18.1.2".parse::<Endpoint>().unwrap(),
            Endpoint::Ip("198.18.1.2".parse().unwrap())
        );
        assert_eq!(
            "fd00::1".parse::<Endpoint>().unwrap(),
            Endpoint::Ip("fd00::1".parse().unwrap())
        );
        assert_eq!(
            "shop/web-1".parse::<Endpoint>().unwrap(),
            Endpoint::Pod {
                namespace: "shop".into(),
                name: "web-1".into()
            }
        );
        assert_eq!(
            "shop/Deployment/web".parse::<Endpoint>().unwrap(),
            Endpoint::Workload {
                namespace: "shop".into(),
                kind: "Deployment".into(),
                name: "web".into()
            }
        );
    }

    #[test]
    fn endpoint_rejects_empty_segments_and_too_many_parts() {
        for bad in ["", "shop/", "/web", "a/b/c/d", "a//b", "not an ip"] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn record_round_trips_and_omits_absent_fields() {
        let line = r#"{"protocol":"ICMPv6","src":"fd00::1:2","dst":"fd00::2:3","interface":"veth1","first_seen":"2026-11-24T04:20:00Z","initiator":"echo_request","icmp_type":128,"icmp_code":0}"#;
        let rec: FlowRecord = serde_json::from_str(line).unwrap();
        assert_eq!(rec.protocol, Protocol::Icmpv6);
        assert_eq!(rec.port, None);
        assert_eq!(serde_json::to_string(&rec).unwrap(), line);
    }

    #[test]
    fn protocol_parse_is_case_insensitive_and_names_the_choices() {
        assert_eq!("tcp".parse::<Protocol>().unwrap(), Protocol::Tcp);
        assert_eq!("icmpv6".parse::<Protocol>().unwrap(), Protocol::Icmpv6);
        let err = "GRE".parse::<Protocol>().unwrap_err();
        assert!(err.contains("TCP, UDP, SCTP"), "{err}");
    }
}
