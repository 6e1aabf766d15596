//! `trustmap agent`: the DaemonSet's process. It observes (datapath), resolves identities
//! against the inventory, keeps the node's edges, flags what the current policies would deny,
//! alerts on what the baseline does not allow, and serves `/metrics`, `/healthz`, `/readyz` and
//! `/flows`.
//!
//! ```text
//!   datapath ─▶ FlowRecord ─▶ Flagger (pure) ─▶ Outcome ─▶ EdgeTable (state file)
//!                                                      └─▶ AlertGate ─▶ sinks
//! ```

pub mod edges;
pub mod flagger;
pub mod modes;
pub mod server;

pub use edges::{EdgeStats, EdgeTable};
pub use flagger::{Flagger, Outcome, identity};
pub use modes::{MODE_ANNOTATION, Mode, ModeConfig};
