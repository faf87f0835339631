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
