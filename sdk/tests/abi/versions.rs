//! Plugins the host must not call into: another ABI version, recognised from
//! the record before `plugin_vtable`; and the record's survival through
//! GNU ld's garbage collection when linking a windows-gnu DLL; a vtable with
//! a NULL entry, refused before any call through it.

use backworks_artifact::inspect::find_metadata;
use backworks_plugin_sdk::abi::{self, AbiError};
use object::read::{Object, ObjectSection};

use crate::support;

#[test]
fn a_plugin_of_another_abi_version_is_refused_before_any_call() {
    let library = support::abi_v2_plugin();
    let from_file = find_metadata(&std::fs::read(&library).unwrap()).unwrap();
    assert_eq!(from_file.abi_version(), 2);
    assert_eq!(from_file.name, "future-plugin");
    let error = abi::check_compatible(&from_file).unwrap_err();
    assert!(
        matches!(error, AbiError::Version { found: 2, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("upgrade the host"), "{error}");

    // Loaded: the record reads the same from memory, and RawPlugin refuses
    // the plugin without calling plugin_info or plugin_vtable (both abort).
    let loaded = support::load_fresh(&library);
    assert_eq!(loaded.metadata().unwrap(), from_file);
    let error = loaded.plugin().unwrap_err();
    assert!(
        matches!(error, AbiError::Version { found: 2, .. }),
        "{error:?}"
    );
}

/// A C plugin whose table has a NULL entry: `RawPlugin::new` refuses it,
/// naming the entry, so the host never calls through the NULL pointer.
#[test]
fn a_vtable_with_a_null_entry_is_refused_naming_it() {
    let loaded = support::load_fresh(&support::null_entry_plugin());
    let error = loaded.plugin().unwrap_err();
    assert!(
        matches!(
            &error,
            AbiError::NullEntry { name, entry: "after_response" } if name == "weather-c"
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "plugin `weather-c`: plugin_vtable() returned a NULL `after_response`; every entry of the table must be a function (a hook the plugin does not implement returns status 5, BACKWORKS_STATUS_NOT_IMPLEMENTED)"
    );
}

fn assert_windows_dll_keeps_the_abi(library: &std::path::Path, package: &str) {
    let bytes = std::fs::read(library).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    assert_eq!(file.format(), object::BinaryFormat::Pe);
    assert_eq!(file.architecture(), object::Architecture::X86_64);
    let section = file
        .sections()
        .find(|s| s.name() == Ok(abi::METADATA_SECTION))
        .expect("GNU ld kept the .bwmeta section");
    assert!(section.size() >= abi::METADATA_RECORD_SIZE as u64);
    let exports: Vec<String> = file
        .exports()
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| match e.name() {
            object::NameOrOrdinal::Name(name) => Some(String::from_utf8_lossy(name).into_owned()),
            object::NameOrOrdinal::Ordinal(_) => None,
        })
        .collect();
    for symbol in [
        abi::METADATA_SYMBOL,
        abi::PLUGIN_INFO_SYMBOL,
        abi::PLUGIN_VTABLE_SYMBOL,
    ] {
        assert!(
            exports.iter().any(|e| e == symbol),
            "{symbol} not in {exports:?}"
        );
    }
    let metadata = find_metadata(&bytes).unwrap();
    assert_eq!(metadata.name, package);
    assert_eq!(metadata.target, support::WINDOWS_GNU);
    let error = abi::check_compatible(&metadata).unwrap_err();
    assert!(matches!(error, AbiError::Target { .. }), "{error:?}");
}

#[test]
fn rust_plugin_record_survives_a_windows_gnu_release_link() {
    assert_windows_dll_keeps_the_abi(&support::weather_plugin_windows(), "weather");
}

#[test]
fn c_plugin_record_survives_a_windows_gnu_link() {
    assert_windows_dll_keeps_the_abi(&support::c_plugin_windows(), "weather-c");
}

/// What the test host's log callbacks received: (level, target, message,
/// fields).
type Logged = Vec<(u32, String, String, Option<String>)>;

static LOGGED: std::sync::Mutex<Logged> = std::sync::Mutex::new(Vec::new());

/// A string the plugin passed to the test host.
fn text(ptr: *const std::ffi::c_char) -> Option<String> {
    (!ptr.is_null()).then(|| {
        // SAFETY: the ABI makes every string the plugin passes NULL (not
        // here) or NUL-terminated and valid for the call.
        unsafe { std::ffi::CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned()
    })
}

/// The test host keeps events up to `info`.
extern "C" fn test_log_enabled(
    _: *mut std::ffi::c_void,
    level: u32,
    _: *const std::ffi::c_char,
) -> i32 {
    i32::from(level <= abi::LOG_INFO)
}

extern "C" fn test_log(
    _: *mut std::ffi::c_void,
    level: u32,
    target: *const std::ffi::c_char,
    message: *const std::ffi::c_char,
    fields: *const std::ffi::c_char,
) {
    let entry = (
        level,
        text(target).unwrap_or_default(),
        text(message).unwrap_or_default(),
        text(fields),
    );
    LOGGED.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
}

static TEST_HOST: abi::HostServices = abi::HostServices {
    struct_size: std::mem::size_of::<abi::HostServices>() as u32,
    reserved: 0,
    context: std::ptr::null_mut(),
    log_enabled: Some(test_log_enabled),
    log: Some(test_log),
};

/// A plugin of ABI 1.3 (two more entries than 1.2) is loaded by this 1.2
/// host: its record and table are accepted, the entries of 1.1 are called
/// (the two it does not know abort if called), and the plugin uses the host
/// services it received.
#[test]
fn a_plugin_of_a_newer_minor_revision_is_used_through_the_entries_this_host_knows() {
    let library = support::abi_future_minor_plugin();
    let from_file = find_metadata(&std::fs::read(&library).unwrap()).unwrap();
    assert_eq!(from_file.abi_revision().to_string(), "1.3");
    assert_eq!(
        from_file.header.vtable_size as usize,
        std::mem::size_of::<abi::PluginVTableV1_2>() + 2 * std::mem::size_of::<usize>()
    );
    abi::check_compatible(&from_file).unwrap();

    let loaded = support::load_fresh(&library);
    let plugin = loaded.plugin().unwrap();
    assert_eq!(plugin.abi_revision().to_string(), "1.3");
    assert!(plugin.takes_host_services());
    plugin
        .call_initialize_with_host(&serde_json::json!({}), &TEST_HOST)
        .unwrap();
    plugin.health_check().unwrap();
    assert_eq!(
        plugin.call_process_endpoint("/future", "GET", "").unwrap(),
        Some(String::from("served by ABI 1.3"))
    );
    assert_eq!(
        plugin.call_process_endpoint("/other", "GET", "").unwrap(),
        None
    );
    plugin.shutdown().unwrap();
    // (The tests share the test host: only this plugin's events.)
    let logged: Logged = LOGGED
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, target, _, _)| target == "future_minor")
        .cloned()
        .collect();
    assert_eq!(
        logged,
        [
            (
                abi::LOG_INFO,
                String::from("future_minor"),
                String::from("initialized with the host's services"),
                Some(String::from(r#"{"revision":"1.3"}"#)),
            ),
            (
                abi::LOG_WARN,
                String::from("future_minor"),
                String::from("served /future"),
                None,
            ),
        ],
        "the trace event is filtered out by the host's log_enabled"
    );
}

/// A C plugin opts into ABI 1.1 with `BACKWORKS_PLUGIN_ABI_MINOR`: the
/// header's macro records revision 1.1 and the 1.1 table's size, the host
/// reads its 1.1 table and initializes it with its services; the C weather
/// plugin, which does not define it, stays 1.0.
#[test]
fn a_c_plugin_chooses_its_revision_with_the_header() {
    let library = support::c_abi_1_1_plugin();
    let from_file = find_metadata(&std::fs::read(&library).unwrap()).unwrap();
    assert_eq!(from_file.abi_revision().to_string(), "1.1");
    assert_eq!(
        from_file.header.vtable_size as usize,
        std::mem::size_of::<abi::PluginVTableV1_1>()
    );
    let loaded = support::load_fresh(&library);
    let plugin = loaded.plugin().unwrap();
    assert!(plugin.takes_host_services());
    plugin
        .call_initialize_with_host(&serde_json::json!(null), &TEST_HOST)
        .unwrap();
    assert!(
        LOGGED.lock().unwrap().contains(&(
            abi::LOG_INFO,
            String::from("c_abi_1_1"),
            String::from("hello from C"),
            None
        )),
        "{:?}",
        LOGGED.lock().unwrap()
    );

    let weather = find_metadata(&std::fs::read(support::c_plugin()).unwrap()).unwrap();
    assert_eq!(weather.abi_revision().to_string(), "1.0");
    assert_eq!(
        weather.header.vtable_size as usize,
        std::mem::size_of::<abi::PluginVTable>()
    );
    let loaded = support::load_fresh(&support::c_plugin());
    assert!(!loaded.plugin().unwrap().takes_host_services());
}

/// The same plugin with a table size no revision can have is refused from
/// its record, naming the size, before any of its code runs.
#[test]
fn a_newer_minor_revision_with_a_table_of_the_wrong_size_is_refused() {
    let library = support::abi_future_minor_plugin();
    let mut metadata = find_metadata(&std::fs::read(&library).unwrap()).unwrap();
    metadata.header.vtable_size += 1;
    let error = abi::check_compatible(&metadata).unwrap_err();
    assert!(
        matches!(error, AbiError::VTableSize { found, .. } if found == metadata.header.vtable_size),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&format!(
            "declares sizeof(PluginVTable) = {} bytes, which is not a table of ABI 1.3",
            metadata.header.vtable_size
        )),
        "{error}"
    );
}
