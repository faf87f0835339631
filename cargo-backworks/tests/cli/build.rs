//! `cargo backworks new` and `build`, as a new user types them: a fresh
//! plugin is written, built with the real cargo, checked, signed, and loaded
//! with libloading exactly as the host will; builds from two directories give
//! the same bytes; failures say what went wrong.
//!
//! Every build here shares one target directory (`target/backworks-e2e`), so
//! the plugin's dependencies compile once per run.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use backworks_plugin_sdk::abi::{self, PluginInfo, PluginVTable, RawPlugin};
use backworks_plugin_sdk::{TARGET, Value, json};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn shared_target_dir() -> PathBuf {
    workspace().join("target").join("backworks-e2e")
}

/// `cargo backworks <args>` run in `dir`, as cargo runs the subcommand.
fn cargo_backworks(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cargo-backworks"))
        .arg("backworks")
        .args(args)
        .current_dir(dir)
        .env("CARGO", env!("CARGO"))
        .env("CARGO_TARGET_DIR", shared_target_dir())
        .env(
            "CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER",
            "x86_64-w64-mingw32-gcc",
        )
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("run cargo-backworks")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn new_plugin(parent: &Path, name: &str) -> PathBuf {
    let output = cargo_backworks(parent, &["new", name]);
    assert!(output.status.success(), "new failed: {}", stderr(&output));
    parent.join(name)
}

fn dist_path(name: &str, target: &str) -> PathBuf {
    let extension = if target.contains("windows") {
        "dll"
    } else {
        "so"
    };
    shared_target_dir()
        .join("backworks")
        .join(target)
        .join(format!("{name}-0.1.0-{target}.{extension}"))
}

/// Loads `library` the way the host does (record, checks, then the
/// functions) and returns the checked plugin. The library stays loaded.
fn load(library: &Path) -> RawPlugin {
    // SAFETY: loading runs the library's initialisers; it is the plugin this
    // test just built from the template.
    let library: &'static libloading::Library = Box::leak(Box::new(
        unsafe { libloading::Library::new(library) }.unwrap(),
    ));
    // SAFETY: the symbol is the exported metadata record (data); we read its
    // address, and the library is never unloaded.
    let metadata = unsafe {
        let record = *library
            .get::<*const u8>(abi::METADATA_SYMBOL.as_bytes())
            .unwrap();
        abi::read_metadata_at(record).unwrap()
    };
    // SAFETY: ABI v1 declares both functions with these signatures;
    // `RawPlugin::new` checks the record before calling them.
    unsafe {
        let info = *library
            .get::<extern "C" fn() -> PluginInfo>(abi::PLUGIN_INFO_SYMBOL.as_bytes())
            .unwrap();
        let vtable = *library
            .get::<extern "C" fn() -> PluginVTable>(abi::PLUGIN_VTABLE_SYMBOL.as_bytes())
            .unwrap();
        RawPlugin::new(metadata, info, vtable).unwrap()
    }
}

