//! The unit tests of `backworks.yaml`'s reader: every accepted form, and
//! every refused one with its message pinned by a snapshot.

use std::fs;

use super::text::{SubstError, substitute};
use super::*;

/// The design note's `plugins:` example, exactly as written there.
fn design_note_example() -> &'static str {
    let note = include_str!("../../../docs/design/dynamic-plugin-loading.md");
    let section = &note[note
        .find("### 4. Plugin Configuration Format")
        .expect("the note has section 4")..];
    let start = section.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = start + section[start..].find("```").expect("the block ends");
    &section[start..end]
}

/// The full example of `docs/config.md`.
fn docs_example() -> &'static str {
    let doc = include_str!("../../../docs/config.md");
    let start = doc.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = start + doc[start..].find("```").expect("the block ends");
    &doc[start..end]
}

/// A deterministic minisign public key.
fn test_key(seed: u8) -> PublicKey {
    let mut bytes = b"Ed".to_vec();
    bytes.extend([seed; 8]);
    bytes.extend([seed.wrapping_mul(3); 32]);
    PublicKey::from_bytes(&bytes).expect("a key")
}

fn env(name: &str) -> Option<String> {
    match name {
        "STRIPE_API_KEY" => Some(String::from("sk_test_123")),
        "EMPTY" => Some(String::new()),
        "HOST" => Some(String::from("0.0.0.0")),
        "OFF" => Some(String::from("false")),
        "DIR" => Some(String::from("plugins")),
        "NESTED" => Some(String::from("${STRIPE_API_KEY}")),
        _ => None,
    }
}

/// A configuration directory with what the examples name: `plugins/`,
/// `plugins/my-custom-plugin.so` and `keys/release.pub`.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        fs::create_dir(dir.path().join("plugins")).unwrap();
        fs::write(dir.path().join("plugins/my-custom-plugin.so"), b"\x7fELF").unwrap();
        fs::create_dir(dir.path().join("keys")).unwrap();
        let key = test_key(2);
        fs::write(
            dir.path().join("keys/release.pub"),
            format!(
                "untrusted comment: minisign public key {}\n{}\n",
                KeyId::of_public_key(&key),
                key.to_base64()
            ),
        )
        .unwrap();
        fs::write(dir.path().join("keys/broken.pub"), "not a key\n").unwrap();
        // Another key with release.pub's key id (02 02 .. 02).
        fs::write(
            dir.path().join("keys/same-id.pub"),
            "untrusted comment: minisign public key 0202020202020202\nRWQCAgICAgICAgkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJ\n",
        )
        .unwrap();
        let registry = test_key(3);
        fs::write(
            dir.path().join("keys/registry.pub"),
            format!(
                "untrusted comment: minisign public key {}\n{}\n",
                KeyId::of_public_key(&registry),
                registry.to_base64()
            ),
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("backworks.yaml")
    }

    fn parse(&self, text: &str) -> Result<Config, ConfigError> {
        parse(text, &self.path(), &env)
    }

    fn config(&self, text: &str) -> Config {
        self.parse(text).unwrap_or_else(|error| panic!("{error}"))
    }

    /// The error for `text`, with the temporary directory as `[DIR]`.
    fn error(&self, text: &str) -> String {
        let error = self.parse(text).expect_err("the configuration is refused");
        assert_eq!(error.exit_code(), 2);
        assert_eq!(error.path(), self.path());
        self.redact(&error.to_string())
    }

    fn redact(&self, text: &str) -> String {
        text.replace(self.dir.path().to_str().unwrap(), "[DIR]")
    }
}

#[test]
fn design_note_example_parses() {
    let fixture = Fixture::new();
    let config = fixture.config(design_note_example());
    let names: Vec<_> = config.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["auth", "my-custom-plugin", "stripe-plugin"]);

    let auth = &config.plugins[0];
    assert_eq!(auth.kind, PluginKind::Builtin);
    assert_eq!(auth.config, serde_json::json!({"jwt_secret": "secret"}));

    let custom = &config.plugins[1];
    assert_eq!(
        custom.kind,
        PluginKind::External {
            path: fixture.dir.path().join("plugins/my-custom-plugin.so")
        }
    );
    assert_eq!(custom.config, serde_json::json!({"api_key": "12345"}));

    let stripe = &config.plugins[2];
    assert_eq!(
        stripe.kind,
        PluginKind::Marketplace {
            version: String::from("1.2.0"),
            requirement: semver::VersionReq::parse("^1.2.0").unwrap(),
        }
    );
    assert_eq!(stripe.config, serde_json::json!({"api_key": "sk_test_123"}));

    // The rest is defaults.
    assert_eq!(config.listen, DEFAULT_LISTEN);
    assert!(config.require_signatures);
    assert!(config.plugin_dirs.is_empty() && config.trusted_keys.is_empty());
}

