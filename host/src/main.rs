//! `backworks`: the Backworks server binary. Parses arguments and calls the
//! library (`backworks_host`), which holds the logic.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use backworks_host::marketplace::{self, PluginMarketplace, ServeMode};
use backworks_host::registry_server;
use backworks_host::{config, discovery, inspect, loader, report, server, telemetry};
use clap::{Parser, Subcommand};

// Requests move between tokio workers and hook threads, so most allocations
// are freed on another thread than the one that made them; glibc's malloc
// serialises that on arena locks (seen in perf under load), mimalloc does not.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_CODES: &str = "Exit codes:
  0  success
  1  refused: a file is not a valid plugin, a plugin or download did not verify
     (signature, size, sha256, rollback, expiry, downgrade, key change, --locked,
     capabilities other than the release says), a plugin failed to start, an
     update asks for more capabilities than the locked version declared (not
     applied without --accept-capabilities), or `plugins inspect --deps` found
     no readable dependency list in the file
  2  usage, configuration, I/O or network error";

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
        /// Refuse to start unless every marketplace plugin is exactly what
        /// backworks.lock pins (the lock file is never changed).
        #[arg(long)]
        locked: bool,
        /// Use only the plugin cache: never touch the network (marketplace
        /// plugins must already be installed).
        #[arg(long)]
        offline: bool,
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
    /// Run or maintain a plugin registry (docs/registry.md).
    #[command(subcommand)]
    Marketplace(MarketplaceCommand),
    /// Internal: load bytes a running `backworks serve` verified and staged,
    /// to see whether their initialisers return (the probe of a
    /// replacement, `lifecycle::probe_within`). Exit 0 when loaded, 70 when
    /// refused; a crash or a hang is the answer too.
    #[command(hide = true)]
    ProbeLoad {
        /// Where the verified bytes are staged (the server's sealed memfd).
        staged: PathBuf,
        /// The plugin file the bytes came from, for messages.
        #[arg(long)]
        label: PathBuf,
        /// The most bytes read.
        #[arg(long)]
        max_size: u64,
    },
    /// Internal: run one plugin of the `process` tier for a running
    /// `backworks serve`, which passes the verified bytes (descriptor 3)
    /// and a socket (descriptor 4). Exit 70 when it cannot serve (the
    /// reason on standard error).
    #[command(hide = true)]
    PluginWorker(WorkerArgs),
}

