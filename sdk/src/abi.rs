//! The stable C ABI between the Backworks host and a plugin library, v1.
//!
//! This module is the contract of `docs/abi.md` in code, for both sides:
//!
//! - **Layouts**: [`PluginInfo`], [`PluginVTable`] and [`MetadataRecord`],
//!   `#[repr(C)]`, mirrored by `include/backworks.h` (generated from this file).
//! - **Plugin side**: [`export_plugin!`](crate::export_plugin) and the
//!   [`ExportedPlugin`] machinery behind it, which turns a
//!   [`BackworksPlugin`] into the exported symbols, catches every panic at the
//!   boundary and runs async hooks on a tokio runtime the plugin owns.
//! - **Host side**: [`check_compatible`], [`read_metadata_at`] and
//!   [`RawPlugin`], which check a plugin's ABI version and struct sizes
//!   *before* `plugin_vtable` is called, call the hooks, turn NULL returns and
//!   status codes into [`HookError`]s and hand every returned string back to
//!   the plugin's own `free_string` ([`PluginString`]).
//!
//! It is the only module of the SDK with `unsafe` code.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crate::metadata::{self, FLAG_PANIC_ABORT, MetadataError, PluginMetadata};
use crate::{
    BackworksPlugin, HttpRequest, HttpResponse, RequestAction, ResponseExchange, SDK_VERSION,
    TARGET,
};

/// The ABI version this SDK speaks: written into every plugin's metadata
/// record and [`PluginInfo`], and the only version a host built with it loads.
pub const ABI_VERSION: u32 = 1;

/// First eight bytes of a metadata record.
pub const METADATA_MAGIC: [u8; 8] = *b"BWKSPLUG";

/// Written in the target's byte order; tells a reader the record's order.
pub const BYTE_ORDER_MARK: u32 = 0x0A0B_0C0D;

/// Size in bytes of a v1 [`MetadataRecord`].
pub const METADATA_RECORD_SIZE: usize = std::mem::size_of::<MetadataRecord>();

/// Largest record a host reads from memory; later ABI versions may grow the
/// record up to this size.
pub const METADATA_RECORD_MAX_SIZE: usize = 64 * 1024;

/// Exported data symbol holding the [`MetadataRecord`].
pub const METADATA_SYMBOL: &str = "backworks_plugin_metadata";

/// Exported function returning [`PluginInfo`].
pub const PLUGIN_INFO_SYMBOL: &str = "plugin_info";

/// Exported function returning [`PluginVTable`].
pub const PLUGIN_VTABLE_SYMBOL: &str = "plugin_vtable";

/// Section holding the metadata record in ELF and PE/COFF files (PE section
/// names have at most 8 bytes).
pub const METADATA_SECTION: &str = ".bwmeta";

/// Segment and section holding the metadata record in Mach-O files.
pub const METADATA_SECTION_MACHO: (&str, &str) = ("__DATA", "__bwmeta");

/// Status code: the hook succeeded.
pub const STATUS_OK: i32 = 0;
/// Status code: the plugin's hook returned an error.
pub const STATUS_PLUGIN_ERROR: i32 = 1;
/// Status code: the hook panicked; the panic was caught at the boundary.
pub const STATUS_PANIC: i32 = 2;
/// Status code: an argument was NULL, not UTF-8, or not the expected JSON.
pub const STATUS_INVALID_INPUT: i32 = 3;
/// Status code: the hook was called in the wrong lifecycle state (before
/// `initialize`, after `shutdown`, or `initialize` twice).
pub const STATUS_INVALID_STATE: i32 = 4;
/// Status code (request hooks only: `before_request`, `after_response`,
/// `process_endpoint`): the plugin does not implement this hook, and the
/// host may stop calling it. The call itself counts as a no-op (continue,
/// keep the response, not handled). The SDK reports it for hooks left to
/// the trait's default.
pub const STATUS_NOT_IMPLEMENTED: i32 = 5;

/// What `plugin_info` returns: the plugin's own name, version and
/// description, as static NUL-terminated UTF-8 strings owned by the plugin
/// (valid while the library is loaded; never freed by the host).
///
/// The first three fields are those of the design note, in its order.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PluginInfo {
    /// The plugin's name (`BackworksPlugin::name`).
    pub name: *const c_char,
    /// The plugin's version (`BackworksPlugin::version`).
    pub version: *const c_char,
    /// One line about the plugin (`BackworksPlugin::description`).
    pub description: *const c_char,
    /// [`ABI_VERSION`] of the plugin.
    pub abi_version: u32,
    /// `sizeof(PluginInfo)` in the plugin.
    pub struct_size: u32,
}

