//! The request pipeline: every request through every plugin's hooks, in
//! config order, with each hook bounded in time and contained.
//!
//! A request runs as **one job on the hook pool** ([`HookExecutor`]): all
//! hooks of all plugins are called there, one after the other. The request's
//! async task only waits, with a per-hook deadline it re-arms whenever a hook
//! finishes. So:
//!
//! - a hook that hangs costs one hook thread, never a tokio worker: the
//!   request gets a 504 naming the plugin and hook, and other requests are
//!   served meanwhile (the pool starts another thread when jobs wait, up to
//!   its cap; a request no thread takes within a hook timeout gets a 503);
//! - a hook that returns an error gives a JSON 500 naming the plugin; one
//!   that panics (caught at the ABI for dynamic plugins, with `catch_unwind`
//!   for built-ins) gives a 500 and nothing else is affected;
//! - a request costs one queue push, not one thread hand-off per hook, and
//!   under load no wake-up at all (see `executor`).
//!
//! Order: every `before_request` (pass, rewrite or answer), then
//! `process_endpoint_data` of each plugin until one answers (none: JSON
//! 404), then every `after_response`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backworks_plugin_sdk::abi::{self, FailureKind, HookError, RawPlugin};
use backworks_plugin_sdk::{
    BackworksPlugin, HttpRequest, HttpResponse, RequestAction, Value, json,
};
use tokio::runtime::Handle;

use crate::executor::HookExecutor;
use crate::metrics::{HookSeries, Metrics, Outcome};

/// How a plugin is implemented.
#[derive(Clone)]
pub enum PluginImpl {
    /// Compiled into the host.
    Builtin(Arc<dyn BackworksPlugin>),
    /// Loaded from a verified library.
    Dynamic(Arc<RawPlugin>),
}

impl std::fmt::Debug for PluginImpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Builtin(p) => f.debug_tuple("Builtin").field(&p.name()).finish(),
            Self::Dynamic(p) => f.debug_tuple("Dynamic").field(&p.name()).finish(),
        }
    }
}

/// A plugin as the host runs it: its name in `backworks.yaml`, how it is
/// implemented, and what `GET /plugins` says about it.
#[derive(Debug, Clone)]
pub struct HostPlugin {
    /// The name in `backworks.yaml`.
    pub name: String,
    /// The implementation.
    pub implementation: PluginImpl,
    /// `builtin`, `external` or `marketplace`.
    pub kind: &'static str,
    /// The plugin's version.
    pub version: String,
    /// The library it was loaded from.
    pub path: Option<PathBuf>,
    /// The key that signed it.
    pub key_id: Option<String>,
    /// sha256 of the loaded bytes.
    pub sha256: Option<String>,
}

/// A hook that did not return normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookFailure {
    /// It returned an error.
    Error(String),
    /// It panicked (caught).
    Panic(String),
}

impl HookFailure {
    fn outcome(&self) -> Outcome {
        match self {
            Self::Error(_) => Outcome::Error,
            Self::Panic(_) => Outcome::Panic,
        }
    }

    /// The failure's message.
    pub fn message(&self) -> &str {
        match self {
            Self::Error(m) | Self::Panic(m) => m,
        }
    }
}

impl From<HookError> for HookFailure {
    fn from(error: HookError) -> Self {
        match error.kind {
            FailureKind::Panic => Self::Panic(error.message),
            _ => Self::Error(error.message),
        }
    }
}

fn builtin<T>(
    handle: &Handle,
    future: impl std::future::Future<Output = backworks_plugin_sdk::BackworksResult<T>>,
) -> Result<T, HookFailure> {
    match catch_unwind(AssertUnwindSafe(|| handle.block_on(future))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(HookFailure::Error(error.to_string())),
        Err(payload) => Err(HookFailure::Panic(
            payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-string payload".to_owned()),
        )),
    }
}

impl HostPlugin {
    /// `initialize` with the plugin's config (blocking; call it on a blocking
    /// thread).
    pub fn initialize(&self, handle: &Handle, config: &Value) -> Result<(), HookFailure> {
        match &self.implementation {
            PluginImpl::Builtin(p) => builtin(handle, p.initialize(config)),
            PluginImpl::Dynamic(p) => Ok(p.call_initialize(config)?),
        }
    }

    /// `health_check` (blocking).
    pub fn health_check(&self, handle: &Handle) -> Result<(), HookFailure> {
        match &self.implementation {
            PluginImpl::Builtin(p) => builtin(handle, p.health_check()),
            PluginImpl::Dynamic(p) => Ok(p.health_check()?),
        }
    }

    /// `shutdown` (blocking).
    pub fn shutdown(&self, handle: &Handle) -> Result<(), HookFailure> {
        match &self.implementation {
            PluginImpl::Builtin(p) => builtin(handle, p.shutdown()),
            PluginImpl::Dynamic(p) => Ok(p.shutdown()?),
        }
    }

