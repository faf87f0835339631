//! The marketplace end to end, with the binaries a user runs and nothing
//! else: `cargo backworks` builds, signs and publishes the weather plugin to
//! `backworks marketplace serve` over HTTP on 127.0.0.1; `backworks plugins
//! search` finds it; `backworks serve` installs it from the registry at
//! start and answers `/weather`; then 1.0.1 is published while a load
//! runs, and the server's automatic updater swaps it in with no failed
//! request. The load is counted, not timed (see `load`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use backworks_plugin_sdk::{TARGET, Value, json};

use crate::harness::{self, Server};
use crate::load::{Answer, HANG, Load};
use crate::support;

/// The publish token of the registry under test.
const TOKEN: &str = "marketplace-flow-token";

/// The `cargo-backworks` binary of this workspace, built once per run into
/// the target directory the `backworks` binary under test lives in (a
/// no-op when `cargo test --workspace` built it already).
pub(crate) fn cargo_backworks_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let backworks = Path::new(env!("CARGO_BIN_EXE_backworks"));
        let profile_dir = backworks.parent().unwrap();
        let target_dir = profile_dir.parent().unwrap();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(support::workspace())
            .args([
                "build",
                "--locked",
                "-p",
                "cargo-backworks",
                "--bin",
                "cargo-backworks",
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .status()
            .unwrap();
        assert!(status.success(), "cannot build cargo-backworks");
        profile_dir.join(format!("cargo-backworks{}", std::env::consts::EXE_SUFFIX))
    })
}

