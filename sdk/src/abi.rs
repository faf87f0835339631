//! The ABI between the Backworks host and a plugin library, v1 (revision
//! 1.2), as a plugin sees it (`docs/abi.md`).
//!
//! Everything of [`backworks_abi`] (layouts, constants, the host half) is
//! re-exported here, so `backworks_plugin_sdk::abi::PluginInfo` and
//! `backworks_abi::PluginInfo` are one type. This module adds the **plugin
//! side**: [`export_plugin!`](crate::export_plugin) and the [`ExportedPlugin`]
//! machinery behind it, which turns a [`BackworksPlugin`] into the exported
//! symbols, catches every panic at the boundary and runs async hooks on a
//! tokio runtime the plugin owns. A plugin built with this SDK is of ABI 1.2:
//! `initialize_with_host` (1.1) keeps the host's [`HostServices`]
//! ([`host_services`]) and installs the log forwarding (`host_log`) before
//! it initializes the plugin; `call_start`, `call_poll`, `call_finish` and
//! `call_drop` (1.2) let the host drive each request hook as a future, which
//! the plugin polls inside its own runtime's context, so a hook that awaits
//! a timer or I/O holds no host thread while it waits ([`PendingCall`]).
//!
//! It is the only module of the SDK with `unsafe` code.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_void};
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::ptr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

pub use backworks_abi::*;

use crate::{BackworksPlugin, HttpRequest, RequestAction, ResponseExchange};

