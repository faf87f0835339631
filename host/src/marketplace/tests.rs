//! Unit tests of the marketplace client: specs, the client's `Send`-ness,
//! cache paths, transfer pacing and artifact paths. The registry end to end
//! is in `host/tests/cli/marketplace.rs`.

use super::download::artifact_file_name;
use super::*;

#[test]
fn specs() {
    let (name, requirement) = parse_spec("weather").unwrap();
    assert_eq!((name.as_str(), requirement), ("weather", VersionReq::STAR));
    let (_, exact) = parse_spec("weather@1.0.0").unwrap();
    assert!(exact.matches(&Version::new(1, 0, 0)));
    assert!(!exact.matches(&Version::new(1, 0, 1)));
    let (_, caret) = parse_spec("weather@1.0").unwrap();
    assert!(caret.matches(&Version::new(1, 4, 0)));
    let (_, range) = parse_spec("weather@>=1.0, <2").unwrap();
    assert!(range.matches(&Version::new(1, 9, 9)) && !range.matches(&Version::new(2, 0, 0)));
    for bad in [
        "",
        "@1.0",
        "Weather",
        "weather@",
        "weather@one",
        "we/ather@1",
    ] {
        let error = parse_spec(bad).unwrap_err();
        assert!(
            matches!(error, MarketplaceError::InvalidSpec { .. }),
            "{bad}"
        );
        assert_eq!(error.exit_code(), 2);
    }
}

/// A client configured in `dir` for a registry at a closed port, with
/// a made-up registry key: nothing is fetched.
fn client_in(dir: &Path) -> PluginMarketplace {
    let key = {
        let mut bytes = b"Ed".to_vec();
        bytes.extend([7; 40]);
        PublicKey::from_bytes(&bytes).unwrap().to_base64()
    };
    let config = crate::config::parse(
        &format!("marketplace:\n  registry: http://127.0.0.1:9/\n  key: {key}\n"),
        &dir.join("backworks.yaml"),
        &|_| None,
    )
    .unwrap();
    PluginMarketplace::from_config(&config).unwrap()
}

/// The automatic updater runs the client on tokio tasks: it and its
/// futures move between threads.
#[test]
fn the_client_and_its_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<PluginMarketplace>();
    let dir = tempfile::tempdir().unwrap();
    let client = client_in(dir.path()).with_progress(false);
    assert_eq!(client.lock_path(), dir.path().join("backworks.lock"));
    assert_eq!(client.cache_dir(), dir.path().join(".backworks/plugins"));
    // Futures do nothing until polled: these are only type checks.
    send(&client.search("weather"));
    send(&client.install("weather", &VersionReq::STAR));
    send(&client.update(None, false));
    send(&client.download_update("weather"));
    send(&client.remove("weather"));
    send(&client.prepare(&[], ServeMode::default()));
}

#[test]
fn the_cached_library_is_the_only_one_or_an_error_and_paths_stay_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let client = client_in(dir.path());
    let pin = |name: &str, target: &str| LockedPlugin {
        name: name.to_owned(),
        version: Version::new(1, 0, 0),
        target: target.to_owned(),
        sha256: String::new(),
        key_id: String::new(),
    };
    let weather = pin("weather", TARGET);
    assert_eq!(client.cached(&weather).unwrap(), None);
    let version_dir = client.cache_dir().join(format!("weather/1.0.0/{TARGET}"));
    std::fs::create_dir_all(&version_dir).unwrap();
    for file in ["b.so", "b.so.minisig", ".staged"] {
        std::fs::write(version_dir.join(file), b"x").unwrap();
    }
    assert_eq!(
        client.cached(&weather).unwrap(),
        Some(version_dir.join("b.so"))
    );
    // A second library: which one the lock pins is unknown, whatever
    // the directory order.
    std::fs::write(version_dir.join("a.so"), b"x").unwrap();
    let error = client.cached(&weather).unwrap_err();
    assert!(
        matches!(&error, MarketplaceError::AmbiguousCache { files, .. } if files == "a.so, b.so"),
        "{error}"
    );
    // A lock (or registry) naming paths: refused, never joined.
    for hostile in [pin("../../etc", TARGET), pin("weather", "../../..")] {
        let error = client.cached(&hostile).unwrap_err();
        assert!(matches!(error, MarketplaceError::UnsafePath(_)), "{error}");
    }
}

