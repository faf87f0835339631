//! `cargo backworks keygen`, `sign` and `verify` end to end: real minisign
//! keys, real plugins (the C weather plugin, compiled with `cc`), and the
//! real `minisign` command-line tool on the other side.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cargo-backworks backworks <args>` in `dir`, with `env` set and
/// nothing else from the environment that would change the password
/// source; standard input is empty (not a terminal).
fn backworks(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cargo-backworks"))
        .arg("backworks")
        .args(args)
        .current_dir(dir)
        .env_remove("BACKWORKS_KEY_PASSWORD")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run cargo-backworks")
}

/// Runs `command` to its end with an empty standard input and returns what
/// it did; a command still running after `hang` is killed and the test
/// fails (the bound only catches a hang).
pub(crate) fn run_bounded(mut command: Command, hang: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cargo-backworks");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).map(|_| bytes)
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > hang {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{command:?} ran past {hang:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap().unwrap(),
        stderr: stderr.join().unwrap().unwrap(),
    }
}

/// Like [`backworks`], asserting success; returns stdout.
fn backworks_ok(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = backworks(dir, args, env);
    assert!(
        output.status.success(),
        "cargo backworks {args:?} failed ({}):\n{}{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Like [`backworks`], asserting it fails with `code` and prints nothing on
/// stdout; returns stderr.
fn backworks_fails(dir: &Path, args: &[&str], env: &[(&str, &str)], code: i32) -> String {
    let output = backworks(dir, args, env);
    assert_eq!(
        output.status.code(),
        Some(code),
        "cargo backworks {args:?}:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stderr)
}

/// Runs the `minisign` command-line tool in `dir` with `stdin` as its input
/// (the Debian build reads passwords from stdin when it is not a terminal).
fn minisign(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("minisign")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "run the minisign command-line tool (scripts/setup installs it: apt-get install minisign)",
        );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn minisign_ok(dir: &Path, args: &[&str], stdin: &str) -> String {
    let output = minisign(dir, args, stdin);
    assert!(
        output.status.success(),
        "minisign {args:?} failed ({}):\n{}{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout) + &text(&output.stderr)
}

/// The C weather plugin compiled into `dir`; with another `name`, the same
/// source with that name in its metadata record (another plugin).
fn c_plugin(dir: &Path, name: &str) -> PathBuf {
    let source = workspace().join("examples/c-plugin/weather.c");
    let source = if name == "weather-c" {
        source
    } else {
        let code = fs::read_to_string(&source).unwrap();
        let declared = "BACKWORKS_DECLARE_METADATA(\"weather-c\",";
        assert!(code.contains(declared), "weather.c declares its metadata");
        let copy = dir.join(format!("{name}.c"));
        fs::write(
            &copy,
            code.replace(declared, &format!("BACKWORKS_DECLARE_METADATA(\"{name}\",")),
        )
        .unwrap();
        copy
    };
    let out = dir.join(format!("lib{}.so", name.replace('-', "_")));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-shared", "-fPIC", "-Wall", "-Werror", "-I"])
        .arg(workspace().join("sdk/include"))
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .status()
        .expect("run the C compiler");
    assert!(status.success());
    out
}

/// The key id at the end of a `.pub` file's first line, as 16 hex digits
/// (the minisign CLI prints it without leading zeros).
pub(crate) fn key_id(public_key_file: &Path) -> String {
    let text = fs::read_to_string(public_key_file).unwrap();
    let id = text.lines().next().unwrap().rsplit(' ').next().unwrap();
    assert!(
        (1..=16).contains(&id.len()) && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{text}"
    );
    format!("{id:0>16}")
}

pub(crate) fn sha256_hex(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

pub(crate) fn minisig(artifact: &Path) -> PathBuf {
    let mut name = artifact.as_os_str().to_owned();
    name.push(".minisig");
    PathBuf::from(name)
}

/// The trusted comment (third line) of a signature file.
fn trusted_comment(signature: &Path) -> String {
    let text = fs::read_to_string(signature).unwrap();
    let line = text.lines().nth(2).unwrap();
    line.strip_prefix("trusted comment: ").unwrap().to_owned()
}

/// Replaces what differs between runs and machines with labels.
pub(crate) struct Redactions(Vec<(String, String)>);

impl Redactions {
    pub(crate) fn new(dir: &Path) -> Self {
        Self(vec![
            (dir.display().to_string(), String::from("[dir]")),
            (
                backworks_plugin_sdk::TARGET.to_owned(),
                String::from("[host target]"),
            ),
        ])
    }

    pub(crate) fn with(mut self, value: impl Into<String>, label: &str) -> Self {
        self.0.push((value.into(), format!("[{label}]")));
        self
    }

    /// Also the timestamp of the signature's trusted comment.
    fn with_timestamp_of(self, signature: &Path) -> Self {
        let comment = trusted_comment(signature);
        let timestamp = comment.rsplit("timestamp:").next().unwrap().to_owned();
        self.with(format!("timestamp:{timestamp}"), "timestamp")
    }

    pub(crate) fn apply(&self, text: &str) -> String {
        self.0
            .iter()
            .fold(text.to_owned(), |text, (from, to)| text.replace(from, to))
    }
}

/// A directory with the weather plugin, an unencrypted key pair `release`,
/// and the plugin signed with it.
struct Signed {
    dir: tempfile::TempDir,
    plugin: PathBuf,
    key_id: String,
}

fn signed_plugin() -> Signed {
    let dir = tempfile::tempdir().unwrap();
    let plugin = c_plugin(dir.path(), "weather-c");
    backworks_ok(dir.path(), &["keygen", "release", "--unencrypted"], &[]);
    backworks_ok(
        dir.path(),
        &["sign", "libweather_c.so", "--key", "release.key"],
        &[],
    );
    let key_id = key_id(&dir.path().join("release.pub"));
    Signed {
        dir,
        plugin,
        key_id,
    }
}

#[test]
fn keygen_sign_verify() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = c_plugin(dir.path(), "weather-c");
    let keygen = backworks_ok(dir.path(), &["keygen", "release", "--unencrypted"], &[]);
    let id = key_id(&dir.path().join("release.pub"));
    let public_key = fs::read_to_string(dir.path().join("release.pub"))
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    let secret_key = fs::read_to_string(dir.path().join("release.key")).unwrap();
    assert!(
        !keygen.contains(secret_key.lines().nth(1).unwrap()),
        "keygen never prints the secret key"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |name| {
            fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("release.key"), 0o600, "the secret key is private");
        assert_eq!(
            mode("release.pub") & 0o044,
            0o044,
            "the public key is readable"
        );
    }
    let redact = Redactions::new(dir.path())
        .with(&id, "key id")
        .with(&public_key, "public key");
    insta::assert_snapshot!("keygen_unencrypted", redact.apply(&keygen));

    let sign = backworks_ok(
        dir.path(),
        &["sign", "libweather_c.so", "--key", "release.key"],
        &[],
    );
    let signature = minisig(&plugin);
    let comment = trusted_comment(&signature);
    let timestamp = comment.rsplit("timestamp:").next().unwrap();
    assert_eq!(
        comment,
        format!(
            "backworks-plugin:1 name:weather-c version:1.0.0 target:{} abi:1 sha256:{} timestamp:{timestamp}",
            backworks_plugin_sdk::TARGET,
            sha256_hex(&plugin)
        ),
        "the documented trusted comment"
    );
    let redact = redact.with_timestamp_of(&signature);
    insta::assert_snapshot!("sign", redact.apply(&sign));

    let verify = backworks_ok(
        dir.path(),
        &["verify", "libweather_c.so", "--pub", "release.pub"],
        &[],
    );
    insta::assert_snapshot!("verify", redact.apply(&verify));
    // The public key may be given inline, and the signature file named.
    fs::rename(&signature, dir.path().join("elsewhere.sig")).unwrap();
    let inline = backworks_ok(
        dir.path(),
        &[
            "verify",
            "libweather_c.so",
            "--pub-key",
            &public_key,
            "--signature",
            "elsewhere.sig",
        ],
        &[],
    );
    assert_eq!(inline, verify);
}

#[test]
fn a_flipped_byte_of_the_artifact() {
    let signed = signed_plugin();
    let original = sha256_hex(&signed.plugin);
    let mut bytes = fs::read(&signed.plugin).unwrap();
    // One byte in the middle of the file, away from the metadata record.
    let record = bytes.windows(8).position(|w| w == b"BWKSPLUG").unwrap();
    let mut at = bytes.len() / 2;
    if (record..record + 512).contains(&at) {
        at = record + 600;
    }
    bytes[at] ^= 0x01;
    fs::write(&signed.plugin, &bytes).unwrap();
    let stderr = backworks_fails(
        signed.dir.path(),
        &["verify", "libweather_c.so", "--pub", "release.pub"],
        &[],
        1,
    );
    let redact = Redactions::new(signed.dir.path())
        .with(original, "signed sha256")
        .with(sha256_hex(&signed.plugin), "sha256 of the modified file");
    insta::assert_snapshot!("verify_modified_file", redact.apply(&stderr));
}

#[test]
fn one_character_of_the_trusted_comment_changed() {
    let signed = signed_plugin();
    let signature = minisig(&signed.plugin);
    let original = fs::read_to_string(&signature).unwrap();
    let altered = original.replacen("name:weather-c", "name:weather-d", 1);
    assert_ne!(altered, original);
    fs::write(&signature, altered).unwrap();
    let stderr = backworks_fails(
        signed.dir.path(),
        &["verify", "libweather_c.so", "--pub", "release.pub"],
        &[],
        1,
    );
    let redact = Redactions::new(signed.dir.path())
        .with(sha256_hex(&signed.plugin), "sha256")
        .with_timestamp_of(&signature);
    insta::assert_snapshot!("verify_altered_comment", redact.apply(&stderr));
}

#[test]
fn verifying_with_another_key() {
    let signed = signed_plugin();
    backworks_ok(
        signed.dir.path(),
        &["keygen", "other", "--unencrypted"],
        &[],
    );
    let other = key_id(&signed.dir.path().join("other.pub"));
    let stderr = backworks_fails(
        signed.dir.path(),
        &["verify", "libweather_c.so", "--pub", "other.pub"],
        &[],
        1,
    );
    assert!(
        stderr.contains(&signed.key_id) && stderr.contains(&other),
        "{stderr}"
    );
    let redact = Redactions::new(signed.dir.path())
        .with(&signed.key_id, "signing key id")
        .with(other, "trusted key id");
    insta::assert_snapshot!("verify_other_key", redact.apply(&stderr));
}

#[test]
fn a_signature_renamed_onto_another_plugin() {
    let signed = signed_plugin();
    let forecast = c_plugin(signed.dir.path(), "forecast-c");
    fs::copy(minisig(&signed.plugin), minisig(&forecast)).unwrap();
    let stderr = backworks_fails(
        signed.dir.path(),
        &["verify", "libforecast_c.so", "--pub", "release.pub"],
        &[],
        1,
    );
    insta::assert_snapshot!(
        "verify_other_plugin",
        Redactions::new(signed.dir.path()).apply(&stderr)
    );
}

#[test]
fn every_artifact_is_reported_and_the_exit_code_is_the_worst() {
    let signed = signed_plugin();
    let forecast = c_plugin(signed.dir.path(), "forecast-c");
    fs::copy(minisig(&signed.plugin), minisig(&forecast)).unwrap();
    let output = backworks(
        signed.dir.path(),
        &[
            "verify",
            "libweather_c.so",
            "libforecast_c.so",
            "--pub",
            "release.pub",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stdout).starts_with("verified libweather_c.so: weather-c 1.0.0"),
        "{}",
        text(&output.stdout)
    );
    assert!(
        text(&output.stderr)
            .starts_with("error: libforecast_c.so: the signature belongs to another plugin"),
        "{}",
        text(&output.stderr)
    );
    // A missing signature is an I/O error.
    fs::remove_file(minisig(&forecast)).unwrap();
    let stderr = backworks_fails(
        signed.dir.path(),
        &["verify", "libforecast_c.so", "--pub", "release.pub"],
        &[],
        2,
    );
    assert!(
        stderr.starts_with("error: cannot read the signature libforecast_c.so.minisig: "),
        "{stderr}"
    );
    // --signature names one signature.
    let stderr = backworks_fails(
        signed.dir.path(),
        &[
            "verify",
            "libweather_c.so",
            "libforecast_c.so",
            "--pub",
            "release.pub",
            "--signature",
            "x.minisig",
        ],
        &[],
        2,
    );
    assert!(
        stderr.contains("--signature names the signature of one artifact"),
        "{stderr}"
    );
}

#[test]
fn our_keys_and_signatures_work_with_the_minisign_cli() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let plugin = c_plugin(dir, "weather-c");
    let password = [("BACKWORKS_KEY_PASSWORD", "correct horse")];
    backworks_ok(dir, &["keygen", "protected"], &password);
    backworks_ok(dir, &["keygen", "plain", "--unencrypted"], &[]);

    // Our signatures, verified by minisign.
    backworks_ok(
        dir,
        &["sign", "libweather_c.so", "--key", "protected.key"],
        &password,
    );
    let verified = minisign_ok(dir, &["-Vm", "libweather_c.so", "-p", "protected.pub"], "");
    assert!(
        verified.contains(&format!(
            "Trusted comment: {}",
            trusted_comment(&minisig(&plugin))
        )),
        "{verified}"
    );

    // Our keys, used by minisign to sign with our trusted comment; the
    // signatures verified by us.
    let comment = format!(
        "backworks-plugin:1 name:weather-c version:1.0.0 target:{} abi:1 sha256:{} timestamp:1767225600",
        backworks_plugin_sdk::TARGET,
        sha256_hex(&plugin)
    );
    for (key, stdin) in [("protected", "correct horse\n"), ("plain", "")] {
        let key_file = format!("{key}.key");
        minisign_ok(
            dir,
            &[
                "-S",
                "-s",
                &key_file,
                "-m",
                "libweather_c.so",
                "-t",
                &comment,
            ],
            stdin,
        );
        let stdout = backworks_ok(
            dir,
            &["verify", "libweather_c.so", "--pub", &format!("{key}.pub")],
            &[],
        );
        assert!(
            stdout.starts_with("verified libweather_c.so: weather-c 1.0.0"),
            "{stdout}"
        );
        assert_eq!(trusted_comment(&minisig(&plugin)), comment);
    }
}

#[test]
fn keys_made_by_the_minisign_cli_sign_with_us() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let plugin = c_plugin(dir, "weather-c");
    // Unencrypted (`-W`): minisign writes these with an all-zero checksum.
    minisign_ok(
        dir,
        &["-G", "-W", "-p", "cli-plain.pub", "-s", "cli-plain.key"],
        "",
    );
    // Password-protected: the password twice on stdin.
    minisign_ok(
        dir,
        &["-G", "-p", "cli-protected.pub", "-s", "cli-protected.key"],
        "tr0ub4dor\ntr0ub4dor\n",
    );
    for (key, env) in [
        ("cli-plain", vec![]),
        (
            "cli-protected",
            vec![("BACKWORKS_KEY_PASSWORD", "tr0ub4dor")],
        ),
    ] {
        let stdout = backworks_ok(
            dir,
            &["sign", "libweather_c.so", "--key", &format!("{key}.key")],
            &env,
        );
        let id = key_id(&dir.join(format!("{key}.pub")));
        assert!(stdout.contains(&format!("with key {id}")), "{stdout}");
        minisign_ok(
            dir,
            &["-Vm", "libweather_c.so", "-p", &format!("{key}.pub")],
            "",
        );
        backworks_ok(
            dir,
            &["verify", "libweather_c.so", "--pub", &format!("{key}.pub")],
            &[],
        );
    }
    // And the CLI's own signature over the plugin, with our comment.
    let comment = format!(
        "backworks-plugin:1 name:weather-c version:1.0.0 target:{} abi:1 sha256:{} timestamp:1767225600",
        backworks_plugin_sdk::TARGET,
        sha256_hex(&plugin)
    );
    minisign_ok(
        dir,
        &[
            "-S",
            "-W",
            "-s",
            "cli-plain.key",
            "-m",
            "libweather_c.so",
            "-t",
            &comment,
        ],
        "",
    );
    backworks_ok(
        dir,
        &["verify", "libweather_c.so", "--pub", "cli-plain.pub"],
        &[],
    );
    // A plain minisign signature (default trusted comment) verifies, but is
    // not a backworks signature.
    minisign_ok(
        dir,
        &["-S", "-W", "-s", "cli-plain.key", "-m", "libweather_c.so"],
        "",
    );
    let stderr = backworks_fails(
        dir,
        &["verify", "libweather_c.so", "--pub", "cli-plain.pub"],
        &[],
        1,
    );
    assert!(
        stderr.starts_with(
            "error: libweather_c.so: the signature verifies but is not a backworks plugin signature: trusted comment \"timestamp:"
        ),
        "{stderr}"
    );
}

#[test]
fn the_secret_key_from_an_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    c_plugin(dir, "weather-c");
    backworks_ok(dir, &["keygen", "ci", "--unencrypted"], &[]);
    let key = fs::read_to_string(dir.join("ci.key")).unwrap();
    let stdout = backworks_ok(
        dir,
        &["sign", "libweather_c.so", "--key-env", "SIGNING_KEY"],
        &[("SIGNING_KEY", &key)],
    );
    assert!(!stdout.contains(key.lines().nth(1).unwrap()), "{stdout}");
    backworks_ok(dir, &["verify", "libweather_c.so", "--pub", "ci.pub"], &[]);
    // A password-protected key in the variable, its password in another.
    backworks_ok(
        dir,
        &["keygen", "ci-protected", "--password-env", "KEY_PASSWORD"],
        &[("KEY_PASSWORD", "s3cret")],
    );
    let key = fs::read_to_string(dir.join("ci-protected.key")).unwrap();
    backworks_ok(
        dir,
        &[
            "sign",
            "libweather_c.so",
            "--key-env",
            "SIGNING_KEY",
            "--password-env",
            "KEY_PASSWORD",
        ],
        &[("SIGNING_KEY", &key), ("KEY_PASSWORD", "s3cret")],
    );
    backworks_ok(
        dir,
        &["verify", "libweather_c.so", "--pub", "ci-protected.pub"],
        &[],
    );
    let stderr = backworks_fails(
        dir,
        &["sign", "libweather_c.so", "--key-env", "SIGNING_KEY"],
        &[],
        2,
    );
    insta::assert_snapshot!("sign_key_env_unset", stderr);
    let stderr = backworks_fails(
        dir,
        &["sign", "libweather_c.so", "--key-env", "SIGNING_KEY"],
        &[("SIGNING_KEY", "untrusted comment: x\nnot a key\n")],
        2,
    );
    insta::assert_snapshot!("sign_key_env_invalid", stderr);
}

#[test]
fn password_protected_keys() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let plugin = c_plugin(dir, "weather-c");
    let keygen = backworks_ok(
        dir,
        &["keygen", "release"],
        &[("BACKWORKS_KEY_PASSWORD", "right")],
    );
    assert!(
        keygen.starts_with("secret key: release.key (password-protected)\n"),
        "{keygen}"
    );
    assert!(!keygen.contains("right"), "{keygen}");
    backworks_ok(
        dir,
        &["sign", "libweather_c.so", "--key", "release.key"],
        &[("BACKWORKS_KEY_PASSWORD", "right")],
    );
    let signature = fs::read(minisig(&plugin)).unwrap();

    let stderr = backworks_fails(
        dir,
        &["sign", "libweather_c.so", "--key", "release.key"],
        &[("BACKWORKS_KEY_PASSWORD", "wrong")],
        2,
    );
    assert!(
        !stderr.contains("wrong\n") && !stderr.contains("right"),
        "{stderr}"
    );
    insta::assert_snapshot!("sign_wrong_password", stderr);
    let stderr = backworks_fails(
        dir,
        &["sign", "libweather_c.so", "--key", "release.key"],
        &[],
        2,
    );
    insta::assert_snapshot!("sign_no_password", stderr);
    let stderr = backworks_fails(
        dir,
        &[
            "sign",
            "libweather_c.so",
            "--key",
            "release.key",
            "--password-env",
            "PW",
        ],
        &[("BACKWORKS_KEY_PASSWORD", "right")],
        2,
    );
    insta::assert_snapshot!("sign_password_env_unset", stderr);
    assert_eq!(
        fs::read(minisig(&plugin)).unwrap(),
        signature,
        "failed signing left the signature as it was"
    );

    let stderr = backworks_fails(dir, &["keygen", "other"], &[], 2);
    insta::assert_snapshot!("keygen_no_password", stderr);
    let stderr = backworks_fails(
        dir,
        &["keygen", "other"],
        &[("BACKWORKS_KEY_PASSWORD", "")],
        2,
    );
    insta::assert_snapshot!("keygen_empty_password", stderr);
    assert!(!dir.join("other.key").exists() && !dir.join("other.pub").exists());
}

/// The interactive prompt, on a real terminal: `script` runs the command on
/// a pseudo-terminal and types its standard input into it.
#[test]
fn passwords_are_asked_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    c_plugin(dir, "weather-c");
    let on_terminal = |command: &str, typed: &str| {
        let mut child = Command::new("script")
            .args(["-qec", command, "/dev/null"])
            .current_dir(dir)
            .env_remove("BACKWORKS_KEY_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script(1) from util-linux");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(typed.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let tool = env!("CARGO_BIN_EXE_cargo-backworks");
    let output = on_terminal(&format!("{tool} backworks keygen typed"), "pa55\npa55\n");
    let shown = text(&output.stdout);
    assert!(output.status.success(), "{shown}");
    assert!(
        shown.contains("Password for the new secret key: "),
        "{shown}"
    );
    assert!(
        shown.contains("secret key: typed.key (password-protected)"),
        "{shown}"
    );
    // The typed password is the key's.
    backworks_ok(
        dir,
        &["sign", "libweather_c.so", "--key", "typed.key"],
        &[("BACKWORKS_KEY_PASSWORD", "pa55")],
    );
    let output = on_terminal(
        &format!("{tool} backworks sign libweather_c.so --key typed.key"),
        "pa55\n",
    );
    assert!(output.status.success(), "{}", text(&output.stdout));
    assert!(text(&output.stdout).contains("Password for typed.key: "));

    let output = on_terminal(&format!("{tool} backworks keygen typo"), "pa55\npa56\n");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stdout).contains("error: the two passwords differ; run keygen again"),
        "{}",
        text(&output.stdout)
    );
    assert!(!dir.join("typo.key").exists());
}

