//! The Backworks plugin ABI, v1 (revision 1.2): the contract the host and
//! plugin libraries share, byte for byte (`docs/abi.md`).
//!
//! - **Layouts and constants** (this file): [`PluginInfo`], [`PluginVTable`]
//!   (revision 1.0), [`PluginVTableV1_1`] (1.0's entries, then
//!   `initialize_with_host`) and [`PluginVTableV1_2`] (1.1's, then the
//!   request hooks as futures: `call_start`, `call_poll`, `call_finish`,
//!   `call_drop`, with the host's [`HostWaker`]), [`HostServices`] and
//!   [`MetadataRecord`],
//!   `#[repr(C)]`, the symbol and section names, the status codes and log
//!   levels; `sdk/include/backworks.h` is generated from this file by
//!   cbindgen (`sdk/cbindgen.toml`).
//! - **How the ABI grows** (`docs/abi.md`, "Versioning"): [`ABI_VERSION`] is
//!   the major version, refused when it differs; a minor revision only
//!   appends vtable entries (or fields of a struct passed by pointer that
//!   carries its own `struct_size`, like [`HostServices`]); the record says
//!   which minor revision a plugin was built for
//!   ([`metadata::RecordHeader::abi_minor`]) and how large its table is.
//! - **The metadata record's parser** ([`metadata`]) and the JSON payloads of
//!   the request hooks ([`http`]).
//! - **The host half** (module `host`, re-exported here): [`check_compatible`],
//!   [`read_metadata_at`] and [`RawPlugin`], which check a plugin's ABI
//!   version and struct sizes *before* `plugin_vtable` is called, call the
//!   hooks, turn NULL returns and status codes into [`HookError`]s and hand
//!   every returned string back to the plugin's own `free_string`
//!   ([`PluginString`]); for a 1.2 plugin it drives a request hook as a
//!   `Future` ([`HookCall`]).
//! - **The waker glue** ([`waker`]): a host's `std::task::Waker` as a
//!   [`HostWaker`], and a [`HostWaker`] as a plugin's `std::task::Waker`.
//!
//! The plugin half (`export_plugin!`, `ExportedPlugin`) lives in
//! `backworks-plugin-sdk`, which re-exports this crate as
//! `backworks_plugin_sdk::abi`. This crate depends on no other crate of the
//! workspace; every `unsafe` block in it has a `// SAFETY:` comment.

use std::ffi::c_char;
use std::fmt;

#[forbid(unsafe_code)]
pub mod capabilities;
mod host;
pub mod http;
// The hook payloads the vtable's documentation links to.
#[cfg(doc)]
use http::{HttpResponse, RequestAction};
pub mod metadata;
pub mod waker;

pub use host::{
    AbiError, FailureKind, Hook, HookCall, HookError, PluginString, RawPlugin, check_compatible,
    read_metadata_at,
};

/// The target triple this crate was compiled for: the target of the plugin
/// or host it is linked into.
pub const TARGET: &str = env!("BACKWORKS_TARGET");

/// The ABI version of this contract: written into every plugin's metadata
/// record and [`PluginInfo`], and the only version a host built with it loads.
/// It is the ABI's *major* version: it changes only when a change is not an
/// append (see [`ABI_MINOR`]).
pub const ABI_VERSION: u32 = 1;

/// The newest minor revision of ABI v1 this contract defines: 2, "ABI 1.2"
/// (1.1 plus the request hooks driven as futures, [`PluginVTableV1_2`]; 1.1
/// added `initialize_with_host` and [`HostServices`]). A minor revision
/// only appends vtable entries; a host loads plugins of every minor
/// revision of its major version, older or newer (the entries it does not
/// know are never called).
pub const ABI_MINOR: u32 = 2;

/// Vtable entries of each minor revision of ABI v1, indexed by minor:
/// 1.0 has 8, 1.1 has 9, 1.2 has 13. A table of minor revision `n` is
/// `VTABLE_ENTRIES[n]` pointers long.
pub const VTABLE_ENTRIES: [u32; 3] = [8, 9, 13];

/// The most vtable entries a host reads from a plugin of a newer minor
/// revision than it knows; a larger table is refused.
pub const MAX_VTABLE_ENTRIES: u32 = 64;

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