/// Exports a [`BackworksPlugin`] through the C ABI.
///
/// `export_plugin!(MyPlugin)` (the type must implement `Default`) emits the
/// exported functions `plugin_info` and `plugin_vtable` and the exported
/// static metadata record `backworks_plugin_metadata` for the calling crate,
/// whose name, version and description (from `Cargo.toml`) it records, and
/// the capabilities `cargo backworks build` passes in the environment
/// variable `BACKWORKS_PLUGIN_CAPABILITIES` (none under a plain `cargo
/// build`). Use it once per `cdylib`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            static PLUGIN: $crate::abi::ExportedPlugin<$plugin> =
                $crate::abi::ExportedPlugin::new();

            /// The plugin's metadata record, readable without running code.
            /// Exported, so every linker keeps it (`#[used]` alone is not
            /// enough for GNU ld building a DLL).
            #[unsafe(no_mangle)]
            #[used]
            #[allow(non_upper_case_globals)]
            #[cfg_attr(target_vendor = "apple", unsafe(link_section = "__DATA,__bwmeta"))]
            #[cfg_attr(not(target_vendor = "apple"), unsafe(link_section = ".bwmeta"))]
            pub static backworks_plugin_metadata: $crate::abi::capabilities::DeclaredRecord<
                { $crate::abi::capabilities::capabilities_slot(CAPABILITIES) },
            > = $crate::abi::capabilities::DeclaredRecord::new(
                $crate::abi::MetadataRecord::new(
                    $crate::SDK_VERSION,
                    env!("CARGO_PKG_NAME"),
                    env!("CARGO_PKG_VERSION"),
                    env!("CARGO_PKG_DESCRIPTION"),
                    if cfg!(panic = "unwind") {
                        0
                    } else {
                        $crate::metadata::FLAG_PANIC_ABORT
                    },
                ),
                CAPABILITIES,
            );
            /// The declaration `cargo backworks build` hands over from
            /// `[package.metadata.backworks.capabilities]`; empty (nothing
            /// declared) for a plain `cargo build`.
            const CAPABILITIES: &str = match option_env!("BACKWORKS_PLUGIN_CAPABILITIES") {
                Some(text) => text,
                None => "",
            };

            #[unsafe(no_mangle)]
            pub extern "C" fn plugin_info() -> $crate::abi::PluginInfo {
                PLUGIN.info()
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn plugin_vtable() -> $crate::abi::PluginVTableV1_2 {
                extern "C" fn initialize(config: *const ::std::ffi::c_char) -> i32 {
                    // SAFETY: the host passes NULL or a NUL-terminated string
                    // that stays valid for the call (ABI contract).
                    unsafe { PLUGIN.initialize(config) }
                }
                extern "C" fn initialize_with_host(
                    config: *const ::std::ffi::c_char,
                    host: *const $crate::abi::HostServices,
                ) -> i32 {
                    // SAFETY: as for `initialize`; `host` is NULL or host
                    // services valid while the library is loaded (ABI 1.1).
                    unsafe { PLUGIN.initialize_with_host(config, host) }
                }
                extern "C" fn shutdown() -> i32 {
                    PLUGIN.shutdown()
                }
                extern "C" fn health_check() -> i32 {
                    PLUGIN.health_check()
                }
                extern "C" fn before_request(
                    request: *const ::std::ffi::c_char,
                ) -> *const ::std::ffi::c_char {
                    // SAFETY: as for `initialize`.
                    unsafe { PLUGIN.before_request(request) }
                }
                extern "C" fn after_response(
                    exchange: *const ::std::ffi::c_char,
                ) -> *const ::std::ffi::c_char {
                    // SAFETY: as for `initialize`.
                    unsafe { PLUGIN.after_response(exchange) }
                }
                extern "C" fn process_endpoint(
                    endpoint: *const ::std::ffi::c_char,
                    method: *const ::std::ffi::c_char,
                    data: *const ::std::ffi::c_char,
                ) -> *const ::std::ffi::c_char {
                    // SAFETY: as for `initialize`, for all three arguments.
                    unsafe { PLUGIN.process_endpoint(endpoint, method, data) }
                }
                extern "C" fn free_string(text: *const ::std::ffi::c_char) {
                    // SAFETY: the host passes NULL or a string this table
                    // returned and that it has not freed yet (ABI contract).
                    unsafe { $crate::abi::free_string(text) }
                }
                extern "C" fn last_error(code: *mut i32) -> *const ::std::ffi::c_char {
                    // SAFETY: the host passes NULL or a pointer to a writable
                    // i32 (ABI contract).
                    unsafe { $crate::abi::last_error(code) }
                }
                extern "C" fn call_start(
                    hook: u32,
                    a: *const ::std::ffi::c_char,
                    b: *const ::std::ffi::c_char,
                    c: *const ::std::ffi::c_char,
                    waker: *const $crate::abi::HostWaker,
                    call: *mut *mut ::std::ffi::c_void,
                ) -> *const ::std::ffi::c_char {
                    // SAFETY: the host passes NULL or NUL-terminated
                    // strings valid for the call, NULL or a waker valid for
                    // the call, NULL or a writable handle slot (ABI 1.2).
                    unsafe { PLUGIN.call_start(hook, [a, b, c], waker, call) }
                }
                extern "C" fn call_poll(
                    call: *mut ::std::ffi::c_void,
                    waker: *const $crate::abi::HostWaker,
                ) -> i32 {
                    // SAFETY: the host passes a handle `call_start` gave and
                    // that it has not finished or dropped, polled by one
                    // thread at a time, and a waker as in `call_start`.
                    unsafe { $crate::abi::call_poll(call, waker) }
                }
                extern "C" fn call_finish(
                    call: *mut ::std::ffi::c_void,
                ) -> *const ::std::ffi::c_char {
                    // SAFETY: as for `call_poll`; the handle is not used
                    // again.
                    unsafe { $crate::abi::call_finish(call) }
                }
                extern "C" fn call_drop(call: *mut ::std::ffi::c_void) {
                    // SAFETY: as for `call_finish`.
                    unsafe { $crate::abi::call_drop(call) }
                }
                $crate::abi::PluginVTableV1_2 {
                    v1_1: $crate::abi::PluginVTableV1_1 {
                        v1_0: $crate::abi::PluginVTable {
                            initialize: Some(initialize),
                            shutdown: Some(shutdown),
                            health_check: Some(health_check),
                            before_request: Some(before_request),
                            after_response: Some(after_response),
                            process_endpoint: Some(process_endpoint),
                            free_string: Some(free_string),
                            last_error: Some(last_error),
                        },
                        initialize_with_host: Some(initialize_with_host),
                    },
                    call_start: Some(call_start),
                    call_poll: Some(call_poll),
                    call_finish: Some(call_finish),
                    call_drop: Some(call_drop),
                }
            }
        };
    };
}

/// Lifecycle states of an exported plugin.
const NEW: u8 = 0;
const INITIALIZING: u8 = 1;
const READY: u8 = 2;
const STOPPING: u8 = 3;
const STOPPED: u8 = 4;

/// How long `shutdown` waits for the plugin's background tasks to stop.
const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Worker threads of each plugin's runtime. Synchronous hooks run on the
/// host's calling thread (`block_on`), and so does each poll of a call
/// (ABI 1.2); workers drive the tasks the plugin spawns and the timers and
/// I/O its calls wait on, and wake the host's tasks.
const RUNTIME_WORKERS: usize = 2;

