//! The request pipeline: every request through every plugin's hooks, in
//! config order, with each hook bounded in time and contained.
//!
//! A request whose plugins all run in the `thread` tier is **one walk driven
//! on the hook pool** ([`HookExecutor`], [`on_pool`]): all hooks of all
//! plugins are called there, one after the other, and when a loaded
//! plugin's hook waits (ABI 1.2: it is a [`HookCall`](abi::HookCall)
//! future) the walk leaves its thread and the request's task awaits the
//! plugin's wake before it hands the next poll to the pool. A request that
//! passes an `inline` plugin is a task on the server's workers, which polls
//! the `inline` hooks itself (a hook that waits then holds no worker either)
//! and hands each `thread` hook to the pool the same way. The request's
//! async task waits with a per-hook deadline it re-arms whenever a hook
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
//!   under load no wake-up at all (see `executor`); a hook that waits adds
//!   one push per wake, and holds no thread meanwhile.
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

use crate::config::{Isolation, WatchdogConfig};
use crate::executor::HookExecutor;
use crate::loader::{DependencyList, LoadedPlugin};
use crate::metrics::{HookSeries, Metrics, Outcome};
use crate::watchdog::{Blocked, Watchdog, Watched};

/// How a plugin is implemented.
#[derive(Clone)]
pub enum PluginImpl {
    /// Compiled into the host.
    Builtin(Arc<dyn BackworksPlugin>),
    /// Loaded from a verified library.
    Dynamic(Arc<RawPlugin>),
    /// Run in a worker process from verified bytes (the `process` tier).
    #[cfg(target_os = "linux")]
    Process(Arc<crate::process::ProcessPlugin>),
}

impl std::fmt::Debug for PluginImpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Builtin(p) => f.debug_tuple("Builtin").field(&p.name()).finish(),
            Self::Dynamic(p) => f.debug_tuple("Dynamic").field(&p.name()).finish(),
            #[cfg(target_os = "linux")]
            Self::Process(p) => f.debug_tuple("Process").field(&p.metadata().name).finish(),
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
    /// The crates its library was built from, read from the verified
    /// bytes (absent for a built-in).
    pub dependencies: Arc<DependencyList>,
    /// The `config` of its entry in `backworks.yaml`, which `initialize`
    /// receives (at start-up and in every replacement).
    pub config: Arc<Value>,
    /// Where its entry says its hooks run (`isolation`); the tier they
    /// run in now is [`Pipeline::isolation`].
    pub isolation: Isolation,
}

/// A hook that did not return normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookFailure {
    /// It returned an error.
    Error(String),
    /// It panicked (caught).
    Panic(String),
    /// Its worker process ended while it ran (`process` tier): 502.
    Crashed(String),
    /// Its worker could not serve it (failed after too many crashes, or
    /// not startable): 503.
    Unavailable(String),
}

impl HookFailure {
    fn outcome(&self) -> Outcome {
        match self {
            Self::Error(_) => Outcome::Error,
            Self::Panic(_) => Outcome::Panic,
            Self::Crashed(_) | Self::Unavailable(_) => Outcome::Crash,
        }
    }

    /// The failure's message.
    pub fn message(&self) -> &str {
        match self {
            Self::Error(m) | Self::Panic(m) | Self::Crashed(m) | Self::Unavailable(m) => m,
        }
    }
}

impl HostPlugin {
    /// Tells a plugin of the `process` tier where to count its workers'
    /// crashes, kills and restarts.
    fn count_into(&self, metrics: &Arc<Metrics>) {
        #[cfg(target_os = "linux")]
        if let PluginImpl::Process(p) = &self.implementation {
            p.count_into(metrics);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = metrics;
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
        Err(payload) => Err(HookFailure::Panic(panic_message(payload.as_ref()))),
    }
}

impl HostPlugin {
    /// The plugin of entry `name` (of type `kind`, with `config`)
    /// implemented by a library the loader verified and loaded.
    pub fn from_loaded(
        name: &str,
        kind: &'static str,
        config: Arc<Value>,
        isolation: Isolation,
        loaded: LoadedPlugin,
    ) -> Self {
        Self {
            name: name.to_owned(),
            config,
            isolation,
            version: loaded.raw.version().to_owned(),
            kind,
            path: Some(loaded.path),
            key_id: loaded.key_id.map(|k| k.to_string()),
            sha256: Some(loaded.sha256),
            dependencies: loaded.dependencies,
            implementation: PluginImpl::Dynamic(Arc::new(loaded.raw)),
        }
    }

    /// The plugin of entry `name` (of type `kind`, with `config`) whose
    /// verified bytes run in a worker process (`isolation: process`).
    #[cfg(target_os = "linux")]
    pub fn in_process(
        name: &str,
        kind: &'static str,
        config: Arc<Value>,
        file: crate::loader::VerifiedFile,
        settings: crate::process::WorkerSettings,
    ) -> Self {
        let plugin = crate::process::ProcessPlugin::new(name, file, Arc::clone(&config), settings);
        let file = plugin.file();
        Self {
            name: name.to_owned(),
            version: file.metadata().version.clone(),
            kind,
            path: Some(file.path().to_owned()),
            key_id: file.key_id().map(|k| k.to_string()),
            sha256: Some(file.sha256().to_owned()),
            dependencies: Arc::clone(file.dependencies()),
            config,
            isolation: Isolation::Process,
            implementation: PluginImpl::Process(Arc::new(plugin)),
        }
    }