/// `call_start`'s hook number (ABI 1.2): `before_request`; its first
/// argument is the request as JSON, the other two are ignored.
pub const HOOK_BEFORE_REQUEST: u32 = 0;
/// `call_start`'s hook number: `process_endpoint`, with its three
/// arguments (endpoint, method, data).
pub const HOOK_PROCESS_ENDPOINT: u32 = 1;
/// `call_start`'s hook number: `after_response`; its first argument is the
/// exchange as JSON, the other two are ignored.
pub const HOOK_AFTER_RESPONSE: u32 = 2;

/// What `call_poll` returns (ABI 1.2): the call waits; the plugin has kept
/// a clone of the waker and wakes it when the call can go on.
pub const POLL_PENDING: i32 = 0;
/// What `call_poll` returns: the call is finished (with its result or a
/// failure); take it with `call_finish`.
pub const POLL_READY: i32 = 1;

/// Log level passed to [`HostServices::log`]: an error.
pub const LOG_ERROR: u32 = 1;
/// Log level: a warning.
pub const LOG_WARN: u32 = 2;
/// Log level: information.
pub const LOG_INFO: u32 = 3;
/// Log level: debugging detail.
pub const LOG_DEBUG: u32 = 4;
/// Log level: tracing detail.
pub const LOG_TRACE: u32 = 5;

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

/// What `plugin_vtable` returns in ABI 1.1: the table of 1.0, then the
/// entries 1.1 appends (`docs/abi.md`, "Versioning").
///
/// A plugin built for 1.1 records `vtable_size = sizeof(PluginVTableV1_1)`
/// and minor revision 1 ([`metadata::FLAG_ABI_MINOR_SHIFT`]). Every entry
/// must be a function.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PluginVTableV1_1 {
    /// The entries of ABI 1.0, unchanged.
    pub v1_0: PluginVTable,
    /// `initialize_with_host(config_json, host)`: status code. Called by a
    /// 1.1 host *instead of* `initialize` (same contract, once, first), with
    /// the [`HostServices`] the plugin may use from then on, from any thread,
    /// for as long as the library is loaded.
    pub initialize_with_host: Option<extern "C" fn(*const c_char, *const HostServices) -> i32>,
}

/// What `plugin_vtable` returns in ABI 1.2: the table of 1.1, then four
/// entries through which the host drives a request hook as a future
/// (`docs/abi.md`, section 5b). Every entry must be a function.
///
/// A call: `call_start` runs the hook until it first waits. When it
/// finished, it returns what the synchronous hook returns (a string, or NULL
/// and maybe an error in `last_error`) and writes NULL to `*call`; when it
/// waits, it writes a call handle to `*call` (and returns NULL). The host
/// then calls `call_poll(handle, waker)` each time the plugin woke the
/// waker, until it returns [`POLL_READY`], and then `call_finish(handle)`,
/// which returns the result as the synchronous hook would and frees the
/// handle; or `call_drop(handle)` at any time to cancel the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PluginVTableV1_2 {
    /// The entries of ABI 1.1, unchanged.
    pub v1_1: PluginVTableV1_1,
    /// `call_start(hook, a, b, c, waker, call)`: starts request hook `hook`
    /// (`HOOK_BEFORE_REQUEST`, `HOOK_PROCESS_ENDPOINT`,
    /// `HOOK_AFTER_RESPONSE`) with the synchronous hook's arguments (`b` and
    /// `c` only for `process_endpoint`, else ignored), and polls it once
    /// with `waker`. Finished: writes NULL to `*call` and returns what the
    /// synchronous hook returns; waiting: writes the call's handle to
    /// `*call` and returns NULL.
    pub call_start: Option<
        extern "C" fn(
            u32,
            *const c_char,
            *const c_char,
            *const c_char,
            *const HostWaker,
            *mut *mut std::ffi::c_void,
        ) -> *const c_char,
    >,
    /// `call_poll(call, waker)`: polls a waiting call with `waker` (which
    /// the plugin clones if it keeps it): [`POLL_PENDING`] or
    /// [`POLL_READY`].
    pub call_poll: Option<extern "C" fn(*mut std::ffi::c_void, *const HostWaker) -> i32>,
    /// `call_finish(call)`: the result of a call `call_poll` reported
    /// ready, as the synchronous hook returns it (a string, or NULL and
    /// maybe an error in the calling thread's `last_error`); frees the
    /// call.
    pub call_finish: Option<extern "C" fn(*mut std::ffi::c_void) -> *const c_char>,
    /// `call_drop(call)`: cancels and frees a call that was not finished
    /// (the plugin drops its future). NULL does nothing.
    pub call_drop: Option<extern "C" fn(*mut std::ffi::c_void)>,
}