#[test]
fn a_transfer_is_given_up_at_its_deadline_or_below_the_minimum_rate() {
    let limits = TransferLimits {
        timeout: Duration::from_secs(100),
        min_rate: 10,
        window: Duration::from_secs(30),
    };
    let start = Instant::now();
    let at = |secs: u64| start + Duration::from_secs(secs);
    // 10 bytes per second on average, in bursts: fine until the
    // deadline, then given up whatever the rate.
    let mut pace = Pace::new("http://registry/x", limits, start);
    assert_eq!(pace.next_check(), at(30));
    for secs in [10, 20, 30] {
        pace.observe(at(secs), 100).unwrap();
    }
    assert_eq!(pace.next_check(), at(60), "a new window");
    for secs in [40, 50, 60, 70, 80, 90] {
        pace.observe(at(secs), 100).unwrap();
    }
    let error = pace.observe(at(100), 100).unwrap_err().to_string();
    assert!(
        error.contains("http://registry/x")
            && error.contains("`marketplace.transfer_timeout` (1m 40s)"),
        "{error}"
    );
    // A drip: a byte every 5 s is 6 bytes in 30 s, below 300.
    let mut pace = Pace::new("http://registry/y", limits, start);
    for secs in [5, 10, 15, 20, 25] {
        pace.observe(at(secs), 1).unwrap();
    }
    let error = pace.observe(at(30), 1).unwrap_err().to_string();
    assert!(
        error.contains("http://registry/y")
            && error.contains("6 bytes came in 30s")
            && error.contains("`marketplace.min_transfer_rate` (10 bytes per second)"),
        "{error}"
    );
    // Nothing at all: the check at the window's end gives up.
    let mut pace = Pace::new("http://registry/z", limits, start);
    assert!(pace.observe(at(29), 0).is_ok());
    assert!(pace.observe(at(30), 0).is_err());
    assert_eq!(humane(Duration::from_millis(750)), "750ms");
    assert_eq!(humane(Duration::from_secs(2)), "2s");
    assert_eq!(humane(Duration::from_secs(600)), "10m");
}

#[test]
fn artifact_paths_stay_in_their_directory() {
    let artifact = |path: &str, signature: &str| Artifact {
        path: path.to_owned(),
        signature: signature.to_owned(),
        sha256: String::new(),
        size: 0,
        floor: Default::default(),
        deps: Default::default(),
    };
    let release = Release {
        format: 1,
        name: String::from("weather"),
        version: String::from("1.0.0"),
        description: String::new(),
        keywords: Vec::new(),
        abi: 1,
        publisher: String::new(),
        published: 0,
        capabilities: None,
        targets: std::collections::BTreeMap::new(),
    };
    let dir = format!("plugins/weather/1.0.0/{TARGET}");
    let good = format!("{dir}/libweather.so");
    assert_eq!(
        artifact_file_name(
            &release,
            TARGET,
            &artifact(&good, &format!("{good}.minisig"))
        ),
        Ok(String::from("libweather.so"))
    );
    for (path, signature) in [
        (format!("{dir}/../../../../etc/passwd"), String::new()),
        (format!("{dir}/"), String::new()),
        (format!("{dir}/.hidden"), String::new()),
        (String::from("plugins/other/1.0.0/x/lib.so"), String::new()),
        (good.clone(), String::from("elsewhere.minisig")),
    ] {
        let signature = if signature.is_empty() {
            format!("{path}.minisig")
        } else {
            signature
        };
        assert!(
            artifact_file_name(&release, TARGET, &artifact(&path, &signature)).is_err(),
            "{path}"
        );
    }
}

