//! Hot swapping: replaces a running plugin's implementation while the
//! server serves. Used by `serve --watch` (see `watch`) and by the
//! automatic updater.
//!
//! A replacement goes through the steps of a plugin at start-up, and only
//! through them ([`Swapper::replace`]):
//!
//! The steps are the plugin lifecycle of `lifecycle`, shared with
//! start-up:
//!
//! 1. **verify, then load**: `loader::verify_file` (record, ABI and the
//!    signature under the configured policy, over bytes read once), then
//!    `loader::PendingLoad::load` (those bytes, from a sealed memfd). The new
//!    record must name the entry's plugin, as at start-up
//!    (`loader::VerifiedFile::check_name`); bytes equal to the running ones
//!    are not loaded again;
//! 2. **start**: `initialize` with the entry's `config`, then
//!    `health_check`, each on its own blocking thread under `hook_timeout`.
//!    An error, a panic (caught at the ABI) or a hang (the thread is left
//!    behind) of the new plugin touches neither the running one nor the
//!    server;
//! 3. **route**: one atomic store of a new snapshot of the plugin list
//!    (`Pipeline::route`). Requests that started before it finish on the
//!    old implementation, every request starting after it uses the new one,
//!    and no request sees a mix (each runs through one snapshot);
//! 4. **retire**: once no snapshot lists the old implementation any more
//!    (the requests, health checks and listings using it have finished),
//!    its `shutdown` is called, bounded by `shutdown_timeout`. Its library
//!    stays mapped: libraries are never unloaded (see `loader`).
//!
//! A library's initialisers run inside `dlopen`, under glibc's process-wide
//! loader lock, and cannot be interrupted; a crash in them is a crash of the
//! process. So a replacement is loaded first in a probe process
//! (`lifecycle::probe_within`: the `backworks` binary re-executed, given the
//! verified bytes, killed after `hook_timeout`): a replacement whose
//! initialisers hang, crash or call `exit` there is refused (`load timed
//! out`, `load failed: its initialisers ended a probe process (signal 6)`)
//! and the server never loads it. Only initialisers that hang in the server
//! although they returned in the probe can still leave a loading stuck
//! there; later swaps, of any plugin, are then refused at once
//! (`SwapError::LoaderStuck`, checked before anything else) rather than
//! queued behind it, and `backworks serve` leaves through `_exit` (`exit`
//! would wait for the lock).
//!
//! Swaps of one plugin are serialised (the second waits for the first);
//! a swap runs to its end on its own task even when the caller stops
//! waiting. Every refusal is logged (warn) with the plugin, the running
//! version and the new one, and counted in `backworks_plugin_swaps_total`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backworks_artifact::signature::PublicKey;
use backworks_plugin_sdk::Value;
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::config::{Config, PluginKind};
use crate::lifecycle::{self, LoadFailure, ProbeFailure, START_HOOKS};
use crate::loader::{self, LoadError, LoadPolicy};
use crate::metrics::{Metrics, SwapOutcome};
use crate::pipeline::{HostPlugin, Pipeline, bounded};

/// One implementation of a plugin, as `GET /plugins` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    /// The version the plugin reports.
    pub version: String,
    /// sha256 of the loaded bytes (lower-case hex); `None` for a built-in.
    pub sha256: Option<String>,
    /// The id of the key that signed it; `None` when unsigned or built in.
    pub key_id: Option<String>,
    /// The library it was loaded from.
    pub path: Option<PathBuf>,
}

impl Release {
    fn of(plugin: &HostPlugin) -> Self {
        Self {
            version: plugin.version.clone(),
            sha256: plugin.sha256.clone(),
            key_id: plugin.key_id.clone(),
            path: plugin.path.clone(),
        }
    }
}

/// The exact bytes and signing key a replacement must have
/// ([`Swapper::replace_pinned`]).
pub use crate::lifecycle::Pin;

/// A successful swap: every request started since uses `new`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replaced {
    /// The plugin's name in `backworks.yaml`.
    pub plugin: String,
    /// What served before (shut down once its last request finishes).
    pub old: Release,
    /// What serves now.
    pub new: Release,
}