    /// The name in the plugin's metadata record (`None` for a built-in):
    /// what a replacement must be called.
    pub fn record_name(&self) -> Option<&str> {
        match &self.implementation {
            PluginImpl::Dynamic(raw) => Some(&raw.metadata().name),
            #[cfg(target_os = "linux")]
            PluginImpl::Process(p) => Some(&p.metadata().name),
            PluginImpl::Builtin(_) => None,
        }
    }

    /// What the plugin's record declares it needs (`None` for a built-in
    /// or a plugin that declares nothing).
    pub fn capabilities(&self) -> Option<&backworks_plugin_sdk::abi::capabilities::Capabilities> {
        match &self.implementation {
            PluginImpl::Dynamic(raw) => raw.metadata().capabilities.as_ref(),
            #[cfg(target_os = "linux")]
            PluginImpl::Process(p) => p.metadata().capabilities.as_ref(),
            PluginImpl::Builtin(_) => None,
        }
    }

    /// The process id of the plugin's worker while one serves (`process`
    /// tier).
    pub fn worker_pid(&self) -> Option<u32> {
        match &self.implementation {
            #[cfg(target_os = "linux")]
            PluginImpl::Process(p) => p.worker_pid(),
            _ => None,
        }
    }

    /// How far its worker's sandbox holds (`process` tier, once a worker
    /// started), as JSON.
    pub fn confinement(&self) -> Option<Value> {
        match &self.implementation {
            #[cfg(target_os = "linux")]
            PluginImpl::Process(p) => p
                .confinement()
                .and_then(|confinement| serde_json::to_value(confinement).ok()),
            _ => None,
        }
    }

    /// Why the plugin serves no requests, when its worker was marked
    /// failed (`process` tier, too many crashes).
    pub fn failed(&self) -> Option<String> {
        match &self.implementation {
            #[cfg(target_os = "linux")]
            PluginImpl::Process(p) => p.failed(),
            _ => None,
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
            #[cfg(target_os = "linux")]
            PluginImpl::Process(p) => {
                let config = serde_json::to_vec(config).unwrap_or_else(|_| b"null".to_vec());
                lifecycle_in_worker(handle, p, abi::Hook::Initialize, vec![config])
            }
        }
    }

    /// `health_check` (blocking).
    pub fn health_check(&self, handle: &Handle) -> Result<(), HookFailure> {
        match &self.implementation {
            PluginImpl::Builtin(p) => builtin(handle, p.health_check()),
            PluginImpl::Dynamic(p) => Ok(p.health_check()?),
            #[cfg(target_os = "linux")]
            PluginImpl::Process(p) => {
                lifecycle_in_worker(handle, p, abi::Hook::HealthCheck, Vec::new())
            }
        }
    }

    /// `shutdown` (blocking).
    pub fn shutdown(&self, handle: &Handle) -> Result<(), HookFailure> {
        match &self.implementation {
            PluginImpl::Builtin(p) => builtin(handle, p.shutdown()),
            PluginImpl::Dynamic(p) => Ok(p.shutdown()?),
            #[cfg(target_os = "linux")]
            PluginImpl::Process(p) => {
                lifecycle_in_worker(handle, p, abi::Hook::Shutdown, Vec::new())
            }
        }
    }

    /// Whether request hook `hook` is worth calling: false once a loaded
    /// plugin said it does not implement it (see
    /// [`abi::STATUS_NOT_IMPLEMENTED`]). Built-ins are always called: their
    /// default hooks cost no more than the check would save.
    fn implements(&self, hook: abi::Hook) -> bool {
        match &self.implementation {
            PluginImpl::Dynamic(p) => p.implements(hook),
            #[cfg(target_os = "linux")]
            PluginImpl::Process(p) => p.implements(hook),
            PluginImpl::Builtin(_) => true,
        }
    }

    /// Calls request hook `call` from a future polled on a hook pool
    /// thread: a built-in's future runs to its end through `handle.block_on`
    /// (blocking this thread); a loaded plugin's hook is a [`HookCall`]
    /// whose every poll is one call on this thread and which, while it
    /// waits, holds none (see [`on_pool`]).
    ///
    /// [`HookCall`]: abi::HookCall
    async fn call_pooled(&self, handle: &Handle, call: &Call<'_>) -> Result<Output, HookFailure> {
        match &self.implementation {
            PluginImpl::Builtin(p) => match *call {
                Call::Before(request) => {
                    builtin(handle, p.before_request(request)).map(Output::Before)
                }
                Call::Endpoint(request) => builtin(
                    handle,
                    p.process_endpoint_data(&request.path, &request.method, body_of(request)),
                )
                .map(Output::Endpoint),
                Call::After(request, response) => {
                    builtin(handle, p.after_response(request, response)).map(Output::After)
                }
            },
            PluginImpl::Dynamic(p) => Ok(dynamic(p, call).await?),
            #[cfg(target_os = "linux")]
            PluginImpl::Process(p) => in_worker(p, call).await,
        }
    }