#[derive(Debug, Subcommand)]
enum MarketplaceCommand {
    /// Serve a registry directory over HTTP: the tree's files, search, and
    /// publishing (with a token from BACKWORKS_REGISTRY_TOKEN or
    /// --token-file; without one, publishing is disabled) until SIGTERM or
    /// Ctrl-C.
    #[command(after_help = EXIT_CODES)]
    Serve {
        /// The registry directory (created with an empty signed index when
        /// missing).
        #[arg(long)]
        dir: PathBuf,
        /// The registry's minisign secret key file; the password of an
        /// encrypted key is read from BACKWORKS_REGISTRY_KEY_PASSWORD.
        #[arg(long)]
        key: PathBuf,
        /// A publisher's public key (.pub file or base64 key) whose
        /// signatures publishing accepts; repeat for several.
        #[arg(long = "publisher-key", value_name = "KEY")]
        publisher_keys: Vec<String>,
        /// Listen on this address (port 0 picks a free port; the bound
        /// address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Largest publish request (B, KiB, MiB, GiB, KB, MB, GB).
        #[arg(long, default_value = "64MiB", value_parser = config::parse_size)]
        max_upload: u64,
        /// How many publish requests are read at once (each may hold up to
        /// --max-upload in memory); more are answered 503 Service
        /// Unavailable with Retry-After.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
        max_concurrent_uploads: u16,
        /// How long each signed index is valid (s, m, h, d); the server
        /// re-signs it when half of that is left.
        #[arg(long, default_value = "30d", value_parser = registry_server::parse_lifetime)]
        index_lifetime: u64,
        /// Read the publish token from this file instead of
        /// BACKWORKS_REGISTRY_TOKEN.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// How long a client may take to send a request's head (request
        /// line and headers): from the accept, or from the first byte of a
        /// keep-alive connection's next request; slower connections are
        /// closed (ms, s, m, h).
        #[arg(long, default_value = "10s", value_parser = config::parse_duration)]
        header_timeout: std::time::Duration,
        /// How long a keep-alive connection may stay idle between requests,
        /// or a connection may move no byte while the server waits on the
        /// client (a stalled upload, a download not read), before it is
        /// closed (ms, s, m, h).
        #[arg(long, default_value = "60s", value_parser = config::parse_duration)]
        idle_timeout: std::time::Duration,
        /// The most connections open at once, fewer if the open-file limit
        /// (raised to the hard limit at start) leaves no room for that
        /// many; at the cap an idle keep-alive connection is closed to make
        /// room for a new one, others wait in the listen backlog.
        #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: u32,
    },
    /// Re-sign the registry's index with serial + 1 and a fresh expiry
    /// (run it, e.g. from cron, when no server keeps the index fresh).
    #[command(after_help = EXIT_CODES)]
    Resign {
        /// The registry directory.
        #[arg(long)]
        dir: PathBuf,
        /// The registry's minisign secret key file; the password of an
        /// encrypted key is read from BACKWORKS_REGISTRY_KEY_PASSWORD.
        #[arg(long)]
        key: PathBuf,
        /// How long the new index is valid (s, m, h, d).
        #[arg(long, default_value = "30d", value_parser = registry_server::parse_lifetime)]
        index_lifetime: u64,
    },
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
        /// Also print its dependency list (the crates it was built from,
        /// the `.dep-v0` section `cargo backworks build` embeds); exit code
        /// 1 when the file carries none or it cannot be read.
        #[arg(long)]
        deps: bool,
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
    /// Search the marketplace registry (name, description, keywords).
    #[command(after_help = EXIT_CODES)]
    Search {
        /// Words to look for (every word must match).
        query: String,
        /// Print the result page as JSON.
        #[arg(long)]
        json: bool,
        /// The configuration file (its `marketplace:` section).
        #[arg(long, short, default_value = "backworks.yaml")]
        config: PathBuf,
    },
    /// Show a marketplace release before installing it (nothing is
    /// downloaded or pinned).
    ///
    /// Its description, publisher, declared capabilities, targets with
    /// their platform floors, and the crates this host's target's library
    /// was built from: its release file, verified against the signed index.
    #[command(after_help = EXIT_CODES)]
    Info {
        /// `name`, `name@1.2.3` (exactly that version) or `name@^1.2` (the
        /// newest version a semver requirement allows).
        plugin: String,
        /// Print the release file (every target's dependency list) as JSON.
        #[arg(long)]
        json: bool,
        /// The configuration file (its `marketplace:` section).
        #[arg(long, short, default_value = "backworks.yaml")]
        config: PathBuf,
    },
    /// Download, verify and cache a marketplace plugin, and pin it in
    /// backworks.lock (backworks.yaml is not edited).
    #[command(after_help = EXIT_CODES)]
    Install {
        /// `name`, `name@1.2.3` (exactly that version) or `name@^1.2` (the
        /// newest version a semver requirement allows).
        plugin: String,
        /// The configuration file.
        #[arg(long, short, default_value = "backworks.yaml")]
        config: PathBuf,
    },
    /// Update locked plugins to the newest version the `updates:` policy
    /// allows (never lower, never signed by another key).
    ///
    /// An update that asks for more capabilities (network, files, environment) than the
    /// locked version declared is listed and not applied (exit code 1).
    #[command(after_help = EXIT_CODES)]
    Update {
        /// The plugin to update; all locked plugins when omitted.
        plugin: Option<String>,
        /// Apply the update of PLUGIN even when it asks for more
        /// capabilities than the locked version declared (review what it
        /// asks for first; one plugin at a time, named).
        #[arg(long, requires = "plugin")]
        accept_capabilities: bool,
        /// The configuration file.
        #[arg(long, short, default_value = "backworks.yaml")]
        config: PathBuf,
    },
    /// Pin every target of the releases backworks.lock pins for this host
    /// (from the signed index and each artifact's signature; nothing is
    /// downloaded), or with --check show which targets are pinned.
    ///
    /// With --check nothing is fetched or written; the exit code is 1 when a
    /// `type: marketplace` plugin of backworks.yaml cannot run with
    /// `serve --locked` on this host (not pinned for its target, or pinned
    /// at a version its requirement does not allow).
    #[command(after_help = EXIT_CODES)]
    Lock {
        /// Only read backworks.lock and say which targets it pins.
        #[arg(long)]
        check: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The configuration file.
        #[arg(long, short, default_value = "backworks.yaml")]
        config: PathBuf,
    },
    /// Remove a plugin from backworks.lock and the cache.
    #[command(after_help = EXIT_CODES)]
    Remove {
        /// The plugin.
        plugin: String,
        /// The configuration file.
        #[arg(long, short, default_value = "backworks.yaml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Plugins(PluginsCommand::Inspect { file, json, deps }) => {
            match inspect::inspect_file(&file, deps) {
                Ok(report) => {
                    if json {
                        print!("{}", report::json(&report.to_json()));
                    } else {
                        print!("{}", report.to_text());
                    }
                    ExitCode::from(report.exit_code())
                }
                Err(error) => fail(&error, error.exit_code()),
            }
        }
        Command::Plugins(PluginsCommand::List { config, json }) => list(&config, json),
        Command::Plugins(PluginsCommand::Search {
            query,
            json,
            config,
        }) => market(&config, Market::Search { query, json }),
        Command::Plugins(PluginsCommand::Info {
            plugin,
            json,
            config,
        }) => market(&config, Market::Info { plugin, json }),
        Command::Plugins(PluginsCommand::Install { plugin, config }) => {
            market(&config, Market::Install { plugin })
        }
        Command::Plugins(PluginsCommand::Update {
            plugin,
            accept_capabilities,
            config,
        }) => market(
            &config,
            Market::Update {
                plugin,
                accept_capabilities,
            },
        ),
        Command::Plugins(PluginsCommand::Remove { plugin, config }) => {
            market(&config, Market::Remove { plugin })
        }
        Command::Plugins(PluginsCommand::Lock {
            check,
            json,
            config,
        }) => market(&config, Market::Lock { check, json }),
        Command::Serve {
            config,
            listen,
            locked,
            offline,
            watch,
        } => {
            // Held to the end: dropping it writes the log lines still batched.
            let _log = match telemetry::init(cli.log_format) {
                Ok(guard) => guard,
                Err(error) => return fail(&error, 2),
            };
            // Before plugins open their files; the cap follows the limit.
            backworks_host::http_serve::raise_open_file_limit();
            serve(&config, listen, ServeMode { locked, offline }, watch)
        }
        Command::ProbeLoad {
            staged,
            label,
            max_size,
        } => {
            let code = match loader::probe(&staged, &label, max_size) {
                Ok(()) => 0,
                Err(error) => {
                    eprintln!("{}", report::escape(&error.to_string()));
                    backworks_host::lifecycle::PROBE_REFUSED
                }
            };
            // Neither the library's destructors nor exit handlers run: the
            // probe's answer is given.
            loader::exit_now(code)
        }
        Command::PluginWorker(args) => plugin_worker(cli.log_format, args),
        Command::Marketplace(MarketplaceCommand::Serve {
            dir,
            key,
            publisher_keys,
            listen,
            max_upload,
            max_concurrent_uploads,
            index_lifetime,
            token_file,
            header_timeout,
            idle_timeout,
            max_connections,
        }) => {
            let _log = match telemetry::init(cli.log_format) {
                Ok(guard) => guard,
                Err(error) => return fail(&error, 2),
            };
            backworks_host::http_serve::raise_open_file_limit();
            let options = registry_server::load_registry_key(&key).and_then(|key| {
                Ok(registry_server::ServeOptions {
                    key,
                    publisher_keys: registry_server::load_publisher_keys(&publisher_keys)?,
                    token: registry_server::load_token(token_file.as_deref())?,
                    dir,
                    listen,
                    max_upload,
                    max_concurrent_uploads: usize::from(max_concurrent_uploads),
                    index_lifetime,
                    limits: backworks_host::http_serve::ConnectionLimits {
                        header_timeout,
                        idle_timeout,
                        max_connections: max_connections as usize,
                    },
                })
            });
            match options {
                Ok(options) => marketplace_serve(options),
                Err(error) => fail(&error, 2),
            }
        }
        Command::Marketplace(MarketplaceCommand::Resign {
            dir,
            key,
            index_lifetime,
        }) => {
            let resigned = registry_server::load_registry_key(&key)
                .and_then(|key| registry_server::resign(&dir, key, index_lifetime));
            match resigned {
                Ok(index) => {
                    print!("{}", report::resigned(&dir, &index));
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&error, 2),
            }
        }
    }
}