/// Why a plugin was not replaced. In every case the running implementation
/// keeps serving, untouched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwapError {
    /// No plugin of that name is configured.
    #[error(
        "no plugin named `{name}` is configured; only the plugins of backworks.yaml can be replaced"
    )]
    UnknownPlugin {
        /// The name asked for.
        name: String,
    },
    /// Built-in plugins are part of the host.
    #[error(
        "plugin `{name}` is built into the host and cannot be replaced by a library; upgrade the host instead"
    )]
    Builtin {
        /// The plugin's name.
        name: String,
    },
    /// The server is shutting down.
    #[error("plugin `{name}` was not replaced: the server is shutting down")]
    Closed {
        /// The plugin's name.
        name: String,
    },
    /// The file failed verification or loading (nothing of it ran, unless
    /// the dynamic loader itself failed).
    #[error("plugin `{name}`: {source}; version {running} keeps serving")]
    Refused {
        /// The plugin's name.
        name: String,
        /// The version still serving.
        running: String,
        /// Why.
        #[source]
        source: Box<LoadError>,
    },
    /// The file's bytes or signing key are not the ones the caller pinned
    /// ([`Swapper::replace_pinned`]).
    #[error(
        "refusing {} as plugin `{name}`: it is sha256 {} signed by key {}, but sha256 {} signed by key {} is pinned; install the pinned version again (version {running} keeps serving)",
        path.display(), offered.sha256, offered.key_id, pinned.sha256, pinned.key_id
    )]
    NotPinned {
        /// The plugin's name in `backworks.yaml`.
        name: String,
        /// The file offered.
        path: PathBuf,
        /// Its sha256 and signing key (`none` when unsigned).
        offered: Box<Pin>,
        /// What was pinned.
        pinned: Box<Pin>,
        /// The version still serving.
        running: String,
    },
    /// The file holds the bytes already running.
    #[error(
        "{} holds the bytes plugin `{name}` already runs (sha256 {sha256}); nothing to replace",
        path.display()
    )]
    Unchanged {
        /// The plugin's name.
        name: String,
        /// The file offered.
        path: PathBuf,
        /// sha256 of its bytes.
        sha256: String,
    },
    /// The new implementation was loaded but failed to start: loading,
    /// `initialize` or `health_check` failed, panicked or timed out.
    #[error(
        "version {version} of plugin `{name}` failed to start: {hook} {reason}; version {running} keeps serving"
    )]
    Start {
        /// The plugin's name.
        name: String,
        /// The new version.
        version: String,
        /// `load`, `initialize` or `health_check`.
        hook: &'static str,
        /// `failed`, `panicked` or `timed out`, a colon and the plugin's (or
        /// the loader's) message.
        reason: String,
        /// The version still serving.
        running: String,
    },
    /// An earlier loading of a library (of any plugin) never returned: its
    /// initialisers hang inside the dynamic loader, which holds a
    /// process-wide lock, so no library can be loaded until they return
    /// (`loader::load_in_flight`). Refused at once, before verifying.
    #[error(
        "plugin `{name}`: not loading {}: the loading of {} started {} ms ago and has not returned (its initialisers hang while the dynamic loader holds its process-wide lock), so no library can be loaded by this process; restart the server (version {running} keeps serving)",
        path.display(), stuck.display(), elapsed_ms
    )]
    LoaderStuck {
        /// The plugin's name.
        name: String,
        /// The file offered.
        path: PathBuf,
        /// The library whose loading hangs.
        stuck: PathBuf,
        /// How long it has been loading.
        elapsed_ms: u128,
        /// The version still serving.
        running: String,
    },
    /// The swap's task stopped unexpectedly.
    #[error("the swap of plugin `{name}` stopped: {detail} (a host bug: see the log)")]
    Interrupted {
        /// The plugin's name.
        name: String,
        /// What the runtime said.
        detail: String,
    },
}

/// A configured plugin, as far as swapping it is concerned.
struct Entry {
    name: String,
    /// The entry's `config`, given to every implementation's `initialize`.
    config: Arc<Value>,
    /// The library of a `type: external` entry (what `--watch` watches).
    file: Option<PathBuf>,
    /// Held through a whole swap of this plugin.
    serial: tokio::sync::Mutex<()>,
}

