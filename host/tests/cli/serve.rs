//! `backworks serve` end to end: signed plugins verified and loaded, HTTP on
//! 127.0.0.1 through the pipeline, JWT auth, every tamper case refused before
//! anything loads, faulty plugins contained, graceful shutdown.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backworks_plugin_sdk::signature;
use serde_json::{Value, json};

use crate::harness::{Keys, Server, backworks, config, copy_into};
use crate::support;

/// Runs `serve` expecting it to refuse to start; returns (exit code, stderr).
fn refuse(config: &Path) -> (i32, String) {
    let mut child = backworks()
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return (status.code().unwrap_or(-1), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not exit for {}", config.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn client() -> reqwest::blocking::Client {
    crate::harness::http_client()
}

fn get(server: &Server, path: &str) -> (u16, Value) {
    let response = client()
        .get(format!("{}{path}", server.base))
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn weather_plugin_is_verified_loaded_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let weather = keys.signed_copy(&support::weather_plugin(), dir.path(), "libweather.so");
    // A second library in the same process, listed after the first: each
    // is its own library (the first answers /weather).
    let c_plugin = keys.signed_copy(&support::c_plugin(), dir.path(), "libweather_c.so");
    let config = config(
        dir.path(),
        &keys,
        "5s",
        &format!(
            "  weather:\n    type: external\n    path: {}\n    config:\n      api_key: \"12345\"\n  weather-c:\n    type: external\n    path: {}\n",
            weather.display(),
            c_plugin.display()
        ),
    );
    let server = crate::harness::start(&config, "info");

    let (status, body) = get(&server, "/weather");
    assert_eq!(status, 200);
    assert_eq!(body, json!({"humidity": 60, "temperature": 25}));
    let (status, body) = get(&server, "/nowhere");
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no plugin handles GET /nowhere");

    let (status, body) = get(&server, "/healthz");
    assert_eq!(status, 200);
    assert_eq!(body["plugins"]["weather"]["healthy"], true);
    let (_, body) = get(&server, "/plugins");
    assert_eq!(body["plugins"][1]["name"], "weather-c");
    assert_ne!(body["plugins"][0]["sha256"], body["plugins"][1]["sha256"]);
    let plugin = &body["plugins"][0];
    assert_eq!(plugin["name"], "weather");
    assert_eq!(plugin["version"], "1.0.0");
    assert_eq!(
        plugin["key_id"],
        signature::KeyId::of_public_key(&keys.pk).to_string()
    );
    let metrics = client()
        .get(format!("{}/metrics", server.base))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("backworks_hook_calls_total{plugin=\"weather\",hook=\"process_endpoint\",outcome=\"ok\"}"),
        "{metrics}"
    );
}

#[test]
fn the_c_plugin_is_served_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let plugin = keys.signed_copy(&support::c_plugin(), dir.path(), "libweather_c.so");
    let config = config(
        dir.path(),
        &keys,
        "5s",
        &format!(
            "  weather-c:\n    type: external\n    path: {}\n",
            plugin.display()
        ),
    );
    let server = crate::harness::start(&config, "info");
    let (status, body) = get(&server, "/weather");
    assert_eq!(status, 200);
    assert_eq!(body, json!({"humidity": 60, "temperature": 25}));
}

#[test]
fn jwt_auth_accepts_valid_tokens_and_rejects_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let weather = keys.signed_copy(&support::weather_plugin(), dir.path(), "libweather.so");
    let config = config(
        dir.path(),
        &keys,
        "5s",
        &format!(
            "  auth:\n    type: builtin\n    config:\n      jwt_secret: \"test-secret\"\n  weather:\n    type: external\n    path: {}\n",
            weather.display()
        ),
    );
    let server = crate::harness::start(&config, "info");
    let url = format!("{}/weather", server.base);

    let response = client().get(&url).send().unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().unwrap();
    assert_eq!(body["plugin"], "auth");

    let response = client()
        .get(&url)
        .bearer_auth("not.a.token")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = json!({"sub": "alice", "exp": exp});
    let wrong = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret"),
    )
    .unwrap();
    let response = client().get(&url).bearer_auth(&wrong).send().unwrap();
    assert_eq!(response.status().as_u16(), 401);

    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"test-secret"),
    )
    .unwrap();
    let response = client().get(&url).bearer_auth(&token).send().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().unwrap();
    assert_eq!(body, json!({"humidity": 60, "temperature": 25}));
}