/// What `plugin_vtable` returns: the hooks, then the two ABI helpers.
///
/// The first six fields are those of the design note, in its order. Every
/// string a hook returns is owned by the plugin and must be released with
/// `free_string`; a NULL return means "nothing" unless `last_error` then
/// reports an error. See `docs/abi.md` for each entry's contract.
///
/// Every entry must be a function: a host refuses a table with a NULL entry,
/// naming it, before it calls anything in the table. (In Rust each entry is
/// an `Option`, the same bytes as the C pointer, so a NULL written by a C
/// plugin is `None`, never an invalid function pointer.)
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PluginVTable {
    /// `initialize(config_json)`: status code.
    pub initialize: Option<extern "C" fn(*const c_char) -> i32>,
    /// `shutdown()`: status code.
    pub shutdown: Option<extern "C" fn() -> i32>,
    /// `health_check()`: status code; `0` is healthy.
    pub health_check: Option<extern "C" fn() -> i32>,
    /// `before_request(request_json)`: NULL to continue, else a
    /// [`RequestAction`] as JSON.
    pub before_request: Option<extern "C" fn(*const c_char) -> *const c_char>,
    /// `after_response(exchange_json)`: NULL to keep the response, else the
    /// replacement [`HttpResponse`] as JSON.
    pub after_response: Option<extern "C" fn(*const c_char) -> *const c_char>,
    /// `process_endpoint(endpoint, method, data)`: NULL when not handled,
    /// else the response body.
    pub process_endpoint:
        Option<extern "C" fn(*const c_char, *const c_char, *const c_char) -> *const c_char>,
    /// Releases a string returned by any entry of this table. NULL is a no-op.
    pub free_string: Option<extern "C" fn(*const c_char)>,
    /// Takes the calling thread's last error: writes its status code to
    /// `*code` (when `code` is not NULL) and returns its message (release it
    /// with `free_string`), or writes `0` and returns NULL when there is none.
    pub last_error: Option<extern "C" fn(*mut i32) -> *const c_char>,
}

/// A [`PluginVTable`] whose every entry was checked to be a function: what
/// [`RawPlugin`] calls through.
#[derive(Debug, Clone, Copy)]
pub struct CheckedVTable {
    /// [`PluginVTable::initialize`].
    pub initialize: extern "C" fn(*const c_char) -> i32,
    /// [`PluginVTable::shutdown`].
    pub shutdown: extern "C" fn() -> i32,
    /// [`PluginVTable::health_check`].
    pub health_check: extern "C" fn() -> i32,
    /// [`PluginVTable::before_request`].
    pub before_request: extern "C" fn(*const c_char) -> *const c_char,
    /// [`PluginVTable::after_response`].
    pub after_response: extern "C" fn(*const c_char) -> *const c_char,
    /// [`PluginVTable::process_endpoint`].
    pub process_endpoint:
        extern "C" fn(*const c_char, *const c_char, *const c_char) -> *const c_char,
    /// [`PluginVTable::free_string`].
    pub free_string: extern "C" fn(*const c_char),
    /// [`PluginVTable::last_error`].
    pub last_error: extern "C" fn(*mut i32) -> *const c_char,
}

impl PluginVTable {
    /// The table with every entry checked, or the first NULL entry's name
    /// (in table order).
    pub fn checked(&self) -> Result<CheckedVTable, &'static str> {
        Ok(CheckedVTable {
            initialize: self.initialize.ok_or("initialize")?,
            shutdown: self.shutdown.ok_or("shutdown")?,
            health_check: self.health_check.ok_or("health_check")?,
            before_request: self.before_request.ok_or("before_request")?,
            after_response: self.after_response.ok_or("after_response")?,
            process_endpoint: self.process_endpoint.ok_or("process_endpoint")?,
            free_string: self.free_string.ok_or("free_string")?,
            last_error: self.last_error.ok_or("last_error")?,
        })
    }
}

/// The metadata record, exported as `backworks_plugin_metadata` and placed in
/// the `.bwmeta` section (`__DATA,__bwmeta` on Mach-O).
///
/// Plain bytes and integers only (no pointers), so it reads the same from
/// the file as from memory. Strings are UTF-8, NUL-terminated and
/// zero-padded to their slot. Integers are in the target's byte order, which
/// `byte_order` tells. Byte layout: `docs/abi.md`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MetadataRecord {
    /// [`METADATA_MAGIC`].
    pub magic: [u8; 8],
    /// [`BYTE_ORDER_MARK`].
    pub byte_order: u32,
    /// `sizeof(MetadataRecord)`: 512 in v1.
    pub record_size: u32,
    /// [`ABI_VERSION`] the plugin was built against.
    pub abi_version: u32,
    /// `sizeof(PluginInfo)` in the plugin.
    pub info_size: u32,
    /// `sizeof(PluginVTable)` in the plugin.
    pub vtable_size: u32,
    /// Flag bits (`metadata::FLAG_*`).
    pub flags: u32,
    /// SDK (or C header) version.
    pub sdk_version: [u8; 32],
    /// Package name.
    pub name: [u8; 64],
    /// Package version.
    pub version: [u8; 64],
    /// Target triple.
    pub target: [u8; 64],
    /// Package description, truncated to 255 bytes on a character boundary.
    pub description: [u8; 256],
}