#[test]
fn docs_example_parses() {
    let fixture = Fixture::new();
    let config = fixture.config(docs_example());
    assert_eq!(config.path, fixture.path());
    assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.hook_timeout, Duration::from_secs(5));
    assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(config.plugin_dirs, [fixture.dir.path().join("plugins")]);
    assert!(config.require_signatures);

    let keys: Vec<_> = config
        .trusted_keys
        .iter()
        .map(|k| (fixture.redact(&k.origin), KeyId::of_public_key(&k.key)))
        .collect();
    assert_eq!(
        keys,
        [
            (
                String::from("[DIR]/keys/release.pub"),
                KeyId::of_public_key(&test_key(2))
            ),
            (
                String::from("inline key #2"),
                KeyId::of_public_key(&test_key(1))
            ),
        ]
    );
    let names: Vec<_> = config.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["auth", "my-custom-plugin", "stripe-plugin"]);
    assert_eq!(
        config.plugins[0].config,
        serde_json::json!({"jwt_secret": "change-me"})
    );
    assert_eq!(
        config.plugins[2].config,
        serde_json::json!({"api_key": "sk_test_123"})
    );
    let marketplace = config.marketplace().unwrap();
    assert_eq!(
        marketplace.registry,
        RegistryLocation::Dir(fixture.dir.path().join("registry"))
    );
    assert_eq!(
        KeyId::of_public_key(&marketplace.key),
        KeyId::of_public_key(&test_key(3))
    );
    assert_eq!(
        marketplace.cache_dir,
        fixture.dir.path().join(".backworks/plugins")
    );
    assert_eq!(marketplace.max_download, DEFAULT_MAX_DOWNLOAD);
    assert_eq!(marketplace.transfer_timeout, DEFAULT_TRANSFER_TIMEOUT);
    assert_eq!(marketplace.min_transfer_rate, DEFAULT_MIN_TRANSFER_RATE);
    assert_eq!(config.updates.check_interval, None);
    assert_eq!(config.updates.allow, Allow::Minor);
    assert_eq!(
        config.updates.requirement("stripe-plugin"),
        Some(&semver::VersionReq::parse(">=1.2, <2").unwrap())
    );
}

/// The error messages `docs/config.md` shows are what the docs example
/// gives, with the configuration in `/srv/app`.
#[test]
fn docs_error_examples_are_real() {
    let doc = include_str!("../../../docs/config.md");
    let fixture = Fixture::new();
    let shown = |error: ConfigError| {
        let dir = fixture.dir.path().to_str().unwrap();
        let message = error
            .to_string()
            .replace(&format!("{dir}/backworks.yaml"), "backworks.yaml")
            .replace(dir, "/srv/app");
        assert!(doc.contains(&message), "docs/config.md lacks {message}");
    };
    let no_stripe = |name: &str| env(name).filter(|_| name != "STRIPE_API_KEY");
    shown(parse(docs_example(), &fixture.path(), &no_stripe).unwrap_err());
    let misspelt = docs_example().replacen("hook_timeout", "hook_timout", 1);
    shown(fixture.parse(&misspelt).unwrap_err());
    fs::remove_file(fixture.dir.path().join("plugins/my-custom-plugin.so")).unwrap();
    shown(fixture.parse(docs_example()).unwrap_err());
    let without_marketplace = fixture
        .config("plugins:\n  auth:\n    type: builtin\n  weather:\n    type: marketplace\n    version: \"1.0\"\n");
    shown(without_marketplace.marketplace().unwrap_err());
}

#[test]
fn load_reads_the_file() {
    let fixture = Fixture::new();
    fs::write(fixture.path(), "server:\n  listen: \"0.0.0.0:9000\"\n").unwrap();
    let config = load(&fixture.path()).unwrap();
    assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
    assert!(config.plugins.is_empty());

    let missing = fixture.dir.path().join("missing.yaml");
    let error = load(&missing).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }));
    assert_eq!(error.exit_code(), 2);
    insta::assert_snapshot!(fixture.redact(&error.to_string()));
}

#[test]
fn defaults() {
    let fixture = Fixture::new();
    for text in [
        "plugins: {}",
        "plugins:",
        "{}",
        "server: {}\nplugin_dirs: []\n",
    ] {
        let config = fixture.config(text);
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(config.hook_timeout, Duration::from_secs(5));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
        assert!(config.plugin_dirs.is_empty());
        assert!(config.trusted_keys.is_empty());
        assert!(config.require_signatures);
        assert_eq!(config.max_plugin_size, 256 * 1024 * 1024);
        assert!(config.plugins.is_empty());
        assert_eq!(config.limits, ConnectionLimits::default());
        assert!(config.public.is_empty());
        assert_eq!(config.process, super::ProcessConfig::default());
    }
    let config = fixture.config("max_plugin_size: 64KiB\n");
    assert_eq!(config.max_plugin_size, 64 * 1024);
}

#[test]
fn connection_limits_and_public_endpoints_are_read() {
    let fixture = Fixture::new();
    let config = fixture.config(
        "server:\n  header_timeout: 2s\n  idle_timeout: 1m\n  max_connections: 8\n  public: [/healthz, /metrics]\n",
    );
    assert_eq!(
        config.limits,
        ConnectionLimits {
            header_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            max_connections: 8,
        }
    );
    assert_eq!(config.public, ["/healthz", "/metrics"]);
    let config = fixture.config("server:\n  max_connections: \"${N:-16}\"\n  public: []\n");
    assert_eq!(config.limits.max_connections, 16);
    assert!(config.public.is_empty());
}