/// The state behind one `export_plugin!`: the plugin instance, its tokio
/// runtime and its lifecycle. Used through the macro; not for direct use.
#[doc(hidden)]
pub struct ExportedPlugin<P> {
    plugin: OnceLock<P>,
    info: OnceLock<InfoStrings>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: OnceLock<tokio::runtime::Handle>,
    state: AtomicU8,
}

impl<P> fmt::Debug for ExportedPlugin<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportedPlugin")
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

struct InfoStrings {
    name: CString,
    version: CString,
    description: CString,
}

/// A failed call, on its way to the caller's `last_error`.
#[derive(Debug)]
struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn plugin(error: crate::BackworksError) -> Self {
        Self::new(STATUS_PLUGIN_ERROR, error.to_string())
    }

    fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(STATUS_INVALID_INPUT, message)
    }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<(i32, CString)>> = const { RefCell::new(None) };
}

fn set_last_error(failure: Failure) {
    let message = CString::new(failure.message.replace('\0', "\\0")).unwrap_or_default();
    // A thread being torn down has no slot left; the status code still tells.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = Some((failure.code, message)));
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|slot| slot.borrow_mut().take());
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        String::from("panic with a non-string payload")
    }
}

/// Runs `body`, turning an error or a panic into the thread's last error.
fn guarded<T>(body: impl FnOnce() -> Result<T, Failure>) -> Option<T> {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => Some(value),
        Ok(Err(failure)) => {
            set_last_error(failure);
            None
        }
        Err(payload) => {
            let message = panic_message(&*payload);
            // Dropping a payload may itself panic; leak it rather than unwind.
            if catch_unwind(AssertUnwindSafe(move || drop(payload))).is_err() {
                // The second payload is leaked on purpose.
            }
            set_last_error(Failure::new(STATUS_PANIC, format!("panicked: {message}")));
            None
        }
    }
}

fn status(body: impl FnOnce() -> Result<(), Failure>) -> i32 {
    match guarded(body) {
        Some(()) => STATUS_OK,
        None => LAST_ERROR
            .try_with(|slot| slot.borrow().as_ref().map(|(code, _)| *code))
            .ok()
            .flatten()
            .unwrap_or(STATUS_PLUGIN_ERROR),
    }
}

fn string_out(body: impl FnOnce() -> Result<Option<String>, Failure>) -> *const c_char {
    let out = guarded(|| match body()? {
        None => Ok(ptr::null()),
        Some(text) => CString::new(text)
            .map(|c| c.into_raw().cast_const())
            .map_err(|e| {
                Failure::new(
                    STATUS_PLUGIN_ERROR,
                    format!(
                        "hook output contains a NUL byte at offset {}; C strings cannot carry it",
                        e.nul_position()
                    ),
                )
            }),
    });
    out.unwrap_or(ptr::null())
}

