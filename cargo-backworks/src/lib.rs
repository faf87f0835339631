//! The library behind `cargo backworks`: one module per command. The binary
//! (`main.rs`) only parses arguments and calls into it.

pub mod check;
pub mod target;
