//! Flow records: what `observe` writes and what `check` and `learn` read.
//!
//! Pure: parsing and formatting only, no IO.

mod record;

pub use record::{Endpoint, EndpointParseError, FlowRecord, Initiator, Outcome, Protocol};
