//! `cargo backworks publish` end to end, as a plugin author runs it: a
//! plugin made with `new`, built with the real cargo, signed with a real
//! key, published into a directory registry (whose signed index is then
//! verified) and to an HTTP registry peer on 127.0.0.1 (an axum router
//! here that records what it receives and validates it with the SDK, as the
//! marketplace server does); and every refusal before anything is sent.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use backworks_artifact::signature::{PublicKey, parse_public_key};
use backworks_plugin_sdk::{TARGET, Value, json};
use backworks_registry::{self as registry, Freshness, Release, Upload, UploadArtifact};

use crate::build::{
    cargo_backworks, cargo_backworks_command, dist_path_in, new_plugin, shared_target_dir, stderr,
};
use crate::check::with_record;
use crate::keys::{Redactions, key_id, minisig, run_bounded, sha256_hex, text};

/// The token the HTTP peer accepts.
const TOKEN: &str = "test-publish-token";

/// How long one `cargo backworks publish` may take in these tests.
const DEADLINE: Duration = Duration::from_secs(120);

/// The plugin, built, signed and keyed once per test run.
struct Fixture {
    /// Holds everything below (under the shared target directory).
    root: PathBuf,
    /// The plugin crate; `backworks.key`/`.pub` (the publisher's key, made
    /// by `keygen` with its default name) are in it.
    plugin: PathBuf,
    /// The dist directory the plugin was built into.
    dist: PathBuf,
    /// The library in it, signed (`<library>.minisig`).
    library: PathBuf,
    /// The registry's key pair: `registry.key`, `registry.pub`.
    registry_key: PathBuf,
    registry_pub: PathBuf,
}

const DESCRIPTION: &str = "Forecasts for the publish tests";

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = shared_target_dir().join("publish-fixture");
        if root.exists() {
            fs::remove_dir_all(&root).unwrap();
        }
        fs::create_dir_all(&root).unwrap();
        let plugin = new_plugin(&root, "pubdemo");
        let manifest = plugin.join("Cargo.toml");
        let toml = fs::read_to_string(&manifest).unwrap();
        let described = toml.replacen(
            "description = \"A Backworks plugin\"\n",
            &format!("description = \"{DESCRIPTION}\"\nkeywords = [\"weather\", \"forecast\"]\n"),
            1,
        );
        assert_ne!(described, toml, "the template's description line");
        fs::write(&manifest, described).unwrap();
        let dist = root.join("dist");
        let output = cargo_backworks(
            &plugin,
            &[
                "build",
                "--release",
                "--quiet",
                "--target",
                TARGET,
                "--dist-dir",
                dist.to_str().unwrap(),
            ],
        );
        assert!(output.status.success(), "build failed: {}", stderr(&output));
        let library = dist_path_in(&dist, "pubdemo", TARGET);
        for (dir, args) in [
            (&plugin, &["keygen", "--unencrypted"][..]),
            (&root, &["keygen", "--unencrypted", "registry"][..]),
            (
                &plugin,
                &["sign", library.to_str().unwrap(), "--key", "backworks.key"][..],
            ),
        ] {
            let output = cargo_backworks(dir, args);
            assert!(
                output.status.success(),
                "{args:?} failed: {}",
                stderr(&output)
            );
        }
        Fixture {
            plugin,
            dist,
            library,
            registry_key: root.join("registry.key"),
            registry_pub: root.join("registry.pub"),
            root,
        }
    })
}

impl Fixture {
    fn publisher_pub(&self) -> PathBuf {
        self.plugin.join("backworks.pub")
    }

    fn publisher_key(&self) -> PublicKey {
        parse_public_key(&fs::read_to_string(self.publisher_pub()).unwrap()).unwrap()
    }

    fn registry_public_key(&self) -> PublicKey {
        parse_public_key(&fs::read_to_string(&self.registry_pub).unwrap()).unwrap()
    }

