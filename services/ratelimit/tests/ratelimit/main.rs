//! Integration tests of confab-ratelimit, one binary: the contract suite on both
//! backends, replicas sharing one redis-server, Redis outages, and the binary itself.

mod binary;
mod contract;
mod outage;
mod replicas;

pub const BIN: &str = env!("CARGO_BIN_EXE_confab-ratelimit");