/// Reads argument `what` as UTF-8.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string valid for `'a`.
unsafe fn input<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::invalid_input(format!("argument `{what}` is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated for 'a, by this function's contract.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str().map_err(|e| {
        Failure::invalid_input(format!(
            "argument `{what}` is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })
}

fn json_input<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, Failure> {
    serde_json::from_str(text)
        .map_err(|e| Failure::invalid_input(format!("argument `{what}` is not valid JSON: {e}")))
}

/// Why `hook` cannot run in lifecycle state `now`.
fn state_error(now: u8, hook: &str) -> Failure {
    let why = match now {
        NEW => "the plugin is not initialized",
        INITIALIZING => "the plugin is being initialized",
        READY => "the plugin is already initialized",
        STOPPING => "the plugin is shutting down",
        _ => "the plugin is shut down",
    };
    Failure::new(STATUS_INVALID_STATE, format!("`{hook}` called but {why}"))
}

fn cstring_lossy(text: &str) -> CString {
    CString::new(text.replace('\0', "")).unwrap_or_default()
}

impl<P: BackworksPlugin + Default> ExportedPlugin<P> {
    /// An exported plugin in its first state; nothing runs until the host
    /// calls in.
    pub const fn new() -> Self {
        Self {
            plugin: OnceLock::new(),
            info: OnceLock::new(),
            runtime: Mutex::new(None),
            handle: OnceLock::new(),
            state: AtomicU8::new(NEW),
        }
    }

    fn plugin(&self) -> &P {
        self.plugin.get_or_init(P::default)
    }

    /// `plugin_info`: NULL strings when constructing the plugin panicked.
    pub fn info(&'static self) -> PluginInfo {
        let strings = guarded(|| {
            Ok(self.info.get_or_init(|| {
                let plugin = self.plugin();
                InfoStrings {
                    name: cstring_lossy(plugin.name()),
                    version: cstring_lossy(plugin.version()),
                    description: cstring_lossy(plugin.description()),
                }
            }))
        });
        PluginInfo {
            name: strings.map_or(ptr::null(), |s| s.name.as_ptr()),
            version: strings.map_or(ptr::null(), |s| s.version.as_ptr()),
            description: strings.map_or(ptr::null(), |s| s.description.as_ptr()),
            abi_version: ABI_VERSION,
            struct_size: std::mem::size_of::<PluginInfo>() as u32,
        }
    }

    fn transition(&self, from: u8, to: u8, hook: &str) -> Result<(), Failure> {
        self.state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
            .map_err(|now| state_error(now, hook))
    }

    fn ready(&self, hook: &str) -> Result<(&P, &tokio::runtime::Handle), Failure> {
        let now = self.state.load(Ordering::Acquire);
        if now != READY {
            return Err(state_error(now, hook));
        }
        let handle = self.handle.get().ok_or_else(|| {
            Failure::new(
                STATUS_INVALID_STATE,
                format!("`{hook}` called before a runtime exists"),
            )
        })?;
        Ok((self.plugin(), handle))
    }

    fn runtime_handle(&self) -> Result<&tokio::runtime::Handle, Failure> {
        if let Some(handle) = self.handle.get() {
            return Ok(handle);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_WORKERS)
            .thread_name("backworks-plugin")
            .enable_all()
            .build()
            .map_err(|e| {
                Failure::new(
                    STATUS_PLUGIN_ERROR,
                    format!("cannot start the plugin's tokio runtime: {e}"),
                )
            })?;
        let handle = self.handle.get_or_init(|| runtime.handle().clone());
        *self.runtime.lock().unwrap_or_else(PoisonError::into_inner) = Some(runtime);
        Ok(handle)
    }

    /// `initialize`.
    ///
    /// # Safety
    /// `config` is NULL or a NUL-terminated string valid for the call.
    pub unsafe fn initialize(&self, config: *const c_char) -> i32 {
        status(|| {
            self.transition(NEW, INITIALIZING, "initialize")?;
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: forwarded from this function's contract.
                let text = unsafe { input(config, "config") }?;
                let config: serde_json::Value = json_input(text, "config")?;
                let handle = self.runtime_handle()?;
                handle
                    .block_on(self.plugin().initialize(&config))
                    .map_err(Failure::plugin)
            }));
            let next = if matches!(outcome, Ok(Ok(()))) {
                READY
            } else {
                NEW
            };
            self.state.store(next, Ordering::Release);
            outcome.unwrap_or_else(|payload| resume_unwind(payload))
        })
    }

    /// `initialize_with_host` (ABI 1.1): keeps `host`'s services, installs
    /// the log forwarding into the host (once per library), then does what
    /// `initialize` does.
    ///
    /// # Safety
    /// `config` is NULL or a NUL-terminated string valid for the call;
    /// `host` is NULL or points to a [`HostServices`] whose first
    /// `struct_size` bytes, `context` and functions stay valid while the
    /// library is loaded.
    pub unsafe fn initialize_with_host(
        &self,
        config: *const c_char,
        host: *const HostServices,
    ) -> i32 {
        // SAFETY: forwarded from this function's contract.
        match unsafe { read_host_services(host) } {
            Ok(services) => {
                if HOST.set(Host(services)).is_ok() {
                    crate::host_log::install();
                }
                // SAFETY: forwarded from this function's contract.
                unsafe { self.initialize(config) }
            }
            Err(failure) => status(|| Err(failure)),
        }
    }

    /// `shutdown`: runs the plugin's hook, then stops its runtime.
    pub fn shutdown(&self) -> i32 {
        status(|| {
            self.transition(READY, STOPPING, "shutdown")?;
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let handle = self.runtime_handle()?;
                handle
                    .block_on(self.plugin().shutdown())
                    .map_err(Failure::plugin)
            }));
            let runtime = self
                .runtime
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(runtime) = runtime {
                runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
            }
            self.state.store(STOPPED, Ordering::Release);
            outcome.unwrap_or_else(|payload| resume_unwind(payload))
        })
    }

    /// `health_check`.
    pub fn health_check(&self) -> i32 {
        status(|| {
            let (plugin, handle) = self.ready("health_check")?;
            handle
                .block_on(plugin.health_check())
                .map_err(Failure::plugin)
        })
    }

    /// `before_request`.
    ///
    /// # Safety
    /// `request` is NULL or a NUL-terminated string valid for the call.
    pub unsafe fn before_request(&self, request: *const c_char) -> *const c_char {
        string_out(|| {
            let (plugin, handle) = self.ready("before_request")?;
            // SAFETY: forwarded from this function's contract.
            let text = unsafe { input(request, "request") }?;
            let request: HttpRequest = json_input(text, "request")?;
            let action = default_hook_guard(plugin, "before_request", || {
                handle.block_on(plugin.before_request(&request))
            })?;
            match action.map_err(Failure::plugin)? {
                RequestAction::Continue => Ok(None),
                action => to_json(&action).map(Some),
            }
        })
    }

    /// `after_response`.
    ///
    /// # Safety
    /// `exchange` is NULL or a NUL-terminated string valid for the call.
    pub unsafe fn after_response(&self, exchange: *const c_char) -> *const c_char {
        string_out(|| {
            let (plugin, handle) = self.ready("after_response")?;
            // SAFETY: forwarded from this function's contract.
            let text = unsafe { input(exchange, "exchange") }?;
            let exchange: ResponseExchange = json_input(text, "exchange")?;
            default_hook_guard(plugin, "after_response", || {
                handle.block_on(plugin.after_response(&exchange.request, &exchange.response))
            })?
            .map_err(Failure::plugin)?
            .map(|response| to_json(&response))
            .transpose()
        })
    }

    /// `process_endpoint`.
    ///
    /// # Safety
    /// Each argument is NULL or a NUL-terminated string valid for the call.
    pub unsafe fn process_endpoint(
        &self,
        endpoint: *const c_char,
        method: *const c_char,
        data: *const c_char,
    ) -> *const c_char {
        string_out(|| {
            let (plugin, handle) = self.ready("process_endpoint")?;
            // SAFETY: forwarded from this function's contract.
            let (endpoint, method, data) = unsafe {
                (
                    input(endpoint, "endpoint")?,
                    input(method, "method")?,
                    input(data, "data")?,
                )
            };
            default_hook_guard(plugin, "process_endpoint", || {
                handle.block_on(plugin.process_endpoint_data(endpoint, method, data))
            })?
            .map_err(Failure::plugin)
        })
    }
}

