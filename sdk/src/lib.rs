//! The Backworks plugin SDK.
//!
//! A plugin is a `cdylib` crate with one type that implements [`BackworksPlugin`]
//! and one [`export_plugin!`] line:
//!
//! ```
//! use backworks_plugin_sdk::*;
//!
//! #[derive(Default)]
//! pub struct Hello;
//!
//! #[async_trait]
//! impl BackworksPlugin for Hello {
//!     fn name(&self) -> &str { "hello" }
//!     fn version(&self) -> &str { env!("CARGO_PKG_VERSION") }
//!     fn description(&self) -> &str { "says hello" }
//!
//!     async fn process_endpoint_data(&self, endpoint: &str, _method: &str, _data: &str)
//!         -> BackworksResult<Option<String>> {
//!         Ok((endpoint == "/hello").then(|| json!({"hello": "world"}).to_string()))
//!     }
//! }
//!
//! export_plugin!(Hello);
//! ```
//!
//! `export_plugin!` turns the type into the stable C ABI described in
//! `docs/abi.md` (module [`abi`]): the exported functions `plugin_info` and
//! `plugin_vtable`, and the static metadata record `backworks_plugin_metadata`
//! that tools read from the file's bytes without running any plugin code
//! (module [`metadata`]).
//!
//! `use backworks_plugin_sdk::*;` brings in everything a plugin usually needs:
//! the trait, [`BackworksResult`]/[`BackworksError`], the HTTP types passed to
//! the request hooks, [`async_trait`](macro@async_trait), [`Value`], [`json!`] and
//! [`export_plugin!`].
//!
//! **Logging** (ABI 1.1): a plugin logs with `tracing` or `log` as usual.
//! When the host initializes it with its services (`initialize_with_host`),
//! the SDK installs, in the plugin's own copies of those crates, a global
//! `tracing` dispatcher and a `log` logger that forward every event the host
//! wants (its `RUST_LOG` filter decides) into the host's log, under the
//! plugin's name. A plugin that installs its own subscriber or logger first
//! keeps it.
//!
//! This crate is what plugins link, and nothing more: the ABI contract both
//! sides share is the crate `backworks-abi` (re-exported as [`abi`], with
//! its [`metadata`] parser); reading, checking and signing a built library
//! is `backworks-artifact`, the registry format `backworks-registry`.

pub mod abi;
mod error;
mod host_log;
mod plugin;

pub use async_trait::async_trait;
pub use backworks_abi::http::{HttpRequest, HttpResponse, RequestAction, ResponseExchange};
/// The metadata record's parser (`backworks_abi::metadata`).
pub use backworks_abi::metadata;
pub use error::{BackworksError, BackworksResult};
pub use plugin::BackworksPlugin;
pub use serde_json::{Value, json};

/// The version of this SDK, as written into every plugin's metadata record.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The target triple this copy of the SDK was compiled for (and so the
/// target of the plugin it is linked into).
pub use backworks_abi::TARGET;