#[test]
fn the_process_tier_and_its_limits_are_read() {
    let fixture = Fixture::new();
    let config = fixture.config(
        "server:\n  isolation: process\n  process: {max_crashes: 3, crash_window: 10s, memory: 512MiB, open_files: 64}\nplugins:\n  auth:\n    type: builtin\n    isolation: thread\n",
    );
    assert_eq!(
        config.process,
        super::ProcessConfig {
            max_crashes: 3,
            crash_window: Duration::from_secs(10),
            memory: 512 << 20,
            open_files: 64,
        }
    );
    assert_eq!(config.isolation, super::Isolation::Process);
    assert_eq!(config.plugins[0].isolation, super::Isolation::Thread);
    // A default of `process` leaves built-ins on the pool.
    let config =
        fixture.config("server:\n  isolation: process\nplugins:\n  auth:\n    type: builtin\n");
    assert_eq!(config.plugins[0].isolation, super::Isolation::Thread);
    let config = fixture.config("server:\n  process: {max_crashes: \"${N:-7}\"}\n");
    assert_eq!(config.process.max_crashes, 7);
    // Every marketplace plugin in the process tier, unless its entry says.
    let config = fixture.config(
        "server:\n  marketplace_isolation: process\nmarketplace:\n  registry: ./registry\n  key: RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\nplugins:\n  auth:\n    type: builtin\n  stripe:\n    type: marketplace\n    version: \"1\"\n  trusted:\n    type: marketplace\n    version: \"1\"\n    isolation: inline\n",
    );
    let tiers: Vec<_> = config.plugins.iter().map(|p| p.isolation).collect();
    assert_eq!(
        tiers,
        [
            super::Isolation::Thread,
            super::Isolation::Process,
            super::Isolation::Inline
        ]
    );
    assert_eq!(config.process.memory, super::DEFAULT_WORKER_MEMORY);
}

#[test]
fn settings_are_read() {
    let fixture = Fixture::new();
    let config = fixture.config(
        "server:\n  listen: \"[::1]:9090\"\n  hook_timeout: 250ms\n  shutdown_timeout: 2m\nrequire_signatures: false\nplugin_dirs: [plugins, ./plugins/, \"${DIR}\"]\n",
    );
    assert_eq!(config.listen, "[::1]:9090".parse().unwrap());
    assert_eq!(config.hook_timeout, Duration::from_millis(250));
    assert_eq!(config.shutdown_timeout, Duration::from_secs(120));
    assert!(!config.require_signatures);
    let plugins = fixture.dir.path().join("plugins");
    assert_eq!(
        config.plugin_dirs,
        [plugins.clone(), plugins.clone(), plugins]
    );
}

#[test]
fn absolute_paths_are_kept() {
    let fixture = Fixture::new();
    let library = fixture.dir.path().join("plugins/my-custom-plugin.so");
    let config = fixture.config(&format!(
        "plugins:\n  x:\n    type: external\n    path: {:?}\n",
        library.to_str().unwrap()
    ));
    assert_eq!(
        config.plugins[0].kind,
        PluginKind::External { path: library }
    );
}

#[test]
fn plugin_order_is_file_order() {
    let fixture = Fixture::new();
    let names = ["zeta", "alpha", "auth", "mid_1", "b-2", "0"];
    let mut text = String::from("plugins:\n");
    for name in names {
        if name == "auth" {
            text.push_str("  auth: {type: builtin}\n");
        } else {
            text.push_str(&format!(
                "  {name}: {{type: marketplace, version: \"1\"}}\n"
            ));
        }
    }
    let config = fixture.config(&text);
    let read: Vec<_> = config.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(read, names);
}

#[test]
fn config_keeps_its_types() {
    let fixture = Fixture::new();
    let config = fixture.config(
        "plugins:\n  auth:\n    type: builtin\n    config:\n      z: 1\n      a: -2\n      f: 1.5\n      t: true\n      n: ~\n      1: one\n      list: [a, {b: c}]\n",
    );
    let config = &config.plugins[0].config;
    assert_eq!(
        *config,
        serde_json::json!({
            "z": 1, "a": -2, "f": 1.5, "t": true, "n": null, "1": "one",
            "list": ["a", {"b": "c"}],
        })
    );
}

#[test]
fn environment_substitution() {
    let fixture = Fixture::new();
    let config = fixture.config(concat!(
        "server:\n",
        "  listen: \"${HOST}:${PORT:-8081}\"\n",
        "  hook_timeout: ${TIMEOUT:-2s}\n",
        "require_signatures: ${OFF}\n",
        "plugins:\n",
        "  stripe-plugin:\n",
        "    type: marketplace\n",
        "    version: \"${STRIPE_VERSION:-=1.2.0}\"\n",
        "    config:\n",
        "      api_key: ${STRIPE_API_KEY}\n",
        "      nested:\n",
        "        deeper: [\"key=${STRIPE_API_KEY}\", {again: \"${STRIPE_API_KEY}${STRIPE_API_KEY}\"}]\n",
        "      empty_with_default: ${EMPTY:-fallback}\n",
        "      empty_without_default: \"<${EMPTY}>\"\n",
        "      unset_with_empty_default: \"<${UNSET:-}>\"\n",
        "      escaped: \"$${STRIPE_API_KEY} costs $5, $$ and $\"\n",
        "      not_again: ${NESTED}\n",
        "      default_with_colon: ${UNSET:-a:b-c}\n",
    ));
    assert_eq!(config.listen, "0.0.0.0:8081".parse().unwrap());
    assert_eq!(config.hook_timeout, Duration::from_secs(2));
    assert!(!config.require_signatures);
    let PluginKind::Marketplace {
        version,
        requirement,
    } = &config.plugins[0].kind
    else {
        panic!("a marketplace plugin")
    };
    assert_eq!(version, "=1.2.0");
    assert!(requirement.matches(&semver::Version::new(1, 2, 0)));
    assert!(!requirement.matches(&semver::Version::new(1, 2, 1)));
    assert_eq!(
        config.plugins[0].config,
        serde_json::json!({
            "api_key": "sk_test_123",
            "nested": {"deeper": ["key=sk_test_123", {"again": "sk_test_123sk_test_123"}]},
            "empty_with_default": "fallback",
            "empty_without_default": "<>",
            "unset_with_empty_default": "<>",
            "escaped": "${STRIPE_API_KEY} costs $5, $$ and $",
            "not_again": "${STRIPE_API_KEY}",
            "default_with_colon": "a:b-c",
        })
    );
}

