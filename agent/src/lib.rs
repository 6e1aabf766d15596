//! trustmap: learns least-privilege Kubernetes NetworkPolicies from the connections pods really
//! make, flags traffic the current policies would deny, and alerts on unexpected flows.
//!
//! ```text
//!   pod veth ──TC (agent-ebpf)──▶ ring buffer ──▶ datapath ──▶ FlowRecord (flow)
//!                                                   │
//!   manifests / kube API ──▶ inventory ──▶ policy (evaluator) ──▶ check, explain, matrix
//!                                     └──▶ synth (learning)   ──▶ learned NetworkPolicies
//! ```
//!
//! Pure modules (`flow`, `policy`, `synth`, `dns`) take data and return data: no eBPF, no kube client, no
//! clock, no filesystem. IO lives in `datapath`, `netif`, `inventory` loaders and `cli`.

pub mod alert;
pub mod cli;
pub mod daemon;
pub mod datapath;
pub mod dns;
pub mod flow;
pub mod graph;
pub mod identity;
pub mod inventory;
pub mod kube;
pub mod lint;
pub mod metrics;
pub mod netif;
pub mod policy;
pub mod preexisting;
pub mod privileges;
pub mod reach;
pub mod render;
pub mod synth;
