//! Flow graph tests.
