//! Browser-free logic of the Confab web client, unit-tested on the host.
//!
//! Nothing here depends on Dioxus, wasm-bindgen or the generated protos: the app
//! (`confab-web`) converts wire types into these small types and back.
#![forbid(unsafe_code)]

pub mod errors;
pub mod format;
pub mod highlight;
pub mod keys;
pub mod markdown;
pub mod route;
pub mod scroll;
pub mod sequence;
pub mod snippet;
pub mod thread;
pub mod upload;
