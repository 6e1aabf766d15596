//! DNS responses as the agent reads them from the DNS ring buffer: a UDP payload, whole or cut
//! at the capture limit, and a TCP segment (length-prefixed), whole or cut. Any bytes give an
//! error or answers, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustmap::dns::{parse_cut_response, parse_response, parse_tcp_response};

fuzz_target!(|data: &[u8]| {
    let _ = parse_response(data);
    let _ = parse_cut_response(data);
    let _ = parse_tcp_response(data, false);
    let _ = parse_tcp_response(data, true);
});
