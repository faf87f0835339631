//! Hot swapping, end to end: `backworks serve --watch` under load (several
//! keep-alive clients, thousands of requests, counted) while the plugin's
//! library is replaced on disk, and refused replacements; plus the library
//! API the automatic updater calls (`swap::Swapper::replace`).
//!
//! Versions A (1.0.1), B (1.1.0) and C (1.2.0, `initialize` fails) are the
//! weather example copied under `target/fixtures/swap-src/`, each with its
//! own version and answer, built once per run into the shared fixture
//! target directory (under their own library names, so they never
//! overwrite the example's `libweather.so` that other tests use). Each
//! one's `before_request` routes `/weather` to its own endpoint, slowly, so
//! a request whose hooks ran on two versions would fail, and requests are
//! in flight on the old version while it is replaced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backworks_artifact::signature;
use backworks_host::swap::{Pin, SwapError};
use serde_json::{Value, json};

use crate::harness::{self, Keys, Server, config, edit, external_plugins, sha256_of, start_with};
use crate::load::{Answer, Load, assert_no_failure};
use crate::support;

/// How long any one wait of these tests may take: only catches a hang (the
/// tests count answers and log lines, and never time them).
const WAIT: Duration = crate::load::HANG;

/// The answer of a variant built by [`weather_variant`].
fn answer_of(version: &str) -> Value {
    json!({"humidity": 60, "temperature": 25, "version": version})
}

/// The weather example as version `version`, answering
/// [`answer_of`]`(version)` after a `before_request` that routes `/weather`
/// to `/weather/<version>` in 2 ms, or failing `initialize` when
/// `initialize_fails`; built once per run.
fn weather_variant(version: &str, initialize_fails: bool) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    // Held during the build: cargo serialises on the target dir anyway.
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(version) {
        return path.clone();
    }
    let crate_dir = support::fixture_target_dir()
        .join("swap-src")
        .join(format!("weather-{version}"));
    let lib_name = format!("weather_{}", version.replace('.', "_"));
    harness::weather_copy(&crate_dir, version, Some(&lib_name), |source| {
        let mut source = edit(
            &edit(
                &source,
                "json!({\"temperature\": 25, \"humidity\": 60})",
                &format!(
                    "json!({{\"temperature\": 25, \"humidity\": 60, \"version\": \"{version}\"}})"
                ),
            ),
            "endpoint == \"/weather\"",
            &format!("endpoint == \"/weather/{version}\""),
        );
        // `before_request` routes `/weather` to this version's own endpoint,
        // and takes its time: a request whose hooks ran on two versions gets
        // a 404, and requests are in flight on the old version when it is
        // replaced.
        source = edit(
            &source,
            "    async fn process_endpoint_data",
            &format!(
                "    async fn before_request(&self, request: &HttpRequest) -> BackworksResult<RequestAction> {{
        if request.path != \"/weather\" {{
            return Ok(RequestAction::Continue);
        }}
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let mut routed = request.clone();
        routed.path = String::from(\"/weather/{version}\");
        Ok(RequestAction::Rewrite(routed))
    }}

    async fn process_endpoint_data"
            ),
        );
        if initialize_fails {
            source = edit(
                &source,
                "// Initialize with API key from config\n        Ok(())",
                &format!(
                    "Err(BackworksError::Config(\"version {version} refuses to start\".into()))"
                ),
            );
        }
        source
    });
    let library = support::cargo_build(&crate_dir, None);
    built.insert(version.to_owned(), library.clone());
    library
}

/// Version A: 1.0.1, answers [`answer_of`]`("1.0.1")`.
fn version_a() -> PathBuf {
    weather_variant("1.0.1", false)
}

/// Version B: 1.1.0, answers [`answer_of`]`("1.1.0")`.
fn version_b() -> PathBuf {
    weather_variant("1.1.0", false)
}

/// Version C: 1.2.0, whose `initialize` fails.
fn version_c() -> PathBuf {
    weather_variant("1.2.0", true)
}

