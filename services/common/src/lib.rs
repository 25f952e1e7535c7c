//! What every Confab service shares: configuration from the environment, the one
//! error table, caller identity from gRPC metadata, graceful shutdown, the gRPC server
//! (health + reflection) and channels that reach a service remotely or in-process.
//!
//! Must never depend on a service crate: services depend on it.
#![forbid(unsafe_code)]

pub mod binary;
pub mod channel;
pub mod config;
pub mod error;
pub mod identity;
pub mod server;
pub mod shutdown;
#[cfg(feature = "testing")]
pub mod testing;

pub use channel::GrpcChannel;
pub use config::ConfigError;
pub use error::{ErrorCode, ServiceError};
pub use identity::Identity;
pub use shutdown::Shutdown;