impl MetadataRecord {
    /// A record of zeroes (the layout, without content).
    pub const ZEROED: Self = Self {
        magic: [0; 8],
        byte_order: 0,
        record_size: 0,
        abi_version: 0,
        info_size: 0,
        vtable_size: 0,
        flags: 0,
        sdk_version: [0; 32],
        name: [0; 64],
        version: [0; 64],
        target: [0; 64],
        description: [0; 256],
    };

    /// The record for package `name` at `version`, built with this SDK for
    /// this target. Evaluated at compile time by `export_plugin!`: a name,
    /// version or SDK field that does not fit its slot, or holds a NUL byte,
    /// is a compile error; a long description is truncated.
    pub const fn new(name: &str, version: &str, description: &str, flags: u32) -> Self {
        Self {
            magic: METADATA_MAGIC,
            byte_order: BYTE_ORDER_MARK,
            record_size: METADATA_RECORD_SIZE as u32,
            abi_version: ABI_VERSION,
            info_size: std::mem::size_of::<PluginInfo>() as u32,
            vtable_size: std::mem::size_of::<PluginVTable>() as u32,
            flags,
            sdk_version: fixed(
                SDK_VERSION,
                "backworks: the SDK version does not fit 31 bytes",
            ),
            name: fixed(
                name,
                "backworks: the package name must be 1..=63 bytes without NUL",
            ),
            version: fixed(
                version,
                "backworks: the package version must be 1..=63 bytes without NUL",
            ),
            target: fixed(TARGET, "backworks: the target triple does not fit 63 bytes"),
            description: truncated(description),
        }
    }
}

impl fmt::Debug for MetadataRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match metadata::parse(self.as_bytes()) {
            Ok(parsed) => parsed.fmt(f),
            Err(error) => write!(f, "MetadataRecord(invalid: {error})"),
        }
    }
}

impl MetadataRecord {
    /// The record's 512 bytes, exactly as they sit in the plugin's section.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `MetadataRecord` is `repr(C)` with only integer and
        // byte-array fields laid out without padding (asserted below), so all
        // of its `size_of` bytes are initialised and any byte pattern is a
        // valid `u8`.
        unsafe {
            std::slice::from_raw_parts(
                (self as *const MetadataRecord).cast::<u8>(),
                METADATA_RECORD_SIZE,
            )
        }
    }
}

// The layout is part of the contract: 512 bytes, no padding, fixed offsets.
const _: () = {
    assert!(METADATA_RECORD_SIZE == 512);
    assert!(std::mem::offset_of!(MetadataRecord, sdk_version) == 32);
    assert!(std::mem::offset_of!(MetadataRecord, name) == 64);
    assert!(std::mem::offset_of!(MetadataRecord, version) == 128);
    assert!(std::mem::offset_of!(MetadataRecord, target) == 192);
    assert!(std::mem::offset_of!(MetadataRecord, description) == 256);
};

