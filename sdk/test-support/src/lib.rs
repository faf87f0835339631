//! What the workspace's tests and benchmarks share (never published, only
//! ever a dev-dependency):
//!
//! - [`fixtures`] (re-exported here): plugins built for real with cargo and
//!   the C compiler, once per run, into `target/fixtures`; a minimal loader
//!   that checks the record before calling in (`load_fresh`); record edits
//!   (`with_record`).
//! - [`check_files`]: the files `cargo backworks check` is tested and
//!   benchmarked on (broken plugins, object files, archives, grown plugins).
//! - [`harness`] (feature `host`): the host's end-to-end harness, shared by
//!   its `tests/cli` and its benchmarks.
//! - [`platforms`]: the tools built for Windows and aarch64 Linux, and wine
//!   and qemu-user to run them here.

// Helpers for test binaries: not every one has a `Debug` worth writing.
#![allow(missing_debug_implementations)]

// `fixtures` loads plugins (dlopen, their C ABI): the only module here
// with `unsafe`.
#[forbid(unsafe_code)]
pub mod check_files;
pub mod fixtures;
#[cfg(feature = "host")]
#[forbid(unsafe_code)]
pub mod harness;
#[forbid(unsafe_code)]
pub mod platforms;

pub use fixtures::*;