    /// Calls request hook `call` from an async task on a server worker (the
    /// `inline` tier): a loaded plugin's hook is a [`HookCall`] awaited
    /// here, each poll a call on this worker, marked busy for the watchdog
    /// (`watch`: the watchdog, the plugin's position and the hook's index)
    /// for that poll only, never across a wait; a built-in's future is
    /// awaited.
    ///
    /// [`HookCall`]: abi::HookCall
    async fn call_inline(
        &self,
        call: &Call<'_>,
        watch: Option<(&Watchdog, usize, usize)>,
    ) -> Result<Output, HookFailure> {
        match &self.implementation {
            PluginImpl::Builtin(p) => {
                let future = async {
                    match *call {
                        Call::Before(request) => {
                            p.before_request(request).await.map(Output::Before)
                        }
                        Call::Endpoint(request) => p
                            .process_endpoint_data(&request.path, &request.method, body_of(request))
                            .await
                            .map(Output::Endpoint),
                        Call::After(request, response) => {
                            p.after_response(request, response).await.map(Output::After)
                        }
                    }
                };
                match futures_util::FutureExt::catch_unwind(AssertUnwindSafe(future)).await {
                    Ok(Ok(output)) => Ok(output),
                    Ok(Err(error)) => Err(HookFailure::Error(error.to_string())),
                    Err(payload) => Err(HookFailure::Panic(panic_message(payload.as_ref()))),
                }
            }
            PluginImpl::Dynamic(p) => {
                let mut hook = std::pin::pin!(dynamic(p, call));
                let output = std::future::poll_fn(|cx| {
                    let _busy = watch.map(|(watchdog, index, hook)| watchdog.busy(index, hook));
                    hook.as_mut().poll(cx)
                })
                .await;
                Ok(output?)
            }
            #[cfg(target_os = "linux")]
            PluginImpl::Process(p) => in_worker(p, call).await,
        }
    }
}

/// A request hook with its arguments.
#[derive(Debug, Clone, Copy)]
enum Call<'a> {
    Before(&'a HttpRequest),
    Endpoint(&'a HttpRequest),
    After(&'a HttpRequest, &'a HttpResponse),
}

impl Call<'_> {
    fn hook(&self) -> abi::Hook {
        match self {
            Self::Before(_) => abi::Hook::BeforeRequest,
            Self::Endpoint(_) => abi::Hook::ProcessEndpoint,
            Self::After(..) => abi::Hook::AfterResponse,
        }
    }

    /// The call with its own copies of the arguments, to hand to a hook
    /// pool thread.
    fn to_owned(self) -> OwnedCall {
        match self {
            Self::Before(request) => OwnedCall::Before(request.clone()),
            Self::Endpoint(request) => OwnedCall::Endpoint(request.clone()),
            Self::After(request, response) => OwnedCall::After(request.clone(), response.clone()),
        }
    }
}

/// A [`Call`] that owns its arguments.
enum OwnedCall {
    Before(HttpRequest),
    Endpoint(HttpRequest),
    After(HttpRequest, HttpResponse),
}

impl OwnedCall {
    fn as_call(&self) -> Call<'_> {
        match self {
            Self::Before(request) => Call::Before(request),
            Self::Endpoint(request) => Call::Endpoint(request),
            Self::After(request, response) => Call::After(request, response),
        }
    }
}

/// What a request hook returned.
enum Output {
    Before(RequestAction),
    Endpoint(Option<String>),
    After(Option<HttpResponse>),
}

/// A request's body as `process_endpoint_data` receives it.
fn body_of(request: &HttpRequest) -> &str {
    request.body.as_deref().unwrap_or("")
}

/// Calls a loaded plugin's request hook as a future ([`abi::HookCall`]):
/// each poll is one C-ABI call on the polling thread; a plugin of ABI 1.2
/// that waits returns `Pending` and wakes the task from its own runtime, an
/// older plugin's hook is one synchronous call on the first poll.
async fn dynamic(plugin: &RawPlugin, call: &Call<'_>) -> Result<Output, HookError> {
    Ok(match *call {
        Call::Before(request) => Output::Before(plugin.before_request_async(request).await?),
        Call::Endpoint(request) => Output::Endpoint(
            plugin
                .process_endpoint_async(&request.path, &request.method, body_of(request))
                .await?,
        ),
        Call::After(request, response) => {
            Output::After(plugin.after_response_async(request, response).await?)
        }
    })
}

/// A lifecycle hook in a plugin's worker (blocking: call it on a blocking
/// thread).
#[cfg(target_os = "linux")]
fn lifecycle_in_worker(
    handle: &Handle,
    plugin: &crate::process::ProcessPlugin,
    hook: abi::Hook,
    args: Vec<Vec<u8>>,
) -> Result<(), HookFailure> {
    use crate::process::supervisor::CallFailure;
    use crate::process::wire::Answer;

    // Bounded here too: a caller that stops waiting (`bounded`) leaves its
    // blocking thread here, and the call, once dropped, is cancelled in the
    // worker (which is killed if it cannot drop it).
    let deadline = plugin.hook_timeout();
    let call =
        handle.block_on(async { tokio::time::timeout(deadline, plugin.call(hook, args)).await });
    let Ok(call) = call else {
        return Err(HookFailure::Error(format!(
            "no answer within {} ms",
            deadline.as_millis()
        )));
    };
    match call {
        Ok(Answer::Failed {
            panicked: true,
            message,
        }) => Err(HookFailure::Panic(message)),
        Ok(Answer::Failed { message, .. }) => Err(HookFailure::Error(message)),
        Ok(_) => Ok(()),
        Err(CallFailure::Crashed(cause)) => Err(HookFailure::Crashed(cause)),
        Err(CallFailure::Unavailable(reason)) => Err(HookFailure::Unavailable(reason)),
    }
}

