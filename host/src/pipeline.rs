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
//!
//! Plugins can be replaced while requests run (`Pipeline::route`, called
//! by `swap`): a request loads one [`Snapshot`] of the plugin list when it
//! starts (one atomic load) and runs every hook through it, so requests that
//! started before a switch finish on the old implementation, requests that
//! start after it use the new one, and none sees a mix. An implementation's
//! `Routed` is dropped when the last snapshot that lists it is, which is
//! how its retirement (its `shutdown`) waits for the requests using it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use backworks_plugin_sdk::abi::{self, FailureKind, HookError, RawPlugin};
use backworks_plugin_sdk::{
    BackworksPlugin, HttpRequest, HttpResponse, RequestAction, Value, json,
};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::executor::HookExecutor;
use crate::loader::LoadedPlugin;
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
    /// The `config` of its entry in `backworks.yaml`, which `initialize`
    /// receives (at start-up and in every replacement).
    pub config: Arc<Value>,
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
    /// The plugin of entry `name` (of type `kind`, with `config`)
    /// implemented by a library the loader verified and loaded.
    pub fn from_loaded(
        name: &str,
        kind: &'static str,
        config: Arc<Value>,
        loaded: LoadedPlugin,
    ) -> Self {
        Self {
            name: name.to_owned(),
            config,
            version: loaded.raw.version().to_owned(),
            kind,
            path: Some(loaded.path),
            key_id: loaded.key_id.map(|k| k.to_string()),
            sha256: Some(loaded.sha256),
            implementation: PluginImpl::Dynamic(Arc::new(loaded.raw)),
        }
    }

    /// The name in the plugin's metadata record (`None` for a built-in):
    /// what a replacement must be called.
    pub fn record_name(&self) -> Option<&str> {
        match &self.implementation {
            PluginImpl::Dynamic(raw) => Some(&raw.metadata().name),
            PluginImpl::Builtin(_) => None,
        }
    }

    /// Runs lifecycle hook `hook` (one of
    /// [`START_HOOKS`](crate::lifecycle::START_HOOKS), or `shutdown`);
    /// `initialize` gets the plugin's [`config`](Self::config). Blocking:
    /// call it on a blocking thread.
    pub fn start_hook(&self, handle: &Handle, hook: abi::Hook) -> Result<(), HookFailure> {
        match hook {
            abi::Hook::Initialize => self.initialize(handle, &self.config),
            abi::Hook::HealthCheck => self.health_check(handle),
            abi::Hook::Shutdown => self.shutdown(handle),
            request => Err(HookFailure::Error(format!(
                "`{request}` is a request hook, not a lifecycle hook (a host bug)"
            ))),
        }
    }

    /// `initialize` with `config` (blocking; call it on a blocking thread).
    pub fn initialize(&self, handle: &Handle, config: &Value) -> Result<(), HookFailure> {
        match &self.implementation {
            PluginImpl::Builtin(p) => builtin(handle, p.initialize(config)),
            PluginImpl::Dynamic(p) => {
                Ok(p.call_initialize_with_host(config, crate::loader::host_services(&self.name))?)
            }
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
const REQUEST_HOOKS: [abi::Hook; abi::Hook::REQUEST.len()] = abi::Hook::REQUEST;

/// Runs `call` on a blocking thread, bounded by `limit`: `Err` with what
/// happened (`failed`, `panicked` or `timed out`) and a message otherwise.
/// A call past the limit keeps its thread; its result is discarded.
pub(crate) async fn bounded<T: Send + 'static>(
    limit: Duration,
    call: impl FnOnce() -> Result<T, HookFailure> + Send + 'static,
) -> Result<T, (&'static str, String)> {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(call)).await {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(HookFailure::Error(m)))) => Err(("failed", m)),
        Ok(Ok(Err(HookFailure::Panic(m)))) => Err(("panicked", m)),
        Ok(Err(join)) => Err(("failed", join.to_string())),
        Err(_) => Err((
            "timed out",
            format!("no answer within {} ms", limit.as_millis()),
        )),
    }
}

