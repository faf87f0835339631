//! `backworks serve`: starts the plugins named in `backworks.yaml` (in
//! order: load or build, `initialize` with the plugin's config, `health_check`)
//! and serves HTTP through the `Pipeline` (`pipeline.rs`).
//!
//! Routes of the host itself: `GET /healthz` (each plugin's health, with
//! the version running now), `GET /plugins` (what is loaded, versions, key
//! ids, sha256), `GET /metrics` (Prometheus text). They reveal how the
//! server is built, so each first passes every plugin's `before_request`
//! (the auth plugin's token check) unless `server.public` lists it; a public
//! `/healthz` is a bare liveness answer. Every other request goes through
//! the plugins. Connections are accepted and bounded (header and idle
//! timeouts, connection cap) by [`http_serve`](crate::http_serve). Plugins
//! can be replaced while serving through the server's [`Swapper`]. Shutdown
//! (SIGTERM, Ctrl-C, or the future given to [`Server::run`]) stops
//! accepting, lets in-flight requests finish (open connections get
//! `shutdown_timeout`, then are closed), then calls each plugin's
//! `shutdown`, bounded by `shutdown_timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use backworks_plugin_sdk::{HttpRequest, HttpResponse, json};
use tokio::runtime::Handle;

use crate::config::{Config, Isolation, PluginConfig, PluginKind};
use crate::lifecycle::{self, LoadFailure};
use crate::loader::{self, DependencyList, LoadError, LoadPolicy};
use crate::marketplace::{MarketplaceError, PluginMarketplace, Resolved, ServeMode};
use crate::metrics::{self, Metrics};
use crate::pipeline::{HookFailure, HostPlugin, Pipeline, PluginImpl, bounded};
use crate::swap::Swapper;
use crate::updater::Updater;
use crate::watch;

/// Largest request body the host reads.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Why the server did not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A plugin could not be loaded (nothing of it ran).
    #[error("plugin `{name}`: {source}")]
    Load {
        /// The plugin's name in `backworks.yaml`.
        name: String,
        /// Why.
        #[source]
        source: LoadError,
    },
    /// A marketplace plugin was not installed (nor given to
    /// [`load_plugins`]).
    #[error(
        "plugin `{name}` (marketplace, version {version}) is not installed; install it with `backworks plugins install {name}@{version}`"
    )]
    NotInstalled {
        /// The plugin's name.
        name: String,
        /// The version requirement.
        version: String,
    },
    /// A marketplace plugin's file is not the one `backworks.lock` pins.
    #[error(
        "plugin `{name}`: refusing {}: its {what} is {actual}, backworks.lock pins {expected}; the cache was altered: run `backworks plugins remove {name}` and install it again"
    , path.display())]
    Pin {
        /// The plugin's name.
        name: String,
        /// The cached file.
        path: std::path::PathBuf,
        /// `sha256` or `signing key`.
        what: &'static str,
        /// What the lock pins.
        expected: String,
        /// What the file is.
        actual: String,
    },
    /// A marketplace plugin could not be installed or found in the cache.
    #[error(transparent)]
    Marketplace(Box<MarketplaceError>),
    /// A `type: builtin` plugin this host does not have.
    #[error("plugin `{0}`: there is no built-in plugin of that name")]
    UnknownBuiltin(String),
    /// Loading (the library's initialisers), `initialize` or the first
    /// `health_check` failed or timed out.
    #[error("plugin `{name}` failed to start: {hook} {what}: {message}")]
    Start {
        /// The plugin's name.
        name: String,
        /// `load`, `initialize` or `health_check`.
        hook: &'static str,
        /// `failed`, `panicked` or `timed out`.
        what: &'static str,
        /// The plugin's message.
        message: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An I/O error before serving (the bound address cannot be read).
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

impl From<MarketplaceError> for ServeError {
    fn from(error: MarketplaceError) -> Self {
        Self::Marketplace(Box::new(error))
    }
}

impl ServeError {
    /// Exit code: 1 when a plugin was refused or failed to start, 2 for
    /// configuration and I/O errors.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Load { .. } | Self::Start { .. } | Self::Pin { .. } => 1,
            Self::Marketplace(error) => error.exit_code(),
            _ => 2,
        }
    }
}