/// Calls a request hook in a plugin's worker (`process` tier): the
/// arguments as the ABI's strings, the answer decoded as the in-process
/// call decodes it.
#[cfg(target_os = "linux")]
async fn in_worker(
    plugin: &crate::process::ProcessPlugin,
    call: &Call<'_>,
) -> Result<Output, HookFailure> {
    use crate::process::supervisor::CallFailure;
    use crate::process::wire::Answer;

    fn encode(value: &impl serde::Serialize) -> Result<Vec<u8>, HookFailure> {
        serde_json::to_vec(value)
            .map_err(|e| HookFailure::Error(format!("cannot encode input: {e}")))
    }
    let args = match *call {
        Call::Before(request) => vec![encode(request)?],
        Call::Endpoint(request) => vec![
            request.path.as_bytes().to_vec(),
            request.method.as_bytes().to_vec(),
            body_of(request).as_bytes().to_vec(),
        ],
        Call::After(request, response) => {
            vec![encode(&backworks_plugin_sdk::ResponseExchange {
                request: request.clone(),
                response: response.clone(),
            })?]
        }
    };
    let answer = match plugin.call(call.hook(), args).await {
        Ok(answer) => answer,
        Err(CallFailure::Crashed(cause)) => return Err(HookFailure::Crashed(cause)),
        Err(CallFailure::Unavailable(reason)) => return Err(HookFailure::Unavailable(reason)),
    };
    let text = match answer {
        Answer::Failed {
            panicked: true,
            message,
        } => return Err(HookFailure::Panic(message)),
        Answer::Failed { message, .. } => return Err(HookFailure::Error(message)),
        Answer::Nothing | Answer::NotImplemented => None,
        Answer::Text(text) => Some(text),
    };
    let invalid = |e: serde_json::Error| HookFailure::Error(format!("returned invalid JSON: {e}"));
    Ok(match (*call, text) {
        (Call::Before(_), None) => Output::Before(RequestAction::Continue),
        (Call::Before(_), Some(text)) => {
            Output::Before(serde_json::from_slice(&text).map_err(invalid)?)
        }
        (Call::Endpoint(_), None) => Output::Endpoint(None),
        (Call::Endpoint(_), Some(body)) => {
            Output::Endpoint(Some(String::from_utf8(body).map_err(|e| {
                HookFailure::Error(format!("returned a body that is not UTF-8: {e}"))
            })?))
        }
        (Call::After(..), None) => Output::After(None),
        (Call::After(..), Some(text)) => {
            Output::After(Some(serde_json::from_slice(&text).map_err(invalid)?))
        }
    })
}

/// Wakes the task that drives a future on the hook pool ([`on_pool`]). A
/// wake that comes while a poll still runs is kept (a `Notify` permit), so
/// none is lost.
#[derive(Debug, Default)]
struct PoolSignal(tokio::sync::Notify);

impl std::task::Wake for PoolSignal {
    fn wake(self: Arc<Self>) {
        self.0.notify_one();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.notify_one();
    }
}

/// Drives `future` on the hook pool: each poll is one job on a pool thread
/// (a poll may block that thread, as a plugin's code may); while the future
/// waits, no thread holds it: this task awaits its wake, then hands the next
/// poll to the pool. A future ready on its first poll costs one hand-off.
/// `None` when a pool thread ended without an answer (a panic in the host's
/// own code around the hook; plugins' panics are caught below it). Dropping
/// this future while a poll runs leaves that poll to finish on its thread,
/// where the future is then dropped.
pub(crate) async fn on_pool<F>(executor: &HookExecutor, future: F) -> Option<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    polled_elsewhere(future, |poll| async move {
        executor.spawn(move || poll.run()).await.ok()
    })
    .await
}

/// As [`on_pool`], each poll one job of tokio's blocking pool
/// (`spawn_blocking`): for callers outside the server, which have no hook
/// pool ([`crate::dynamic::DynamicPlugin`]).
pub(crate) async fn on_blocking_threads<F>(future: F) -> Option<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    polled_elsewhere(future, |poll| async move {
        tokio::task::spawn_blocking(move || poll.run()).await.ok()
    })
    .await
}

/// One poll of a future, to be run on another thread ([`PollJob::run`]):
/// gives the future back with what the poll returned.
pub(crate) struct PollJob<F: std::future::Future> {
    future: std::pin::Pin<Box<F>>,
    waker: std::task::Waker,
}

/// What [`PollJob::run`] gives back: the future and its poll's result.
type Polled<F> = (
    std::pin::Pin<Box<F>>,
    std::task::Poll<<F as std::future::Future>::Output>,
);