impl<P: BackworksPlugin + Default> ExportedPlugin<P> {
    /// `call_start` (ABI 1.2): request hook `hook` as a future, polled
    /// once with `waker`; its result when that poll finished it, else a
    /// [`PendingCall`] written to `*call`.
    ///
    /// # Safety
    /// Each of `args` is NULL or a NUL-terminated string valid for the call;
    /// `waker` is NULL or a [`HostWaker`] valid for the call; `call` is NULL
    /// or writable.
    pub unsafe fn call_start(
        &'static self,
        hook: u32,
        args: [*const c_char; 3],
        waker: *const HostWaker,
        call: *mut *mut c_void,
    ) -> *const c_char {
        string_out(|| {
            if call.is_null() {
                return Err(Failure::invalid_input("argument `call` is NULL"));
            }
            // SAFETY: non-NULL and writable, by this function's contract.
            unsafe { call.write(ptr::null_mut()) };
            // SAFETY: forwarded from this function's contract.
            let waker = unsafe { host_waker(waker) }?;
            let name = match hook {
                HOOK_BEFORE_REQUEST => "before_request",
                HOOK_PROCESS_ENDPOINT => "process_endpoint",
                HOOK_AFTER_RESPONSE => "after_response",
                other => {
                    return Err(Failure::invalid_input(format!(
                        "argument `hook` is {other}: a request hook is {HOOK_BEFORE_REQUEST} (before_request), {HOOK_PROCESS_ENDPOINT} (process_endpoint) or {HOOK_AFTER_RESPONSE} (after_response)"
                    )));
                }
            };
            let (plugin, handle) = self.ready(name)?;
            // SAFETY: forwarded from this function's contract.
            let future = unsafe { hook_future(plugin, hook, args) }?;
            let mut pending = PendingCall {
                future: Some(future),
                result: None,
                handle: handle.clone(),
            };
            if pending.poll(waker) {
                return pending.take();
            }
            // SAFETY: checked non-NULL and writable above.
            unsafe { call.write(Box::into_raw(Box::new(pending)).cast()) };
            Ok(None)
        })
    }
}

/// Type of the futures of [`PendingCall`]: a hook's output as the
/// synchronous hook returns it.
type HookFuture = Pin<Box<dyn Future<Output = Result<Option<String>, Failure>> + Send>>;