/// A plugin as the [`Snapshot`]s route to it: one per implementation,
/// shared by every snapshot that lists it. It is dropped when the last of
/// them is, that is once no request, health check or listing uses this
/// implementation any more; whoever asked with `when_retired` is told
/// then.
#[derive(Debug)]
pub(crate) struct Routed {
    plugin: HostPlugin,
    retired: Mutex<Option<oneshot::Sender<()>>>,
}

impl Routed {
    fn new(plugin: HostPlugin) -> Arc<Self> {
        Arc::new(Self {
            plugin,
            retired: Mutex::new(None),
        })
    }

    /// The plugin.
    pub(crate) fn plugin(&self) -> &HostPlugin {
        &self.plugin
    }

    /// Resolves once this value is dropped: ask before dropping the
    /// caller's own reference.
    pub(crate) fn when_retired(&self) -> oneshot::Receiver<()> {
        let (sender, receiver) = oneshot::channel();
        *self.retired.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender);
        receiver
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        let sender = self
            .retired
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(sender) = sender {
            // Nobody waiting any more is fine.
            let _ = sender.send(());
        }
    }
}

/// What every snapshot of one pipeline records its hook calls into.
#[derive(Debug)]
struct Recorder {
    /// Each plugin's request-hook series, indexed by position and
    /// [`abi::Hook::request_index`]: by plugin name, whatever its version.
    series: Vec<[HookSeries; abi::Hook::REQUEST.len()]>,
    metrics: Arc<Metrics>,
    handle: Handle,
}

/// One consistent view of the plugins, in config order. A request takes
/// one snapshot when it starts and runs all its hooks through it, so it
/// never sees a mix of old and new implementations; a plugin's position and
/// name are the same in every snapshot of a pipeline.
#[derive(Debug)]
pub struct Snapshot {
    plugins: Vec<Arc<Routed>>,
    recorder: Arc<Recorder>,
}

/// The plugins of a running server, in config order, each of which can be
/// replaced while requests run (see `swap::Swapper`).
///
/// The request path costs one atomic snapshot load ([`ArcSwap`]): no lock
/// is shared between requests, and a swap never waits for them.
#[derive(Debug)]
pub struct Pipeline {
    current: ArcSwap<Snapshot>,
    /// The plugins' names by position (the same in every snapshot).
    names: Vec<String>,
    /// Held while a new snapshot is made from the current one, so that two
    /// swaps never lose one another's change.
    publishing: Mutex<()>,
    hook_timeout: Duration,
    metrics: Arc<Metrics>,
    executor: HookExecutor,
}

