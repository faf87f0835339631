//! The library behind `cargo backworks`: one module per command. The binary
//! (`main.rs`) only parses arguments and calls into it.

#![forbid(unsafe_code)]

pub mod build;
pub mod error;
pub mod keys;
pub mod manifest;
pub mod new;
pub mod progress;
pub mod publish;
pub mod reproduce;
pub mod toolchain;

pub use error::Error;

/// `cargo backworks check`: the check itself lives in the SDK, shared with
/// the host (the marketplace validates uploads with it).
pub use backworks_artifact::{check, target};