fn marketplace_serve(options: registry_server::ServeOptions) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error, 2),
    };
    let result = runtime.block_on(registry_server::serve(
        options,
        |addr| {
            use std::io::Write;
            println!("marketplace listening on http://{addr}");
            let _ = std::io::stdout().flush();
            tracing::info!(%addr, "listening");
        },
        server::shutdown_signal(),
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            fail(&error, 2)
        }
    }
}

/// What `plugins search|info|install|update|remove` asks of the marketplace.
enum Market {
    Search {
        query: String,
        json: bool,
    },
    Info {
        plugin: String,
        json: bool,
    },
    Install {
        plugin: String,
    },
    Update {
        plugin: Option<String>,
        accept_capabilities: bool,
    },
    Remove {
        plugin: String,
    },
    Lock {
        check: bool,
        json: bool,
    },
}

/// Runs a marketplace command with the client of the configuration file
/// `config_path`.
fn market(config_path: &std::path::Path, command: Market) -> ExitCode {
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(error) => return fail(&error, error.exit_code()),
    };
    let client = match PluginMarketplace::from_config(&config) {
        Ok(client) => client,
        Err(error) => return fail(&error, error.exit_code()),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error, 2),
    };
    let result = runtime.block_on(async {
        let lock = client.lock_path();
        let text = match command {
            Market::Search { query, json: true } => report::json(&client.search(&query).await?),
            Market::Search { query, json: false } => {
                report::search(&query, &client.search(&query).await?)
            }
            Market::Info { plugin, json } => {
                let (name, requirement) = marketplace::parse_spec(&plugin)?;
                let release = client.info(&name, &requirement).await?;
                if json {
                    report::json(&release)
                } else {
                    report::release_info(&release, client.target())
                }
            }
            Market::Install { plugin } => {
                let (name, requirement) = marketplace::parse_spec(&plugin)?;
                report::installed(&client.install(&name, &requirement).await?, lock)
            }
            Market::Update {
                plugin,
                accept_capabilities,
            } => {
                let outcomes = client
                    .update(plugin.as_deref(), accept_capabilities)
                    .await?;
                print!("{}", report::updated(&outcomes, lock, &config.updates));
                let held: Vec<String> = outcomes
                    .iter()
                    .filter_map(|o| o.held.as_ref())
                    .map(|h| format!("{} {} -> {}", h.name, h.from, h.to))
                    .collect();
                if !held.is_empty() {
                    return Err(marketplace::MarketplaceError::CapabilitiesHeld {
                        held: held.join(", "),
                    });
                }
                String::new()
            }
            Market::Remove { plugin } => report::removed(&client.remove(&plugin).await?),
            Market::Lock { check, json } => {
                if !check {
                    client.pin_every_target().await?;
                }
                let statuses = client.check_lock()?;
                let target = client.target();
                print!(
                    "{}",
                    if json {
                        report::lock_status_json(&statuses, lock, target)
                    } else {
                        report::lock_status(&statuses, lock, target)
                    }
                );
                if let Some(status) = statuses.iter().find(|s| s.problem.is_some()) {
                    return Err(marketplace::MarketplaceError::LockMismatch {
                        name: status.name.clone(),
                        reason: status.problem.clone().unwrap_or_default(),
                    });
                }
                String::new()
            }
        };
        print!("{text}");
        Ok::<(), marketplace::MarketplaceError>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error, error.exit_code()),
    }
}

