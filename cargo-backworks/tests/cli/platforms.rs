//! The platforms this machine does not run, tried as their users would:
//! `backworks.exe` and `cargo-backworks.exe` (x86_64-pc-windows-gnu) under
//! wine, and an aarch64 Linux `backworks` under qemu-user with Debian's
//! arm64 C library (`backworks_test_support::platforms`). Each checks,
//! verifies and serves a plugin built for it by `cargo backworks build`,
//! and refuses a tampered one or one built for another target before
//! loading it; on Windows, a plugin file replaced while the host loads it
//! is never what it loads. Servers listen on 127.0.0.1 and are killed when dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use backworks_plugin_sdk::{Value, json};
use backworks_test_support::harness::{self, Server};
use backworks_test_support::platforms::{self, AARCH64_LINUX, CrossTools};
use backworks_test_support::{WINDOWS_GNU, workspace};

use crate::build::{cargo_backworks, stderr};

/// A hang bound for one command under an emulator, not a speed goal.
const HANG: Duration = Duration::from_secs(300);

/// The weather example built for `target` by `cargo backworks build`, and a
/// key pair (`release.key`, `release.pub`) in `dir` that signed it.
fn signed_weather(dir: &Path, target: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let dist = dir.join("dist");
    let example = workspace().join("examples/weather-plugin");
    let output = cargo_backworks(
        &example,
        &[
            "build",
            "--release",
            "--quiet",
            "--target",
            target,
            "--dist-dir",
            dist.to_str().unwrap(),
        ],
    );
    assert!(output.status.success(), "build failed: {}", stderr(&output));
    let output = cargo_backworks(dir, &["keygen", "--unencrypted", "release"]);
    assert!(output.status.success(), "keygen: {}", stderr(&output));
    let library = dist
        .join(target)
        .join(backworks_artifact::target::dist_file_name(
            "weather", "1.0.0", target,
        ));
    let output = cargo_backworks(
        dir,
        &["sign", "--key", "release.key", library.to_str().unwrap()],
    );
    assert!(output.status.success(), "sign: {}", stderr(&output));
    library
}

/// A copy of `library` (and its `.minisig`) in `dir` with one byte in its
/// middle flipped.
fn tampered_copy(library: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let copy = dir.join(library.file_name().unwrap());
    let mut bytes = std::fs::read(library).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&copy, bytes).unwrap();
    std::fs::copy(
        format!("{}.minisig", library.display()),
        format!("{}.minisig", copy.display()),
    )
    .unwrap();
    copy
}

/// The public key in `release.pub`, base64.
fn public_key(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("release.pub")).unwrap();
    text.lines()
        .last()
        .expect("a minisign public key file")
        .trim()
        .to_owned()
}

/// A `backworks.yaml` in `dir` serving `library` as `weather`, trusting
/// `release.pub`; paths as `path` writes them.
fn serve_config(dir: &Path, library: &Path, path: impl Fn(&Path) -> String) -> PathBuf {
    let config = dir.join(format!(
        "backworks-{}.yaml",
        library
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
    ));
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: \"127.0.0.1:0\"\n  hook_timeout: 30s\n  shutdown_timeout: 5s\ntrusted_keys:\n  - key: \"{}\"\nplugins:\n  weather:\n    type: external\n    path: '{}'\n",
            public_key(dir),
            path(library)
        ),
    )
    .unwrap();
    config
}