/// Each tampered plugin: `serve` exits 1 naming the reason, and nothing of
/// the plugin was loaded.
#[test]
fn tampered_plugins_are_refused_before_anything_loads() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let other_keys = Keys::new();
    let case = |name: &str, prepare: &dyn Fn(&Path) -> PathBuf, expected: &str| {
        let case_dir = dir.path().join(name);
        std::fs::create_dir_all(&case_dir).unwrap();
        let library = prepare(&case_dir);
        let config = config(
            &case_dir,
            &keys,
            "5s",
            &format!(
                "  victim:\n    type: external\n    path: {}\n",
                library.display()
            ),
        );
        let (code, stderr) = refuse(&config);
        assert_eq!(code, 1, "{name}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{name}: expected `{expected}` in:\n{stderr}"
        );
        assert!(
            !stderr.contains("plugin verified and loaded"),
            "{name}: {stderr}"
        );
    };
    let weather = support::weather_plugin();

    case(
        "unsigned",
        &|d| copy_into(d, &weather, "libweather.so"),
        "no signature at",
    );
    case(
        "wrong-key",
        &|d| {
            let lib = copy_into(d, &weather, "libweather.so");
            other_keys.sign(&lib);
            lib
        },
        &signature::KeyId::of_public_key(&other_keys.pk).to_string(),
    );
    case(
        "flipped-byte",
        &|d| {
            let lib = keys.signed_copy(&weather, d, "libweather.so");
            let mut bytes = std::fs::read(&lib).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x01;
            std::fs::write(&lib, bytes).unwrap();
            lib
        },
        "modified",
    );
    case(
        "edited-comment",
        &|d| {
            let lib = keys.signed_copy(&weather, d, "libweather.so");
            let signature = format!("{}.minisig", lib.display());
            let text = std::fs::read_to_string(&signature).unwrap();
            std::fs::write(
                &signature,
                text.replacen("version:1.0.0", "version:1.0.1", 1),
            )
            .unwrap();
            lib
        },
        "trusted comment was altered",
    );
    case(
        "another-plugins-signature",
        &|d| {
            let lib = copy_into(d, &weather, "libweather.so");
            let other = keys.signed_copy(&support::c_plugin(), d, "libweather_c.so");
            std::fs::rename(
                format!("{}.minisig", other.display()),
                format!("{}.minisig", lib.display()),
            )
            .unwrap();
            lib
        },
        "another plugin",
    );
    case(
        "another-target",
        &|d| keys.signed_copy(&support::weather_plugin_windows(), d, "weather.so"),
        "was built for target `x86_64-pc-windows-gnu`",
    );
    case(
        "abi-mismatch",
        &|d| keys.signed_copy(&support::abi_v2_plugin(), d, "libabi_v2.so"),
        "ABI v2",
    );
}

#[test]
fn faulty_hooks_are_contained() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let echo = keys.signed_copy(&support::echo_plugin(), dir.path(), "libecho.so");
    let config = config(
        dir.path(),
        &keys,
        "500ms",
        &format!(
            "  echo:\n    type: external\n    path: {}\n",
            echo.display()
        ),
    );
    let server = crate::harness::start(&config, "info");

    let (status, body) = get(&server, "/error");
    assert_eq!(status, 500);
    assert_eq!(body["plugin"], "echo");
    assert!(
        body["error"].as_str().unwrap().contains("error requested"),
        "{body}"
    );

    let (status, body) = get(&server, "/panic");
    assert_eq!(status, 500);
    assert!(
        body["error"].as_str().unwrap().contains("panicked"),
        "{body}"
    );

    // A hang: 504 after the hook timeout, while other requests are served.
    let hang = {
        let url = format!("{}/hang", server.base);
        std::thread::spawn(move || {
            let started = Instant::now();
            let response = client().get(url).send().unwrap();
            (response.status().as_u16(), started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..5 {
        let response = client()
            .post(format!("{}/echo", server.base))
            .body("still here")
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.text().unwrap(), "POST still here");
    }
    let (status, elapsed) = hang.join().unwrap();
    assert_eq!(status, 504);
    // Not before the 500 ms hook timeout (the client's own timeout bounds
    // it from above: how much later depends on the machine's load).
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");

    // Several hangs at once still leave the server answering.
    let hangs: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{}/hang", server.base);
            std::thread::spawn(move || client().get(url).send().unwrap().status().as_u16())
        })
        .collect();
    let (status, _) = get(&server, "/healthz");
    assert_eq!(status, 200);
    for hang in hangs {
        assert_eq!(hang.join().unwrap(), 504);
    }
    let (status, _) = get(&server, "/panic");
    assert_eq!(status, 500);
    let response = client()
        .post(format!("{}/echo", server.base))
        .body("after all that")
        .send()
        .unwrap();
    assert_eq!(response.text().unwrap(), "POST after all that");
}

#[test]
fn a_plugin_failing_initialize_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let echo = keys.signed_copy(&support::echo_plugin(), dir.path(), "libecho.so");
    let config = config(
        dir.path(),
        &keys,
        "5s",
        &format!(
            "  echo:\n    type: external\n    path: {}\n    config:\n      fail: true\n",
            echo.display()
        ),
    );
    let (code, stderr) = refuse(&config);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("plugin `echo` failed to start: initialize failed"),
        "{stderr}"
    );
    assert!(stderr.contains("`fail` is true"), "{stderr}");
}