/// `cargo backworks <args>` in `dir`, as cargo runs the subcommand; plugin
/// builds share the fixtures' target directory.
fn cargo_backworks(dir: &Path, args: &[&str]) -> Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo_backworks_binary())
        .arg("backworks")
        .args(args)
        .current_dir(dir)
        .env("CARGO", cargo)
        .env("CARGO_TARGET_DIR", support::fixture_target_dir())
        .env("BACKWORKS_REGISTRY_TOKEN", TOKEN)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo backworks {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The weather example as package `version`, answering `temperature`: a
/// copy of `examples/weather-plugin` under `root` with the version and the
/// answer changed.
fn weather_package(root: &Path, version: &str, temperature: u32) -> PathBuf {
    harness::weather_copy(
        &root.join(format!("weather-{version}")),
        version,
        None,
        |source| {
            harness::edit(
                &source,
                "\"temperature\": 25",
                &format!("\"temperature\": {temperature}"),
            )
        },
    )
}

/// Builds (release, this host's target) and signs the package at `package`
/// into `dist`; returns the signed library.
fn build_and_sign(root: &Path, package: &Path, dist: &Path, version: &str) -> PathBuf {
    let dist_arg = dist.to_str().unwrap();
    cargo_backworks(
        package,
        &[
            "build",
            "--release",
            "--quiet",
            "--target",
            TARGET,
            "--dist-dir",
            dist_arg,
        ],
    );
    let library = dist
        .join(TARGET)
        .join(format!("weather-{version}-{TARGET}.so"));
    assert!(library.is_file(), "{} was not built", library.display());
    let key = root.join("backworks.key");
    cargo_backworks(
        package,
        &[
            "sign",
            library.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    library
}

fn publish(root: &Path, registry: &str, package: &Path, dist: &Path) -> String {
    let manifest = package.join("Cargo.toml");
    let public = root.join("backworks.pub");
    let output = cargo_backworks(
        root,
        &[
            "publish",
            "--quiet",
            "--registry",
            registry,
            "--manifest-path",
            manifest.to_str().unwrap(),
            "--dist-dir",
            dist.to_str().unwrap(),
            "--public-key",
            public.to_str().unwrap(),
        ],
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `backworks marketplace serve` of the registry under `root` (its key
/// `registry.key`, publisher `backworks.pub`) on 127.0.0.1.
fn start_registry(root: &Path) -> Server {
    let mut command = harness::backworks();
    command
        .current_dir(root)
        .env("BACKWORKS_REGISTRY_TOKEN", TOKEN)
        .args(["marketplace", "serve", "--dir", "registry"])
        .args(["--key", "registry.key", "--publisher-key", "backworks.pub"])
        .args(["--listen", "127.0.0.1:0"]);
    harness::start_command(command, "marketplace listening on ")
}

/// `<app>/backworks.yaml`: the weather plugin (`1.0.0` and patches) from the
/// registry at `registry`, updated automatically every `check_interval`,
/// trusting the keys one directory up.
fn app_config(app: &Path, registry: &str, check_interval: &str) -> PathBuf {
    std::fs::create_dir_all(app).unwrap();
    let config = app.join("backworks.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: \"127.0.0.1:0\"\n  hook_timeout: 60s\n  shutdown_timeout: 5s\n\
             trusted_keys:\n  - file: ../backworks.pub\n\
             marketplace:\n  registry: {registry}\n  key: ../registry.pub\n\
             updates:\n  check_interval: {check_interval}\n  allow: patch\n\
             plugins:\n  weather:\n    type: marketplace\n    version: \"1.0.0\"\n"
        ),
    )
    .unwrap();
    config
}

fn weather(temperature: u32) -> Value {
    json!({"humidity": 60, "temperature": temperature})
}

fn get(server: &Server, path: &str) -> Value {
    let response = harness::http_client()
        .get(format!("{}{path}", server.base))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "GET {path}");
    response.json().unwrap()
}

fn running_version(server: &Server) -> String {
    let listed = get(server, "/plugins");
    let plugins = listed
        .get("plugins")
        .and_then(Value::as_array)
        .or_else(|| listed.as_array())
        .cloned()
        .unwrap_or_default();
    plugins
        .iter()
        .find(|p| p["name"] == "weather")
        .and_then(|p| p["version"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn publish_search_install_then_update_under_load_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // Keys as a publisher and a registry owner make them.
    cargo_backworks(root, &["keygen", "--unencrypted"]);
    cargo_backworks(root, &["keygen", "--unencrypted", "registry"]);
    // Both releases are built before anything is timed.
    let v100 = weather_package(root, "1.0.0", 25);
    let v101 = weather_package(root, "1.0.1", 26);
    let (dist100, dist101) = (root.join("dist-1.0.0"), root.join("dist-1.0.1"));
    build_and_sign(root, &v100, &dist100, "1.0.0");
    build_and_sign(root, &v101, &dist101, "1.0.1");

    let registry = start_registry(root);

    let published = publish(root, &registry.base, &v100, &dist100);
    assert!(published.contains("1.0.0"), "{published}");

    let app = root.join("app");
    let config = app_config(&app, &registry.base, "500ms");

    let search = harness::backworks()
        .args(["plugins", "search", "weather", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        search.status.success(),
        "{}",
        String::from_utf8_lossy(&search.stderr)
    );
    let found: Value = serde_json::from_slice(&search.stdout).unwrap();
    let hits = found["hits"].as_array().cloned().unwrap_or_default();
    assert!(
        hits.iter()
            .any(|hit| hit["name"] == "weather" && hit["version"] == "1.0.0"),
        "{found}"
    );

    // `serve` installs the plugin from the registry at start.
    let server = harness::start(&config, "info");
    assert_eq!(get(&server, "/weather"), weather(25));
    assert_eq!(running_version(&server), "1.0.0");
    let lock = std::fs::read_to_string(app.join("backworks.lock")).unwrap();
    assert!(lock.contains("version = \"1.0.0\""), "{lock}");

    // Every client has had 100 answers from 1.0.0 before 1.0.1 exists.
    let load = Load::start(&server, 4);
    load.wait_for_each(&load.answered(), 100);
    let before_publish = load.answered();
    let published = publish(root, &registry.base, &v101, &dist101);
    assert!(published.contains("1.0.1"), "{published}");
    let deadline = Instant::now() + HANG;
    while running_version(&server) != "1.0.1" {
        assert!(
            Instant::now() < deadline,
            "the server did not switch to 1.0.1 within {HANG:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // `/plugins` shows 1.0.1: the switch happened before this instant.
    let switched_at = Instant::now();
    // Then 250 more answers from every client.
    let at_switch = load.answered();
    load.wait_for_each(&at_switch, 250);
    let samples = load.finish();

    let total: usize = samples.iter().map(Vec::len).sum();
    let (old, new) = (weather(25), weather(26));
    for (client, samples) in samples.iter().enumerate() {
        let mut switched = false;
        let mut from_new = 0;
        for (i, (started, answer)) in samples.iter().enumerate() {
            let body = match answer {
                Answer::Body(body) => body,
                Answer::Failed(why) => panic!("client {client}, request {i}: {why}"),
            };
            if *body == new {
                assert!(
                    i >= before_publish[client],
                    "client {client}, request {i}: 1.0.1 answered before it was published"
                );
                switched = true;
                from_new += 1;
            } else {
                assert_eq!(*body, old, "client {client}, request {i}");
                assert!(
                    !switched,
                    "client {client}, request {i}: 1.0.0 answered after 1.0.1 had"
                );
                assert!(
                    *started < switched_at,
                    "client {client}, request {i}: 1.0.0 answered a request started after `/plugins` showed 1.0.1"
                );
            }
        }
        // Of the 250 answered after the switch, only the one in flight
        // then may have been 1.0.0's.
        assert!(
            from_new >= 249,
            "client {client}: {from_new} answers from 1.0.1"
        );
    }
    assert_eq!(get(&server, "/weather"), new);
    let lock = std::fs::read_to_string(app.join("backworks.lock")).unwrap();
    assert!(lock.contains("version = \"1.0.1\""), "{lock}");
    eprintln!("{total} requests during the update, none failed");
}

/// `package`'s `Cargo.toml` with `table` appended as its
/// `[package.metadata.backworks.capabilities]`.
fn declare(package: &Path, table: &str) {
    let manifest = package.join("Cargo.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("\n[package.metadata.backworks.capabilities]\n");
    text.push_str(table);
    std::fs::write(&manifest, text).unwrap();
}

/// The capabilities `/plugins` shows for the weather plugin.
fn running_capabilities(server: &Server) -> Value {
    let listed = get(server, "/plugins");
    listed["plugins"]
        .as_array()
        .and_then(|plugins| plugins.iter().find(|p| p["name"] == "weather"))
        .map(|p| p["capabilities"].clone())
        .unwrap_or_default()
}

/// The whole way of a declaration: written in `Cargo.toml`, recorded by
/// `cargo backworks build`, signed, published, shown by the server; a
/// release that asks for more is held by the automatic updater (the old
/// version keeps serving, the log says what it asks for and how to accept
/// it) until the operator runs `plugins update --accept-capabilities`,
/// which the running server then follows.
#[test]
fn an_automatic_update_asking_for_more_capabilities_waits_for_the_operator() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    cargo_backworks(root, &["keygen", "--unencrypted"]);
    cargo_backworks(root, &["keygen", "--unencrypted", "registry"]);
    let v100 = weather_package(root, "1.0.0", 25);
    let v101 = weather_package(root, "1.0.1", 26);
    declare(&v100, "network = \"none\"\n");
    declare(
        &v101,
        "network = [\"api.example.com:443\"]\nenv = [\"WEATHER_KEY\"]\n",
    );
    let (dist100, dist101) = (root.join("dist-1.0.0"), root.join("dist-1.0.1"));
    build_and_sign(root, &v100, &dist100, "1.0.0");
    build_and_sign(root, &v101, &dist101, "1.0.1");

    let registry = start_registry(root);
    publish(root, &registry.base, &v100, &dist100);

    let app = root.join("app");
    let config = app_config(&app, &registry.base, "200ms");
    let server = harness::start(&config, "info");
    assert_eq!(running_version(&server), "1.0.0");
    let none = json!({"network": "none", "files": {"read": [], "write": []}, "env": []});
    assert_eq!(running_capabilities(&server), none);

    publish(root, &registry.base, &v101, &dist101);
    let deadline = Instant::now() + HANG;
    let held = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match server.stderr.recv_timeout(left) {
            Ok(line) if line.contains("--accept-capabilities") => break line,
            Ok(_) => {}
            Err(_) => panic!("the updater did not hold 1.0.1 within {HANG:?}"),
        }
    };
    for asked in ["1.0.1", "network: api.example.com:443", "env: WEATHER_KEY"] {
        assert!(held.contains(asked), "{asked}: {held}");
    }
    assert_eq!(running_version(&server), "1.0.0");
    assert_eq!(get(&server, "/weather"), weather(25));
    let lock = std::fs::read_to_string(app.join("backworks.lock")).unwrap();
    assert!(lock.contains("version = \"1.0.0\""), "{lock}");

    // The operator accepts; the running server follows the lock.
    let mut command = harness::backworks();
    command
        .args(["plugins", "update", "weather", "--accept-capabilities"])
        .arg("--config")
        .arg(&config);
    let (code, out, err) = harness::run_bounded(command, HANG);
    assert_eq!(code, 0, "{out}{err}");
    let deadline = Instant::now() + HANG;
    while running_version(&server) != "1.0.1" {
        assert!(
            Instant::now() < deadline,
            "the server did not follow the lock to 1.0.1 within {HANG:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(&server, "/weather"), weather(26));
    assert_eq!(
        running_capabilities(&server),
        json!({
            "network": ["api.example.com:443"],
            "files": {"read": [], "write": []},
            "env": ["WEATHER_KEY"],
        })
    );
}
