//! `DynamicPlugin`: a loaded plugin library seen through the same
//! [`BackworksPlugin`] trait as the built-in plugins.
//!
//! Each C-ABI call runs on tokio's blocking pool (`spawn_blocking`), so
//! awaiting a hook never blocks a runtime worker. The request hooks are
//! driven as futures (ABI 1.2, [`backworks_plugin_sdk::abi::HookCall`]):
//! each poll is one blocking-pool job, and a hook that waits (a timer, a
//! call to another service) holds no thread while it waits; a plugin of
//! ABI 1.0 or 1.1 answers on the first poll. (The server's pipeline calls
//! [`RawPlugin`] directly, on its hook pool or its own workers, to pay one
//! hand-off per request rather than one per hook.)

use std::sync::Arc;

use backworks_plugin_sdk::abi::{HookError, RawPlugin};
use backworks_plugin_sdk::{
    BackworksError, BackworksPlugin, BackworksResult, HttpRequest, HttpResponse, RequestAction,
    Value, async_trait,
};

use crate::loader::LoadedPlugin;

/// A verified, loaded plugin library as a [`BackworksPlugin`].
#[derive(Debug, Clone)]
pub struct DynamicPlugin {
    raw: Arc<RawPlugin>,
}

impl DynamicPlugin {
    /// Wraps a plugin the loader checked and loaded.
    pub fn new(loaded: LoadedPlugin) -> Self {
        Self {
            raw: Arc::new(loaded.raw),
        }
    }

    /// The ABI-level plugin.
    pub fn raw(&self) -> &Arc<RawPlugin> {
        &self.raw
    }

    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&RawPlugin) -> Result<T, HookError> + Send + 'static,
    ) -> BackworksResult<T> {
        let raw = Arc::clone(&self.raw);
        tokio::task::spawn_blocking(move || call(&raw))
            .await
            .map_err(|e| BackworksError::msg(format!("the hook's thread failed: {e}")))?
            .map_err(|e| BackworksError::msg(e.to_string()))
    }

    /// Drives request hook `call` (a future over this plugin) with each
    /// poll on a blocking-pool thread, holding none while it waits.
    async fn polled<T, F>(&self, call: impl FnOnce(Arc<RawPlugin>) -> F) -> BackworksResult<T>
    where
        F: std::future::Future<Output = Result<T, HookError>> + Send + 'static,
        T: Send + 'static,
    {
        crate::pipeline::on_blocking_threads(call(Arc::clone(&self.raw)))
            .await
            .ok_or_else(|| BackworksError::msg("the hook's thread failed"))?
            .map_err(|e| BackworksError::msg(e.to_string()))
    }
}

#[async_trait]
impl BackworksPlugin for DynamicPlugin {
    fn name(&self) -> &str {
        self.raw.name()
    }

    fn version(&self) -> &str {
        self.raw.version()
    }

    fn description(&self) -> &str {
        self.raw.description()
    }

    async fn initialize(&self, config: &Value) -> BackworksResult<()> {
        let config = config.clone();
        let host = crate::loader::host_services(self.raw.name());
        self.blocking(move |raw| raw.call_initialize_with_host(&config, host))
            .await
    }

    async fn shutdown(&self) -> BackworksResult<()> {
        self.blocking(RawPlugin::shutdown).await
    }

    async fn health_check(&self) -> BackworksResult<()> {
        self.blocking(RawPlugin::health_check).await
    }

    async fn before_request(&self, request: &HttpRequest) -> BackworksResult<RequestAction> {
        let request = request.clone();
        self.polled(|raw| async move { raw.before_request_async(&request).await })
            .await
    }

    async fn after_response(
        &self,
        request: &HttpRequest,
        response: &HttpResponse,
    ) -> BackworksResult<Option<HttpResponse>> {
        let (request, response) = (request.clone(), response.clone());
        self.polled(|raw| async move { raw.after_response_async(&request, &response).await })
            .await
    }

    async fn process_endpoint_data(
        &self,
        endpoint: &str,
        method: &str,
        data: &str,
    ) -> BackworksResult<Option<String>> {
        let (endpoint, method, data) = (endpoint.to_owned(), method.to_owned(), data.to_owned());
        self.polled(
            |raw| async move { raw.process_endpoint_async(&endpoint, &method, &data).await },
        )
        .await
    }
}
