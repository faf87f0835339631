//! `backworks marketplace serve` and `resign` end to end: the real binary on
//! 127.0.0.1, the weather plugin built with cargo and signed with real
//! minisign keys, published over real HTTP multipart; the tree, search and
//! every refusal checked over HTTP; a server killed in the middle of an
//! upload; the index re-signed in the background and by `resign`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use backworks_artifact::signature;
use backworks_registry::{self as registry, Freshness, Index};
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::harness::{Keys, Server, backworks, start_command};
use crate::support;

const TOKEN: &str = "test-token-0123456789abcdef";

/// A registry directory with its key file, and a publisher's keys.
struct Registry {
    dir: tempfile::TempDir,
    key_file: PathBuf,
    registry_key: minisign::PublicKey,
    publisher: Keys,
}

impl Registry {
    /// With an unencrypted registry key.
    fn new() -> Self {
        Self::with_key(minisign::KeyPair::generate_unencrypted_keypair().unwrap())
    }

    /// With the registry key `pair` (its secret key as generated: encrypted
    /// or not).
    fn with_key(pair: minisign::KeyPair) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("registry.key");
        std::fs::write(&key_file, pair.sk.to_box(None).unwrap().into_string()).unwrap();
        Self {
            dir,
            key_file,
            registry_key: pair.pk,
            publisher: Keys::new(),
        }
    }

    fn tree(&self) -> PathBuf {
        self.dir.path().join("tree")
    }

    /// `backworks marketplace serve` over the tree, trusting the publisher,
    /// with `token` in the environment and `extra` arguments.
    fn serve(&self, token: Option<&str>, extra: &[&str]) -> Server {
        let mut command = self.serve_command(token, extra);
        command.env("RUST_LOG", "info");
        start_command(command, "marketplace listening on ")
    }

    fn serve_command(&self, token: Option<&str>, extra: &[&str]) -> Command {
        let mut command = backworks();
        command
            .args(["marketplace", "serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(self.tree())
            .arg("--key")
            .arg(&self.key_file)
            .args(["--publisher-key", &self.publisher.base64()])
            .args(extra)
            .env_remove("BACKWORKS_REGISTRY_TOKEN")
            .env_remove("BACKWORKS_REGISTRY_KEY_PASSWORD");
        if let Some(token) = token {
            command.env("BACKWORKS_REGISTRY_TOKEN", token);
        }
        command
    }

    /// The index on disk, verified with the registry key.
    fn index_on_disk(&self) -> Index {
        let bytes = std::fs::read(self.tree().join("index.json")).unwrap();
        verify(&bytes, &self.registry_key)
    }
}

fn verify(index_bytes: &[u8], registry_key: &minisign::PublicKey) -> Index {
    registry::verify_index(
        index_bytes,
        registry_key,
        Freshness {
            last_serial: None,
            now: registry::now(),
        },
        "the test registry",
    )
    .unwrap()
}

/// The weather plugin under its dist-layout name, and its signature by
/// `keys`.
fn weather(keys: &Keys) -> (String, Vec<u8>, String) {
    let bytes = std::fs::read(support::weather_plugin()).unwrap();
    let signed = signature::sign(&bytes, &keys.sk, Some(&keys.pk)).unwrap();
    let file = format!("weather-1.0.0-{}.so", backworks_plugin_sdk::TARGET);
    (file, bytes, signed.minisig)
}

fn client() -> reqwest::blocking::Client {
    crate::harness::client_builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The multipart form `cargo backworks publish` sends for one artifact.
fn form(file: &str, bytes: Vec<u8>, minisig: &str) -> Form {
    Form::new()
        .part(
            "metadata",
            Part::text(
                json!({"description": "Weather API integration, published", "keywords": ["weather", "forecast"]})
                    .to_string(),
            ),
        )
        .part("artifact", Part::bytes(bytes).file_name(file.to_owned()))
        .part(
            "signature",
            Part::text(minisig.to_owned()).file_name(format!("{file}.minisig")),
        )
}

/// POSTs `form` to the publish endpoint with `token`; (status, JSON body).
fn publish(server: &Server, token: Option<&str>, form: Form) -> (u16, Value) {
    let mut request = client()
        .post(format!("{}/api/v1/publish", server.base))
        .multipart(form);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    json_answer(request.send().unwrap())
}

fn json_answer(response: reqwest::blocking::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().unwrap();
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "{status}: {text}"
    );
    (status, serde_json::from_str(&text).unwrap())
}

fn get(server: &Server, path: &str) -> reqwest::blocking::Response {
    client()
        .get(format!("{}{path}", server.base))
        .send()
        .unwrap()
}

fn search(server: &Server, query: &str) -> (u16, Value) {
    json_answer(get(server, &format!("/api/v1/search?{query}")))
}

/// Asserts `answer` is `status` with an `error` containing `needle`.
fn assert_refused(answer: (u16, Value), status: u16, needle: &str) {
    let (got, body) = answer;
    let message = body["error"].as_str().unwrap_or_default();
    assert_eq!(got, status, "{body}");
    assert!(
        message.contains(needle),
        "expected `{needle}` in {message:?}"
    );
}

/// A raw HTTP/1.1 GET of `target` exactly as written (no client
/// normalises `..` away); the status code.
fn raw_get_status(server: &Server, target: &str) -> u16 {
    let addr = server.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

/// Names in the tree's root and under `plugins/`, to check nothing stray is
/// left behind.
fn tree_listing(root: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        names.push(entry.unwrap().file_name().to_string_lossy().into_owned());
    }
    if let Ok(plugins) = std::fs::read_dir(root.join("plugins")) {
        for entry in plugins {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            for version in std::fs::read_dir(root.join("plugins").join(&name)).unwrap() {
                let version = version.unwrap().file_name().to_string_lossy().into_owned();
                names.push(format!("plugins/{name}/{version}"));
            }
        }
    }
    names.sort();
    names
}

#[test]
fn published_plugins_are_served_verified_and_searchable() {
    let registry = Registry::new();
    let server = registry.serve(Some(TOKEN), &["--max-upload", "2MiB"]);
    // A new registry has a signed empty index.
    let empty = registry.index_on_disk();
    assert_eq!((empty.serial, empty.plugins.len()), (1, 0));

    let (file, bytes, minisig) = weather(&registry.publisher);
    let (status, release) = publish(&server, Some(TOKEN), form(&file, bytes.clone(), &minisig));
    assert_eq!(status, 201, "{release}");
    assert_eq!(release["name"], "weather");
    assert_eq!(release["version"], "1.0.0");
    assert_eq!(release["description"], "Weather API integration, published");
    assert_eq!(release["keywords"], json!(["weather", "forecast"]));
    assert_eq!(
        release["publisher"],
        signature::KeyId::of_public_key(&registry.publisher.pk).to_string()
    );

    // The index over HTTP verifies with the registry key and lists it.
    let response = get(&server, "/index.json");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let index = verify(&response.bytes().unwrap(), &registry.registry_key);
    assert_eq!(index.serial, 2);
    let reference = index.release_ref("weather", "1.0.0").unwrap().clone();

    // release.json and the artifact are the published bytes.
    let response = get(&server, &format!("/{}", reference.path));
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-length"],
        reference.size.to_string().as_str()
    );
    let release_bytes = response.bytes().unwrap();
    assert_eq!(
        release_bytes,
        std::fs::read(registry.tree().join(&reference.path)).unwrap()
    );
    let served = registry::verify_release(&release_bytes, &reference, "weather", "1.0.0").unwrap();
    assert_eq!(serde_json::to_value(&served).unwrap(), release);
    let artifact = &served.targets[backworks_plugin_sdk::TARGET];
    assert!(artifact.path.ends_with(&file));
    let response = get(&server, &format!("/{}", artifact.path));
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    assert_eq!(
        response.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    assert_eq!(response.bytes().unwrap(), bytes);
    assert_eq!(artifact.sha256, registry::sha256_hex(&bytes));
    let head = client()
        .head(format!("{}/{}", server.base, artifact.path))
        .send()
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    assert_eq!(
        head.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let response = get(&server, &format!("/{}", artifact.signature));
    assert_eq!(response.text().unwrap(), minisig);

    // Search: by name, keyword, description; pages; bad parameters.
    for query in ["q=weather", "q=FORECAST", "q=published+api", "q="] {
        let (status, page) = search(&server, query);
        assert_eq!(status, 200, "{query}: {page}");
        assert_eq!(page["total"], 1, "{query}: {page}");
        assert_eq!(page["hits"][0]["name"], "weather");
        assert_eq!(page["hits"][0]["version"], "1.0.0");
    }
    let (_, page) = search(&server, "q=weather");
    assert_eq!(page["hits"][0]["score"], 100);
    assert_eq!(
        (page["page"].clone(), page["per_page"].clone()),
        (json!(1), json!(20))
    );
    let (_, page) = search(&server, "q=rain");
    assert_eq!(
        (page["total"].clone(), page["hits"].clone()),
        (json!(0), json!([]))
    );
    let (_, page) = search(&server, "q=weather&page=2&per_page=1");
    assert_eq!(
        (page["total"].clone(), page["hits"].clone()),
        (json!(1), json!([]))
    );
    assert_refused(
        search(&server, "q=x&per_page=0"),
        400,
        "per_page must be 1 to 100",
    );
    assert_refused(
        search(&server, "q=x&per_page=101"),
        400,
        "per_page must be 1 to 100",
    );
    assert_refused(search(&server, "q=x&page=0"), 400, "page must be 1 or more");
    assert_refused(search(&server, "page=two"), 400, "the parameters are q");

    // Refusals, each with its status and reason.
    let again = || form(&file, bytes.clone(), &minisig);
    assert_refused(
        publish(&server, None, again()),
        401,
        "missing publish token",
    );
    assert_refused(
        publish(&server, Some("wrong"), again()),
        401,
        "wrong publish token",
    );
    assert_refused(
        publish(&server, Some(TOKEN), again()),
        409,
        "weather 1.0.0 is already published",
    );
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    assert_refused(
        publish(&server, Some(TOKEN), form(&file, flipped, &minisig)),
        422,
        "the file was modified after it was signed",
    );
    let stranger = Keys::new();
    let (_, _, foreign) = weather(&stranger);
    assert_refused(
        publish(&server, Some(TOKEN), form(&file, bytes.clone(), &foreign)),
        422,
        "which is not a trusted key",
    );
    let text = b"#!/bin/sh\necho not a plugin\n".repeat(100);
    assert_refused(
        publish(&server, Some(TOKEN), form(&file, text, &minisig)),
        422,
        "is not a valid plugin library",
    );
    let unsigned = Form::new().part(
        "artifact",
        Part::bytes(bytes.clone()).file_name(file.clone()),
    );
    assert_refused(
        publish(&server, Some(TOKEN), unsigned),
        422,
        "has no signature",
    );
    let listed = Form::new()
        .part(
            "metadata",
            Part::text(
                json!({"description": "x", "keywords": ["a", "b", "c", "d", "e", "f"]}).to_string(),
            ),
        )
        .part(
            "artifact",
            Part::bytes(bytes.clone()).file_name(file.clone()),
        )
        .part(
            "signature",
            Part::text(minisig.clone()).file_name(format!("{file}.minisig")),
        );
    assert_refused(
        publish(&server, Some(TOKEN), listed),
        422,
        "`keywords` has 6 entries, at most 5 are allowed",
    );
    let stray = Form::new().part("extra", Part::text("x"));
    assert_refused(
        publish(&server, Some(TOKEN), stray),
        422,
        "unknown part \"extra\"",
    );
    let big = Form::new().part(
        "artifact",
        Part::bytes(vec![0u8; 3 << 20]).file_name(file.clone()),
    );
    assert_refused(
        publish(&server, Some(TOKEN), big),
        413,
        "larger than this registry's limit of 2097152 bytes",
    );

    // Without a declared length (chunked), the limit holds as the body
    // streams in.
    let chunked = Form::new().part(
        "artifact",
        Part::reader(std::io::Cursor::new(vec![0u8; 3 << 20])).file_name(file.clone()),
    );
    assert_refused(
        publish(&server, Some(TOKEN), chunked),
        413,
        "larger than this registry's limit of 2097152 bytes",
    );

    // The tree's dot-files and anything outside it are not served.
    assert_eq!(get(&server, "/.lock").status(), 404);
    assert!(registry.tree().join(".lock").exists());
    assert_eq!(raw_get_status(&server, "/../x"), 404);
    assert_eq!(raw_get_status(&server, "/%2e%2e/registry.key"), 404);
    assert_eq!(raw_get_status(&server, "/plugins/../index.json"), 404);
    assert_eq!(raw_get_status(&server, "/plugins//weather"), 404);
    assert_eq!(raw_get_status(&server, "/plugins/weather"), 404);
    assert_eq!(raw_get_status(&server, "/"), 404);
    let (status, body) = json_answer(
        client()
            .post(format!("{}/index.json", server.base))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 405, "{body}");

    // None of the refusals changed the index or left files behind.
    assert_eq!(registry.index_on_disk(), index);
    assert_eq!(
        tree_listing(&registry.tree()),
        [".lock", "index.json", "plugins", "plugins/weather/1.0.0"]
    );
}

#[test]
fn publishing_is_disabled_without_a_token_and_refused_without_publishers() {
    let registry = Registry::new();
    let server = registry.serve(None, &[]);
    let (file, bytes, minisig) = weather(&registry.publisher);
    assert_refused(
        publish(&server, Some(TOKEN), form(&file, bytes.clone(), &minisig)),
        403,
        "publishing is disabled on this registry",
    );
    assert_eq!(registry.index_on_disk().serial, 1);
    drop(server);

    // The token from --token-file (trimmed) instead of the environment.
    let token_file = registry.dir.path().join("token");
    std::fs::write(&token_file, "file-token\n").unwrap();
    let server = registry.serve(None, &["--token-file", token_file.to_str().unwrap()]);
    let again = || form(&file, bytes.clone(), &minisig);
    assert_refused(
        publish(&server, Some(TOKEN), again()),
        401,
        "wrong publish token",
    );
    let (status, body) = publish(&server, Some("file-token"), again());
    assert_eq!(status, 201, "{body}");
    drop(server);

    // A token with no publisher key would refuse every upload: a
    // configuration error, as are a bad key file and a bad size.
    let mut command = backworks();
    command
        .args(["marketplace", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(registry.tree())
        .arg("--key")
        .arg(&registry.key_file)
        .env("BACKWORKS_REGISTRY_TOKEN", TOKEN);
    let output = bounded(command);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("no --publisher-key is given"),
        "{}",
        stderr(&output)
    );
    let mut command = backworks();
    command.args([
        "marketplace",
        "serve",
        "--dir",
        "/nonexistent/tree",
        "--key",
        "/nonexistent/registry.key",
    ]);
    let output = bounded(command);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot read the registry key /nonexistent/registry.key"),
        "{}",
        stderr(&output)
    );
    std::fs::write(&registry.key_file, "untrusted comment: x\nRWQA\n").unwrap();
    let output = bounded(registry.serve_command(None, &[]));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("is not a usable registry key: its key is 3 bytes, not 158"),
        "{}",
        stderr(&output)
    );
    let output = bounded(registry.serve_command(None, &["--max-upload", "lots"]));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("\"lots\" is not a size"),
        "{}",
        stderr(&output)
    );
}

