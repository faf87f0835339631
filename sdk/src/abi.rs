//! The ABI between the Backworks host and a plugin library, v1 (revision
//! 1.1), as a plugin sees it (`docs/abi.md`).
//!
//! Everything of [`backworks_abi`] (layouts, constants, the host half) is
//! re-exported here, so `backworks_plugin_sdk::abi::PluginInfo` and
//! `backworks_abi::PluginInfo` are one type. This module adds the **plugin
//! side**: [`export_plugin!`](crate::export_plugin) and the [`ExportedPlugin`]
//! machinery behind it, which turns a [`BackworksPlugin`] into the exported
//! symbols, catches every panic at the boundary and runs async hooks on a
//! tokio runtime the plugin owns. A plugin built with this SDK is of ABI 1.1:
//! its table ends with `initialize_with_host`, which keeps the host's
//! [`HostServices`] ([`host_services`]) and installs the log forwarding
//! (`host_log`) before it initializes the plugin.
//!
//! It is the only module of the SDK with `unsafe` code.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

pub use backworks_abi::*;

use crate::{BackworksPlugin, HttpRequest, RequestAction, ResponseExchange};

/// Exports a [`BackworksPlugin`] through the C ABI.
///
/// `export_plugin!(MyPlugin)` (the type must implement `Default`) emits the
/// exported functions `plugin_info` and `plugin_vtable` and the exported
/// static metadata record `backworks_plugin_metadata` for the calling crate,
/// whose name, version and description (from `Cargo.toml`) it records. Use it
/// once per `cdylib`.
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
            pub static backworks_plugin_metadata: $crate::abi::MetadataRecord =
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
                );

            #[unsafe(no_mangle)]
            pub extern "C" fn plugin_info() -> $crate::abi::PluginInfo {
                PLUGIN.info()
            }

            #[unsafe(no_mangle)]
            pub extern "C" fn plugin_vtable() -> $crate::abi::PluginVTableV1_1 {
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
                $crate::abi::PluginVTableV1_1 {
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

/// Worker threads of each plugin's runtime. Hooks run on the host's calling
/// thread (`block_on`); workers only drive tasks the plugin spawns.
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
