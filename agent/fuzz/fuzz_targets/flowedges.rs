//! FlowEdges objects as `export --from-cluster` decodes them from the API server (another node's
//! agent, or anyone who may write the kind, wrote them). Any bytes give an object or an error,
//! never a panic; decoded edges merge and shard within the budget.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trustmap::kube::{FlowEdges, crd};

fuzz_target!(|data: &[u8]| {
    let Ok(obj) = serde_json::from_slice::<FlowEdges>(data) else {
        return;
    };
    let merged = crd::merge_edges(obj.spec.edges);
    let count = merged.len();
    let shards = crd::shard("fuzz-node", merged, 4096);
    assert_eq!(
        shards.iter().map(|s| s.edges.len()).sum::<usize>(),
        count,
        "sharding lost or duplicated edges"
    );
});