/// A host's waker, as a plugin receives it in `call_start` and `call_poll`
/// (ABI 1.2): the host's value and three functions over it. The plugin
/// wakes it when a waiting call can go on (from any thread, at any time,
/// also after the call was finished or dropped), clones it to keep it past
/// the call it was passed to, and drops every clone it made exactly once.
/// The struct passed by pointer lives only for the call; the plugin never
/// drops it (only its clones).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HostWaker {
    /// The host's value, passed to every function.
    pub data: *const std::ffi::c_void,
    /// `clone(data)`: a new waker for the same task, owned by the caller,
    /// who drops it with its own `drop`.
    pub clone: Option<extern "C" fn(*const std::ffi::c_void) -> HostWaker>,
    /// `wake(data)`: the task should be polled again. Does not release the
    /// waker.
    pub wake: Option<extern "C" fn(*const std::ffi::c_void)>,
    /// `drop(data)`: releases this waker (a clone); never called on the
    /// struct the host passed.
    pub drop: Option<extern "C" fn(*const std::ffi::c_void)>,
}

/// What the host offers a plugin (ABI 1.1), passed to
/// `initialize_with_host`.
///
/// The struct grows by appending fields: `struct_size` says how many bytes
/// of it the host filled, and a plugin reads a field only when
/// `struct_size` covers it. The struct, `context` and every function stay
/// valid for as long as the plugin's library is loaded (hosts never unload
/// libraries); each function may be called from any thread, concurrently,
/// and never calls back into the plugin.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HostServices {
    /// `sizeof(HostServices)` in the host.
    pub struct_size: u32,
    /// Zero; keeps `context` aligned on every target.
    pub reserved: u32,
    /// The host's opaque value, passed back as every function's first
    /// argument.
    pub context: *mut std::ffi::c_void,
    /// `log_enabled(context, level, target)`: non-zero when the host would
    /// keep an event of `level` (`LOG_ERROR`..`LOG_TRACE`) from `target` (a
    /// NUL-terminated UTF-8 string, the plugin's module path or any name),
    /// so the plugin can skip formatting the others.
    pub log_enabled: Option<extern "C" fn(*mut std::ffi::c_void, u32, *const c_char) -> i32>,
    /// `log(context, level, target, message, fields_json)`: one event into
    /// the host's log. `message` is NUL-terminated UTF-8; `fields_json` is
    /// NULL or a JSON object of the event's other fields. The host copies
    /// what it keeps; the strings only need to live for the call.
    pub log: Option<
        extern "C" fn(*mut std::ffi::c_void, u32, *const c_char, *const c_char, *const c_char),
    >,
}

// SAFETY: the ABI requires the host's functions to accept `context` from any
// thread, concurrently, for as long as the plugin's library is loaded: the
// struct is a bundle of thread-safe functions and the value they share.
unsafe impl Send for HostServices {}
// SAFETY: as for `Send`; shared use only reads the fields and calls the
// functions.
unsafe impl Sync for HostServices {}

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
    /// [`PluginVTableV1_1::initialize_with_host`]: `Some` for plugins of ABI
    /// 1.1 and later (checked to be a function), `None` for 1.0.
    pub initialize_with_host: Option<extern "C" fn(*const c_char, *const HostServices) -> i32>,
    /// The request hooks as futures ([`PluginVTableV1_2`]): `Some` for
    /// plugins of ABI 1.2 and later (each entry checked to be a function),
    /// `None` for 1.0 and 1.1.
    pub calls: Option<CheckedCalls>,
}

/// The entries of [`PluginVTableV1_2`] beyond 1.1, checked to be functions.
#[derive(Debug, Clone, Copy)]
pub struct CheckedCalls {
    /// [`PluginVTableV1_2::call_start`].
    pub start: extern "C" fn(
        u32,
        *const c_char,
        *const c_char,
        *const c_char,
        *const HostWaker,
        *mut *mut std::ffi::c_void,
    ) -> *const c_char,
    /// [`PluginVTableV1_2::call_poll`].
    pub poll: extern "C" fn(*mut std::ffi::c_void, *const HostWaker) -> i32,
    /// [`PluginVTableV1_2::call_finish`].
    pub finish: extern "C" fn(*mut std::ffi::c_void) -> *const c_char,
    /// [`PluginVTableV1_2::call_drop`].
    pub drop: extern "C" fn(*mut std::ffi::c_void),
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
            initialize_with_host: None,
            calls: None,
        })
    }
}

