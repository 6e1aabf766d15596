//! Ring-buffer records as the agent decodes them: a connection event or a DNS event (the first
//! byte picks which), any bytes, any length. The programs never write a malformed record, but a
//! record is decoded as untrusted all the same: a report or nothing, never a panic.
#![no_main]

use agent_ebpf::{DnsEvent, FlowEvent};
use libfuzzer_sys::fuzz_target;
use trustmap::datapath::{ClockOffset, decode, dns_report, event_to_report};

fuzz_target!(|data: &[u8]| {
    let Some((&which, record)) = data.split_first() else {
        return;
    };
    let clock = ClockOffset {
        wall_minus_mono_ns: 1_700_000_000_000_000_000,
    };
    if which & 1 == 0 {
        if let Some(ev) = decode::<FlowEvent>(record) {
            let _ = event_to_report(&ev, Some("eth0"), clock);
        }
    } else if let Some(ev) = decode::<DnsEvent>(record) {
        let _ = dns_report(&ev, clock);
    }
});