#[test]
fn keygen_refuses_to_overwrite_keys() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    backworks_ok(dir, &["keygen", "release", "--unencrypted"], &[]);
    let secret = fs::read(dir.join("release.key")).unwrap();
    let public = fs::read(dir.join("release.pub")).unwrap();
    let stderr = backworks_fails(dir, &["keygen", "release", "--unencrypted"], &[], 2);
    insta::assert_snapshot!("keygen_exists", stderr);
    // Only the public key left: still refused, and the secret key not written.
    fs::remove_file(dir.join("release.key")).unwrap();
    let stderr = backworks_fails(dir, &["keygen", "release.key", "--unencrypted"], &[], 2);
    assert!(
        stderr.starts_with("error: release.pub already exists"),
        "{stderr}"
    );
    assert!(!dir.join("release.key").exists());
    assert_eq!(fs::read(dir.join("release.pub")).unwrap(), public);
    // --force replaces both with a new key pair.
    fs::write(dir.join("release.key"), &secret).unwrap();
    backworks_ok(dir, &["keygen", "release", "--unencrypted", "--force"], &[]);
    assert_ne!(fs::read(dir.join("release.key")).unwrap(), secret);
    assert_ne!(fs::read(dir.join("release.pub")).unwrap(), public);
    assert_eq!(files_in(dir), ["release.key", "release.pub"]);
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_failed_signing_leaves_no_partial_signature() {
    let signed = signed_plugin();
    let dir = signed.dir.path();
    let signature = fs::read(minisig(&signed.plugin)).unwrap();
    let before = files_in(dir);
    // A corrupted key: the old signature stays, nothing else appears.
    let key = fs::read_to_string(dir.join("release.key")).unwrap();
    let mut lines: Vec<String> = key.lines().map(str::to_owned).collect();
    let replacement = if &lines[1][100..101] == "A" { "B" } else { "A" };
    lines[1].replace_range(100..101, replacement);
    fs::write(dir.join("corrupted.key"), lines.join("\n")).unwrap();
    let stderr = backworks_fails(
        dir,
        &["sign", "libweather_c.so", "--key", "corrupted.key"],
        &[],
        2,
    );
    assert!(
        stderr.contains("corrupted.key is not a usable minisign secret key: "),
        "{stderr}"
    );
    assert_eq!(fs::read(minisig(&signed.plugin)).unwrap(), signature);
    let mut expected = before.clone();
    expected.push(String::from("corrupted.key"));
    expected.sort();
    assert_eq!(files_in(dir), expected);
    // A file that is not a plugin: no signature for it.
    fs::write(dir.join("notes.so"), "not a library\n").unwrap();
    let stderr = backworks_fails(dir, &["sign", "notes.so", "--key", "release.key"], &[], 2);
    insta::assert_snapshot!("sign_not_a_plugin", stderr);
    assert!(!dir.join("notes.so.minisig").exists());
    expected.push(String::from("notes.so"));
    expected.sort();
    assert_eq!(files_in(dir), expected);
}

