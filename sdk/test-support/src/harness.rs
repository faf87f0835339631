//! The pieces shared by the end-to-end tests and the benchmarks of the
//! `backworks` binary: signing keys, signed plugin copies, a
//! `backworks.yaml`, and a server started from the real binary.
//!
//! Feature `host`: used by the host's `tests/cli` and its `benches/`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use backworks_artifact::signature;

/// A signing key pair, and the key as `backworks.yaml` trusts it.
pub struct Keys {
    pub pk: minisign::PublicKey,
    pub sk: minisign::SecretKey,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new()
    }
}

impl Keys {
    /// A fresh key pair.
    pub fn new() -> Self {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        Self {
            pk: pair.pk,
            sk: pair.sk,
        }
    }

    /// Signs `library` (writes `<library>.minisig`).
    pub fn sign(&self, library: &Path) {
        let bytes = std::fs::read(library).unwrap();
        let signed = signature::sign(&bytes, &self.sk, Some(&self.pk)).unwrap();
        std::fs::write(format!("{}.minisig", library.display()), signed.minisig).unwrap();
    }

    /// Copies `library` to `dir/name` and signs the copy.
    pub fn signed_copy(&self, library: &Path, dir: &Path, name: &str) -> PathBuf {
        let copy = copy_into(dir, library, name);
        self.sign(&copy);
        copy
    }

    pub fn base64(&self) -> String {
        self.pk.to_base64()
    }
}

/// A copy of `library` in `dir` under `name`, so each test signs and tampers
/// with its own file.
pub fn copy_into(dir: &Path, library: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(library, &to).unwrap();
    to
}

/// The packages of the list [`with_dependency_list`] adds: `weather` (the
/// root), `serde_json`, and `proc-macro2` at build time.
pub const DEPENDENCY_LIST: &str = r#"{"packages":[{"name":"weather","version":"1.0.0","source":"local","dependencies":[1,2],"root":true},{"name":"proc-macro2","version":"1.0.101","source":"crates.io","kind":"build"},{"name":"serde_json","version":"1.0.145","source":"crates.io"}],"format":1}"#;

/// A copy of the ELF `library` in `dir` under `name` that carries the
/// dependency list `list` (JSON) in a `.dep-v0` section, added by objcopy
/// with the contents `cargo backworks build` writes
/// (`backworks_artifact::deps::compress`): a plugin that is not built by
/// `cargo backworks build` (the C plugin, a plain cargo build), listed as
/// if it were.
pub fn with_dependency_list(library: &Path, list: &str, dir: &Path, name: &str) -> PathBuf {
    let info: backworks_artifact::deps::VersionInfo = serde_json::from_str(list).unwrap();
    let section = dir.join(format!("{name}.dep-v0"));
    std::fs::write(&section, backworks_artifact::deps::compress(&info)).unwrap();
    let out = dir.join(name);
    let status = Command::new("objcopy")
        .arg(format!(
            "--add-section={}={}",
            backworks_artifact::deps::SECTION,
            section.display()
        ))
        .arg(library)
        .arg(&out)
        .status()
        .expect("run objcopy (binutils)");
    assert!(status.success(), "objcopy failed on {}", library.display());
    std::fs::remove_file(&section).unwrap();
    out
}

/// `plugins:` entries (YAML text) loading each `(name, path)` as an
/// external plugin, in order.
pub fn external_plugins(plugins: &[(String, PathBuf)]) -> String {
    plugins
        .iter()
        .map(|(name, path)| {
            format!(
                "  {name}:\n    type: external\n    path: {}\n",
                path.display()
            )
        })
        .collect()
}

/// Adds `lines` (each `  key: value\n`) to the `server:` section of the
/// config at `path` (one [`config`] wrote).
pub fn with_server_settings(path: &Path, lines: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains("server:\n"), "no server section in:\n{text}");
    std::fs::write(
        path,
        text.replacen("server:\n", &format!("server:\n{lines}"), 1),
    )
    .unwrap();
}

