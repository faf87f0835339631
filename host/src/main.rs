//! `backworks`: the Backworks server binary. Parses arguments and calls the
//! library (`backworks_host`), which holds the logic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use backworks_host::{config, discovery, inspect, loader, metrics, server, telemetry, watch};
use clap::{Parser, Subcommand};

// Requests move between tokio workers and hook threads, so most allocations
// are freed on another thread than the one that made them; glibc's malloc
// serialises that on arena locks (seen in perf under load), mimalloc does not.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  a file is not a valid plugin, or a plugin was refused or failed to start
  2  usage, configuration or I/O error";

/// The Backworks server and plugin manager.
#[derive(Debug, Parser)]
#[command(name = "backworks", version, about, after_help = EXIT_CODES)]
struct Cli {
    /// Log format on standard error (RUST_LOG sets the level; default info).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load the plugins of backworks.yaml (each verified, then loaded) and
    /// serve HTTP through them until SIGTERM or Ctrl-C.
    #[command(after_help = EXIT_CODES)]
    Serve {
        /// The configuration file.
        #[arg(long, short, default_value = "backworks.yaml")]
        config: PathBuf,
        /// Listen on this address instead of the configured one (port 0
        /// picks a free port; the bound address is printed).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// For local development: swap in a `type: external` plugin when its
        /// library or its .minisig changes on disk (polled every 250 ms,
        /// acted on once stable for one poll). The new library is verified,
        /// initialized and health-checked as at start-up; then requests
        /// starting after the switch use it, while requests in flight finish
        /// on the old one. A file that fails any step is refused (logged)
        /// and the running version keeps serving.
        #[arg(long)]
        watch: bool,
    },
    /// Work with plugin libraries.
    #[command(subcommand)]
    Plugins(PluginsCommand),
}

#[derive(Debug, Subcommand)]
enum PluginsCommand {
    /// Show a plugin library's metadata record, read from the file's bytes
    /// without loading or running it.
    #[command(after_help = EXIT_CODES)]
    Inspect {
        /// The plugin library (.so, .dll or .dylib).
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the plugin libraries in the configured plugin directories, with
    /// their metadata and signature status (nothing is loaded).
    #[command(after_help = EXIT_CODES)]
    List {
        /// The configuration file.
        #[arg(long, short, default_value = "backworks.yaml")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Plugins(PluginsCommand::Inspect { file, json }) => {
            match inspect::inspect_file(&file) {
                Ok(report) => {
                    if json {
                        println!("{}", report.to_json());
                    } else {
                        print!("{}", report.to_text());
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&error, error.exit_code()),
            }
        }
        Command::Plugins(PluginsCommand::List { config, json }) => list(&config, json),
        Command::Serve {
            config,
            listen,
            watch,
        } => {
            if let Err(error) = telemetry::init(cli.log_format) {
                return fail(&error, 2);
            }
            serve(&config, listen, watch)
        }
    }
}

fn fail(error: &dyn std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(code)
}

fn list(path: &std::path::Path, json: bool) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(error) => return fail(&error, error.exit_code()),
    };
    let keys: Vec<_> = config.trusted_keys.iter().map(|k| k.key.clone()).collect();
    let policy = loader::LoadPolicy {
        trusted_keys: &keys,
        require_signatures: config.require_signatures,
    };
    let found = match discovery::scan_for_plugins(&config.plugin_dirs, policy) {
        Ok(found) => found,
        Err(error) => return fail(&error, 2),
    };
    if json {
        let list: Vec<_> = found.iter().map(discovery::Discovered::to_json).collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        for plugin in &found {
            let identity = plugin.metadata.as_ref().map_or_else(
                || String::from("(not a plugin)"),
                |m| format!("{} {} ({})", m.name, m.version, m.target),
            );
            let status = match &plugin.status {
                Ok(s) => s.clone(),
                Err(s) => format!("refused: {s}"),
            };
            println!("{}\n  {identity}\n  {status}", plugin.path.display());
        }
        if found.is_empty() {
            println!("no plugin libraries in {:?}", config.plugin_dirs);
        }
    }
    ExitCode::SUCCESS
}

fn serve(path: &std::path::Path, listen: Option<SocketAddr>, watch_files: bool) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(error) => return fail(&error, error.exit_code()),
    };
    if !config.require_signatures {
        tracing::warn!(
            "require_signatures is false: plugins are loaded WITHOUT signature checks; use this for local development only"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error, 2),
    };
    let result = runtime.block_on(async {
        let plugins = server::load_plugins(&config)?;
        server::start_plugins(&config, &plugins, config.hook_timeout).await?;
        let metrics = Arc::new(metrics::Metrics::new());
        let mut server =
            server::Server::bind(&config, listen.unwrap_or(config.listen), plugins, metrics)
                .await?;
        if watch_files {
            server = server.watch_files(watch::POLL_INTERVAL);
        }
        let addr = server.local_addr()?;
        {
            use std::io::Write;
            println!("backworks listening on http://{addr}");
            let _ = std::io::stdout().flush();
        }
        tracing::info!(%addr, "listening");
        server.run(server::shutdown_signal()).await
    });
    // Hung hooks may hold blocking threads forever: do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            fail(&error, error.exit_code())
        }
    }
}
