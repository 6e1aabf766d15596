//! DNS responses read for the addresses they give names to. The wire format is decoded by
//! hickory-proto; this module only follows each question's CNAME chain to its A and AAAA
//! records. Pure.
//!
//! A response copied by the datapath may be cut short (the copy is bounded): the answer records
//! read before the cut are kept and the response is marked truncated. Anything else the decoder
//! rejects (a compression pointer that does not point backwards, which is how loops are
//! stopped, a label too long, a name over 255 octets, a record whose length lies) makes the
//! whole response malformed: nothing of it is used.

use std::{collections::BTreeSet, net::IpAddr};

use hickory_proto::{
    op::{Header, MessageType, OpCode, Query},
    rr::{Name, RData, Record},
    serialize::binary::{BinDecodable, BinDecoder, DecodeError},
};

/// One address the response gives a name to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resolution {
    /// The name the client asked for (lower case, no trailing dot), not the CNAME target
    /// that holds the address: it is the name the application knows the service by.
    pub name: String,
    pub ip: IpAddr,
    /// Seconds: the smallest TTL along the chain from the question to the address.
    pub ttl: u32,
}

/// What a response says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answers {
    pub resolutions: Vec<Resolution>,
    /// The copy ended before the last answer record did.
    pub truncated: bool,
}

/// Why a response was not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("not a DNS response to a standard query")]
    NotAResponse,
    #[error("malformed DNS message: {0}")]
    Malformed(String),
}

/// Most questions a response may carry: resolvers send one.
const MAX_QUESTIONS: u16 = 4;

/// Reads a DNS response (the UDP payload, or one TCP message without its length prefix), whole.
pub fn parse_response(msg: &[u8]) -> Result<Answers, DnsError> {
    parse(msg, false)
}

/// Reads the start of a DNS response whose copy was cut short of the message: an answer
/// record that fails to read is taken as cut, and the records before it are kept.
pub fn parse_cut_response(msg: &[u8]) -> Result<Answers, DnsError> {
    parse(msg, true)
}

fn parse(msg: &[u8], cut: bool) -> Result<Answers, DnsError> {
    let malformed = |e: DecodeError| DnsError::Malformed(e.to_string());
    let mut d = BinDecoder::new(msg);
    let header = Header::read(&mut d).map_err(malformed)?;
    if header.metadata.message_type != MessageType::Response
        || header.metadata.op_code != OpCode::Query
    {
        return Err(DnsError::NotAResponse);
    }
    if header.counts.queries == 0 || header.counts.queries > MAX_QUESTIONS {
        return Err(DnsError::Malformed(format!(
            "{} questions",
            header.counts.queries
        )));
    }
    let mut questions = Vec::new();
    for _ in 0..header.counts.queries {
        questions.push(Query::read(&mut d).map_err(malformed)?);
    }
    let mut records = Vec::new();
    let mut truncated = false;
    for _ in 0..header.counts.answers {
        match Record::<RData>::read(&mut d) {
            Ok(r) => records.push(r),
            // The decoder reports a record cut in its data as a wrong length: only the copy
            // being cut tells a cut from a lie.
            Err(_) if cut => {
                truncated = true;
                break;
            }
            Err(e) => return Err(malformed(e)),
        }
    }
    let mut resolutions: Vec<Resolution> = questions
        .iter()
        .flat_map(|q| chase(q.name(), &records))
        .collect();
    resolutions.sort();
    resolutions.dedup();
    Ok(Answers {
        resolutions,
        truncated,
    })
}

/// Reads the first message of a DNS-over-TCP stream: a two-octet length, then the message.
/// A copy shorter than the length, or than the payload (`cut`), is read as cut.
pub fn parse_tcp_response(stream: &[u8], cut: bool) -> Result<Answers, DnsError> {
    let [a, b, rest @ ..] = stream else {
        return Err(DnsError::Malformed("no length prefix".into()));
    };
    let len = usize::from(u16::from_be_bytes([*a, *b]));
    parse(&rest[..len.min(rest.len())], cut || len > rest.len())
}

fn text(name: &Name) -> String {
    let s = name.to_lowercase().to_ascii();
    s.strip_suffix('.').unwrap_or(&s).to_owned()
}

/// The addresses of `question`: its A and AAAA records and those of the names its CNAME
/// records lead to (in any order, as servers may send them), each with the smallest TTL of
/// its path.
fn chase(question: &Name, records: &[Record]) -> Vec<Resolution> {
    let asked = text(question);
    // (name, smallest TTL on the way to it)
    let mut reached: Vec<(String, u32)> = vec![(asked.clone(), u32::MAX)];
    let mut seen: BTreeSet<String> = BTreeSet::from([asked.clone()]);
    let mut i = 0;
    // Each name is entered once, so a CNAME loop ends.
    while i < reached.len() {
        let (name, ttl) = reached[i].clone();
        for r in records {
            if let RData::CNAME(target) = &r.data
                && text(&r.name) == name
            {
                let t = text(&target.0);
                if seen.insert(t.clone()) {
                    reached.push((t, ttl.min(r.ttl)));
                }
            }
        }
        i += 1;
    }
    let mut out = Vec::new();
    for (name, ttl) in &reached {
        for r in records {
            let ip = match &r.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => continue,
            };
            if text(&r.name) == *name {
                out.push(Resolution {
                    name: asked.clone(),
                    ip,
                    ttl: (*ttl).min(r.ttl),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
