//! Platform floors a plugin asks for in `[package.metadata.backworks]`:
//! `glibc = "2.17"` links every Linux GNU target with zig against that
//! glibc (the host's target too), `macos = "10.13"` sets the minimum macOS
//! of the Apple targets; `check` reads both back from the bytes, and the
//! built library loads. An invalid key names the manifest and the key.

use std::path::Path;

use backworks_artifact::floor::Version;
use backworks_plugin_sdk::{TARGET, Value};

use crate::build::{cargo_backworks, dist_path_in, load, new_plugin, stderr};

/// Puts `keys` at the top of the `[package.metadata.backworks]` table of
/// the plugin in `plugin_dir`.
fn ask_for(plugin_dir: &Path, keys: &str) {
    let manifest = plugin_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let table = "[package.metadata.backworks]\n";
    assert!(text.contains(table), "{text}");
    std::fs::write(&manifest, text.replace(table, &format!("{table}{keys}"))).unwrap();
}

/// The glibc floor `check --json` reads from `library`, if any.
fn glibc_floor(report: &Value) -> Option<Version> {
    report["floor"]["glibc"]["version"]
        .as_str()
        .map(|v| v.parse().unwrap())
}

#[test]
fn a_requested_floor_is_what_the_libraries_need_and_the_host_build_loads() {
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = new_plugin(dir.path(), "floored");
    ask_for(&plugin_dir, "glibc = \"2.17\"\nmacos = \"10.13\"\n");
    let dist = dir.path().join("dist");
    let mac = "x86_64-apple-darwin";
    let output = cargo_backworks(
        &plugin_dir,
        &[
            "build",
            "--release",
            "--dist-dir",
            dist.to_str().unwrap(),
            "--target",
            TARGET,
            "--target",
            mac,
        ],
    );
    let log = stderr(&output);
    assert!(output.status.success(), "build failed: {log}");
    // The host's own target is linked by zig, not by the system's linker.
    assert!(
        log.contains(&format!("for {TARGET} (release, cargo zigbuild (zig ")),
        "{log}"
    );
    assert!(log.contains("loads on macOS 10.13 or later"), "{log}");

    let linux = dist_path_in(&dist, "floored", TARGET);
    let apple = dist_path_in(&dist, "floored", mac);
    let output = cargo_backworks(
        &plugin_dir,
        &[
            "check",
            "--json",
            linux.to_str().unwrap(),
            apple.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "check failed: {}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let floor = glibc_floor(&report["files"][0]).expect("a glibc floor");
    assert!(
        floor <= Version::new(2, 17, 0),
        "needs glibc {floor}: {report:#}"
    );
    assert_eq!(report["files"][1]["min_os_version"], "10.13", "{report:#}");

    // Built without the floor, the same source on this machine (glibc 2.36)
    // needs a newer glibc: the floor is what made the difference.
    let unfloored = new_plugin(dir.path(), "unfloored");
    let plain = dir.path().join("plain");
    let output = cargo_backworks(
        &unfloored,
        &["build", "--release", "--dist-dir", plain.to_str().unwrap()],
    );
    assert!(output.status.success(), "build failed: {}", stderr(&output));
    let library = dist_path_in(&plain, "unfloored", TARGET);
    let output = cargo_backworks(&unfloored, &["check", "--json", library.to_str().unwrap()]);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let native = glibc_floor(&report["files"][0]).expect("a glibc floor");
    assert!(native > Version::new(2, 17, 0), "{report:#}");

    // The floored library loads and answers.
    let plugin = load(&linux);
    assert_eq!(plugin.name(), "floored");
    plugin.initialize(c"{}").unwrap();
    plugin.health_check().unwrap();
    assert!(plugin.shutdown().is_ok());
}

/// A floor the build cannot keep is refused before cargo runs, naming the
/// manifest and the key (exit code 2).
#[test]
fn an_invalid_floor_names_the_manifest_and_the_key() {
    for (name, keys) in [
        ("glibc_too_old", "glibc = \"2.12\"\n"),
        ("glibc_number", "glibc = 2.17\n"),
        ("macos_words", "macos = \"sonoma\"\n"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let plugin_dir = new_plugin(dir.path(), "unkept");
        ask_for(&plugin_dir, keys);
        let dist = dir.path().join("dist");
        let output = cargo_backworks(
            &plugin_dir,
            &["build", "--dist-dir", dist.to_str().unwrap()],
        );
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(!dist.exists(), "{name}: built despite the error");
        let root = dir.path().canonicalize().unwrap();
        insta::assert_snapshot!(
            format!("invalid_floor_{name}"),
            stderr(&output).replace(root.to_str().unwrap(), "[DIR]")
        );
    }
}