impl<F: std::future::Future> PollJob<F> {
    /// Polls the future once, on the calling thread.
    pub(crate) fn run(mut self) -> Polled<F> {
        let polled = self
            .future
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&self.waker));
        (self.future, polled)
    }
}

/// Drives `future` by handing each poll to `run` (which runs the
/// [`PollJob`] on some thread and gives back its result, `None` if that
/// thread ended without one); between polls this task awaits the future's
/// wake, holding no thread.
async fn polled_elsewhere<F, R, J>(future: F, run: R) -> Option<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
    R: Fn(PollJob<F>) -> J,
    J: std::future::Future<Output = Option<Polled<F>>>,
{
    let signal = Arc::new(PoolSignal::default());
    let waker = std::task::Waker::from(Arc::clone(&signal));
    let mut future = Box::pin(future);
    loop {
        let (back, polled) = run(PollJob {
            future,
            waker: waker.clone(),
        })
        .await?;
        match polled {
            std::task::Poll::Ready(output) => return Some(output),
            std::task::Poll::Pending => {
                future = back;
                signal.0.notified().await;
            }
        }
    }
}

/// A caught panic's message.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".to_owned())
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
        Ok(Ok(Err(HookFailure::Crashed(m)))) => Err(("crashed", m)),
        Ok(Ok(Err(HookFailure::Unavailable(m)))) => Err(("was unavailable", m)),
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
    /// The tier each position's plugin runs in now ([`Isolation`] as
    /// `u8`): its entry's, until the watchdog moves it to `thread`; kept
    /// across swaps.
    tiers: Vec<std::sync::atomic::AtomicU8>,
    /// The hook pool.
    executor: HookExecutor,
    /// The watchdog of the `inline` plugins (unset when there is none).
    watchdog: std::sync::OnceLock<Arc<Watchdog>>,
    /// The plugins' names by position.
    names: Vec<String>,
}

impl Watched for Recorder {
    fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    fn is_inline(&self, index: usize) -> bool {
        self.tier(index) == Isolation::Inline
    }

    fn move_to_thread(&self, index: usize) {
        self.tiers[index].store(TIER_THREAD, std::sync::atomic::Ordering::Relaxed);
    }

    fn count(&self, index: usize, hook: &'static str) {
        self.metrics
            .observe_inline_blocked(&self.names[index], hook);
    }

    fn nudge(&self) {
        // A task spawned from outside the runtime wakes a parked worker,
        // which then parks again on the I/O driver.
        drop(self.handle.spawn(async {}));
    }
}

impl Recorder {
    fn tier(&self, index: usize) -> Isolation {
        match self.tiers[index].load(std::sync::atomic::Ordering::Relaxed) {
            TIER_INLINE => Isolation::Inline,
            TIER_PROCESS => Isolation::Process,
            _ => Isolation::Thread,
        }
    }
}

/// [`Isolation::Inline`] in [`Recorder::tiers`].
const TIER_INLINE: u8 = 0;
/// [`Isolation::Thread`] in [`Recorder::tiers`].
const TIER_THREAD: u8 = 1;
/// [`Isolation::Process`] in [`Recorder::tiers`].
const TIER_PROCESS: u8 = 2;