/// Prints `error` and returns `code`. Errors quote what registries sent
/// (serde's "unknown field" names the registry's field), plugins' records
/// and files: escaped, so none of it can drive the terminal.
/// `backworks plugin-worker`: serves until the host closes the socket, then
/// leaves through `_exit` (the plugin's destructors do not run).
/// `plugin-worker`'s arguments (read only where the process tier exists).
#[derive(Debug, clap::Args)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct WorkerArgs {
    /// The plugin's entry name in backworks.yaml.
    #[arg(long)]
    name: String,
    /// The plugin file the bytes came from, for messages.
    #[arg(long)]
    label: PathBuf,
    /// The host's process id: the worker refuses to run under another.
    #[arg(long)]
    parent: u32,
    /// Address-space limit, bytes.
    #[arg(long)]
    memory: u64,
    /// Open-file limit.
    #[arg(long)]
    open_files: u64,
    /// The most bytes of plugin accepted.
    #[arg(long)]
    max_size: u64,
}

#[cfg(target_os = "linux")]
fn plugin_worker(format: telemetry::LogFormat, args: WorkerArgs) -> ExitCode {
    use backworks_host::process::worker;

    let options = worker::WorkerOptions {
        name: args.name,
        label: args.label,
        parent: args.parent,
        memory: args.memory,
        open_files: args.open_files,
        max_plugin_size: args.max_size,
    };
    let log = match telemetry::init(format) {
        Ok(guard) => guard,
        Err(error) => return fail(&error, worker::WORKER_REFUSED),
    };
    let code = match worker::run(&options) {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!(plugin = %options.name, "plugin worker: {error}");
            worker::WORKER_REFUSED
        }
    };
    drop(log);
    loader::exit_now(code)
}

