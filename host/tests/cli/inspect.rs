//! `backworks plugins inspect` and `--help`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness;

fn backworks(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_backworks"))
        .args(args)
        .output()
        .expect("run backworks")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The C weather plugin, compiled with the system C compiler into `dir`.
fn c_plugin(dir: &Path) -> PathBuf {
    let out = dir.join(format!("libweather_c.{}", std::env::consts::DLL_EXTENSION));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-shared", "-fPIC", "-Wall", "-Werror", "-I"])
        .arg(workspace().join("sdk/include"))
        .arg("-o")
        .arg(&out)
        .arg(workspace().join("examples/c-plugin/weather.c"))
        .status()
        .expect("run the C compiler");
    assert!(status.success());
    out
}

#[test]
fn help_lists_commands_and_exit_codes() {
    let output = backworks(&["--help"]);
    assert!(output.status.success());
    insta::assert_snapshot!("help", text(&output.stdout));
    let output = backworks(&["plugins", "inspect", "--help"]);
    insta::assert_snapshot!("inspect_help", text(&output.stdout));
    for (name, args) in [
        ("serve_help", &["serve", "--help"][..]),
        ("plugins_help", &["plugins", "--help"]),
        ("search_help", &["plugins", "search", "--help"]),
        ("info_help", &["plugins", "info", "--help"]),
        ("install_help", &["plugins", "install", "--help"]),
        ("update_help", &["plugins", "update", "--help"]),
        ("lock_help", &["plugins", "lock", "--help"]),
        ("remove_help", &["plugins", "remove", "--help"]),
    ] {
        let output = backworks(args);
        assert!(output.status.success(), "{args:?}");
        insta::assert_snapshot!(name, text(&output.stdout));
    }
}

#[test]
fn inspect_reads_a_plugin_without_loading_it() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = c_plugin(dir.path());
    let output = backworks(&["plugins", "inspect", "--json", plugin.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    insta::assert_json_snapshot!("inspect_json", report, {
        ".file" => "[plugin path]",
        ".sdk_version" => "[sdk version]",
        ".target" => "[host target]",
        ".floor.glibc" => "[this machine's glibc floor]",
    });

    let output = backworks(&["plugins", "inspect", plugin.to_str().unwrap()]);
    assert!(output.status.success());
    let human = text(&output.stdout)
        .replace(plugin.to_str().unwrap(), "[plugin path]")
        .replace(backworks_plugin_sdk::TARGET, "[host target]")
        .replace(backworks_plugin_sdk::SDK_VERSION, "[sdk version]");
    let human = human
        .lines()
        .map(|line| {
            if line.starts_with("floor:       glibc 2.") {
                "floor:       glibc [this machine's glibc floor]"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    insta::assert_snapshot!("inspect_text", human);
}

/// Issue 17: a plugin needing `GLIBC_2.99` is not loadable here, and
/// `plugins inspect` says why, naming the need and this system's glibc.
#[test]
fn inspect_names_a_glibc_floor_this_system_cannot_meet() {
    let plugin = backworks_test_support::fixtures::c_plugin_needing_glibc_2_99();
    let output = backworks(&["plugins", "inspect", "--json", plugin.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["loadable"], false, "{report}");
    assert_eq!(
        report["floor"]["glibc"],
        serde_json::json!({"version": "2.99", "symbol_version": "GLIBC_2.99", "library": "libc.so.6"})
    );
    let problem = report["problem"].as_str().unwrap();
    assert!(
        problem.starts_with(
            "it needs glibc 2.99 (symbol version GLIBC_2.99 of libc.so.6) but this system has glibc 2."
        ),
        "{problem}"
    );
    let output = backworks(&["plugins", "inspect", plugin.to_str().unwrap()]);
    let human = text(&output.stdout);
    assert!(
        human.contains("\nfloor:       glibc 2.99 (symbol version GLIBC_2.99 of libc.so.6)\n"),
        "{human}"
    );
    assert!(
        human.contains("\nverdict:     not loadable by this host: it needs glibc 2.99"),
        "{human}"
    );
}

#[test]
fn inspect_gives_a_verdict_on_files_that_are_not_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let text_file = dir.path().join("notes.so");
    std::fs::write(&text_file, "not a library\n").unwrap();
    let empty = dir.path().join("empty.so");
    std::fs::write(&empty, "").unwrap();
    let cases = [
        ("text_file", text_file),
        ("empty_file", empty),
        // An ELF file without a record: this test binary itself.
        ("executable", std::env::current_exe().unwrap()),
    ];
    for (name, path) in cases {
        let output = backworks(&["plugins", "inspect", path.to_str().unwrap()]);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{name}: {}",
            text(&output.stderr)
        );
        let message = text(&output.stderr).replace(path.to_str().unwrap(), "[path]");
        insta::assert_snapshot!(format!("not_a_plugin_{name}"), message);
    }
}

#[test]
fn inspect_of_a_missing_file_is_an_io_error() {
    let output = backworks(&["plugins", "inspect", "/nonexistent/plugin.so"]);
    assert_eq!(output.status.code(), Some(2));
    insta::assert_snapshot!("missing_file", text(&output.stderr));
}

/// Issue 13, defect 6: `plugins inspect` of a FIFO (which blocked forever)
/// or of a device (read until memory ran out) exits 1 at once, naming the
/// file and that it is not a regular file.
#[test]
fn inspecting_a_fifo_or_a_device_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("libfifo.so");
    crate::serve::mkfifo(&fifo);
    let zero = dir.path().join("libzero.so");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    for (file, kind) in [(&fifo, "a FIFO"), (&zero, "a character device")] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_backworks"));
        command.args(["plugins", "inspect"]).arg(file);
        let (code, _, stderr) = crate::serve::run_bounded(command);
        assert_eq!(code, 1, "{stderr}");
        let expected = format!(
            "error: refusing {}: not a regular file (it is {kind})",
            file.display()
        );
        assert!(
            stderr.contains(&expected),
            "expected `{expected}` in:\n{stderr}"
        );
    }
}

/// Issue 13, defect 10: `plugins inspect` printed the record's strings as
/// the file holds them, so a plugin could clear the screen or add a line
/// such as "verified by key ..." on the terminal of whoever inspects it.
/// Now every string of the record is printed escaped, on its own line, and
/// `--json` writes the same strings in `\uXXXX` escapes.
#[test]
fn a_record_cannot_drive_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = c_plugin(dir.path());
    let forged = "weather\u{1b}[2J\r\nverdict:     verified by key CAB78193ADCAB890\u{9b}\u{202e}";
    let escaped =
        "weather\\u{1b}[2J\\r\\nverdict:     verified by key CAB78193ADCAB890\\u{9b}\\u{202e}";
    let bytes =
        crate::support::with_record(&std::fs::read(&plugin).unwrap(), "description", forged);
    let bytes = crate::support::with_record(&bytes, "name", "we\u{1b}]0;title\u{7}");
    std::fs::write(&plugin, bytes).unwrap();
    let raw = ['\u{1b}', '\r', '\u{7}', '\u{9b}', '\u{202e}'];

    let output = backworks(&["plugins", "inspect", plugin.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let out = text(&output.stdout);
    assert!(!out.contains(raw), "{out:?}");
    assert_eq!(out.lines().count(), 9, "one line per field:\n{out}");
    assert!(
        out.contains(&format!("\ndescription: {escaped}\n")),
        "{out}"
    );
    assert!(
        out.contains("\nplugin:      we\\u{1b}]0;title\\u{7} 1.0.0\n"),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("verdict:")).count(),
        1,
        "{out}"
    );

    let output = backworks(&["plugins", "inspect", "--json", plugin.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let out = text(&output.stdout);
    assert!(out.is_ascii(), "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["description"], forged);
    assert_eq!(report["name"], "we\u{1b}]0;title\u{7}");
}

/// `--deps`: the dependency list of the `.dep-v0` section (added here to the
/// C plugin with objcopy, as `cargo backworks build` links it into a Rust
/// plugin), or why there is none: then exit code 1, as `cargo backworks
/// check --deps`, with the same message naming the file.
#[test]
fn inspect_deps_prints_the_dependency_list() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = c_plugin(dir.path());
    let path = plugin.to_str().unwrap();
    let missing = format!(
        "{path}: no `.dep-v0` section: the library carries no dependency list (it was built by another tool than `cargo backworks build`, or before builds embedded one)"
    );
    let output = backworks(&["plugins", "inspect", "--deps", path]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.ends_with(&format!("\ndependencies: error: {missing}\n")),
        "{stdout}"
    );
    let output = backworks(&["plugins", "inspect", "--deps", "--json", path]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        json["dependencies"],
        serde_json::json!({ "error": missing })
    );
    // The same message, and exit code, from `cargo backworks check --deps`
    // (the library as such is valid).
    let check = Command::new(crate::marketplace_flow::cargo_backworks_binary())
        .args(["backworks", "check", "--deps", path])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains(&format!("  dependencies: error: {missing}\n")),
        "{}",
        text(&check.stdout)
    );
    // Without --deps, exit code 0.
    let output = backworks(&["plugins", "inspect", path]);
    assert!(output.status.success(), "{}", text(&output.stderr));

    let listed = harness::with_dependency_list(
        &plugin,
        harness::DEPENDENCY_LIST,
        dir.path(),
        "libweather_listed.so",
    );
    let listed = listed.to_str().unwrap();
    let output = backworks(&["plugins", "inspect", "--deps", listed]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.ends_with(
            "dependencies: 3 packages (section `.dep-v0`)\n  weather 1.0.0 (local, root)\n  proc-macro2 1.0.101 (build)\n  serde_json 1.0.145\n"
        ),
        "{stdout}"
    );
    let output = backworks(&["plugins", "inspect", "--deps", "--json", listed]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let expected: serde_json::Value = serde_json::from_str(harness::DEPENDENCY_LIST).unwrap();
    assert_eq!(json["dependencies"], expected);
    // Without --deps, no list.
    let output = backworks(&["plugins", "inspect", "--json", listed]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(json.get("dependencies").is_none(), "{json}");
}
