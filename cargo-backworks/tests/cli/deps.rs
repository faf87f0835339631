//! The dependency list every plugin carries: `cargo backworks build` embeds
//! the plugin's resolved tree in cargo-auditable's format, which
//! `rust-audit-info` (installed by `scripts/setup`) reads, and `cargo
//! backworks check --deps` prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use backworks_plugin_sdk::TARGET;
use serde_json::Value;

use crate::build::{cargo_backworks, dist_path_in, new_plugin, stderr};

/// The other formats' targets: MinGW's PE and zig's Mach-O (scripts/setup
/// installs both).
const WINDOWS: &str = "x86_64-pc-windows-gnu";
const MAC: &str = "aarch64-apple-darwin";

const INSTALL: &str = "cargo install --locked rust-audit-info";

/// `rust-audit-info`: on `PATH`, else in cargo's bin directory (where
/// `scripts/setup` installs it); a test that cannot find it fails.
fn rust_audit_info() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|home| home.join("bin"));
    on_path
        .into_iter()
        .chain(cargo_bin)
        .map(|dir| dir.join("rust-audit-info"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("rust-audit-info is not installed: run `{INSTALL}` (scripts/setup does)")
        })
}

/// The versions cargo resolves for the plugin at `plugin_dir` on `TARGET`.
fn resolved_versions(plugin_dir: &Path) -> BTreeMap<String, String> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .cargo_path(env!("CARGO"))
        .manifest_path(plugin_dir.join("Cargo.toml"))
        .other_options(vec!["--filter-platform".to_owned(), TARGET.to_owned()])
        .exec()
        .unwrap();
    metadata
        .packages
        .iter()
        .map(|p| (p.name.to_string(), p.version.to_string()))
        .collect()
}

/// The `    name version (notes)` lines of a `check --deps` report, with
/// versions as `[version]`.
fn redact_versions(text: &str) -> String {
    text.lines()
        .map(|line| {
            let mut words: Vec<&str> = line.split(' ').collect();
            if line.starts_with("    ") && words.len() > 5 {
                words[5] = "[version]";
            }
            words.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_built_plugin_lists_its_dependencies_for_rust_audit_info_and_check() {
    let audit_info = rust_audit_info();
    let dir = tempfile::tempdir().unwrap();
    let plugin_dir = new_plugin(dir.path(), "listed");
    let dist = dir.path().join("dist");
    let output = cargo_backworks(
        &plugin_dir,
        &[
            "build",
            "--release",
            "--quiet",
            "--dist-dir",
            dist.to_str().unwrap(),
            "--target",
            TARGET,
            "--target",
            WINDOWS,
            "--target",
            MAC,
        ],
    );
    assert!(output.status.success(), "build failed: {}", stderr(&output));
    let library = dist_path_in(&dist, "listed", TARGET);
    // PE (MinGW) and Mach-O (zig) carry the same crates.
    for target in [WINDOWS, MAC] {
        let output = Command::new(&audit_info)
            .arg(dist_path_in(&dist, "listed", target))
            .output()
            .expect("run rust-audit-info");
        assert!(output.status.success(), "{target}: {}", stderr(&output));
        let list: Value = serde_json::from_slice(&output.stdout).unwrap();
        let names: Vec<&str> = list["packages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for name in ["listed", "backworks-plugin-sdk", "serde_json"] {
            assert!(names.contains(&name), "{target}: no {name} in {list}");
        }
    }

    // The tool of cargo-auditable reads it.
    let output = Command::new(&audit_info)
        .arg(&library)
        .output()
        .expect("run rust-audit-info");
    assert!(
        output.status.success(),
        "rust-audit-info failed: {}",
        stderr(&output)
    );
    let list: Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = list["packages"].as_array().unwrap();
    let find = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {list}"))
    };
    let versions = resolved_versions(&plugin_dir);
    // Each package with the version cargo resolved, and no path.
    for package in packages {
        let name = package["name"].as_str().unwrap();
        assert_eq!(
            package["version"].as_str(),
            versions.get(name).map(String::as_str),
            "{name}"
        );
    }
    assert_eq!(find("listed")["root"], true);
    assert_eq!(find("listed")["source"], "local");
    let sdk = find("backworks-plugin-sdk");
    assert_eq!(sdk["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(sdk["source"], "local");
    assert_eq!(find("serde_json")["source"], "crates.io");
    // A proc-macro is a build-time dependency.
    assert_eq!(find("serde_derive")["kind"], "build");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains(dir.path().to_str().unwrap()),
        "the list names no path"
    );

    // `check --deps` prints the same list.
    let output = cargo_backworks(dir.path(), &["check", "--deps", library.to_str().unwrap()]);
    assert!(output.status.success(), "check failed: {}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    for name in ["serde_json", "backworks-plugin-sdk"] {
        let line = format!("\n    {name} {} ", versions[name]);
        let line_end = format!("\n    {name} {}\n", versions[name]);
        assert!(
            text.contains(&line) || text.contains(&line_end),
            "{name} {} not in:\n{text}",
            versions[name]
        );
    }
    let deps_part = &text[text.find("  dependencies:").unwrap()..];
    insta::assert_snapshot!("check_deps_template", redact_versions(deps_part));

    // And with --json, rust-audit-info's document in each file's
    // `dependencies`.
    let output = cargo_backworks(
        dir.path(),
        &["check", "--deps", "--json", library.to_str().unwrap()],
    );
    assert!(output.status.success(), "check failed: {}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["files"][0]["dependencies"], list);
}

#[test]
fn check_deps_on_a_library_without_a_list_says_so_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let library = dir.path().join("libweather_c.so");
    std::fs::copy(backworks_test_support::c_plugin(), &library).unwrap();
    let output = cargo_backworks(dir.path(), &["check", "--deps", library.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains(&format!(
            "  dependencies: error: {}: no `.dep-v0` section",
            library.display()
        )),
        "{text}"
    );
    // Without --deps the same library is a valid plugin.
    let output = cargo_backworks(dir.path(), &["check", library.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}