/// `text` NUL-padded into `N` bytes; a compile-time panic with `error` when it
/// is empty, does not fit with its NUL, or contains a NUL.
const fn fixed<const N: usize>(text: &str, error: &'static str) -> [u8; N] {
    let bytes = text.as_bytes();
    if bytes.is_empty() || bytes.len() >= N {
        panic!("{}", error);
    }
    let mut out = [0u8; N];
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0 {
            panic!("{}", error);
        }
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// `text` cut to at most `N - 1` bytes on a UTF-8 character boundary (and
/// before any NUL), NUL-padded into `N` bytes.
const fn truncated<const N: usize>(text: &str) -> [u8; N] {
    let bytes = text.as_bytes();
    let mut len = if bytes.len() < N { bytes.len() } else { N - 1 };
    while len > 0 && len < bytes.len() && (bytes[len] & 0xC0) == 0x80 {
        len -= 1;
    }
    let mut out = [0u8; N];
    let mut i = 0;
    while i < len && bytes[i] != 0 {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------
// Plugin side.
// ---------------------------------------------------------------------------

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
            pub extern "C" fn plugin_vtable() -> $crate::abi::PluginVTable {
                extern "C" fn initialize(config: *const ::std::ffi::c_char) -> i32 {
                    // SAFETY: the host passes NULL or a NUL-terminated string
                    // that stays valid for the call (ABI contract).
                    unsafe { PLUGIN.initialize(config) }
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
                $crate::abi::PluginVTable {
                    initialize: Some(initialize),
                    shutdown: Some(shutdown),
                    health_check: Some(health_check),
                    before_request: Some(before_request),
                    after_response: Some(after_response),
                    process_endpoint: Some(process_endpoint),
                    free_string: Some(free_string),
                    last_error: Some(last_error),
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

// ---------------------------------------------------------------------------
// Host side.
// ---------------------------------------------------------------------------

/// Why a plugin cannot be used by this host. Each variant names the plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AbiError {
    /// The plugin speaks another ABI version.
    #[error(
        "plugin `{name}` was built for backworks plugin ABI v{found}, this host speaks v{ABI_VERSION}; {hint}"
    )]
    Version {
        /// The plugin's name.
        name: String,
        /// The plugin's ABI version.
        found: u32,
        /// What to do about it.
        hint: &'static str,
    },
    /// A struct of the plugin has another size than the ABI's on this target.
    #[error(
        "plugin `{name}` declares sizeof({what}) = {found} bytes, ABI v{ABI_VERSION} on {TARGET} needs {expected}; it was built for another ABI or target"
    )]
    StructSize {
        /// The plugin's name.
        name: String,
        /// `PluginInfo` or `PluginVTable`.
        what: &'static str,
        /// Size the plugin declares.
        found: u32,
        /// Size the host expects.
        expected: usize,
    },
    /// The plugin was built for another target.
    #[error(
        "plugin `{name}` was built for target `{found}`, this host runs on `{TARGET}`; build it with `--target {TARGET}`"
    )]
    Target {
        /// The plugin's name.
        name: String,
        /// The plugin's target.
        found: String,
    },
    /// The plugin was built with `panic = "abort"`.
    #[error(
        "plugin `{name}` was built with panic = \"abort\": one panic would end the host; build it with panic = \"unwind\" (the default)"
    )]
    PanicAbort {
        /// The plugin's name.
        name: String,
    },
    /// The in-memory metadata record is invalid.
    #[error("metadata record in memory: {0}")]
    Metadata(#[from] MetadataError),
    /// `plugin_vtable` returned a table with a NULL entry.
    #[error(
        "plugin `{name}`: plugin_vtable() returned a NULL `{entry}`; every entry of the table must be a function (a hook the plugin does not implement returns status 5, BACKWORKS_STATUS_NOT_IMPLEMENTED)"
    )]
    NullEntry {
        /// The plugin's name (from its metadata).
        name: String,
        /// The first NULL entry, in table order.
        entry: &'static str,
    },
    /// `plugin_info` returned something the ABI does not allow.
    #[error("plugin `{name}`: plugin_info() {problem}")]
    Info {
        /// The plugin's name (from its metadata).
        name: String,
        /// What is wrong.
        problem: String,
    },
}

/// Checks that this host can use a plugin with `metadata`: same ABI
/// version, same struct sizes, same target, panics caught. Run it before
/// calling `plugin_info` or `plugin_vtable`.
pub fn check_compatible(metadata: &PluginMetadata) -> Result<(), AbiError> {
    let name = || metadata.name.clone();
    let found = metadata.abi_version();
    if found != ABI_VERSION {
        let hint = if found < ABI_VERSION {
            "rebuild the plugin with a current backworks-plugin-sdk"
        } else {
            "upgrade the host, or use a plugin release built for this ABI"
        };
        return Err(AbiError::Version {
            name: name(),
            found,
            hint,
        });
    }
    let sizes = [
        (
            "PluginInfo",
            metadata.header.info_size,
            std::mem::size_of::<PluginInfo>(),
        ),
        (
            "PluginVTable",
            metadata.header.vtable_size,
            std::mem::size_of::<PluginVTable>(),
        ),
    ];
    for (what, found, expected) in sizes {
        if found as usize != expected {
            return Err(AbiError::StructSize {
                name: name(),
                what,
                found,
                expected,
            });
        }
    }
    if metadata.target != TARGET {
        return Err(AbiError::Target {
            name: name(),
            found: metadata.target.clone(),
        });
    }
    if metadata.header.flags & FLAG_PANIC_ABORT != 0 {
        return Err(AbiError::PanicAbort { name: name() });
    }
    Ok(())
}

/// Reads the metadata record a loaded library exports, without calling any
/// of its code: the fixed header first, then as many bytes as it declares
/// (at most [`METADATA_RECORD_MAX_SIZE`]).
///
/// # Safety
/// `record` is the address of the library's `backworks_plugin_metadata`
/// symbol, and the library stays loaded during the call. Its first
/// [`metadata::HEADER_SIZE`] bytes must be readable, and as many as the header
/// declares (up to the maximum) when the header is valid.
pub unsafe fn read_metadata_at(record: *const u8) -> Result<PluginMetadata, MetadataError> {
    // SAFETY: the header is readable, by the contract above.
    let head = unsafe { std::slice::from_raw_parts(record, metadata::HEADER_SIZE) };
    let header = metadata::parse_header(head)?;
    let declared = header.record_size as usize;
    if !(METADATA_RECORD_SIZE..=METADATA_RECORD_MAX_SIZE).contains(&declared) {
        // Too small for v1 or too large to trust: let the parser say which.
        return metadata::parse(head);
    }
    // SAFETY: the header is valid and declares `declared` readable bytes,
    // by the contract above.
    let whole = unsafe { std::slice::from_raw_parts(record, declared) };
    metadata::parse(whole)
}

