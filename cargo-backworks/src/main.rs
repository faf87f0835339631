//! `cargo backworks`: the plugin author's tool. This file parses arguments
//! and prints results; the commands live in the `cargo_backworks` library.
//!
//! Installed as `cargo-backworks`, run as `cargo backworks <command>`; cargo
//! passes `backworks` as the first argument, which [`Cargo`] absorbs (as
//! cargo-nextest does). Run directly as `cargo-backworks <command>`, the
//! missing `backworks` is supplied.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use backworks_artifact::terminal::{self, escape};
use cargo_backworks::error::EXIT_CODES;
use cargo_backworks::progress::Progress;
use cargo_backworks::{Error, build, check, keys, new, publish, reproduce};
use clap::{Parser, Subcommand};

/// Cargo's view of the tool: `cargo backworks ...`.
#[derive(Debug, Parser)]
#[command(name = "cargo", bin_name = "cargo")]
enum Cargo {
    /// Create, build, check, sign, verify and publish Backworks plugins.
    #[command(version, about, after_help = EXIT_CODES)]
    Backworks(Cli),
}

#[derive(Debug, clap::Args)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a new plugin crate from the template.
    #[command(after_help = EXIT_CODES)]
    New {
        /// The directory to create (must not exist, or be empty).
        path: PathBuf,
        /// The package name [default: the directory's name].
        #[arg(long)]
        name: Option<String>,
        /// Depend on the SDK at this local path (the `sdk/` directory of a
        /// Backworks checkout) [default: the checkout this tool was built
        /// from, if it still exists, else the registry version].
        #[arg(long, value_name = "DIR", conflicts_with = "sdk_version")]
        sdk_path: Option<PathBuf>,
        /// Depend on this registry version of the SDK.
        #[arg(long, value_name = "VERSION")]
        sdk_version: Option<String>,
        /// Also write a CI pipeline: `github` writes
        /// .github/workflows/backworks.yml and ci/plugin-pipeline.sh (build
        /// matrix, ABI gate, signing from a secret, upload, reproducibility).
        #[arg(long, value_enum, value_name = "SYSTEM")]
        ci: Option<new::Ci>,
    },
    /// Build plugin packages for each target, copy them to
    /// <target-dir>/backworks/<target>/<name>-<version>-<target>.<ext>, and
    /// check each.
    #[command(after_help = EXIT_CODES)]
    Build {
        /// Build with the release profile.
        #[arg(long, short = 'r')]
        release: bool,
        /// A target triple to build for (repeatable) [default:
        /// [package.metadata.backworks] targets, else the host].
        #[arg(long = "target", value_name = "TRIPLE")]
        targets: Vec<String>,
        /// A plugin package to build (repeatable) [default: every plugin
        /// package of the workspace].
        #[arg(long = "package", short = 'p', value_name = "NAME")]
        packages: Vec<String>,
        /// The Cargo.toml to build from.
        #[arg(long, value_name = "FILE")]
        manifest_path: Option<PathBuf>,
        /// Sign each library with this secret key file.
        #[arg(long, value_name = "KEY", conflicts_with = "sign_key_env")]
        sign: Option<PathBuf>,
        /// Sign each library with the secret key held in this environment
        /// variable (the whole .key file's text).
        #[arg(long, value_name = "VAR")]
        sign_key_env: Option<String>,
        /// Read the signing key's password from this environment variable
        /// [default: BACKWORKS_KEY_PASSWORD if set, else a prompt].
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// Stop at the first target that cannot be built [default: report
        /// it and go on with the other targets].
        #[arg(long)]
        fail_fast: bool,
        /// Pass --locked to cargo: fail rather than update Cargo.lock.
        #[arg(long)]
        locked: bool,
        /// Where the libraries, SHA256SUMS and manifest.json go [default:
        /// <target-dir>/backworks].
        #[arg(long, value_name = "DIR")]
        dist_dir: Option<PathBuf>,
        /// Print only errors and compiler diagnostics.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Rebuild what the last build wrote, in a clean copy of the source in
    /// another directory, and compare each library's SHA-256 with its
    /// manifest (<target-dir>/backworks/manifest.json).
    #[command(after_help = EXIT_CODES)]
    Reproduce {
        /// The Cargo.toml of the workspace.
        #[arg(long, value_name = "FILE")]
        manifest_path: Option<PathBuf>,
        /// The build manifest to compare with [default:
        /// <target-dir>/backworks/manifest.json].
        #[arg(long, value_name = "FILE")]
        build_manifest: Option<PathBuf>,
        /// The rebuild's target directory [default: a fresh one, so nothing
        /// is reused].
        #[arg(long, value_name = "DIR")]
        target_dir: Option<PathBuf>,
        /// Print only errors and compiler diagnostics.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Check that files are valid plugin libraries, from their bytes alone.
    #[command(visible_alias = "inspect", after_help = EXIT_CODES)]
    Check {
        /// The plugin libraries (.so, .dll, .dylib) to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print one JSON document (schema `backworks-check/1`, see
        /// docs/check.md) instead of text.
        #[arg(long)]
        json: bool,
        /// Also print each file's dependency list (the crates it was built
        /// from, cargo-auditable's `.dep-v0` section that `cargo backworks
        /// build` embeds); exit code 1 when a list cannot be read.
        #[arg(long)]
        deps: bool,
    },
    /// Generate a minisign key pair: <NAME>.key (secret) and <NAME>.pub.
    #[command(after_help = EXIT_CODES)]
    Keygen {
        /// Path and name of the key files, without suffix.
        #[arg(default_value = "backworks")]
        name: PathBuf,
        /// Do not protect the secret key with a password (for CI secrets).
        #[arg(long, conflicts_with = "password_env")]
        unencrypted: bool,
        /// Read the password from this environment variable [default:
        /// BACKWORKS_KEY_PASSWORD if set, else a prompt on the terminal].
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// Overwrite existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Sign plugin artifacts: writes <ARTIFACT>.minisig next to each.
    #[command(after_help = EXIT_CODES)]
    Sign {
        /// The plugin libraries to sign.
        #[arg(required = true)]
        artifacts: Vec<PathBuf>,
        /// The secret key file.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "key_env",
            conflicts_with = "key_env"
        )]
        key: Option<PathBuf>,
        /// An environment variable holding the secret key file's text.
        #[arg(long, value_name = "VAR")]
        key_env: Option<String>,
        /// Read the key's password from this environment variable [default:
        /// BACKWORKS_KEY_PASSWORD if set, else a prompt on the terminal].
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
    },
    /// Verify plugin artifacts against their signatures and trusted keys.
    #[command(after_help = EXIT_CODES)]
    Verify {
        /// The plugin libraries to verify.
        #[arg(required = true)]
        artifacts: Vec<PathBuf>,
        /// A trusted public key file (repeatable).
        #[arg(long = "pub", value_name = "FILE", required_unless_present = "pub_key")]
        pub_files: Vec<PathBuf>,
        /// A trusted public key in base64 (repeatable).
        #[arg(long, value_name = "BASE64")]
        pub_key: Vec<String>,
        /// The signature file, for a single artifact [default: <ARTIFACT>.minisig].
        #[arg(long, value_name = "FILE")]
        signature: Option<PathBuf>,
    },
    /// Publish every target of the current package's version to a
    /// registry.
    ///
    /// The artifacts are <dist>/<target>/<name>-<version>-<target>.<ext> of
    /// the version in Cargo.toml (as `build` writes them), each with its
    /// .minisig (`sign`); description and keywords come from Cargo.toml.
    /// Every artifact is checked, and its signature verified with the
    /// publisher's public key, before anything is sent or written. An
    /// http(s):// registry gets one POST
    /// <URL>/api/v1/publish with the token in BACKWORKS_REGISTRY_TOKEN
    /// (connect timeout 10 s; the request may take a minute plus one second
    /// per 64 KiB uploaded). A directory or file:// registry is written
    /// here, its index signed with --registry-key.
    #[command(after_help = EXIT_CODES)]
    Publish {
        /// The registry: a directory, a file:// URL, or an http(s):// base
        /// URL.
        #[arg(long, value_name = "URL or DIR")]
        registry: String,
        /// Where `build` put the libraries [default:
        /// <target-dir>/backworks].
        #[arg(long, value_name = "DIR")]
        dist_dir: Option<PathBuf>,
        /// The plugin package to publish [default: the one in the current
        /// directory, else the workspace's only plugin package].
        #[arg(long, short = 'p', value_name = "NAME")]
        package: Option<String>,
        /// The Cargo.toml to read the package from.
        #[arg(long, value_name = "FILE")]
        manifest_path: Option<PathBuf>,
        /// Directory registries: the registry's secret key file, which signs
        /// its index (required for them).
        #[arg(long, value_name = "FILE")]
        registry_key: Option<PathBuf>,
        /// Read the registry key's password from this environment variable
        /// [default: BACKWORKS_KEY_PASSWORD if set, else a prompt on the
        /// terminal].
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
        /// The publisher's public key (.pub file or base64) every signature
        /// must verify with [default: ./backworks.pub if it exists; a
        /// directory registry requires one].
        #[arg(long, value_name = "KEY")]
        public_key: Option<String>,
        /// Print the published release as JSON (the registry's answer).
        #[arg(long)]
        json: bool,
        /// Print only errors.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Print the plugin ABI and SDK versions this tool builds and checks for.
    Abi,
}

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_none_or(|first| first != "backworks") {
        args.insert(1.min(args.len()), "backworks".into());
    }
    let Cargo::Backworks(cli) = Cargo::parse_from(args);
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {}", printable(&error));
            ExitCode::from(error.exit_code())
        }
    }
}