/// Request hook `hook` of `plugin` with its C arguments read (copied), as a
/// future whose output is what the synchronous hook returns.
///
/// # Safety
/// Each of `args` is NULL or a NUL-terminated string valid for the call.
unsafe fn hook_future<P: BackworksPlugin>(
    plugin: &'static P,
    hook: u32,
    args: [*const c_char; 3],
) -> Result<HookFuture, Failure> {
    Ok(match hook {
        HOOK_BEFORE_REQUEST => {
            // SAFETY: forwarded from this function's contract.
            let request: HttpRequest =
                json_input(unsafe { input(args[0], "request") }?, "request")?;
            Box::pin(async move {
                let action = plugin.before_request(&request).await;
                not_implemented_if_default(plugin, "before_request")?;
                match action.map_err(Failure::plugin)? {
                    RequestAction::Continue => Ok(None),
                    action => to_json(&action).map(Some),
                }
            })
        }
        HOOK_AFTER_RESPONSE => {
            let exchange: ResponseExchange =
                // SAFETY: forwarded from this function's contract.
                json_input(unsafe { input(args[0], "exchange") }?, "exchange")?;
            Box::pin(async move {
                let response = plugin
                    .after_response(&exchange.request, &exchange.response)
                    .await;
                not_implemented_if_default(plugin, "after_response")?;
                response
                    .map_err(Failure::plugin)?
                    .map(|response| to_json(&response))
                    .transpose()
            })
        }
        _ => {
            // SAFETY: forwarded from this function's contract.
            let (endpoint, method, data) = unsafe {
                (
                    input(args[0], "endpoint")?.to_owned(),
                    input(args[1], "method")?.to_owned(),
                    input(args[2], "data")?.to_owned(),
                )
            };
            Box::pin(async move {
                let body = plugin
                    .process_endpoint_data(&endpoint, &method, &data)
                    .await;
                not_implemented_if_default(plugin, "process_endpoint")?;
                body.map_err(Failure::plugin)
            })
        }
    })
}

/// [`STATUS_NOT_IMPLEMENTED`] when the request hook of `plugin` that just
/// finished, in this poll, was the trait's default (the defaults never
/// wait, so their mark is on this thread: see `plugin::take_default_hook`).
fn not_implemented_if_default<P: BackworksPlugin>(plugin: &P, hook: &str) -> Result<(), Failure> {
    if crate::plugin::take_default_hook(plugin) {
        return Err(Failure::new(
            STATUS_NOT_IMPLEMENTED,
            format!("`{hook}` is not implemented (the trait's default); the host may skip it"),
        ));
    }
    Ok(())
}

/// The host's waker of one call, checked.
///
/// # Safety
/// `waker` is NULL or a [`HostWaker`] valid for the call.
unsafe fn host_waker<'a>(waker: *const HostWaker) -> Result<&'a HostWaker, Failure> {
    // SAFETY: NULL or valid for the call, by this function's contract.
    let waker = unsafe { waker.as_ref() }
        .ok_or_else(|| Failure::invalid_input("argument `waker` is NULL"))?;
    match waker::missing_function(waker) {
        Some(function) => Err(Failure::invalid_input(format!(
            "argument `waker` has a NULL `{function}`; a HostWaker needs clone, wake and drop"
        ))),
        None => Ok(waker),
    }
}

/// A request hook call the host drives as a future (ABI 1.2): what a call
/// handle points to, from `call_start` until `call_finish` or `call_drop`.
///
/// Every poll, and the drop of the future, runs inside the plugin's own
/// runtime's context (`Handle::enter`), so the timers and I/O the hook
/// awaits are driven by the plugin's runtime threads, which wake the host's
/// waker. A panic while polling (or dropping) is caught: the call is then
/// ready with status 2.
pub struct PendingCall {
    future: Option<HookFuture>,
    result: Option<Result<Option<String>, Failure>>,
    handle: tokio::runtime::Handle,
}

impl fmt::Debug for PendingCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingCall")
            .field("ready", &self.result.is_some())
            .finish_non_exhaustive()
    }
}

