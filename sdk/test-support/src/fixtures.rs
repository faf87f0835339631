//! Fixtures for the ABI tests: plugins built with the real cargo and C
//! compiler, once per test run, into one shared target directory; and a
//! minimal loader (libloading) that does what the host does: read the
//! record, check it, and only then call `plugin_info`/`plugin_vtable`.
//! Also one program built the same way: the tonic gRPC child that the
//! process tier's benchmark measures itself against ([`grpc_child`]).
//!
//! Used by the SDK's ABI tests and benchmark, the check tests of
//! `cargo-backworks` ([`crate::check_files`]) and the host's tests and
//! benchmarks.

use std::collections::HashMap;
use std::ffi::c_char;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use backworks_abi::capabilities::{CAPABILITIES_ENV, Capabilities};
use backworks_abi::metadata::PluginMetadata;
use backworks_abi::{self as abi, PluginInfo, PluginVTable, RawPlugin};

/// The workspace root.
pub fn workspace() -> PathBuf {
    // This crate is sdk/test-support.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the test support lives in the workspace")
        .to_owned()
}

/// Where fixtures are built: one target directory for the whole run, so
/// their shared dependencies compile once.
pub fn fixture_target_dir() -> PathBuf {
    workspace().join("target").join("fixtures")
}

pub const WINDOWS_GNU: &str = "x86_64-pc-windows-gnu";
const MINGW_CC: &str = "x86_64-w64-mingw32-gcc";

/// Builds the cdylib crate at `manifest_dir` with cargo (release profile,
/// `--locked`), for `target` or the host, and returns the library path as
/// cargo reports it in its `compiler-artifact` message.
pub fn cargo_build(manifest_dir: &Path, target: Option<&str>) -> PathBuf {
    cargo_build_declaring(manifest_dir, target, None)
}

/// [`cargo_build`] with `capabilities` (canonical JSON) recorded instead of
/// what the crate's manifest declares, into a target directory of its own
/// under [`fixture_target_dir`] (`declared-<name>`, so the crate's usual
/// build is not overwritten).
fn cargo_build_declaring(
    manifest_dir: &Path,
    target: Option<&str>,
    capabilities: Option<(&str, &str)>,
) -> PathBuf {
    let mut command = match capabilities {
        None => cargo_release_build(manifest_dir, &fixture_target_dir()),
        Some((name, json)) => {
            let mut command = cargo_release_build(
                manifest_dir,
                &fixture_target_dir().join(format!("declared-{name}")),
            );
            command.env(CAPABILITIES_ENV, json);
            command
        }
    };
    if let Some(target) = target {
        command.args(["--target", target]);
        if target == WINDOWS_GNU {
            command.env("CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER", MINGW_CC);
        }
    }
    let output = command.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "building {} for {} failed (needs `rustup target add` and, for windows-gnu, \
         Debian's gcc-mingw-w64-x86-64; scripts/setup installs both):\n{}",
        manifest_dir.display(),
        target.unwrap_or("the host"),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("cargo prints UTF-8");
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"))
        })
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
        })
        .find(|f| {
            matches!(
                f.extension().and_then(|e| e.to_str()),
                Some("so" | "dll" | "dylib")
            )
        })
        .unwrap_or_else(|| panic!("cargo reported no cdylib for {}", manifest_dir.display()))
}

/// The canonical JSON of the crate's `[package.metadata.backworks.capabilities]`
/// (`None` when it declares none), read with `cargo metadata` and checked
/// by the ABI's own parser: what `cargo backworks build` hands to
/// `export_plugin!` in [`CAPABILITIES_ENV`].
pub fn declared_capabilities(manifest_dir: &Path) -> Option<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(manifest_dir.join("Cargo.toml"))
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo metadata of {} failed:\n{}",
        manifest_dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let declared = &metadata["packages"][0]["metadata"]["backworks"]["capabilities"];
    (!declared.is_null()).then(|| {
        Capabilities::from_value(declared)
            .unwrap_or_else(|e| panic!("{}: {e}", manifest_dir.display()))
            .to_json()
    })
}