/// `error`'s text as printed. Key, check and publish errors quote
/// signature files, plugin records and registry answers (serde's "unknown
/// field" names a field the registry sent): escaped, so none of it can
/// drive the terminal or add a line. Build and reproduce errors, and
/// publish's check report, span lines by design: cargo's messages, and
/// check reports, which escape the file's text themselves.
fn printable(error: &Error) -> String {
    match error {
        Error::Build(_)
        | Error::Reproduce(_)
        | Error::Publish(publish::PublishError::Invalid { .. })
        | Error::Publish(publish::PublishError::Workspace(_)) => error.to_string(),
        _ => escape(&error.to_string()).into_owned(),
    }
}

/// Runs one command; `Ok` carries the exit code of a command that reports
/// per-file verdicts itself (`check`, `verify`).
fn run(command: Command) -> Result<u8, Error> {
    match command {
        Command::New {
            path,
            name,
            sdk_path,
            sdk_version,
            ci,
        } => {
            let sdk = match (sdk_path, sdk_version) {
                (Some(path), _) => new::SdkSource::Path(path),
                (None, Some(version)) => new::SdkSource::Version(version),
                (None, None) => new::SdkSource::Auto,
            };
            let report = new::new_plugin(&new::NewOptions {
                path,
                name,
                sdk,
                ci,
            })?;
            println!(
                "created plugin `{}` in {} (backworks-plugin-sdk = {})",
                report.name,
                report.path.display(),
                report.sdk_dependency
            );
            println!(
                "next: cd {} && cargo backworks build --release",
                report.path.display()
            );
            Ok(0)
        }
        Command::Build {
            release,
            targets,
            packages,
            manifest_path,
            sign,
            sign_key_env,
            password_env,
            fail_fast,
            locked,
            dist_dir,
            quiet,
        } => {
            // Load the key first: a bad key or password fails before a build.
            let key_source = match (sign, sign_key_env) {
                (Some(file), _) => Some(keys::SecretKeySource::File(file)),
                (None, Some(var)) => Some(keys::SecretKeySource::Env(var)),
                (None, None) => None,
            };
            let key = key_source
                .map(|source| {
                    keys::SigningKey::load(&source, &keys::PasswordSource::from_flag(password_env))
                })
                .transpose()?;
            let progress = Progress::new(quiet);
            let options = build::BuildOptions {
                manifest_path,
                release,
                targets,
                packages,
                fail_fast,
                locked,
                dist_dir,
                target_dir: None,
            };
            let report = build::build(&options, &progress)?;
            if let Some(key) = &key {
                for plugin in &report.built {
                    progress.status(&format!("signing {}", plugin.package));
                    let signed = keys::sign_file(&plugin.dist_path, key)?;
                    progress.step(&format!(
                        "   Signed {} with key {}",
                        signed.signature.display(),
                        signed.key_id
                    ));
                }
            }
            if let Some((sums, _)) = &report.manifest {
                progress.step(&format!("   Manifest {}", sums.display()));
            }
            progress.finish();
            for plugin in &report.built {
                println!("{}", plugin.dist_path.display());
            }
            match report.failure() {
                Some(error) => {
                    eprintln!("error: {error}");
                    Ok(error.exit_code())
                }
                None => Ok(0),
            }
        }
        Command::Reproduce {
            manifest_path,
            build_manifest,
            target_dir,
            quiet,
        } => {
            let progress = Progress::new(quiet);
            let report = reproduce::reproduce(
                &reproduce::ReproduceOptions {
                    manifest_path,
                    build_manifest,
                    target_dir,
                },
                &progress,
            )?;
            progress.finish();
            if let Some((then, now)) = &report.rustc_changed {
                // The manifest's rustc line is the manifest file's text.
                eprintln!(
                    "note: the manifest was built with {}, this rebuild with {}",
                    escape(then),
                    escape(now)
                );
            }
            println!(
                "reproduced {} artifacts of {} bit for bit",
                report.compared,
                report.manifest.display()
            );
            Ok(0)
        }
        Command::Check { files, json, deps } => {
            let outcome = check::run(&files, json, deps, &mut std::io::stdout().lock())?;
            Ok(outcome.exit_code())
        }
        Command::Keygen {
            name,
            unencrypted,
            password_env,
            force,
        } => {
            keygen(&keys::KeygenOptions {
                path: name,
                password: (!unencrypted).then(|| keys::PasswordSource::from_flag(password_env)),
                force,
            })?;
            Ok(0)
        }
        Command::Sign {
            artifacts,
            key,
            key_env,
            password_env,
        } => {
            let source = match (key, key_env) {
                (Some(file), _) => keys::SecretKeySource::File(file),
                (None, Some(var)) => keys::SecretKeySource::Env(var),
                (None, None) => unreachable!("clap requires --key or --key-env"),
            };
            sign(
                &artifacts,
                &source,
                &keys::PasswordSource::from_flag(password_env),
            )?;
            Ok(0)
        }
        Command::Verify {
            artifacts,
            pub_files,
            pub_key,
            signature,
        } => verify(&artifacts, &pub_files, &pub_key, signature.as_deref()),
        Command::Publish {
            registry,
            dist_dir,
            package,
            manifest_path,
            registry_key,
            password_env,
            public_key,
            json,
            quiet,
        } => {
            let options = publish::PublishOptions {
                registry: publish::Registry::parse(&registry)?,
                manifest_path,
                dist_dir,
                package,
                registry_key,
                password: keys::PasswordSource::from_flag(password_env),
                public_key,
                token: publish::token_from_env()?,
            };
            let progress = Progress::new(quiet);
            let published = publish::publish(&options, &progress)?;
            progress.finish();
            if json {
                // The registry's answer, re-encoded with what could drive
                // a terminal in `\uXXXX` escapes: the same JSON value.
                match serde_json::from_str::<serde_json::Value>(&published.json) {
                    Ok(value) => print!("{}", terminal::json(&value)),
                    Err(_) => println!("{}", escape(&published.json)),
                }
            } else {
                print_release(&published, quiet);
            }
            Ok(0)
        }
        Command::Abi => {
            println!(
                "backworks plugin ABI v{} (sdk {}, host target {})",
                backworks_plugin_sdk::abi::ABI_VERSION,
                backworks_plugin_sdk::SDK_VERSION,
                backworks_plugin_sdk::TARGET
            );
            Ok(0)
        }
    }
}

