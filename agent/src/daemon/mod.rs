//! `trustmap agent`: the DaemonSet's process. It observes (datapath), resolves identities
//! against the inventory, keeps the node's edges and learning graph, flags what the current
//! policies would deny, alerts on what the baseline does not allow, and serves `/metrics`,
//! `/healthz`, `/readyz` and `/flows`.
//!
//! ```text
//!   Feed (kube watches | manifests) ──snapshot when changed──▶ Flagger + Identities (pure)
//!   datapath ─▶ FlowRecord ─▶ Pipeline: Flagger ─▶ Outcome ─▶ EdgeTable, FlowGraph (state files)
//!                                                       └─▶ AlertGate ─▶ sinks (JSON lines, webhook, Events)
//!   FlowGraph ──every publish interval──▶ FlowEdges (kube::PublishLoop)
//!   modes ──plan (pure)──▶ freeze a namespace's learned policies as its baseline (store)
//! ```
//!
//! Pure: `baseline`, `flagger`, `modes`, `edges` (but for its state file). IO: `pipeline` (the
//! sinks), `server`, `sources`, `store`.

pub mod baseline;
pub mod edges;
pub mod flagger;
pub mod modes;
pub mod pipeline;
pub mod server;
pub mod sources;
pub mod store;

pub use edges::{EdgeStats, EdgeTable};
pub use flagger::{Flagger, Outcome, identity};
pub use modes::{MODE_ANNOTATION, Mode, ModeConfig};
pub use pipeline::{Pipeline, Sinks};
pub use sources::Feed;