/// Loads (or builds) each plugin of `config`, in order. Nothing is
/// initialized yet. The external libraries, and the cached libraries of the
/// marketplace plugins (`marketplace`, from
/// [`PluginMarketplace::prepare`](crate::marketplace::PluginMarketplace::prepare)),
/// are read and verified on one thread per core (hashing and signature
/// checks are the bulk of start-up); each record must name the plugin of
/// its entry ([`loader::VerifiedFile::check_name`]) and a marketplace
/// library must be the bytes the lock pins. The first failure stops the
/// verifiers, and start-up, before any library is loaded. Then the
/// libraries are loaded one by one in config order, each bounded by
/// `hook_timeout` like a hook (a library whose initialisers hang stops
/// start-up: `load timed out`).
pub fn load_plugins(
    config: &Config,
    marketplace: &[Resolved],
) -> Result<Vec<HostPlugin>, ServeError> {
    let keys: Vec<_> = config.trusted_keys.iter().map(|k| k.key.clone()).collect();
    let policy = LoadPolicy {
        trusted_keys: &keys,
        require_signatures: config.require_signatures,
        max_plugin_size: config.max_plugin_size,
    };
    let resolved = |name: &str| marketplace.iter().find(|r| r.name == name);
    let paths: Vec<&std::path::Path> = config
        .plugins
        .iter()
        .filter_map(|entry| match &entry.kind {
            PluginKind::External { path } => Some(path.as_path()),
            PluginKind::Marketplace { .. } => resolved(&entry.name).map(|r| r.path.as_path()),
            PluginKind::Builtin => None,
        })
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(paths.len());
    let verified = Verified::new(paths.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let checked = std::thread::scope(|scope| {
        // Verifiers take files in config order, so the loader below (this
        // thread) can dlopen each one as soon as it and those before it are
        // verified, while the others are still being hashed.
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if index >= paths.len() || verified.is_cancelled() {
                        break;
                    }
                    let path = paths[index];
                    let result = std::panic::catch_unwind(|| loader::verify_file(path, policy))
                        .unwrap_or_else(|_| {
                            Err(LoadError::Read {
                                path: path.to_path_buf(),
                                source: std::io::Error::other("the verifying thread panicked"),
                            })
                        });
                    verified.put(index, result);
                }
            });
        }
        let mut files = 0;
        let checked: Result<Vec<Checked>, ServeError> = config
            .plugins
            .iter()
            .map(|entry| {
                let pin = resolved(&entry.name);
                let file = match entry.kind {
                    PluginKind::External { .. } => true,
                    PluginKind::Marketplace { .. } => pin.is_some(),
                    PluginKind::Builtin => false,
                }
                .then(|| {
                    files += 1;
                    verified.take(files - 1)
                });
                check_one(entry, file, pin)
            })
            .collect();
        if checked.is_err() {
            // Nothing will be loaded: the verifiers stop early.
            verified.cancel();
        }
        checked
    })?;
    let worker_start = worker_settings(config);
    // Loaded once every verifier thread has ended: a library whose
    // initialisers hang holds glibc's loader lock, which a thread also
    // takes when it sets up its thread-locals or exits, so no thread this
    // function waits for may still be running then.
    config
        .plugins
        .iter()
        .zip(checked)
        .map(|(entry, checked)| load_one(entry, checked, config.hook_timeout, &worker_start))
        .collect()
}

/// How the `process` tier's workers of a server are started (unused
/// elsewhere than on Linux, where that tier is refused at config load).
#[cfg(target_os = "linux")]
type WorkerStart = crate::process::WorkerSettings;
#[cfg(not(target_os = "linux"))]
type WorkerStart = ();

