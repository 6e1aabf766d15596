//! Flow records as `learn`, `check` and the others read them: JSON lines. Any text gives a
//! record or an error per line, never a panic, and a record read back from its own JSON is the
//! same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustmap::flow::FlowRecord;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        if let Ok(r) = serde_json::from_str::<FlowRecord>(line) {
            let again = serde_json::to_string(&r).expect("a record serializes");
            let back: FlowRecord = serde_json::from_str(&again).expect("its own JSON reads back");
            assert_eq!(back, r);
        }
    }
});
