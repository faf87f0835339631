//! `cargo backworks`: the plugin author's tool.
//!
//! Installed as `cargo-backworks`, run as `cargo backworks <command>`; cargo
//! passes `backworks` as the first argument, which [`Cargo`] absorbs (as
//! cargo-nextest does). Run directly as `cargo-backworks <command>`, the
//! missing `backworks` is supplied. The commands (new, build, check, sign, verify,
//! publish) arrive with issue 4; today the tool reports its version and the
//! plugin ABI it targets.

use std::path::{Path, PathBuf};

use cargo_backworks::keys;
use clap::{Parser, Subcommand};

/// Cargo's view of the tool: `cargo backworks ...`.
#[derive(Debug, Parser)]
#[command(name = "cargo", bin_name = "cargo")]
enum Cargo {
    /// Create, build, check, sign and publish Backworks plugins.
    #[command(version, about)]
    Backworks(Cli),
}

#[derive(Debug, clap::Args)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the plugin ABI and SDK versions this tool builds and checks for.
    Abi,
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
}

const EXIT_CODES: &str = "Exit codes: 0 success; 1 a signature or its claims did not verify; 2 usage, I/O, key or password error.";

fn main() {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_none_or(|first| first != "backworks") {
        args.insert(1.min(args.len()), "backworks".into());
    }
    let Cargo::Backworks(cli) = Cargo::parse_from(args);
    let result = match cli.command {
        Some(Command::Abi) | None => {
            println!(
                "backworks plugin ABI v{} (sdk {}, host target {})",
                backworks_plugin_sdk::abi::ABI_VERSION,
                backworks_plugin_sdk::SDK_VERSION,
                backworks_plugin_sdk::TARGET
            );
            Ok(())
        }
        Some(Command::Keygen {
            name,
            unencrypted,
            password_env,
            force,
        }) => keygen(&keys::KeygenOptions {
            path: name,
            password: (!unencrypted).then(|| keys::PasswordSource::from_flag(password_env)),
            force,
        }),
        Some(Command::Sign {
            artifacts,
            key,
            key_env,
            password_env,
        }) => {
            let source = match (key, key_env) {
                (Some(file), _) => keys::SecretKeySource::File(file),
                (None, Some(var)) => keys::SecretKeySource::Env(var),
                (None, None) => {
                    eprintln!("error: no secret key; pass --key <FILE> or --key-env <VAR>");
                    std::process::exit(2);
                }
            };
            sign(
                &artifacts,
                &source,
                &keys::PasswordSource::from_flag(password_env),
            )
        }
        Some(Command::Verify {
            artifacts,
            pub_files,
            pub_key,
            signature,
        }) => verify(&artifacts, &pub_files, &pub_key, signature.as_deref()),
    };
    if let Err(code) = result {
        std::process::exit(i32::from(code));
    }
}

/// Reports an error on stderr and gives its exit code.
fn fail(error: &keys::KeyError) -> u8 {
    eprintln!("error: {error}");
    error.exit_code()
}

fn keygen(options: &keys::KeygenOptions) -> Result<(), u8> {
    let report = keys::keygen(options).map_err(|e| fail(&e))?;
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
) -> Result<(), u8> {
    let key = keys::SigningKey::load(source, password).map_err(|e| fail(&e))?;
    for artifact in artifacts {
        let signed = keys::sign_file(artifact, &key).map_err(|e| fail(&e))?;
        println!(
            "signed {}: {} {} for {} (abi v{}) with key {} -> {}",
            signed.artifact.display(),
            signed.claims.name,
            signed.claims.version,
            signed.claims.target,
            signed.claims.abi_version,
            signed.key_id,
            signed.signature.display()
        );
    }
    Ok(())
}

/// Verifies every artifact, reporting each; fails with the highest exit
/// code met.
fn verify(
    artifacts: &[PathBuf],
    pub_files: &[PathBuf],
    pub_keys: &[String],
    signature: Option<&Path>,
) -> Result<(), u8> {
    if signature.is_some() && artifacts.len() != 1 {
        return Err(fail(&keys::KeyError::SignatureForManyArtifacts {
            count: artifacts.len(),
        }));
    }
    let trusted = keys::read_public_keys(pub_files, pub_keys).map_err(|e| fail(&e))?;
    let mut worst = 0;
    for artifact in artifacts {
        match keys::verify_file(artifact, signature, &trusted) {
            Ok(file) => {
                let claims = &file.verified.claims;
                println!(
                    "verified {}: {} {} for {} (abi v{}), signed by key {}",
                    file.artifact.display(),
                    claims.name,
                    claims.version,
                    claims.target,
                    claims.abi_version,
                    file.verified.key_id
                );
            }
            Err(error) => worst = worst.max(fail(&error)),
        }
    }
    if worst == 0 { Ok(()) } else { Err(worst) }
}
