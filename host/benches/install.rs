//! Install of a 10 MB plugin from `backworks marketplace serve` on 127.0.0.1,
//! against a plain download of the same file with curl. Goal: at most 1.2x.
//!
//! `backworks plugins install` is timed as a user runs it, a process from
//! spawn to exit: it fetches and verifies the signed index and the release
//! file, streams the library into the cache while hashing it, checks its
//! size and sha256 against the release, verifies the publisher's signature
//! and trusted comment, renames it into place and writes `backworks.lock`.
//! `curl -o` of the library's URL (a process too) is the floor. Each round
//! starts from an empty cache and no lock file (cleared before the clock
//! starts); the two alternate, and the median of each is compared.
//!
//! It also prints what verifying costs apart from any download: the one
//! pass of sha256 an install computes on top of what curl does
//! (`docs/signing.md`, "One hash pass"), and minisign's BLAKE2b prehash,
//! which the install no longer computes, for comparison.
//!
//! Run: `cargo bench -p backworks-host --bench install`.

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backworks_artifact::signature;
use backworks_registry::{self as registry, Tree, Upload, UploadArtifact};

use backworks_test_support as support;

const ROUNDS: usize = 15;
const SIZE_MB: usize = 10;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn timed(command: &mut Command) -> Duration {
    let started = Instant::now();
    let output = command.stdout(Stdio::null()).output().unwrap();
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();

    // The C weather plugin under its own name, grown to 10 MB by an exported
    // initialised table.
    let name = "bench-install";
    let source =
        std::fs::read_to_string(support::fixtures::workspace().join("examples/c-plugin/weather.c"))
            .unwrap();
    let c = root.join(format!("{name}.c"));
    std::fs::write(
        &c,
        source.replace("\"weather-c\"", &format!("\"{name}\""))
            + &format!(
                "\nBACKWORKS_EXPORT const unsigned char bench_ballast[{SIZE_MB} << 20] = {{1}};\n"
            ),
    )
    .unwrap();
    let library = support::fixtures::cc_build(name, &[c], None);
    let bytes = std::fs::read(&library).unwrap();
    let claims = signature::Claims::of(&bytes).unwrap();

    // A registry holding it, signed by a publisher the app trusts.
    let publisher = support::harness::Keys::new();
    let registry_key = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let key_file = root.join("registry.key");
    std::fs::write(
        &key_file,
        registry_key.sk.to_box(None).unwrap().into_string(),
    )
    .unwrap();
    let tree_dir = root.join("tree");
    let signed = signature::sign(&bytes, &publisher.sk, Some(&publisher.pk)).unwrap();
    let file_name = format!("{name}-{}-{}.so", claims.version, claims.target);
    let upload = Upload {
        artifacts: vec![UploadArtifact {
            file_name,
            bytes: bytes.clone(),
            signature: signed.minisig.clone(),
        }],
        ..Upload::default()
    };
    let validated = registry::validate_upload(upload, std::slice::from_ref(&publisher.pk)).unwrap();
    let release = Tree::open(
        &tree_dir,
        registry_key.sk.clone(),
        registry::DEFAULT_INDEX_LIFETIME_SECS,
    )
    .unwrap()
    .publish(validated)
    .unwrap();
    let artifact = &release.targets[&claims.target];

    let mut command = support::harness::backworks();
    command
        .env("RUST_LOG", "warn")
        .env_remove("BACKWORKS_REGISTRY_TOKEN")
        .args(["marketplace", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&tree_dir)
        .arg("--key")
        .arg(&key_file);
    let server = support::harness::start_command(command, "marketplace listening on ");
    let url = format!("{}/{}", server.base, artifact.path);

    let app = root.join("app");
    std::fs::create_dir_all(&app).unwrap();
    let config = app.join("backworks.yaml");
    std::fs::write(
        &config,
        format!(
            "trusted_keys:\n  - key: \"{}\"\nmarketplace:\n  registry: {}\n  key: \"{}\"\n",
            publisher.base64(),
            server.base,
            registry_key.pk.to_base64()
        ),
    )
    .unwrap();
    let clear = |app: &Path| {
        let _ = std::fs::remove_dir_all(app.join(".backworks"));
        let _ = std::fs::remove_file(app.join("backworks.lock"));
    };
    let download = root.join("download.so");

    let spec = format!("{name}@{}", claims.version);
    let mut install = Vec::new();
    let mut curl = Vec::new();
    for round in 0..=ROUNDS {
        clear(&app);
        let installed = timed(
            support::harness::backworks()
                .env("RUST_LOG", "warn")
                .args(["plugins", "install", &spec, "--config"])
                .arg(&config),
        );
        let _ = std::fs::remove_file(&download);
        let fetched = timed(
            Command::new("curl")
                .args(["--silent", "--show-error", "--fail", "--output"])
                .arg(&download)
                .arg(&url),
        );
        assert_eq!(std::fs::read(&download).unwrap(), bytes, "curl's copy");
        // Round 0 warms the page cache and the server: not counted.
        if round > 0 {
            install.push(installed);
            curl.push(fetched);
        }
    }
    let cached = app
        .join(".backworks/plugins")
        .join(name)
        .join(&claims.version)
        .join(&claims.target);
    assert!(cached.is_dir(), "{} holds the install", cached.display());

    // The verification's own work, in this process, warm.
    let mut sha256 = Vec::new();
    let mut blake2b = Vec::new();
    let minisig = minisign::SignatureBox::from_string(&signed.minisig).unwrap();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        std::hint::black_box(signature::sha256(&bytes));
        sha256.push(started.elapsed());
        let started = Instant::now();
        minisign::verify(
            &publisher.pk,
            &minisig,
            std::io::Cursor::new(&bytes),
            true,
            false,
            false,
        )
        .unwrap();
        blake2b.push(started.elapsed());
    }
    let (sha256, blake2b) = (median(sha256), median(blake2b));
    let cores = std::thread::available_parallelism().map_or(1, usize::from);

    let (install, curl) = (median(install), median(curl));
    println!(
        "{name} {}: {:.1} MB, median of {ROUNDS} rounds (each from an empty cache):",
        claims.version,
        bytes.len() as f64 / 1e6
    );
    println!(
        "  backworks plugins install (verified):  {:>7.1} ms",
        ms(install)
    );
    println!(
        "  curl -o of the same file:              {:>7.1} ms",
        ms(curl)
    );
    println!(
        "  ratio: {:.2}x (goal: at most 1.2x)",
        install.as_secs_f64() / curl.as_secs_f64()
    );
    println!(
        "verifying, apart from the download (one thread, warm): sha256 {:.1} ms, the one pass; minisign's BLAKE2b prehash, not computed by the install: {:.1} ms; {cores} cores here, shared with the registry server",
        ms(sha256),
        ms(blake2b)
    );
}