#[test]
fn substitute_cases() {
    let run = |text: &str| substitute(text, &env).map(|(value, _)| value);
    assert_eq!(run("plain"), Ok(String::from("plain")));
    assert_eq!(run(""), Ok(String::new()));
    assert_eq!(run("${HOST}"), Ok(String::from("0.0.0.0")));
    assert_eq!(
        run("a${HOST}b${HOST}c"),
        Ok(String::from("a0.0.0.0b0.0.0.0c"))
    );
    assert_eq!(run("${_X:-d}"), Ok(String::from("d")));
    assert_eq!(run("$${HOST}"), Ok(String::from("${HOST}")));
    assert_eq!(run("$$${HOST}"), Ok(String::from("$${HOST}")));
    assert_eq!(run("$$$${HOST}"), Ok(String::from("$$${HOST}")));
    assert_eq!(run("$"), Ok(String::from("$")));
    assert_eq!(run("${UNSET:-}"), Ok(String::new()));
    assert_eq!(run("é${HOST}é"), Ok(String::from("é0.0.0.0é")));
    assert_eq!(
        run("${UNSET}"),
        Err(SubstError::Missing(String::from("UNSET")))
    );
    assert_eq!(run("${HOST"), Err(SubstError::Unterminated));
    assert_eq!(run("${}"), Err(SubstError::BadName(String::new())));
    assert_eq!(run("${1X}"), Err(SubstError::BadName(String::from("1X"))));
    assert_eq!(run("${A-B}"), Err(SubstError::BadName(String::from("A-B"))));
    assert!(substitute("${HOST}", &env).unwrap().1);
    assert!(!substitute("$${HOST}", &env).unwrap().1);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(6 * 3600)));
    for bad in [
        "",
        "s",
        "5",
        "5d",
        "5 s",
        " 5s",
        "-5s",
        "1.5s",
        "5S",
        "0s",
        "0ms",
        "5sec",
        "99999999999999999999s",
        "999999999999999999m",
        "9999999999999999h",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_duration_is_at_most_a_year_so_a_deadline_never_overflows() {
    let year = parse_duration("8760h").expect("a year is a duration");
    assert_eq!(year, MAX_DURATION);
    assert!(std::time::Instant::now().checked_add(year).is_some());
    for too_long in [
        "8761h",
        "525601m",
        "31536001s",
        "31536000001ms",
        "18446744073709551615s",
        "18446744073709551615ms",
    ] {
        let problem = parse_duration(too_long).expect_err(too_long);
        assert!(
            problem.contains("longer than a year"),
            "{too_long}: {problem}"
        );
    }
}

#[test]
fn debug_hides_config_values() {
    let fixture = Fixture::new();
    let config = fixture.config(docs_example());
    let debug = format!("{config:?}");
    for secret in ["change-me", "12345", "sk_test_123"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    for key in ["jwt_secret", "api_key", "my-custom-plugin"] {
        assert!(debug.contains(key), "{key} not in {debug}");
    }
    insta::assert_snapshot!(fixture.redact(&format!("{:#?}", config.plugins[0])));
    insta::assert_snapshot!(fixture.redact(&format!("{:?}", config.trusted_keys[0])));
}

#[test]
fn lines_are_found() {
    let fixture = Fixture::new();
    let line = |text: &str| fixture.parse(text).unwrap_err().line();
    assert_eq!(line("server:\n  listen: 1\n"), Some(2));
    assert_eq!(line("plugins: {auth: {type: builtin}, x: {}}\n"), Some(1));
    assert_eq!(
        line("plugins:\n\n  auth:\n    type: builtin\n    config:\n      a: [1, \"${UNSET}\"]\n"),
        Some(6)
    );
    assert_eq!(line("plugin_dirs:\n  - plugins\n  - missing\n"), Some(3));
    assert_eq!(
        line("plugins:\n  x: &m {type: marketplace, version: \"1\"}\n  y: *m\n  z: {type: wasm}\n"),
        Some(4)
    );
    assert_eq!(line("server: &s\n  listen: 1\nplugins: *s\n"), Some(2));
}

/// The fields the unknown-field message lists are the ones each section
/// of `file` declares, in order: what serde itself lists when it refuses
/// one.
#[test]
fn unknown_field_lists_are_the_declared_fields() {
    fn check<T: serde::de::DeserializeOwned>(expected: &[&str]) {
        let fields = file::fields_of::<T>();
        assert_eq!(fields, expected);
        let Err(error) = serde_yaml::from_str::<T>("zzz: 1\n") else {
            panic!("`zzz` accepted")
        };
        let message = error.to_string();
        let (refusal, listed) = message
            .split_once(", expected ")
            .unwrap_or_else(|| panic!("{message}"));
        assert_eq!(refusal, "unknown field `zzz`");
        let listed: Vec<&str> = listed.split('`').skip(1).step_by(2).collect();
        assert_eq!(listed, fields, "{message}");
    }
    check::<file::File>(&[
        "server",
        "plugin_dirs",
        "trusted_keys",
        "require_signatures",
        "max_plugin_size",
        "plugins",
        "marketplace",
        "updates",
    ]);
    check::<file::Server>(&[
        "listen",
        "hook_timeout",
        "shutdown_timeout",
        "header_timeout",
        "idle_timeout",
        "max_connections",
        "public",
        "isolation",
        "marketplace_isolation",
        "watchdog",
        "process",
    ]);
    check::<file::Process>(&["max_crashes", "crash_window", "memory", "open_files"]);
    check::<file::KeyEntry>(&["file", "key"]);
    check::<file::PluginEntry>(&["type", "path", "version", "isolation", "config"]);
    check::<file::Watchdog>(&["threshold", "action"]);
    check::<file::Marketplace>(&[
        "registry",
        "key",
        "cache_dir",
        "max_download",
        "transfer_timeout",
        "min_transfer_rate",
    ]);
    check::<file::Updates>(&["check_interval", "allow", "plugins"]);
}

/// The order of `docs/config.md`: a field the format does not have is
/// reported before any value, wherever the two are in the file.
#[test]
fn unknown_fields_are_found_before_values() {
    let fixture = Fixture::new();
    for text in [
        "server:\n  listen: 1\nplugin_dir: [plugins]\n",
        "plugin_dir: [plugins]\nserver:\n  listen: 1\n",
        "plugins:\n  auth:\n    type: wasm\n  x:\n    type: builtin\n    settings: {}\n",
    ] {
        let error = fixture.parse(text).unwrap_err();
        assert!(
            matches!(error, ConfigError::UnknownField { .. }),
            "{text}: {error}"
        );
    }
}

/// A key that is not a string (a number, `~`, `true`) where the format
/// has fixed fields is an unknown field, named as it is written.
#[test]
fn non_string_keys_are_unknown_fields() {
    let fixture = Fixture::new();
    for (text, field, name, line) in [
        (
            "server:\n  listen: \"127.0.0.1:1\"\n  0: x\n",
            "server.0",
            "0",
            3,
        ),
        ("7: x\n", "7", "7", 1),
        (
            "plugins:\n  auth:\n    type: builtin\n    ~: x\n",
            "plugins.auth.null",
            "null",
            4,
        ),
        (
            "trusted_keys:\n  - file: keys/release.pub\n    true: 1\n",
            "trusted_keys[0].true",
            "true",
            3,
        ),
    ] {
        match fixture.parse(text) {
            Err(ConfigError::UnknownField {
                field: found_field,
                name: found_name,
                line: found_line,
                ..
            }) => {
                assert_eq!(
                    (found_field.as_str(), found_name.as_str(), found_line),
                    (field, name, Some(line)),
                    "{text}"
                );
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}

/// Truncated and mutated configurations give errors, never panics.
#[test]
fn never_panics() {
    let fixture = Fixture::new();
    let example = docs_example();
    for (end, _) in example.char_indices() {
        let _ = fixture.parse(&example[..end]);
    }
    // xorshift: deterministic, no dependency.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet: Vec<char> = " \n\t:-{}[],\"'$&*!#|>?%@`~aZ09._/\\é\u{0}"
        .chars()
        .collect();
    for _ in 0..3000 {
        let mut text: Vec<char> = example.chars().collect();
        for _ in 0..(next() % 6 + 1) {
            let at = (next() as usize) % (text.len() + 1);
            let c = alphabet[(next() as usize) % alphabet.len()];
            match next() % 3 {
                0 if at < text.len() => text[at] = c,
                1 if at < text.len() => {
                    text.remove(at);
                }
                _ => text.insert(at, c),
            }
        }
        let text: String = text.into_iter().collect();
        let _ = fixture.parse(&text);
    }
    for _ in 0..1000 {
        let length = (next() % 60) as usize;
        let text: String = (0..length)
            .map(|_| alphabet[(next() as usize) % alphabet.len()])
            .collect();
        let _ = fixture.parse(&text);
    }
    let deep = "[".repeat(10_000);
    let _ = fixture.parse(&deep);
    let deep_config = format!(
        "plugins:\n  auth:\n    type: builtin\n    config: {}{}\n",
        "{a: ".repeat(200),
        "}".repeat(200)
    );
    let _ = fixture.parse(&deep_config);
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    let _ = fixture.parse(laughs);
}

/// A test whose refused configuration's message is a snapshot.
macro_rules! refused {
    ($($name:ident: $text:expr;)*) => {$(
        #[test]
        fn $name() {
            let fixture = Fixture::new();
            insta::assert_snapshot!(fixture.error($text));
        }
    )*};
}

refused! {
    empty_document: "";
    only_a_comment: "# nothing here\n";
    invalid_yaml: "server:\n  listen: [\n";
    bad_indentation: "server:\n  listen: x\n hook_timeout: 5s\n";
    two_documents: "plugins: {}\n---\nplugins: {}\n";
    duplicate_plugin: "plugins:\n  auth:\n    type: builtin\n  auth:\n    type: builtin\n";
    document_is_a_list: "- plugins\n";
    document_is_a_string: "plugins\n";
    unknown_top_level_field: "server: {}\nplugin_dir: [plugins]\n";
    unknown_server_field: "server:\n  listen: \"127.0.0.1:1\"\n  hook_timout: 5s\n";
    max_connections_zero: "server:\n  max_connections: 0\n";
    process_max_crashes_zero: "server:\n  process:\n    max_crashes: 0\n";
    process_crash_window_zero: "server:\n  process:\n    crash_window: 0s\n";
    process_memory_too_small: "server:\n  process:\n    memory: 1MiB\n";
    process_unknown_field: "server:\n  process:\n    cpu: 1s\n";
    process_not_a_mapping: "server:\n  process: fast\n";
    isolation_unknown: "server:\n  isolation: wasm\n";
    builtin_in_a_process: "plugins:\n  auth:\n    type: builtin\n    isolation: process\n";
    max_connections_text: "server:\n  max_connections: many\n";
    header_timeout_without_unit: "server:\n  header_timeout: 10\n";
    public_unknown_endpoint: "server:\n  public: [/weather]\n";
    public_twice: "server:\n  public: [/healthz, /healthz]\n";
    public_not_a_list: "server:\n  public: /healthz\n";
    unknown_plugin_field: "plugins:\n  auth:\n    type: builtin\n    settings: {}\n";
    unknown_trusted_key_field: "trusted_keys:\n  - file: keys/release.pub\n    comment: release\n";
    server_not_a_mapping: "server: 127.0.0.1:8080\n";
    require_signatures_string: "require_signatures: \"yes\"\n";
    require_signatures_quoted_true: "require_signatures: \"true\"\n";
    require_signatures_number: "require_signatures: 1\n";
    require_signatures_null: "require_signatures:\n";
    listen_number: "server:\n  listen: 12\n";
    listen_host_name: "server:\n  listen: \"localhost:8080\"\n";
    listen_no_port: "server:\n  listen: \"127.0.0.1\"\n";
    listen_list: "server:\n  listen: [127.0.0.1]\n";
    listen_ipv6_unquoted: "server:\n  listen: [::1]:8080\n";
    duration_without_unit: "server:\n  hook_timeout: 5\n";
    duration_bad_unit: "server:\n  hook_timeout: 5d\n";
    duration_with_space: "server:\n  shutdown_timeout: 5 seconds\n";
    duration_zero: "server:\n  hook_timeout: 0ms\n";
    duration_overflow: "server:\n  hook_timeout: 99999999999999999999m\n";
    plugins_a_list: "plugins:\n  - auth\n";
    plugin_not_a_mapping: "plugins:\n  auth: builtin\n";
    plugin_empty_entry: "plugins:\n  auth:\n";
    plugin_type_missing: "plugins:\n  auth:\n    config: {}\n";
    plugin_type_misspelt_field: "plugins:\n  auth:\n    tpye: builtin\n";
    plugin_type_unknown: "plugins:\n  auth:\n    type: wasm\n";
    plugin_type_not_a_string: "plugins:\n  auth:\n    type: [builtin]\n";
    builtin_unknown_name: "plugins:\n  weather:\n    type: builtin\n";
    builtin_with_path: "plugins:\n  auth:\n    type: builtin\n    path: plugins/my-custom-plugin.so\n";
    external_without_path: "plugins:\n  my-custom-plugin:\n    type: external\n";
    external_path_missing: "plugins:\n  my-custom-plugin:\n    type: external\n    path: ./plugins/missing.so\n";
    external_path_is_a_directory: "plugins:\n  my-custom-plugin:\n    type: external\n    path: plugins\n";
    external_path_empty: "plugins:\n  my-custom-plugin:\n    type: external\n    path: \"\"\n";
    external_with_version: "plugins:\n  my-custom-plugin:\n    type: external\n    path: plugins/my-custom-plugin.so\n    version: \"1.0.0\"\n";
    marketplace_without_version: "plugins:\n  stripe-plugin:\n    type: marketplace\n";
    marketplace_bad_version: "plugins:\n  stripe-plugin:\n    type: marketplace\n    version: \"one point two\"\n";
    marketplace_version_number: "plugins:\n  stripe-plugin:\n    type: marketplace\n    version: 1.2\n";
    plugin_name_empty: "plugins:\n  \"\":\n    type: builtin\n";
    plugin_name_with_space: "plugins:\n  \"my plugin\":\n    type: marketplace\n    version: \"1\"\n";
    plugin_name_with_dot: "plugins:\n  my.plugin:\n    type: marketplace\n    version: \"1\"\n";
    plugin_name_null: "plugins:\n  ~:\n    type: builtin\n";
    config_not_a_mapping: "plugins:\n  auth:\n    type: builtin\n    config: [a, b]\n";
    config_infinity: "plugins:\n  auth:\n    type: builtin\n    config:\n      limit: .inf\n";
    config_tagged: "plugins:\n  auth:\n    type: builtin\n    config:\n      secret: !vault abc\n";
    trusted_key_both: "trusted_keys:\n  - file: keys/release.pub\n    key: RWQ\n";
    trusted_key_neither: "trusted_keys:\n  - {}\n";
    trusted_key_string: "trusted_keys:\n  - ./keys/release.pub\n";
    trusted_key_bare_key: "trusted_keys:\n  - RWQBAQEBAQEBAQMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMD\n";
    trusted_keys_not_a_list: "trusted_keys: ./keys/release.pub\n";
    trusted_key_file_missing: "trusted_keys:\n  - file: keys/missing.pub\n";
    trusted_key_file_invalid: "trusted_keys:\n  - file: keys/release.pub\n  - file: ./keys/broken.pub\n";
    trusted_key_inline_invalid: "trusted_keys:\n  - key: RWQnotakey\n";
    trusted_key_listed_twice: "trusted_keys:\n  - file: keys/release.pub\n  - key: RWQBAQEBAQEBAQMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMD\n  - key: RWQCAgICAgICAgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYG\n";
    max_plugin_size_number: "max_plugin_size: 1048576\n";
    max_plugin_size_zero: "max_plugin_size: 0KiB\n";
    trusted_key_id_shared: "trusted_keys:\n  - file: keys/release.pub\n  - file: keys/same-id.pub\n";
    plugin_dir_missing: "plugin_dirs: [\"./plugins\", \"./more-plugins\"]\n";
    plugin_dir_is_a_file: "plugin_dirs:\n  - plugins/my-custom-plugin.so\n";
    plugin_dirs_a_string: "plugin_dirs: ./plugins\n";
    plugin_dir_not_a_string: "plugin_dirs: [[plugins]]\n";
    missing_variable: "plugins:\n  stripe-plugin:\n    type: marketplace\n    version: \"1.2.0\"\n    config:\n      api_key: \"${STRIPE_SECRET_KEY}\"\n";
    missing_variable_nested: "plugins:\n  auth:\n    type: builtin\n    config:\n      upstreams:\n        - url: https://a.example\n        - url: \"https://${UPSTREAM_HOST}/\"\n";
    missing_variable_in_listen: "server:\n  listen: \"${LISTEN}\"\n";
    unterminated_variable: "plugins:\n  auth:\n    type: builtin\n    config:\n      jwt_secret: \"${JWT_SECRET\"\n";
    bad_variable_name: "plugins:\n  auth:\n    type: builtin\n    config:\n      jwt_secret: \"${JWT-SECRET}\"\n";
    marketplace_not_a_mapping: "marketplace: ./registry\n";
    marketplace_unknown_field: "marketplace:\n  registry: ./registry\n  key: keys/release.pub\n  mirrors: [a]\n";
    marketplace_without_registry: "marketplace:\n  key: keys/release.pub\n";
    marketplace_without_key: "marketplace:\n  registry: ./registry\n";
    marketplace_registry_empty: "marketplace:\n  registry: \"\"\n  key: keys/release.pub\n";
    marketplace_registry_bad_url: "marketplace:\n  registry: \"http://exa mple.com/\"\n  key: keys/release.pub\n";
    marketplace_registry_scheme: "marketplace:\n  registry: ftp://example.com/registry\n  key: keys/release.pub\n";
    marketplace_registry_query: "marketplace:\n  registry: \"https://example.com/registry?token=1\"\n  key: keys/release.pub\n";
    marketplace_registry_file_with_host: "marketplace:\n  registry: file://server/registry\n  key: keys/release.pub\n";
    marketplace_key_file_missing: "marketplace:\n  registry: ./registry\n  key: keys/missing.pub\n";
    marketplace_key_file_invalid: "marketplace:\n  registry: ./registry\n  key: keys/broken.pub\n";
    marketplace_key_inline_invalid: "marketplace:\n  registry: ./registry\n  key: RWQnotakey\n";
    marketplace_key_missing_variable: "marketplace:\n  registry: ./registry\n  key: \"${REGISTRY_KEY}\"\n";
    marketplace_max_download_number: "marketplace:\n  registry: ./registry\n  key: keys/release.pub\n  max_download: 1048576\n";
    marketplace_max_download_bad_unit: "marketplace:\n  registry: ./registry\n  key: keys/release.pub\n  max_download: 256mb\n";
    marketplace_max_download_zero: "marketplace:\n  registry: ./registry\n  key: keys/release.pub\n  max_download: 0MiB\n";
    marketplace_max_download_overflow: "marketplace:\n  registry: ./registry\n  key: keys/release.pub\n  max_download: 99999999999GiB\n";
    marketplace_transfer_timeout_number: "marketplace:\n  registry: ./registry\n  key: keys/release.pub\n  transfer_timeout: 600\n";
    marketplace_min_transfer_rate_zero: "marketplace:\n  registry: ./registry\n  key: keys/release.pub\n  min_transfer_rate: 0B\n";
    marketplace_cache_dir_empty: "marketplace:\n  registry: ./registry\n  key: keys/release.pub\n  cache_dir: \"\"\n";
    updates_not_a_mapping: "updates: minor\n";
    updates_unknown_field: "updates:\n  check_interval: 30s\n  allowed: minor\n";
    updates_bad_interval: "updates:\n  check_interval: 1d\n";
    updates_interval_number: "updates:\n  check_interval: 30\n";
    updates_unknown_allow: "updates:\n  allow: minr\n";
    updates_bad_requirement: "plugins:\n  weather:\n    type: marketplace\n    version: \"1.0\"\nupdates:\n  plugins:\n    weather: \"newest\"\n";
    updates_requirement_number: "plugins:\n  weather:\n    type: marketplace\n    version: \"1.0\"\nupdates:\n  plugins:\n    weather: 1.2\n";
    updates_requirement_for_builtin: "plugins:\n  auth:\n    type: builtin\nupdates:\n  plugins:\n    auth: \"^1\"\n";
    updates_requirement_for_unknown_plugin: "plugins:\n  weather:\n    type: marketplace\n    version: \"1.0\"\nupdates:\n  plugins:\n    wether: \"^1\"\n";
}

#[test]
fn marketplace_and_updates_are_read() {
    let fixture = Fixture::new();
    let config = fixture.config(concat!(
        "plugins:\n",
        "  weather:\n",
        "    type: marketplace\n",
        "    version: \"1.0\"\n",
        "marketplace:\n",
        "  registry: ./registry\n",
        "  key: keys/release.pub\n",
        "  cache_dir: ${DIR}/cache\n",
        "  max_download: 10MB\n",
        "  transfer_timeout: 2m\n",
        "  min_transfer_rate: 10KiB\n",
        "updates:\n",
        "  check_interval: 30s\n",
        "  allow: patch\n",
        "  plugins:\n",
        "    weather: \">=1.0, <3\"\n",
    ));
    let marketplace = config.marketplace().unwrap();
    assert_eq!(
        marketplace.registry,
        RegistryLocation::Dir(fixture.dir.path().join("registry"))
    );
    assert_eq!(
        KeyId::of_public_key(&marketplace.key),
        KeyId::of_public_key(&test_key(2))
    );
    assert_eq!(
        marketplace.key_origin,
        fixture
            .dir
            .path()
            .join("keys/release.pub")
            .display()
            .to_string()
    );
    assert_eq!(
        marketplace.cache_dir,
        fixture.dir.path().join("plugins/cache")
    );
    assert_eq!(marketplace.max_download, 10_000_000);
    assert_eq!(marketplace.transfer_timeout, Duration::from_secs(120));
    assert_eq!(marketplace.min_transfer_rate, 10 * 1024);
    assert_eq!(config.updates.check_interval, Some(Duration::from_secs(30)));
    assert_eq!(config.updates.allow, Allow::Patch);
    assert_eq!(
        config.updates.requirement("weather"),
        Some(&semver::VersionReq::parse(">=1.0, <3").unwrap())
    );
    assert_eq!(config.updates.requirement("other"), None);

    // Defaults, and the other registry forms.
    let inline = test_key(1).to_base64();
    for (registry, expected) in [
        (
            "file:///srv/registry",
            RegistryLocation::Dir(PathBuf::from("/srv/registry")),
        ),
        (
            "http://127.0.0.1:8080",
            RegistryLocation::Http(reqwest::Url::parse("http://127.0.0.1:8080/").unwrap()),
        ),
        (
            "https://example.com/plugins",
            RegistryLocation::Http(reqwest::Url::parse("https://example.com/plugins/").unwrap()),
        ),
        (
            "/abs/registry",
            RegistryLocation::Dir(PathBuf::from("/abs/registry")),
        ),
    ] {
        let config = fixture.config(&format!(
            "marketplace:\n  registry: {registry}\n  key: {inline}\nupdates:\n  check_interval: \"off\"\n"
        ));
        let marketplace = config.marketplace().unwrap();
        assert_eq!(marketplace.registry, expected, "{registry}");
        assert_eq!(marketplace.key_origin, "inline key");
        assert_eq!(
            marketplace.cache_dir,
            fixture.dir.path().join(".backworks/plugins")
        );
        assert_eq!(marketplace.max_download, DEFAULT_MAX_DOWNLOAD);
        assert_eq!(config.updates, UpdatesConfig::default());
    }
}

#[test]
fn sizes() {
    assert_eq!(parse_size("1B"), Ok(1));
    assert_eq!(parse_size("2KiB"), Ok(2048));
    assert_eq!(parse_size("256MiB"), Ok(256 << 20));
    assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    assert_eq!(parse_size("3KB"), Ok(3000));
    assert_eq!(parse_size("3MB"), Ok(3_000_000));
    assert_eq!(parse_size("3GB"), Ok(3_000_000_000));
    for bad in [
        "",
        "B",
        "5",
        "5 MiB",
        "5mib",
        "-5B",
        "1.5MiB",
        "0B",
        "5TiB",
        "99999999999999999999B",
        "99999999999GiB",
    ] {
        assert!(parse_size(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn allow_policies() {
    let v = |text: &str| semver::Version::parse(text).unwrap();
    let cases = [
        (Allow::Patch, "1.2.3", "1.2.9", true),
        (Allow::Patch, "1.2.3", "1.3.0", false),
        (Allow::Minor, "1.2.3", "1.9.0", true),
        (Allow::Minor, "1.2.3", "2.0.0", false),
        (Allow::Minor, "0.2.3", "0.2.9", true),
        (Allow::Minor, "0.2.3", "0.3.0", false),
        (Allow::Major, "1.2.3", "7.0.0", true),
        (Allow::Major, "1.2.3", "2.0.0-rc.1", false),
    ];
    for (allow, locked, candidate, expected) in cases {
        assert_eq!(
            allow.permits(&v(locked), &v(candidate)),
            expected,
            "{allow} {locked} -> {candidate}"
        );
    }
}

/// A marketplace plugin without a `marketplace:` section is accepted by
/// the parser (the design note's map alone is a configuration) and
/// refused, at its entry, by whatever needs the registry.
#[test]
fn marketplace_section_missing() {
    let fixture = Fixture::new();
    let config = fixture.config(
        "plugins:\n  auth:\n    type: builtin\n  weather:\n    type: marketplace\n    version: \"1.0\"\n",
    );
    let error = config.marketplace().unwrap_err();
    assert_eq!(error.exit_code(), 2);
    assert_eq!(error.line(), Some(4));
    insta::assert_snapshot!(fixture.redact(&error.to_string()));
    let config = fixture.config("plugins:\n  auth:\n    type: builtin\n");
    let error = config.marketplace().unwrap_err();
    insta::assert_snapshot!(
        "marketplace_section_missing_no_plugin",
        fixture.redact(&error.to_string())
    );
}
