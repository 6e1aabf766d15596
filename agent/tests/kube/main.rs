//! The Kubernetes side against a stand-in API server (no cluster runs here): watches and
//! reflectors, the FlowEdges publisher and garbage collection, export, and the agent's wiring
//! (inventory refresh, publishing loop, Event sink).

mod agent;
mod export;
mod inventory;
mod publish;
mod stub;
