//! The Backworks host: reads `backworks.yaml`, finds plugin libraries,
//! verifies and loads them, and serves HTTP requests through them.
//!
//! The public modules are what the `backworks` binary (`main.rs`), the
//! benchmarks, the end-to-end tests and the fuzz targets use; the rest is
//! the host's own (`pub(crate)`). Only [`loader`] and `dynamic` (dlopen,
//! the plugin's C ABI) and the process tier's `process::confine` (a
//! worker's descriptors, `prctl`) may hold `unsafe` code; every other
//! module forbids it.

#[forbid(unsafe_code)]
pub(crate) mod auth;
#[forbid(unsafe_code)]
pub mod config;
#[forbid(unsafe_code)]
pub mod discovery;
pub mod dynamic;
#[forbid(unsafe_code)]
pub(crate) mod executor;
#[forbid(unsafe_code)]
pub mod http_serve;
#[forbid(unsafe_code)]
pub mod inspect;
pub mod lifecycle;
pub mod loader;
#[forbid(unsafe_code)]
pub mod lockfile;
#[forbid(unsafe_code)]
pub mod log_output;
#[forbid(unsafe_code)]
pub mod marketplace;
#[forbid(unsafe_code)]
pub mod metrics;
#[forbid(unsafe_code)]
pub(crate) mod pipeline;
#[cfg(target_os = "linux")]
pub mod process;
#[forbid(unsafe_code)]
pub mod registry_server;
#[forbid(unsafe_code)]
pub mod report;
#[forbid(unsafe_code)]
pub mod server;
#[forbid(unsafe_code)]
pub mod swap;
#[forbid(unsafe_code)]
pub mod telemetry;
#[forbid(unsafe_code)]
pub(crate) mod ticks;
#[forbid(unsafe_code)]
pub(crate) mod updater;
#[forbid(unsafe_code)]
pub(crate) mod watch;
#[forbid(unsafe_code)]
pub(crate) mod watchdog;