/// `GET /weather` from this (Linux) side.
fn get_weather(server: &Server) -> (u16, Value) {
    let response = harness::http_client()
        .get(format!("{}/weather", server.base))
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

/// The host's private copies of loaded plugins in wine's temporary
/// directory (`%TEMP%\\backworks-plugin-*\\weather.dll`).
fn private_copies(wine: &platforms::Wine) -> Vec<PathBuf> {
    let temp = wine.drive_c().join("users");
    let mut found = Vec::new();
    for user in std::fs::read_dir(&temp).into_iter().flatten().flatten() {
        for temp_dir in [
            user.path().join("Temp"),
            user.path().join("AppData/Local/Temp"),
        ] {
            for entry in std::fs::read_dir(&temp_dir).into_iter().flatten().flatten() {
                let copy = entry.path().join("weather.dll");
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("backworks-plugin-")
                    && copy.is_file()
                {
                    found.push(copy);
                }
            }
        }
    }
    found
}

/// The path of a Linux file as a Windows program under wine names it: drive
/// `Z:` is the Linux root.
fn windows_path(path: &Path) -> String {
    format!("Z:{}", path.display()).replace('/', "\\")
}

#[test]
fn windows_tools_under_wine_check_verify_and_serve_a_windows_plugin() {
    let CrossTools {
        backworks,
        cargo_backworks: tool,
    } = platforms::cross_tools(WINDOWS_GNU);
    let wine = platforms::wine();
    let dir = tempfile::tempdir().unwrap();
    let library = signed_weather(dir.path(), WINDOWS_GNU);
    let tampered = tampered_copy(&library, &dir.path().join("tampered"));
    let public = windows_path(&dir.path().join("release.pub"));

    let run = |args: &[&str]| {
        let mut command = wine.command(&tool);
        command.arg("backworks").args(args);
        harness::run_bounded(command, HANG)
    };
    let (code, out, err) = run(&["check", &windows_path(&library)]);
    assert_eq!(code, 0, "check under wine:\n{out}\n{err}");
    assert!(out.contains("plugin:    weather 1.0.0"), "{out}");
    assert!(out.contains(&format!("target:    {WINDOWS_GNU}")), "{out}");
    let (code, out, err) = run(&["verify", "--pub", &public, &windows_path(&library)]);
    assert_eq!(code, 0, "verify under wine:\n{out}\n{err}");
    let (code, out, err) = run(&["verify", "--pub", &public, &windows_path(&tampered)]);
    assert_eq!(
        code, 1,
        "a tampered copy verified under wine:\n{out}\n{err}"
    );
    assert!(err.contains("modified"), "{err}");

    // `backworks.exe serve` verifies, loads and answers a Linux client.
    let before = private_copies(&wine);
    let config = serve_config(dir.path(), &library, windows_path);
    let mut command = wine.command(&backworks);
    command
        .env("RUST_LOG", "info")
        .args(["serve", "--config", &windows_path(&config)]);
    let server = harness::start_command(command, "backworks listening on ");
    let (status, body) = get_weather(&server);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"temperature": 25, "humidity": 60}));

    // What was loaded is the host's private copy of the verified bytes,
    // held open sharing reading only: no Windows process can overwrite or
    // delete it while the host runs (there is no memfd on Windows).
    let held: Vec<PathBuf> = private_copies(&wine)
        .into_iter()
        .filter(|copy| !before.contains(copy))
        .collect();
    assert_eq!(held.len(), 1, "one private copy per load: {held:?}");
    let copy = &held[0];
    assert_eq!(
        std::fs::read(copy).unwrap(),
        std::fs::read(&library).unwrap()
    );
    let in_wine = windows_path(copy);
    for attempt in [
        format!("copy /y {} {in_wine}", windows_path(&tampered)),
        format!("del /f {in_wine}"),
    ] {
        let (_, out, err) = harness::run_bounded(wine.builtin(&["cmd", "/c", &attempt]), HANG);
        assert!(
            format!("{out}{err}").contains("Sharing violation"),
            "`{attempt}` was not refused:\n{out}\n{err}"
        );
    }
    assert_eq!(
        std::fs::read(copy).unwrap(),
        std::fs::read(&library).unwrap(),
        "the held copy changed"
    );
    let (status, _) = get_weather(&server);
    assert_eq!(status, 200);
    drop(server);

    // A tampered DLL is refused before it is loaded.
    let config = serve_config(dir.path(), &tampered, windows_path);
    let mut command = wine.command(&backworks);
    command.args(["serve", "--config", &windows_path(&config)]);
    let (code, _, err) = harness::run_bounded(command, HANG);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("modified"), "{err}");
    assert!(!err.contains("plugin verified and loaded"), "{err}");
}