/// The release an HTTP registry answered with (its text escaped: the
/// answer is the registry's).
fn print_release(published: &publish::Published, quiet: bool) {
    let release = &published.release;
    let count = release.targets.len();
    println!(
        "published {} {} to {}: {count} {}, signed by key {}",
        escape(&release.name),
        escape(&release.version),
        escape(&published.registry),
        if count == 1 { "target" } else { "targets" },
        escape(&release.publisher)
    );
    for (target, artifact) in &release.targets {
        println!(
            "  {}: {} ({} bytes, sha256 {})",
            escape(target),
            escape(&artifact.path),
            artifact.size,
            escape(&artifact.sha256)
        );
    }
    if !published.verified_locally && !quiet {
        eprintln!(
            "note: no publisher public key was given (--public-key) or found (./{}): the registry verified the signatures, this tool did not",
            publish::DEFAULT_PUBLIC_KEY
        );
    }
}

fn keygen(options: &keys::KeygenOptions) -> Result<(), Error> {
    let report = keys::keygen(options)?;
    println!(
        "secret key: {} ({})",
        report.secret_key_file.display(),
        if report.encrypted {
            "password-protected"
        } else {
            "not encrypted"
        }
    );
    println!("public key: {}", report.public_key_file.display());
    println!("key id:     {}", report.key_id);
    println!("public key: {}", report.public_key);
    println!(
        "keep {} secret; give {} (or the public key above) to those who verify your plugins",
        report.secret_key_file.display(),
        report.public_key_file.display()
    );
    Ok(())
}

