//! `cargo backworks`: the plugin author's tool.
//!
//! Installed as `cargo-backworks`, run as `cargo backworks <command>`; cargo
//! passes `backworks` as the first argument, which [`Cargo`] absorbs (as
//! cargo-nextest does). Run directly as `cargo-backworks <command>`, the
//! missing `backworks` is supplied. The commands (new, build, check, sign, verify,
//! publish) arrive with issue 4; today the tool reports its version and the
//! plugin ABI it targets.

use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Check that files are valid plugin libraries, from their bytes alone.
    ///
    /// Exit status: 0 every file is a valid plugin; 1 a file was read but is
    /// not a valid plugin; 2 a file could not be read (or a usage error).
    #[command(visible_alias = "inspect")]
    Check {
        /// The plugin libraries (.so, .dll, .dylib) to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print one JSON document (schema `backworks-check/1`, see
        /// docs/check.md) instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_none_or(|first| first != "backworks") {
        args.insert(1.min(args.len()), "backworks".into());
    }
    let Cargo::Backworks(cli) = Cargo::parse_from(args);
    match cli.command {
        Some(Command::Abi) | None => {
            println!(
                "backworks plugin ABI v{} (sdk {}, host target {})",
                backworks_plugin_sdk::abi::ABI_VERSION,
                backworks_plugin_sdk::SDK_VERSION,
                backworks_plugin_sdk::TARGET
            );
            ExitCode::SUCCESS
        }
        Some(Command::Check { files, json }) => {
            match cargo_backworks::check::run(&files, json, &mut std::io::stdout().lock()) {
                Ok(outcome) => ExitCode::from(outcome.exit_code()),
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::from(error.exit_code())
                }
            }
        }
    }
}