/// Which hook failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `initialize`.
    Initialize,
    /// `shutdown`.
    Shutdown,
    /// `health_check`.
    HealthCheck,
    /// `before_request`.
    BeforeRequest,
    /// `after_response`.
    AfterResponse,
    /// `process_endpoint`.
    ProcessEndpoint,
}

impl Hook {
    /// Index of a request hook (`before_request`, `process_endpoint`,
    /// `after_response`: 0, 1, 2); `None` for the lifecycle hooks.
    pub fn request_index(self) -> Option<usize> {
        match self {
            Self::BeforeRequest => Some(0),
            Self::ProcessEndpoint => Some(1),
            Self::AfterResponse => Some(2),
            Self::Initialize | Self::Shutdown | Self::HealthCheck => None,
        }
    }

    /// The vtable entry's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Initialize => "initialize",
            Self::Shutdown => "shutdown",
            Self::HealthCheck => "health_check",
            Self::BeforeRequest => "before_request",
            Self::AfterResponse => "after_response",
            Self::ProcessEndpoint => "process_endpoint",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What kind of failure a status code reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// [`STATUS_PLUGIN_ERROR`].
    PluginError,
    /// [`STATUS_PANIC`].
    Panic,
    /// [`STATUS_INVALID_INPUT`].
    InvalidInput,
    /// [`STATUS_INVALID_STATE`].
    InvalidState,
    /// [`STATUS_NOT_IMPLEMENTED`] from a hook other than the three request
    /// hooks (for those it is not a failure).
    NotImplemented,
    /// A code this ABI version does not define (treated as a plugin error).
    Unknown(i32),
    /// The plugin returned something the ABI does not allow (e.g. a string
    /// that is not UTF-8 or not the JSON the hook must return).
    BadOutput,
}

impl FailureKind {
    fn from_status(code: i32) -> Self {
        match code {
            STATUS_PLUGIN_ERROR => Self::PluginError,
            STATUS_PANIC => Self::Panic,
            STATUS_INVALID_INPUT => Self::InvalidInput,
            STATUS_INVALID_STATE => Self::InvalidState,
            STATUS_NOT_IMPLEMENTED => Self::NotImplemented,
            other => Self::Unknown(other),
        }
    }
}

/// A hook call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin `{plugin}`: hook `{hook}` failed ({kind:?}): {message}")]
pub struct HookError {
    /// The plugin's name.
    pub plugin: String,
    /// The hook.
    pub hook: Hook,
    /// What kind of failure.
    pub kind: FailureKind,
    /// The plugin's message.
    pub message: String,
}

/// A string returned by a plugin, released with the plugin's own
/// `free_string` when dropped.
pub struct PluginString {
    text: NonNull<c_char>,
    free: extern "C" fn(*const c_char),
}

// SAFETY: the string is heap memory owned by this value alone; the ABI lets
// any thread read it and call `free_string` on it.
unsafe impl Send for PluginString {}
// SAFETY: shared access only reads the immutable bytes.
unsafe impl Sync for PluginString {}

impl PluginString {
    /// The string's bytes, without the NUL.
    pub fn as_c_str(&self) -> &CStr {
        // SAFETY: a non-NULL string returned by a hook is NUL-terminated and
        // stays valid until `free_string`, which only `drop` calls.
        unsafe { CStr::from_ptr(self.text.as_ptr()) }
    }

    /// The string as UTF-8.
    pub fn to_str(&self) -> Result<&str, std::str::Utf8Error> {
        self.as_c_str().to_str()
    }
}

impl fmt::Debug for PluginString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PluginString")
            .field(&self.as_c_str())
            .finish()
    }
}

impl Drop for PluginString {
    fn drop(&mut self) {
        (self.free)(self.text.as_ptr());
    }
}

/// A plugin whose ABI was checked, seen through its vtable.
///
/// Every method calls one vtable entry on the calling thread and blocks
/// until it returns; methods may be called from many threads at once, within
/// the lifecycle rules of `docs/abi.md` ("Threading").
#[derive(Debug)]
pub struct RawPlugin {
    vtable: CheckedVTable,
    metadata: PluginMetadata,
    name: String,
    version: String,
    description: String,
    /// Request hooks that answered [`STATUS_NOT_IMPLEMENTED`], indexed by
    /// [`Hook::request_index`]: never called again.
    not_implemented: [AtomicBool; 3],
}