fn tier_code(isolation: Isolation) -> u8 {
    match isolation {
        Isolation::Inline => TIER_INLINE,
        Isolation::Thread => TIER_THREAD,
        Isolation::Process => TIER_PROCESS,
    }
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
    /// The hook deadline's clock ([`crate::ticks`]): a request waiting for
    /// its walk looks at its deadline on each tick.
    ticks: Arc<tokio::sync::Notify>,
    metrics: Arc<Metrics>,
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
        watchdog: WatchdogConfig,
        metrics: Arc<Metrics>,
        handle: Handle,
    ) -> std::io::Result<Self> {
        let series = plugins
            .iter()
            .map(|p| REQUEST_HOOKS.map(|hook| metrics.hook_series(&p.name, hook.name())))
            .collect();
        let names: Vec<String> = plugins.iter().map(|p| p.name.clone()).collect();
        let executor = HookExecutor::new(1)?;
        let any_inline = plugins.iter().any(|p| p.isolation == Isolation::Inline);
        for plugin in &plugins {
            plugin.count_into(&metrics);
        }
        let ticks = crate::ticks::start(&handle, hook_timeout);
        let recorder = Arc::new(Recorder {
            series,
            metrics: Arc::clone(&metrics),
            handle,
            tiers: plugins
                .iter()
                .map(|p| std::sync::atomic::AtomicU8::new(tier_code(p.isolation)))
                .collect(),
            watchdog: std::sync::OnceLock::new(),
            names: names.clone(),
            executor,
        });
        // Only `inline` plugins are watched, and the tier never moves back
        // to `inline`. Started once the recorder exists: the watchdog's
        // thread stops when it finds the recorder gone.
        if any_inline
            && let Some(started) =
                Watchdog::start(watchdog, plugins.len(), Arc::downgrade(&recorder))
        {
            let _ = recorder.watchdog.set(started);
        }
        Ok(Self {
            current: ArcSwap::from_pointee(Snapshot {
                plugins: plugins.into_iter().map(Routed::new).collect(),
                recorder,
            }),
            names,
            publishing: Mutex::new(()),
            hook_timeout,
            ticks,
            metrics,
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
        plugin.count_into(&self.metrics);
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
        self.handle_in(self.snapshot(), request).await
    }

    /// As [`Pipeline::handle`], through `snapshot` (one the caller took
    /// from [`Pipeline::snapshot`], e.g. to see whether its plugins read
    /// the request's headers: [`Snapshot::reads_whole_requests`]).
    pub async fn handle_in(&self, snapshot: Arc<Snapshot>, request: HttpRequest) -> HttpResponse {
        self.run(snapshot, request, Walk::Request).await.unwrap_or_else(|| {
            error_response(
                500,
                json!({"error": "the request pipeline gave no response (a host bug: see the log)"}),
            )
        })
    }

    /// Runs only the plugins' `before_request` hooks on `request`, for an
    /// endpoint of the host itself (`/plugins`, `/metrics`, `/healthz`):
    /// `Ok` when every plugin let it pass (a rewrite counts as passing; the
    /// host's endpoint ignores it), otherwise the response that refused it
    /// (a plugin's answer, such as the auth plugin's 401, or a hook's
    /// failure or deadline). Nothing runs when no plugin implements
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
        match self.run(self.snapshot(), request, Walk::Admit).await {
            None => Ok(()),
            Some(refused) => Err(refused),
        }
    }

    /// Runs `walk` over `snapshot` under the per-hook deadline; a deadline
    /// or a failure of the host becomes `Some` error response. The deadline
    /// is looked at on each tick of the pipeline's clock ([`crate::ticks`]):
    /// a hook past it is answered 504 at most 1/16 of the timeout late.
    ///
    /// Where: when no plugin of the walk runs `inline`, the whole walk is
    /// one job on the hook pool (one hand-off per request); otherwise it is
    /// a task on the server's workers, which calls the `inline` plugins'
    /// hooks itself and hands each `thread` plugin's hook to the pool. The
    /// walk is a task of its own, not this one, so that this task can
    /// answer 504 while an `inline` hook blocks its worker.
    async fn run(
        &self,
        snapshot: Arc<Snapshot>,
        request: HttpRequest,
        walk: Walk,
    ) -> Option<HttpResponse> {
        let running: Arc<Mutex<Option<Running>>> = Arc::new(Mutex::new(None));
        // `snapshot` is the one this request runs through, hooks and all.
        let progress = Arc::clone(&running);
        // The request's span (request id, method, path) follows it onto the
        // hook thread or task, so each hook's log line carries it.
        let span = tracing::Span::current();
        let placement = snapshot.placement(walk);
        let mut job = if placement == Placement::Task {
            let task = tokio::spawn(tracing::Instrument::instrument(
                async move { snapshot.walk(request, walk, &progress, Place::Worker).await },
                span,
            ));
            Job::Task(task)
        } else if placement == Placement::Local {
            Job::Local(Box::pin(tracing::Instrument::instrument(
                async move { snapshot.walk(request, walk, &progress, Place::Worker).await },
                span,
            )))
        } else {
            let recorder = self.recorder();
            let walk = tracing::Instrument::instrument(
                async move { snapshot.walk(request, walk, &progress, Place::Pool).await },
                span,
            );
            Job::Pool(Box::pin(
                async move { on_pool(&recorder.executor, walk).await },
            ))
        };
        let started = Instant::now();
        loop {
            // Registered before the job is polled, so no tick between the
            // two is missed.
            let tick = self.ticks.notified();
            let finished = tokio::select! {
                biased;
                finished = &mut job => Some(finished),
                () = tick => None,
            };
            match finished {
                Some(Some(response)) => return response,
                Some(None) => {
                    return Some(error_response(
                        500,
                        json!({"error": "the request pipeline failed (a host bug: see the log)"}),
                    ));
                }
                // A tick: is the hook running now past its deadline?
                None => {
                    let current = running
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    match current {
                        Some(r) if r.since.elapsed() >= self.hook_timeout => {
                            job.abandon();
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
                                "hook timed out; its call is abandoned (a thread keeps running it, a worker is told to drop it)"
                            );
                            return Some(error_response(
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
                        // No thread or worker took the request within a
                        // whole hook timeout: every one is busy or hung.
                        None if started.elapsed() >= self.hook_timeout => {
                            job.abandon();
                            tracing::error!(
                                timeout_ms = self.hook_timeout.as_millis() as u64,
                                "no hook thread was free for this request"
                            );
                            return Some(error_response(
                                503,
                                json!({"error": format!(
                                    "no hook thread was free within {} ms; try again",
                                    self.hook_timeout.as_millis()
                                )}),
                            ));
                        }
                        // Before the deadline: wait on.
                        _ => continue,
                    }
                }
            }
        }
    }

    fn recorder(&self) -> Arc<Recorder> {
        Arc::clone(&self.current.load().recorder)
    }

    /// The tier each plugin's requests run in now, by position: its
    /// configured `isolation`, or `thread` once the watchdog moved it.
    pub fn isolation(&self, index: usize) -> Isolation {
        self.current.load().recorder.tier(index)
    }

    /// What the watchdog reported about the plugin at `index`, if anything.
    pub fn blocked(&self, index: usize) -> Option<Blocked> {
        self.current
            .load()
            .recorder
            .watchdog
            .get()
            .and_then(|watchdog| watchdog.found(index))
    }
}

/// Where a request's walk runs ([`Snapshot::placement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// One job on the hook pool.
    Pool,
    /// A task of its own on the server's workers.
    Task,
    /// In the request's own task.
    Local,
}

/// Which hooks a request's walk calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// The whole pipeline: every `before_request`, `process_endpoint_data`
    /// until one answers, every `after_response`.
    Request,
    /// Every `before_request` only, for a host endpoint.
    Admit,
}

