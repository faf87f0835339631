//! `backworks`: the Backworks server binary. Parses arguments and calls the
//! library; see `backworks_host` for the logic.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The Backworks server and plugin manager.
#[derive(Debug, Parser)]
#[command(
    name = "backworks",
    version,
    about,
    after_help = "Exit codes:\n  0  success\n  1  a file was read but is not a valid plugin\n  2  usage or I/O error"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with plugin libraries.
    #[command(subcommand)]
    Plugins(PluginsCommand),
}

#[derive(Debug, Subcommand)]
enum PluginsCommand {
    /// Show a plugin library's metadata record, read from the file's bytes
    /// without loading or running it.
    Inspect {
        /// The plugin library (.so, .dll or .dylib).
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Plugins(PluginsCommand::Inspect { file, json }) => {
            match backworks_host::inspect::inspect_file(&file) {
                Ok(report) => {
                    if json {
                        println!("{}", report.to_json());
                    } else {
                        print!("{}", report.to_text());
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::from(error.exit_code())
                }
            }
        }
    }
}
