//! The library behind `cargo backworks`: one module per command. The binary
//! (`main.rs`) only parses arguments and calls into it.

#![forbid(unsafe_code)]

pub mod build;
pub mod check;
pub(crate) mod deps;
pub mod error;
pub mod floor;
pub mod keys;
pub(crate) mod manifest;
pub mod new;
pub mod progress;
pub mod publish;
pub mod reproduce;
pub(crate) mod toolchain;

pub use error::Error;

/// What a target triple implies (`backworks-artifact`'s, shared with the
/// host).
pub use backworks_artifact::target;
