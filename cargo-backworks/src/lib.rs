//! The library behind `cargo backworks`: one module per command. The binary
//! (`main.rs`) only parses arguments and calls into it.

pub mod build;
pub mod check;
pub mod error;
pub mod keys;
pub mod manifest;
pub mod new;
pub mod progress;
pub mod reproduce;
pub mod target;
pub mod toolchain;

pub use error::Error;