/// A JSON error response.
pub(crate) fn error_response(status: u16, body: Value) -> HttpResponse {
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
        let names = plugins.iter().map(|p| p.name.clone()).collect();
        let recorder = Arc::new(Recorder {
            series,
            metrics: Arc::clone(&metrics),
            handle,
        });
        Ok(Self {
            current: ArcSwap::from_pointee(Snapshot {
                plugins: plugins.into_iter().map(Routed::new).collect(),
                recorder,
            }),
            names,
            publishing: Mutex::new(()),
            hook_timeout,
            metrics,
            executor: HookExecutor::new(1)?,
        })
    }

    /// The plugins as a request starting now sees them.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The per-hook time bound.
    pub fn hook_timeout(&self) -> Duration {
        self.hook_timeout
    }

    /// Routes every request that starts from now on to `plugin`, in place of
    /// the plugin of the same name; requests already running finish on the
    /// one they started with. Returns the replaced plugin (`None`, and
    /// nothing changed, when no plugin has that name). `plugin` must be
    /// initialized and healthy: `swap::Swapper` is the caller.
    pub(crate) fn route(&self, plugin: HostPlugin) -> Option<Arc<Routed>> {
        let index = self.names.iter().position(|name| *name == plugin.name)?;
        let _publishing = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.current.load();
        let mut plugins = current.plugins.clone();
        let old = std::mem::replace(&mut plugins[index], Routed::new(plugin));
        self.current.store(Arc::new(Snapshot {
            plugins,
            recorder: Arc::clone(&current.recorder),
        }));
        Some(old)
    }

    /// Runs `request` through the plugins and returns the response: never
    /// fails, whatever the plugins do.
    pub async fn handle(&self, request: HttpRequest) -> HttpResponse {
        self.run(request, Snapshot::run_blocking, |response| response)
            .await
    }

    /// Runs only the plugins' `before_request` hooks on `request`, for an
    /// endpoint of the host itself (`/plugins`, `/metrics`, `/healthz`):
    /// `Ok` when every plugin let it pass (a rewrite counts as passing; the
    /// host's endpoint ignores it), otherwise the response that refused it
    /// (a plugin's answer, such as the auth plugin's 401, or a hook's
    /// failure or deadline). No job is queued when no plugin implements
    /// `before_request`.
    pub async fn admit(&self, request: HttpRequest) -> Result<(), HttpResponse> {
        let anyone = self
            .current
            .load()
            .plugins
            .iter()
            .any(|routed| routed.plugin.implements(abi::Hook::BeforeRequest));
        if !anyone {
            return Ok(());
        }
        self.run(request, Snapshot::admit_blocking, Err).await
    }

    /// Runs `job` over one snapshot as one job on the hook pool, under the
    /// per-hook deadline; a deadline or pool failure becomes `failed(response)`.
    async fn run<T: Send + 'static>(
        &self,
        request: HttpRequest,
        job: fn(&Snapshot, HttpRequest, &Mutex<Option<Running>>) -> T,
        failed: fn(HttpResponse) -> T,
    ) -> T {
        let running: Arc<Mutex<Option<Running>>> = Arc::new(Mutex::new(None));
        // The one snapshot this request runs through, hooks and all.
        let snapshot = self.current.load_full();
        let progress = Arc::clone(&running);
        // The request's span (request id, method, path) follows it onto the
        // blocking thread, so each hook's log line carries it.
        let span = tracing::Span::current();
        let mut job = self.executor.spawn(move || {
            let _entered = span.enter();
            job(&snapshot, request, &progress)
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
                    return failed(error_response(
                        500,
                        json!({"error": "the request pipeline failed (a host bug: see the log)"}),
                    ));
                }
                Err(_) => {
                    let current = running
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    match current {
                        Some(r) if r.since.elapsed() >= self.hook_timeout => {
                            let name = &self.names[r.plugin];
                            self.metrics.observe_hook(
                                name,
                                r.hook,
                                r.since.elapsed(),
                                Outcome::Timeout,
                            );
                            tracing::error!(
                                plugin = %name,
                                hook = r.hook,
                                timeout_ms = self.hook_timeout.as_millis() as u64,
                                "hook timed out; its thread is abandoned"
                            );
                            // The blocking thread is left to finish (or not)
                            // on its own; its result is discarded.
                            return failed(error_response(
                                504,
                                json!({
                                    "error": format!(
                                        "plugin `{}` did not finish `{}` within {} ms",
                                        name, r.hook, self.hook_timeout.as_millis()
                                    ),
                                    "plugin": name,
                                    "hook": r.hook,
                                }),
                            ));
                        }
                        // No hook thread took the request within a whole
                        // hook timeout: every one is busy or hung.
                        None => {
                            tracing::error!(
                                timeout_ms = self.hook_timeout.as_millis() as u64,
                                "no hook thread was free for this request"
                            );
                            return failed(error_response(
                                503,
                                json!({"error": format!(
                                    "no hook thread was free within {} ms; try again",
                                    self.hook_timeout.as_millis()
                                )}),
                            ));
                        }
                        // Another hook started since: wait for it.
                        Some(_) => continue,
                    }
                }
            }
        }
    }
}

impl Snapshot {
    /// The plugins, in config order.
    pub fn plugins(&self) -> impl ExactSizeIterator<Item = &HostPlugin> {
        self.plugins.iter().map(|routed| &routed.plugin)
    }