/// `cargo build --release --locked` of the crate at `manifest_dir` into
/// `target_dir`, with cargo's JSON messages on stdout and the caller's
/// target dir and flags left out; its declared capabilities are
/// passed as `cargo backworks build` passes them.
fn cargo_release_build(manifest_dir: &Path, target_dir: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(manifest_dir)
        .args([
            "build",
            "--release",
            "--locked",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    match declared_capabilities(manifest_dir) {
        Some(json) => command.env(CAPABILITIES_ENV, json),
        None => command.env_remove(CAPABILITIES_ENV),
    };
    command
}

/// Builds binary `bin` of the crate at `manifest_dir` as [`cargo_build`]
/// builds a cdylib (release, `--locked`, for the host), and returns the
/// executable's path as cargo reports it.
pub fn cargo_build_binary(manifest_dir: &Path, bin: &str) -> PathBuf {
    let output = cargo_release_build(manifest_dir, &fixture_target_dir())
        .args(["--bin", bin])
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "building binary {bin} of {} failed:\n{}",
        manifest_dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("cargo prints UTF-8");
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| {
            panic!(
                "cargo reported no executable {bin} for {}",
                manifest_dir.display()
            )
        })
}

/// Compiles the C files `sources` into a shared library `name` with the
/// system C compiler (or mingw for windows-gnu), warnings as errors.
pub fn cc_build(name: &str, sources: &[PathBuf], target: Option<&str>) -> PathBuf {
    let out_dir = fixture_target_dir()
        .join("c")
        .join(target.unwrap_or("host"));
    std::fs::create_dir_all(&out_dir).expect("create the C output directory");
    let (compiler, file) = match target {
        Some(WINDOWS_GNU) => (MINGW_CC.to_owned(), format!("{name}.dll")),
        Some(other) => panic!("no C compiler set up for {other}"),
        None => (
            std::env::var("CC").unwrap_or_else(|_| "cc".to_owned()),
            format!("lib{name}.{}", std::env::consts::DLL_EXTENSION),
        ),
    };
    let out = out_dir.join(file);
    let mut command = Command::new(&compiler);
    command
        .args(["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-shared"])
        .arg("-I")
        .arg(workspace().join("sdk/include"))
        .arg("-o")
        .arg(&out)
        .args(sources);
    if target.is_none() {
        command.arg("-fPIC");
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run C compiler `{compiler}`: {e}"));
    assert!(
        output.status.success(),
        "{compiler} failed on {sources:?}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// Builds fixture `key` once per test run.
fn once(key: &str, build: impl FnOnce() -> PathBuf) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    static BUILDING: Mutex<()> = Mutex::new(());
    let built = BUILT.get_or_init(Default::default);
    if let Some(path) = built.lock().unwrap().get(key) {
        return path.clone();
    }
    // One build at a time: cargo would serialise on the target dir anyway.
    let _guard = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.lock().unwrap().get(key) {
        return path.clone();
    }
    let path = build();
    built.lock().unwrap().insert(key.to_owned(), path.clone());
    path
}

/// The design note's weather plugin, for the host.
pub fn weather_plugin() -> PathBuf {
    once("weather", || {
        cargo_build(&workspace().join("examples/weather-plugin"), None)
    })
}

/// The weather plugin for windows-gnu, linked by GNU ld (mingw-w64).
pub fn weather_plugin_windows() -> PathBuf {
    once("weather-windows", || {
        cargo_build(
            &workspace().join("examples/weather-plugin"),
            Some(WINDOWS_GNU),
        )
    })
}

/// The echo fixture.
pub fn echo_plugin() -> PathBuf {
    once("echo", || {
        cargo_build(&workspace().join("sdk/tests/fixtures/echo-plugin"), None)
    })
}

/// The fault fixture: segfaults, aborts, exits, spins on request.
pub fn fault_plugin() -> PathBuf {
    once("fault", || {
        cargo_build(&workspace().join("sdk/tests/fixtures/fault-plugin"), None)
    })
}

/// The fault fixture declaring `network = ["127.0.0.1:9"]` (and nothing
/// else): TCP connect to port 9 only.
pub fn fault_plugin_connecting_to_port_9() -> PathBuf {
    once("fault-port-9", || {
        let declared = Capabilities::from_value(&serde_json::json!({"network": ["127.0.0.1:9"]}))
            .expect("a valid declaration")
            .to_json();
        cargo_build_declaring(
            &workspace().join("sdk/tests/fixtures/fault-plugin"),
            None,
            Some(("port-9", &declared)),
        )
    })
}

/// The tonic gRPC plugin child (`host/benches/grpc-child`, issue 16's
/// go-plugin baseline): `serve` and `bench` over a Unix socket.
pub fn grpc_child() -> PathBuf {
    once("grpc-child", || {
        cargo_build_binary(&workspace().join("host/benches/grpc-child"), "grpc-child")
    })
}

/// The C weather plugin, built against `sdk/include/backworks.h` alone.
pub fn c_plugin() -> PathBuf {
    once("c", || {
        cc_build(
            "weather_c",
            &[workspace().join("examples/c-plugin/weather.c")],
            None,
        )
    })
}

/// The C weather plugin linked against a stub `libc.so.6` that defines
/// `backworks_glibc_floor_probe` in version node `GLIBC_2.99` (a version
/// script), which an extra function of the plugin calls: the linker
/// records the need for `GLIBC_2.99` of `libc.so.6`, so the library needs a
/// glibc newer than any released, and `dlopen` would refuse it.
pub fn c_plugin_needing_glibc_2_99() -> PathBuf {
    once("c-glibc-2-99", || {
        let dir = fixture_target_dir().join("c").join("glibc-2-99");
        std::fs::create_dir_all(&dir).expect("create the fixture directory");
        let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
        let run = |command: &mut Command| {
            let output = command
                .output()
                .unwrap_or_else(|e| panic!("cannot run C compiler `{compiler}`: {e}"));
            assert!(
                output.status.success(),
                "{compiler} failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write a fixture source");
            path
        };
        let stub_source = write(
            "stub_libc.c",
            "int backworks_glibc_floor_probe(void) { return 0; }\n",
        );
        let script = write(
            "stub_libc.map",
            "GLIBC_2.99 { global: backworks_glibc_floor_probe; local: *; };\n",
        );
        let stub = dir.join("libstub_glibc.so");
        run(Command::new(&compiler)
            .args(["-shared", "-fPIC", "-nostdlib", "-Wl,-soname,libc.so.6"])
            .arg(format!("-Wl,--version-script={}", script.display()))
            .arg("-o")
            .arg(&stub)
            .arg(&stub_source));
        let caller = write(
            "needs_glibc_2_99.c",
            "int backworks_glibc_floor_probe(void);\n\
             int weather_needs_glibc_2_99(void) { return backworks_glibc_floor_probe(); }\n",
        );
        let out = dir.join("libweather_c_glibc_2_99.so");
        run(Command::new(&compiler)
            .args([
                "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
            ])
            .arg("-I")
            .arg(workspace().join("sdk/include"))
            .arg("-o")
            .arg(&out)
            .arg(workspace().join("examples/c-plugin/weather.c"))
            .arg(&caller)
            .arg(&stub));
        out
    })
}

/// The C weather plugin for windows-gnu.
pub fn c_plugin_windows() -> PathBuf {
    once("c-windows", || {
        cc_build(
            "weather_c",
            &[workspace().join("examples/c-plugin/weather.c")],
            Some(WINDOWS_GNU),
        )
    })
}

/// A plugin built against ABI v2, whose functions abort if called.
pub fn abi_v2_plugin() -> PathBuf {
    once("abi-v2", || {
        cc_build(
            "abi_v2",
            &[workspace().join("sdk/tests/fixtures/abi-v2/plugin.c")],
            None,
        )
    })
}

/// A C plugin of ABI 1.3, a minor revision newer than the host's: its
/// table appends two entries (which abort if called) to 1.2's.
pub fn abi_future_minor_plugin() -> PathBuf {
    once("abi-future-minor", || {
        cc_build(
            "abi_future_minor",
            &[workspace().join("sdk/tests/fixtures/abi-future-minor/plugin.c")],
            None,
        )
    })
}

/// A C plugin of ABI 1.1, declared with the header's macros
/// (`BACKWORKS_PLUGIN_ABI_MINOR` 1).
pub fn c_abi_1_1_plugin() -> PathBuf {
    once("c-abi-1-1", || {
        cc_build(
            "c_abi_1_1",
            &[workspace().join("sdk/tests/fixtures/c-abi-1-1/plugin.c")],
            None,
        )
    })
}

/// A C plugin that declares its capabilities with
/// `BACKWORKS_DECLARE_METADATA_WITH_CAPABILITIES`.
pub fn c_capabilities_plugin() -> PathBuf {
    once("c-capabilities", || {
        cc_build(
            "c_capabilities",
            &[workspace().join("sdk/tests/fixtures/c-capabilities/plugin.c")],
            None,
        )
    })
}

/// The C weather plugin with a NULL `after_response` in its vtable.
pub fn null_entry_plugin() -> PathBuf {
    once("null-entry", || {
        cc_build(
            "null_entry",
            &[workspace().join("sdk/tests/fixtures/null-entry/plugin.c")],
            None,
        )
    })
}

/// A library loaded as the host loads one: from a private copy (so each
/// test gets fresh plugin state), never unloaded.
pub struct Loaded {
    pub library: &'static libloading::Library,
}

/// Copies `path` to a fresh temporary directory, loads the copy, and
/// removes the directory again: the mapping keeps the code, so a test run
/// leaves nothing behind in the temporary directory.
pub fn load_fresh(path: &Path) -> Loaded {
    let dir = tempfile::Builder::new()
        .prefix("backworks-abi-test")
        .tempdir()
        .expect("temp dir");
    let copy = dir
        .path()
        .join(path.file_name().expect("library file name"));
    std::fs::copy(path, &copy).expect("copy the library");
    // SAFETY: loading runs the library's initialisers; every library loaded
    // here is a fixture built by this test run from this repository.
    let library = unsafe { libloading::Library::new(&copy) }
        .unwrap_or_else(|e| panic!("dlopen {}: {e}", copy.display()));
    drop(dir);
    Loaded {
        library: Box::leak(Box::new(library)),
    }
}

impl Loaded {
    /// The exported metadata record, read from memory without calling code.
    pub fn metadata(&self) -> Result<PluginMetadata, backworks_abi::metadata::MetadataError> {
        // SAFETY: the symbol is data: its address is what we read, and the
        // type `*const u8` is just that address.
        let record: *const u8 = unsafe {
            *self
                .library
                .get::<*const u8>(abi::METADATA_SYMBOL.as_bytes())
                .expect("backworks_plugin_metadata is exported")
        };
        // SAFETY: `record` is the library's exported metadata record and the
        // library is never unloaded.
        unsafe { abi::read_metadata_at(record) }
    }

    /// The checked plugin: metadata first, then `plugin_info` and
    /// `plugin_vtable`.
    pub fn plugin(&self) -> Result<RawPlugin, abi::AbiError> {
        let metadata = self.metadata()?;
        // SAFETY: ABI v1 declares these two functions with exactly these
        // signatures; `RawPlugin::new` checks the record before calling them.
        let (info, vtable) = unsafe {
            (
                *self
                    .library
                    .get::<extern "C" fn() -> PluginInfo>(abi::PLUGIN_INFO_SYMBOL.as_bytes())
                    .expect("plugin_info is exported"),
                *self
                    .library
                    .get::<extern "C" fn() -> PluginVTable>(abi::PLUGIN_VTABLE_SYMBOL.as_bytes())
                    .expect("plugin_vtable is exported"),
            )
        };
        // SAFETY: both functions come from this library, which stays loaded.
        unsafe { RawPlugin::new(metadata, info, vtable) }
    }

    /// An extra exported `extern "C" fn() -> isize` (the echo fixture's
    /// allocation counter).
    pub fn counter(&self, symbol: &str) -> extern "C" fn() -> isize {
        // SAFETY: the echo fixture exports this symbol with this signature.
        unsafe {
            *self
                .library
                .get::<extern "C" fn() -> isize>(symbol.as_bytes())
                .unwrap_or_else(|e| panic!("{symbol}: {e}"))
        }
    }
}

/// A raw pointer for the NULL-argument tests.
pub const NULL: *const c_char = std::ptr::null();

/// `library`'s bytes with the `field` slot (`name`, `version`, `target` or
/// `description`) of every metadata record in it set to `value`: what a
/// publisher who edits the record before signing has (the section and the
/// symbol name the same record). Checks that the first record reads back
/// as edited.
pub fn with_record(library: &[u8], field: &str, value: &str) -> Vec<u8> {
    let (offset, len) = match field {
        "name" => (std::mem::offset_of!(abi::MetadataRecord, name), 64),
        "version" => (128, 64),
        "target" => (192, 64),
        "description" => (std::mem::offset_of!(abi::MetadataRecord, description), 256),
        _ => panic!("no slot {field}"),
    };
    assert!(value.len() < len && !value.contains('\0'), "{value:?}");
    let mut bytes = library.to_vec();
    let mut first = None;
    let mut at = 0;
    while let Some(found) = bytes[at..]
        .windows(abi::METADATA_MAGIC.len())
        .position(|w| w == abi::METADATA_MAGIC)
    {
        let record = at + found;
        let slot = &mut bytes[record + offset..record + offset + len];
        slot.fill(0);
        slot[..value.len()].copy_from_slice(value.as_bytes());
        first.get_or_insert(record);
        at = record + abi::METADATA_MAGIC.len();
    }
    let record = first.expect("no metadata record in the library");
    let read = backworks_abi::metadata::parse(&bytes[record..]).expect("the edited record parses");
    let read = match field {
        "name" => read.name,
        "version" => read.version,
        "description" => read.description,
        _ => read.target,
    };
    assert_eq!(read, value, "the record reads back as edited");
    bytes
}
