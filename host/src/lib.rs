//! The Backworks host: reads `backworks.yaml`, finds plugin libraries,
//! verifies and loads them, and serves HTTP requests through them.

pub mod auth;
pub mod config;
pub mod inspect;
pub mod metrics;
pub mod telemetry;