impl PluginVTableV1_1 {
    /// The table with every entry checked, or the first NULL entry's name
    /// (in table order).
    pub fn checked(&self) -> Result<CheckedVTable, &'static str> {
        Ok(CheckedVTable {
            initialize_with_host: Some(self.initialize_with_host.ok_or("initialize_with_host")?),
            ..self.v1_0.checked()?
        })
    }
}

impl PluginVTableV1_2 {
    /// The table with every entry checked, or the first NULL entry's name
    /// (in table order).
    pub fn checked(&self) -> Result<CheckedVTable, &'static str> {
        let v1_1 = self.v1_1.checked()?;
        Ok(CheckedVTable {
            calls: Some(CheckedCalls {
                start: self.call_start.ok_or("call_start")?,
                poll: self.call_poll.ok_or("call_poll")?,
                finish: self.call_finish.ok_or("call_finish")?,
                drop: self.call_drop.ok_or("call_drop")?,
            }),
            ..v1_1
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
    /// Flag bits (`metadata::FLAG_*`); bits 16 to 23 hold the ABI minor
    /// revision (`metadata::FLAG_ABI_MINOR_SHIFT`).
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

    /// The record for package `name` at `version`, built with the SDK at
    /// `sdk_version` for this target ([`TARGET`]), for the newest revision
    /// (ABI 1.[`ABI_MINOR`], a [`PluginVTableV1_2`]; `flags` gets the minor
    /// revision added). Evaluated at compile time by
    /// `export_plugin!`: a name, version or SDK field that does not fit its
    /// slot, or holds a NUL byte, is a compile error; a long description is
    /// truncated.
    pub const fn new(
        sdk_version: &str,
        name: &str,
        version: &str,
        description: &str,
        flags: u32,
    ) -> Self {
        Self {
            magic: METADATA_MAGIC,
            byte_order: BYTE_ORDER_MARK,
            record_size: METADATA_RECORD_SIZE as u32,
            abi_version: ABI_VERSION,
            info_size: std::mem::size_of::<PluginInfo>() as u32,
            vtable_size: std::mem::size_of::<PluginVTableV1_2>() as u32,
            flags: flags | (ABI_MINOR << metadata::FLAG_ABI_MINOR_SHIFT),
            sdk_version: fixed(
                sdk_version,
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

impl<const N: usize> capabilities::DeclaredRecord<N> {
    /// The record's bytes, exactly as they sit in the plugin's section.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `DeclaredRecord` is `repr(C)`: a `MetadataRecord` (512
        // bytes of integers and byte arrays without padding, asserted
        // below), two `u32`s (offsets 512 and 516, asserted in
        // `capabilities`) and `N` bytes from offset 520. The slice covers
        // exactly those fields and stops before any tail padding (none when
        // `N` is a multiple of 8, as `DeclaredRecord::new` makes it), so
        // every byte in it is initialised; any byte pattern is a valid `u8`.
        unsafe {
            std::slice::from_raw_parts(
                (self as *const Self).cast::<u8>(),
                capabilities::EXTENDED_RECORD_SIZE + N,
            )
        }
    }
}

// The layout is part of the contract: 512 bytes, no padding, fixed offsets;
// each revision's table is `VTABLE_ENTRIES` pointers.
const _: () = {
    let pointer = std::mem::size_of::<usize>();
    assert!(std::mem::size_of::<PluginVTable>() == VTABLE_ENTRIES[0] as usize * pointer);
    assert!(std::mem::size_of::<PluginVTableV1_1>() == VTABLE_ENTRIES[1] as usize * pointer);
    assert!(std::mem::size_of::<PluginVTableV1_2>() == VTABLE_ENTRIES[2] as usize * pointer);
    assert!(std::mem::size_of::<HostWaker>() == 4 * pointer);
    assert!(VTABLE_ENTRIES.len() == ABI_MINOR as usize + 1);
    assert!(std::mem::size_of::<HostServices>() == 8 + 3 * pointer);
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
