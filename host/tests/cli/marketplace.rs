//! The marketplace client end to end: `backworks plugins
//! search|install|update|remove` and `serve` with `type: marketplace`
//! plugins, run as a user runs them. Registries are built here with the
//! real registry code (`registry::validate_upload`, `Tree::publish`) from
//! real plugins signed with real keys, and served as a directory, a
//! `file://` URL, or by an HTTP peer on 127.0.0.1 that can lie about sizes
//! or send slowly. Every refusal leaves the installed version untouched.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use backworks_artifact::signature;
use backworks_host::lockfile::{self, LockFile, LockedPlugin};
use backworks_plugin_sdk::TARGET;
use backworks_registry::{self as registry, Tree, Upload, UploadArtifact};
use serde_json::{Value, json};

use crate::harness::{self, Keys, sha256_of};
use crate::support;

/// The weather example as version 1.0.1, answering 26 degrees instead of
/// 25: a copy of `examples/weather-plugin` with the version (and answer)
/// changed, built once per run into the shared fixture directory. Its
/// library is named `libweather_v101` so it never overwrites 1.0.0's; the
/// plugin's name (the package's) stays `weather`.
fn weather_v101() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let copy = support::workspace().join("target/fixture-sources/weather-1.0.1");
            harness::weather_copy(&copy, "1.0.1", Some("weather_v101"), |source| {
                harness::edit(&source, "\"temperature\": 25", "\"temperature\": 26")
            });
            support::cargo_build(&copy, None)
        })
        .clone()
}

/// A registry tree, its key, the publisher's key, and an application
/// directory (`app/`) for `backworks.yaml`, the lock file and the cache.
struct Market {
    dir: tempfile::TempDir,
    tree: Tree,
    registry_keys: Keys,
    publisher: Keys,
}

impl Market {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let registry_keys = Keys::new();
        let tree = Tree::open(
            &dir.path().join("registry"),
            registry_keys.sk.clone(),
            registry::DEFAULT_INDEX_LIFETIME_SECS,
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        Self {
            dir,
            tree,
            registry_keys,
            publisher: Keys::new(),
        }
    }

    fn root(&self) -> PathBuf {
        self.tree.root().to_owned()
    }

    fn app(&self) -> PathBuf {
        self.dir.path().join("app")
    }

    fn cache(&self) -> PathBuf {
        self.app().join(".backworks/plugins")
    }

    fn lock_path(&self) -> PathBuf {
        self.app().join(lockfile::FILE_NAME)
    }

    /// The lock's entry for weather on this host, if any.
    fn locked(&self) -> Option<LockedPlugin> {
        LockFile::read(&self.lock_path())
            .unwrap()
            .get("weather", TARGET)
            .cloned()
    }

    /// Publishes `library` as weather `version`, signed by `signer`.
    fn publish(&self, library: &Path, version: &str, signer: &Keys) {
        let bytes = std::fs::read(library).unwrap();
        let signed = signature::sign(&bytes, &signer.sk, Some(&signer.pk)).unwrap();
        assert_eq!(signed.claims.version, version);
        let upload = Upload {
            description: None,
            keywords: vec![String::from("forecast")],
            artifacts: vec![UploadArtifact {
                file_name: artifact_name(version),
                bytes,
                signature: signed.minisig,
            }],
        };
        let validated =
            registry::validate_upload(upload, std::slice::from_ref(&signer.pk)).unwrap();
        self.tree.publish(validated).unwrap();
    }

    /// The artifact of weather `version` in the tree.
    fn artifact(&self, version: &str) -> PathBuf {
        self.root().join(format!(
            "plugins/weather/{version}/{TARGET}/{}",
            artifact_name(version)
        ))
    }