/// The worker settings `config` gives.
#[cfg(target_os = "linux")]
pub(crate) fn worker_settings(config: &Config) -> WorkerStart {
    crate::process::WorkerSettings {
        program: lifecycle::this_program()
            .unwrap_or_else(|_| std::path::PathBuf::from("backworks")),
        limits: config.process,
        hook_timeout: config.hook_timeout,
        max_plugin_size: config.max_plugin_size,
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn worker_settings(_config: &Config) -> WorkerStart {}

/// A verified plugin of the `process` tier: nothing is loaded here; its
/// worker starts with its first lifecycle hook (`initialize`).
#[cfg(target_os = "linux")]
fn in_process(
    entry: &PluginConfig,
    kind: &'static str,
    file: loader::VerifiedFile,
    settings: &WorkerStart,
) -> Result<HostPlugin, ServeError> {
    tracing::info!(
        plugin = %entry.name,
        name = file.metadata().name,
        version = file.metadata().version,
        isolation = %entry.isolation,
        key = file.key_id().map(|k| k.to_string()).unwrap_or_else(|| "none".into()),
        sha256 = file.sha256(),
        "plugin verified; it runs in a worker process"
    );
    Ok(HostPlugin::in_process(
        &entry.name,
        kind,
        Arc::new(entry.config.clone()),
        file,
        settings.clone(),
    ))
}

/// A plugin of the configuration, checked and ready to load.
enum Checked {
    /// A built-in plugin (nothing to load).
    Builtin(HostPlugin),
    /// A library whose bytes, record, signature, name and pin were checked.
    File {
        /// `external` or `marketplace`.
        kind: &'static str,
        /// The verified bytes.
        file: loader::VerifiedFile,
    },
}

type VerifyResult = Result<loader::VerifiedFile, LoadError>;

/// Verification results by index, filled by the verifier threads and taken
/// in order by the loader.
struct Verified {
    /// Each file's result until taken, and whether loading was cancelled.
    slots: std::sync::Mutex<(Vec<Option<VerifyResult>>, bool)>,
    filled: std::sync::Condvar,
}

impl Verified {
    fn new(count: usize) -> Self {
        Self {
            slots: std::sync::Mutex::new(((0..count).map(|_| None).collect(), false)),
            filled: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<Option<VerifyResult>>, bool)> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn put(&self, index: usize, result: Result<loader::VerifiedFile, LoadError>) {
        self.lock().0[index] = Some(result);
        self.filled.notify_all();
    }

    /// Waits for result `index`. Every index is filled exactly once unless
    /// cancelled, and the loader stops taking at the first failure, so the
    /// wait always ends.
    fn take(&self, index: usize) -> Result<loader::VerifiedFile, LoadError> {
        let mut slots = self.lock();
        loop {
            if let Some(result) = slots.0[index].take() {
                return result;
            }
            slots = self
                .filled
                .wait(slots)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn cancel(&self) {
        self.lock().1 = true;
    }

    fn is_cancelled(&self) -> bool {
        self.lock().1
    }
}

/// Everything about `entry` that runs no plugin code: the built-in plugin,
/// or the verified file, its record's name and its lock pin.
fn check_one(
    entry: &PluginConfig,
    verified: Option<Result<loader::VerifiedFile, LoadError>>,
    pin: Option<&Resolved>,
) -> Result<Checked, ServeError> {
    match &entry.kind {
        PluginKind::Builtin => {
            let plugin: Arc<dyn backworks_plugin_sdk::BackworksPlugin> = match entry.name.as_str() {
                "auth" => Arc::new(crate::auth::JwtAuth::default()),
                other => return Err(ServeError::UnknownBuiltin(other.to_owned())),
            };
            Ok(Checked::Builtin(HostPlugin {
                name: entry.name.clone(),
                version: plugin.version().to_owned(),
                implementation: PluginImpl::Builtin(plugin),
                kind: "builtin",
                path: None,
                key_id: None,
                sha256: None,
                dependencies: Default::default(),
                config: Arc::new(entry.config.clone()),
                isolation: entry.isolation,
            }))
        }
        PluginKind::External { .. } | PluginKind::Marketplace { .. } => {
            let (kind, path) = match (&entry.kind, pin) {
                (PluginKind::External { path }, _) => ("external", path),
                (_, Some(resolved)) => ("marketplace", &resolved.path),
                (PluginKind::Marketplace { version, .. }, None) => {
                    return Err(ServeError::NotInstalled {
                        name: entry.name.clone(),
                        version: version.clone(),
                    });
                }
                (PluginKind::Builtin, None) => {
                    return Err(ServeError::UnknownBuiltin(entry.name.clone()));
                }
            };
            let load_error = |source| ServeError::Load {
                name: entry.name.clone(),
                source,
            };
            let file = verified
                .ok_or_else(|| {
                    load_error(LoadError::Read {
                        path: path.clone(),
                        source: std::io::Error::other("the file was not verified"),
                    })
                })?
                .map_err(load_error)?;
            file.check_name(&entry.name).map_err(load_error)?;
            if let Some(resolved) = pin {
                lifecycle::check_pin(&file, &lifecycle::Pin::from(&resolved.pin)).map_err(
                    |mismatch| ServeError::Pin {
                        name: entry.name.clone(),
                        path: path.to_owned(),
                        what: mismatch.what,
                        expected: mismatch.expected,
                        actual: mismatch.actual,
                    },
                )?;
            }
            Ok(Checked::File { kind, file })
        }
    }
}

/// What `backworks serve` writes to standard error when start-up failed
/// with `error` (or ended without one) while the loading of `stuck` never
/// returned: the error, then why the process leaves without running exit handlers.
pub fn stuck_load_report(error: Option<&ServeError>, stuck: &std::path::Path) -> String {
    let error = error
        .map(|error| format!("error: {}\n", crate::report::escape(&error.to_string())))
        .unwrap_or_default();
    format!(
        "{error}warning: the loading of {} never returned (its initialisers hang while glibc's loader holds its process-wide lock); exiting without running exit handlers\n",
        stuck.display()
    )
}

/// Loads a checked plugin ([`lifecycle::load_within`]: on a thread of its
/// own, bounded by `timeout`). A timeout also arms
/// [`loader::exit_unless_ended`]: the process ends within
/// [`loader::EXIT_GRACE`].
fn load_one(
    entry: &PluginConfig,
    checked: Checked,
    timeout: Duration,
    settings: &WorkerStart,
) -> Result<HostPlugin, ServeError> {
    let (kind, file) = match checked {
        Checked::Builtin(plugin) => return Ok(plugin),
        Checked::File { kind, file } => (kind, file),
    };
    let stopped = |what, message: String| ServeError::Start {
        name: entry.name.clone(),
        hook: "load",
        what,
        message,
    };
    #[cfg(target_os = "linux")]
    if entry.isolation == Isolation::Process {
        return in_process(entry, kind, file, settings);
    }
    #[cfg(not(target_os = "linux"))]
    let () = *settings;
    let path = file.path().to_owned();
    let loaded = lifecycle::load_within(file, timeout).map_err(|failure| match failure {
        LoadFailure::Refused(source) => ServeError::Load {
            name: entry.name.clone(),
            source,
        },
        LoadFailure::TimedOut => {
            let error = stopped(
                "timed out",
                format!(
                    "{} was not loaded within {} ms: its initialisers still run inside the dynamic loader, which holds its process-wide lock",
                    path.display(),
                    timeout.as_millis()
                ),
            );
            // The process cannot go on (no library can be loaded any more)
            // and its way out may wait on the loader's lock: it ends within
            // the grace whatever it waits on.
            loader::exit_unless_ended(
                error.exit_code(),
                stuck_load_report(Some(&error), &path),
                loader::EXIT_GRACE,
            );
            error
        }
        failure @ (LoadFailure::Panicked | LoadFailure::NoThread(_)) => {
            stopped("failed", failure.to_string())
        }
    })?;
    tracing::info!(
        plugin = %entry.name,
        name = loaded.metadata().name,
        version = loaded.metadata().version,
        abi = %loaded.raw.abi_revision(),
        isolation = %entry.isolation,
        key = loaded.key_id.map(|k| k.to_string()).unwrap_or_else(|| "none".into()),
        sha256 = loaded.sha256,
        "plugin verified and loaded"
    );
    if let Some(declared) = &loaded.metadata().capabilities {
        tracing::info!(
            plugin = %entry.name,
            capabilities = %declared,
            "the plugin declares its capabilities; only `isolation: process` holds a plugin to them"
        );
    }
    Ok(HostPlugin::from_loaded(
        &entry.name,
        kind,
        Arc::new(entry.config.clone()),
        entry.isolation,
        loaded,
    ))
}

/// Runs the [`START_HOOKS`](lifecycle::START_HOOKS) of each plugin, in
/// order, with the configuration each plugin carries; the first failure
/// stops start-up, naming the plugin. Each hook is bounded by `timeout`.
///
/// All the calls run on one blocking thread, which reports each hook's start
/// and end; the deadline is re-armed at every report, so it bounds each hook
/// while costing one thread hand-off for the whole start-up rather than two
/// per plugin.
pub async fn start_plugins(plugins: &[HostPlugin], timeout: Duration) -> Result<(), ServeError> {
    use backworks_plugin_sdk::abi::Hook;

    enum Step {
        Started(usize, Hook),
        Finished(usize, Hook, Result<(), HookFailure>),
    }
    let (steps, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let work: Vec<HostPlugin> = plugins.to_vec();
    let handle = Handle::current();
    // Detached: a hook that hangs keeps its thread, and start-up fails on
    // the deadline below without waiting for it.
    drop(tokio::task::spawn_blocking(move || {
        for (index, plugin) in work.iter().enumerate() {
            for hook in lifecycle::START_HOOKS {
                if steps.send(Step::Started(index, hook)).is_err() {
                    return;
                }
                let result = plugin.start_hook(&handle, hook);
                let failed = result.is_err();
                if steps.send(Step::Finished(index, hook, result)).is_err() || failed {
                    return;
                }
            }
        }
    }));
    // The hook that started last: the one a deadline or a lost thread is
    // blamed on.
    let mut current: (usize, Hook) = (0, lifecycle::START_HOOKS[0]);
    let stopped = |(index, hook): (usize, Hook), what, message| ServeError::Start {
        name: plugins[index].name.clone(),
        hook: hook.name(),
        what,
        message,
    };
    let last = lifecycle::START_HOOKS[lifecycle::START_HOOKS.len() - 1];
    let mut ready = 0;
    while ready < plugins.len() {
        let step = match tokio::time::timeout(timeout, reports.recv()).await {
            Ok(Some(step)) => step,
            Ok(None) => {
                return Err(stopped(
                    current,
                    "failed",
                    "the start-up thread stopped (a host bug: see the log)".to_owned(),
                ));
            }
            Err(_) => {
                return Err(stopped(
                    current,
                    "timed out",
                    format!("no answer within {} ms", timeout.as_millis()),
                ));
            }
        };
        match step {
            Step::Started(index, hook) => current = (index, hook),
            Step::Finished(index, hook, Err(failure)) => {
                let what = match failure {
                    HookFailure::Error(_) => "failed",
                    HookFailure::Panic(_) => "panicked",
                    HookFailure::Crashed(_) => "crashed",
                    HookFailure::Unavailable(_) => "was unavailable",
                };
                return Err(stopped((index, hook), what, failure.message().to_owned()));
            }
            Step::Finished(index, hook, Ok(())) => {
                if hook == last {
                    let plugin = &plugins[index];
                    tracing::info!(plugin = %plugin.name, kind = plugin.kind, version = plugin.version, "plugin ready");
                    ready += 1;
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct AppState {
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    /// `server.public`: host endpoints served without `before_request`.
    public: Arc<[String]>,
}

/// The host's own endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostEndpoint {
    Healthz,
    Plugins,
    Metrics,
}

impl HostEndpoint {
    fn path(self) -> &'static str {
        match self {
            Self::Healthz => "/healthz",
            Self::Plugins => "/plugins",
            Self::Metrics => "/metrics",
        }
    }
}

/// A server bound to its address with its plugins started, not serving
/// yet. Its [`Swapper`] replaces plugins while it runs (the `--watch`
/// watcher and the automatic updater use it).
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    pipeline: Arc<Pipeline>,
    swapper: Arc<Swapper>,
    metrics: Arc<Metrics>,
    shutdown_timeout: Duration,
    limits: crate::http_serve::ConnectionLimits,
    public: Arc<[String]>,
    watch: Option<Duration>,
    updater: Option<Updater>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free one) and sets up the pipeline over
    /// `plugins` (already started with [`start_plugins`]).
    pub async fn bind(
        config: &Config,
        addr: SocketAddr,
        plugins: Vec<HostPlugin>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServeError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let pipeline = Arc::new(Pipeline::new(
            plugins,
            config.hook_timeout,
            config.watchdog,
            Arc::clone(&metrics),
            Handle::current(),
        )?);
        let swapper = Arc::new(Swapper::new(
            config,
            Arc::clone(&pipeline),
            Arc::clone(&metrics),
        ));
        Ok(Self {
            listener,
            pipeline,
            swapper,
            metrics,
            shutdown_timeout: config.shutdown_timeout,
            limits: config.limits,
            public: config.public.clone().into(),
            watch: None,
            updater: None,
        })
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Replaces the running plugins (see [`Swapper::replace`]).
    pub fn swapper(&self) -> &Arc<Swapper> {
        &self.swapper
    }

    /// While serving, watch each `type: external` plugin's library and
    /// signature files, polling every `interval`, and swap in a rebuilt
    /// library (see `watch.rs`).
    #[must_use]
    pub fn watch_files(mut self, interval: Duration) -> Self {
        self.watch = Some(interval);
        self
    }

    /// While serving, keep the marketplace plugins up to date with
    /// `updater` (see `updater.rs`).
    pub fn update_plugins(mut self, updater: Updater) -> Self {
        self.updater = Some(updater);
        self
    }

    /// Serves until `shutdown` completes; then stops accepting and lets
    /// in-flight requests finish (connections still open after
    /// `shutdown_timeout` are closed); then waits for a swap in progress
    /// and for replaced plugins to drain, and calls every plugin's
    /// `shutdown`, all within `shutdown_timeout` again.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let state = AppState {
            pipeline: Arc::clone(&self.pipeline),
            metrics: self.metrics,
            public: self.public,
        };
        let endpoint = |which: HostEndpoint| {
            get(move |State(state): State<AppState>, request: Request| {
                host_endpoint(state, which, request)
            })
        };
        let app = Router::new()
            .route("/healthz", endpoint(HostEndpoint::Healthz))
            .route("/plugins", endpoint(HostEndpoint::Plugins))
            .route("/metrics", endpoint(HostEndpoint::Metrics))
            .fallback(through_plugins)
            .with_state(state);
        let watcher = self
            .watch
            .map(|interval| tokio::spawn(crate::watch::watch(Arc::clone(&self.swapper), interval)));
        let updater = self.updater.map(|updater| tokio::spawn(updater.run()));
        // Open connections get the shutdown timeout to finish; the plugins
        // get it again for their `shutdown`.
        let settings = crate::http_serve::ServeSettings {
            limits: self.limits,
            nodelay: false,
            drain: self.shutdown_timeout,
        };
        crate::http_serve::serve(self.listener, app, settings, shutdown).await;
        for task in [watcher, updater].into_iter().flatten() {
            task.abort();
        }
        tracing::info!("stopped accepting requests; shutting plugins down");
        let deadline = Instant::now() + self.shutdown_timeout;
        self.swapper.close(deadline).await;
        let plugins: Vec<HostPlugin> = self.pipeline.snapshot().plugins().cloned().collect();
        stop_plugins(&plugins, deadline).await;
        Ok(())
    }
}

/// Calls each plugin's `shutdown`, all before `deadline`.
async fn stop_plugins(plugins: &[HostPlugin], deadline: Instant) {
    for plugin in plugins {
        let (p, handle) = (plugin.clone(), Handle::current());
        let left = deadline.saturating_duration_since(Instant::now());
        match bounded(left, move || p.shutdown(&handle)).await {
            Ok(()) => tracing::info!(plugin = %plugin.name, "plugin shut down"),
            Err((what, message)) => {
                tracing::warn!(plugin = %plugin.name, "shutdown {what}: {message}");
            }
        }
    }
}

/// How `backworks serve` runs: [`serve`]'s options beside the config.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Listen here instead of the configured address.
    pub listen: Option<SocketAddr>,
    /// `--locked` / `--offline`.
    pub mode: ServeMode,
    /// `--watch`: swap in rebuilt `external` plugins (polled every
    /// `watch::POLL_INTERVAL`).
    pub watch: bool,
    /// The `backworks` binary that probes each replacement before it is
    /// loaded ([`Swapper::probe_replacements_with`]); `None` loads them
    /// unprobed.
    pub probe_program: Option<std::path::PathBuf>,
}

/// `backworks serve`, start to end: installs or finds the `type:
/// marketplace` plugins (as `options.mode` allows), verifies, loads and
/// starts every plugin, binds, calls `on_listening` with the bound address,
/// runs the `--watch` poller and the automatic updater when enabled, and
/// serves until `shutdown` resolves.
pub async fn serve(
    config: &Config,
    options: ServeOptions,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let needs_marketplace = config
        .plugins
        .iter()
        .any(|p| matches!(p.kind, PluginKind::Marketplace { .. }));
    let resolved = if needs_marketplace {
        PluginMarketplace::from_config(config)?
            .prepare(&config.plugins, options.mode)
            .await?
    } else {
        Vec::new()
    };
    // On this thread, which is not an async worker (`backworks serve` runs
    // `serve` in `block_on` on the main thread; nothing else runs before
    // the server listens): each `dlopen` runs on a thread of its own and is
    // bounded (`lifecycle::load_within`). Not in `spawn_blocking`: a
    // constructor that hangs there left start-up waiting on the pool
    // thread (seen under load), while here the timeout always returns.
    let plugins = load_plugins(config, &resolved)?;
    start_plugins(&plugins, config.hook_timeout).await?;
    let metrics = Arc::new(Metrics::new());
    let mut server = Server::bind(
        config,
        options.listen.unwrap_or(config.listen),
        plugins,
        metrics,
    )
    .await?;
    if let Some(program) = options.probe_program {
        server.swapper().probe_replacements_with(program);
    }
    if options.watch {
        server = server.watch_files(watch::POLL_INTERVAL);
    }
    if let Some(updater) = Updater::for_serve(config, options.mode, server.swapper())? {
        server = server.update_plugins(updater);
    }
    on_listening(server.local_addr()?);
    server.run(shutdown).await
}

/// Resolves when SIGTERM or Ctrl-C arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// One of the host's endpoints. Unless `server.public` lists it, the
/// request first passes every plugin's `before_request` (so the auth
/// plugin's token check): a plugin that answers (a 401) or fails answers
/// for the endpoint. A public `/healthz` is a liveness probe: it says the
/// server is up, and neither runs the plugins' health checks nor shows
/// versions, hashes or keys.
async fn host_endpoint(state: AppState, which: HostEndpoint, request: Request) -> Response {
    let public = state.public.iter().any(|path| path == which.path());
    if !public {
        let request = match to_plugin_request(request, true).await {
            Ok(request) => request,
            Err(response) => return to_response(response),
        };
        if let Err(refused) = state.pipeline.admit(request).await {
            return to_response(refused);
        }
    }
    match which {
        HostEndpoint::Healthz if public => {
            to_response(HttpResponse::json(200, &json!({"status": "ok"})))
        }
        HostEndpoint::Healthz => healthz(&state).await,
        HostEndpoint::Plugins => list_plugins(&state),
        HostEndpoint::Metrics => render_metrics(&state),
    }
}

async fn healthz(state: &AppState) -> Response {
    let timeout = state.pipeline.hook_timeout();
    let mut report = serde_json::Map::new();
    let mut healthy = true;
    // One snapshot: each entry's version is the one health-checked.
    let snapshot = state.pipeline.snapshot();
    for (index, plugin) in snapshot.plugins().enumerate() {
        let (p, handle) = (plugin.clone(), Handle::current());
        let mut entry = match bounded(timeout, move || p.health_check(&handle)).await {
            Ok(()) => json!({"healthy": true}),
            Err((what, message)) => {
                healthy = false;
                json!({"healthy": false, "error": format!("health_check {what}: {message}")})
            }
        };
        entry["version"] = json!(plugin.version);
        entry["sha256"] = json!(plugin.sha256);
        entry["key_id"] = json!(plugin.key_id);
        entry["isolation"] = json!(state.pipeline.isolation(index).as_str());
        if let Some(blocked) = state.pipeline.blocked(index) {
            entry["watchdog"] = watchdog_json(&blocked);
        }
        report.insert(plugin.name.clone(), entry);
    }
    let status = if healthy { 200 } else { 503 };
    to_response(HttpResponse::json(
        status,
        &json!({"status": if healthy { "ok" } else { "unhealthy" }, "plugins": report}),
    ))
}

/// What the watchdog reported about an `inline` plugin, as `/healthz` and
/// `/plugins` show it.
fn watchdog_json(blocked: &crate::watchdog::Blocked) -> serde_json::Value {
    json!({
        "blocked": blocked.times,
        "last_hook": blocked.hook,
        "last_busy_ms": u64::try_from(blocked.busy.as_millis()).unwrap_or(u64::MAX),
        "moved_to_thread": blocked.moved,
    })
}

fn list_plugins(state: &AppState) -> Response {
    let plugins: Vec<_> = state
        .pipeline
        .snapshot()
        .plugins()
        .enumerate()
        .map(|(index, p)| {
            let mut entry = json!({
                "name": p.name,
                "kind": p.kind,
                "version": p.version,
                "path": p.path,
                "key_id": p.key_id,
                "sha256": p.sha256,
                "isolation": state.pipeline.isolation(index).as_str(),
                "configured_isolation": p.isolation.as_str(),
                "capabilities": p.capabilities(),
            });
            match p.dependencies.as_ref() {
                DependencyList::Absent => entry["dependencies"] = json!(null),
                DependencyList::Listed(list) => entry["dependencies"] = json!(list),
                DependencyList::Unreadable(error) => {
                    entry["dependencies_error"] = json!(error);
                }
            }
            if let Some(blocked) = state.pipeline.blocked(index) {
                entry["watchdog"] = watchdog_json(&blocked);
            }
            if p.isolation == Isolation::Process {
                entry["worker"] = json!({
                    "pid": p.worker_pid(),
                    "failed": p.failed(),
                    "sandbox": p.confinement(),
                });
            }
            entry
        })
        .collect();
    to_response(HttpResponse::json(200, &json!({"plugins": plugins})))
}

fn render_metrics(state: &AppState) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

async fn through_plugins(State(state): State<AppState>, request: Request) -> Response {
    use tracing::Instrument;

    let started = Instant::now();
    let method = request.method().clone();
    let request_id = request_id();
    let span = tracing::info_span!("request", id = %request_id, method = %method, path = %request.uri().path());
    let response = async {
        // The snapshot the request runs through: its plugins decide whether
        // the headers are worth converting.
        let snapshot = state.pipeline.snapshot();
        let response = match to_plugin_request(request, snapshot.reads_whole_requests()).await {
            Ok(request) => state.pipeline.handle_in(snapshot, request).await,
            Err(response) => response,
        };
        state
            .metrics
            .observe_request(method.as_str(), response.status, started.elapsed());
        tracing::info!(
            status = response.status,
            duration_us = started.elapsed().as_micros() as u64,
            "request served"
        );
        response
    }
    .instrument(span)
    .await;
    let mut response = to_response(response);
    if let Ok(value) = HeaderValue::try_from(request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// A request id unique in this host's lifetime: the process id in hex, a
/// dash, and a counter (`1f2e-42`).
fn request_id() -> String {
    use std::fmt::Write as _;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    // The process id does not change: asked once, not per request.
    static PREFIX: OnceLock<String> = OnceLock::new();
    let prefix = PREFIX.get_or_init(|| format!("{:x}-", std::process::id()));
    let mut id = String::with_capacity(prefix.len() + 20);
    id.push_str(prefix);
    // Writing into a `String` cannot fail.
    let _ = write!(id, "{}", NEXT.fetch_add(1, Ordering::Relaxed));
    id
}

/// The plugins' view of an HTTP request, its headers left out unless
/// `with_headers` (only `before_request` and `after_response` see them); a
/// 400/413 response when the body is not UTF-8 or too large.
async fn to_plugin_request(
    request: Request,
    with_headers: bool,
) -> Result<HttpRequest, HttpResponse> {
    let (parts, body) = request.into_parts();
    let mut headers = std::collections::BTreeMap::new();
    if with_headers {
        for (name, value) in &parts.headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            headers
                .entry(name.as_str().to_owned())
                .and_modify(|joined: &mut String| {
                    joined.push_str(", ");
                    joined.push_str(&value);
                })
                .or_insert(value);
        }
    }
    let bytes = to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        HttpResponse::json(
            413,
            &json!({"error": format!("request body larger than {MAX_BODY_BYTES} bytes")}),
        )
    })?;
    let body = if bytes.is_empty() {
        None
    } else {
        Some(String::from_utf8(bytes.to_vec()).map_err(|_| {
            HttpResponse::json(400, &json!({"error": "the request body is not UTF-8 text"}))
        })?)
    };
    Ok(HttpRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers,
        body,
    })
}

fn to_response(response: HttpResponse) -> Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = Response::new(Body::from(response.body));
    *out.status_mut() = status;
    for (name, value) in response.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            out.headers_mut().insert(name, value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        axum::http::Request::builder()
            .method("POST")
            .uri("/echo?x=1")
            .header("authorization", "Bearer t")
            .header("accept", "a")
            .header("accept", "b")
            .body(Body::from("hello"))
            .unwrap()
    }

    #[tokio::test]
    async fn a_plugin_request_carries_headers_only_when_a_plugin_reads_them() {
        let whole = to_plugin_request(request(), true).await.unwrap();
        assert_eq!(whole.headers["authorization"], "Bearer t");
        assert_eq!(whole.headers["accept"], "a, b");
        let lean = to_plugin_request(request(), false).await.unwrap();
        assert!(lean.headers.is_empty(), "{:?}", lean.headers);
        for converted in [whole, lean] {
            assert_eq!(converted.method, "POST");
            assert_eq!(converted.path, "/echo");
            assert_eq!(converted.query.as_deref(), Some("x=1"));
            assert_eq!(converted.body.as_deref(), Some("hello"));
        }
    }
}