fn info_string(ptr: *const c_char, field: &str, plugin: &str) -> Result<String, AbiError> {
    let problem = |problem: String| AbiError::Info {
        name: plugin.to_owned(),
        problem,
    };
    if ptr.is_null() {
        return Err(problem(format!(
            "returned a NULL `{field}` (did constructing the plugin panic?)"
        )));
    }
    // SAFETY: `RawPlugin::new`'s contract: plugin_info follows ABI v1, whose
    // non-NULL strings are NUL-terminated and live as long as the library.
    let text = unsafe { CStr::from_ptr(ptr) };
    text.to_str()
        .map(str::to_owned)
        .map_err(|_| problem(format!("returned a `{field}` that is not UTF-8")))
}

impl RawPlugin {
    /// Checks `metadata` ([`check_compatible`]), and only then calls
    /// `plugin_info` (and checks what it returns) and `plugin_vtable`.
    ///
    /// # Safety
    /// `plugin_info` and `plugin_vtable` are the functions of that name
    /// exported by the library whose record is `metadata`, and that library
    /// stays loaded as long as the returned value and every [`PluginString`]
    /// it hands out live (hosts never unload plugin libraries).
    pub unsafe fn new(
        metadata: PluginMetadata,
        plugin_info: extern "C" fn() -> PluginInfo,
        plugin_vtable: extern "C" fn() -> PluginVTable,
    ) -> Result<Self, AbiError> {
        check_compatible(&metadata)?;
        let info = plugin_info();
        let problem = |problem: String| AbiError::Info {
            name: metadata.name.clone(),
            problem,
        };
        if info.abi_version != ABI_VERSION {
            return Err(problem(format!(
                "reports ABI v{} but the metadata record says v{ABI_VERSION}",
                info.abi_version
            )));
        }
        if info.struct_size as usize != std::mem::size_of::<PluginInfo>() {
            return Err(problem(format!(
                "reports struct_size {} but PluginInfo is {} bytes",
                info.struct_size,
                std::mem::size_of::<PluginInfo>()
            )));
        }
        let name = info_string(info.name, "name", &metadata.name)?;
        let version = info_string(info.version, "version", &metadata.name)?;
        let description = info_string(info.description, "description", &metadata.name)?;
        let vtable = plugin_vtable()
            .checked()
            .map_err(|entry| AbiError::NullEntry {
                name: metadata.name.clone(),
                entry,
            })?;
        Ok(Self {
            vtable,
            metadata,
            name,
            version,
            description,
            not_implemented: Default::default(),
        })
    }

    /// The metadata record the plugin was checked against.
    pub fn metadata(&self) -> &PluginMetadata {
        &self.metadata
    }

    /// The checked table, for callers that need to pass what the typed
    /// methods cannot (tests of NULL arguments, for one). Strings it returns
    /// must go back to its `free_string`.
    pub fn vtable(&self) -> &CheckedVTable {
        &self.vtable
    }

    /// `PluginInfo::name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `PluginInfo::version`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `PluginInfo::description`.
    pub fn description(&self) -> &str {
        &self.description
    }

    fn error(&self, hook: Hook, kind: FailureKind, message: String) -> HookError {
        HookError {
            plugin: self.name.clone(),
            hook,
            kind,
            message,
        }
    }

    /// Takes the calling thread's last error from the plugin.
    fn take_last_error(&self) -> Option<(i32, String)> {
        let mut code = STATUS_OK;
        let message = (self.vtable.last_error)(&mut code);
        let message = NonNull::new(message.cast_mut()).map(|text| PluginString {
            text,
            free: self.vtable.free_string,
        });
        match (code, message) {
            (STATUS_OK, None) => None,
            (code, message) => Some((
                code,
                message.map_or_else(
                    || String::from("(the plugin gave no message)"),
                    |m| m.as_c_str().to_string_lossy().into_owned(),
                ),
            )),
        }
    }

    fn check_status(&self, hook: Hook, code: i32) -> Result<(), HookError> {
        if code == STATUS_OK {
            return Ok(());
        }
        let message = self
            .take_last_error()
            .map_or_else(|| String::from("(the plugin gave no message)"), |(_, m)| m);
        Err(self.error(hook, FailureKind::from_status(code), message))
    }

    fn check_string(
        &self,
        hook: Hook,
        out: *const c_char,
    ) -> Result<Option<PluginString>, HookError> {
        match NonNull::new(out.cast_mut()) {
            Some(text) => Ok(Some(PluginString {
                text,
                free: self.vtable.free_string,
            })),
            None => match self.take_last_error() {
                None => Ok(None),
                Some((STATUS_NOT_IMPLEMENTED, _)) if hook.request_index().is_some() => {
                    self.mark_not_implemented(hook);
                    Ok(None)
                }
                Some((code, message)) => {
                    Err(self.error(hook, FailureKind::from_status(code), message))
                }
            },
        }
    }

