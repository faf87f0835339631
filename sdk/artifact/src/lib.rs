//! Looking at and vouching for a built Backworks plugin library, from its
//! bytes alone, without loading it: what `cargo backworks` and the host share.
//!
//! - [`inspect`]: find the metadata record in ELF, PE or Mach-O bytes; walk a
//!   library's exports.
//! - [`check`]: is a file a valid plugin library (`cargo backworks check`,
//!   the build and publish gates, the registry's upload validation)? Returns
//!   reports with stable finding codes.
//! - [`floor`]: the oldest system a library loads on (the newest glibc
//!   release an ELF file needs, a Mach-O file's minimum macOS).
//! - [`deps`]: the dependency list a plugin carries (cargo-auditable's
//!   `.dep-v0` section), read back with size limits.
//! - [`target`]: what a Rust target triple says about the library built for
//!   it (format, architecture, extension, dist file names).
//! - [`signature`]: minisign signatures whose trusted comment binds name,
//!   version, target, ABI and sha256 (`docs/signing.md`), and their streamed
//!   verification.
//! - [`file`](mod@file): reading a possibly hostile file bounded and without blocking.
//! - [`terminal`]: text escaped for a terminal or a log line; both binaries
//!   print through it.
//! - [`write`](mod@write): writing a file whole (temporary file, then rename), and
//!   [`PathError`](write::PathError), the workspace's one I/O error.
//!
//! Depends on `backworks-abi` only among the workspace's crates, and has no
//! `unsafe` code.

#![forbid(unsafe_code)]

pub mod check;
pub mod deps;
pub mod file;
pub mod floor;
pub mod inspect;
pub mod signature;
pub mod target;
pub mod terminal;
pub mod write;

// The ABI's modules under the paths this crate's modules use.
#[cfg(test)]
use backworks_abi::TARGET;
use backworks_abi::{self as abi, metadata};