fn sign(
    artifacts: &[PathBuf],
    source: &keys::SecretKeySource,
    password: &keys::PasswordSource,
) -> Result<(), Error> {
    let key = keys::SigningKey::load(source, password)?;
    for artifact in artifacts {
        let signed = keys::sign_file(artifact, &key)?;
        // The claims are the plugin record's strings.
        println!(
            "signed {}: {} {} for {} (abi v{}) with key {} -> {}",
            escape(&signed.artifact.display().to_string()),
            escape(&signed.claims.name),
            escape(&signed.claims.version),
            escape(&signed.claims.target),
            signed.claims.abi_version,
            signed.key_id,
            escape(&signed.signature.display().to_string())
        );
    }
    Ok(())
}

/// Verifies every artifact, reporting each; the exit code is the highest
/// met.
fn verify(
    artifacts: &[PathBuf],
    pub_files: &[PathBuf],
    pub_keys: &[String],
    signature: Option<&Path>,
) -> Result<u8, Error> {
    if signature.is_some() && artifacts.len() != 1 {
        return Err(keys::KeyError::SignatureForManyArtifacts {
            count: artifacts.len(),
        }
        .into());
    }
    let trusted = keys::read_public_keys(pub_files, pub_keys)?;
    let mut worst = 0;
    for artifact in artifacts {
        match keys::verify_file(artifact, signature, &trusted) {
            Ok(file) => {
                let claims = &file.verified.claims;
                // The claims are the signature's and the record's.
                println!(
                    "verified {}: {} {} for {} (abi v{}), signed by key {}",
                    escape(&file.artifact.display().to_string()),
                    escape(&claims.name),
                    escape(&claims.version),
                    escape(&claims.target),
                    claims.abi_version,
                    file.verified.key_id
                );
            }
            Err(error) => {
                eprintln!("error: {}", escape(&error.to_string()));
                worst = worst.max(error.exit_code());
            }
        }
    }
    Ok(worst)
}