/// Makes a FIFO at `path` with the system's `mkfifo`.
pub(crate) fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Issue 13, defect 6 in `cargo backworks verify`: it read the plugin and
/// its signature with a plain read, so a FIFO hung it for ever and
/// `/dev/zero` was read until memory ran out. Now each is opened without
/// blocking and refused (exit 2, naming the file and what it is) unless it
/// is a regular file within its limit: a plugin at most 512 MiB, a
/// `.minisig` at most 8 KiB, refused from its size before it is read.
#[cfg(unix)]
#[test]
fn verify_refuses_a_fifo_a_device_and_an_oversized_file_at_once() {
    use backworks_artifact::check::MAX_FILE_SIZE;

    let signed = signed_plugin();
    let dir = signed.dir.path();
    mkfifo(&dir.join("fifo.so"));
    mkfifo(&dir.join("fifo.minisig"));
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.minisig")).unwrap();
    // Sparse: no byte of it is written, and none may be read.
    fs::File::create(dir.join("big.so"))
        .unwrap()
        .set_len(MAX_FILE_SIZE + 1)
        .unwrap();
    fs::write(dir.join("long.minisig"), vec![b'a'; 8 * 1024 + 1]).unwrap();
    let cases: [(&[&str], String); 5] = [
        (
            &["fifo.so"],
            String::from("refusing fifo.so: not a regular file (it is a FIFO)"),
        ),
        (
            &["libweather_c.so", "--signature", "fifo.minisig"],
            String::from("refusing fifo.minisig: not a regular file (it is a FIFO)"),
        ),
        (
            &["libweather_c.so", "--signature", "zero.minisig"],
            String::from("refusing zero.minisig: not a regular file (it is a character device)"),
        ),
        (
            &["big.so"],
            format!(
                "refusing big.so: it is {} bytes, more than the {MAX_FILE_SIZE} bytes allowed",
                MAX_FILE_SIZE + 1
            ),
        ),
        (
            &["libweather_c.so", "--signature", "long.minisig"],
            String::from(
                "refusing long.minisig: it is 8193 bytes, more than the 8192 bytes allowed",
            ),
        ),
    ];
    for (args, expected) in cases {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-backworks"));
        command
            .args(["backworks", "verify"])
            .args(args)
            .args(["--pub", "release.pub"])
            .current_dir(dir);
        let output = run_bounded(command, Duration::from_secs(60));
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(text(&output.stdout), "", "{args:?}");
        assert!(
            stderr.starts_with(&format!(
                "error: {expected}; a plugin and its .minisig must be regular files"
            )),
            "{args:?}: expected `{expected}` in:\n{stderr}"
        );
    }
    // `sign` reads the plugin the same way.
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-backworks"));
    command
        .args(["backworks", "sign", "fifo.so", "--key", "release.key"])
        .current_dir(dir);
    let output = run_bounded(command, Duration::from_secs(60));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("refusing fifo.so: not a regular file (it is a FIFO)"),
        "{}",
        text(&output.stderr)
    );
}
