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

pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

pub(crate) fn shared_target_dir() -> PathBuf {
    workspace().join("target").join("backworks-e2e")
}

/// The command `cargo backworks <args>` in `dir`, as cargo runs the
/// subcommand, building into the shared target directory.
pub(crate) fn cargo_backworks_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-backworks"));
    command
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
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    command
}

/// `cargo backworks <args>` run in `dir`, as cargo runs the subcommand.
pub(crate) fn cargo_backworks(dir: &Path, args: &[&str]) -> Output {
    cargo_backworks_command(dir, args)
        .output()
        .expect("run cargo-backworks")
}

/// The five release targets: each built here by its own tool (cargo, zig,
/// mingw), as a plugin's CI builds them.
pub(crate) const RELEASE_TARGETS: [&str; 5] = [
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "x86_64-pc-windows-gnu",
    "x86_64-apple-darwin",
    "aarch64-apple-darwin",
];

/// A release build of the plugin in `plugin_dir` for the five release
/// targets, into `dist`.
fn build_release_targets(plugin_dir: &Path, dist: &Path) -> Output {
    let mut args = vec!["build", "--release", "--quiet", "--dist-dir"];
    args.push(dist.to_str().unwrap());
    for target in RELEASE_TARGETS {
        args.extend(["--target", target]);
    }
    cargo_backworks(plugin_dir, &args)
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub(crate) fn new_plugin(parent: &Path, name: &str) -> PathBuf {
    let output = cargo_backworks(parent, &["new", name]);
    assert!(output.status.success(), "new failed: {}", stderr(&output));
    parent.join(name)
}

fn dist_path(name: &str, target: &str) -> PathBuf {
    dist_path_in(&shared_target_dir().join("backworks"), name, target)
}

/// A library's path in the dist layout under `dist`.
pub(crate) fn dist_path_in(dist: &Path, name: &str, target: &str) -> PathBuf {
    let extension = if target.contains("windows") {
        "dll"
    } else if target.contains("apple") {
        "dylib"
    } else {
        "so"
    };
    dist.join(target)
        .join(format!("{name}-0.1.0-{target}.{extension}"))
}

/// Loads `library` the way the host does (record, checks, then the
/// functions) and returns the checked plugin. The library stays loaded.
pub(crate) fn load(library: &Path) -> RawPlugin {
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

/// The template plugin, built in two directories for the five release
/// targets, gives the same bytes for each (cargo, zig and mingw builds).
#[test]
fn the_same_source_in_two_directories_builds_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut builds = Vec::new();
    for checkout in ["first-checkout", "second/checkout"] {
        let parent = dir.path().join(checkout);
        std::fs::create_dir_all(&parent).unwrap();
        let plugin_dir = new_plugin(&parent, "twin");
        let dist = parent.join("dist");
        let output = build_release_targets(&plugin_dir, &dist);
        assert!(output.status.success(), "build failed: {}", stderr(&output));
        let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
        let libraries: Vec<Vec<u8>> = RELEASE_TARGETS
            .iter()
            .map(|target| std::fs::read(dist_path_in(&dist, "twin", target)).unwrap())
            .collect();
        builds.push((libraries, sums));
    }
    let ((libraries_a, sums_a), (libraries_b, sums_b)) = (&builds[0], &builds[1]);
    for ((target, a), b) in RELEASE_TARGETS.iter().zip(libraries_a).zip(libraries_b) {
        assert!(
            a == b,
            "the {target} builds differ ({} and {} bytes)",
            a.len(),
            b.len()
        );
    }
    // The manifest names all five, with the same hashes.
    assert_eq!(sums_a, sums_b);
    for target in RELEASE_TARGETS {
        assert!(
            sums_a.contains(&format!("  {target}/twin-0.1.0-{target}.")),
            "{sums_a}"
        );
    }
}

/// The five release targets in one `build`, each checked for the format,
/// architecture and OS its triple implies.
#[test]
fn five_targets_in_one_build_each_with_the_right_format_and_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = new_plugin(dir.path(), "quint");
    let targets = [
        ("x86_64-unknown-linux-gnu", "elf", "x86_64", None),
        ("aarch64-unknown-linux-gnu", "elf", "aarch64", None),
        ("x86_64-pc-windows-gnu", "pe", "x86_64", Some("windows")),
        ("x86_64-apple-darwin", "mach-o", "x86_64", Some("macos")),
        ("aarch64-apple-darwin", "mach-o", "aarch64", Some("macos")),
    ];
    let dist = dir.path().join("dist");
    let mut args = vec!["build", "--release", "--dist-dir", dist.to_str().unwrap()];
    for (target, ..) in &targets {
        args.extend(["--target", target]);
    }
    let output = cargo_backworks(&plugin_dir, &args);
    assert!(output.status.success(), "build failed: {}", stderr(&output));
    let log = stderr(&output);
    assert!(
        log.contains("for aarch64-apple-darwin (release, cargo zigbuild (zig "),
        "{log}"
    );
    assert!(
        log.contains(
            "for x86_64-pc-windows-gnu (release, cargo with linker x86_64-w64-mingw32-gcc"
        ),
        "{log}"
    );
    let libraries: Vec<String> = targets
        .iter()
        .map(|(target, ..)| {
            dist_path_in(&dist, "quint", target)
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut args = vec!["check", "--json"];
    args.extend(libraries.iter().map(String::as_str));
    let output = cargo_backworks(&plugin_dir, &args);
    assert!(output.status.success(), "check failed: {}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    for (file, (target, format, architecture, os)) in
        report["files"].as_array().unwrap().iter().zip(targets)
    {
        assert_eq!(file["valid"], true, "{target}: {file:#}");
        assert_eq!(file["format"], format, "{target}");
        assert_eq!(file["architecture"], architecture, "{target}");
        assert_eq!(file["os"].as_str(), os, "{target}");
        assert_eq!(file["metadata"]["target"], target, "{target}");
        assert_eq!(file["findings"], json!([]), "{target}: {file:#}");
        for symbol in ["plugin_info", "plugin_vtable", "backworks_plugin_metadata"] {
            assert_eq!(
                file["exports"][symbol]["exported"], true,
                "{target} {symbol}"
            );
        }
        if format == "mach-o" {
            assert_eq!(file["install_name"], "@rpath/libquint.dylib", "{target}");
            let minimum = if architecture == "aarch64" {
                "11.0"
            } else {
                "10.12"
            };
            assert_eq!(file["min_os_version"], minimum, "{target}");
        }
    }
    // The manifest lists all five.
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dist.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["schema"], "backworks-build/1");
    assert_eq!(
        manifest["artifacts"].as_array().unwrap().len(),
        5,
        "{manifest:#}"
    );
}

/// `reproduce` rebuilds in a clean copy of the source and finds the same
/// bytes (the five release targets); after a source change it names
/// each library that differs, with both hashes, and exits with 1.
#[test]
fn reproduce_rebuilds_in_a_clean_checkout_and_reports_each_difference() {
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = new_plugin(dir.path(), "again");
    let dist = dir.path().join("dist");
    let output = build_release_targets(&plugin_dir, &dist);
    assert!(output.status.success(), "build failed: {}", stderr(&output));
    let manifest = dist.join("manifest.json");
    let reproduce = |dir: &Path| {
        cargo_backworks(
            dir,
            &[
                "reproduce",
                "--quiet",
                "--build-manifest",
                manifest.to_str().unwrap(),
                // Shares the compiled dependencies; the plugin itself is
                // rebuilt (its source is elsewhere).
                "--target-dir",
                shared_target_dir().to_str().unwrap(),
            ],
        )
    };
    let output = reproduce(&plugin_dir);
    assert!(
        output.status.success(),
        "reproduce failed: {}",
        stderr(&output)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).starts_with("reproduced 5 artifacts of "),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );

    // The source changes after the build: every library differs.
    let lib = plugin_dir.join("src/lib.rs");
    let mut source = std::fs::read_to_string(&lib).unwrap();
    source.push_str(
        "\n#[unsafe(no_mangle)]\npub extern \"C\" fn again_changed() -> u32 {\n    7\n}\n",
    );
    std::fs::write(&lib, source).unwrap();
    let output = reproduce(&plugin_dir);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(
        log.contains("error: 5 of 5 artifacts did not reproduce:"),
        "{log}"
    );
    let recorded: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    for artifact in recorded["artifacts"].as_array().unwrap() {
        let line = format!(
            "  {}: expected sha256 {}, got ",
            artifact["file"].as_str().unwrap(),
            artifact["sha256"].as_str().unwrap()
        );
        assert!(log.contains(&line), "{line} in {log}");
    }
}

/// A target whose standard library is not installed is reported with the
/// command that installs it (exit code 4), and the others are still built;
/// `--fail-fast` stops before building anything.
#[test]
fn a_missing_target_is_reported_and_the_others_are_built() {
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = new_plugin(dir.path(), "partial");
    let missing = "riscv64gc-unknown-linux-gnu";
    let library = dist_path("partial", TARGET);
    let _ = std::fs::remove_file(&library);
    let output = cargo_backworks(
        &plugin_dir,
        &["build", "--target", missing, "--target", TARGET],
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(
        log.contains(&format!(
            "error: cannot build for {missing}: the Rust standard library for {missing} is missing: install with `rustup target add {missing}`"
        )),
        "{log}"
    );
    assert!(
        log.contains("error: 1 target failed, 1 library built:"),
        "{log}"
    );
    assert!(library.is_file(), "{log}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(library.to_str().unwrap()),
        "{log}"
    );

    std::fs::remove_file(&library).unwrap();
    let output = cargo_backworks(
        &plugin_dir,
        &[
            "build",
            "--fail-fast",
            "--target",
            missing,
            "--target",
            TARGET,
        ],
    );
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("rustup target add {missing}")),
        "{}",
        stderr(&output)
    );
    assert!(!library.exists(), "--fail-fast built {}", library.display());
}

/// Without cargo-zigbuild, zig or a cross gcc on PATH (nor a python3 to
/// name its user scripts directory), an Apple target names what to
/// install, and where it looked.
#[test]
fn a_missing_cross_linker_names_its_install_command() {
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = new_plugin(dir.path(), "nolinker");
    // Only cargo's and rustc's directory on PATH: no zig, no cargo-zigbuild,
    // no python3.
    let cargo = Path::new(env!("CARGO"));
    let output = Command::new(env!("CARGO_BIN_EXE_cargo-backworks"))
        .args(["backworks", "build", "--target", "x86_64-apple-darwin"])
        .current_dir(&plugin_dir)
        .env("CARGO", cargo)
        .env("CARGO_TARGET_DIR", shared_target_dir())
        .env("PATH", cargo.parent().unwrap())
        .env_remove("CARGO_ZIGBUILD_ZIG_PATH")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    // The message names each directory it looked in: here PATH's one.
    let path_dir = cargo.parent().unwrap().display().to_string();
    insta::assert_snapshot!(
        "missing_linker",
        stderr(&output).replace(&path_dir, "[PATH]")
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
