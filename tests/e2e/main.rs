//! Privileged end-to-end tests: the real `trustmap` binary against a mini-cluster of network
//! namespaces. One test binary, so that the build stays lean. Run as root via `cargo xtask test`;
//! without root they fail loudly rather than skip.

mod agent;
mod capture;
mod cluster;
mod container;
mod dns;
mod integrity;
mod learn;
mod lifecycle;
mod observe;