    /// The plugin named `name` (its name in `backworks.yaml`).
    pub fn plugin(&self, name: &str) -> Option<&HostPlugin> {
        self.plugins().find(|plugin| plugin.name == name)
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
        let plugin = &self.plugins[index].plugin;
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
            Some(i) => self.recorder.series[index][i].observe(elapsed, outcome),
            None => self
                .recorder
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

    /// Every plugin's `before_request` for a request to one of the host's
    /// endpoints, on a blocking thread: `Err` with the response of the
    /// first plugin that answers or fails.
    fn admit_blocking(
        &self,
        mut request: HttpRequest,
        running: &Mutex<Option<Running>>,
    ) -> Result<(), HttpResponse> {
        let handle = &self.recorder.handle;
        for index in 0..self.plugins.len() {
            match self.call(index, abi::Hook::BeforeRequest, running, |p| {
                p.before_request(handle, &request)
            })? {
                None | Some(RequestAction::Continue) => {}
                Some(RequestAction::Rewrite(rewritten)) => request = rewritten,
                Some(RequestAction::Respond(response)) => return Err(response),
            }
        }
        Ok(())
    }

    /// The whole pipeline for one request, on a blocking thread.
    fn run_blocking(
        &self,
        mut request: HttpRequest,
        running: &Mutex<Option<Running>>,
    ) -> HttpResponse {
        let handle = &self.recorder.handle;
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

#[cfg(test)]
mod tests {
    use backworks_plugin_sdk::{BackworksResult, async_trait};

    use super::*;

    /// A built-in that answers every request with its version.
    struct Versioned(&'static str);

    #[async_trait]
    impl BackworksPlugin for Versioned {
        fn name(&self) -> &str {
            "versioned"
        }

        fn version(&self) -> &str {
            self.0
        }

        fn description(&self) -> &str {
            "answers with its version"
        }

        async fn process_endpoint_data(
            &self,
            _endpoint: &str,
            _method: &str,
            _data: &str,
        ) -> BackworksResult<Option<String>> {
            Ok(Some(self.0.to_owned()))
        }
    }

    fn plugin(version: &'static str) -> HostPlugin {
        HostPlugin {
            name: "p".to_owned(),
            implementation: PluginImpl::Builtin(Arc::new(Versioned(version))),
            kind: "builtin",
            version: version.to_owned(),
            path: None,
            key_id: None,
            sha256: None,
            config: Arc::new(Value::Null),
        }
    }

    fn request() -> HttpRequest {
        HttpRequest {
            method: "GET".to_owned(),
            path: "/".to_owned(),
            query: None,
            headers: Default::default(),
            body: None,
        }
    }

    /// A pipeline of plugin `p` version `1` on `runtime`.
    fn pipeline_of_version_1(runtime: &tokio::runtime::Runtime) -> Pipeline {
        Pipeline::new(
            vec![plugin("1")],
            Duration::from_secs(5),
            Arc::new(Metrics::new()),
            runtime.handle().clone(),
        )
        .unwrap()
    }

    #[test]
    fn a_switch_reaches_new_requests_and_the_old_retires_after_its_last_snapshot() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let pipeline = pipeline_of_version_1(&runtime);
        assert_eq!(runtime.block_on(pipeline.handle(request())).body, "1");
        // A request in flight: it holds the snapshot it started with.
        let in_flight = pipeline.snapshot();

        let old = pipeline.route(plugin("2")).unwrap();
        assert_eq!(old.plugin().version, "1");
        let mut retired = old.when_retired();
        drop(old);
        assert_eq!(runtime.block_on(pipeline.handle(request())).body, "2");
        assert_eq!(pipeline.snapshot().plugin("p").unwrap().version, "2");
        assert_eq!(in_flight.plugin("p").unwrap().version, "1");
        assert_eq!(
            retired.try_recv(),
            Err(oneshot::error::TryRecvError::Empty),
            "retired while a snapshot still lists it"
        );
        drop(in_flight);
        assert_eq!(retired.try_recv(), Ok(()));
    }

    #[test]
    fn routing_an_unknown_name_changes_nothing() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let pipeline = pipeline_of_version_1(&runtime);
        let mut stranger = plugin("9");
        stranger.name = "q".to_owned();
        assert!(pipeline.route(stranger).is_none());
        let versions: Vec<_> = pipeline
            .snapshot()
            .plugins()
            .map(|p| p.version.clone())
            .collect();
        assert_eq!(versions, ["1"]);
    }
}
