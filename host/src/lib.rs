//! The Backworks host: reads `backworks.yaml`, finds plugin libraries,
//! verifies and loads them, and serves HTTP requests through them.

pub mod auth;
pub mod config;
pub mod discovery;
pub mod dynamic;
pub mod executor;
pub mod http_serve;
pub mod inspect;
pub mod lifecycle;
pub mod loader;
pub mod lockfile;
pub mod marketplace;
pub mod metrics;
pub mod pipeline;
pub mod registry_server;
pub mod report;
pub mod server;
pub mod swap;
pub mod telemetry;
pub mod updater;
pub mod watch;
