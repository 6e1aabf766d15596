//! `trustmap agent`: the DaemonSet's process. It observes (datapath), resolves identities
//! against the inventory, keeps the node's edges and learning graph, flags what the current
//! policies would deny, alerts on what the baseline does not allow, and serves `/metrics`,
//! `/healthz`, `/readyz` and `/flows`.
//!
//! ```text
//!   Feed (kube watches | manifests) ──snapshot when changed──▶ Flagger + Identities (pure)
//!   datapath ─▶ FlowRecord ─▶ Pipeline: Identities::classify_batch ─▶ Observation ─▶ FlowGraph (state file)
//!                                         └─ judged record ─▶ Flagger ─▶ Outcome ─▶ AlertGate ─▶ sinks
//!                                                                (JSON lines, webhook, Events)
//!   FlowGraph ──every publish interval──▶ FlowEdges (kube::PublishLoop)
//!   modes ──plan (pure)──▶ freeze a namespace's learned policies as its baseline (store)
//! ```
//!
//! One classifier ([`crate::identity::Identities`]) names and orients every connection, and one
//! store (the [`crate::graph::FlowGraph`]) keeps its edge: `/flows`, alerts, the HTML graph,
//! FlowEdges and learning all read it.
//!
//! Pure: `baseline`, `flagger`, `modes`. IO: `pipeline` (the sinks), `server`, `sources`,
//! `store`.

pub mod baseline;
pub mod flagger;
pub mod modes;
pub mod pipeline;
pub mod server;
pub mod sources;
pub mod store;

pub use flagger::{Flagger, Outcome};
pub use modes::{MODE_ANNOTATION, Mode, ModeConfig};
pub use pipeline::{Pipeline, Sinks};
pub use sources::Feed;
