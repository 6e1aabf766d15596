//! Blast radius on small hand-written clusters.