impl PendingCall {
    /// Polls the hook with `waker` once (nothing when it is already
    /// ready): true when it is ready.
    fn poll(&mut self, waker: &HostWaker) -> bool {
        if self.result.is_some() {
            return true;
        }
        let Some(future) = self.future.as_mut() else {
            self.result = Some(Err(Failure::new(
                STATUS_INVALID_STATE,
                "the call has no future (a bug of the SDK)",
            )));
            return true;
        };
        let _runtime = self.handle.enter();
        crate::plugin::clear_default_hook();
        let polled = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `waker` was checked (`host_waker`) and is valid for
            // this call (the ABI's contract for `call_start`/`call_poll`).
            unsafe {
                waker::with_lent(waker, |waker| {
                    future.as_mut().poll(&mut Context::from_waker(waker))
                })
            }
        }));
        let result = match polled {
            Ok(Poll::Pending) => return false,
            Ok(Poll::Ready(result)) => result,
            Err(payload) => Err(Failure::new(
                STATUS_PANIC,
                format!("panicked: {}", panic_message(&*payload)),
            )),
        };
        self.result = Some(result);
        drop_quietly(self.future.take());
        true
    }

    /// The result of a ready call (`STATUS_INVALID_STATE` before).
    fn take(&mut self) -> Result<Option<String>, Failure> {
        self.result.take().unwrap_or_else(|| {
            Err(Failure::new(
                STATUS_INVALID_STATE,
                "`call_finish` called before `call_poll` reported the call ready",
            ))
        })
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if self.future.is_some() {
            let _runtime = self.handle.enter();
            drop_quietly(self.future.take());
        }
    }
}

/// Drops `value`, catching a panic of its destructor (and leaking that
/// panic's payload rather than unwinding again).
fn drop_quietly<T>(value: T) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
        std::mem::forget(payload);
    }
}

/// `call_poll` of every Rust plugin (ABI 1.2).
///
/// # Safety
/// `call` is NULL or a handle `call_start` returned, not finished or
/// dropped, that no other thread uses during this call; `waker` is NULL or
/// a [`HostWaker`] valid for the call.
#[doc(hidden)]
pub unsafe fn call_poll(call: *mut c_void, waker: *const HostWaker) -> i32 {
    // SAFETY: NULL or a live `PendingCall` used by this thread alone, by
    // this function's contract.
    let Some(pending) = (unsafe { call.cast::<PendingCall>().as_mut() }) else {
        return POLL_READY;
    };
    // SAFETY: forwarded from this function's contract.
    match unsafe { host_waker(waker) } {
        Ok(waker) => {
            if pending.poll(waker) {
                POLL_READY
            } else {
                POLL_PENDING
            }
        }
        Err(failure) => {
            // The call ends with the failure; its future is dropped.
            pending.result = Some(Err(failure));
            let _runtime = pending.handle.enter();
            drop_quietly(pending.future.take());
            POLL_READY
        }
    }
}

/// `call_finish` of every Rust plugin (ABI 1.2): the result as the
/// synchronous hook returns it; frees the call.
///
/// # Safety
/// As for [`call_poll`]; the handle is not used again.
#[doc(hidden)]
pub unsafe fn call_finish(call: *mut c_void) -> *const c_char {
    string_out(|| {
        if call.is_null() {
            return Err(Failure::invalid_input("argument `call` is NULL"));
        }
        // SAFETY: a handle from `Box::into_raw` in `call_start`, given back
        // once, by this function's contract.
        let mut pending = unsafe { Box::from_raw(call.cast::<PendingCall>()) };
        pending.take()
    })
}

/// `call_drop` of every Rust plugin (ABI 1.2): cancels and frees a call.
///
/// # Safety
/// As for [`call_finish`].
#[doc(hidden)]
pub unsafe fn call_drop(call: *mut c_void) {
    if !call.is_null() {
        // SAFETY: as in `call_finish`.
        drop_quietly(unsafe { Box::from_raw(call.cast::<PendingCall>()) });
    }
}

/// Runs request hook `hook` of `plugin` with `call`, and turns a run of the
/// trait's default into [`STATUS_NOT_IMPLEMENTED`], so the host can skip the
/// hook from then on.
fn default_hook_guard<P: BackworksPlugin, T>(
    plugin: &P,
    hook: &str,
    call: impl FnOnce() -> T,
) -> Result<T, Failure> {
    crate::plugin::take_default_hook(plugin);
    let out = call();
    if crate::plugin::take_default_hook(plugin) {
        return Err(Failure::new(
            STATUS_NOT_IMPLEMENTED,
            format!("`{hook}` is not implemented (the trait's default); the host may skip it"),
        ));
    }
    Ok(out)
}

impl<P: BackworksPlugin + Default> Default for ExportedPlugin<P> {
    fn default() -> Self {
        Self::new()
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| {
        Failure::new(
            STATUS_PLUGIN_ERROR,
            format!("cannot encode hook output: {e}"),
        )
    })
}

