//! Shared by the host's benchmarks: signed plugins, a `backworks.yaml`, and
//! a server started from the real binary.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../../sdk/tests/abi/support.rs"]
pub mod fixtures;

/// A signing key pair.
pub struct Keys {
    pub pk: minisign::PublicKey,
    pub sk: minisign::SecretKey,
}

impl Keys {
    pub fn new() -> Self {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        Self {
            pk: pair.pk,
            sk: pair.sk,
        }
    }

    /// Copies `library` to `dir/name` and signs the copy.
    pub fn signed_copy(&self, library: &Path, dir: &Path, name: &str) -> PathBuf {
        let to = dir.join(name);
        std::fs::copy(library, &to).unwrap();
        let bytes = std::fs::read(&to).unwrap();
        let signed =
            backworks_plugin_sdk::signature::sign(&bytes, &self.sk, Some(&self.pk)).unwrap();
        std::fs::write(format!("{}.minisig", to.display()), signed.minisig).unwrap();
        to
    }
}

/// Writes `dir/backworks.yaml` trusting `keys` and loading `plugins`
/// (name, path) in order.
pub fn config(dir: &Path, keys: &Keys, plugins: &[(String, PathBuf)]) -> PathBuf {
    let mut text = format!(
        "server:\n  listen: \"127.0.0.1:0\"\n  hook_timeout: 5s\ntrusted_keys:\n  - key: \"{}\"\nplugins:\n",
        keys.pk.to_base64()
    );
    for (name, path) in plugins {
        text.push_str(&format!(
            "  {name}:\n    type: external\n    path: {}\n",
            path.display()
        ));
    }
    let path = dir.join("backworks.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `backworks serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub started_in: Duration,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server (release build of the binary) and waits for its
/// address; `started_in` is the time from spawn to the printed address.
pub fn start(config: &Path) -> Server {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_backworks"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let base = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(addr) = line.strip_prefix("backworks listening on ") {
                    break addr.to_owned();
                }
            }
            _ => panic!("the server exited before listening"),
        }
    };
    let started_in = started.elapsed();
    // Keep draining stdout so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        base,
        started_in,
    }
}