    /// `index.json`'s bytes, verified with the test registry's key (any
    /// serial, not expired).
    fn verified_index(&self, bytes: &[u8]) -> registry::Index {
        registry::verify_index(
            bytes,
            &self.registry_public_key(),
            Freshness {
                last_serial: None,
                now: registry::now(),
            },
            "the test registry",
        )
        .unwrap()
    }

    fn file_name(&self) -> String {
        self.library
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// A copy of the dist layout in `to`: the library, and its signature
    /// when `signed`.
    fn copy_dist(&self, to: &Path, signed: bool) -> PathBuf {
        let target_dir = to.join(TARGET);
        fs::create_dir_all(&target_dir).unwrap();
        let library = target_dir.join(self.file_name());
        fs::copy(&self.library, &library).unwrap();
        if signed {
            fs::copy(minisig(&self.library), minisig(&library)).unwrap();
        }
        library
    }

    /// Labels for what differs between runs: paths, the host target, keys,
    /// hashes and sizes.
    fn redactions(&self, tmp: &Path) -> Redactions {
        let size = fs::metadata(&self.library).unwrap().len();
        Redactions::new(&self.root)
            .with(tmp.display().to_string(), "tmp")
            .with(key_id(&self.publisher_pub()), "publisher key id")
            .with(sha256_hex(&self.library), "sha256")
            .with(format!("{size} bytes"), "size")
    }
}

/// `cargo backworks publish <args>` in `dir`, with the token when given and
/// no proxy or password from the environment; fails the test if it runs
/// past [`DEADLINE`].
fn publish(dir: &Path, args: &[&str], token: Option<&str>) -> Output {
    let mut command = cargo_backworks_command(dir, &[&["publish"][..], args].concat());
    for var in [
        "BACKWORKS_REGISTRY_TOKEN",
        "BACKWORKS_KEY_PASSWORD",
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env_remove(var);
    }
    if let Some(token) = token {
        command.env("BACKWORKS_REGISTRY_TOKEN", token);
    }
    run_bounded(command, DEADLINE)
}

/// Like [`publish`], asserting success; returns stdout.
fn publish_ok(dir: &Path, args: &[&str], token: Option<&str>) -> String {
    let output = publish(dir, args, token);
    assert!(
        output.status.success(),
        "publish {args:?} failed ({}):\n{}{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Like [`publish`], asserting exit code `code` and nothing on stdout;
/// returns stderr.
fn publish_fails(dir: &Path, args: &[&str], token: Option<&str>, code: i32) -> String {
    let output = publish(dir, args, token);
    assert_eq!(
        output.status.code(),
        Some(code),
        "publish {args:?}:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert_eq!(
        text(&output.stdout),
        "",
        "publish {args:?} printed on stdout"
    );
    text(&output.stderr)
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn publishes_into_a_directory_registry_once() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let registry_dir = tmp.path().join("registry");
    let args = [
        "--registry",
        path(&registry_dir),
        "--registry-key",
        path(&f.registry_key),
        "--dist-dir",
        path(&f.dist),
    ];
    // The publisher key is ./backworks.pub, where `keygen` put it.
    let stdout = publish_ok(&f.plugin, &args, None);
    let redact = f.redactions(tmp.path());
    insta::assert_snapshot!("directory", redact.apply(&stdout));

    // The index is signed by the registry key and lists the release, whose
    // file matches the index and lists the artifact with its hash and size.
    let index_path = registry_dir.join(registry::INDEX_PATH);
    let index_bytes = fs::read(&index_path).unwrap();
    let index = f.verified_index(&index_bytes);
    assert_eq!(index.serial, 1);
    let entry = &index.plugins["pubdemo"];
    assert_eq!(entry.description, DESCRIPTION);
    assert_eq!(entry.keywords, ["weather", "forecast"]);
    let reference = index.release_ref("pubdemo", "0.1.0").unwrap();
    let release_bytes = fs::read(registry_dir.join(&reference.path)).unwrap();
    assert_eq!(reference.size, release_bytes.len() as u64);
    assert_eq!(reference.sha256, registry::sha256_hex(&release_bytes));
    let release: Release = serde_json::from_slice(&release_bytes).unwrap();
    assert_eq!(
        (release.name.as_str(), release.version.as_str()),
        ("pubdemo", "0.1.0")
    );
    assert_eq!(release.description, DESCRIPTION);
    assert_eq!(release.publisher, key_id(&f.publisher_pub()));
    assert_eq!(release.targets.len(), 1, "{release:#?}");
    let artifact = &release.targets[TARGET];
    let library = fs::read(&f.library).unwrap();
    assert_eq!(artifact.sha256, sha256_hex(&f.library));
    assert_eq!(artifact.size, library.len() as u64);
    assert_eq!(
        artifact.path,
        format!("plugins/pubdemo/0.1.0/{TARGET}/{}", f.file_name())
    );
    assert_eq!(
        fs::read(registry_dir.join(&artifact.path)).unwrap(),
        library
    );
    assert_eq!(
        fs::read(registry_dir.join(&artifact.signature)).unwrap(),
        fs::read(minisig(&f.library)).unwrap()
    );

    // The same version again: refused, the index untouched.
    let quiet: Vec<&str> = args.iter().copied().chain(["--quiet"]).collect();
    let stderr = publish_fails(&f.plugin, &quiet, None, 5);
    assert!(
        stderr.contains("pubdemo 0.1.0 is already published"),
        "{stderr}"
    );
    insta::assert_snapshot!("directory_already_published", redact.apply(&stderr));
    assert_eq!(fs::read(&index_path).unwrap(), index_bytes);
}

#[test]
fn publishes_into_a_file_url_registry_with_json_output() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let registry_dir = tmp.path().join("registry");
    let url = format!("file://{}", registry_dir.display());
    let stdout = publish_ok(
        &f.plugin,
        &[
            "--registry",
            &url,
            "--registry-key",
            path(&f.registry_key),
            "--public-key",
            path(&f.publisher_pub()),
            "--dist-dir",
            path(&f.dist),
            "--json",
        ],
        None,
    );
    let printed: Release = serde_json::from_str(&stdout).unwrap();
    let index = f.verified_index(&fs::read(registry_dir.join(registry::INDEX_PATH)).unwrap());
    let reference = index.release_ref("pubdemo", "0.1.0").unwrap();
    let written: Release =
        serde_json::from_slice(&fs::read(registry_dir.join(&reference.path)).unwrap()).unwrap();
    assert_eq!(printed, written);
}

#[test]
fn refusals_before_anything_is_sent_or_written() {
    let f = fixture();
    let peer = Peer::start(Answer::Validate(f.publisher_key()));
    let tmp = tempfile::tempdir().unwrap();
    let redact = f.redactions(tmp.path()).with(&peer.url, "registry url");
    let http = |dist: &Path, extra: &[&str], token: Option<&str>, code: i32| {
        let mut args = vec!["--registry", &peer.url, "--dist-dir", path(dist), "--quiet"];
        args.extend(extra);
        publish_fails(&f.plugin, &args, token, code)
    };

    // An artifact without its signature: named, with the command that signs.
    let unsigned = tmp.path().join("unsigned");
    let library = f.copy_dist(&unsigned, false);
    let stderr = http(&unsigned, &[], Some(TOKEN), 2);
    assert!(
        stderr.contains(&format!("cargo backworks sign {}", library.display())),
        "{stderr}"
    );
    insta::assert_snapshot!("unsigned", redact.apply(&stderr));

    // An artifact changed after it was signed.
    let modified = tmp.path().join("modified");
    let library = f.copy_dist(&modified, true);
    let mut bytes = fs::read(&library).unwrap();
    bytes.extend_from_slice(b"appended after signing");
    fs::write(&library, bytes).unwrap();
    let stderr = http(&modified, &[], Some(TOKEN), 1);
    assert!(
        stderr.contains("the file was modified after it was signed"),
        "{stderr}"
    );

    // A signature that is not the given publisher key's.
    let stderr = http(
        &f.dist,
        &["--public-key", path(&f.registry_pub)],
        Some(TOKEN),
        1,
    );
    assert!(stderr.contains("which is not a trusted key"), "{stderr}");

    // No token.
    let stderr = http(&f.dist, &[], None, 2);
    assert!(stderr.contains("set BACKWORKS_REGISTRY_TOKEN"), "{stderr}");
    insta::assert_snapshot!("no_token", redact.apply(&stderr));

    // A copy of the plugin package in `tmp/<dir>` with one line of its
    // Cargo.toml replaced, published from there to the peer (exit 2).
    let edited = |dir: &str, line: &str, by: &str| {
        let package = tmp.path().join(dir);
        fs::create_dir_all(package.join("src")).unwrap();
        let toml = fs::read_to_string(f.plugin.join("Cargo.toml")).unwrap();
        let edited = toml.replacen(line, by, 1);
        assert_ne!(toml, edited, "{line:?} is not in the fixture's Cargo.toml");
        fs::write(package.join("Cargo.toml"), edited).unwrap();
        fs::copy(f.plugin.join("src/lib.rs"), package.join("src/lib.rs")).unwrap();
        let args = [
            "--registry",
            &peer.url,
            "--dist-dir",
            path(&f.dist),
            "--quiet",
        ];
        (publish_fails(&package, &args, Some(TOKEN), 2), package)
    };

    // Nothing built for the package's version.
    let (stderr, _) = edited(
        "bumped",
        "\nversion = \"0.1.0\"\n",
        "\nversion = \"0.2.0\"\n",
    );
    assert!(stderr.contains("no artifact of pubdemo 0.2.0"), "{stderr}");
    assert!(
        stderr.contains("cargo backworks build --release"),
        "{stderr}"
    );
    insta::assert_snapshot!("no_artifacts", redact.apply(&stderr));

    // Keywords the registry would refuse: refused before the upload, with
    // the manifest named.
    let (stderr, listed) = edited(
        "listed",
        "keywords = [\"weather\", \"forecast\"]",
        "keywords = [\"weather\", \"forecast\", \"api\", \"http\", \"json\", \"cli\"]",
    );
    assert!(
        stderr.contains(&format!("{}", listed.join("Cargo.toml").display())),
        "{stderr}"
    );
    insta::assert_snapshot!("too_many_keywords", redact.apply(&stderr));

    assert_eq!(
        peer.requests().len(),
        0,
        "nothing reaches the registry when a check fails"
    );

    // A directory registry needs its key, and a publisher key.
    let registry_dir = tmp.path().join("registry");
    let stderr = publish_fails(
        &f.plugin,
        &[
            "--registry",
            path(&registry_dir),
            "--dist-dir",
            path(&f.dist),
        ],
        None,
        2,
    );
    assert!(stderr.contains("pass --registry-key"), "{stderr}");
    insta::assert_snapshot!("no_registry_key", redact.apply(&stderr));
    let stderr = publish_fails(
        tmp.path(),
        &[
            "--registry",
            path(&registry_dir),
            "--registry-key",
            path(&f.registry_key),
            "--manifest-path",
            path(&f.plugin.join("Cargo.toml")),
            "--dist-dir",
            path(&f.dist),
        ],
        None,
        2,
    );
    assert!(stderr.contains("pass --public-key"), "{stderr}");
    assert!(!registry_dir.exists(), "nothing is written");
}

#[test]
fn a_record_whose_target_is_a_path_is_refused_by_a_directory_registry() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let registry_dir = tmp.path().join("registry");
    let publish_from = |package: &Path, dist: &Path| {
        publish(
            package,
            &[
                "--registry",
                path(&registry_dir),
                "--registry-key",
                path(&f.registry_key),
                "--public-key",
                path(&f.publisher_pub()),
                "--dist-dir",
                path(dist),
                "--quiet",
            ],
            None,
        )
    };
    // The honest 0.1.0 first: the tree then holds another version's files.
    let output = publish_from(&f.plugin, &f.dist);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let published = registry_dir.join(format!("plugins/pubdemo/0.1.0/{TARGET}"));
    let listing = |dir: &Path| {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let published_files = listing(&published);
    let index = fs::read(registry_dir.join(registry::INDEX_PATH)).unwrap();

    // Version 0.2.0 of the package, whose record names a path or an
    // unknown triple as its target, signed with the publisher's real key
    // (`cargo backworks sign`). The dist directory `evil` is no triple, so
    // the file name says nothing against the record.
    let package = tmp.path().join("pubdemo-0.2.0");
    fs::create_dir_all(package.join("src")).unwrap();
    let toml = fs::read_to_string(f.plugin.join("Cargo.toml")).unwrap();
    let bumped = toml.replacen("\nversion = \"0.1.0\"\n", "\nversion = \"0.2.0\"\n", 1);
    assert_ne!(bumped, toml);
    fs::write(package.join("Cargo.toml"), bumped).unwrap();
    fs::copy(f.plugin.join("src/lib.rs"), package.join("src/lib.rs")).unwrap();
    let original = fs::read(&f.library).unwrap();
    let other = format!("../plugins/pubdemo/0.1.0/{TARGET}");
    for (hostile, reason) in [
        // From the staging directory `registry/.staging-*`: `tmp/victim`.
        ("../../victim", "is not a target triple"),
        // Into the other version's directory.
        (other.as_str(), "is not a target triple"),
        (
            "x86_64-unknown-none",
            "which is not a target triple backworks knows",
        ),
    ] {
        let dist = tmp.path().join("dist");
        let _ = fs::remove_dir_all(&dist);
        fs::create_dir_all(dist.join("evil")).unwrap();
        let library = dist.join("evil/pubdemo-0.2.0-evil.so");
        let edited = with_record(
            &with_record(&original, "version", "0.2.0"),
            "target",
            hostile,
        );
        fs::write(&library, edited).unwrap();
        let signed = cargo_backworks(
            &f.plugin,
            &["sign", path(&library), "--key", "backworks.key"],
        );
        assert!(signed.status.success(), "{}", stderr(&signed));
        // `check`: a path is no triple (an error); a well-formed triple it
        // does not know is a warning, which the registry refuses below.
        let checked = cargo_backworks(&f.plugin, &["check", path(&library)]);
        let report = text(&checked.stdout);
        assert!(report.contains("unknown-target"), "{report}");
        let expected = if hostile.contains('/') { 1 } else { 0 };
        assert_eq!(checked.status.code(), Some(expected), "{hostile}: {report}");
        let output = publish_from(&package, &dist);
        let message = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{hostile}: {message}");
        assert!(message.contains(reason), "{hostile}: {message}");
        assert!(message.contains("target"), "{message}");
        assert!(message.contains(&format!("{hostile:?}")), "{message}");
    }
    assert!(
        !tmp.path().join("victim").exists(),
        "nothing outside the tree"
    );
    assert_eq!(listing(&published), published_files);
    assert_eq!(listing(&registry_dir.join("plugins/pubdemo")), ["0.1.0"]);
    assert_eq!(
        fs::read(registry_dir.join(registry::INDEX_PATH)).unwrap(),
        index
    );
}

#[test]
fn publishes_to_an_http_registry_in_one_multipart_request() {
    let f = fixture();
    let peer = Peer::start(Answer::Validate(f.publisher_key()));
    let tmp = tempfile::tempdir().unwrap();
    let args = ["--registry", &peer.url, "--dist-dir", path(&f.dist)];
    let stdout = publish_ok(&f.plugin, &args, Some(TOKEN));
    let redact = f.redactions(tmp.path()).with(&peer.url, "registry url");
    insta::assert_snapshot!("http", redact.apply(&stdout));

    let requests = peer.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        request.authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let names: Vec<&str> = request.parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["metadata", "artifact", "signature"]);
    let (metadata, artifact, signature) = (&request.parts[0], &request.parts[1], &request.parts[2]);
    let metadata_json: Value = serde_json::from_slice(&metadata.bytes).unwrap();
    assert_eq!(
        metadata_json,
        json!({"description": DESCRIPTION, "keywords": ["weather", "forecast"]})
    );
    assert_eq!(metadata.content_type.as_deref(), Some("application/json"));
    assert_eq!(artifact.file_name.as_deref(), Some(f.file_name().as_str()));
    assert_eq!(
        artifact.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert!(
        artifact.bytes == fs::read(&f.library).unwrap(),
        "the artifact arrives as the file is"
    );
    assert_eq!(
        signature.file_name.as_deref(),
        Some(format!("{}.minisig", f.file_name()).as_str())
    );
    assert_eq!(
        text(&signature.bytes),
        fs::read_to_string(minisig(&f.library)).unwrap()
    );

    // --json prints the registry's answer: the release it recorded.
    let json_args: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
    let stdout = publish_ok(&f.plugin, &json_args, Some(TOKEN));
    let release: Release = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (release.name.as_str(), release.version.as_str()),
        ("pubdemo", "0.1.0")
    );
    assert_eq!(release.targets[TARGET].sha256, sha256_hex(&f.library));
    assert_eq!(release.keywords, ["weather", "forecast"]);
}

#[test]
fn http_registry_refusals_and_failures_are_errors_naming_the_registry() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let redact = f.redactions(tmp.path());
    let run = |url: &str, token: &str, code: i32| {
        publish_fails(
            &f.plugin,
            &["--registry", url, "--dist-dir", path(&f.dist), "--quiet"],
            Some(token),
            code,
        )
    };