#[cfg(not(target_os = "linux"))]
fn plugin_worker(_format: telemetry::LogFormat, _args: WorkerArgs) -> ExitCode {
    eprintln!("error: the process tier runs on Linux only");
    ExitCode::from(2)
}

fn fail(error: &dyn std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("error: {}", report::escape(&error.to_string()));
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
        max_plugin_size: config.max_plugin_size,
    };
    let mut found = match discovery::scan_for_plugins(&config.plugin_dirs, policy) {
        Ok(found) => found,
        Err(error) => return fail(&error, 2),
    };
    discovery::match_entries(&mut found, &config.plugins);
    if json {
        let list: Vec<_> = found.iter().map(discovery::Discovered::to_json).collect();
        print!("{}", report::json(&serde_json::Value::Array(list)));
    } else {
        print!("{}", report::plugin_list(&found, &config.plugin_dirs));
    }
    ExitCode::SUCCESS
}

fn serve(
    path: &std::path::Path,
    listen: Option<SocketAddr>,
    mode: ServeMode,
    watch_files: bool,
) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(error) => return fail(&error, error.exit_code()),
    };
    if !config.require_signatures {
        tracing::warn!(
            "require_signatures is false: plugins are loaded WITHOUT signature checks; use this for local development only"
        );
    }
    // One worker per core, and at least two: an `inline` hook that blocks
    // holds its worker, and another must still answer its 504.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error, 2),
    };
    let options = server::ServeOptions {
        listen,
        mode,
        watch: watch_files,
        // Replacements are probed by this very binary.
        probe_program: backworks_host::lifecycle::this_program().ok(),
    };
    let result = runtime.block_on(server::serve(
        &config,
        options,
        |addr| {
            use std::io::Write;
            println!("backworks listening on http://{addr}");
            let _ = std::io::stdout().flush();
            tracing::info!(%addr, "listening");
        },
        server::shutdown_signal(),
    ));
    // A library whose initialisers never returned holds glibc's loader lock,
    // which `exit` takes, and so does the first use on a thread of a
    // thread-local with a destructor (the log's per-thread buffer): write
    // to stderr directly and leave at once, without `exit` (and the exit
    // watchdog armed by start-up ends the process if this thread waits on
    // the lock before it gets here).
    if let Some(stuck) = loader::load_in_flight() {
        // Lines logged before, unless a thread holds the log's locks.
        backworks_host::log_output::try_flush();
        let error = result.as_ref().err();
        eprint!("{}", server::stuck_load_report(error, &stuck.path));
        loader::exit_now(error.map_or(0, server::ServeError::exit_code));
    }
    // Hung hooks may hold blocking threads forever: do not wait for them.
    runtime.shutdown_background();
    let code = match result {
        Ok(()) => 0,
        Err(error) => {
            // The log's formatter escapes it (`telemetry`).
            tracing::error!("{error}");
            // A marketplace error quotes the registry's answer, a load
            // error the plugin's record.
            eprintln!("error: {}", report::escape(&error.to_string()));
            error.exit_code()
        }
    };
    ExitCode::from(code)
}