#[test]
fn an_aarch64_host_under_qemu_serves_an_aarch64_plugin_and_refuses_an_x86_64_one() {
    let CrossTools { backworks, .. } = platforms::cross_tools(AARCH64_LINUX);
    let qemu = platforms::qemu_aarch64();
    let dir = tempfile::tempdir().unwrap();
    let library = signed_weather(dir.path(), AARCH64_LINUX);

    let config = serve_config(dir.path(), &library, |p| p.display().to_string());
    let mut command = qemu.command(&backworks);
    command
        .env("RUST_LOG", "info")
        .args(["serve", "--config"])
        .arg(&config);
    let server = harness::start_command(command, "backworks listening on ");
    let (status, body) = get_weather(&server);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"temperature": 25, "humidity": 60}));
    drop(server);

    // The x86_64 build of the same plugin, validly signed, is refused from
    // its record, before it is loaded.
    let other = dir.path().join("x86_64");
    let native = signed_weather(&other, "x86_64-unknown-linux-gnu");
    let config = serve_config(&other, &native, |p| p.display().to_string());
    let mut command = qemu.command(&backworks);
    command.args(["serve", "--config"]).arg(&config);
    let (code, _, err) = harness::run_bounded(command, HANG);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("was built for target `x86_64-unknown-linux-gnu`"),
        "{err}"
    );
    assert!(!err.contains("plugin verified and loaded"), "{err}");
}

/// The plugin file is replaced again and again, between the signed DLL and
/// the same DLL with one string altered (it would answer `temperaturX`), while
/// `backworks.exe` starts under wine: every start either serves the signed
/// bytes or refuses the altered ones for their signature. The bytes checked
/// are the bytes loaded (read once, then the held private copy), never the
/// path read again.
#[test]
fn a_windows_host_never_loads_a_plugin_file_replaced_while_it_loads() {
    let CrossTools { backworks, .. } = platforms::cross_tools(WINDOWS_GNU);
    let wine = platforms::wine();
    let dir = tempfile::tempdir().unwrap();
    let library = signed_weather(dir.path(), WINDOWS_GNU);
    let signed = std::fs::read(&library).unwrap();
    let at = signed
        .windows(b"temperature".len())
        .position(|w| w == b"temperature")
        .expect("the DLL holds its answer's key");
    let mut altered = signed.clone();
    altered[at..at + b"temperature".len()].copy_from_slice(b"temperaturX");

    let flipping = dir.path().join("flipping");
    std::fs::create_dir_all(&flipping).unwrap();
    let target = flipping.join(library.file_name().unwrap());
    std::fs::write(&target, &signed).unwrap();
    std::fs::copy(
        format!("{}.minisig", library.display()),
        format!("{}.minisig", target.display()),
    )
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, target) = (stop.clone(), target.clone());
        std::thread::spawn(move || {
            let staging = target.with_extension("tmp");
            let mut flips = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let bytes = if flips.is_multiple_of(2) {
                    &altered
                } else {
                    &signed
                };
                std::fs::write(&staging, bytes).unwrap();
                std::fs::rename(&staging, &target).unwrap();
                flips += 1;
            }
            flips
        })
    };
    let config = serve_config(dir.path(), &target, windows_path);
    let (mut served, mut refused) = (0, 0);
    for _ in 0..6 {
        let mut command = wine.command(&backworks);
        command
            .args(["serve", "--config", &windows_path(&config)])
            .stdin(std::process::Stdio::null());
        match harness::start_or_exit(command, "backworks listening on ", HANG) {
            Ok(server) => {
                let (status, body) = get_weather(&server);
                assert_eq!(status, 200, "{body}");
                assert_eq!(
                    body,
                    json!({"temperature": 25, "humidity": 60}),
                    "only the signed bytes may be served"
                );
                served += 1;
            }
            Err(harness::Exited { code, stderr: log }) => {
                assert_eq!(code, 1, "{log}");
                assert!(log.contains("modified"), "{log}");
                assert!(!log.contains("plugin verified and loaded"), "{log}");
                refused += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    assert!(flips > 2, "the file was replaced {flips} times");
    assert_eq!(served + refused, 6);
    eprintln!(
        "{served} starts served the signed bytes, {refused} refused the altered ones ({flips} replacements)"
    );
}