    /// `app/backworks.yaml`: the registry at `registry`, trusting
    /// `trusted`, with weather as a marketplace plugin at `requirement`
    /// (none: no plugins), and `extra` YAML appended.
    fn config(
        &self,
        registry: &str,
        trusted: &[&Keys],
        requirement: Option<&str>,
        extra: &str,
    ) -> PathBuf {
        let keys: String = trusted
            .iter()
            .map(|keys| format!("  - key: \"{}\"\n", keys.base64()))
            .collect();
        let plugins = match requirement {
            Some(requirement) => format!(
                "plugins:\n  weather:\n    type: marketplace\n    version: \"{requirement}\"\n"
            ),
            None => String::from("plugins: {}\n"),
        };
        let text = format!(
            "server:\n  listen: \"127.0.0.1:0\"\n  hook_timeout: 5s\n  shutdown_timeout: 5s\ntrusted_keys:\n{keys}marketplace:\n  registry: \"{registry}\"\n  key: \"{}\"\n{plugins}{extra}",
            self.registry_keys.base64()
        );
        let path = self.app().join("backworks.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The config with the tree as a directory registry.
    fn dir_config(&self, requirement: Option<&str>) -> PathBuf {
        self.config(
            self.root().to_str().unwrap(),
            &[&self.publisher],
            requirement,
            "",
        )
    }

    /// The names in the cache directory that are staging directories.
    fn staging(&self) -> Vec<String> {
        std::fs::read_dir(self.cache())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with(".download-"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The cached directory of weather `version` for this host.
    fn cached(&self, version: &str) -> PathBuf {
        self.cache().join(format!("weather/{version}/{TARGET}"))
    }
}

fn artifact_name(version: &str) -> String {
    format!(
        "weather-{version}-{TARGET}.{}",
        std::env::consts::DLL_EXTENSION
    )
}

/// What a finished `backworks` run said.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `backworks <args> --config <config>` to the end (at most 120 s).
fn run(config: &Path, args: &[&str]) -> Run {
    let mut command = harness::backworks();
    command.args(args).arg("--config").arg(config);
    let (code, stdout, stderr) = harness::run_bounded(command, Duration::from_secs(120));
    Run {
        code,
        stdout,
        stderr,
    }
}

/// Runs a command expected to succeed.
fn ok(config: &Path, args: &[&str]) -> String {
    let run = run(config, args);
    assert_eq!(run.code, 0, "backworks {args:?} failed: {run:?}");
    run.stdout
}

/// Runs a command expected to be refused with exit code `code` and a
/// message containing each of `expected`; returns the message.
fn refused(config: &Path, args: &[&str], code: i32, expected: &[&str]) -> String {
    let run = run(config, args);
    assert_eq!(run.code, code, "backworks {args:?}: {run:?}");
    for text in expected {
        assert!(
            run.stderr.contains(text),
            "backworks {args:?}: {text:?} not in {}",
            run.stderr
        );
    }
    run.stderr
}

fn get(server: &harness::Server, path: &str) -> (u16, Value) {
    let response = harness::http_client()
        .get(format!("{}{path}", server.base))
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn key_id(keys: &Keys) -> String {
    signature::KeyId::of_public_key(&keys.pk).to_string()
}

/// How the HTTP peer sends plugin libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    /// As they are.
    Honest,
    /// With 4096 bytes more than the file.
    Longer,
    /// Without the last 4096 bytes.
    Shorter,
    /// 4 KiB every 100 ms: a slow registry, not a stalled one.
    Slow,
}

/// An HTTP peer serving a registry tree as a static file server does (no
/// search API: 404), which can lie about plugin libraries or send them
/// slowly. Stopped when dropped.
struct Peer {
    base: String,
    send: Arc<Mutex<Sending>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Peer {
    fn start(root: PathBuf) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let send = Arc::new(Mutex::new(Sending::Honest));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(serve_tree)
            .with_state((root, Arc::clone(&send)));
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            base,
            send,
            runtime: Some(runtime),
        }
    }

    fn set(&self, send: Sending) {
        *self.send.lock().unwrap() = send;
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn serve_tree(
    axum::extract::State((root, send)): axum::extract::State<(PathBuf, Arc<Mutex<Sending>>)>,
    uri: axum::http::Uri,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let path = uri.path().trim_start_matches('/').to_owned();
    if path
        .split('/')
        .any(|part| part.is_empty() || part.starts_with('.'))
    {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    let Ok(mut bytes) = tokio::fs::read(root.join(&path)).await else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    let library =
        path.starts_with("plugins/") && !path.ends_with(".json") && !path.ends_with(".minisig");
    let send = if library {
        *send.lock().unwrap()
    } else {
        Sending::Honest
    };
    match send {
        Sending::Honest => bytes.into_response(),
        Sending::Longer => {
            bytes.extend_from_slice(&[0x90; 4096]);
            bytes.into_response()
        }
        Sending::Shorter => {
            bytes.truncate(bytes.len() - 4096);
            bytes.into_response()
        }
        Sending::Slow => {
            let chunks = futures_util::stream::unfold((bytes, 0), |(bytes, at)| async move {
                if at >= bytes.len() {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                let end = (at + 4 * 1024).min(bytes.len());
                let chunk = bytes[at..end].to_vec();
                Some((Ok::<_, std::io::Error>(chunk), (bytes, end)))
            });
            axum::body::Body::from_stream(chunks).into_response()
        }
    }
}

#[test]
fn install_from_a_directory_registry_then_serve_it() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    let config = market.dir_config(Some("1.0.0"));

    let out = ok(&config, &["plugins", "install", "weather"]);
    assert!(out.contains("installed weather 1.0.0 for"), "{out}");
    let locked = market.locked().expect("weather is locked");
    assert_eq!(locked.version.to_string(), "1.0.0");
    assert_eq!(locked.key_id, key_id(&market.publisher));
    let cached = market.cached("1.0.0").join(artifact_name("1.0.0"));
    assert_eq!(locked.sha256, sha256_of(&cached));
    assert_eq!(locked.sha256, sha256_of(&support::weather_plugin()));
    assert!(PathBuf::from(format!("{}.minisig", cached.display())).is_file());
    assert!(market.staging().is_empty());
    let state: Value =
        serde_json::from_slice(&std::fs::read(market.cache().join("registry-state.json")).unwrap())
            .unwrap();
    assert_eq!(
        state["registries"][key_id(&market.registry_keys)]["serial"],
        1
    );

    let server = harness::start(&config, "info");
    let (status, body) = get(&server, "/weather");
    assert_eq!(status, 200);
    assert_eq!(body, json!({"humidity": 60, "temperature": 25}));
    let (_, body) = get(&server, "/plugins");
    let plugin = &body["plugins"][0];
    assert_eq!(plugin["kind"], "marketplace");
    assert_eq!(plugin["sha256"], locked.sha256.as_str());
    assert_eq!(plugin["path"], cached.to_str().unwrap());
    drop(server);

    // Removal: out of the lock and the cache.
    let out = ok(&config, &["plugins", "remove", "weather"]);
    assert!(out.contains("removed weather 1.0.0"), "{out}");
    assert_eq!(market.locked(), None);
    assert!(!market.cache().join("weather").exists());
    refused(
        &config,
        &["plugins", "remove", "weather"],
        2,
        &["`weather` is not installed"],
    );
}

/// `install` pins every target of the release: this host's artifact
/// downloaded and verified, the other's signature checked against the
/// signed index, its artifact not downloaded. `plugins lock --check` says
/// which targets are pinned; `plugins lock` pins the others in a lock that
/// has only this host's (one written before every target was pinned).
#[test]
fn install_pins_every_target_and_lock_check_says_which() {
    let market = Market::new();
    let windows = support::fixtures::WINDOWS_GNU;
    let artifacts = [
        (support::fixtures::weather_plugin(), artifact_name("1.0.0")),
        (
            support::fixtures::weather_plugin_windows(),
            format!("weather-1.0.0-{windows}.dll"),
        ),
    ]
    .into_iter()
    .map(|(library, file_name)| {
        let bytes = std::fs::read(library).unwrap();
        let signed =
            signature::sign(&bytes, &market.publisher.sk, Some(&market.publisher.pk)).unwrap();
        UploadArtifact {
            file_name,
            bytes,
            signature: signed.minisig,
        }
    })
    .collect();
    let upload = Upload {
        description: None,
        keywords: Vec::new(),
        artifacts,
    };
    let validated =
        registry::validate_upload(upload, std::slice::from_ref(&market.publisher.pk)).unwrap();
    market.tree.publish(validated).unwrap();
    let config = market.dir_config(Some("1.0.0"));

    refused(
        &config,
        &["plugins", "lock", "--check"],
        1,
        &["weather: not pinned for this host's target", TARGET],
    );
    let installed = ok(&config, &["plugins", "install", "weather"]);
    assert!(
        installed.contains(&format!(
            "also pinned for {windows} (their signatures checked, not downloaded)"
        )),
        "{installed}"
    );
    let lock = LockFile::read(&market.lock_path()).unwrap();
    let targets: Vec<&str> = lock.entries().iter().map(|e| e.target.as_str()).collect();
    assert_eq!(targets, [TARGET, windows]);
    assert_eq!(
        lock.get("weather", windows).unwrap().sha256,
        sha256_of(&support::fixtures::weather_plugin_windows())
    );
    assert!(!market.cache().join("weather/1.0.0").join(windows).exists());

    let check: Value =
        serde_json::from_str(&ok(&config, &["plugins", "lock", "--check", "--json"])).unwrap();
    assert_eq!(check["target"], TARGET);
    let weather = &check["plugins"][0];
    assert_eq!(weather["name"], "weather");
    assert_eq!(weather["problem"], Value::Null);
    let pinned: Vec<&str> = weather["pins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pin| pin["target"].as_str().unwrap())
        .collect();
    assert_eq!(pinned, [TARGET, windows]);

    // A lock with this host's pin only: `plugins lock` adds the other.
    let mut lock = LockFile::read(&market.lock_path()).unwrap();
    lock.keep_targets("weather", &[TARGET]);
    lock.write().unwrap();
    let text = ok(&config, &["plugins", "lock"]);
    assert!(
        text.contains(&format!("  {windows} 1.0.0 sha256 ")),
        "{text}"
    );
    let lock = LockFile::read(&market.lock_path()).unwrap();
    assert_eq!(lock.entries().len(), 2);
    assert!(!market.cache().join("weather/1.0.0").join(windows).exists());
}

#[test]
fn install_from_a_file_url() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    let url = format!("file://{}", market.root().display());
    let config = market.config(&url, &[&market.publisher], Some("=1.0.0"), "");
    let out = ok(&config, &["plugins", "install", "weather@1.0.0"]);
    assert!(out.contains("installed weather 1.0.0"), "{out}");
    let server = harness::start_with(&config, "info", &["--locked"]);
    assert_eq!(get(&server, "/weather").0, 200);
}

#[test]
fn serve_installs_a_missing_plugin_then_runs_offline_and_locked() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    let config = market.dir_config(Some("1.0.0"));
    assert_eq!(market.locked(), None);

    let server = harness::start(&config, "info");
    let (status, body) = get(&server, "/weather");
    assert_eq!((status, body["temperature"].clone()), (200, json!(25)));
    drop(server);
    let locked = market.locked().expect("serve pinned what it installed");
    assert_eq!(locked.version.to_string(), "1.0.0");

    // The registry is gone: the cache is enough offline and locked.
    std::fs::rename(market.root(), market.dir.path().join("gone")).unwrap();
    let server = harness::start_with(&config, "info", &["--offline"]);
    assert_eq!(get(&server, "/weather").0, 200);
    drop(server);
    let server = harness::start_with(&config, "info", &["--locked", "--offline"]);
    assert_eq!(get(&server, "/weather").0, 200);
    drop(server);
    let lock_text = std::fs::read_to_string(market.lock_path()).unwrap();

    // Without the registry, a plugin the cache lacks cannot be installed.
    std::fs::remove_dir_all(market.cache().join("weather")).unwrap();
    refused(
        &config,
        &["serve", "--offline"],
        2,
        &["--offline: `weather`", "not in the cache"],
    );
    refused(&config, &["serve"], 2, &["cannot fetch", "index.json"]);
    assert_eq!(
        std::fs::read_to_string(market.lock_path()).unwrap(),
        lock_text
    );
}

#[test]
fn offline_with_an_empty_cache_fails_clearly() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    let config = market.dir_config(Some("1.0.0"));
    let message = refused(
        &config,
        &["serve", "--offline"],
        2,
        &[
            "--offline: `weather` (^1.0.0) is not in the cache",
            "backworks.lock has no entry",
            "run `backworks plugins install weather` with the network",
        ],
    );
    assert!(!message.contains("panicked"), "{message}");
    assert!(!market.lock_path().exists());
    assert!(!market.cache().join("weather").exists());
}

#[test]
fn locked_refuses_what_the_lock_does_not_pin() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    market.publish(&weather_v101(), "1.0.1", &market.publisher);
    let config = market.dir_config(Some("1.0.0"));
    refused(
        &config,
        &["serve", "--locked"],
        1,
        &[
            "--locked: weather: backworks.lock has no entry",
            "installing it would change the lock",
        ],
    );
    assert!(!market.lock_path().exists());

    ok(&config, &["plugins", "install", "weather@1.0.0"]);
    let lock_text = std::fs::read_to_string(market.lock_path()).unwrap();
    let config = market.dir_config(Some(">=1.0.1"));
    refused(
        &config,
        &["serve", "--locked"],
        1,
        &[
            "--locked: weather: the lock pins 1.0.0, which backworks.yaml's `version: \">=1.0.1\"` does not allow",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(market.lock_path()).unwrap(),
        lock_text
    );

    // Bytes in the cache that are not the pinned ones are refused too.
    let cached = market.cached("1.0.0").join(artifact_name("1.0.0"));
    let config = market.dir_config(Some("1.0.0"));
    let mut bytes = std::fs::read(&cached).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&cached, bytes).unwrap();
    refused(&config, &["serve", "--locked"], 1, &["refusing"]);
}

/// The line `plugins search` prints for the floor of `library` on this
/// host's target (the glibc it needs follows this machine's C library), or
/// nothing when it has none.
fn needs_line(library: &Path) -> String {
    let floor = backworks_artifact::floor::of_bytes(&std::fs::read(library).unwrap()).floor();
    if floor.is_empty() {
        String::new()
    } else {
        format!("  needs {floor} on {TARGET}\n")
    }
}

#[test]
fn search_finds_plugins_as_text_and_json() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    market.publish(&weather_v101(), "1.0.1", &market.publisher);
    let config = market.dir_config(None);
    let out = ok(&config, &["plugins", "search", "weather"]);
    assert_eq!(
        out,
        format!(
            "weather 1.0.1  Weather API integration\n  declares nothing (the process tier's defaults)\n{}",
            needs_line(&weather_v101())
        )
    );
    let out = ok(&config, &["plugins", "search", "forecast", "--json"]);
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["total"], 1);
    assert_eq!(page["hits"][0]["name"], "weather");
    assert_eq!(page["hits"][0]["version"], "1.0.1");
    assert_eq!(page["hits"][0]["keywords"], json!(["forecast"]));
    let out = ok(&config, &["plugins", "search", "stripe"]);
    assert_eq!(out, "no plugin matches `stripe`\n");

    // A static file server has no search API: the verified index is
    // searched instead.
    let peer = Peer::start(market.root());
    let config = market.config(&peer.base, &[&market.publisher], None, "");
    let out = ok(&config, &["plugins", "search", "weather", "--json"]);
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["hits"][0]["name"], "weather");
}