#[test]
fn new_build_check_sign_verify_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = new_plugin(dir.path(), "demo");

    let output = cargo_backworks(&plugin_dir, &["build", "--release"]);
    assert!(output.status.success(), "build failed: {}", stderr(&output));
    let library = dist_path("demo", TARGET);
    assert!(
        library.is_file(),
        "missing {}: {}",
        library.display(),
        stderr(&output)
    );
    assert!(
        stderr(&output).contains(&format!("Plugin demo 0.1.0 ({TARGET})")),
        "{}",
        stderr(&output)
    );

    let output = cargo_backworks(&plugin_dir, &["check", library.to_str().unwrap()]);
    assert!(output.status.success(), "check failed: {}", stderr(&output));

    // Keys, then a signed build, then verification of what it wrote.
    let output = cargo_backworks(&plugin_dir, &["keygen", "--unencrypted", "release"]);
    assert!(
        output.status.success(),
        "keygen failed: {}",
        stderr(&output)
    );
    let output = cargo_backworks(
        &plugin_dir,
        &["build", "--release", "--sign", "release.key"],
    );
    assert!(
        output.status.success(),
        "signed build failed: {}",
        stderr(&output)
    );
    let signature = PathBuf::from(format!("{}.minisig", library.display()));
    assert!(
        signature.is_file(),
        "no signature at {}",
        signature.display()
    );
    let output = cargo_backworks(
        &plugin_dir,
        &["verify", "--pub", "release.pub", library.to_str().unwrap()],
    );
    assert!(
        output.status.success(),
        "verify failed: {}",
        stderr(&output)
    );

    // It loads and answers as written.
    let plugin = load(&library);
    assert_eq!(plugin.name(), "demo");
    assert_eq!(plugin.metadata().name, "demo");
    plugin
        .initialize(&CString::new(r#"{"greeting":"hi"}"#).unwrap())
        .unwrap();
    plugin.health_check().unwrap();
    let body = plugin
        .process_endpoint(c"/hello", c"GET", c"")
        .unwrap()
        .expect("GET /hello is answered");
    let body: Value = serde_json::from_str(body.to_str().unwrap()).unwrap();
    assert_eq!(body, json!({"message": "hi", "plugin": "demo"}));
    assert!(
        plugin
            .process_endpoint(c"/other", c"GET", c"")
            .unwrap()
            .is_none()
    );
    let error = plugin.shutdown();
    assert!(error.is_ok(), "{error:?}");
}

#[test]
fn the_same_source_in_two_directories_builds_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut builds = Vec::new();
    for checkout in ["first-checkout", "second/checkout"] {
        let parent = dir.path().join(checkout);
        std::fs::create_dir_all(&parent).unwrap();
        let plugin_dir = new_plugin(&parent, "twin");
        let output = cargo_backworks(&plugin_dir, &["build", "--release", "--quiet"]);
        assert!(output.status.success(), "build failed: {}", stderr(&output));
        builds.push(std::fs::read(dist_path("twin", TARGET)).unwrap());
    }
    assert!(
        builds[0] == builds[1],
        "the builds differ ({} and {} bytes)",
        builds[0].len(),
        builds[1].len()
    );
}

#[test]
fn several_targets_each_land_in_the_dist_layout_and_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = new_plugin(dir.path(), "multi");
    let windows = "x86_64-pc-windows-gnu";
    let output = cargo_backworks(
        &plugin_dir,
        &[
            "build",
            "--release",
            "--target",
            TARGET,
            "--target",
            windows,
        ],
    );
    assert!(output.status.success(), "build failed: {}", stderr(&output));
    for target in [TARGET, windows] {
        let library = dist_path("multi", target);
        let output = cargo_backworks(&plugin_dir, &["check", "--json", library.to_str().unwrap()]);
        assert!(output.status.success(), "{target}: {}", stderr(&output));
    }
}

#[test]
fn build_failures_say_what_went_wrong() {
    let dir = tempfile::tempdir().unwrap();

    // A crate that is not a plugin.
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(plain.join("src")).unwrap();
    std::fs::write(
        plain.join("Cargo.toml"),
        "[package]\nname = \"plain\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(plain.join("src/lib.rs"), "").unwrap();
    let output = cargo_backworks(&plain, &["build"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no plugin package"),
        "{}",
        stderr(&output)
    );

    // An unknown -p.
    let plugin_dir = new_plugin(dir.path(), "broken");
    let output = cargo_backworks(&plugin_dir, &["build", "-p", "nope"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output)
            .contains("`nope` is not a plugin package of this workspace; plugin packages: broken"),
        "{}",
        stderr(&output)
    );

    // A compile error: cargo's diagnostic comes through, exit code 3.
    std::fs::write(
        plugin_dir.join("src/lib.rs"),
        "pub fn broken() -> u32 { \"not a number\" }\n",
    )
    .unwrap();
    let output = cargo_backworks(&plugin_dir, &["build"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("mismatched types"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("cargo failed to build broken"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn new_refuses_a_non_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    std::fs::write(dir.path().join("taken/notes.txt"), "mine").unwrap();
    let output = cargo_backworks(dir.path(), &["new", "taken"]);
    assert_eq!(output.status.code(), Some(2));
    insta::assert_snapshot!("new_not_empty", stderr(&output));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("taken/notes.txt")).unwrap(),
        "mine"
    );
}
