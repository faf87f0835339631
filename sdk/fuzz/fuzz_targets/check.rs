//! `check` over whole files (`check::check_bytes`): arbitrary bytes as an
//! ELF, PE or Mach-O plugin, under the file names of the three formats.
//! Beyond "no panic, no hang" (libFuzzer's -timeout): `valid` is exactly
//! "no error finding"; a file is never a valid plugin when the `object`
//! crate cannot parse it, is not a shared library, or has no parsed record
//! and exported `plugin_info` / `plugin_vtable` / `backworks_plugin_metadata`;
//! and both reports (text and JSON) render.
#![no_main]

use std::path::Path;

use backworks_artifact::check::{self, Severity};
use libfuzzer_sys::fuzz_target;

/// File names by the last input byte: each format's extension, the
/// distribution layout, and none.
const NAMES: [&str; 6] = [
    "libweather.so",
    "weather.dll",
    "libweather.dylib",
    "weather-1.0.0-x86_64-unknown-linux-gnu.so",
    "weather-1.0.0-aarch64-apple-darwin.dylib",
    "weather",
];

fuzz_target!(|data: &[u8]| {
    let name = NAMES[data.last().map_or(0, |b| usize::from(*b) % NAMES.len())];
    let report = check::check_bytes(Path::new(name), data);
    let errors = report
        .findings()
        .iter()
        .any(|f| f.severity == Severity::Error);
    assert_eq!(
        report.is_valid(),
        !errors,
        "valid is exactly no error finding"
    );
    assert_eq!(report.size(), Some(data.len() as u64));
    if report.is_valid() {
        let object = object::File::parse(data)
            .expect("check said valid plugin, but object cannot parse the file");
        assert_eq!(object::Object::kind(&object), object::ObjectKind::Dynamic);
        assert_eq!(report.kind(), Some(check::ObjectKind::SharedLibrary));
        assert!(report.metadata().is_some(), "a valid plugin has a record");
        let exports = report
            .exports()
            .expect("a valid plugin's exports were read");
        for symbol in [
            &exports.plugin_info,
            &exports.plugin_vtable,
            &exports.backworks_plugin_metadata,
        ] {
            assert!(symbol.exported, "a valid plugin exports the ABI symbols");
        }
    }
    let text = report.render_text();
    assert!(text.contains(name), "the report names the file");
    serde_json::to_string(&report).expect("the JSON report serialises");
});