/// Issue 17: the registry records each artifact's dependency list from the
/// uploaded bytes (compact, without the plugin's own package) in the
/// release file, and its count in the signed index; `plugins search` shows
/// this target's count (`--json` every target's), `plugins info` the list
/// (`--json` the verified release file); a library without a list has none.
#[test]
fn the_registry_lists_each_artifact_s_dependencies_and_search_and_info_show_them() {
    let market = Market::new();
    let dir = tempfile::tempdir().unwrap();
    let listed = harness::with_dependency_list(
        &support::weather_plugin(),
        harness::DEPENDENCY_LIST,
        dir.path(),
        "libweather.so",
    );
    market.publish(&listed, "1.0.0", &market.publisher);
    let expected = json!([
        {"name": "proc-macro2", "version": "1.0.101", "build": true},
        {"name": "serde_json", "version": "1.0.145"}
    ]);
    let count = json!({"runtime": 1, "build": 1});
    let release: Value = serde_json::from_slice(
        &std::fs::read(market.root().join("plugins/weather/1.0.0/release.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(release["targets"][TARGET]["deps"], expected, "{release}");
    // The index, as signed (the envelope's `index` text): the count only.
    let envelope: Value =
        serde_json::from_slice(&std::fs::read(market.root().join("index.json")).unwrap()).unwrap();
    let index: Value = serde_json::from_str(envelope["index"].as_str().unwrap()).unwrap();
    assert_eq!(
        index["plugins"]["weather"]["versions"]["1.0.0"]["deps"],
        json!({ TARGET: count }),
        "{index}"
    );
    let config = market.dir_config(None);
    let out = ok(&config, &["plugins", "search", "weather"]);
    assert_eq!(
        out,
        format!(
            "weather 1.0.0  Weather API integration\n  declares nothing (the process tier's defaults)\n{}  2 dependencies (1 build-time only) on {TARGET}\n",
            needs_line(&listed)
        )
    );
    let out = ok(&config, &["plugins", "search", "weather", "--json"]);
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["hits"][0]["deps"][TARGET], count);
    let out = ok(&config, &["plugins", "info", "weather"]);
    assert!(
        out.ends_with(&format!(
            "  2 dependencies (1 build-time only) on {TARGET}:\n    proc-macro2 1.0.101 (build)\n    serde_json 1.0.145\n"
        )),
        "{out}"
    );
    assert!(
        out.starts_with("weather 1.0.0  Weather API integration\n  published by key "),
        "{out}"
    );
    let out = ok(&config, &["plugins", "info", "weather@1.0.0", "--json"]);
    let info: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info, release);
    // Nothing installed or pinned by looking.
    assert_eq!(market.locked(), None);
    // Installed and verified as any release.
    ok(&config, &["plugins", "install", "weather"]);

    // A library without a list (a plain cargo build): no `deps` anywhere.
    market.publish(&weather_v101(), "1.0.1", &market.publisher);
    let release: Value = serde_json::from_slice(
        &std::fs::read(market.root().join("plugins/weather/1.0.1/release.json")).unwrap(),
    )
    .unwrap();
    assert!(
        release["targets"][TARGET].get("deps").is_none(),
        "{release}"
    );
    let out = ok(&config, &["plugins", "search", "weather", "--json"]);
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["hits"][0]["version"], "1.0.1");
    assert!(page["hits"][0].get("deps").is_none(), "{page}");
    let out = ok(&config, &["plugins", "info", "weather"]);
    assert!(
        out.ends_with(&format!(
            "  no dependency list for {TARGET} (its library was built without one)\n"
        )),
        "{out}"
    );
    refused(
        &config,
        &["plugins", "info", "weather@2"],
        2,
        &["no version of `weather` in the registry matches `^2`"],
    );
}

/// Issue 17: the registry records each artifact's platform floor from the
/// uploaded bytes (here a plugin linked against a stub `libc.so.6` whose
/// symbol is in version node `GLIBC_2.99`), in the release file and the
/// signed index; `plugins search` shows it; `plugins install` refuses the
/// artifact before downloading it, naming both glibc versions.
#[test]
fn an_artifact_needing_a_newer_glibc_is_refused_before_it_is_downloaded() {
    let market = Market::new();
    let bytes = std::fs::read(support::c_plugin_needing_glibc_2_99()).unwrap();
    let signed = signature::sign(&bytes, &market.publisher.sk, Some(&market.publisher.pk)).unwrap();
    let upload = Upload {
        description: None,
        keywords: vec![String::from("forecast")],
        artifacts: vec![UploadArtifact {
            file_name: format!(
                "weather-c-1.0.0-{TARGET}.{}",
                std::env::consts::DLL_EXTENSION
            ),
            bytes,
            signature: signed.minisig,
        }],
    };
    let validated =
        registry::validate_upload(upload, std::slice::from_ref(&market.publisher.pk)).unwrap();
    let floor = validated.release().targets[TARGET].floor;
    assert_eq!(floor.glibc.map(|v| v.to_string()).as_deref(), Some("2.99"));
    market.tree.publish(validated).unwrap();
    // The index, as signed (the envelope's `index` text).
    let envelope: Value =
        serde_json::from_slice(&std::fs::read(market.root().join("index.json")).unwrap()).unwrap();
    let index: Value = serde_json::from_str(envelope["index"].as_str().unwrap()).unwrap();
    assert_eq!(
        index["plugins"]["weather-c"]["versions"]["1.0.0"]["floors"][TARGET],
        json!({"glibc": "2.99"}),
        "{index}"
    );

    let config = market.dir_config(None);
    let out = ok(&config, &["plugins", "search", "weather", "--json"]);
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["hits"][0]["floors"][TARGET], json!({"glibc": "2.99"}));
    let out = ok(&config, &["plugins", "search", "weather"]);
    assert!(
        out.contains(&format!("\n  needs glibc 2.99 on {TARGET}\n")),
        "{out}"
    );

    let running = backworks_host::loader::running_glibc().expect("a glibc system");
    refused(
        &config,
        &["plugins", "install", "weather-c@1.0.0"],
        1,
        &[&format!(
            "refusing weather-c 1.0.0: its artifact for {TARGET} needs glibc 2.99 but this system has glibc {running}"
        )],
    );
    assert!(!market.cache().join("weather-c").exists());
    assert!(market.staging().is_empty());
    assert_eq!(
        LockFile::read(&market.lock_path())
            .unwrap()
            .get("weather-c", TARGET),
        None
    );
}

