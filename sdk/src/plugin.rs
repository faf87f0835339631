//! The trait every plugin implements, built-in or loaded from a library.

use async_trait::async_trait;
use serde_json::Value;

use crate::{BackworksResult, HttpRequest, HttpResponse, RequestAction};

/// A Backworks plugin.
///
/// Only `name`, `version` and `description` are required; every hook has a
/// default that does nothing, so a plugin implements just what it needs.
///
/// Lifecycle, as the host drives it: `initialize` once with the plugin's
/// `config` from `backworks.yaml` (as JSON), then any number of concurrent
/// `health_check`, `before_request`, `after_response` and
/// `process_endpoint_data` calls, then `shutdown` once when no other hook is
/// running. A dynamically loaded plugin runs its hooks on a tokio runtime of
/// its own (see `docs/abi.md`, "Threading"), so hooks may use tokio freely.
#[async_trait]
pub trait BackworksPlugin: Send + Sync + 'static {
    /// A short, stable name, e.g. `weather`.
    fn name(&self) -> &str;
    /// The plugin's version (semver).
    fn version(&self) -> &str;
    /// One line saying what the plugin does.
    fn description(&self) -> &str;

    /// Prepares the plugin with its configuration (`null` when it has none).
    /// An error stops the host from using the plugin.
    async fn initialize(&self, _config: &Value) -> BackworksResult<()> {
        Ok(())
    }

    /// Releases what the plugin holds. No hook runs after it.
    async fn shutdown(&self) -> BackworksResult<()> {
        Ok(())
    }

    /// `Ok(())` when the plugin can serve; an error says why it cannot.
    async fn health_check(&self) -> BackworksResult<()> {
        Ok(())
    }

    /// Runs before the endpoint: pass the request on, rewrite it, or answer it.
    async fn before_request(&self, _request: &HttpRequest) -> BackworksResult<RequestAction> {
        Ok(RequestAction::Continue)
    }

    /// Runs after the endpoint: `Some` replaces the response, `None` keeps it.
    async fn after_response(
        &self,
        _request: &HttpRequest,
        _response: &HttpResponse,
    ) -> BackworksResult<Option<HttpResponse>> {
        Ok(None)
    }

    /// Handles an endpoint: `Some(body)` answers it, `None` leaves it to the
    /// next plugin.
    async fn process_endpoint_data(
        &self,
        _endpoint: &str,
        _method: &str,
        _data: &str,
    ) -> BackworksResult<Option<String>> {
        Ok(None)
    }
}
