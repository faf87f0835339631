//! Files for the `check` tests and benchmark of `cargo-backworks`, built for
//! real once per test run into the shared `target/fixtures` directory:
//! plugins with cargo and cc (through [`crate::fixtures`], which the SDK's
//! tests use too), broken C plugins from `cargo-backworks/tests/fixtures/*.c`,
//! an object file, a static archive, a plugin grown with objcopy, and a
//! system library.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::fixtures as support;
pub use crate::fixtures::{
    WINDOWS_GNU, abi_v2_plugin, c_plugin, c_plugin_windows, fixture_target_dir, weather_plugin,
    with_record, workspace,
};

/// Builds fixture `key` once per test run (one build at a time).
fn once(key: &str, build: impl FnOnce() -> PathBuf) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    static BUILDING: Mutex<()> = Mutex::new(());
    let built = BUILT.get_or_init(Default::default);
    let cached = || {
        built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    };
    if let Some(path) = cached() {
        return path;
    }
    let _guard = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = cached() {
        return path;
    }
    let path = build();
    built
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.to_owned(), path.clone());
    path
}

/// `cargo-backworks/tests/fixtures/<name>`.
fn source(name: &str) -> PathBuf {
    support::workspace()
        .join("cargo-backworks/tests/fixtures")
        .join(name)
}

/// Where this file's own outputs go.
fn out_dir() -> PathBuf {
    let dir = fixture_target_dir().join("check");
    std::fs::create_dir_all(&dir).expect("create target/fixtures/check");
    dir
}

/// Runs a build tool, failing the test with its output when it fails.
fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn cc_shared(name: &str, file: &str) -> PathBuf {
    support::cc_build(name, &[source(file)], None)
}

/// A C plugin that defines no `plugin_vtable`.
pub fn missing_vtable() -> PathBuf {
    once("missing-vtable", || {
        cc_shared("check_missing_vtable", "missing_vtable.c")
    })
}

/// A C plugin whose `plugin_vtable` is a variable.
pub fn vtable_is_data() -> PathBuf {
    once("vtable-is-data", || {
        cc_shared("check_vtable_is_data", "vtable_is_data.c")
    })
}

/// A plain C shared library: no record, no plugin symbols.
pub fn no_metadata() -> PathBuf {
    once("no-metadata", || {
        cc_shared("check_no_metadata", "no_metadata.c")
    })
}

/// The C weather plugin with a record claiming `aarch64-apple-darwin`.
pub fn wrong_target() -> PathBuf {
    once("wrong-target", || {
        cc_shared("check_wrong_target", "wrong_target.c")
    })
}

/// The C weather plugin compiled but not linked (`cc -c`).
pub fn object_file() -> PathBuf {
    once("object-file", || {
        let out = out_dir().join("weather.o");
        run(
            Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
                .args(["-std=c11", "-O2", "-fPIC", "-c", "-I"])
                .arg(workspace().join("sdk/include"))
                .arg("-o")
                .arg(&out)
                .arg(workspace().join("examples/c-plugin/weather.c")),
        );
        out
    })
}

/// A static archive of [`object_file`] (`ar rcs`).
pub fn static_archive() -> PathBuf {
    once("static-archive", || {
        let object = object_file();
        let out = out_dir().join("libweather.a");
        let _ = std::fs::remove_file(&out);
        run(Command::new("ar").arg("rcs").arg(&out).arg(object));
        out
    })
}

/// The C weather plugin with a non-loaded section of `megabytes` MiB added
/// by objcopy: a large artifact that is still a valid plugin.
pub fn grown_plugin(megabytes: usize) -> PathBuf {
    once(&format!("grown-{megabytes}"), || {
        grow(&c_plugin(), &out_dir(), megabytes)
    })
}

/// Copies `plugin` with a `megabytes` MiB `.blob` section (noload,
/// readonly) added by `objcopy`, into `dir`.
pub fn grow(plugin: &Path, dir: &Path, megabytes: usize) -> PathBuf {
    let blob = dir.join(format!("blob-{megabytes}.bin"));
    let pattern: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    std::fs::write(&blob, pattern.repeat(megabytes)).expect("write the blob");
    let out = dir.join(format!("libweather_c_{megabytes}mb.so"));
    run(Command::new("objcopy")
        .arg(format!("--add-section=.blob={}", blob.display()))
        .args(["--set-section-flags", ".blob=noload,readonly"])
        .arg(plugin)
        .arg(&out));
    let _ = std::fs::remove_file(blob);
    out
}

/// The C weather plugin with its `.bwmeta` section renamed by objcopy: the
/// record is then found only through the exported symbol.
pub fn renamed_record_section() -> PathBuf {
    once("renamed-section", || {
        let out = out_dir().join("libweather_c_renamed.so");
        run(Command::new("objcopy")
            .args(["--rename-section", ".bwmeta=.rodata.backworks"])
            .arg(c_plugin())
            .arg(&out));
        out
    })
}

/// A shared library of the system: the C library this test process runs
/// with, as `/proc/self/maps` names it.
pub fn system_library() -> PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(PathBuf::from)
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-"))
        })
        .expect("the test process maps a libc")
}

/// Seeded pseudo-random bytes (xorshift64).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A minimal valid WebAssembly module exporting a function `plugin_info`.
pub const WASM_MODULE: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
    0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
    0x07, 0x0f, 0x01, 0x0b, b'p', b'l', b'u', b'g', b'i', b'n', b'_', b'i', b'n', b'f', b'o', 0x00,
    0x00, // export section: "plugin_info" = function 0
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code section: an empty body
];
