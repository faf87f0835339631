//! Build caches that hold: plugins sharing a target directory share their
//! compiled dependencies (the flags naming a plugin's directory reach its
//! own crate only), and a plain `cargo build` of the same plugin rebuilds
//! nothing of `cargo backworks build`'s but the plugin's crate. Counted from
//! cargo's own reports (the `Compiled N of M crates` line `build` prints
//! from cargo's `compiler-artifact` messages, and those messages
//! themselves), never timed.

use std::path::Path;
use std::process::{Command, Output};

use backworks_plugin_sdk::{TARGET, Value};

use crate::build::{cargo_backworks, new_plugin, shared_target_dir, stderr};

/// What the cargo runs of a `build` compiled, and how many crates they
/// reported in all, from its `   Compiled 1 of 24 crates: demo` lines.
fn compiled_by_build(output: &Output) -> (Vec<String>, usize) {
    let log = stderr(output);
    let mut compiled = Vec::new();
    let mut total = 0;
    let mut runs = 0;
    for line in log.lines() {
        let Some(rest) = line.strip_prefix("   Compiled ") else {
            continue;
        };
        runs += 1;
        let (counts, names) = rest.split_once(" crates").expect("a count of crates");
        let (_, of) = counts.split_once(" of ").expect("`N of M`");
        total += of.parse::<usize>().expect("a number of crates");
        if let Some(names) = names.strip_prefix(": ") {
            compiled.extend(names.split(", ").map(str::to_owned));
        } else {
            assert_eq!(names, " (all fresh)", "{line}");
        }
    }
    assert_eq!(runs, 1, "one cargo run for one plugin and target: {log}");
    (compiled, total)
}

/// `cargo backworks build` of the plugin in `dir`, for the host's target:
/// what cargo compiled, and how many crates it reported.
fn build(dir: &Path) -> (Vec<String>, usize) {
    let output = cargo_backworks(dir, &["build", "--target", TARGET]);
    assert!(output.status.success(), "build failed: {}", stderr(&output));
    compiled_by_build(&output)
}

/// A plain `cargo build --target <host>` of the plugin in `dir`, into the
/// shared target directory: the crates cargo compiled, from the
/// `compiler-artifact` messages that are not `fresh`, and how many there
/// were in all.
fn plain_cargo_build(dir: &Path) -> (Vec<String>, usize) {
    let output = Command::new(env!("CARGO"))
        .args([
            "build",
            "--lib",
            "--message-format=json",
            "--target",
            TARGET,
        ])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", shared_target_dir())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("run cargo");
    assert!(output.status.success(), "cargo failed: {}", stderr(&output));
    let artifacts: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .collect();
    let compiled = artifacts
        .iter()
        .filter(|artifact| artifact["fresh"] == false)
        .map(|artifact| artifact["target"]["name"].as_str().unwrap().to_owned())
        .collect();
    (compiled, artifacts.len())
}

#[test]
fn plugins_sharing_a_target_dir_rebuild_only_their_own_crate() {
    let dir = tempfile::tempdir().unwrap();
    let first = new_plugin(dir.path(), "cache_a");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let second = new_plugin(&elsewhere, "cache_b");

    // The first may compile the dependencies (the other tests may have).
    build(&first);
    // The second plugin, in another directory: its crate only.
    let (compiled, total) = build(&second);
    assert_eq!(compiled, ["cache_b"], "of {total}");
    assert!(total > 10, "the dependencies were reported: {total}");
    // And back: nothing at all.
    let (compiled, total) = build(&first);
    assert_eq!(compiled, Vec::<String>::new(), "of {total}");
    assert!(total > 10, "the dependencies were reported: {total}");
}

#[test]
fn plain_cargo_build_and_backworks_build_rebuild_only_the_plugin_for_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = new_plugin(dir.path(), "cache_plain");
    build(&plugin);
    // The dependencies without the remaps: compiled once (unless an earlier
    // run did), kept beside the remapped ones.
    plain_cargo_build(&plugin);
    // Both write the plugin's library to the same place, so each rebuilds
    // it (with its flags); never a dependency.
    for _ in 0..2 {
        let (compiled, total) = build(&plugin);
        assert_eq!(compiled, ["cache_plain"], "of {total}");
        let (compiled, total) = plain_cargo_build(&plugin);
        assert_eq!(compiled, ["cache_plain"], "of {total}");
        assert!(total > 10, "the dependencies were reported: {total}");
    }
}