/// Debug leaves `config` out: its values may be secrets.
impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Replaces the plugins of a running `Pipeline` (see the module docs).
/// Share it in an `Arc`; `server::Server::swapper` hands it out.
#[derive(Debug)]
pub struct Swapper {
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    entries: Vec<Entry>,
    trusted_keys: Arc<[PublicKey]>,
    require_signatures: bool,
    max_plugin_size: u64,
    hook_timeout: Duration,
    shutdown_timeout: Duration,
    /// Set by [`Swapper::close`]: no swap starts after it.
    closed: AtomicBool,
    /// Replaced implementations waiting for their last request, then shut
    /// down.
    retiring: Mutex<JoinSet<()>>,
    /// The `backworks` binary that probes a replacement before this process
    /// loads it ([`Swapper::probe_replacements_with`]).
    probe_program: std::sync::OnceLock<PathBuf>,
    /// How replacements of `process` plugins start their workers.
    #[cfg(target_os = "linux")]
    workers: crate::process::WorkerSettings,
}

/// The errors of one swap of plugin `name` while `running` serves.
struct Refusal<'a> {
    name: &'a str,
    running: &'a HostPlugin,
}

impl Refusal<'_> {
    fn interrupted(&self, join: tokio::task::JoinError) -> SwapError {
        SwapError::Interrupted {
            name: self.name.to_owned(),
            detail: join.to_string(),
        }
    }

    fn refused(&self, source: LoadError) -> SwapError {
        SwapError::Refused {
            name: self.name.to_owned(),
            running: self.running.version.clone(),
            source: Box::new(source),
        }
    }

    fn start(&self, version: &str, hook: &'static str, what: &str, message: String) -> SwapError {
        SwapError::Start {
            name: self.name.to_owned(),
            version: version.to_owned(),
            hook,
            reason: format!("{what}: {message}"),
            running: self.running.version.clone(),
        }
    }
}

impl Swapper {
    /// A swapper for `pipeline`, whose plugins are `config`'s, with its
    /// signature policy, `hook_timeout` and `shutdown_timeout`.
    pub fn new(config: &Config, pipeline: Arc<Pipeline>, metrics: Arc<Metrics>) -> Self {
        let entries = config
            .plugins
            .iter()
            .map(|entry| Entry {
                name: entry.name.clone(),
                config: Arc::new(entry.config.clone()),
                file: match &entry.kind {
                    PluginKind::External { path } => Some(path.clone()),
                    _ => None,
                },
                serial: tokio::sync::Mutex::new(()),
            })
            .collect();
        Self {
            pipeline,
            metrics,
            entries,
            trusted_keys: config.trusted_keys.iter().map(|k| k.key.clone()).collect(),
            require_signatures: config.require_signatures,
            max_plugin_size: config.max_plugin_size,
            hook_timeout: config.hook_timeout,
            shutdown_timeout: config.shutdown_timeout,
            closed: AtomicBool::new(false),
            retiring: Mutex::new(JoinSet::new()),
            probe_program: std::sync::OnceLock::new(),
            #[cfg(target_os = "linux")]
            workers: crate::server::worker_settings(config),
        }
    }

    /// Loads every replacement first in a probe process, `program
    /// probe-load` (`program` must be the `backworks` binary; see
    /// `lifecycle::probe_within`), before this process loads it. `backworks
    /// serve` sets it to itself; a program that embeds the server without
    /// calling this loads replacements unprobed. The first call wins.
    pub fn probe_replacements_with(&self, program: PathBuf) {
        let _ = self.probe_program.set(program);
    }

    /// What serves plugin `name` now; `None` when no plugin has that name.
    pub fn current(&self, name: &str) -> Option<Release> {
        self.pipeline.snapshot().plugin(name).map(Release::of)
    }

    /// The `type: external` plugins with their library files, in config
    /// order: what `serve --watch` watches.
    pub fn watched_files(&self) -> Vec<(String, PathBuf)> {
        self.entries
            .iter()
            .filter_map(|entry| Some((entry.name.clone(), entry.file.clone()?)))
            .collect()
    }

    /// Replaces plugin `name` (its name in `backworks.yaml`) by the library
    /// at `path` (signature at `<path>.minisig`): verifies and loads it,
    /// initializes it with the entry's `config`, health-checks it, routes
    /// every request starting from now on to it, and retires the old
    /// implementation once its last request has finished (module docs).
    ///
    /// On any error the running implementation keeps serving, untouched,
    /// and the reason is logged. Swaps of one plugin are serialised. The
    /// swap runs on its own task: dropping the returned future does not stop
    /// it half-way.
    pub async fn replace(self: &Arc<Self>, name: &str, path: &Path) -> Result<Replaced, SwapError> {
        self.replace_checked(name, path, None).await
    }