#[test]
fn update_moves_to_the_newest_allowed_version_and_rewrites_the_lock() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    let config = market.dir_config(Some("1.0"));
    ok(&config, &["plugins", "install", "weather"]);
    let out = ok(&config, &["plugins", "update"]);
    assert!(
        out.contains("weather 1.0.0 is up to date (updates allowed: minor)"),
        "{out}"
    );

    // A user's comment in the lock file survives the rewrite.
    let text = std::fs::read_to_string(market.lock_path()).unwrap();
    std::fs::write(market.lock_path(), format!("# reviewed by ops\n{text}")).unwrap();
    market.publish(&weather_v101(), "1.0.1", &market.publisher);

    let pinned = market.config(
        market.root().to_str().unwrap(),
        &[&market.publisher],
        Some("1.0"),
        "updates:\n  plugins:\n    weather: \"=1.0.0\"\n",
    );
    let out = ok(&pinned, &["plugins", "update", "weather"]);
    assert!(
        out.contains("weather 1.0.0 is up to date (updates allowed: =1.0.0)"),
        "{out}"
    );
    assert_eq!(market.locked().unwrap().version.to_string(), "1.0.0");

    let config = market.config(
        market.root().to_str().unwrap(),
        &[&market.publisher],
        Some("1.0"),
        "updates:\n  allow: patch\n",
    );
    let out = ok(&config, &["plugins", "update"]);
    assert!(out.contains("updated weather 1.0.0 -> 1.0.1"), "{out}");
    let locked = market.locked().unwrap();
    assert_eq!(locked.version.to_string(), "1.0.1");
    assert_eq!(locked.sha256, sha256_of(&weather_v101()));
    let text = std::fs::read_to_string(market.lock_path()).unwrap();
    assert!(text.starts_with("# reviewed by ops\n"), "{text}");
    assert_eq!(text.matches("[[plugin]]").count(), 1, "{text}");

    let server = harness::start_with(&config, "info", &["--locked"]);
    let (status, body) = get(&server, "/weather");
    assert_eq!((status, body["temperature"].clone()), (200, json!(26)));
}

/// Installs 1.0.0, publishes 1.0.1 with `spoil` applied to the tree, and
/// expects `update` to be refused with `expected`; 1.0.0 stays installed
/// and nothing of 1.0.1 is cached.
fn update_is_refused(market: &Market, spoil: &dyn Fn(), expected: &[&str]) {
    let config = market.dir_config(Some("1"));
    if market.locked().is_none() {
        ok(&config, &["plugins", "install", "weather"]);
    }
    let before = std::fs::read_to_string(market.lock_path()).unwrap();
    spoil();
    refused(&config, &["plugins", "update"], 1, expected);
    assert_eq!(std::fs::read_to_string(market.lock_path()).unwrap(), before);
    assert!(!market.cached("1.0.1").exists());
    assert!(market.staging().is_empty(), "{:?}", market.staging());
    assert!(
        market
            .cached("1.0.0")
            .join(artifact_name("1.0.0"))
            .is_file()
    );
}

#[test]
fn a_tampered_download_is_refused() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    let spoil = || {
        market.publish(&weather_v101(), "1.0.1", &market.publisher);
        let artifact = market.artifact("1.0.1");
        let mut bytes = std::fs::read(&artifact).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&artifact, bytes).unwrap();
    };
    update_is_refused(
        &market,
        &spoil,
        &[
            "refusing weather 1.0.1 from",
            &artifact_name("1.0.1"),
            "tampered download: its sha256 is",
            &format!("the release says {}", sha256_of(&weather_v101())),
        ],
    );
}

#[test]
fn a_registry_lying_about_the_size_is_refused() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    let peer = Peer::start(market.root());
    let config = market.config(&peer.base, &[&market.publisher], Some("1"), "");
    ok(&config, &["plugins", "install", "weather"]);
    market.publish(&weather_v101(), "1.0.1", &market.publisher);
    let size = std::fs::metadata(weather_v101()).unwrap().len();
    let url = format!(
        "{}plugins/weather/1.0.1/{TARGET}/{}",
        peer.base,
        artifact_name("1.0.1")
    );
    let before = std::fs::read_to_string(market.lock_path()).unwrap();
    for (send, sent) in [
        (Sending::Longer, format!("more (at least {})", size + 4096)),
        (Sending::Shorter, (size - 4096).to_string()),
    ] {
        peer.set(send);
        refused(
            &config,
            &["plugins", "update"],
            1,
            &[
                &format!("refusing weather 1.0.1 from {url}: wrong size"),
                &format!("the release announces {size} bytes, the registry sent {sent}"),
            ],
        );
        assert_eq!(std::fs::read_to_string(market.lock_path()).unwrap(), before);
        assert!(!market.cached("1.0.1").exists());
        assert!(market.staging().is_empty());
    }
    peer.set(Sending::Honest);
    let out = ok(&config, &["plugins", "update"]);
    assert!(out.contains("updated weather 1.0.0 -> 1.0.1"), "{out}");
}

#[test]
fn a_signature_by_an_untrusted_key_is_refused() {
    let market = Market::new();
    let stranger = Keys::new();
    market.publish(&support::weather_plugin(), "1.0.0", &stranger);
    let config = market.dir_config(Some("1"));
    refused(
        &config,
        &["plugins", "install", "weather"],
        1,
        &[
            "refusing weather 1.0.0 from",
            &format!(
                "signed by key {}, which is not in `trusted_keys` (trusted: {})",
                key_id(&stranger),
                key_id(&market.publisher)
            ),
        ],
    );
    assert!(!market.lock_path().exists());
    assert!(!market.cache().join("weather").exists());
    assert!(market.staging().is_empty());
}

#[test]
fn a_new_publisher_key_is_refused_on_update() {
    let market = Market::new();
    let colleague = Keys::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    let config = market.config(
        market.root().to_str().unwrap(),
        &[&market.publisher, &colleague],
        Some("1"),
        "",
    );
    ok(&config, &["plugins", "install", "weather"]);
    market.publish(&weather_v101(), "1.0.1", &colleague);
    let before = std::fs::read_to_string(market.lock_path()).unwrap();
    refused(
        &config,
        &["plugins", "update", "weather"],
        1,
        &[&format!(
            "refusing weather 1.0.1: it is signed by key {}, the locked version by key {}",
            key_id(&colleague),
            key_id(&market.publisher)
        )],
    );
    assert_eq!(std::fs::read_to_string(market.lock_path()).unwrap(), before);
    assert!(!market.cached("1.0.1").exists());
}