/// Where a walk runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// On a hook pool thread: every hook is called there.
    Pool,
    /// In a task on a server worker: `inline` plugins' hooks are called
    /// there, `thread` plugins' hooks are handed to the pool one by one.
    Worker,
}

/// A request's walk, running on the pool (each poll a pool job, see
/// [`on_pool`]) or as a task.
enum Job {
    Pool(std::pin::Pin<Box<dyn std::future::Future<Output = Option<Option<HttpResponse>>> + Send>>),
    Task(tokio::task::JoinHandle<Option<HttpResponse>>),
    /// Polled by the request's task itself (dropped with it).
    Local(std::pin::Pin<Box<dyn std::future::Future<Output = Option<HttpResponse>> + Send>>),
}

impl Job {
    /// Stops waiting for the walk: a task stops at its next await (a hook
    /// that blocks finishes first); a poll running on the pool runs on, its
    /// result (and the walk) dropped there; a waiting walk is dropped with
    /// the job (its calls cancelled).
    fn abandon(&self) {
        if let Self::Task(task) = self {
            task.abort();
        }
    }
}

impl std::future::Future for Job {
    /// `None`: the walk failed (its thread or task ended without an
    /// answer).
    type Output = Option<Option<HttpResponse>>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            Self::Pool(walk) => walk.as_mut().poll(cx),
            Self::Task(task) => std::pin::Pin::new(task).poll(cx).map(Result::ok),
            Self::Local(walk) => walk.as_mut().poll(cx).map(Some),
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

    /// Whether some plugin may call `before_request` or `after_response`,
    /// the hooks that see the whole request (headers and query included);
    /// when none does, the endpoint hooks see only method, path and body,
    /// and the request's headers need not be converted.
    pub fn reads_whole_requests(&self) -> bool {
        self.plugins.iter().any(|routed| {
            routed.plugin.implements(abi::Hook::BeforeRequest)
                || routed.plugin.implements(abi::Hook::AfterResponse)
        })
    }

    /// Where `walk` runs: on the pool when every plugin whose hooks it
    /// calls runs `thread`; as a task of its own when one runs `inline`
    /// (whose hook may block the worker that polls it: the request's task
    /// must stay free to answer 504); otherwise (a `process` plugin, whose
    /// calls only wait on its worker) in the request's own task.
    fn placement(&self, walk: Walk) -> Placement {
        let mut placement = Placement::Pool;
        for (index, routed) in self.plugins.iter().enumerate() {
            let called = match walk {
                Walk::Request => abi::Hook::REQUEST
                    .iter()
                    .any(|hook| routed.plugin.implements(*hook)),
                Walk::Admit => routed.plugin.implements(abi::Hook::BeforeRequest),
            };
            match self.recorder.tier(index) {
                _ if !called => {}
                Isolation::Inline => return Placement::Task,
                Isolation::Process => placement = Placement::Local,
                Isolation::Thread => {}
            }
        }
        placement
    }