    /// [`replace`](Self::replace), refusing (before anything of it is
    /// loaded) a file whose verified bytes are not `pin`'s: the automatic
    /// updater swaps in exactly what it downloaded or what the lock pins.
    pub async fn replace_pinned(
        self: &Arc<Self>,
        name: &str,
        path: &Path,
        pin: Pin,
    ) -> Result<Replaced, SwapError> {
        self.replace_checked(name, path, Some(pin)).await
    }

    async fn replace_checked(
        self: &Arc<Self>,
        name: &str,
        path: &Path,
        pin: Option<Pin>,
    ) -> Result<Replaced, SwapError> {
        let this = Arc::clone(self);
        let (owned_name, owned_path) = (name.to_owned(), path.to_owned());
        tokio::spawn(async move { this.swap(&owned_name, &owned_path, pin.as_ref()).await })
            .await
            .unwrap_or_else(|join| {
                tracing::error!(plugin = name, error = %join, "the swap's task failed");
                Err(SwapError::Interrupted {
                    name: name.to_owned(),
                    detail: join.to_string(),
                })
            })
    }

    /// Stops swapping, for the server's shutdown: later swaps are refused
    /// ([`SwapError::Closed`]); waits, until `deadline` at most, for a swap
    /// in progress and for the replaced implementations to drain and shut
    /// down.
    pub async fn close(&self, deadline: Instant) {
        self.closed.store(true, Ordering::SeqCst);
        let finish = async {
            for entry in &self.entries {
                drop(entry.serial.lock().await);
            }
            let mut retiring = std::mem::take(&mut *self.lock_retiring());
            while retiring.join_next().await.is_some() {}
        };
        if tokio::time::timeout_at(deadline.into(), finish)
            .await
            .is_err()
        {
            tracing::warn!(
                "a plugin swap, or a replaced plugin's last request, did not finish within shutdown_timeout; its shutdown is skipped"
            );
        }
    }

