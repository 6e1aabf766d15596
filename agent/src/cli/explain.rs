//! `trustmap explain`: the verdict on one connection, with its reasons, for people.

use std::{process::ExitCode, str::FromStr};

use crate::{
    flow::{Endpoint, FlowRecord, Protocol},
    policy::Evaluator,
};

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub source: super::source::SourceArgs,
    /// Source: an IP address, `namespace/pod` or `namespace/Kind/name`.
    #[arg(long)]
    pub from: Endpoint,
    /// Destination: an IP address, `namespace/pod` or `namespace/Kind/name`.
    #[arg(long)]
    pub to: Endpoint,
    /// Destination port and protocol: `8080/TCP`, `53/UDP`, `8080` (TCP) or `ICMP`.
    #[arg(long)]
    pub port: PortArg,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = ExplainFormat::Text)]
    pub output: ExplainFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ExplainFormat {
    Text,
    Json,
}

/// `PORT[/PROTOCOL]` or a portless protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortArg {
    pub protocol: Protocol,
    pub port: Option<u16>,
}

impl FromStr for PortArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (port, protocol) = match s.split_once('/') {
            Some((p, proto)) => (Some(p), proto.parse::<Protocol>()?),
            None if s.chars().all(|c| c.is_ascii_digit()) => (Some(s), Protocol::Tcp),
            None => (None, s.parse::<Protocol>()?),
        };
        let port = port
            .map(|p| match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("invalid port {p:?}: expected 1-65535")),
            })
            .transpose()?;
        match (port, protocol.has_ports()) {
            (None, true) => Err(format!("{protocol} needs a port, such as 8080/{protocol}")),
            (Some(_), false) => Err(format!("{protocol} has no ports")),
            _ => Ok(Self { protocol, port }),
        }
    }
}

pub fn run(args: ExplainArgs) -> anyhow::Result<ExitCode> {
    args.source
        .reject_namespace("explain", "names both ends in full (namespace/Kind/name)")?;
    let loaded = args.source.load()?;
    let ev = Evaluator::new(&loaded.inventory, &loaded.policies).with_admin(&loaded.admin);
    let record = FlowRecord::new(args.port.protocol, args.from, args.to, args.port.port);
    let conn = ev.connection(&record)?;
    let e = ev.explain(&conn);
    match args.output {
        ExplainFormat::Text => print!("{e}"),
        ExplainFormat::Json => println!("{}", serde_json::to_string_pretty(&e)?),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_argument_forms() {
        let p = |s: &str| s.parse::<PortArg>();
        assert_eq!(
            p("8080/TCP").unwrap(),
            PortArg {
                protocol: Protocol::Tcp,
                port: Some(8080)
            }
        );
        assert_eq!(p("53/udp").unwrap().protocol, Protocol::Udp);
        assert_eq!(p("443").unwrap().port, Some(443));
        assert_eq!(p("ICMP").unwrap().port, None);
        for bad in ["0/TCP", "70000", "TCP", "8/ICMP", "80/GRE"] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }
}