    /// Calls one hook where `place` and the plugin's tier say, recording
    /// its start for the deadline, its metrics and its log line; `Ok(None)`
    /// without a call when the plugin does not implement it.
    async fn call(
        self: &Arc<Self>,
        index: usize,
        call: Call<'_>,
        running: &Mutex<Option<Running>>,
        place: Place,
    ) -> Result<Option<Output>, HttpResponse> {
        let which = call.hook();
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
        let result = match (place, self.recorder.tier(index)) {
            // The walk is polled on a pool thread: so is this hook.
            (Place::Pool, _) => plugin.call_pooled(&self.recorder.handle, &call).await,
            (Place::Worker, Isolation::Inline) => {
                // A loaded plugin's hook is polled on this worker: each
                // poll watched.
                let watch = match (&plugin.implementation, self.recorder.watchdog.get()) {
                    (PluginImpl::Dynamic(_), Some(watchdog)) => {
                        Some((watchdog.as_ref(), index, which.request_index().unwrap_or(0)))
                    }
                    _ => None,
                };
                plugin.call_inline(&call, watch).await
            }
            // A call to a worker process: awaited here.
            (Place::Worker, Isolation::Process) => plugin.call_inline(&call, None).await,
            (Place::Worker, Isolation::Thread) => {
                let owned = call.to_owned();
                let snapshot = Arc::clone(self);
                let hook = async move {
                    snapshot.plugins[index]
                        .plugin
                        .call_pooled(&snapshot.recorder.handle, &owned.as_call())
                        .await
                };
                on_pool(&self.recorder.executor, hook)
                    .await
                    .unwrap_or_else(|| {
                        Err(HookFailure::Panic(String::from(
                            "the hook's thread ended without an answer",
                        )))
                    })
            }
        };
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
                HookFailure::Crashed(_) => ("crashed", 502),
                HookFailure::Unavailable(_) => ("is unavailable", 503),
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

    /// One request's walk through the plugins. For [`Walk::Request`]: the
    /// response (`Some`); for [`Walk::Admit`]: `None` when every plugin let
    /// it pass, else the response of the first that answered or failed.
    async fn walk(
        self: &Arc<Self>,
        mut request: HttpRequest,
        walk: Walk,
        running: &Mutex<Option<Running>>,
        place: Place,
    ) -> Option<HttpResponse> {
        let mut answer = None;
        for index in 0..self.plugins.len() {
            match self
                .call(index, Call::Before(&request), running, place)
                .await
            {
                Ok(None | Some(Output::Before(RequestAction::Continue))) => {}
                Ok(Some(Output::Before(RequestAction::Rewrite(rewritten)))) => request = rewritten,
                Ok(Some(Output::Before(RequestAction::Respond(response)))) => {
                    answer = Some(response);
                    break;
                }
                // Another hook's output: never (each call gives its own).
                Ok(Some(_)) => {}
                Err(response) => return Some(response),
            }
        }
        if walk == Walk::Admit {
            return answer;
        }
        if answer.is_none() {
            for index in 0..self.plugins.len() {
                match self
                    .call(index, Call::Endpoint(&request), running, place)
                    .await
                {
                    Ok(Some(Output::Endpoint(Some(body)))) => {
                        answer = Some(endpoint_response(body));
                        break;
                    }
                    Ok(None | Some(Output::Endpoint(None))) => {}
                    Ok(Some(_)) => {}
                    Err(response) => return Some(response),
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
            match self
                .call(index, Call::After(&request, &response), running, place)
                .await
            {
                Ok(Some(Output::After(Some(replaced)))) => response = replaced,
                Ok(None | Some(Output::After(None))) => {}
                Ok(Some(_)) => {}
                Err(error) => return Some(error),
            }
        }
        Some(response)
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
        plugin_in(version, Isolation::Thread)
    }

    fn plugin_in(version: &'static str, isolation: Isolation) -> HostPlugin {
        HostPlugin {
            isolation,
            name: "p".to_owned(),
            implementation: PluginImpl::Builtin(Arc::new(Versioned(version))),
            kind: "builtin",
            version: version.to_owned(),
            path: None,
            key_id: None,
            sha256: None,
            dependencies: Default::default(),
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
        pipeline_of_version_1_in(runtime, Isolation::Thread)
    }

    fn pipeline_of_version_1_in(
        runtime: &tokio::runtime::Runtime,
        isolation: Isolation,
    ) -> Pipeline {
        Pipeline::new(
            vec![plugin_in("1", isolation)],
            Duration::from_secs(5),
            WatchdogConfig::default(),
            Arc::new(Metrics::new()),
            runtime.handle().clone(),
        )
        .unwrap()
    }

    #[test]
    fn a_switch_reaches_new_requests_and_the_old_retires_after_its_last_snapshot() {
        for isolation in [Isolation::Thread, Isolation::Inline] {
            a_switch_in(isolation);
        }
    }

    fn a_switch_in(isolation: Isolation) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let pipeline = pipeline_of_version_1_in(&runtime, isolation);
        assert_eq!(pipeline.isolation(0), isolation);
        assert_eq!(runtime.block_on(pipeline.handle(request())).body, "1");
        // A request in flight: it holds the snapshot it started with.
        let in_flight = pipeline.snapshot();

        let old = pipeline.route(plugin_in("2", isolation)).unwrap();
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

    /// Futures driven on the pool hold no pool thread while they wait: 50
    /// of them wait at once on a pool that has far fewer threads, and each
    /// completes once woken (from another thread), with its own value.
    #[test]
    fn futures_on_the_pool_hold_no_thread_while_they_wait() {
        const WAITING: usize = 50;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let executor = Arc::new(HookExecutor::new(1).unwrap());
        let polled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut senders = Vec::new();
        let mut driven = Vec::new();
        for i in 0..WAITING {
            let (sender, receiver) = oneshot::channel::<usize>();
            senders.push(sender);
            let polled = Arc::clone(&polled);
            let future = async move {
                polled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                receiver.await.map(|value| (i, value))
            };
            let executor = Arc::clone(&executor);
            driven.push(runtime.spawn(async move { on_pool(&executor, future).await }));
        }
        // Every future was polled once and waits (60 s at most: a hang).
        let deadline = Instant::now() + Duration::from_secs(60);
        while polled.load(std::sync::atomic::Ordering::SeqCst) < WAITING {
            assert!(Instant::now() < deadline, "not every future was polled");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            executor.runners() < WAITING,
            "{} pool threads for {WAITING} waiting futures",
            executor.runners()
        );
        std::thread::spawn(move || {
            for (i, sender) in senders.into_iter().enumerate() {
                sender.send(i * 10).unwrap();
            }
        });
        for (i, task) in driven.into_iter().enumerate() {
            let output = runtime.block_on(task).unwrap();
            assert_eq!(output, Some(Ok((i, i * 10))));
        }
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