    fn lock_retiring(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.retiring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The whole swap, serialised per plugin; logs and counts its outcome.
    async fn swap(
        &self,
        name: &str,
        path: &Path,
        pin: Option<&Pin>,
    ) -> Result<Replaced, SwapError> {
        let Some(entry) = self.entries.iter().find(|entry| entry.name == name) else {
            let error = SwapError::UnknownPlugin {
                name: name.to_owned(),
            };
            tracing::warn!(plugin = name, path = %path.display(), error = %error, "replacement refused");
            return Err(error);
        };
        let _serial = entry.serial.lock().await;
        if self.closed.load(Ordering::SeqCst) {
            return Err(SwapError::Closed {
                name: name.to_owned(),
            });
        }
        // A clone of the plugin, not of the snapshot: holding a snapshot
        // would keep the old implementation from retiring.
        let Some(running) = self.pipeline.snapshot().plugin(name).cloned() else {
            return Err(SwapError::UnknownPlugin {
                name: name.to_owned(),
            });
        };
        let mut new_version = None;
        let result = self
            .try_swap(entry, &running, path, pin, &mut new_version)
            .await;
        match &result {
            Ok(replaced) => {
                self.metrics.observe_swap(name, SwapOutcome::Replaced);
                tracing::info!(
                    plugin = name,
                    old_version = replaced.old.version,
                    new_version = replaced.new.version,
                    sha256 = replaced.new.sha256.as_deref().unwrap_or("none"),
                    key = replaced.new.key_id.as_deref().unwrap_or("none"),
                    path = %path.display(),
                    "plugin replaced; requests starting now use the new version"
                );
            }
            Err(error @ SwapError::Unchanged { .. }) => {
                self.metrics.observe_swap(name, SwapOutcome::Unchanged);
                tracing::debug!(plugin = name, version = running.version, "{error}");
            }
            Err(error) => {
                self.metrics.observe_swap(name, SwapOutcome::Refused);
                tracing::warn!(
                    plugin = name,
                    old_version = running.version,
                    new_version = new_version.as_deref().unwrap_or("unknown"),
                    path = %path.display(),
                    error = %error,
                    "replacement refused; the running version keeps serving"
                );
            }
        }
        result
    }

    /// Steps 1 to 4 of the module docs; `new_version` is filled in as soon
    /// as it is known, for the log.
    async fn try_swap(
        &self,
        entry: &Entry,
        running: &HostPlugin,
        path: &Path,
        pin: Option<&Pin>,
        new_version: &mut Option<String>,
    ) -> Result<Replaced, SwapError> {
        let name = entry.name.as_str();
        if running.record_name().is_none() {
            return Err(SwapError::Builtin {
                name: name.to_owned(),
            });
        }
        let fail = Refusal { name, running };

        // A loading that outlived its deadline holds the dynamic loader's
        // process-wide lock: this one would only queue behind it (and leave
        // one more thread stuck). Refuse at once instead, before anything
        // else: even the verification's blocking thread may hang, when it
        // is a new thread (its first thread-local with a destructor takes
        // the same lock in glibc), and with it the watcher.
        if let Some(stuck) = loader::load_in_flight()
            && stuck.elapsed >= self.hook_timeout
        {
            return Err(SwapError::LoaderStuck {
                name: name.to_owned(),
                path: path.to_owned(),
                stuck: stuck.path,
                elapsed_ms: stuck.elapsed.as_millis(),
                running: running.version.clone(),
            });
        }

        // 1. Verify (no plugin code runs), then load.
        let (keys, require_signatures, max_plugin_size, file) = (
            Arc::clone(&self.trusted_keys),
            self.require_signatures,
            self.max_plugin_size,
            path.to_owned(),
        );
        let verified = tokio::task::spawn_blocking(move || {
            loader::verify_file(
                &file,
                LoadPolicy {
                    trusted_keys: &keys,
                    require_signatures,
                    max_plugin_size,
                },
            )
        })
        .await
        .map_err(|join| fail.interrupted(join))?
        .map_err(|e| fail.refused(e))?;
        *new_version = Some(verified.metadata().version.clone());
        // The rule start-up applies: the record names the entry's plugin.
        verified.check_name(name).map_err(|e| fail.refused(e))?;
        if let Some(pin) = pin
            && lifecycle::check_pin(&verified, pin).is_err()
        {
            return Err(SwapError::NotPinned {
                name: name.to_owned(),
                path: path.to_owned(),
                offered: Box::new(Pin {
                    sha256: verified.sha256().to_owned(),
                    key_id: verified
                        .key_id()
                        .map_or_else(|| String::from("none"), |key| key.to_string()),
                }),
                pinned: Box::new(pin.clone()),
                running: running.version.clone(),
            });
        }
        if running.sha256.as_deref() == Some(verified.sha256()) {
            return Err(SwapError::Unchanged {
                name: name.to_owned(),
                path: path.to_owned(),
                sha256: verified.sha256().to_owned(),
            });
        }
        let record_version = verified.metadata().version.clone();
        let candidate = match self.in_worker(entry, running, verified) {
            Ok(in_worker) => in_worker,
            Err(verified) => {
                self.load_in_this_process(entry, running, *verified, &record_version)
                    .await?
            }
        };
        *new_version = Some(candidate.version.clone());

        // 2. Start it beside the running one.
        for (step, hook) in START_HOOKS.into_iter().enumerate() {
            let (plugin, handle) = (candidate.clone(), Handle::current());
            let started =
                bounded(self.hook_timeout, move || plugin.start_hook(&handle, hook)).await;
            if let Err((what, message)) = started {
                if step > 0 {
                    // Initialized: stop its runtime. Nothing routes to it.
                    self.retire(candidate.clone(), None, "refused");
                }
                return Err(fail.start(&candidate.version, hook.name(), what, message));
            }
        }

        // 3. Route new requests to it.
        let Some(old) = self.pipeline.route(candidate.clone()) else {
            return Err(SwapError::UnknownPlugin {
                name: name.to_owned(),
            });
        };

        // 4. Retire the old one once its last request has finished.
        let retired = old.when_retired();
        let old_plugin = old.plugin().clone();
        drop(old);
        self.retire(old_plugin, Some(retired), "replaced");
        Ok(Replaced {
            plugin: name.to_owned(),
            old: Release::of(running),
            new: Release::of(&candidate),
        })
    }

    /// A verified replacement for a `process` plugin: nothing is loaded
    /// into this process, its worker (its own probe) starts with its first
    /// lifecycle hook. `Err` gives the file back for any other tier.
    #[cfg(target_os = "linux")]
    fn in_worker(
        &self,
        entry: &Entry,
        running: &HostPlugin,
        verified: loader::VerifiedFile,
    ) -> Result<HostPlugin, Box<loader::VerifiedFile>> {
        if running.isolation != crate::config::Isolation::Process {
            return Err(Box::new(verified));
        }
        Ok(HostPlugin::in_process(
            &entry.name,
            running.kind,
            Arc::clone(&entry.config),
            verified,
            self.workers.clone(),
        ))
    }

    /// Off Linux there is no `process` tier (refused at config load).
    #[cfg(not(target_os = "linux"))]
    fn in_worker(
        &self,
        _entry: &Entry,
        _running: &HostPlugin,
        verified: loader::VerifiedFile,
    ) -> Result<HostPlugin, Box<loader::VerifiedFile>> {
        Err(Box::new(verified))
    }

    /// Loads a verified replacement into this process: first in a probe
    /// process when one is set, then here, each bounded by `hook_timeout`.
    async fn load_in_this_process(
        &self,
        entry: &Entry,
        running: &HostPlugin,
        verified: loader::VerifiedFile,
        record_version: &str,
    ) -> Result<HostPlugin, SwapError> {
        let name = entry.name.as_str();
        let fail = Refusal { name, running };
        // `dlopen` runs the library's initialisers: first in a probe process
        // (a hang or a crash there leaves this server whole), then here, on
        // a thread of its own, bounded like a hook (the blocking thread only
        // waits for it).
        let (timeout, max_plugin_size) = (self.hook_timeout, self.max_plugin_size);
        let probe = self.probe_program.get().cloned();
        let loaded = tokio::task::spawn_blocking(move || {
            if let Some(program) = probe {
                lifecycle::probe_within(&program, &verified, max_plugin_size, timeout)?;
            }
            Ok(lifecycle::load_within(verified, timeout))
        })
        .await
        .map_err(|join| fail.interrupted(join))?;
        let load_failed = |what, message| fail.start(record_version, "load", what, message);
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(ProbeFailure::TimedOut) => {
                return Err(load_failed(
                    "timed out",
                    format!(
                        "no answer within {} ms; {}",
                        timeout.as_millis(),
                        ProbeFailure::TimedOut
                    ),
                ));
            }
            Err(failure) => return Err(load_failed("failed", failure.to_string())),
        };
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(LoadFailure::Refused(source)) => return Err(fail.refused(source)),
            Err(failure @ (LoadFailure::Panicked | LoadFailure::NoThread(_))) => {
                return Err(load_failed("failed", failure.to_string()));
            }
            Err(LoadFailure::TimedOut) => {
                return Err(load_failed(
                    "timed out",
                    format!(
                        "no answer within {} ms; its initialisers still run inside the dynamic loader, which holds its process-wide lock meanwhile, so no library can be loaded by this process until they return (restart the server)",
                        timeout.as_millis()
                    ),
                ));
            }
        };
        Ok(HostPlugin::from_loaded(
            name,
            running.kind,
            Arc::clone(&entry.config),
            running.isolation,
            loaded,
        ))
    }

    /// Calls `plugin`'s `shutdown` (bounded by `shutdown_timeout`) once
    /// `retired` resolves, or at once without it; `why` (`replaced` or
    /// `refused`) is for the log.
    fn retire(
        &self,
        plugin: HostPlugin,
        retired: Option<oneshot::Receiver<()>>,
        why: &'static str,
    ) {
        let limit = self.shutdown_timeout;
        let mut retiring = self.lock_retiring();
        // Forget the retirements already done.
        while retiring.try_join_next().is_some() {}
        retiring.spawn(async move {
            if let Some(retired) = retired {
                // An error means the sender went without a word: the
                // implementation was dropped all the same.
                let _ = retired.await;
            }
            let (stopping, handle) = (plugin.clone(), Handle::current());
            match bounded(limit, move || stopping.shutdown(&handle)).await {
                Ok(()) => tracing::info!(
                    plugin = %plugin.name,
                    version = plugin.version,
                    "{why} version shut down (no request uses it)"
                ),
                Err((what, message)) => tracing::warn!(
                    plugin = %plugin.name,
                    version = plugin.version,
                    "shutdown of the {why} version {what}: {message}"
                ),
            }
        });
    }
}