#[test]
fn a_trusted_comment_for_something_else_is_refused() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    market.publish(&weather_v101(), "1.0.1", &market.publisher);
    let config = market.dir_config(Some("1"));
    ok(&config, &["plugins", "install", "weather@1.0.0"]);
    let artifact = market.artifact("1.0.1");
    let bytes = std::fs::read(&artifact).unwrap();
    let other_target = if TARGET == "aarch64-apple-darwin" {
        "x86_64-unknown-linux-gnu"
    } else {
        "aarch64-apple-darwin"
    };
    for (field, value) in [
        ("name", "thunder"),
        ("version", "9.9.9"),
        ("target", other_target),
    ] {
        // The publisher re-signs the very bytes, stating something else.
        let mut claims = signature::Claims::of(&bytes).unwrap();
        match field {
            "name" => claims.name = value.to_owned(),
            "version" => claims.version = value.to_owned(),
            _ => claims.target = value.to_owned(),
        }
        let comment = claims.to_trusted_comment(registry::now()).unwrap();
        let signed = minisign::sign(
            Some(&market.publisher.pk),
            &market.publisher.sk,
            std::io::Cursor::new(&bytes),
            Some(&comment),
            Some("re-signed by the test"),
        )
        .unwrap();
        std::fs::write(
            format!("{}.minisig", artifact.display()),
            signed.into_string(),
        )
        .unwrap();
        let expected = match field {
            "name" => "weather",
            "version" => "1.0.1",
            _ => TARGET,
        };
        update_is_refused(
            &market,
            &|| {},
            &[
                "refusing weather 1.0.1 from",
                ".minisig",
                &format!(
                    "the signature's trusted comment names {field} \"{value}\", not \"{expected}\""
                ),
            ],
        );
    }
}

#[test]
fn an_index_rollback_is_refused() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    let index = market.root().join("index.json");
    let old = std::fs::read(&index).unwrap();
    let config = market.dir_config(Some("1"));
    ok(&config, &["plugins", "install", "weather"]);
    update_is_refused(
        &market,
        &|| {
            market.publish(&weather_v101(), "1.0.1", &market.publisher);
            // The client sees serial 2 (and finds nothing to refuse) ...
            let run = run(&config, &["plugins", "search", "weather"]);
            assert_eq!(run.code, 0, "{run:?}");
            // ... then a mirror serves serial 1 again.
            std::fs::write(&index, &old).unwrap();
        },
        &[&format!(
            "refusing the registry index {}: its serial 1 is older than serial 2 accepted before (rollback",
            index.display()
        )],
    );
}

#[test]
fn an_expired_index_is_refused() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    update_is_refused(
        &market,
        &|| {
            market.publish(&weather_v101(), "1.0.1", &market.publisher);
            let mut index = market.tree.index().unwrap();
            index.serial += 1;
            index.issued = registry::now() - 7200;
            index.expires = registry::now() - 3600;
            let bytes = registry::sign_index(&index, &market.registry_keys.sk).unwrap();
            std::fs::write(market.root().join("index.json"), bytes).unwrap();
        },
        &[
            "refusing the registry index",
            "it expired at",
            "(freeze)",
            "`backworks marketplace resign`",
        ],
    );
}

#[test]
fn a_downgrade_is_refused() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    market.publish(&weather_v101(), "1.0.1", &market.publisher);
    let config = market.dir_config(Some("1"));
    ok(&config, &["plugins", "install", "weather"]);
    assert_eq!(market.locked().unwrap().version.to_string(), "1.0.1");
    let before = std::fs::read_to_string(market.lock_path()).unwrap();
    refused(
        &config,
        &["plugins", "install", "weather@1.0.0"],
        1,
        &[
            "refusing to downgrade weather from 1.0.1 (in backworks.lock) to 1.0.0; to go back on purpose, run `backworks plugins remove weather` first",
        ],
    );
    // serve does not downgrade either when backworks.yaml asks for less.
    let config = market.dir_config(Some("=1.0.0"));
    refused(
        &config,
        &["serve"],
        1,
        &["refusing to downgrade weather from 1.0.1"],
    );
    assert_eq!(std::fs::read_to_string(market.lock_path()).unwrap(), before);
    assert!(!market.cached("1.0.0").exists());
}

#[test]
fn a_client_killed_mid_download_leaves_nothing_to_load() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    let peer = Peer::start(market.root());
    peer.set(Sending::Slow);
    let config = market.config(&peer.base, &[&market.publisher], Some("1"), "");
    let mut child = harness::backworks()
        .args(["plugins", "install", "weather", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the download is under way (its staging directory exists;
    // the peer sends 4 KiB every 100 ms, so the 1 MiB plugin takes half a
    // minute and half a second later it is in the middle of the body,
    // however busy the machine), then SIGKILL.
    let deadline = Instant::now() + Duration::from_secs(60);
    while market.staging().is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the install ended before it was killed"
        );
        assert!(Instant::now() < deadline, "no download started in 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the install ended before it was killed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let size = std::fs::metadata(support::weather_plugin()).unwrap().len();
    let staged: u64 = market
        .staging()
        .iter()
        .flat_map(|dir| std::fs::read_dir(market.cache().join(dir)).unwrap())
        .map(|file| file.unwrap().metadata().unwrap().len())
        .sum();
    assert!(staged < size, "the download was not interrupted");
    assert!(!market.cached("1.0.0").exists());
    assert!(!market.lock_path().exists());
    // serve cannot load a partial file: there is none to load.
    refused(&config, &["serve", "--offline"], 2, &["not in the cache"]);

    peer.set(Sending::Honest);
    let out = ok(&config, &["plugins", "install", "weather"]);
    assert!(out.contains("installed weather 1.0.0"), "{out}");
    assert!(market.staging().is_empty(), "stale downloads are cleaned");
    let cached = market.cached("1.0.0").join(artifact_name("1.0.0"));
    assert_eq!(sha256_of(&cached), market.locked().unwrap().sha256);
    let server = harness::start_with(&config, "info", &["--locked"]);
    assert_eq!(get(&server, "/weather").0, 200);
}

#[test]
fn a_running_server_follows_an_update_made_on_demand() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    market.publish(&weather_v101(), "1.0.1", &market.publisher);
    // The server may not update by itself (=1.0.0); the command line may.
    let serving = market.config(
        market.root().to_str().unwrap(),
        &[&market.publisher],
        Some("1.0"),
        "updates:\n  check_interval: 200ms\n  plugins:\n    weather: \"=1.0.0\"\n",
    );
    ok(&serving, &["plugins", "install", "weather@1.0.0"]);
    let server = harness::start(&serving, "info");
    assert_eq!(get(&server, "/weather").1["temperature"], json!(25));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        get(&server, "/weather").1["temperature"],
        json!(25),
        "the server updated beyond its policy"
    );

    // The same file, rewritten for the command line: the running server
    // read its policy at start.
    let on_demand = market.config(
        market.root().to_str().unwrap(),
        &[&market.publisher],
        Some("1.0"),
        "updates:\n  check_interval: 200ms\n  allow: patch\n",
    );
    let out = ok(&on_demand, &["plugins", "update", "weather"]);
    assert!(out.contains("updated weather 1.0.0 -> 1.0.1"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&server, "/weather").1["temperature"] != json!(26) {
        assert!(
            Instant::now() < deadline,
            "the running server did not switch to the version the lock pins"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(market.locked().unwrap().version.to_string(), "1.0.1");
}

/// A registry on 127.0.0.1 that answers every request with a 200 whose
/// headers announce a large JSON body, then sends that body one byte every
/// 200 ms, forever: every read completes well inside any per-read timeout.
/// Counts the bytes it dripped. Stops when dropped.
struct Drip {
    base: String,
    dripped: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drip {
    fn start() -> Self {
        use std::io::{Read as _, Write as _};
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let dripped = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counter, stopped) = (Arc::clone(&dripped), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let (counter, stopped) = (Arc::clone(&counter), Arc::clone(&stopped));
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut byte = [0u8; 1];
                    while !request.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte) {
                            Ok(1) => request.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n";
                    if stream.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    while !stopped.load(Ordering::SeqCst) {
                        if stream
                            .write_all(b" ")
                            .and_then(|()| stream.flush())
                            .is_err()
                        {
                            return;
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                    }
                });
            }
        });
        Self {
            base,
            dripped,
            stop,
        }
    }
}

impl Drop for Drip {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accepting thread so it sees the flag.
        let _ = std::net::TcpStream::connect(
            self.base
                .trim_start_matches("http://")
                .trim_end_matches('/'),
        );
    }
}

