//! The host half of the ABI: checks a loaded plugin's record before any of
//! its code runs ([`check_compatible`], [`read_metadata_at`]), then calls its
//! vtable ([`RawPlugin`]) and turns NULL returns and status codes into
//! [`HookError`]s; strings a plugin returns go back to its own `free_string`
//! ([`PluginString`]).

use std::ffi::{CStr, CString, c_char, c_void};
use std::fmt;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::http::{HttpRequest, HttpResponse, RequestAction, ResponseExchange};
use crate::metadata::{
    self, AbiRevision, FLAG_PANIC_ABORT, MetadataError, PluginMetadata, VTableSizeError,
};
use crate::{
    ABI_VERSION, CheckedVTable, HostServices, MAX_VTABLE_ENTRIES, METADATA_RECORD_MAX_SIZE,
    METADATA_RECORD_SIZE, POLL_READY, PluginInfo, PluginVTable, PluginVTableV1_2,
    STATUS_INVALID_INPUT, STATUS_INVALID_STATE, STATUS_NOT_IMPLEMENTED, STATUS_OK, STATUS_PANIC,
    STATUS_PLUGIN_ERROR, TARGET, VTABLE_ENTRIES,
};

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
    /// The plugin was built for a newer minor revision, but its table's
    /// size is not one a newer revision can have.
    #[error(
        "plugin `{name}` declares sizeof(PluginVTable) = {found} bytes, which is not a table of ABI {revision} on {TARGET}: {source}; it was built for another ABI or target"
    )]
    VTableSize {
        /// The plugin's name.
        name: String,
        /// The revision the plugin declares.
        revision: AbiRevision,
        /// Size the plugin declares.
        found: u32,
        /// Why the size does not fit.
        source: VTableSizeError,
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
/// (major) version, the struct sizes of its minor revision (any minor: a
/// newer one than this host knows is used through the entries the host
/// knows; `docs/abi.md`, "Versioning"), same target, panics caught. Run it
/// before calling `plugin_info` or `plugin_vtable`.
pub fn check_compatible(metadata: &PluginMetadata) -> Result<(), AbiError> {
    compatible(metadata).map(drop)
}

/// [`check_compatible`], returning how many vtable entries the plugin has.
fn compatible(metadata: &PluginMetadata) -> Result<u32, AbiError> {
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
    let info_size = metadata.header.info_size;
    if info_size as usize != std::mem::size_of::<PluginInfo>() {
        return Err(AbiError::StructSize {
            name: name(),
            what: "PluginInfo",
            found: info_size,
            expected: std::mem::size_of::<PluginInfo>(),
        });
    }
    let revision = metadata.abi_revision();
    let found = metadata.header.vtable_size;
    let pointer = std::mem::size_of::<usize>() as u32;
    let entries = match metadata::vtable_entries(revision, found, pointer) {
        Ok(entries) => entries,
        Err(VTableSizeError::Known { expected, .. }) => {
            return Err(AbiError::StructSize {
                name: name(),
                what: "PluginVTable",
                found,
                expected: expected as usize,
            });
        }
        Err(source) => {
            return Err(AbiError::VTableSize {
                name: name(),
                revision,
                found,
                source,
            });
        }
    };
    if metadata.target != TARGET {
        return Err(AbiError::Target {
            name: name(),
            found: metadata.target.clone(),
        });
    }
    if metadata.header.flags & FLAG_PANIC_ABORT != 0 {
        return Err(AbiError::PanicAbort { name: name() });
    }
    Ok(entries)
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
    /// The request hooks, in the order a request passes them: the one list
    /// every per-hook table of the host follows (adding a request hook is
    /// one edit here).
    pub const REQUEST: [Hook; 3] = [
        Self::BeforeRequest,
        Self::ProcessEndpoint,
        Self::AfterResponse,
    ];

    /// Index of a request hook in [`Hook::REQUEST`] (`before_request`,
    /// `process_endpoint`, `after_response`: 0, 1, 2); `None` for the
    /// lifecycle hooks.
    pub fn request_index(self) -> Option<usize> {
        Self::REQUEST.iter().position(|&hook| hook == self)
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
    not_implemented: [AtomicBool; Hook::REQUEST.len()],
}

/// A vtable as it comes back from `plugin_vtable`, `N` pointer-sized slots.
///
/// A table of at least eight pointers is returned through a buffer the
/// caller provides (its address is a hidden argument) on every target this
/// ABI supports (System V x86-64 and AArch64 return aggregates larger than
/// 16 bytes in memory, Windows x64 those that are not 1, 2, 4 or 8 bytes,
/// i386 every aggregate): the plugin writes its own `sizeof` into it. So a
/// buffer of exactly the plugin's size (a known revision) or larger (a
/// newer one, up to [`MAX_VTABLE_ENTRIES`]) receives the whole table; the
/// slots past the plugin's size stay uninitialised and are never read.
#[repr(C)]
struct Slots<const N: usize>([MaybeUninit<*const c_void>; N]);

/// The first [`VTABLE_ENTRIES`]`[ABI_MINOR]` entries of the table
/// `plugin_vtable` returns, for a plugin whose table has `entries` slots
/// (checked from its record); the entries of later revisions than the
/// plugin's are NULL.
///
/// # Safety
/// `plugin_vtable` is a plugin's exported `plugin_vtable` that returns a
/// table of exactly `entries` pointers, `VTABLE_ENTRIES[0] <= entries <=
/// MAX_VTABLE_ENTRIES`.
unsafe fn read_vtable(
    plugin_vtable: extern "C" fn() -> PluginVTable,
    entries: u32,
) -> PluginVTableV1_2 {
    const NEWEST: usize = VTABLE_ENTRIES[crate::ABI_MINOR as usize] as usize;
    const MAX: usize = MAX_VTABLE_ENTRIES as usize;
    fn call<const N: usize>(
        plugin_vtable: extern "C" fn() -> PluginVTable,
        entries: usize,
    ) -> [*const c_void; NEWEST] {
        // SAFETY: only the type of the returned aggregate changes, to one of
        // at least the plugin's size, which every supported target returns
        // through the same caller-provided buffer (see `Slots`).
        let call: extern "C" fn() -> Slots<N> = unsafe { std::mem::transmute(plugin_vtable) };
        let slots = call();
        let mut out = [std::ptr::null(); NEWEST];
        for (i, slot) in out.iter_mut().enumerate().take(entries.min(N)) {
            // SAFETY: the plugin wrote its `entries` slots, and `i < entries`.
            *slot = unsafe { slots.0[i].assume_init() };
        }
        out
    }
    let entries = entries as usize;
    let pointers = match entries {
        8 => call::<8>(plugin_vtable, entries),
        9 => call::<9>(plugin_vtable, entries),
        13 => call::<13>(plugin_vtable, entries),
        _ => call::<MAX>(plugin_vtable, entries),
    };
    // SAFETY: `PluginVTableV1_2` is `repr(C)`, `NEWEST` nullable function
    // pointers, each the size of a data pointer; NULL reads as `None`, and
    // the plugin's contract makes every non-NULL slot a function of its
    // entry's signature.
    unsafe { std::mem::transmute::<[*const c_void; NEWEST], PluginVTableV1_2>(pointers) }
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
    /// `plugin_info` (and checks what it returns) and `plugin_vtable`, of
    /// which it reads as many entries as the record declares (a 1.0, 1.1 or
    /// 1.2 table, or a newer one of which it uses the 1.2 entries).
    ///
    /// # Safety
    /// `plugin_info` and `plugin_vtable` are the functions of that name
    /// exported by the library whose record is `metadata` (`plugin_vtable`
    /// typed as returning a 1.0 table whatever its revision: this function
    /// calls it with the return type of the record's revision), and that
    /// library stays loaded as long as the returned value and every
    /// [`PluginString`] it hands out live (hosts never unload plugin
    /// libraries).
    pub unsafe fn new(
        metadata: PluginMetadata,
        plugin_info: extern "C" fn() -> PluginInfo,
        plugin_vtable: extern "C" fn() -> PluginVTable,
    ) -> Result<Self, AbiError> {
        let entries = compatible(&metadata)?;
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
        // SAFETY: the record (checked above) declares a table of `entries`
        // pointers, within the bounds `read_vtable` needs.
        let table = unsafe { read_vtable(plugin_vtable, entries) };
        let checked = match metadata.header.abi_minor() {
            0 => table.v1_1.v1_0.checked(),
            1 => table.v1_1.checked(),
            _ => table.checked(),
        };
        let vtable = checked.map_err(|entry| AbiError::NullEntry {
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

    /// The ABI revision the plugin was built for (e.g. `1.1`); a newer
    /// minor than [`AbiRevision::NEWEST`] is used through the entries of
    /// the newest.
    pub fn abi_revision(&self) -> AbiRevision {
        self.metadata.abi_revision()
    }

    /// Whether the plugin takes [`HostServices`] (ABI 1.1 and later:
    /// `initialize_with_host`).
    pub fn takes_host_services(&self) -> bool {
        self.vtable.initialize_with_host.is_some()
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

    /// Initializes the plugin with `config` as JSON text, handing it `host`:
    /// through `initialize_with_host` when the plugin has it (ABI 1.1 and
    /// later), else through `initialize` (1.0), without the services.
    /// Failures are reported as hook [`Hook::Initialize`].
    ///
    /// `host` is `'static`: the plugin may keep and call it for as long as
    /// its library is loaded, which for hosts is forever.
    pub fn initialize_with_host(
        &self,
        config: &CStr,
        host: &'static HostServices,
    ) -> Result<(), HookError> {
        match self.vtable.initialize_with_host {
            Some(initialize) => {
                let code = initialize(config.as_ptr(), host);
                self.check_status(Hook::Initialize, code)
            }
            None => self.initialize(config),
        }
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

    /// Whether the plugin's request hooks are driven as futures (ABI 1.2
    /// and later: `call_start`, `call_poll`, `call_finish`, `call_drop`);
    /// for older plugins [`HookCall`] makes the synchronous call on its
    /// first poll.
    pub fn drives_futures(&self) -> bool {
        self.vtable.calls.is_some()
    }

    /// Request hook `hook` with its C arguments (`b` and `c` for
    /// `process_endpoint` only) as a future: see [`HookCall`].
    pub fn call(
        &self,
        hook: Hook,
        a: CString,
        b: Option<CString>,
        c: Option<CString>,
    ) -> HookCall<'_> {
        HookCall {
            plugin: self,
            hook,
            state: CallState::Start([Some(a), b, c]),
        }
    }

    /// [`call_before_request`](Self::call_before_request) as a future
    /// ([`HookCall`]): a hook that waits holds no thread while it waits.
    pub async fn before_request_async(
        &self,
        request: &HttpRequest,
    ) -> Result<RequestAction, HookError> {
        let hook = Hook::BeforeRequest;
        if !self.implements(hook) {
            return Ok(RequestAction::Continue);
        }
        let input = self.encode(hook, request)?;
        match self.call(hook, input, None, None).await? {
            None => Ok(RequestAction::Continue),
            Some(out) => self.decode(hook, &out),
        }
    }

    /// [`call_after_response`](Self::call_after_response) as a future
    /// ([`HookCall`]).
    pub async fn after_response_async(
        &self,
        request: &HttpRequest,
        response: &HttpResponse,
    ) -> Result<Option<HttpResponse>, HookError> {
        let hook = Hook::AfterResponse;
        if !self.implements(hook) {
            return Ok(None);
        }
        let exchange = ResponseExchange {
            request: request.clone(),
            response: response.clone(),
        };
        let input = self.encode(hook, &exchange)?;
        self.call(hook, input, None, None)
            .await?
            .map(|out| self.decode(hook, &out))
            .transpose()
    }

    /// [`call_process_endpoint`](Self::call_process_endpoint) as a future
    /// ([`HookCall`]).
    pub async fn process_endpoint_async(
        &self,
        endpoint: &str,
        method: &str,
        data: &str,
    ) -> Result<Option<String>, HookError> {
        let hook = Hook::ProcessEndpoint;
        if !self.implements(hook) {
            return Ok(None);
        }
        let [endpoint, method, data] = self.endpoint_arguments(endpoint, method, data)?;
        let out = self.call(hook, endpoint, Some(method), Some(data)).await?;
        self.endpoint_body(out)
    }

    /// [`initialize`](Self::initialize) with the config as a JSON value.
    pub fn call_initialize(&self, config: &serde_json::Value) -> Result<(), HookError> {
        let input = self.encode(Hook::Initialize, config)?;
        self.initialize(&input)
    }

    /// [`initialize_with_host`](Self::initialize_with_host) with the config
    /// as a JSON value.
    pub fn call_initialize_with_host(
        &self,
        config: &serde_json::Value,
        host: &'static HostServices,
    ) -> Result<(), HookError> {
        let input = self.encode(Hook::Initialize, config)?;
        self.initialize_with_host(&input, host)
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
        let [endpoint, method, data] = self.endpoint_arguments(endpoint, method, data)?;
        let out = self.process_endpoint(&endpoint, &method, &data)?;
        self.endpoint_body(out)
    }

    /// `process_endpoint`'s three arguments as C strings, whichever way it
    /// is called; one with a NUL byte is refused, naming it.
    fn endpoint_arguments(
        &self,
        endpoint: &str,
        method: &str,
        data: &str,
    ) -> Result<[CString; 3], HookError> {
        let c_string = |text: &str, what: &str| {
            CString::new(text).map_err(|e| {
                self.error(
                    Hook::ProcessEndpoint,
                    FailureKind::InvalidInput,
                    format!("the {what} has a NUL byte at offset {}", e.nul_position()),
                )
            })
        };
        Ok([
            c_string(endpoint, "endpoint")?,
            c_string(method, "method")?,
            c_string(data, "body")?,
        ])
    }

    /// `process_endpoint`'s answer as a Rust string: `None` when not handled;
    /// a body that is not UTF-8 is refused.
    fn endpoint_body(&self, out: Option<PluginString>) -> Result<Option<String>, HookError> {
        out.map(|body| {
            body.to_str().map(str::to_owned).map_err(|e| {
                self.error(
                    Hook::ProcessEndpoint,
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

/// One request hook call as a future, from [`RawPlugin::call`].
///
/// For a plugin of ABI 1.2 or later the first poll is `call_start` (which
/// runs the hook until it first waits: a hook that does not wait costs this
/// one call), every later poll one `call_poll` and, once ready,
/// `call_finish`; the task's waker is lent to the plugin for each of those
/// calls ([`crate::waker::lend`]), which wakes it from its own runtime's
/// threads. Each poll is one call into the plugin on the polling thread,
/// which it may block as long as the hook's code runs. Dropping an
/// unfinished call calls `call_drop` (the plugin drops its future). For an
/// older plugin the first poll makes the synchronous call and is ready.
///
/// The output is the synchronous hook's: `None`, a string, or the failure
/// (including [`STATUS_NOT_IMPLEMENTED`], which marks the hook as not
/// implemented and reads as `None`).
#[must_use = "a hook call does nothing until it is polled"]
pub struct HookCall<'a> {
    plugin: &'a RawPlugin,
    hook: Hook,
    state: CallState,
}

enum CallState {
    /// Not started: the arguments.
    Start([Option<CString>; 3]),
    /// Started and waiting: the plugin's handle.
    Waiting(NonNull<c_void>),
    /// Finished (or failed to start).
    Done,
}

// SAFETY: the ABI (1.2) lets a call handle be polled, finished or dropped
// from any thread, by one thread at a time: this value owns the handle and
// `poll`/`drop` take it by `&mut`. The plugin (`&RawPlugin`) is `Sync`.
unsafe impl Send for HookCall<'_> {}

impl fmt::Debug for HookCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            CallState::Start(_) => "start",
            CallState::Waiting(_) => "waiting",
            CallState::Done => "done",
        };
        f.debug_struct("HookCall")
            .field("plugin", &self.plugin.name)
            .field("hook", &self.hook)
            .field("state", &state)
            .finish()
    }
}

impl HookCall<'_> {
    fn hook_number(&self) -> u32 {
        match self.hook {
            Hook::BeforeRequest => crate::HOOK_BEFORE_REQUEST,
            Hook::ProcessEndpoint => crate::HOOK_PROCESS_ENDPOINT,
            Hook::AfterResponse => crate::HOOK_AFTER_RESPONSE,
            // Lifecycle hooks are not started as calls: `u32::MAX` is
            // refused by the plugin as invalid input.
            Hook::Initialize | Hook::Shutdown | Hook::HealthCheck => u32::MAX,
        }
    }

    /// The synchronous call, for a plugin before ABI 1.2.
    fn call_synchronously(&self, args: &[Option<CString>; 3]) -> *const c_char {
        let arg = |i: usize| args[i].as_deref().map_or(std::ptr::null(), CStr::as_ptr);
        let vtable = &self.plugin.vtable;
        match self.hook {
            Hook::BeforeRequest => (vtable.before_request)(arg(0)),
            Hook::AfterResponse => (vtable.after_response)(arg(0)),
            Hook::ProcessEndpoint => (vtable.process_endpoint)(arg(0), arg(1), arg(2)),
            Hook::Initialize | Hook::Shutdown | Hook::HealthCheck => std::ptr::null(),
        }
    }
}

impl std::future::Future for HookCall<'_> {
    type Output = Result<Option<PluginString>, HookError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = self.get_mut();
        let plugin = this.plugin;
        let waker = crate::waker::lend(cx.waker());
        match std::mem::replace(&mut this.state, CallState::Done) {
            CallState::Start(args) => {
                let Some(calls) = plugin.vtable.calls else {
                    let out = this.call_synchronously(&args);
                    return Poll::Ready(plugin.check_string(this.hook, out));
                };
                let arg = |i: usize| args[i].as_deref().map_or(std::ptr::null(), CStr::as_ptr);
                let mut handle: *mut c_void = std::ptr::null_mut();
                let out = (calls.start)(
                    this.hook_number(),
                    arg(0),
                    arg(1),
                    arg(2),
                    &waker,
                    &mut handle,
                );
                match NonNull::new(handle) {
                    Some(handle) => {
                        if let Some(text) = NonNull::new(out.cast_mut()) {
                            // Both a result and a handle: the ABI allows
                            // neither; free the string, keep the call.
                            drop(PluginString {
                                text,
                                free: plugin.vtable.free_string,
                            });
                        }
                        this.state = CallState::Waiting(handle);
                        Poll::Pending
                    }
                    None => Poll::Ready(plugin.check_string(this.hook, out)),
                }
            }
            CallState::Waiting(handle) => {
                let Some(calls) = plugin.vtable.calls else {
                    // Only 1.2 plugins hand out handles.
                    return Poll::Ready(Ok(None));
                };
                if (calls.poll)(handle.as_ptr(), &waker) != POLL_READY {
                    this.state = CallState::Waiting(handle);
                    return Poll::Pending;
                }
                let out = (calls.finish)(handle.as_ptr());
                Poll::Ready(plugin.check_string(this.hook, out))
            }
            CallState::Done => Poll::Ready(Err(plugin.error(
                this.hook,
                FailureKind::InvalidState,
                String::from("the call was polled after it finished (a host bug)"),
            ))),
        }
    }
}

impl Drop for HookCall<'_> {
    fn drop(&mut self) {
        if let (CallState::Waiting(handle), Some(calls)) = (&self.state, self.plugin.vtable.calls) {
            (calls.drop)(handle.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MetadataRecord, PluginVTableV1_1};

    fn metadata() -> PluginMetadata {
        let record = MetadataRecord::new("0.1.0", "p", "1.0.0", "", 0);
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
    fn the_sdk_writes_the_newest_revision() {
        let m = metadata();
        assert_eq!(m.abi_revision().to_string(), "1.2");
        assert_eq!(m.abi_revision(), AbiRevision::NEWEST);
        assert_eq!(
            m.header.vtable_size as usize,
            std::mem::size_of::<PluginVTableV1_2>()
        );
    }

    #[test]
    fn every_known_revision_is_accepted_at_its_own_size_only() {
        let pointer = std::mem::size_of::<usize>() as u32;
        for (minor, &entries) in VTABLE_ENTRIES.iter().enumerate() {
            let mut m = metadata();
            m.header.flags = (minor as u32) << metadata::FLAG_ABI_MINOR_SHIFT;
            m.header.vtable_size = entries * pointer;
            assert_eq!(compatible(&m), Ok(entries), "1.{minor}");
            for wrong in [entries - 1, entries + 1] {
                m.header.vtable_size = wrong * pointer;
                let error = check_compatible(&m).unwrap_err();
                assert!(
                    matches!(error, AbiError::StructSize { what: "PluginVTable", expected, .. }
                        if expected == (entries * pointer) as usize),
                    "1.{minor} with {wrong} entries: {error}"
                );
            }
        }
    }

    #[test]
    fn a_newer_minor_revision_with_a_larger_table_is_accepted() {
        let pointer = std::mem::size_of::<usize>() as u32;
        let newest = VTABLE_ENTRIES[crate::ABI_MINOR as usize];
        let mut m = metadata();
        m.header.flags = (crate::ABI_MINOR + 1) << metadata::FLAG_ABI_MINOR_SHIFT;
        for entries in [newest, newest + 1, newest + 5, MAX_VTABLE_ENTRIES] {
            m.header.vtable_size = entries * pointer;
            assert_eq!(compatible(&m), Ok(entries), "{entries} entries");
        }
        assert_eq!(m.abi_revision().to_string(), "1.3");
    }

    #[test]
    fn a_newer_minor_revision_with_an_impossible_table_is_refused_naming_its_size() {
        let pointer = std::mem::size_of::<usize>() as u32;
        let newest = VTABLE_ENTRIES[crate::ABI_MINOR as usize];
        let mut m = metadata();
        m.header.flags = 7 << metadata::FLAG_ABI_MINOR_SHIFT;
        for size in [
            (newest - 1) * pointer,
            newest * pointer + 1,
            (MAX_VTABLE_ENTRIES + 1) * pointer,
            0,
        ] {
            m.header.vtable_size = size;
            let error = check_compatible(&m).unwrap_err();
            assert!(
                matches!(&error, AbiError::VTableSize { found, .. } if *found == size),
                "{size}: {error:?}"
            );
            let text = error.to_string();
            assert!(
                text.contains(&format!("= {size} bytes")) && text.contains("ABI 1.7"),
                "{text}"
            );
        }
    }

    /// An in-process plugin whose `plugin_vtable` returns the table a test
    /// chooses: entries that count their calls.
    mod in_process {
        use std::sync::atomic::{AtomicUsize, Ordering};

        use super::*;

        pub(super) static INITIALIZE: AtomicUsize = AtomicUsize::new(0);
        pub(super) static WITH_HOST: AtomicUsize = AtomicUsize::new(0);

        extern "C" fn initialize(_: *const c_char) -> i32 {
            INITIALIZE.fetch_add(1, Ordering::SeqCst);
            STATUS_OK
        }
        extern "C" fn initialize_with_host(_: *const c_char, host: *const HostServices) -> i32 {
            assert!(!host.is_null());
            WITH_HOST.fetch_add(1, Ordering::SeqCst);
            STATUS_OK
        }
        extern "C" fn status() -> i32 {
            STATUS_OK
        }
        extern "C" fn string(_: *const c_char) -> *const c_char {
            std::ptr::null()
        }
        extern "C" fn endpoint(
            _: *const c_char,
            _: *const c_char,
            _: *const c_char,
        ) -> *const c_char {
            std::ptr::null()
        }
        extern "C" fn free(_: *const c_char) {}
        extern "C" fn last_error(code: *mut i32) -> *const c_char {
            if !code.is_null() {
                // SAFETY: non-NULL: the host passes a writable i32.
                unsafe { code.write(STATUS_OK) };
            }
            std::ptr::null()
        }

        pub(super) extern "C" fn info() -> PluginInfo {
            PluginInfo {
                name: c"p".as_ptr(),
                version: c"1.0.0".as_ptr(),
                description: c"".as_ptr(),
                abi_version: ABI_VERSION,
                struct_size: std::mem::size_of::<PluginInfo>() as u32,
            }
        }

        pub(super) const V1_0: PluginVTable = PluginVTable {
            initialize: Some(initialize),
            shutdown: Some(status),
            health_check: Some(status),
            before_request: Some(string),
            after_response: Some(string),
            process_endpoint: Some(endpoint),
            free_string: Some(free),
            last_error: Some(last_error),
        };

        pub(super) extern "C" fn vtable_1_0() -> PluginVTable {
            V1_0
        }

        pub(super) extern "C" fn vtable_1_1() -> PluginVTableV1_1 {
            PluginVTableV1_1 {
                v1_0: V1_0,
                initialize_with_host: Some(initialize_with_host),
            }
        }

        pub(super) extern "C" fn vtable_1_1_without_host() -> PluginVTableV1_1 {
            PluginVTableV1_1 {
                v1_0: V1_0,
                initialize_with_host: None,
            }
        }

        pub(super) static HOST: HostServices = HostServices {
            struct_size: std::mem::size_of::<HostServices>() as u32,
            reserved: 0,
            context: std::ptr::null_mut(),
            log_enabled: None,
            log: None,
        };
    }

    /// `metadata()` declaring ABI 1.`minor` with a table of `entries`.
    fn metadata_of(minor: u32, entries: u32) -> PluginMetadata {
        let mut m = metadata();
        m.header.flags = minor << metadata::FLAG_ABI_MINOR_SHIFT;
        m.header.vtable_size = entries * std::mem::size_of::<usize>() as u32;
        m
    }

    #[test]
    fn tables_are_read_at_the_records_revision_and_initialized_accordingly() {
        use std::sync::atomic::Ordering::SeqCst;
        // SAFETY: `vtable_1_1` returns a 1.1 table; `RawPlugin::new` calls it
        // with that return type, as the record declares 1.1.
        let plugin = unsafe {
            RawPlugin::new(
                metadata_of(1, 9),
                in_process::info,
                std::mem::transmute::<
                    extern "C" fn() -> PluginVTableV1_1,
                    extern "C" fn() -> PluginVTable,
                >(in_process::vtable_1_1),
            )
        }
        .unwrap();
        assert!(plugin.takes_host_services());
        assert_eq!(plugin.abi_revision().to_string(), "1.1");
        let (before, with_host) = (
            in_process::INITIALIZE.load(SeqCst),
            in_process::WITH_HOST.load(SeqCst),
        );
        plugin
            .initialize_with_host(c"null", &in_process::HOST)
            .unwrap();
        assert_eq!(in_process::WITH_HOST.load(SeqCst), with_host + 1);
        assert_eq!(in_process::INITIALIZE.load(SeqCst), before);

        // SAFETY: `vtable_1_0` returns a 1.0 table, as the record declares.
        let plugin =
            unsafe { RawPlugin::new(metadata_of(0, 8), in_process::info, in_process::vtable_1_0) }
                .unwrap();
        assert!(!plugin.takes_host_services());
        assert_eq!(plugin.abi_revision().to_string(), "1.0");
        let before = in_process::INITIALIZE.load(SeqCst);
        plugin
            .initialize_with_host(c"null", &in_process::HOST)
            .unwrap();
        assert_eq!(
            in_process::INITIALIZE.load(SeqCst),
            before + 1,
            "a 1.0 plugin gets `initialize`"
        );
    }

    #[test]
    fn a_1_1_table_without_initialize_with_host_is_refused_naming_it() {
        // SAFETY: as above, a 1.1 table for a 1.1 record.
        let error = unsafe {
            RawPlugin::new(
                metadata_of(1, 9),
                in_process::info,
                std::mem::transmute::<
                    extern "C" fn() -> PluginVTableV1_1,
                    extern "C" fn() -> PluginVTable,
                >(in_process::vtable_1_1_without_host),
            )
        }
        .unwrap_err();
        assert!(
            matches!(
                error,
                AbiError::NullEntry {
                    entry: "initialize_with_host",
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn the_request_hooks_are_one_list() {
        for (i, hook) in Hook::REQUEST.into_iter().enumerate() {
            assert_eq!(hook.request_index(), Some(i));
        }
        for hook in [Hook::Initialize, Hook::Shutdown, Hook::HealthCheck] {
            assert_eq!(hook.request_index(), None);
        }
    }

    #[test]
    fn layouts_match_docs_abi_md() {
        let pointer = std::mem::size_of::<usize>();
        assert_eq!(std::mem::size_of::<PluginInfo>(), 3 * pointer + 8);
        assert_eq!(std::mem::size_of::<PluginVTable>(), 8 * pointer);
        assert_eq!(std::mem::offset_of!(PluginVTable, free_string), 6 * pointer);
        assert_eq!(std::mem::offset_of!(PluginInfo, abi_version), 3 * pointer);
        assert_eq!(std::mem::size_of::<PluginVTableV1_1>(), 9 * pointer);
        assert_eq!(
            std::mem::offset_of!(PluginVTableV1_1, initialize_with_host),
            8 * pointer
        );
        assert_eq!(std::mem::size_of::<PluginVTableV1_2>(), 13 * pointer);
        assert_eq!(
            std::mem::offset_of!(PluginVTableV1_2, call_start),
            9 * pointer
        );
        assert_eq!(
            std::mem::offset_of!(PluginVTableV1_2, call_drop),
            12 * pointer
        );
        assert_eq!(std::mem::size_of::<crate::HostWaker>(), 4 * pointer);
        assert_eq!(std::mem::offset_of!(crate::HostWaker, drop), 3 * pointer);
        assert_eq!(std::mem::offset_of!(HostServices, context), 8);
        assert_eq!(std::mem::offset_of!(HostServices, log_enabled), 8 + pointer);
        assert_eq!(std::mem::offset_of!(HostServices, log), 8 + 2 * pointer);
    }

    #[test]
    fn memory_records_are_read_header_first() {
        let record = MetadataRecord::new("0.1.0", "p", "1.0.0", "d", 0);
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