/// `free_string` of every Rust plugin.
///
/// # Safety
/// `text` is NULL or a string returned by this SDK's hooks or `last_error`
/// and not freed yet.
#[doc(hidden)]
pub unsafe fn free_string(text: *const c_char) {
    if !text.is_null() {
        // SAFETY: every string this SDK hands out comes from
        // `CString::into_raw` and is freed once, by the contract above.
        drop(unsafe { CString::from_raw(text.cast_mut()) });
    }
}

/// `last_error` of every Rust plugin.
///
/// # Safety
/// `code` is NULL or points to a writable `i32`.
#[doc(hidden)]
pub unsafe fn last_error(code: *mut i32) -> *const c_char {
    let taken = LAST_ERROR
        .try_with(|slot| slot.borrow_mut().take())
        .ok()
        .flatten();
    let (status, message) = match taken {
        Some((status, message)) => (status, message.into_raw().cast_const()),
        None => (STATUS_OK, ptr::null()),
    };
    if !code.is_null() {
        // SAFETY: non-NULL and writable, by the contract above.
        unsafe { code.write(status) };
    }
    message
}

/// The host's services, as `initialize_with_host` received them: one per
/// plugin library (every library has its own copy of this static).
static HOST: OnceLock<Host> = OnceLock::new();

/// The host's services, as the SDK's log forwarding calls them.
#[derive(Debug)]
pub(crate) struct Host(HostServices);

/// The host's services, once the host initialized the plugin with them (ABI
/// 1.1 hosts); `None` under a 1.0 host or before `initialize_with_host`.
pub fn host_services() -> Option<&'static HostServices> {
    HOST.get().map(|host| &host.0)
}

/// The services the SDK's log forwarding calls.
pub(crate) fn host() -> Option<&'static Host> {
    HOST.get()
}

impl Host {
    /// Whether the host keeps events of `level` from `target`; false
    /// when it offers no logging.
    pub(crate) fn log_enabled(&self, level: u32, target: &str) -> bool {
        let (Some(enabled), Some(_)) = (self.0.log_enabled, self.0.log) else {
            return false;
        };
        let target = cstring_lossy(target);
        enabled(self.0.context, level, target.as_ptr()) != 0
    }

    /// One event into the host's log; `fields` is a JSON object or `None`.
    pub(crate) fn log(&self, level: u32, target: &str, message: &str, fields: Option<&str>) {
        let Some(log) = self.0.log else {
            return;
        };
        let target = cstring_lossy(target);
        let message = cstring_lossy(message);
        let fields = fields.map(cstring_lossy);
        log(
            self.0.context,
            level,
            target.as_ptr(),
            message.as_ptr(),
            fields.as_ref().map_or(ptr::null(), |f| f.as_ptr()),
        );
    }
}

/// A copy of the host's services: the fields its `struct_size` covers, the
/// others NULL (a host of a later revision may pass a larger struct, of
/// which this copy keeps what this SDK knows).
///
/// # Safety
/// `host` is NULL or points to a `HostServices` whose first `struct_size`
/// bytes are readable.
unsafe fn read_host_services(host: *const HostServices) -> Result<HostServices, Failure> {
    if host.is_null() {
        return Err(Failure::invalid_input("argument `host` is NULL"));
    }
    // SAFETY: non-NULL, and `struct_size` is the first field of every
    // revision of the struct, by this function's contract.
    let declared = unsafe { host.cast::<u32>().read_unaligned() } as usize;
    let size = std::mem::size_of::<HostServices>();
    if declared < std::mem::offset_of!(HostServices, context) {
        return Err(Failure::invalid_input(format!(
            "argument `host` declares struct_size {declared}: HostServices has at least its 8-byte header (and is {size} bytes in ABI 1.1)"
        )));
    }
    let mut copy = std::mem::MaybeUninit::<HostServices>::zeroed();
    // SAFETY: `declared.min(size)` bytes are readable at `host` (contract)
    // and writable in `copy`; the two do not overlap.
    unsafe {
        ptr::copy_nonoverlapping(
            host.cast::<u8>(),
            copy.as_mut_ptr().cast::<u8>(),
            declared.min(size),
        );
    }
    // SAFETY: all-zero bytes are a valid `HostServices` (NULL pointers,
    // `None` functions), and the bytes copied over them are the host's
    // fields of the same types.
    Ok(unsafe { copy.assume_init() })
}
