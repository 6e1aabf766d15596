//! Loads the TC programs, attaches them to host-side veths and drains connection starts (IO).