    /// `initialize` with `config` as JSON text (`null` for none).
    pub fn initialize(&self, config: &CStr) -> Result<(), HookError> {
        let code = (self.vtable.initialize)(config.as_ptr());
        self.check_status(Hook::Initialize, code)
    }

    /// `shutdown`.
    pub fn shutdown(&self) -> Result<(), HookError> {
        let code = (self.vtable.shutdown)();
        self.check_status(Hook::Shutdown, code)
    }

    /// `health_check`: `Ok` when healthy.
    pub fn health_check(&self) -> Result<(), HookError> {
        let code = (self.vtable.health_check)();
        self.check_status(Hook::HealthCheck, code)
    }

    /// `before_request` with an [`HttpRequest`] as JSON: `None` to continue,
    /// else a [`RequestAction`] as JSON.
    pub fn before_request(&self, request: &CStr) -> Result<Option<PluginString>, HookError> {
        let out = (self.vtable.before_request)(request.as_ptr());
        self.check_string(Hook::BeforeRequest, out)
    }

    /// `after_response` with a [`ResponseExchange`] as JSON: `None` to keep
    /// the response, else the replacement [`HttpResponse`] as JSON.
    pub fn after_response(&self, exchange: &CStr) -> Result<Option<PluginString>, HookError> {
        let out = (self.vtable.after_response)(exchange.as_ptr());
        self.check_string(Hook::AfterResponse, out)
    }

    /// `process_endpoint`: `None` when not handled, else the body.
    pub fn process_endpoint(
        &self,
        endpoint: &CStr,
        method: &CStr,
        data: &CStr,
    ) -> Result<Option<PluginString>, HookError> {
        let out = (self.vtable.process_endpoint)(endpoint.as_ptr(), method.as_ptr(), data.as_ptr());
        self.check_string(Hook::ProcessEndpoint, out)
    }

    /// Whether the plugin implements `hook`: false once a request hook has
    /// answered [`STATUS_NOT_IMPLEMENTED`] (it is then not called again);
    /// true for every other hook.
    pub fn implements(&self, hook: Hook) -> bool {
        hook.request_index()
            .is_none_or(|i| !self.not_implemented[i].load(Ordering::Relaxed))
    }

    fn mark_not_implemented(&self, hook: Hook) {
        if let Some(i) = hook.request_index() {
            self.not_implemented[i].store(true, Ordering::Relaxed);
        }
    }

    /// [`before_request`](Self::before_request) with typed values;
    /// `Continue` without a call once the plugin said it does not implement
    /// the hook (so for all typed request calls).
    pub fn call_before_request(&self, request: &HttpRequest) -> Result<RequestAction, HookError> {
        if !self.implements(Hook::BeforeRequest) {
            return Ok(RequestAction::Continue);
        }
        let input = self.encode(Hook::BeforeRequest, request)?;
        match self.before_request(&input)? {
            None => Ok(RequestAction::Continue),
            Some(out) => self.decode(Hook::BeforeRequest, &out),
        }
    }

    /// [`after_response`](Self::after_response) with typed values.
    pub fn call_after_response(
        &self,
        request: &HttpRequest,
        response: &HttpResponse,
    ) -> Result<Option<HttpResponse>, HookError> {
        if !self.implements(Hook::AfterResponse) {
            return Ok(None);
        }
        let exchange = ResponseExchange {
            request: request.clone(),
            response: response.clone(),
        };
        let input = self.encode(Hook::AfterResponse, &exchange)?;
        self.after_response(&input)?
            .map(|out| self.decode(Hook::AfterResponse, &out))
            .transpose()
    }

    /// [`initialize`](Self::initialize) with the config as a JSON value.
    pub fn call_initialize(&self, config: &serde_json::Value) -> Result<(), HookError> {
        let input = self.encode(Hook::Initialize, config)?;
        self.initialize(&input)
    }

    /// [`process_endpoint`](Self::process_endpoint) with Rust strings: `None`
    /// when not handled, else the body (which must be UTF-8).
    pub fn call_process_endpoint(
        &self,
        endpoint: &str,
        method: &str,
        data: &str,
    ) -> Result<Option<String>, HookError> {
        let hook = Hook::ProcessEndpoint;
        if !self.implements(hook) {
            return Ok(None);
        }
        let c_string = |text: &str, what: &str| {
            CString::new(text).map_err(|e| {
                self.error(
                    hook,
                    FailureKind::InvalidInput,
                    format!("the {what} has a NUL byte at offset {}", e.nul_position()),
                )
            })
        };
        let out = self.process_endpoint(
            &c_string(endpoint, "endpoint")?,
            &c_string(method, "method")?,
            &c_string(data, "body")?,
        )?;
        out.map(|body| {
            body.to_str().map(str::to_owned).map_err(|e| {
                self.error(
                    hook,
                    FailureKind::BadOutput,
                    format!("returned a body that is not UTF-8: {e}"),
                )
            })
        })
        .transpose()
    }