    /// Whether request hook `hook` is worth calling: false once a loaded
    /// plugin said it does not implement it (see
    /// [`abi::STATUS_NOT_IMPLEMENTED`]). Built-ins are always called: their
    /// default hooks cost no more than the check would save.
    fn implements(&self, hook: abi::Hook) -> bool {
        match &self.implementation {
            PluginImpl::Dynamic(p) => p.implements(hook),
            PluginImpl::Builtin(_) => true,
        }
    }

    fn before_request(
        &self,
        handle: &Handle,
        request: &HttpRequest,
    ) -> Result<RequestAction, HookFailure> {
        match &self.implementation {
            PluginImpl::Builtin(p) => builtin(handle, p.before_request(request)),
            PluginImpl::Dynamic(p) => Ok(p.call_before_request(request)?),
        }
    }

    fn process_endpoint(
        &self,
        handle: &Handle,
        request: &HttpRequest,
    ) -> Result<Option<String>, HookFailure> {
        let body = request.body.as_deref().unwrap_or("");
        match &self.implementation {
            PluginImpl::Builtin(p) => builtin(
                handle,
                p.process_endpoint_data(&request.path, &request.method, body),
            ),
            PluginImpl::Dynamic(p) => {
                Ok(p.call_process_endpoint(&request.path, &request.method, body)?)
            }
        }
    }

    fn after_response(
        &self,
        handle: &Handle,
        request: &HttpRequest,
        response: &HttpResponse,
    ) -> Result<Option<HttpResponse>, HookFailure> {
        match &self.implementation {
            PluginImpl::Builtin(p) => builtin(handle, p.after_response(request, response)),
            PluginImpl::Dynamic(p) => Ok(p.call_after_response(request, response)?),
        }
    }
}

/// The hook running now, for the deadline.
#[derive(Debug, Clone)]
struct Running {
    plugin: usize,
    hook: &'static str,
    since: Instant,
}

/// The request hooks, in the order of [`abi::Hook::request_index`].
const REQUEST_HOOKS: [abi::Hook; 3] = [
    abi::Hook::BeforeRequest,
    abi::Hook::ProcessEndpoint,
    abi::Hook::AfterResponse,
];

/// The plugins of a running server, in config order.
#[derive(Debug)]
pub struct Pipeline {
    plugins: Vec<HostPlugin>,
    /// Each plugin's request-hook series, indexed by
    /// [`abi::Hook::request_index`].
    series: Vec<[HookSeries; 3]>,
    hook_timeout: Duration,
    metrics: Arc<Metrics>,
    handle: Handle,
    executor: HookExecutor,
}

/// A JSON error response.
pub fn error_response(status: u16, body: Value) -> HttpResponse {
    HttpResponse::json(status, &body)
}

impl Pipeline {
    /// A pipeline over `plugins` (already initialized), each hook bounded by
    /// `hook_timeout`. Fails only when the OS refuses the hook threads.
    pub fn new(
        plugins: Vec<HostPlugin>,
        hook_timeout: Duration,
        metrics: Arc<Metrics>,
        handle: Handle,
    ) -> std::io::Result<Self> {
        let series = plugins
            .iter()
            .map(|p| REQUEST_HOOKS.map(|hook| metrics.hook_series(&p.name, hook.name())))
            .collect();
        Ok(Self {
            plugins,
            series,
            hook_timeout,
            metrics,
            handle,
            executor: HookExecutor::new(1)?,
        })
    }

    /// The plugins, in config order.
    pub fn plugins(&self) -> &[HostPlugin] {
        &self.plugins
    }

    /// The per-hook time bound.
    pub fn hook_timeout(&self) -> Duration {
        self.hook_timeout
    }

    /// Runs `request` through the plugins and returns the response: never
    /// fails, whatever the plugins do.
    pub async fn handle(self: &Arc<Self>, request: HttpRequest) -> HttpResponse {
        let running: Arc<Mutex<Option<Running>>> = Arc::new(Mutex::new(None));
        let pipeline = Arc::clone(self);
        let progress = Arc::clone(&running);
        // The request's span (request id, method, path) follows it onto the
        // blocking thread, so each hook's log line carries it.
        let span = tracing::Span::current();
        let mut job = self.executor.spawn(move || {
            let _entered = span.enter();
            pipeline.run_blocking(request, &progress)
        });
        loop {
            let now = running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let wait = match &now {
                Some(r) => self.hook_timeout.saturating_sub(r.since.elapsed()),
                None => self.hook_timeout,
            };
            match tokio::time::timeout(wait, &mut job).await {
                Ok(Ok(response)) => return response,
                Ok(Err(_)) => {
                    return error_response(
                        500,
                        json!({"error": "the request pipeline failed (a host bug: see the log)"}),
                    );
                }
                Err(_) => {
                    let current = running
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    match current {
                        Some(r) if r.since.elapsed() >= self.hook_timeout => {
                            let plugin = &self.plugins[r.plugin];
                            self.metrics.observe_hook(
                                &plugin.name,
                                r.hook,
                                r.since.elapsed(),
                                Outcome::Timeout,
                            );
                            tracing::error!(
                                plugin = %plugin.name,
                                hook = r.hook,
                                timeout_ms = self.hook_timeout.as_millis() as u64,
                                "hook timed out; its thread is abandoned"
                            );
                            // The blocking thread is left to finish (or not)
                            // on its own; its result is discarded.
                            return error_response(
                                504,
                                json!({
                                    "error": format!(
                                        "plugin `{}` did not finish `{}` within {} ms",
                                        plugin.name, r.hook, self.hook_timeout.as_millis()
                                    ),
                                    "plugin": plugin.name,
                                    "hook": r.hook,
                                }),
                            );
                        }
                        // No hook thread took the request within a whole
                        // hook timeout: every one is busy or hung.
                        None => {
                            tracing::error!(
                                timeout_ms = self.hook_timeout.as_millis() as u64,
                                "no hook thread was free for this request"
                            );
                            return error_response(
                                503,
                                json!({"error": format!(
                                    "no hook thread was free within {} ms; try again",
                                    self.hook_timeout.as_millis()
                                )}),
                            );
                        }
                        // Another hook started since: wait for it.
                        Some(_) => continue,
                    }
                }
            }
        }
    }

