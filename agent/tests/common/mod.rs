//! Helpers shared by the integration tests: a cluster generator, a naive reference evaluator,
//! and loading documents through trustmap's own loader.

pub mod generate;
pub mod reference;

use std::path::Path;

use serde_json::Value;
use trustmap::inventory::{Loaded, Manifests};

/// Loads documents through trustmap's loader, as one JSON file.
pub fn load(docs: &[Value]) -> Loaded {
    let text: String = docs.iter().map(|d| format!("{d}\n")).collect();
    let mut m = Manifests::new();
    m.add_text(Path::new("generated.json"), &text)
        .unwrap_or_else(|e| panic!("generated manifests load: {e}"));
    m.finish()
}
