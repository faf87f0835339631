//! Sources that must not drift: the generated C header, and the design
//! note's example plugin kept byte for byte.

use std::path::Path;

use crate::support::workspace;

/// `include/backworks.h` as cbindgen generates it from `abi/src/lib.rs` (crate `backworks-abi`) now.
fn generated_header() -> String {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = cbindgen::Config::from_file(sdk.join("cbindgen.toml")).unwrap();
    config.trailer = config
        .trailer
        .map(|t| t.replace("@SDK_VERSION@", backworks_plugin_sdk::SDK_VERSION));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(sdk.join("abi/src/lib.rs"))
        .generate()
        .expect("cbindgen reads abi/src/lib.rs");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn c_header_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/backworks.h");
    let generated = generated_header();
    if std::env::var_os("BACKWORKS_BLESS").is_some() {
        let tmp = path.with_extension("h.tmp");
        std::fs::write(&tmp, &generated).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "sdk/include/backworks.h is stale: regenerate it with \
         `BACKWORKS_BLESS=1 cargo test -p backworks-plugin-sdk --test abi c_header_is_current`"
    );
}

#[test]
fn weather_example_is_the_design_note_verbatim() {
    let note =
        std::fs::read_to_string(workspace().join("docs/design/dynamic-plugin-loading.md")).unwrap();
    let section = &note[note.find("## External Plugin Example").unwrap()..];
    let start = section.find("```rust\n").unwrap() + "```rust\n".len();
    let end = start + section[start..].find("```").unwrap();
    let example =
        std::fs::read_to_string(workspace().join("examples/weather-plugin/src/lib.rs")).unwrap();
    assert_eq!(example, &section[start..end]);
}
