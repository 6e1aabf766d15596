//! Manifests as every offline command reads them: YAML or JSON (by the file name), strict or
//! lenient (the first byte decides). Any text gives objects or an error naming the file and
//! document, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use trustmap::inventory::Manifests;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let name = if mode & 1 == 0 {
        "fuzz.yaml"
    } else {
        "fuzz.json"
    };
    let mut m = Manifests::new().lenient(mode & 2 != 0);
    if m.add_text(Path::new(name), &text).is_ok() {
        let _ = m.finish();
    }
});