#[test]
fn bad_configuration_stops_start_up_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backworks.yaml");
    std::fs::write(
        &path,
        "server:\n  listen: \"127.0.0.1:0\"\n  colour: blue\nplugins: {}\n",
    )
    .unwrap();
    let (code, stderr) = refuse(&path);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("backworks.yaml"), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");

    let path = dir.path().join("marketplace.yaml");
    std::fs::write(
        &path,
        "plugins:\n  stripe-plugin:\n    type: marketplace\n    version: \"1.2.0\"\n",
    )
    .unwrap();
    // A marketplace plugin needs a registry: the error is at its entry.
    let (code, stderr) = refuse(&path);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(
            "marketplace.yaml:2: plugins.stripe-plugin: a `type: marketplace` plugin needs a registry"
        ),
        "{stderr}"
    );
}

#[test]
fn sigterm_shuts_the_plugins_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let weather = keys.signed_copy(&support::weather_plugin(), dir.path(), "libweather.so");
    let config = config(
        dir.path(),
        &keys,
        "5s",
        &format!(
            "  weather:\n    type: external\n    path: {}\n",
            weather.display()
        ),
    );
    let mut server = crate::harness::start(&config, "info");
    assert_eq!(get(&server, "/weather").0, 200);
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
    let log: Vec<String> = server.stderr.try_iter().collect();
    assert!(
        log.iter().any(|l| l.contains("plugin shut down")),
        "{}",
        log.join("\n")
    );
}

/// The file is swapped between a signed plugin and an unsigned one while the
/// host loads it again and again: every load that succeeds is the signed
/// plugin; the unsigned bytes are never loaded.
#[test]
fn swapping_the_file_during_loading_never_loads_unverified_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let signed = keys.signed_copy(&support::weather_plugin(), dir.path(), "signed.so");
    let intruder = copy_into(dir.path(), &support::echo_plugin(), "intruder.so");
    let target = dir.path().join("libplugin.so");
    std::fs::copy(&signed, &target).unwrap();
    std::fs::copy(
        format!("{}.minisig", signed.display()),
        format!("{}.minisig", target.display()),
    )
    .unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, signed, intruder, target) = (
            stop.clone(),
            signed.clone(),
            intruder.clone(),
            target.clone(),
        );
        std::thread::spawn(move || {
            let staging = target.with_extension("tmp");
            let mut flips = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let from = if flips.is_multiple_of(2) {
                    &intruder
                } else {
                    &signed
                };
                std::fs::copy(from, &staging).unwrap();
                std::fs::rename(&staging, &target).unwrap();
                flips += 1;
            }
            flips
        })
    };
    let trusted = [keys.pk.clone()];
    let policy = backworks_host::loader::LoadPolicy {
        trusted_keys: &trusted,
        require_signatures: true,
    };
    let (mut loaded, mut refused) = (0, 0);
    for _ in 0..20 {
        match backworks_host::loader::load_plugin(&target, policy) {
            Ok(plugin) => {
                assert_eq!(plugin.raw.name(), "weather", "only verified bytes may load");
                assert_eq!(plugin.metadata().name, "weather");
                loaded += 1;
            }
            Err(error) => {
                assert!(
                    matches!(error, backworks_host::loader::LoadError::Signature { .. }),
                    "{error}"
                );
                refused += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = swapper.join().unwrap();
    assert!(flips > 2, "the file was swapped {flips} times");
    assert_eq!(loaded + refused, 20);
}

/// A loaded library used through the same trait as the built-in plugins.
#[test]
fn a_dynamic_plugin_is_a_backworks_plugin() {
    use backworks_plugin_sdk::BackworksPlugin;

    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let echo = keys.signed_copy(&support::echo_plugin(), dir.path(), "libecho.so");
    let trusted = [keys.pk.clone()];
    let loaded = backworks_host::loader::load_plugin(
        &echo,
        backworks_host::loader::LoadPolicy {
            trusted_keys: &trusted,
            require_signatures: true,
        },
    )
    .unwrap();
    let plugin: Box<dyn BackworksPlugin> =
        Box::new(backworks_host::dynamic::DynamicPlugin::new(loaded));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert_eq!(plugin.name(), "echo");
        plugin.initialize(&json!({})).await.unwrap();
        plugin.health_check().await.unwrap();
        let body = plugin
            .process_endpoint_data("/echo", "PUT", "through the trait")
            .await
            .unwrap();
        assert_eq!(body.as_deref(), Some("PUT through the trait"));
        let error = plugin
            .process_endpoint_data("/panic", "GET", "")
            .await
            .unwrap_err();
        assert!(error.to_string().contains("panicked"), "{error}");
        plugin.shutdown().await.unwrap();
    });
}