/// Puts `library` (and `signature`, the text of its `.minisig`) in place of
/// `target`, each atomically (a temporary file, then a rename), the
/// library first, as a build followed by `cargo backworks sign` would.
fn install(library: &Path, signature: &str, target: &Path) {
    let dir = target.parent().unwrap();
    let name = target.file_name().unwrap().to_str().unwrap();
    let temporary = dir.join(format!(".{name}.tmp"));
    std::fs::copy(library, &temporary).unwrap();
    std::fs::rename(&temporary, target).unwrap();
    let temporary = dir.join(format!(".{name}.minisig.tmp"));
    std::fs::write(&temporary, signature).unwrap();
    std::fs::rename(&temporary, format!("{}.minisig", target.display())).unwrap();
}

/// The `.minisig` text of `library` signed with `keys`.
fn signature_of(library: &Path, keys: &Keys) -> String {
    let bytes = std::fs::read(library).unwrap();
    signature::sign(&bytes, &keys.sk, Some(&keys.pk))
        .unwrap()
        .minisig
}

/// The server's log, read as it comes.
pub(crate) struct Log {
    lines: Vec<String>,
}

impl Log {
    pub(crate) fn new() -> Self {
        Self { lines: Vec::new() }
    }

    /// Waits (at most [`WAIT`]) for a line containing every one of `parts`
    /// (lines read by earlier waits included).
    pub(crate) fn wait_for(&mut self, server: &Server, parts: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        let mut checked = 0;
        loop {
            if let Some(line) = self.lines[checked..]
                .iter()
                .find(|line| parts.iter().all(|part| line.contains(part)))
            {
                return line.clone();
            }
            checked = self.lines.len();
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no log line with {parts:?} within {WAIT:?}; the log:\n{}",
                self.lines.join("\n")
            );
            if let Ok(line) = server
                .stderr
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                self.lines.push(line);
            }
        }
    }
}