    fn encode<T: serde::Serialize>(&self, hook: Hook, value: &T) -> Result<CString, HookError> {
        let text = serde_json::to_string(value).map_err(|e| {
            self.error(
                hook,
                FailureKind::InvalidInput,
                format!("cannot encode input: {e}"),
            )
        })?;
        CString::new(text).map_err(|e| {
            self.error(
                hook,
                FailureKind::InvalidInput,
                format!("input has a NUL byte at offset {}", e.nul_position()),
            )
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        hook: Hook,
        out: &PluginString,
    ) -> Result<T, HookError> {
        let bad = |message: String| self.error(hook, FailureKind::BadOutput, message);
        let text = out
            .to_str()
            .map_err(|e| bad(format!("returned a string that is not UTF-8: {e}")))?;
        serde_json::from_str(text).map_err(|e| bad(format!("returned invalid JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> PluginMetadata {
        let record = MetadataRecord::new("p", "1.0.0", "", 0);
        metadata::parse(record.as_bytes()).unwrap()
    }

    #[test]
    fn the_record_this_sdk_writes_is_compatible() {
        check_compatible(&metadata()).unwrap();
    }

    #[test]
    fn other_abi_versions_are_refused_with_advice() {
        for (version, advice) in [(0, "rebuild the plugin"), (2, "upgrade the host")] {
            let mut m = metadata();
            m.header.abi_version = version;
            let error = check_compatible(&m).unwrap_err();
            assert!(matches!(error, AbiError::Version { found, .. } if found == version));
            let text = error.to_string();
            assert!(
                text.contains(&format!("ABI v{version}")) && text.contains(advice),
                "{text}"
            );
        }
    }

    #[test]
    fn struct_size_target_and_panic_strategy_are_checked() {
        let mut m = metadata();
        m.header.vtable_size += 8;
        let error = check_compatible(&m).unwrap_err();
        assert!(
            matches!(
                error,
                AbiError::StructSize {
                    what: "PluginVTable",
                    ..
                }
            ),
            "{error}"
        );

        let mut m = metadata();
        m.header.info_size = 24;
        let error = check_compatible(&m).unwrap_err();
        assert!(matches!(
            error,
            AbiError::StructSize {
                what: "PluginInfo",
                found: 24,
                ..
            }
        ));

        let mut m = metadata();
        m.target = "riscv64gc-unknown-linux-gnu".into();
        let error = check_compatible(&m).unwrap_err();
        assert!(
            error.to_string().contains("riscv64gc-unknown-linux-gnu"),
            "{error}"
        );

        let mut m = metadata();
        m.header.flags |= FLAG_PANIC_ABORT;
        let error = check_compatible(&m).unwrap_err();
        assert!(matches!(error, AbiError::PanicAbort { .. }), "{error}");
    }

    #[test]
    fn layouts_match_docs_abi_md() {
        let pointer = std::mem::size_of::<usize>();
        assert_eq!(std::mem::size_of::<PluginInfo>(), 3 * pointer + 8);
        assert_eq!(std::mem::size_of::<PluginVTable>(), 8 * pointer);
        assert_eq!(std::mem::offset_of!(PluginVTable, free_string), 6 * pointer);
        assert_eq!(std::mem::offset_of!(PluginInfo, abi_version), 3 * pointer);
    }

    #[test]
    fn memory_records_are_read_header_first() {
        let record = MetadataRecord::new("p", "1.0.0", "d", 0);
        // SAFETY: `record` is a whole, live record.
        let parsed = unsafe { read_metadata_at((&record as *const MetadataRecord).cast()) };
        assert_eq!(parsed.unwrap().name, "p");

        // A header that declares an absurd size is refused without reading
        // past the header.
        let mut head = [0u8; metadata::HEADER_SIZE];
        head.copy_from_slice(&record.as_bytes()[..metadata::HEADER_SIZE]);
        head[12..16].copy_from_slice(&u32::MAX.to_ne_bytes());
        // SAFETY: the header's 32 bytes are readable, and it declares a size
        // above the maximum, so nothing further is read.
        let error = unsafe { read_metadata_at(head.as_ptr()) }.unwrap_err();
        assert!(matches!(
            error,
            MetadataError::BadRecordSize {
                declared: u32::MAX,
                ..
            }
        ));
    }
}