/// Runs a command that must exit by itself within 60 s.
fn bounded(mut command: Command) -> Output {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the command did not exit: {command:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A body that hands out `bytes` in small chunks, sleeping before each
/// after the first `fast` bytes, and counts what it handed out.
struct SlowReader {
    bytes: std::io::Cursor<Vec<u8>>,
    fast: u64,
    sent: Arc<AtomicU64>,
}

impl Read for SlowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.bytes.position() >= self.fast {
            // 40 KiB/s: the second half of the 1.1 MB plugin takes about
            // 14 s, so a busy machine still kills the server mid-body.
            std::thread::sleep(Duration::from_millis(100));
        }
        let limit = buf.len().min(4096);
        let n = self.bytes.read(&mut buf[..limit])?;
        self.sent.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

#[test]
fn a_server_killed_mid_upload_writes_nothing_and_the_version_can_be_published_after() {
    let registry = Registry::new();
    let mut server = registry.serve(Some(TOKEN), &[]);
    let index_before = std::fs::read(registry.tree().join("index.json")).unwrap();
    let listing_before = tree_listing(&registry.tree());
    let (file, bytes, minisig) = weather(&registry.publisher);
    let total = bytes.len() as u64;
    let sent = Arc::new(AtomicU64::new(0));
    let reader = SlowReader {
        bytes: std::io::Cursor::new(bytes.clone()),
        fast: total / 2,
        sent: Arc::clone(&sent),
    };
    let slow = Form::new()
        .part(
            "artifact",
            Part::reader_with_length(reader, total).file_name(file.clone()),
        )
        .part(
            "signature",
            Part::text(minisig.clone()).file_name(format!("{file}.minisig")),
        );
    let url = format!("{}/api/v1/publish", server.base);
    let uploader = std::thread::spawn(move || {
        client()
            .post(url)
            .bearer_auth(TOKEN)
            .multipart(slow)
            .send()
            .map(|r| r.status().as_u16())
    });
    // Half the artifact is on its way: kill the server (SIGKILL).
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent.load(Ordering::SeqCst) < total / 2 + 8192 {
        assert!(Instant::now() < deadline, "the upload did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let answer = uploader.join().unwrap();
    assert!(answer.is_err(), "the upload was answered: {answer:?}");
    assert!(
        sent.load(Ordering::SeqCst) < total,
        "the whole body was sent"
    );
    assert_eq!(
        std::fs::read(registry.tree().join("index.json")).unwrap(),
        index_before
    );
    assert_eq!(tree_listing(&registry.tree()), listing_before);

    // Restarted, the same version publishes.
    let server = registry.serve(Some(TOKEN), &[]);
    let (status, body) = publish(&server, Some(TOKEN), form(&file, bytes, &minisig));
    assert_eq!(status, 201, "{body}");
    assert_eq!(registry.index_on_disk().serial, 2);
}

/// A body that hands out all of `bytes` but its last `held` bytes at once,
/// then waits for `release` before handing those out.
struct GatedReader {
    bytes: std::io::Cursor<Vec<u8>>,
    held: u64,
    sent: Arc<AtomicU64>,
    release: Arc<AtomicBool>,
}

impl Read for GatedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let total = self.bytes.get_ref().len() as u64;
        // Only catches a hang: the test releases it after one more request.
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.bytes.position() >= total - self.held && !self.release.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                return Err(std::io::Error::other("never released"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let n = self.bytes.read(buf)?;
        self.sent.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

#[test]
fn uploads_beyond_the_concurrent_limit_are_told_to_retry() {
    let registry = Registry::new();
    let server = registry.serve(Some(TOKEN), &["--max-concurrent-uploads", "1"]);
    let (file, bytes, minisig) = weather(&registry.publisher);
    let total = bytes.len() as u64;
    let (sent, release) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let gated = Form::new()
        .part(
            "artifact",
            Part::reader_with_length(
                GatedReader {
                    bytes: std::io::Cursor::new(bytes.clone()),
                    held: 4096,
                    sent: Arc::clone(&sent),
                    release: Arc::clone(&release),
                },
                total,
            )
            .file_name(file.clone()),
        )
        .part(
            "signature",
            Part::text(minisig.clone()).file_name(format!("{file}.minisig")),
        );
    let url = format!("{}/api/v1/publish", server.base);
    let first = std::thread::spawn(move || {
        let response = client()
            .post(url)
            .bearer_auth(TOKEN)
            .multipart(gated)
            .send()
            .unwrap();
        json_answer(response)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while sent.load(Ordering::SeqCst) < total - 4096 {
        assert!(Instant::now() < deadline, "the first upload did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The first upload holds the only slot: the second is told to retry,
    // and nothing of it is written.
    let response = client()
        .post(format!("{}/api/v1/publish", server.base))
        .bearer_auth(TOKEN)
        .multipart(form(&file, bytes.clone(), &minisig))
        .send()
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert_refused(
        json_answer(response),
        503,
        "as many uploads as it allows at once (--max-concurrent-uploads); publish again",
    );
    assert_eq!(registry.index_on_disk().serial, 1);
    // Once the first is read in full, it publishes, and its slot is free.
    release.store(true, Ordering::SeqCst);
    let (status, body) = first.join().unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(registry.index_on_disk().serial, 2);
    assert_refused(
        publish(&server, Some(TOKEN), form(&file, bytes, &minisig)),
        409,
        "already published",
    );
}

#[test]
fn the_index_is_resigned_before_it_expires_and_by_resign() {
    // An encrypted registry key, opened with the password from the
    // environment.
    let registry = Registry::with_key(
        minisign::KeyPair::generate_encrypted_keypair(Some("pw".into())).unwrap(),
    );
    let without_password = bounded(registry.serve_command(Some(TOKEN), &[]));
    assert_eq!(without_password.status.code(), Some(2));
    assert!(
        stderr(&without_password).contains("it is password-protected and no password was given"),
        "{}",
        stderr(&without_password)
    );

    // 24 s: re-signed once less than 12 s are left, checked every 3 s, so
    // a fetched index stays valid for 9 s more than the server needs,
    // however busy the machine (4 s left a margin of one second).
    let mut command = registry.serve_command(Some(TOKEN), &["--index-lifetime", "24s"]);
    command.env("BACKWORKS_REGISTRY_KEY_PASSWORD", "pw");
    let server = start_command(command, "marketplace listening on ");
    let (file, bytes, minisig) = weather(&registry.publisher);
    let (status, body) = publish(&server, Some(TOKEN), form(&file, bytes, &minisig));
    assert_eq!(status, 201, "{body}");
    let fetch = || {
        verify(
            &get(&server, "/index.json").bytes().unwrap(),
            &registry.registry_key,
        )
    };
    let first = fetch();
    assert_eq!(first.expires - first.issued, 24);
    // Within its 24 s lifetime the server re-signs it; every index fetched
    // meanwhile is valid (`verify` checks the expiry). The deadline only
    // catches a hang: an index not re-signed in time fails `verify` first.
    let deadline = Instant::now() + Duration::from_secs(300);
    let resigned = loop {
        let index = fetch();
        if index.serial > first.serial {
            break index;
        }
        assert!(Instant::now() < deadline, "not re-signed: {index:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(resigned.plugins, first.plugins);
    // Graceful stop on SIGTERM.
    let mut server = server;
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");

    // `resign` raises the serial by one and keeps the plugins.
    let before = registry.index_on_disk();
    let mut command = backworks();
    command
        .args(["marketplace", "resign", "--dir"])
        .arg(registry.tree())
        .arg("--key")
        .arg(&registry.key_file)
        .env("BACKWORKS_REGISTRY_KEY_PASSWORD", "pw");
    let output = bounded(command);
    assert!(output.status.success(), "{}", stderr(&output));
    let after = registry.index_on_disk();
    assert_eq!(after.serial, before.serial + 1);
    assert_eq!(after.plugins, before.plugins);
    assert_eq!(after.expires - after.issued, 30 * 24 * 3600);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "re-signed the index of {}: serial {}, expires at {} (unix seconds), 1 plugin\n",
            registry.tree().display(),
            after.serial,
            after.expires
        )
    );
    let mut command = backworks();
    command
        .args(["marketplace", "resign", "--dir"])
        .arg(registry.dir.path().join("missing"))
        .arg("--key")
        .arg(&registry.key_file)
        .env("BACKWORKS_REGISTRY_KEY_PASSWORD", "pw");
    let output = bounded(command);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("missing is not a directory"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn marketplace_help() {
    for (name, args) in [
        ("marketplace_help", &["marketplace", "--help"][..]),
        (
            "marketplace_serve_help",
            &["marketplace", "serve", "--help"],
        ),
        (
            "marketplace_resign_help",
            &["marketplace", "resign", "--help"],
        ),
    ] {
        let output = backworks().args(args).output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        insta::assert_snapshot!(name, String::from_utf8_lossy(&output.stdout));
    }
}

#[test]
fn a_record_whose_target_is_a_path_is_refused_and_nothing_is_written() {
    let registry = Registry::new();
    let server = registry.serve(Some(TOKEN), &[]);
    let target = backworks_plugin_sdk::TARGET;
    // Another plugin's version, published honestly under a plain name.
    let (_, bytes, minisig) = weather(&registry.publisher);
    let (status, body) = publish(
        &server,
        Some(TOKEN),
        form("libweather.so", bytes.clone(), &minisig),
    );
    assert_eq!(status, 201, "{body}");
    let published = registry
        .tree()
        .join(format!("plugins/weather/1.0.0/{target}/libweather.so"));
    assert_eq!(std::fs::read(&published).unwrap(), bytes);
    let index = registry.index_on_disk();
    let listing = tree_listing(&registry.tree());
    let outside: Vec<_> = std::fs::read_dir(registry.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    // Records validly signed by the registered publisher whose target is a
    // path: out of the tree (from the staging directory `tree/.staging-*`,
    // `../../victim` is a sibling of the tree), into the other plugin's
    // artifact, and a well-formed triple no target has.
    let other = format!("../plugins/weather/1.0.0/{target}");
    for (version, hostile, reason) in [
        ("2.0.0", "../../victim", "is not a target triple"),
        ("3.0.0", other.as_str(), "is not a target triple"),
        (
            "4.0.0",
            "x86_64-unknown-none",
            "which is not a target triple backworks knows",
        ),
    ] {
        let edited = support::with_record(
            &support::with_record(&bytes, "version", version),
            "target",
            hostile,
        );
        let signed = signature::sign(
            &edited,
            &registry.publisher.sk,
            Some(&registry.publisher.pk),
        )
        .unwrap();
        assert_eq!(signed.claims.target, hostile);
        let (status, body) = publish(
            &server,
            Some(TOKEN),
            form("libweather.so", edited, &signed.minisig),
        );
        assert_refused((status, body.clone()), 422, reason);
        let message = body["error"].as_str().unwrap();
        assert!(message.contains("target"), "{message}");
        assert!(message.contains(&format!("{hostile:?}")), "{message}");
    }

    // Nothing outside the tree, the other plugin's artifact untouched,
    // nothing new in the tree, the index as it was.
    assert!(!registry.dir.path().join("victim").exists());
    let after: Vec<_> = std::fs::read_dir(registry.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(after, outside);
    assert_eq!(std::fs::read(&published).unwrap(), bytes);
    assert_eq!(
        std::fs::read_dir(published.parent().unwrap())
            .unwrap()
            .count(),
        2,
        "the library and its signature only"
    );
    assert_eq!(tree_listing(&registry.tree()), listing);
    assert_eq!(registry.index_on_disk(), index);
}

/// Sends the headers of a publish request announcing `length` bytes of
/// body, with `token`, and no body; returns the answer's status line and
/// JSON body, and the connection (still open on the client's side).
fn headers_only_publish(
    server: &Server,
    token: Option<&str>,
    length: u64,
) -> (String, Value, TcpStream) {
    let addr = server.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    // Only catches a hang: the answer needs no byte of the body.
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let authorization =
        token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "POST /api/v1/publish HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {length}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream
            .read_exact(&mut byte)
            .unwrap_or_else(|e| panic!("no answer before the body was sent: {e}"));
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let content_length: usize = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0; content_length];
    stream.read_exact(&mut body).unwrap();
    let status = head.lines().next().unwrap().to_owned();
    (status, serde_json::from_slice(&body).unwrap(), stream)
}

#[test]
fn an_unauthenticated_upload_is_answered_before_its_body_and_takes_no_slot() {
    let registry = Registry::new();
    let server = registry.serve(Some(TOKEN), &["--max-concurrent-uploads", "1"]);
    // Clients that announce a body and send none: each is answered at
    // once, and stays connected.
    let mut held = Vec::new();
    for (token, length, reason) in [
        (None, 1024 * 1024, "missing publish token"),
        (Some("wrong"), 1024 * 1024, "wrong publish token"),
        (None, 1024 * 1024, "missing publish token"),
        (Some("wrong"), 100 * 1024 * 1024, "wrong publish token"),
    ] {
        let (status, body, stream) = headers_only_publish(&server, token, length);
        assert!(status.starts_with("HTTP/1.1 401 "), "{status}");
        assert!(body["error"].as_str().unwrap().contains(reason), "{body}");
        held.push(stream);
    }
    // The one upload slot is free: a publisher's upload goes through.
    let (file, bytes, minisig) = weather(&registry.publisher);
    let (status, body) = publish(&server, Some(TOKEN), form(&file, bytes, &minisig));
    assert_eq!(status, 201, "{body}");
    drop(held);
}

/// Slowloris against `marketplace serve` with `--header-timeout 1s
/// --max-connections 8` (see `serve::slowloris_is_cut_off`).
#[test]
fn slow_clients_are_cut_off_by_the_header_timeout_and_the_connection_cap() {
    let registry = Registry::new();
    let server = registry.serve(None, &["--header-timeout", "1s", "--max-connections", "8"]);
    crate::serve::slowloris_is_cut_off(&server.base, server.child.id(), 8, "/index.json");
}

/// A public key with `keys`' key id but other key bytes (what a publisher
/// who generated a second key with a colliding id, or an attacker, hands
/// over): minisign names a key by id only.
fn impostor_of(keys: &Keys) -> minisign::PublicKey {
    let mut bytes = minisign::KeyPair::generate_unencrypted_keypair()
        .unwrap()
        .pk
        .to_bytes();
    bytes[2..10].copy_from_slice(keys.pk.keynum());
    minisign::PublicKey::from_bytes(&bytes).unwrap()
}

#[test]
fn two_publisher_keys_with_one_key_id_are_refused_at_start_up() {
    let registry = Registry::new();
    let keys = registry.dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let write = |name: &str, key: &minisign::PublicKey| {
        let path = keys.join(name);
        std::fs::write(&path, key.to_box().unwrap().into_string()).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let release = write("release.pub", &registry.publisher.pk);
    let other = write("other.pub", &impostor_of(&registry.publisher));
    let id = signature::KeyId::of_public_key(&registry.publisher.pk).to_string();
    let unrelated = Keys::new().base64();
    for (name, args) in [
        ("different_keys", [&release, &unrelated, &other]),
        (
            "same_key_twice",
            [&release, &unrelated, &registry.publisher.base64()],
        ),
    ] {
        let mut command = backworks();
        command
            .args(["marketplace", "serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(registry.tree())
            .arg("--key")
            .arg(&registry.key_file)
            .env("BACKWORKS_REGISTRY_TOKEN", TOKEN);
        for arg in args {
            command.args(["--publisher-key", arg]);
        }
        let output = bounded(command);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{message}");
        assert!(message.contains(&id), "{message}");
        assert!(!registry.tree().exists(), "nothing was created");
        let redacted = message
            .replace(registry.dir.path().to_str().unwrap(), "[DIR]")
            .replace(&registry.publisher.base64(), "[PUBLISHER KEY]")
            .replace(&id, "[KEY ID]");
        insta::assert_snapshot!(format!("duplicate_publisher_key_id_{name}"), redacted);
    }
}

#[test]
fn a_version_that_differs_only_in_case_and_windows_unsafe_file_names_are_refused() {
    let registry = Registry::new();
    let server = registry.serve(Some(TOKEN), &[]);
    let target = backworks_plugin_sdk::TARGET;
    let (file, bytes, _) = weather(&registry.publisher);
    let signed_as = |version: &str| {
        let edited = support::with_record(&bytes, "version", version);
        let signed = signature::sign(
            &edited,
            &registry.publisher.sk,
            Some(&registry.publisher.pk),
        )
        .unwrap();
        (edited, signed.minisig)
    };
    let (first, minisig) = signed_as("1.0.0-RC1");
    let (status, body) = publish(&server, Some(TOKEN), form(&file, first.clone(), &minisig));
    assert_eq!(status, 201, "{body}");
    let published = registry
        .tree()
        .join(format!("plugins/weather/1.0.0-RC1/{target}/{file}"));
    let index = registry.index_on_disk();
    let listing = tree_listing(&registry.tree());

    // On a case-insensitive file system (macOS, Windows) `1.0.0-rc1` is
    // `1.0.0-RC1`'s directory: refused, naming both spellings.
    for version in ["1.0.0-rc1", "1.0.0-Rc1"] {
        let (edited, minisig) = signed_as(version);
        let (status, body) = publish(&server, Some(TOKEN), form(&file, edited, &minisig));
        assert_refused((status, body.clone()), 409, "differ only in letter case");
        let message = body["error"].as_str().unwrap();
        assert!(
            message.contains(&format!("weather {version} cannot be published"))
                && message.contains("weather 1.0.0-RC1 is already published"),
            "{message}"
        );
    }

    // File names a Windows host cannot store, whatever the target.
    let (edited, minisig) = signed_as("2.0.0");
    for (name, reason) in [
        ("con.so", "reserved device name on Windows"),
        ("NUL.dll", "reserved device name on Windows"),
        ("weather.so.", "end in a dot or a space"),
        ("weather.so ", "end in a dot or a space"),
        ("we|ather.so", "which Windows does not allow in a file name"),
    ] {
        let (status, body) = publish(&server, Some(TOKEN), form(name, edited.clone(), &minisig));
        assert_refused((status, body.clone()), 422, reason);
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(&format!("{name:?}")), "{message}");
    }

    // Nothing was written; the first version's files are as published.
    assert_eq!(registry.index_on_disk(), index);
    assert_eq!(tree_listing(&registry.tree()), listing);
    assert_eq!(std::fs::read(&published).unwrap(), first);
}

/// Issue 17: the dependency list of an upload is bounded: a library whose
/// `.dep-v0` section names more than 1000 crates is refused (422, naming
/// the file and the limit) and nothing is written; one with a list is
/// published with it, and the search API counts it.
#[test]
fn an_oversized_dependency_list_is_refused_and_a_listed_plugin_is_searchable() {
    let registry = Registry::new();
    let server = registry.serve(Some(TOKEN), &[]);
    let target = backworks_plugin_sdk::TARGET;
    let dir = tempfile::tempdir().unwrap();
    let file = format!("weather-1.0.0-{target}.so");
    let signed_form = |library: &Path| {
        let bytes = std::fs::read(library).unwrap();
        let signed =
            signature::sign(&bytes, &registry.publisher.sk, Some(&registry.publisher.pk)).unwrap();
        form(&file, bytes, &signed.minisig)
    };

    let mut packages = vec![json!({
        "name": "weather", "version": "1.0.0", "source": "local",
        "dependencies": (1..=1001).collect::<Vec<_>>(), "root": true
    })];
    packages.extend(
        (0..1001).map(
            |i| json!({"name": format!("crate{i}"), "version": "1.0.0", "source": "crates.io"}),
        ),
    );
    let many = json!({ "packages": packages }).to_string();
    let bloated = crate::harness::with_dependency_list(
        &support::weather_plugin(),
        &many,
        dir.path(),
        "bloated.so",
    );
    let index = registry.index_on_disk();
    let listing = tree_listing(&registry.tree());
    assert_refused(
        publish(&server, Some(TOKEN), signed_form(&bloated)),
        422,
        &format!(
            "{file}: refusing its dependency list (the `.dep-v0` section): it names 1001 dependencies, at most 1000 are allowed"
        ),
    );
    assert_eq!(tree_listing(&registry.tree()), listing);
    assert_eq!(registry.index_on_disk(), index);

    let listed = crate::harness::with_dependency_list(
        &support::weather_plugin(),
        crate::harness::DEPENDENCY_LIST,
        dir.path(),
        "listed.so",
    );
    let (status, body) = publish(&server, Some(TOKEN), signed_form(&listed));
    assert_eq!(status, 201, "{body}");
    let expected = json!([
        {"name": "proc-macro2", "version": "1.0.101", "build": true},
        {"name": "serde_json", "version": "1.0.145"}
    ]);
    assert_eq!(body["targets"][target]["deps"], expected, "{body}");
    let (status, page) = search(&server, "q=weather");
    assert_eq!(status, 200);
    assert_eq!(
        page["hits"][0]["deps"][target],
        json!({"runtime": 1, "build": 1}),
        "{page}"
    );
}
