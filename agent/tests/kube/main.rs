//! The Kubernetes side against a stand-in API server (no cluster runs here): watches and
//! reflectors, the FlowEdges publisher and garbage collection, and export.

mod export;
mod inventory;
mod publish;
mod stub;