    // 409: the registry's own message, exit 5.
    let message = "pubdemo 0.1.0 is already published and published versions are immutable";
    let peer = Peer::start(Answer::Conflict(message));
    let stderr = run(&peer.url, TOKEN, 5);
    assert!(stderr.contains(message), "{stderr}");
    assert!(stderr.contains("409 Conflict"), "{stderr}");
    let redact_peer = |text: &str| redact.apply(text).replace(&peer.url, "[registry url]");
    insta::assert_snapshot!("http_conflict", redact_peer(&stderr));
    assert_eq!(peer.requests().len(), 1);

    // 401: a wrong token.
    let stderr = run(&peer.url, "not-the-token", 5);
    assert!(stderr.contains("401 Unauthorized"), "{stderr}");
    assert!(stderr.contains("missing or wrong token"), "{stderr}");

    // 422: the registry does not take this publisher's key (the peer
    // validates against the registry key instead).
    let strict = Peer::start(Answer::Validate(f.registry_public_key()));
    let stderr = run(&strict.url, TOKEN, 1);
    assert!(stderr.contains("422 Unprocessable Entity"), "{stderr}");
    assert!(stderr.contains("which is not a trusted key"), "{stderr}");

    // 413 at once, before the body is read, while most of a 48 MiB upload
    // is still to be sent. The peer then closes the connection; whether its
    // answer can still be read depends on timing (the reset that the unread
    // body causes may discard it), so either the registry's message or a
    // connection closed during the upload is reported, never a generic
    // failure.
    let large = tmp.path().join("large");
    let library = f.copy_dist(&large, false);
    let mut bytes = fs::read(&library).unwrap();
    bytes.resize(bytes.len() + (48 << 20), 0);
    fs::write(&library, bytes).unwrap();
    let output = cargo_backworks(
        &f.plugin,
        &["sign", path(&library), "--key", "backworks.key"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let message = "the upload is 50000000 bytes, more than the 1000 this registry accepts";
    let small = Peer::start(Answer::TooLarge(message));
    let stderr = publish_fails(
        &f.plugin,
        &[
            "--registry",
            &small.url,
            "--dist-dir",
            path(&large),
            "--quiet",
        ],
        Some(TOKEN),
        5,
    );
    let answered = stderr.contains(&format!("(413 Payload Too Large): {message}"));
    let closed = stderr.contains(&format!(
        "the registry at {}api/v1/publish closed the connection before the upload was sent in full",
        small.url
    ));
    assert!(answered || closed, "{stderr}");

    // Nothing listens: the error names the URL.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{closed}");
    let stderr = run(&url, TOKEN, 5);
    assert!(
        stderr.contains(&format!("cannot publish to {url}/api/v1/publish")),
        "{stderr}"
    );
    assert!(stderr.contains("Connection refused"), "{stderr}");
    insta::assert_snapshot!(
        "http_connection_refused",
        redact.apply(&stderr).replace(&closed.to_string(), "[port]")
    );
}

/// What the peer answers a publish request with a valid token.
#[derive(Clone)]
enum Answer {
    /// Validates the upload with this publisher key as the marketplace
    /// does (`registry::validate_upload`): 201 with the release, or 422.
    Validate(PublicKey),
    /// 409 with this message.
    Conflict(&'static str),
    /// 413 with this message, at once, without reading the body (as a
    /// server checking `Content-Length` against its limit does).
    TooLarge(&'static str),
    /// This status and JSON body: a hostile registry's answer.
    Forged(StatusCode, Value),
}

/// One part of a received multipart body.
#[derive(Debug, Clone)]
struct ReceivedPart {
    name: String,
    file_name: Option<String>,
    content_type: Option<String>,
    bytes: Vec<u8>,
}

/// One received publish request.
#[derive(Debug, Clone)]
struct Received {
    authorization: Option<String>,
    parts: Vec<ReceivedPart>,
}

struct PeerState {
    answer: Answer,
    received: Mutex<Vec<Received>>,
}

/// An HTTP registry peer on 127.0.0.1: `POST /api/v1/publish` only. It
/// stops when dropped (its runtime with it).
struct Peer {
    url: String,
    state: Arc<PeerState>,
    _runtime: tokio::runtime::Runtime,
}

impl Peer {
    fn start(answer: Answer) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(PeerState {
            answer,
            received: Mutex::new(Vec::new()),
        });
        let router = axum::Router::new()
            .route("/api/v1/publish", post(receive))
            .layer(DefaultBodyLimit::disable())
            .with_state(state.clone());
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            state,
            _runtime: runtime,
        }
    }

    fn requests(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": message.into() })))
}

async fn receive(
    State(state): State<Arc<PeerState>>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> (StatusCode, Json<Value>) {
    if let Answer::TooLarge(message) = &state.answer {
        return error(StatusCode::PAYLOAD_TOO_LARGE, *message);
    }
    let mut parts = Vec::new();
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_owned();
                let file_name = field.file_name().map(str::to_owned);
                let content_type = field.content_type().map(str::to_owned);
                match field.bytes().await {
                    Ok(bytes) => parts.push(ReceivedPart {
                        name,
                        file_name,
                        content_type,
                        bytes: bytes.to_vec(),
                    }),
                    Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
                }
            }
            Ok(None) => break,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.received.lock().unwrap().push(Received {
        authorization: authorization.clone(),
        parts: parts.clone(),
    });
    if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong token");
    }
    let publisher = match &state.answer {
        Answer::Conflict(message) => return error(StatusCode::CONFLICT, *message),
        Answer::Validate(publisher) => publisher.clone(),
        Answer::TooLarge(message) => return error(StatusCode::PAYLOAD_TOO_LARGE, *message),
        Answer::Forged(status, body) => return (*status, Json(body.clone())),
    };
    let mut upload = Upload::default();
    for part in &parts {
        match part.name.as_str() {
            "metadata" => {
                let metadata: Value = match serde_json::from_slice(&part.bytes) {
                    Ok(metadata) => metadata,
                    Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
                };
                upload.description = metadata["description"].as_str().map(str::to_owned);
                upload.keywords = metadata["keywords"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect();
            }
            "artifact" => {
                let file_name = part.file_name.clone().unwrap_or_default();
                let signature = parts.iter().find(|s| {
                    s.name == "signature"
                        && s.file_name.as_deref() == Some(&format!("{file_name}.minisig"))
                });
                let Some(signature) = signature else {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("{file_name} has no signature"),
                    );
                };
                upload.artifacts.push(UploadArtifact {
                    file_name,
                    bytes: part.bytes.clone(),
                    signature: String::from_utf8_lossy(&signature.bytes).into_owned(),
                });
            }
            _ => {}
        }
    }
    match registry::validate_upload(upload, &[publisher]) {
        Ok(validated) => (
            StatusCode::CREATED,
            Json(serde_json::to_value(validated.release()).unwrap()),
        ),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

/// Issue 13, defect 10 in `publish`: what an HTTP registry answered was
/// printed as it came: its refusal's message, a field name serde quotes
/// when the answer is not a release, the release it says it recorded. A
/// registry could clear the screen or add a line such as "verified by key
/// ..." on the publisher's terminal. Now all of it is printed escaped, each
/// message on one line, and `--json` in `\uXXXX` escapes.
#[test]
fn a_registry_answer_cannot_drive_the_terminal() {
    let f = fixture();
    let forged = "taken\u{1b}[2J\r\nverified by key CAB78193ADCAB890\u{9b}\u{202e}";
    let escaped = "taken\\u{1b}[2J\\r\\nverified by key CAB78193ADCAB890\\u{9b}\\u{202e}";
    let raw = ['\u{1b}', '\r', '\u{9b}', '\u{202e}'];
    let args = |url: &str| -> Vec<String> {
        ["--registry", url, "--dist-dir", path(&f.dist), "--quiet"]
            .map(str::to_owned)
            .to_vec()
    };
    let fails = |answer: Answer, code: i32| {
        let peer = Peer::start(answer);
        let args = args(&peer.url);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        publish_fails(&f.plugin, &args, Some(TOKEN), code)
    };

    // A refusal's message.
    let stderr = fails(
        Answer::Forged(StatusCode::CONFLICT, json!({ "error": forged })),
        5,
    );
    assert!(
        stderr.contains(&format!("(409 Conflict): {escaped}; bump the version")),
        "{stderr}"
    );
    assert!(!stderr.contains(raw), "{stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // A 201 that is no release: serde's error names the field it sent.
    let stderr = fails(Answer::Forged(StatusCode::CREATED, json!({ forged: 1 })), 5);
    assert!(
        stderr.contains(&format!("unknown field `{escaped}`")),
        "{stderr}"
    );
    assert!(!stderr.contains(raw), "{stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // A release whose every string is forged.
    let release = json!({
        "format": 1,
        "name": forged,
        "version": forged,
        "description": forged,
        "keywords": [forged],
        "abi": 1,
        "publisher": forged,
        "published": 0,
        "targets": {
            forged: {"path": forged, "signature": forged, "sha256": forged, "size": 1}
        }
    });
    let peer = Peer::start(Answer::Forged(StatusCode::CREATED, release.clone()));
    let args = args(&peer.url);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stdout = publish_ok(&f.plugin, &args, Some(TOKEN));
    assert!(!stdout.contains(raw), "{stdout:?}");
    assert_eq!(
        stdout,
        format!(
            "published {escaped} {escaped} to {}: 1 target, signed by key {escaped}\n  {escaped}: {escaped} (1 bytes, sha256 {escaped})\n",
            peer.url
        )
    );
    args.push("--json");
    let stdout = publish_ok(&f.plugin, &args, Some(TOKEN));
    assert!(stdout.is_ascii(), "{stdout:?}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed, release, "the same answer, escaped");
}