#[test]
fn a_registry_that_drips_is_given_up_at_the_transfer_timeout() {
    let market = Market::new();
    let drip = Drip::start();
    let config = market.config(&drip.base, &[&market.publisher], Some("1"), "");
    let text = std::fs::read_to_string(&config).unwrap();
    let limited = text.replacen(
        "  key: ",
        "  transfer_timeout: 2s\n  min_transfer_rate: 1B\n  key: ",
        1,
    );
    assert_ne!(limited, text);
    std::fs::write(&config, limited).unwrap();
    // `run` fails the test if the command is still running after 120 s.
    let index = format!("{}index.json", drip.base);
    refused(
        &config,
        &["plugins", "install", "weather"],
        2,
        &[
            &format!("cannot fetch {index}"),
            "the transfer took longer than `marketplace.transfer_timeout` (2s)",
        ],
    );
    assert!(
        drip.dripped.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the registry was dripping when the client gave up"
    );
    assert!(market.locked().is_none());

    // The same for `serve`, which installs a missing plugin at start-up.
    let run = run(&config, &["serve"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("`marketplace.transfer_timeout` (2s)"),
        "{}",
        run.stderr
    );
}

/// An HTTP registry whose search API answers `answer` to every query (the
/// answer is not signed: nothing vouches for its text). Stopped when
/// dropped.
struct SearchPeer {
    base: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl SearchPeer {
    fn start(answer: Value) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}/", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/api/v1/search",
            axum::routing::get(move || {
                let answer = answer.clone();
                async move { axum::Json(answer) }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Self {
            base,
            runtime: Some(runtime),
        }
    }
}

impl Drop for SearchPeer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[test]
fn a_search_answer_cannot_drive_the_terminal() {
    let market = Market::new();
    let forged = "Weather API integration\u{1b}[2K\rverified by key CAB78193ADCAB890\nsecond line \u{202e}txet";
    let peer = SearchPeer::start(json!({
        "query": "weather",
        "total": 1,
        "page": 1,
        "per_page": 100,
        "hits": [{
            "name": "weather\u{1b}]0;title\u{7}",
            "version": "1.0.0\u{9b}2J",
            "description": forged,
            "keywords": ["\u{1b}[31m"],
            "score": 100
        }]
    }));
    let config = market.config(&peer.base, &[&market.publisher], None, "");
    let out = ok(&config, &["plugins", "search", "weather"]);
    assert_eq!(
        out,
        "weather\\u{1b}]0;title\\u{7} 1.0.0\\u{9b}2J  Weather API integration\\u{1b}[2K\\rverified by key CAB78193ADCAB890\\nsecond line \\u{202e}txet\n  declares nothing (the process tier's defaults)\n"
    );
    assert_eq!(out.lines().count(), 2);
    assert!(
        !out.contains(['\u{1b}', '\r', '\u{7}', '\u{9b}', '\u{202e}']),
        "{out:?}"
    );
    // JSON: escaped as JSON, so nothing is raw on the terminal, and the
    // data is exactly what the registry sent.
    let out = ok(&config, &["plugins", "search", "weather", "--json"]);
    assert!(out.is_ascii(), "{out:?}");
    assert!(
        out.contains(
            r"integration\u001b[2K\rverified by key CAB78193ADCAB890\nsecond line \u202etxet"
        ),
        "{out}"
    );
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["hits"][0]["description"], forged);
    assert_eq!(page["hits"][0]["keywords"], json!(["\u{1b}[31m"]));
}

/// Issue 13, defect 10 in `serve`: a marketplace error quotes what the
/// registry sent (serde's "unknown field" names the registry's field), and
/// `serve` printed it, and logged it, raw: a registry could clear the
/// screen or add a log line of its own. Both the error line and the log
/// line now hold it escaped, each on one line.
#[test]
fn serve_prints_a_registry_error_escaped() {
    let market = Market::new();
    let field = "\u{1b}[2J\r\n2026-01-01T00:00:00Z  INFO plugin ready\u{9b}\u{202e}";
    std::fs::write(
        market.root().join(registry::INDEX_PATH),
        json!({ field: 1 }).to_string(),
    )
    .unwrap();
    let config = market.dir_config(Some("1.0.0"));
    let run = run(&config, &["serve"]);
    assert_ne!(run.code, 0, "{run:?}");
    let escaped = "\\u{1b}[2J\\r\\n2026-01-01T00:00:00Z  INFO plugin ready\\u{9b}\\u{202e}";
    assert!(
        !run.stderr.contains(['\u{1b}', '\r', '\u{9b}', '\u{202e}']),
        "{:?}",
        run.stderr
    );
    let quoted: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| line.contains(&format!("unknown field `{escaped}`")))
        .collect();
    assert_eq!(
        quoted.len(),
        2,
        "the error and its log line:\n{}",
        run.stderr
    );
    assert!(quoted[1].starts_with("error: "), "{}", run.stderr);
    assert!(
        !run.stderr
            .lines()
            .any(|line| line.starts_with("2026-01-01")),
        "{}",
        run.stderr
    );
}

/// Replaces `path` by a FIFO (nothing ever writes to it: opening it to
/// read blocks until a writer comes, unless it is opened non-blocking).
fn make_fifo(path: &Path) {
    std::fs::remove_file(path).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Gap F of issue 13: a directory registry's files are read as an HTTP
/// registry's are, bounded: a FIFO where `index.json` (or a `.minisig`)
/// should be is refused at once instead of blocking the client forever,
/// and an artifact that is a symbolic link to `/dev/zero` is refused
/// before a byte of it is read. (`run` fails the test if a command is
/// still running after 120 s: before the fix, the FIFOs hung it.)
#[test]
fn a_directory_registry_file_that_is_not_a_regular_file_is_refused() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    let config = market.dir_config(Some("1"));
    let index = market.root().join("index.json");
    let saved = std::fs::read(&index).unwrap();
    make_fifo(&index);
    let not_regular = |path: &Path, kind: &str| {
        format!(
            "refusing {}: not a regular file (it is {kind}); every file of a directory registry must be a regular file",
            path.display()
        )
    };
    refused(
        &config,
        &["plugins", "search", "weather"],
        1,
        &[&not_regular(&index, "a FIFO")],
    );
    refused(
        &config,
        &["plugins", "install", "weather"],
        1,
        &[&not_regular(&index, "a FIFO")],
    );
    std::fs::remove_file(&index).unwrap();
    std::fs::write(&index, saved).unwrap();

    // The artifact's signature is a FIFO.
    let artifact = market.artifact("1.0.0");
    let signature = PathBuf::from(format!("{}.minisig", artifact.display()));
    let saved = std::fs::read(&signature).unwrap();
    make_fifo(&signature);
    refused(
        &config,
        &["plugins", "install", "weather"],
        1,
        &[&not_regular(&signature, "a FIFO")],
    );
    std::fs::remove_file(&signature).unwrap();
    std::fs::write(&signature, saved).unwrap();

    // The artifact is endless.
    let saved = std::fs::read(&artifact).unwrap();
    std::fs::remove_file(&artifact).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &artifact).unwrap();
    refused(
        &config,
        &["plugins", "install", "weather"],
        1,
        &[&not_regular(&artifact, "a character device")],
    );
    assert!(market.locked().is_none());
    assert!(!market.cached("1.0.0").exists());
    assert!(market.staging().is_empty(), "{:?}", market.staging());

    // The registry's own files again: installed.
    std::fs::remove_file(&artifact).unwrap();
    std::fs::write(&artifact, saved).unwrap();
    let out = ok(&config, &["plugins", "install", "weather"]);
    assert!(out.contains("installed weather 1.0.0"), "{out}");
}

