//! `cargo backworks check` (alias `inspect`) end to end: the real binary on
//! real plugins built with cargo, cc and mingw-w64, on broken plugins, and
//! on files that are not plugins at all. Text and JSON reports are insta
//! snapshots, with the temporary directory, the host target triple, the SDK
//! version, addresses and sizes redacted.

use backworks_test_support::check_files as fixtures;

/// Shared with the publish tests.
pub(crate) use fixtures::with_record;

use std::path::{Path, PathBuf};
use std::process::Command;

use backworks_plugin_sdk::{SDK_VERSION, TARGET};
use serde_json::Value;

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn cargo_backworks(args: &[&str], files: &[PathBuf]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_cargo-backworks"))
        .arg("backworks")
        .args(args)
        .args(files)
        .output()
        .expect("run cargo-backworks");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

fn check(files: &[PathBuf]) -> Run {
    cargo_backworks(&["check"], files)
}

fn check_json(files: &[PathBuf]) -> (Run, Value) {
    let run = cargo_backworks(&["check", "--json"], files);
    let json = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON ({e}):\n{}", run.stdout));
    (run, json)
}

/// A temporary directory holding files under the names the snapshots show.
struct Stage {
    dir: tempfile::TempDir,
}

impl Stage {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("backworks-check")
                .tempdir()
                .expect("temp dir"),
        }
    }

    /// Copies `source` in as `name`.
    fn copy(&self, name: &str, source: &Path) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::copy(source, &path)
            .unwrap_or_else(|e| panic!("copy {} to {name}: {e}", source.display()));
        path
    }

    /// Writes `bytes` as `name`.
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write a test file");
        path
    }

    /// `text` with this directory, the host target and the SDK version
    /// replaced by placeholders, JSON addresses and sizes by `[address]`
    /// and `[size]`, and the glibc floor (which follows this machine's
    /// glibc) by `[GLIBC]` and `[LIB]`.
    fn redact(&self, text: &str) -> String {
        let text = redact_glibc_floor(text);
        let text = text
            .replace(&self.dir.path().display().to_string(), "[TMP]")
            .replace(TARGET, "[TARGET]")
            .replace(&format!("sdk {SDK_VERSION}"), "sdk [SDK]")
            .replace(
                &format!("\"sdk_version\": \"{SDK_VERSION}\""),
                "\"sdk_version\": \"[SDK]\"",
            );
        text.lines()
            .map(|line| {
                for field in ["address", "size"] {
                    let key = format!("\"{field}\": ");
                    if let Some(at) = line.find(&key) {
                        let value = &line[at + key.len()..];
                        if value.starts_with(|c: char| c.is_ascii_digit()) {
                            let comma = if value.ends_with(',') { "," } else { "" };
                            return format!("{}\"[{field}]\"{comma}", &line[..at + key.len()]);
                        }
                    }
                }
                line.to_owned()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The glibc floor redacted: `GLIBC_2.34` as `GLIBC_[GLIBC]`, `glibc 2.34`
/// as `glibc [GLIBC]`, the library of the text line and the `version` and
/// `library` of the JSON `glibc` object as `[GLIBC]` and `[LIB]`.
fn redact_glibc_floor(text: &str) -> String {
    fn after_prefix(line: &str, prefix: &str) -> String {
        let mut out = String::new();
        let mut rest = line;
        while let Some(at) = rest.find(prefix) {
            out.push_str(&rest[..at + prefix.len()]);
            rest = &rest[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if end > 0 {
                out.push_str("[GLIBC]");
            }
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }
    let mut in_glibc = false;
    text.lines()
        .map(|line| {
            let mut line = after_prefix(&after_prefix(line, "GLIBC_"), "glibc ");
            if let Some(at) = line.find("GLIBC_[GLIBC] of ") {
                let start = at + "GLIBC_[GLIBC] of ".len();
                let end = line[start..].find(')').map_or(line.len(), |e| start + e);
                line.replace_range(start..end, "[LIB]");
            }
            if line.trim_start().starts_with("\"glibc\": {") {
                in_glibc = true;
            } else if in_glibc {
                let trimmed = line.trim_start();
                let indent = &line[..line.len() - trimmed.len()];
                let comma = if trimmed.ends_with(',') { "," } else { "" };
                if trimmed.starts_with("\"version\": ") {
                    line = format!("{indent}\"version\": \"[GLIBC]\"{comma}");
                } else if trimmed.starts_with("\"library\": ") {
                    line = format!("{indent}\"library\": \"[LIB]\"{comma}");
                } else if trimmed.starts_with('}') {
                    in_glibc = false;
                }
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn codes(report: &Value) -> Vec<&str> {
    report["findings"]
        .as_array()
        .expect("findings is an array")
        .iter()
        .map(|f| f["code"].as_str().expect("code is a string"))
        .collect()
}

#[test]
fn the_rust_weather_plugin_is_valid() {
    let stage = Stage::new();
    let plugin = stage.copy("libweather.so", &fixtures::weather_plugin());
    let run = check(std::slice::from_ref(&plugin));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stderr, "");
    insta::assert_snapshot!("valid_rust_plugin", stage.redact(&run.stdout));

    let (run, json) = check_json(&[plugin]);
    assert_eq!(run.code, Some(0));
    let file = &json["files"][0];
    assert_eq!(file["valid"], true);
    assert_eq!(file["format"], "elf");
    assert_eq!(file["kind"], "shared-library");
    assert_eq!(file["metadata"]["name"], "weather");
    assert_eq!(file["metadata"]["target"], TARGET);
    assert_eq!(file["exports"]["plugin_info"]["kind"], "function");
    assert_eq!(file["exports"]["plugin_vtable"]["kind"], "function");
    assert_eq!(file["exports"]["backworks_plugin_metadata"]["kind"], "data");
    assert_eq!(file["findings"], Value::Array(Vec::new()));
}

#[test]
fn the_c_weather_plugin_is_valid_under_its_dist_name_too() {
    let stage = Stage::new();
    let plain = stage.copy("libweather_c.so", &fixtures::c_plugin());
    let dist = stage.copy(
        &format!("weather-c-1.0.0-{TARGET}.so"),
        &fixtures::c_plugin(),
    );
    let run = check(&[plain, dist]);
    assert_eq!(run.code, Some(0), "{run:?}");
    insta::assert_snapshot!("valid_c_plugin", stage.redact(&run.stdout));
}

#[test]
fn the_windows_dll_of_the_c_plugin_is_valid() {
    let stage = Stage::new();
    let dll = stage.copy(
        "weather-c-1.0.0-x86_64-pc-windows-gnu.dll",
        &fixtures::c_plugin_windows(),
    );
    let run = check(std::slice::from_ref(&dll));
    assert_eq!(run.code, Some(0), "{run:?}");
    insta::assert_snapshot!("valid_windows_dll", stage.redact(&run.stdout));

    let (_, json) = check_json(&[dll]);
    let file = &json["files"][0];
    assert_eq!(file["format"], "pe");
    assert_eq!(file["os"], "windows");
    assert_eq!(file["architecture"], "x86_64");
    assert_eq!(file["metadata"]["target"], fixtures::WINDOWS_GNU);
    assert_eq!(file["exports"]["plugin_vtable"]["section"], ".text");
    assert_eq!(file["exports"]["backworks_plugin_metadata"]["kind"], "data");

    // The same DLL named as an ELF library.
    let renamed = stage.copy("libweather_c.so", &fixtures::c_plugin_windows());
    let (run, json) = check_json(&[renamed]);
    assert_eq!(run.code, Some(1));
    assert_eq!(codes(&json["files"][0]), ["extension-mismatch"]);
}

#[test]
fn a_plugin_without_plugin_vtable() {
    let stage = Stage::new();
    let plugin = stage.copy("libmissing_vtable.so", &fixtures::missing_vtable());
    let run = check(&[plugin]);
    assert_eq!(run.code, Some(1), "{run:?}");
    insta::assert_snapshot!("missing_vtable", stage.redact(&run.stdout));
}

#[test]
fn a_plugin_whose_plugin_vtable_is_data() {
    let stage = Stage::new();
    let plugin = stage.copy("libvtable_is_data.so", &fixtures::vtable_is_data());
    let run = check(&[plugin]);
    assert_eq!(run.code, Some(1), "{run:?}");
    insta::assert_snapshot!("vtable_is_data", stage.redact(&run.stdout));
}

#[test]
fn a_plugin_built_for_a_future_abi() {
    let stage = Stage::new();
    let plugin = stage.copy("libabi_v2.so", &fixtures::abi_v2_plugin());
    let run = check(std::slice::from_ref(&plugin));
    assert_eq!(run.code, Some(1), "{run:?}");
    insta::assert_snapshot!("abi_v2", stage.redact(&run.stdout));
    let (_, json) = check_json(&[plugin]);
    assert_eq!(codes(&json["files"][0]), ["unsupported-abi"]);
    assert_eq!(json["files"][0]["metadata"]["abi_version"], 2);
}

#[test]
fn a_plain_shared_library_has_no_metadata() {
    let stage = Stage::new();
    let library = stage.copy("libno_metadata.so", &fixtures::no_metadata());
    let run = check(&[library]);
    assert_eq!(run.code, Some(1), "{run:?}");
    insta::assert_snapshot!("no_metadata", stage.redact(&run.stdout));
}

#[test]
fn a_record_claiming_another_target() {
    let stage = Stage::new();
    let plain = stage.copy("libwrong_target.so", &fixtures::wrong_target());
    let dist = stage.copy(
        "weather-c-1.0.0-aarch64-apple-darwin.dylib",
        &fixtures::wrong_target(),
    );
    let misnamed = stage.copy(
        "weather-c-1.0.0-x86_64-pc-windows-gnu.so",
        &fixtures::c_plugin(),
    );
    let run = check(&[plain, dist, misnamed]);
    assert_eq!(run.code, Some(1), "{run:?}");
    insta::assert_snapshot!("wrong_target", stage.redact(&run.stdout));
}

#[test]
fn the_record_is_found_through_the_symbol_when_the_section_is_renamed() {
    let (run, json) = check_json(&[fixtures::renamed_record_section()]);
    assert_eq!(run.code, Some(0), "{run:?}");
    let file = &json["files"][0];
    let location = file["metadata"]["location"].as_str().unwrap();
    assert!(
        location.starts_with("symbol `backworks_plugin_metadata` at 0x"),
        "{location}"
    );
    assert_eq!(file["metadata"]["name"], "weather-c");
    assert_eq!(
        file["exports"]["backworks_plugin_metadata"]["section"],
        ".rodata.backworks"
    );
}

#[test]
fn truncated_plugins() {
    let stage = Stage::new();
    let bytes = std::fs::read(fixtures::weather_plugin()).expect("read the weather plugin");
    let cuts = [4, 16, 64, 4096, bytes.len() / 2, bytes.len() - 1];
    let files: Vec<PathBuf> = cuts
        .iter()
        .enumerate()
        .map(|(i, &cut)| stage.write(&format!("libweather_cut{i}.so"), &bytes[..cut]))
        .collect();
    let run = check(&files);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(run.stderr, "", "no panic, no error");
    insta::assert_snapshot!("truncated", stage.redact(&run.stdout));
    let (_, json) = check_json(&files);
    for file in json["files"].as_array().unwrap() {
        assert_eq!(file["valid"], false, "{file}");
        assert_eq!(file["error"], Value::Null, "{file}");
    }
}

#[test]
fn random_bytes() {
    let stage = Stage::new();
    let files: Vec<PathBuf> = (0..8)
        .map(|seed| {
            let mut bytes = fixtures::random_bytes(seed + 1, 4096);
            if seed % 2 == 1 {
                // Random bytes behind an ELF header's magic.
                bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
            }
            stage.write(&format!("random{seed}.so"), &bytes)
        })
        .collect();
    let run = check(&files[..2]);
    assert_eq!(run.code, Some(1), "{run:?}");
    insta::assert_snapshot!("random_bytes", stage.redact(&run.stdout));
    let (run, json) = check_json(&files);
    assert_eq!(run.code, Some(1), "{run:?}");
    for file in json["files"].as_array().unwrap() {
        assert_eq!(file["valid"], false, "{file}");
        assert!(
            ["not-an-object", "malformed-object"].contains(&codes(file)[0]),
            "{file}"
        );
    }
}

#[test]
fn files_that_are_not_shared_libraries() {
    let stage = Stage::new();
    let files = [
        stage.copy("weather.o", &fixtures::object_file()),
        stage.copy("libweather.a", &fixtures::static_archive()),
        stage.write("README.md", b"# weather\n\nNot a plugin.\n"),
        stage.write("empty.so", b""),
        stage.write("weather.wasm", fixtures::WASM_MODULE),
    ];
    let run = check(&files);
    assert_eq!(run.code, Some(1), "{run:?}");
    insta::assert_snapshot!("not_shared_libraries", stage.redact(&run.stdout));
    let (_, json) = check_json(&files);
    let formats: Vec<&str> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["format"].as_str().unwrap())
        .collect();
    assert_eq!(formats, ["elf", "archive", "text", "empty", "wasm"]);
    assert_eq!(json["files"][0]["kind"], "relocatable");
    assert_eq!(
        json["files"][0]["metadata"]["name"], "weather-c",
        "an object file's record is still read"
    );
}

#[test]
fn a_system_library() {
    let library = fixtures::system_library();
    let (run, json) = check_json(std::slice::from_ref(&library));
    assert_eq!(run.code, Some(1), "{run:?}");
    let file = &json["files"][0];
    assert_eq!(file["format"], "elf");
    assert_eq!(file["kind"], "shared-library");
    assert!(
        file["exports"]["count"].as_u64().unwrap() > 500,
        "libc exports thousands of symbols: {}",
        file["exports"]["count"]
    );
    let codes = codes(file);
    assert_eq!(
        codes[..3],
        ["missing-symbol", "missing-symbol", "no-metadata"],
        "{file}"
    );
}

/// An 8 MiB section the loader never maps does not change the verdict (the
/// file is read whole: 512 MiB at most).
#[test]
fn a_large_plugin_is_valid() {
    let stage = Stage::new();
    let plugin = stage.copy("libweather_c.so", &fixtures::grown_plugin(8));
    assert!(std::fs::metadata(&plugin).unwrap().len() > 8 << 20);
    let (run, json) = check_json(&[plugin]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(json["files"][0]["valid"], true);
}

#[test]
fn the_json_report() {
    let stage = Stage::new();
    let files = [
        stage.copy("libweather.so", &fixtures::weather_plugin()),
        stage.copy("libmissing_vtable.so", &fixtures::missing_vtable()),
        stage.dir.path().join("missing.so"),
    ];
    let (run, json) = check_json(&files);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(json["schema"], "backworks-check/1");
    assert_eq!(json["exit_code"], 2);
    assert_eq!(
        json["summary"],
        serde_json::json!({"files": 3, "valid": 1, "invalid": 1, "unreadable": 1})
    );
    insta::assert_snapshot!("json_report", stage.redact(&run.stdout));
}

#[test]
fn unreadable_files_are_reported_and_the_others_still_checked() {
    let stage = Stage::new();
    let files = [
        stage.dir.path().join("missing.so"),
        stage.dir.path().to_owned(),
        stage.copy("libweather_c.so", &fixtures::c_plugin()),
    ];
    let run = check(&files);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(run.stderr, "");
    insta::assert_snapshot!("unreadable", stage.redact(&run.stdout));
}

#[test]
fn inspect_is_an_alias_of_check() {
    let plugin = fixtures::c_plugin();
    let check = check(std::slice::from_ref(&plugin));
    let inspect = cargo_backworks(&["inspect"], &[plugin]);
    assert_eq!(inspect.code, Some(0));
    assert_eq!(inspect.stdout, check.stdout);
}

#[test]
fn no_files_is_a_usage_error() {
    let run = cargo_backworks(&["check"], &[]);
    assert_eq!(run.code, Some(2));
    assert!(run.stderr.contains("<FILES>"), "{}", run.stderr);
    let help = cargo_backworks(&["--help"], &[]);
    assert!(
        help.stdout.contains("check") && help.stdout.contains("inspect"),
        "{}",
        help.stdout
    );
}

/// Issue 13, defect 7: a file truncated and rewritten while `check` reads it
/// (here, without pause, by another thread) gets a report or an error, never
/// a signal. When `check` mapped the file, a page that was cut off under
/// the map raised SIGBUS and the process died with exit 135.
#[test]
fn a_file_truncated_during_the_check_cannot_kill_it() {
    use std::os::unix::fs::FileExt;
    use std::os::unix::process::ExitStatusExt;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let stage = Stage::new();
    // The section table, which most steps of the check read, is at the end
    // of the file, past the first page that the truncation keeps.
    let bytes = std::fs::read(fixtures::c_plugin()).expect("read the C plugin");
    let path = stage.write("libweather_c.so", &bytes);
    const KEPT: u64 = 4096;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open the plugin for writing");
    let stop = AtomicBool::new(false);
    let rewrites = AtomicU64::new(0);
    // Before the fix, one run in 36 to 160 died of SIGBUS here.
    const RUNS: usize = 500;
    let outcomes = std::thread::scope(|scope| {
        scope.spawn(|| {
            // Cut to the first page (the ELF header), then the rest written
            // back: the file is cut or growing part of the time, whole the rest.
            while !stop.load(Ordering::Relaxed) {
                file.set_len(KEPT).expect("truncate the plugin");
                file.write_all_at(&bytes[KEPT as usize..], KEPT)
                    .expect("rewrite the plugin");
                rewrites.fetch_add(1, Ordering::Relaxed);
            }
        });
        let mut outcomes = [0usize; 3];
        for run in 0..RUNS {
            let output = Command::new(env!("CARGO_BIN_EXE_cargo-backworks"))
                .args(["backworks", "check"])
                .arg(&path)
                .output()
                .expect("run cargo-backworks");
            let status = output.status;
            if status.code().is_none() || status.code().is_some_and(|c| !(0..=2).contains(&c)) {
                stop.store(true, Ordering::Relaxed);
                panic!(
                    "run {run}: check ended with {status:?} (signal {:?}) after {} rewrites:\n{}{}",
                    status.signal(),
                    rewrites.load(Ordering::Relaxed),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            outcomes[status.code().unwrap() as usize] += 1;
        }
        stop.store(true, Ordering::Relaxed);
        outcomes
    });
    eprintln!(
        "outcomes (valid, not valid, unreadable): {outcomes:?}; {} rewrites",
        rewrites.load(Ordering::Relaxed)
    );
    assert!(
        outcomes[0] > 0 && outcomes[1] > 0,
        "in {RUNS} runs the check saw the file whole {} times and cut {} times: the race was not exercised",
        outcomes[0],
        outcomes[1]
    );
}

/// `cargo backworks check <args> <files>`, killed (and the test failed) if
/// it runs past 60 s: the bound only catches a hang.
fn check_bounded(files: &[PathBuf]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-backworks"));
    command.args(["backworks", "check"]).args(files);
    let output = crate::keys::run_bounded(command, std::time::Duration::from_secs(60));
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// Issue 13, defect 6 in `check`: a FIFO is reported as unreadable (exit
/// 2), naming what it is, without waiting for a writer.
#[test]
fn a_fifo_is_refused_not_waited_on() {
    let stage = Stage::new();
    let fifo = stage.dir.path().join("libweather_c.so");
    crate::keys::mkfifo(&fifo);
    let run = check_bounded(std::slice::from_ref(&fifo));
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(
        stage.redact(&run.stdout),
        "[TMP]/libweather_c.so: cannot be read\n  error: cannot check [TMP]/libweather_c.so: not a regular file (it is a FIFO); pass the path of a .so, .dll or .dylib file"
    );
}

/// Issue 13, defect 6 in `check`: it looked at the path's metadata, then
/// opened it blocking; a FIFO renamed over the plugin between the two hung
/// the check for ever. Here another thread swaps the path between the
/// plugin and a FIFO (each `rename` atomic) while `check` runs again and
/// again: every run ends, with a report of the plugin (exit 0) or a
/// refusal of the FIFO (exit 2), never a hang.
#[test]
fn a_fifo_swapped_in_during_the_check_cannot_hang_it() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let stage = Stage::new();
    let path = stage.dir.path().join("libweather_c.so");
    let regular = stage.copy("regular.so", &fixtures::c_plugin());
    let fifo = stage.dir.path().join("fifo.so");
    crate::keys::mkfifo(&fifo);
    let stop = AtomicBool::new(false);
    let swaps = AtomicU64::new(0);
    const RUNS: usize = 300;
    let outcomes = std::thread::scope(|scope| {
        scope.spawn(|| {
            let link = stage.dir.path().join("next.so");
            while !stop.load(Ordering::Relaxed) {
                for source in [&regular, &fifo] {
                    std::fs::hard_link(source, &link).expect("link");
                    std::fs::rename(&link, &path).expect("rename over the plugin");
                }
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        });
        let mut outcomes = [0usize; 3];
        for run in 0..RUNS {
            let result = std::panic::catch_unwind(|| check_bounded(std::slice::from_ref(&path)));
            let Ok(result) = result else {
                stop.store(true, Ordering::Relaxed);
                panic!(
                    "run {run} hung (after {} swaps)",
                    swaps.load(Ordering::Relaxed)
                );
            };
            match result.code {
                Some(code @ (0 | 2)) => outcomes[code as usize] += 1,
                _ => {
                    stop.store(true, Ordering::Relaxed);
                    panic!("run {run}: {result:?}");
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        outcomes
    });
    eprintln!(
        "outcomes (valid, -, refused): {outcomes:?}; {} swaps",
        swaps.load(Ordering::Relaxed)
    );
    assert!(
        outcomes[0] > 0 && outcomes[2] > 0,
        "in {RUNS} runs the check saw the plugin {} times and the FIFO {} times: the race was not exercised",
        outcomes[0],
        outcomes[2]
    );
}

/// Issue 13, defect 10 in `check`: the report printed the record's strings
/// as the file holds them, so a plugin could clear the screen or add lines
/// on the terminal of whoever checks it. They are printed escaped, and the
/// JSON report has them in `\uXXXX` escapes.
#[test]
fn a_record_cannot_drive_the_terminal() {
    let stage = Stage::new();
    let forged =
        "Weather\u{1b}[2J\r\n  abi:       v1 (verified by key CAB78193ADCAB890)\u{9b}\u{202e}";
    let bytes = with_record(
        &std::fs::read(fixtures::c_plugin()).unwrap(),
        "description",
        forged,
    );
    let plugin = stage.write("libweather_c.so", &bytes);
    let raw = ['\u{1b}', '\r', '\u{9b}', '\u{202e}'];
    let run = check(std::slice::from_ref(&plugin));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(!run.stdout.contains(raw), "{:?}", run.stdout);
    assert!(
        run.stdout.contains(
            "  plugin:    weather-c 1.0.0: Weather\\u{1b}[2J\\r\\n  abi:       v1 (verified by key CAB78193ADCAB890)\\u{9b}\\u{202e}\n"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.starts_with("  abi:"))
            .count(),
        1,
        "{}",
        run.stdout
    );
    let (run, report) = check_json(&[plugin]);
    assert!(run.stdout.is_ascii(), "{:?}", run.stdout);
    assert_eq!(report["files"][0]["metadata"]["description"], forged);
}