#[test]
fn more_capabilities_are_what_the_new_version_adds_to_a_declared_old_one() {
    let caps = |json: &str| Capabilities::from_json(json).unwrap();
    let none = caps(r#"{"network":"none"}"#);
    let more = caps(r#"{"network":["api.example.com:443"],"env":["HOME"]}"#);
    // Declared nothing before: the process tier's defaults (any network,
    // reads anywhere, no variables) were granted; a variable is more.
    assert_eq!(added_capabilities(None, Some(&more)), ["env: HOME"]);
    assert!(added_capabilities(None, Some(&none)).is_empty());
    assert!(added_capabilities(None, None).is_empty());
    // Declared before, nothing now: what the defaults add.
    assert_eq!(
        added_capabilities(Some(&none), None),
        ["network: any", "read: /"]
    );
    assert_eq!(
        added_capabilities(Some(&none), Some(&more)),
        ["network: api.example.com:443", "env: HOME"]
    );
    assert!(added_capabilities(Some(&more), Some(&none)).is_empty());
    assert!(added_capabilities(Some(&more), Some(&more)).is_empty());
}

/// How an update could be made to ask for more unseen (found by a review).
mod hostile_registries {
    use super::*;

    fn declared(value: serde_json::Value) -> Capabilities {
        Capabilities::from_value(&value).unwrap()
    }

    /// A locked version that declared nothing ran with the process tier's
    /// defaults: no variables of the server's environment, no writes but
    /// `/dev/null` (docs/abi.md §2). An update declaring `env
    /// ["AWS_SECRET_ACCESS_KEY"]` and `write ["/"]` asks for more than
    /// that, and is applied (by `plugins update` and serve's updater)
    /// without `--accept-capabilities`.
    #[test]
    fn an_update_after_no_declaration_that_asks_for_secrets_and_writes_is_more() {
        let after = declared(serde_json::json!({
            "network": "any",
            "files": {"write": ["/"]},
            "env": ["AWS_SECRET_ACCESS_KEY"],
        }));
        let added = added_capabilities(None, Some(&after));
        assert!(
            added.iter().any(|a| a.contains("AWS_SECRET_ACCESS_KEY"))
                && added.iter().any(|a| a.contains("write")),
            "held for: {added:?}"
        );
    }

    /// What the locked version declared, when the cache does not hold its
    /// library (a fresh checkout with a committed lock), is what the
    /// registry's index says of it, unchecked against the bytes the lock
    /// pins: a hostile registry that says the locked 1.0.0 declared
    /// `network any, read /, env SECRET` gets 1.1.0 (declaring that, signed
    /// by the publisher) applied without `--accept-capabilities`.
    #[test]
    fn the_registry_cannot_say_what_the_locked_version_was_granted() {
        let dir = tempfile::tempdir().unwrap();
        let client = client_in(dir.path());
        let broad = declared(serde_json::json!({
            "network": "any",
            "files": {"read": ["/"]},
            "env": ["SECRET"],
        }));
        let reference = |capabilities: Option<Capabilities>| registry::ReleaseRef {
            path: String::from("plugins/weather/x/release.json"),
            sha256: "0".repeat(64),
            size: 1,
            abi: Some(ABI_VERSION),
            capabilities,
            floors: Default::default(),
            deps: Default::default(),
        };
        let index = Index {
            format: registry::FORMAT,
            serial: 1,
            issued: 0,
            expires: u64::MAX,
            plugins: std::collections::BTreeMap::from([(
                String::from("weather"),
                registry::IndexEntry {
                    description: String::new(),
                    keywords: Vec::new(),
                    versions: std::collections::BTreeMap::from([
                        // The locked version really declared network none.
                        (String::from("1.0.0"), reference(Some(broad.clone()))),
                        (String::from("1.1.0"), reference(Some(broad))),
                    ]),
                },
            )]),
        };
        let entry = LockedPlugin {
            name: String::from("weather"),
            version: Version::new(1, 0, 0),
            target: TARGET.to_owned(),
            sha256: "a".repeat(64),
            key_id: String::from("0123456789ABCDEF"),
        };
        let held = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(client.held_back(&index, &entry, &Version::new(1, 1, 0)));
        assert!(
            !matches!(held, Ok(None)),
            "the index's word on the locked version was taken: not held, not an error"
        );
    }
}

/// A lock made on this host pins every target of the release (the other
/// target's signature checked, its artifact not downloaded); a host of the
/// other target then serves `--locked` from the same lock through the same
/// code path (`prepare`), downloading and verifying its own artifact, and
/// refuses bytes that are not the pinned ones.
#[test]
fn a_lock_pins_every_target_and_serves_locked_on_each() {
    use backworks_registry::{Tree, Upload, UploadArtifact};
    use backworks_test_support::{fixtures, harness::Keys};

    let dir = tempfile::tempdir().unwrap();
    let (publisher, registry_keys) = (Keys::new(), Keys::new());
    let tree = Tree::open(
        &dir.path().join("registry"),
        registry_keys.sk.clone(),
        registry::DEFAULT_INDEX_LIFETIME_SECS,
    )
    .unwrap();
    let other = fixtures::WINDOWS_GNU;
    let libraries = [
        (TARGET, std::fs::read(fixtures::c_plugin()).unwrap()),
        (other, std::fs::read(fixtures::c_plugin_windows()).unwrap()),
    ];
    let artifacts = libraries
        .iter()
        .map(|(target, bytes)| {
            let signed = signature::sign(bytes, &publisher.sk, Some(&publisher.pk)).unwrap();
            let extension = if *target == other { "dll" } else { "so" };
            UploadArtifact {
                file_name: format!("weather-c-1.0.0-{target}.{extension}"),
                bytes: bytes.clone(),
                signature: signed.minisig,
            }
        })
        .collect();
    let upload = Upload {
        description: None,
        keywords: Vec::new(),
        artifacts,
    };
    let validated = registry::validate_upload(upload, std::slice::from_ref(&publisher.pk)).unwrap();
    tree.publish(validated).unwrap();
    let config_path = dir.path().join("app/backworks.yaml");
    std::fs::create_dir_all(config_path.parent().unwrap()).unwrap();
    let config = crate::config::parse(
        &format!(
            "trusted_keys:\n  - key: \"{}\"\nmarketplace:\n  registry: {}\n  key: \"{}\"\nplugins:\n  weather-c:\n    type: marketplace\n    version: \"1.0.0\"\n",
            publisher.base64(),
            tree.root().display(),
            registry_keys.base64()
        ),
        &config_path,
        &|_| None,
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let here = PluginMarketplace::from_config(&config)
        .unwrap()
        .with_progress(false);
    let installed = runtime
        .block_on(here.install("weather-c", &VersionReq::STAR))
        .unwrap();
    let sha256 = |bytes: &[u8]| backworks_registry::sha256_hex(bytes);
    assert_eq!(installed.plugin.sha256, sha256(&libraries[0].1));
    assert_eq!(installed.others.len(), 1, "{:?}", installed.others);
    let lock = here.lock().unwrap();
    let pinned = lock.get("weather-c", other).unwrap();
    assert_eq!(pinned.sha256, sha256(&libraries[1].1));
    assert_eq!(pinned.key_id, installed.plugin.key_id);
    // Pinned, not downloaded.
    assert!(
        !here
            .cache_dir()
            .join("weather-c/1.0.0")
            .join(other)
            .exists()
    );
    assert!(
        here.check_lock()
            .unwrap()
            .iter()
            .all(|status| status.problem.is_none())
    );

    // `plugins lock` against a lock the registry does not match: another
    // artifact for this target is a `PinMismatch`; another publisher key is
    // a `KeyChanged`, reported first when both differ (as `install` and
    // `serve --locked` report them: one check, `download::check_pin`).
    let lock_text = std::fs::read_to_string(here.lock_path()).unwrap();
    let host_sha256 = sha256(&libraries[0].1);
    let other_key = "0123456789ABCDEF";
    assert_ne!(installed.plugin.key_id, other_key);
    for (edited, expect_key_changed) in [
        (lock_text.replace(&host_sha256, &"0".repeat(64)), false),
        (
            lock_text
                .replace(&host_sha256, &"0".repeat(64))
                .replace(&installed.plugin.key_id, other_key),
            true,
        ),
    ] {
        std::fs::write(here.lock_path(), &edited).unwrap();
        let error = runtime.block_on(here.pin_every_target()).unwrap_err();
        if expect_key_changed {
            assert!(
                matches!(&error, MarketplaceError::KeyChanged { locked_key, .. } if locked_key == other_key),
                "{error}"
            );
        } else {
            assert!(
                matches!(&error, MarketplaceError::PinMismatch { target, registry_sha256, .. }
                    if target == TARGET && *registry_sha256 == host_sha256),
                "{error}"
            );
        }
        // Refused: the lock is left as it was.
        assert_eq!(std::fs::read_to_string(here.lock_path()).unwrap(), edited);
    }
    std::fs::write(here.lock_path(), &lock_text).unwrap();

    // The other target's host, with the same lock: `serve --locked`.
    let there = PluginMarketplace::from_config(&config)
        .unwrap()
        .with_progress(false)
        .playing_target(other);
    let locked = ServeMode {
        locked: true,
        offline: false,
    };
    let resolved = runtime
        .block_on(there.prepare(&config.plugins, locked))
        .unwrap();
    assert_eq!(resolved.len(), 1);
    assert_eq!(&resolved[0].pin, pinned);
    assert_eq!(std::fs::read(&resolved[0].path).unwrap(), libraries[1].1);

    // The registry's other-target artifact replaced (same size): refused
    // against the pin, nothing cached.
    std::fs::remove_dir_all(there.cache_dir()).unwrap();
    let served = tree.root().join(format!(
        "plugins/weather-c/1.0.0/{other}/weather-c-1.0.0-{other}.dll"
    ));
    let mut altered = libraries[1].1.clone();
    *altered.last_mut().unwrap() ^= 1;
    std::fs::write(&served, &altered).unwrap();
    let error = runtime
        .block_on(there.prepare(&config.plugins, locked))
        .unwrap_err();
    assert!(
        matches!(error, MarketplaceError::Tampered { .. }),
        "{error}"
    );
    assert!(
        !there
            .cache_dir()
            .join("weather-c/1.0.0")
            .join(other)
            .exists()
    );
}
