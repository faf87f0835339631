//! Rules about the workspace as a whole: the dependency rules between its
//! crates, the code map of ARCHITECTURE.md, the template `cargo backworks new`
//! carries.

#![forbid(unsafe_code)]

mod code_map;
mod deps;
mod embedded;