    /// Calls one hook, recording its start for the deadline, its metrics and
    /// its log line; `Ok(None)` without a call when the plugin does not
    /// implement it.
    fn call<T>(
        &self,
        index: usize,
        which: abi::Hook,
        running: &Mutex<Option<Running>>,
        call: impl FnOnce(&HostPlugin) -> Result<T, HookFailure>,
    ) -> Result<Option<T>, HttpResponse> {
        let plugin = &self.plugins[index];
        if !plugin.implements(which) {
            return Ok(None);
        }
        let hook = which.name();
        let since = Instant::now();
        *running.lock().unwrap_or_else(PoisonError::into_inner) = Some(Running {
            plugin: index,
            hook,
            since,
        });
        let result = call(plugin);
        let elapsed = since.elapsed();
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(failure) => failure.outcome(),
        };
        match which.request_index() {
            Some(i) => self.series[index][i].observe(elapsed, outcome),
            None => self
                .metrics
                .observe_hook(&plugin.name, hook, elapsed, outcome),
        }
        tracing::debug!(
            plugin = %plugin.name,
            hook,
            duration_us = elapsed.as_micros() as u64,
            outcome = ?outcome,
            "hook"
        );
        result.map(Some).map_err(|failure| {
            let (what, status) = match &failure {
                HookFailure::Error(_) => ("failed", 500),
                HookFailure::Panic(_) => ("panicked", 500),
            };
            tracing::error!(plugin = %plugin.name, hook, error = failure.message(), "hook {what}");
            error_response(
                status,
                json!({
                    "error": format!("plugin `{}` {what} in `{hook}`: {}", plugin.name, failure.message()),
                    "plugin": plugin.name,
                    "hook": hook,
                }),
            )
        })
    }

    /// The whole pipeline for one request, on a blocking thread.
    fn run_blocking(
        &self,
        mut request: HttpRequest,
        running: &Mutex<Option<Running>>,
    ) -> HttpResponse {
        let handle = &self.handle;
        let mut answer = None;
        for index in 0..self.plugins.len() {
            match self.call(index, abi::Hook::BeforeRequest, running, |p| {
                p.before_request(handle, &request)
            }) {
                Ok(None | Some(RequestAction::Continue)) => {}
                Ok(Some(RequestAction::Rewrite(rewritten))) => request = rewritten,
                Ok(Some(RequestAction::Respond(response))) => {
                    answer = Some(response);
                    break;
                }
                Err(response) => return response,
            }
        }
        if answer.is_none() {
            for index in 0..self.plugins.len() {
                match self.call(index, abi::Hook::ProcessEndpoint, running, |p| {
                    p.process_endpoint(handle, &request)
                }) {
                    Ok(Some(Some(body))) => {
                        answer = Some(endpoint_response(body));
                        break;
                    }
                    Ok(None | Some(None)) => {}
                    Err(response) => return response,
                }
            }
        }
        let mut response = answer.unwrap_or_else(|| {
            error_response(
                404,
                json!({
                    "error": format!("no plugin handles {} {}", request.method, request.path)
                }),
            )
        });
        for index in 0..self.plugins.len() {
            match self.call(index, abi::Hook::AfterResponse, running, |p| {
                p.after_response(handle, &request, &response)
            }) {
                Ok(Some(Some(replaced))) => response = replaced,
                Ok(None | Some(None)) => {}
                Err(error) => return error,
            }
        }
        response
    }
}

/// A 200 with the endpoint's body, typed JSON when it parses as JSON.
fn endpoint_response(body: String) -> HttpResponse {
    let content_type = if serde_json::from_str::<serde::de::IgnoredAny>(&body).is_ok() {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    HttpResponse {
        status: 200,
        headers: [("content-type".to_owned(), content_type.to_owned())].into(),
        body,
    }
}