/// A GET of `path`: the status and the body as JSON (or as a string).
fn get(client: &reqwest::blocking::Client, server: &Server, path: &str) -> (u16, Value) {
    let response = client.get(format!("{}{path}", server.base)).send().unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `GET /plugins`' entry for `name`.
fn listed(client: &reqwest::blocking::Client, server: &Server, name: &str) -> Value {
    let (status, body) = get(client, server, "/plugins");
    assert_eq!(status, 200, "{body}");
    body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|plugin| plugin["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        .clone()
}

/// `library` signed by `keys` as `<dir>/libweather.so`, served as the
/// `external` plugin `weather` by `backworks serve --watch`: the running
/// file's path and the server.
fn serve_watched(library: &Path, dir: &Path, keys: &Keys) -> (PathBuf, Server) {
    serve_watched_in(library, dir, keys, "thread")
}

/// [`serve_watched`] with every plugin in the tier `isolation`.
fn serve_watched_in(library: &Path, dir: &Path, keys: &Keys, isolation: &str) -> (PathBuf, Server) {
    let running = keys.signed_copy(library, dir, "libweather.so");
    // The hook timeout only catches a hang: a 2 ms hook on a busy machine
    // must not turn into a 504.
    let config = config(
        dir,
        keys,
        "60s",
        &external_plugins(&[("weather".into(), running.clone())]),
    );
    harness::with_server_settings(&config, &format!("  isolation: {isolation}\n"));
    (running, start_with(&config, "info", &["--watch"]))
}

#[test]
fn a_rebuilt_library_is_swapped_in_under_load_without_a_failed_request() {
    swapped_in_under_load("thread");
}

/// The same swap in the `inline` tier (issue 15): the replacement runs
/// inline too.
#[test]
fn a_rebuilt_library_is_swapped_in_under_load_without_a_failed_request_inline() {
    swapped_in_under_load("inline");
}

/// The same swap in the `process` tier (issue 16): the replacement gets a
/// worker of its own, and the old worker ends once the old version is
/// retired.
#[cfg(target_os = "linux")]
#[test]
fn a_rebuilt_library_is_swapped_in_under_load_without_a_failed_request_in_a_worker() {
    swapped_in_under_load("process");
}

fn swapped_in_under_load(isolation: &str) {
    let (a, b) = (version_a(), version_b());
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let (running, server) = serve_watched_in(&a, dir.path(), &keys, isolation);
    let mut log = Log::new();
    let http = harness::http_client();
    assert_eq!(listed(&http, &server, "weather")["version"], "1.0.1");
    assert_eq!(listed(&http, &server, "weather")["isolation"], isolation);
    let old_worker = listed(&http, &server, "weather")["worker"]["pid"].as_u64();
    assert_eq!(old_worker.is_some(), isolation == "process");

    let load = Load::start(&server, 4);
    let load_started = Instant::now();
    // Every client has had 250 answers from A before B is installed.
    load.wait_for_each(&load.answered(), 250);
    install(&b, &signature_of(&b, &keys), &running);
    // The first `/plugins` answer naming B: the switch happened before it.
    let deadline = Instant::now() + WAIT;
    let switched = loop {
        let entry = listed(&http, &server, "weather");
        if entry["version"] == "1.1.0" {
            break (Instant::now(), entry);
        }
        assert!(
            Instant::now() < deadline,
            "B was not swapped in within {WAIT:?}: {entry}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let (switched_at, entry) = switched;
    // And 500 more each after `/plugins` showed B: at most one of those per
    // client (in flight at the switch) can be A's.
    let at_switch = load.answered();
    load.wait_for_each(&at_switch, 500);
    let samples = load.finish();
    let load_time = load_started.elapsed();

    assert_no_failure(&samples);
    let (b_body, a_body) = (answer_of("1.1.0"), answer_of("1.0.1"));
    let total: usize = samples.iter().map(Vec::len).sum();
    let mut from_b = 0;
    for (client, answers) in samples.iter().enumerate() {
        // Each client's answers are A's, then B's: once B answered, every
        // later request (started after the switch) got B.
        let mut seen_b = false;
        for (index, (started, answer)) in answers.iter().enumerate() {
            let Answer::Body(body) = answer else {
                unreachable!("failures were ruled out above")
            };
            if *body == b_body {
                seen_b = true;
                from_b += 1;
            } else {
                assert_eq!(*body, a_body, "client {client}, request {index}");
                assert!(!seen_b, "client {client}, request {index}: A after B");
                assert!(
                    *started < switched_at,
                    "client {client}, request {index}: A for a request started after `/plugins` showed B"
                );
            }
        }
        assert!(seen_b, "client {client} never got B");
    }
    assert!(
        from_b >= 1_900 && from_b < total,
        "{from_b} of {total} from B"
    );
    eprintln!("{total} requests in {load_time:?}, {from_b} answered by B, none failed");

    assert_eq!(entry["sha256"], sha256_of(&b));
    assert_eq!(entry["isolation"], isolation, "{entry}");
    assert_eq!(
        entry["key_id"],
        signature::KeyId::of_public_key(&keys.pk).to_string()
    );
    let (status, health) = get(&http, &server, "/healthz");
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["plugins"]["weather"]["healthy"], true);
    assert_eq!(health["plugins"]["weather"]["version"], "1.1.0");
    assert_eq!(health["plugins"]["weather"]["sha256"], sha256_of(&b));
    log.wait_for(&server, &["plugin replaced", "1.0.1", "1.1.0"]);
    // The old version is shut down once its last request has finished.
    log.wait_for(&server, &["replaced version shut down", "1.0.1"]);
    if let Some(old_worker) = old_worker {
        let new_worker = entry["worker"]["pid"].as_u64();
        assert!(
            new_worker.is_some() && new_worker != Some(old_worker),
            "{entry}"
        );
        // The retired version's worker ends (killed and reaped).
        let deadline = Instant::now() + WAIT;
        while std::path::Path::new(&format!("/proc/{old_worker}")).exists() {
            assert!(
                Instant::now() < deadline,
                "the old worker {old_worker} outlived its version's retirement"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let metrics = http
        .get(format!("{}/metrics", server.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"backworks_plugin_swaps_total{plugin="weather",outcome="replaced"} 1"#),
        "{metrics}"
    );
    // Hook metrics count by plugin name, across versions.
    let line = format!(
        r#"backworks_hook_calls_total{{plugin="weather",hook="process_endpoint",outcome="ok"}} {total}"#
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} missing from:\n{metrics}"
    );
}

#[test]
fn refused_replacements_leave_the_running_version_serving() {
    let (a, c, echo) = (version_a(), version_c(), support::echo_plugin());
    let b = version_b();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let (running, server) = serve_watched(&a, dir.path(), &keys);
    let mut log = Log::new();
    let http = harness::http_client();
    let load = Load::start(&server, 3);
    load.wait_for_each(&load.answered(), 100);

    // B, signed by a key backworks.yaml does not trust.
    install(&b, &signature_of(&b, &Keys::new()), &running);
    log.wait_for(
        &server,
        &["replacement refused", "1.0.1", "which is not a trusted key"],
    );
    assert_eq!(listed(&http, &server, "weather")["version"], "1.0.1");

    // C, properly signed, fails its `initialize`.
    install(&c, &signature_of(&c, &keys), &running);
    log.wait_for(
        &server,
        &[
            "replacement refused",
            "version 1.2.0 of plugin `weather` failed to start: initialize failed",
            "version 1.2.0 refuses to start",
            "version 1.0.1 keeps serving",
        ],
    );
    assert_eq!(listed(&http, &server, "weather")["version"], "1.0.1");

    // Another plugin altogether, properly signed.
    install(&echo, &signature_of(&echo, &keys), &running);
    log.wait_for(
        &server,
        &[
            "replacement refused",
            "its metadata record names plugin `echo-plugin`, not `weather`",
        ],
    );
    let entry = listed(&http, &server, "weather");
    assert_eq!(entry["version"], "1.0.1");
    assert_eq!(entry["sha256"], sha256_of(&a));

    let at_last_refusal = load.answered();
    load.wait_for_each(&at_last_refusal, 100);
    let samples = load.finish();
    assert_no_failure(&samples);
    for answers in &samples {
        for (_, answer) in answers {
            let Answer::Body(body) = answer else {
                unreachable!("failures were ruled out above")
            };
            assert_eq!(*body, answer_of("1.0.1"));
        }
    }
    let metrics = http
        .get(format!("{}/metrics", server.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        !metrics.contains(r#"outcome="replaced""#),
        "nothing was replaced:\n{metrics}"
    );
    assert!(
        metrics.contains(r#"backworks_plugin_swaps_total{plugin="weather",outcome="refused"}"#),
        "{metrics}"
    );
}

/// The API the automatic updater calls, in-process: concurrent swaps of one
/// plugin are serialised, and each outcome is a precise value.
#[test]
fn replace_is_serialised_and_reports_versions() {
    use backworks_host::{config as host_config, metrics::Metrics, server};

    let (a, b, c) = (version_a(), version_b(), version_c());
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let running = keys.signed_copy(&a, dir.path(), "libweather.so");
    let b = keys.signed_copy(&b, dir.path(), "libweather-1.1.0.so");
    let c = keys.signed_copy(&c, dir.path(), "libweather-1.2.0.so");
    let path = config(
        dir.path(),
        &keys,
        "5s",
        &external_plugins(&[("weather".into(), running)]),
    );
    let config = host_config::load(&path).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let plugins = server::load_plugins(&config, &[]).unwrap();
        server::start_plugins(&plugins, config.hook_timeout)
            .await
            .unwrap();
        let server = server::Server::bind(
            &config,
            "127.0.0.1:0".parse().unwrap(),
            plugins,
            Arc::new(Metrics::new()),
        )
        .await
        .unwrap();
        let base = format!("http://{}", server.local_addr().unwrap());
        let swapper = Arc::clone(server.swapper());
        // As `backworks serve` does: replacements are probed by the binary.
        swapper.probe_replacements_with(PathBuf::from(env!("CARGO_BIN_EXE_backworks")));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        let answer = || {
            let url = format!("{base}/weather");
            tokio::task::spawn_blocking(move || {
                let text = harness::http_client()
                    .get(url)
                    .send()
                    .unwrap()
                    .text()
                    .unwrap();
                serde_json::from_str::<Value>(&text).unwrap()
            })
        };
        assert_eq!(answer().await.unwrap(), answer_of("1.0.1"));

        // A pinned swap loads nothing but the pinned bytes signed by the
        // pinned key (the automatic updater's swaps are all pinned).
        let key_id = backworks_artifact::signature::KeyId::of_public_key(&keys.pk).to_string();
        for pin in [
            Pin {
                sha256: sha256_of(&c),
                key_id: key_id.clone(),
            },
            Pin {
                sha256: sha256_of(&b),
                key_id: String::from("0000000000000000"),
            },
        ] {
            let error = swapper
                .replace_pinned("weather", &b, pin.clone())
                .await
                .unwrap_err();
            match &error {
                SwapError::NotPinned {
                    offered, pinned, ..
                } => {
                    assert_eq!(offered.sha256, sha256_of(&b));
                    assert_eq!(offered.key_id, key_id);
                    assert_eq!(**pinned, pin);
                }
                other => panic!("{other:?}"),
            }
            assert!(error.to_string().contains("is pinned"), "{error}");
            assert_eq!(answer().await.unwrap(), answer_of("1.0.1"));
        }

        // Two swaps to B at once: one replaces, the other then finds B
        // running. Unserialised, both would load and route B.
        let (first, second) = tokio::join!(
            swapper.replace("weather", &b),
            swapper.replace("weather", &b)
        );
        let (replaced, other) = match (first, second) {
            (Ok(replaced), other) | (other, Ok(replaced)) => (replaced, other),
            (first, second) => panic!("neither swap succeeded: {first:?}, {second:?}"),
        };
        assert!(
            matches!(other, Err(SwapError::Unchanged { ref name, .. }) if name == "weather"),
            "{other:?}"
        );
        assert_eq!(replaced.plugin, "weather");
        assert_eq!(replaced.old.version, "1.0.1");
        assert_eq!(replaced.new.version, "1.1.0");
        assert_eq!(replaced.new.sha256.as_deref(), Some(sha256_of(&b).as_str()));
        assert_eq!(replaced.new.path.as_deref(), Some(b.as_path()));
        assert_eq!(swapper.current("weather"), Some(replaced.new.clone()));
        assert_eq!(answer().await.unwrap(), answer_of("1.1.0"));

        // C fails `initialize`: B keeps serving.
        let error = swapper.replace("weather", &c).await.unwrap_err();
        match &error {
            SwapError::Start {
                name,
                version,
                hook,
                running,
                ..
            } => {
                assert_eq!(
                    (name.as_str(), version.as_str(), *hook, running.as_str()),
                    ("weather", "1.2.0", "initialize", "1.1.0")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(error.to_string().contains("refuses to start"), "{error}");
        assert_eq!(swapper.current("weather"), Some(replaced.new.clone()));
        assert_eq!(answer().await.unwrap(), answer_of("1.1.0"));

        let error = swapper.replace("nowhere", &b).await.unwrap_err();
        assert!(
            matches!(error, SwapError::UnknownPlugin { ref name } if name == "nowhere"),
            "{error:?}"
        );

        stop.send(()).unwrap();
        serving.await.unwrap().unwrap();
        // After shutdown, nothing is swapped any more.
        let error = swapper.replace("weather", &c).await.unwrap_err();
        assert!(matches!(error, SwapError::Closed { .. }), "{error:?}");
    });
    runtime.shutdown_background();
}

/// A C library (the weather-c plugin) whose constructor aborts the process.
const ABORTING_CONSTRUCTOR: &str = "#include <stdlib.h>\n\n/* Runs inside dlopen, and ends the process. */\n__attribute__((constructor)) static void aborts(void) {\n    abort();\n}\n";

/// Issue 14 (one lifecycle; the "also look at" of issue 13): `serve
/// --watch` is given validly signed replacements whose constructor never
/// returns, then one whose constructor aborts. Each is loaded first in a
/// probe process, which is killed (or dies) instead of this server: the
/// swap is refused with the reason logged, the running version keeps
/// answering, the dynamic loader of the server is never taken, so a sound
/// replacement afterwards is swapped in, and SIGTERM ends the server with
/// its ordinary exit.
#[test]
fn replacements_whose_constructor_hangs_or_crashes_are_refused_in_a_probe_process() {
    use crate::serve::{HANGING_CONSTRUCTOR, c_plugin_with};

    let hanging = c_plugin_with("weather_c_hangs_in_swap", HANGING_CONSTRUCTOR);
    let aborting = c_plugin_with("weather_c_aborts_in_swap", ABORTING_CONSTRUCTOR);
    let sound = c_plugin_with(
        "weather_c_second",
        "/* Another build of weather-c: other bytes, a sound library. */\nint weather_c_second_build = 2;\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let running = keys.signed_copy(&support::c_plugin(), dir.path(), "libweather_c.so");
    // Long enough that a sound library's probe (a process started, a
    // library loaded) never times out on a busy machine; the hanging one
    // costs this much once.
    let config = config(
        dir.path(),
        &keys,
        "10s",
        &format!(
            "  weather-c:\n    type: external\n    path: {}\n",
            running.display()
        ),
    );
    let mut server = start_with(&config, "info", &["--watch"]);
    let mut log = Log::new();
    log.wait_for(&server, &["watching the plugin's library", "weather-c"]);
    let http = harness::http_client();
    let answers = |count: usize, sha256: &str| {
        for _ in 0..count {
            let (status, body) = get(&http, &server, "/weather");
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["temperature"], 25, "{body}");
        }
        let entry = listed(&http, &server, "weather-c");
        assert_eq!(entry["sha256"], sha256, "{entry}");
    };
    let original = sha256_of(&running);
    answers(3, &original);

    install(&hanging, &signature_of(&hanging, &keys), &running);
    log.wait_for(
        &server,
        &[
            "replacement refused",
            "plugin `weather-c` failed to start: load timed out: no answer within 10000 ms",
            "its initialisers did not return in a probe process, which was killed",
            "version 1.0.0 keeps serving",
        ],
    );
    answers(3, &original);

    install(&aborting, &signature_of(&aborting, &keys), &running);
    log.wait_for(
        &server,
        &[
            "replacement refused",
            "plugin `weather-c` failed to start: load failed: its initialisers ended a probe process (signal 6)",
            "version 1.0.0 keeps serving",
        ],
    );
    answers(3, &original);

    // The server's own loader was never stuck: a sound replacement loads.
    install(&sound, &signature_of(&sound, &keys), &running);
    log.wait_for(&server, &["plugin replaced", "weather-c"]);
    answers(3, &sha256_of(&sound));

    let metrics = http
        .get(format!("{}/metrics", server.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for (outcome, count) in [("refused", 2), ("replaced", 1)] {
        let line = format!(
            r#"backworks_plugin_swaps_total{{plugin="weather-c",outcome="{outcome}"}} {count}"#
        );
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }

    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    while let Ok(line) = server.stderr.recv_timeout(Duration::from_secs(5)) {
        log.lines.push(line);
    }
    assert!(
        !log.lines
            .iter()
            .any(|line| line.contains("exiting without running exit handlers")),
        "{}",
        log.lines.join("\n")
    );
}