/// A `backworks.yaml` in `dir` trusting `keys`, with `plugins` (YAML text).
pub fn config(dir: &Path, keys: &Keys, hook_timeout: &str, plugins: &str) -> PathBuf {
    let path = dir.join("backworks.yaml");
    let text = format!(
        "server:\n  listen: \"127.0.0.1:0\"\n  hook_timeout: {hook_timeout}\n  shutdown_timeout: 5s\ntrusted_keys:\n  - key: \"{}\"\nplugins:\n{plugins}",
        keys.base64()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `backworks serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// Time from spawn to the printed address.
    pub started_in: Duration,
    /// The server's log lines.
    pub stderr: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client for the tests (20 s timeout).
pub fn http_client() -> reqwest::blocking::Client {
    client_builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The sha256 of the file at `path`, lower-case hex.
pub fn sha256_of(path: &Path) -> String {
    backworks_registry::sha256_hex(&std::fs::read(path).unwrap())
}

/// A builder of HTTP clients for the tests and benches. reqwest is built
/// with rustls without a crypto provider (as the host is), so ring is
/// installed first: every client of the tests must come from here.
pub fn client_builder() -> reqwest::blocking::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
}

/// The `backworks` binary, logging at `RUST_LOG=info`. `RUST_BACKTRACE`
/// is removed: with it, a panicking plugin's own panic hook symbolises a
/// backtrace before the hook returns, which can outlast the short hook
/// deadlines the fault-containment tests use, whatever the test's shell.
pub fn backworks() -> Command {
    let mut command = Command::new(binary());
    command.env("RUST_LOG", "info").env_remove("RUST_BACKTRACE");
    command
}

/// The `backworks` binary cargo built for the test or benchmark running now:
/// next to its `deps/` directory (`target/<profile>/backworks`), as cargo
/// lays out a package's binaries for its tests and benches.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the running test");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test runs from target/<profile>/deps");
    let binary = profile.join(format!("backworks{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} is missing: cargo builds it for the host's tests and benches (run them with `cargo test -p backworks-host` or `cargo bench -p backworks-host`)",
        binary.display()
    );
    binary
}

/// Starts the server with `RUST_LOG=log_level` and waits (at most 60 s)
/// for its address.
pub fn start(config: &Path, log_level: &str) -> Server {
    start_with(config, log_level, &[])
}

/// [`start`] with more arguments for `serve` (`--locked`, `--offline`, `--watch`).
pub fn start_with(config: &Path, log_level: &str, args: &[&str]) -> Server {
    let mut command = backworks();
    command
        .env("RUST_LOG", log_level)
        .args(["serve", "--config"])
        .arg(config)
        .args(args);
    start_command(command, "backworks listening on ")
}

/// Spawns `command` (a server) and waits (at most 60 s) for the line
/// `<prefix><base URL>` on its standard output; panics with the server's
/// standard error if it exits or hangs instead.
pub fn start_command(command: Command, prefix: &'static str) -> Server {
    match start_or_exit(command, prefix, Duration::from_secs(60)) {
        Ok(server) => server,
        Err(Exited { code, stderr }) => {
            panic!("the server did not start (exit code {code}):\n{stderr}")
        }
    }
}

/// How a server started by [`start_or_exit`] ended before it listened.
#[derive(Debug)]
pub struct Exited {
    /// Its exit code (-1 when a signal ended it).
    pub code: i32,
    /// Its standard error, whole.
    pub stderr: String,
}

/// Spawns `command` (a server): the server once it prints
/// `<prefix><base URL>` on standard output, or its exit code and standard
/// error when it exits first, as a refusal to start does. Panics, after
/// killing it, if it does neither within `hang`.
pub fn start_or_exit(
    mut command: Command,
    prefix: &'static str,
    hang: Duration,
) -> Result<Server, Exited> {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, stderr) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let (addr_tx, addr_rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix(prefix) {
                let _ = addr_tx.send((addr.to_owned(), started.elapsed()));
            }
        }
    });
    // The reader forwards stderr until the pipe closes: wait for it, so the
    // server's own last words are in what is returned.
    let drain = |stderr: &mpsc::Receiver<String>| -> String {
        std::iter::from_fn(|| stderr.recv_timeout(Duration::from_secs(5)).ok())
            .collect::<Vec<_>>()
            .join("\n")
    };
    loop {
        if let Ok((base, started_in)) = addr_rx.recv_timeout(Duration::from_millis(50)) {
            return Ok(Server {
                child,
                base,
                started_in,
                stderr,
            });
        }
        if let Some(status) = child.try_wait().unwrap() {
            return Err(Exited {
                code: status.code().unwrap_or(-1),
                stderr: drain(&stderr),
            });
        }
        if started.elapsed() > hang {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the server neither listened nor exited within {hang:?}:\n{}",
                drain(&stderr)
            );
        }
    }
}

/// `text` with the first `from` replaced by `to`; `from` must occur in it:
/// a changed example fails here, loudly, rather than building the wrong
/// fixture.
pub fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the weather example no longer contains {from:?}"
    );
    text.replacen(from, to, 1)
}

/// A copy of `examples/weather-plugin` in `dir` as package version
/// `version` (in `Cargo.toml`, `Cargo.lock` and the plugin's `version()`),
/// with the SDK by absolute path, the library named `lib_name` when given
/// (so variants built into one target directory never overwrite each
/// other), and `edit_source` applied to `src/lib.rs`. A file already
/// holding its text is not rewritten, so cargo rebuilds nothing on later
/// runs. Returns `dir`.
pub fn weather_copy(
    dir: &Path,
    version: &str,
    lib_name: Option<&str>,
    edit_source: impl FnOnce(String) -> String,
) -> PathBuf {
    let workspace = crate::fixtures::workspace();
    let workspace = workspace.as_path();
    let example = workspace.join("examples/weather-plugin");
    let read = |file: &str| std::fs::read_to_string(example.join(file)).unwrap();
    let mut manifest = edit(
        &edit(
            &read("Cargo.toml"),
            "version = \"1.0.0\"",
            &format!("version = \"{version}\""),
        ),
        "path = \"../../sdk\"",
        &format!("path = {:?}", workspace.join("sdk")),
    );
    if let Some(lib_name) = lib_name {
        manifest = edit(
            &manifest,
            "[lib]\n",
            &format!("[lib]\nname = \"{lib_name}\"\n"),
        );
    }
    let lock = edit(
        &read("Cargo.lock"),
        "name = \"weather\"\nversion = \"1.0.0\"",
        &format!("name = \"weather\"\nversion = \"{version}\""),
    );
    let source = edit_source(edit(
        &read("src/lib.rs"),
        "fn version(&self) -> &str { \"1.0.0\" }",
        &format!("fn version(&self) -> &str {{ \"{version}\" }}"),
    ));
    std::fs::create_dir_all(dir.join("src")).unwrap();
    for (file, text) in [
        ("Cargo.toml", manifest),
        ("Cargo.lock", lock),
        ("src/lib.rs", source),
    ] {
        let path = dir.join(file);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text).unwrap();
        }
    }
    dir.to_owned()
}

/// Runs `command` to its end and returns (exit code, stdout, stderr); a
/// command still running after `hang` is killed and the test fails (the
/// bound only catches a hang).
pub fn run_bounded(mut command: Command, hang: Duration) -> (i32, String, String) {
    use std::io::Read;

    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = |mut from: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = from.read_to_string(&mut text);
            text
        })
    };
    let stdout = pipe(Box::new(child.stdout.take().unwrap()));
    let stderr = pipe(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + hang;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} hung (killed after {hang:?}):\n{}",
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        stdout.join().unwrap(),
        stderr.join().unwrap(),
    )
}
