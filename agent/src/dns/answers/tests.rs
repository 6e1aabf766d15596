//! Messages are built octet by octet from RFC 1035 section 4 (header, question, resource
//! records, label compression), so each test shows the wire form it reads.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

const A: u16 = 1;
const CNAME: u16 = 5;
const AAAA: u16 = 28;
/// QR set, opcode QUERY, RD and RA set, RCODE 0.
const RESPONSE: u16 = 0x8180;

fn labels(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name.split('.') {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

fn header(flags: u16, questions: u16, answers: u16) -> Vec<u8> {
    let mut h = vec![0x12, 0x34];
    for v in [flags, questions, answers, 0, 0] {
        h.extend_from_slice(&v.to_be_bytes());
    }
    h
}

fn question(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = labels(name);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// A resource record of class IN whose owner is `owner` (labels or a pointer).
fn record(owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut r = owner.to_vec();
    r.extend_from_slice(&rtype.to_be_bytes());
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&ttl.to_be_bytes());
    r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    r.extend_from_slice(rdata);
    r
}

/// A pointer to offset 12: the question's name.
const TO_QUESTION: [u8; 2] = [0xc0, 12];

fn message(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn res(name: &str, ip: IpAddr, ttl: u32) -> Resolution {
    Resolution {
        name: name.into(),
        ip,
        ttl,
    }
}

#[test]
fn an_a_record_names_its_address() {
    let m = message(&[
        header(RESPONSE, 1, 1),
        question("api.payments.example", A),
        record(&TO_QUESTION, A, 30, &[203, 0, 113, 10]),
    ]);
    assert_eq!(
        parse_response(&m),
        Ok(Answers {
            resolutions: vec![res(
                "api.payments.example",
                IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
                30
            )],
            truncated: false,
        })
    );
}

#[test]
fn a_cname_chain_gives_its_addresses_to_the_name_asked_with_the_smallest_ttl() {
    let v6: Ipv6Addr = "fd00::20".parse().unwrap();
    // Out of order: the addresses of the last name first, then the chain, as some servers do.
    let m = message(&[
        header(RESPONSE, 1, 4),
        question("WWW.Shop.Example", A),
        record(&labels("edge.cdn.example"), A, 60, &[203, 0, 113, 20]),
        record(&labels("edge.cdn.example"), AAAA, 600, &v6.octets()),
        record(
            &labels("shop.cdn.example"),
            CNAME,
            300,
            &labels("edge.cdn.example"),
        ),
        record(&TO_QUESTION, CNAME, 3600, &labels("shop.cdn.example")),
    ]);
    let a = parse_response(&m).expect("a response");
    assert_eq!(
        a.resolutions,
        [
            res(
                "www.shop.example",
                IpAddr::V4(Ipv4Addr::new(203, 0, 113, 20)),
                60
            ),
            res("www.shop.example", IpAddr::V6(v6), 300),
        ]
    );
}

#[test]
fn records_of_other_names_are_not_given_to_the_question() {
    let m = message(&[
        header(RESPONSE, 1, 1),
        question("api.payments.example", A),
        record(&labels("tracker.example"), A, 30, &[203, 0, 113, 66]),
    ]);
    assert_eq!(parse_response(&m).unwrap().resolutions, []);
}

#[test]
fn a_cname_loop_ends() {
    let m = message(&[
        header(RESPONSE, 1, 2),
        question("a.example", A),
        record(&TO_QUESTION, CNAME, 30, &labels("b.example")),
        record(&labels("b.example"), CNAME, 30, &labels("a.example")),
    ]);
    assert_eq!(parse_response(&m).unwrap().resolutions, []);
}

#[test]
fn a_copy_cut_short_keeps_the_records_before_the_cut() {
    let m = message(&[
        header(RESPONSE, 1, 2),
        question("api.payments.example", A),
        record(&TO_QUESTION, A, 30, &[203, 0, 113, 10]),
        record(&TO_QUESTION, A, 30, &[203, 0, 113, 11]),
    ]);
    let cut = &m[..m.len() - 3];
    // Whole, those octets lie about the last record's length.
    assert!(matches!(parse_response(cut), Err(DnsError::Malformed(_))));
    assert_eq!(
        parse_cut_response(cut),
        Ok(Answers {
            resolutions: vec![res(
                "api.payments.example",
                IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
                30
            )],
            truncated: true,
        })
    );
}

#[test]
fn compression_pointers_that_loop_or_point_forward_are_malformed() {
    // The answer's owner is a pointer to itself (offset of the answer).
    let q = question("a.example", A);
    let at = (12 + q.len()) as u8;
    let self_loop = message(&[
        header(RESPONSE, 1, 1),
        q.clone(),
        record(&[0xc0, at], A, 30, &[203, 0, 113, 1]),
    ]);
    assert!(matches!(
        parse_response(&self_loop),
        Err(DnsError::Malformed(_))
    ));
    // Two labels pointing at each other: the second points forward.
    let mut ping_pong = message(&[header(RESPONSE, 1, 1), q]);
    let p = ping_pong.len() as u8;
    ping_pong.extend_from_slice(&[1, b'x', 0xc0, p + 4, 1, b'y', 0xc0, p]);
    ping_pong.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 203, 0, 113, 1]);
    assert!(matches!(
        parse_response(&ping_pong),
        Err(DnsError::Malformed(_))
    ));
}

#[test]
fn queries_and_other_opcodes_are_not_responses() {
    let query = message(&[header(0x0100, 1, 0), question("a.example", A)]);
    assert_eq!(parse_response(&query), Err(DnsError::NotAResponse));
    // opcode 5 (UPDATE)
    let update = message(&[header(0x8000 | (5 << 11), 1, 0), question("a.example", A)]);
    assert_eq!(parse_response(&update), Err(DnsError::NotAResponse));
}

#[test]
fn a_header_or_question_cut_short_is_malformed() {
    let m = message(&[header(RESPONSE, 1, 0), question("a.example", A)]);
    for len in [0, 5, 11, 12, 16, m.len() - 1] {
        assert!(
            matches!(parse_response(&m[..len]), Err(DnsError::Malformed(_))),
            "{len} octets"
        );
    }
    let none = message(&[header(RESPONSE, 0, 0)]);
    assert!(matches!(parse_response(&none), Err(DnsError::Malformed(_))));
}

#[test]
fn a_tcp_message_is_read_after_its_length() {
    let m = message(&[
        header(RESPONSE, 1, 1),
        question("db.example", A),
        record(&TO_QUESTION, A, 5, &[203, 0, 113, 5]),
    ]);
    let mut stream = (m.len() as u16).to_be_bytes().to_vec();
    stream.extend_from_slice(&m);
    stream.extend_from_slice(&[0xde, 0xad]);
    assert_eq!(
        parse_tcp_response(&stream, false).unwrap().resolutions,
        [res(
            "db.example",
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)),
            5
        )]
    );
    assert!(parse_tcp_response(&[0], false).is_err());
    // A stream cut inside the message is read as cut.
    let short = &stream[..stream.len() - 4];
    assert!(parse_tcp_response(short, false).unwrap().truncated);
}

#[test]
fn no_cut_and_no_flipped_octet_makes_it_panic() {
    let m = message(&[
        header(RESPONSE, 1, 2),
        question("www.shop.example", A),
        record(&TO_QUESTION, CNAME, 300, &labels("edge.cdn.example")),
        record(&labels("edge.cdn.example"), A, 60, &[203, 0, 113, 20]),
    ]);
    for len in 0..=m.len() {
        let _ = parse_response(&m[..len]);
        let _ = parse_cut_response(&m[..len]);
    }
    for i in 0..m.len() {
        for v in [0x00, 0x3f, 0x40, 0xc0, 0xff] {
            let mut x = m.clone();
            x[i] = v;
            let _ = parse_response(&x);
        }
    }
}
