//! Synthesis tests.