/// Gap H of issue 13: a registry that keeps every read inside the per-read
/// timeout and the whole transfer inside `transfer_timeout`, but sends far
/// less than `marketplace.min_transfer_rate`, is given up once a whole
/// measuring window went by below the rate, with a message naming the rate
/// and the URL. (The window is 30 s: the test takes that long; `run` fails
/// it if the command is still running after 120 s.)
#[test]
fn a_registry_slower_than_the_minimum_transfer_rate_is_given_up() {
    let market = Market::new();
    let drip = Drip::start();
    let config = market.config(&drip.base, &[&market.publisher], Some("1"), "");
    let text = std::fs::read_to_string(&config).unwrap();
    // Five bytes a second against at least 1 KiB a second; the overall
    // deadline (an hour) is not what stops it.
    let limited = text.replacen(
        "  key: ",
        "  transfer_timeout: 1h\n  min_transfer_rate: 1KiB\n  key: ",
        1,
    );
    assert_ne!(limited, text);
    std::fs::write(&config, limited).unwrap();
    let index = format!("{}index.json", drip.base);
    let message = refused(
        &config,
        &["plugins", "install", "weather"],
        2,
        &[
            &format!("cannot fetch {index}: "),
            "bytes came in 30",
            "less than `marketplace.min_transfer_rate` (1024 bytes per second)",
            "lower `marketplace.min_transfer_rate` if the registry is sound but slow",
        ],
    );
    assert!(!message.contains("transfer_timeout"), "{message}");
    assert!(
        drip.dripped.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the registry was dripping when the client gave up"
    );
    assert!(market.locked().is_none());
    assert!(market.staging().is_empty(), "{:?}", market.staging());
}

// Issue 14, part 5: a registry format that grows; part 4: versions chosen
// by the plugin ABI this host speaks.

/// Edits the tree's signed index as JSON (after its serial is raised by
/// one, as a writer's is), then signs the text as it is with the registry
/// key: fields this client does not know stay in it.
fn edit_index(market: &Market, edit: impl FnOnce(&mut Value)) {
    let path = market.root().join(registry::INDEX_PATH);
    let envelope: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut index: Value = serde_json::from_str(envelope["index"].as_str().unwrap()).unwrap();
    index["serial"] = json!(index["serial"].as_u64().unwrap() + 1);
    edit(&mut index);
    let text = serde_json::to_string_pretty(&index).unwrap();
    let bytes = registry::sign_index_text(&text, &market.registry_keys.sk).unwrap();
    std::fs::write(&path, bytes).unwrap();
}

/// Writes weather `version`'s release file as `release` and points the
/// index at its bytes (`abi`: what the index says of it, if anything).
fn put_release(market: &Market, version: &str, release: &Value, abi: Option<u32>) {
    let path = market
        .root()
        .join(registry::release_path("weather", version));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let bytes = serde_json::to_vec_pretty(release).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    edit_index(market, |index| {
        let mut reference = json!({
            "path": registry::release_path("weather", version),
            "sha256": registry::sha256_hex(&bytes),
            "size": bytes.len(),
        });
        if let Some(abi) = abi {
            reference["abi"] = json!(abi);
        }
        index["plugins"]["weather"]["versions"][version] = reference;
    });
}

/// Weather `version`'s release file as JSON.
fn release_of(market: &Market, version: &str) -> Value {
    let path = market
        .root()
        .join(registry::release_path("weather", version));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A registry written by a newer backworks, which added fields to every
/// document (the envelope, the index, a plugin's entry, a version's
/// reference, the release file and its artifact), is read by this client
/// over HTTP and as a directory: the fields it does not know are ignored,
/// as `docs/registry.md` ("Compatibility") says. Before, every one of them
/// was refused (`deny_unknown_fields`).
#[test]
fn a_registry_with_fields_this_client_does_not_know_is_read() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    let mut release = release_of(&market, "1.0.0");
    release["license"] = json!("MIT");
    release["targets"][TARGET]["compression"] = json!("none");
    put_release(&market, "1.0.0", &release, Some(1));
    edit_index(&market, |index| {
        index["mirrors"] = json!(["https://mirror.example/"]);
        index["plugins"]["weather"]["downloads"] = json!(12);
        index["plugins"]["weather"]["versions"]["1.0.0"]["yanked"] = json!(false);
    });
    let path = market.root().join(registry::INDEX_PATH);
    let mut envelope: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    envelope["transparency_log"] = json!("https://log.example/");
    std::fs::write(&path, serde_json::to_vec_pretty(&envelope).unwrap()).unwrap();

    let peer = Peer::start(market.root());
    let http = market.config(&peer.base, &[&market.publisher], None, "");
    let page: Value =
        serde_json::from_str(&ok(&http, &["plugins", "search", "weather", "--json"])).unwrap();
    assert_eq!(page["hits"][0]["name"], "weather");
    let out = ok(&http, &["plugins", "install", "weather"]);
    assert!(out.contains("installed weather 1.0.0 for"), "{out}");
    assert_eq!(
        market.locked().unwrap().sha256,
        sha256_of(&support::weather_plugin())
    );

    let dir = market.dir_config(None);
    let out = ok(&dir, &["plugins", "search", "weather"]);
    assert!(out.starts_with("weather 1.0.0"), "{out}");
}

/// A registry of a newer format (in its index, or in a release file) is
/// refused with the format it has and the one this client reads, naming
/// the file, and nothing is installed.
#[test]
fn a_newer_registry_format_is_refused_naming_its_version() {
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    let peer = Peer::start(market.root());
    let config = market.config(&peer.base, &[&market.publisher], None, "");
    edit_index(&market, |index| {
        index["format"] = json!(2);
        // What format 1 cannot read.
        index["plugins"] = json!([]);
    });
    let message = format!(
        "{}index.json: registry index format 2 is newer than this backworks reads (1); upgrade backworks to use this registry",
        peer.base
    );
    refused(&config, &["plugins", "search", "weather"], 1, &[&message]);
    refused(&config, &["plugins", "install", "weather"], 1, &[&message]);
    assert_eq!(market.locked(), None);

    // Back to format 1, but the release file is of format 2.
    edit_index(&market, |index| {
        index["format"] = json!(1);
        index["plugins"] = json!({"weather": {"description": "", "versions": {}}});
    });
    let mut release = release_of(&market, "1.0.0");
    release["format"] = json!(2);
    put_release(&market, "1.0.0", &release, None);
    refused(
        &config,
        &["plugins", "install", "weather"],
        1,
        &[
            "refusing weather 1.0.0: plugins/weather/1.0.0/release.json: registry release file format 2 is newer than this backworks reads (1); upgrade backworks",
        ],
    );
    assert_eq!(market.locked(), None);
    assert!(!market.cache().join("weather").exists());
}

/// Publishes a release of weather `version` built for plugin ABI `abi`
/// (this host speaks another): its release file, with an artifact that is
/// never fetched, and its entry in the index, saying `index_abi`.
fn put_foreign_abi_release(market: &Market, version: &str, abi: u32, index_abi: Option<u32>) {
    let mut release = release_of(market, "1.0.1");
    release["version"] = json!(version);
    release["abi"] = json!(abi);
    let file = artifact_name(version);
    release["targets"][TARGET]["path"] =
        json!(format!("plugins/weather/{version}/{TARGET}/{file}"));
    release["targets"][TARGET]["signature"] =
        json!(format!("plugins/weather/{version}/{TARGET}/{file}.minisig"));
    put_release(market, version, &release, index_abi);
}

/// Part 4 of issue 14: install and update take the newest release built
/// for the plugin ABI this host speaks, say which newer ones they passed
/// over and why, and name the newest release and its ABI when none fits;
/// an index written before it listed ABIs is read through the release
/// files; an index that disagrees with a release file is refused.
#[test]
fn install_and_update_pick_the_newest_release_this_host_can_load() {
    let host = backworks_plugin_sdk::abi::ABI_VERSION;
    let foreign = host + 1;
    let market = Market::new();
    market.publish(&support::weather_plugin(), "1.0.0", &market.publisher);
    market.publish(&weather_v101(), "1.0.1", &market.publisher);
    put_foreign_abi_release(&market, "1.1.0", foreign, Some(foreign));
    let config = market.dir_config(None);
    let skipped = format!(
        "  skipped weather 1.1.0: built for plugin ABI v{foreign}, this host speaks v{host}\n"
    );

    let out = ok(&config, &["plugins", "install", "weather@1.0.0"]);
    assert!(out.contains("installed weather 1.0.0 for"), "{out}");
    assert!(!out.contains("skipped"), "{out}");
    let out = ok(&config, &["plugins", "update", "weather"]);
    assert!(out.contains("updated weather 1.0.0 -> 1.0.1\n"), "{out}");
    assert!(out.ends_with(&skipped), "{out}");
    assert_eq!(market.locked().unwrap().version.to_string(), "1.0.1");
    let out = ok(&config, &["plugins", "update", "weather"]);
    assert_eq!(
        out,
        format!("weather 1.0.1 is up to date (updates allowed: minor)\n{skipped}")
    );

    refused(
        &config,
        &["plugins", "install", "weather@1.1.0"],
        2,
        &[&format!(
            "no release of `weather` matching `=1.1.0` is built for plugin ABI v{host}, which this host speaks: the newest, weather 1.1.0, is built for ABI v{foreign}; install a version built for ABI v{host}"
        )],
    );
    assert_eq!(market.locked().unwrap().version.to_string(), "1.0.1");

    // An index from before the index listed ABIs: the release file says.
    ok(&config, &["plugins", "remove", "weather"]);
    put_foreign_abi_release(&market, "1.1.0", foreign, None);
    let out = ok(&config, &["plugins", "install", "weather"]);
    assert!(out.contains("installed weather 1.0.1 for"), "{out}");
    assert!(out.ends_with(&skipped), "{out}");

    // An index that lists the ABI this host speaks for a release built
    // for another is refused, not believed.
    ok(&config, &["plugins", "remove", "weather"]);
    put_foreign_abi_release(&market, "1.1.0", foreign, Some(host));
    refused(
        &config,
        &["plugins", "install", "weather"],
        1,
        &[
            "refusing weather 1.1.0: release file plugins/weather/1.1.0/release.json does not match the signed index",
            &format!(
                "the index says it is built for plugin ABI v{host}, the release file says v{foreign}"
            ),
        ],
    );
    assert_eq!(market.locked(), None);
}

/// What version 1.0.0 of the capability tests declares: nothing outside.
const DECLARES_NONE: &str = r#"{"network":"none","files":{"read":[],"write":[]},"env":[]}"#;
/// What version 1.0.1 declares: more than 1.0.0.
const DECLARES_MORE: &str =
    r#"{"network":["api.example.com:443"],"files":{"read":[],"write":[]},"env":["HOME"]}"#;

/// The weather example as `version`, declaring `capabilities` (canonical
/// JSON) in its record as `cargo backworks build` makes it do: the
/// declaration is handed to `export_plugin!` in
/// `BACKWORKS_PLUGIN_CAPABILITIES`, set here by the copy's
/// `.cargo/config.toml`. Each variant has a library name of its own
/// (`lib_name`), so the builds never overwrite each other.
fn weather_declaring(version: &str, lib_name: &str, capabilities: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(name, _)| name == lib_name) {
        return path.clone();
    }
    let copy = support::workspace().join(format!("target/fixture-sources/{lib_name}"));
    harness::weather_copy(&copy, version, Some(lib_name), |source| source);
    let config = copy.join(".cargo/config.toml");
    let text = format!(
        "[env]\n{} = {}\n",
        backworks_plugin_sdk::abi::capabilities::CAPABILITIES_ENV,
        toml_string(capabilities)
    );
    if std::fs::read_to_string(&config).ok().as_deref() != Some(text.as_str()) {
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(&config, text).unwrap();
    }
    let path = support::cargo_build(&copy, None);
    built.push((lib_name.to_owned(), path.clone()));
    path
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// 1.0.0 declares `network: none`; 1.0.1 asks for an endpoint and a
/// variable more. `plugins update` lists what it asks for and leaves the
/// lock at 1.0.0 (exit code 1) until `--accept-capabilities`; search, install
/// and inspect show the declarations.
#[test]
fn an_update_asking_for_more_capabilities_is_applied_only_when_accepted() {
    let market = Market::new();
    let v100 = weather_declaring("1.0.0", "weather_caps_none", DECLARES_NONE);
    let v101 = weather_declaring("1.0.1", "weather_caps_more", DECLARES_MORE);
    market.publish(&v100, "1.0.0", &market.publisher);
    let config = market.dir_config(Some("1"));
    let out = ok(&config, &["plugins", "install", "weather"]);
    assert!(out.contains("\n  declares network none\n"), "{out}");
    let out = ok(&config, &["plugins", "search", "weather", "--json"]);
    // The glibc release it needs follows this machine's C library.
    let page: Value = serde_json::from_str(&out).unwrap();
    let floor = backworks_artifact::floor::of_bytes(&std::fs::read(&v100).unwrap()).floor();
    assert_eq!(
        page["hits"][0]["floors"][TARGET]["glibc"],
        json!(floor.glibc.map(|v| v.to_string()))
    );
    let out = out
        .lines()
        .map(|line| match line.find("\"glibc\": \"") {
            Some(at) => format!("{}\"glibc\": \"[this machine's floor]\"\n", &line[..at]),
            None => format!("{line}\n"),
        })
        .collect::<String>()
        .replace(TARGET, "[TARGET]");
    insta::assert_snapshot!("search_shows_capabilities_json", out);

    market.publish(&v101, "1.0.1", &market.publisher);
    let out = ok(&config, &["plugins", "search", "weather"]);
    assert_eq!(
        out,
        format!(
            "weather 1.0.1  Weather API integration\n  declares network api.example.com:443; env HOME\n{}",
            needs_line(&v101)
        )
    );
    let before = std::fs::read_to_string(market.lock_path()).unwrap();
    let held = run(&config, &["plugins", "update"]);
    assert_eq!(held.code, 1, "{held:?}");
    insta::assert_snapshot!(
        "update_asking_for_more_capabilities",
        format!("stdout:\n{}stderr:\n{}", held.stdout, held.stderr)
    );
    assert_eq!(std::fs::read_to_string(market.lock_path()).unwrap(), before);
    assert!(!market.cached("1.0.1").exists(), "not even downloaded");

    let out = ok(
        &config,
        &["plugins", "update", "weather", "--accept-capabilities"],
    );
    assert!(out.contains("updated weather 1.0.0 -> 1.0.1\n"), "{out}");
    assert!(
        out.contains("\n  declares network api.example.com:443; env HOME\n"),
        "{out}"
    );
    let locked = market.locked().unwrap();
    assert_eq!(locked.version.to_string(), "1.0.1");
    assert_eq!(locked.sha256, sha256_of(&v101));

    // The installed library's own record, read by inspect.
    let library = market.cached("1.0.1").join(artifact_name("1.0.1"));
    let mut command = harness::backworks();
    command.args(["plugins", "inspect", "--json"]).arg(&library);
    let (code, out, err) = harness::run_bounded(command, Duration::from_secs(120));
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["capabilities"],
        serde_json::from_str::<Value>(DECLARES_MORE).unwrap()
    );
    // Nothing more is asked now: the next update is up to date.
    let out = ok(&config, &["plugins", "update"]);
    assert!(out.contains("weather 1.0.1 is up to date"), "{out}");
}

/// A registry whose release file (and index) claim that a version asks
/// for less than its library declares is refused: the signature covers the
/// library's record, not the registry's copy.
#[test]
fn a_registry_understating_a_plugins_capabilities_is_refused() {
    let market = Market::new();
    let v101 = weather_declaring("1.0.1", "weather_caps_more", DECLARES_MORE);
    market.publish(&v101, "1.0.1", &market.publisher);
    let none: Value = serde_json::from_str(DECLARES_NONE).unwrap();
    let mut release = release_of(&market, "1.0.1");
    assert_eq!(
        release["capabilities"],
        serde_json::from_str::<Value>(DECLARES_MORE).unwrap()
    );
    release["capabilities"] = none.clone();
    put_release(&market, "1.0.1", &release, Some(1));
    edit_index(&market, |index| {
        index["plugins"]["weather"]["versions"]["1.0.1"]["capabilities"] = none;
    });
    let config = market.dir_config(None);
    // What the index says is shown; the install finds the truth.
    let out = ok(&config, &["plugins", "search", "weather"]);
    assert!(out.contains("declares network none"), "{out}");
    refused(
        &config,
        &["plugins", "install", "weather"],
        1,
        &[
            "refusing weather 1.0.1: its library declares network api.example.com:443; env HOME, but the registry's release says it declares network none; the signature covers the library's declaration",
        ],
    );
    assert!(market.locked().is_none());
    assert!(!market.cached("1.0.1").exists());
    assert!(market.staging().is_empty(), "{:?}", market.staging());
}
