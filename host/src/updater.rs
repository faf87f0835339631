//! Automatic updates: while `backworks serve` runs, the `type: marketplace`
//! plugins are kept at the newest version the `updates:` policy allows.
//!
//! Every `updates.check_interval`, for each marketplace plugin:
//!
//! 1. [`PluginMarketplace::download_update`] fetches the registry's signed
//!    index (refusing a rollback or an expired index), picks the newest
//!    version the policy allows above the locked one (never a downgrade,
//!    never another signing key), and downloads and verifies it into the
//!    cache, leaving the lock file as it is;
//! 2. [`Swapper::replace_pinned`] loads it through the verify-then-load
//!    path (refusing, before loading, any bytes or key but the downloaded
//!    ones), initializes and health-checks it beside the running version,
//!    then routes new requests to it while in-flight ones finish on the old
//!    one;
//! 3. only then is the new version pinned in `backworks.lock`
//!    ([`PluginMarketplace::record`], an atomic rewrite).
//!
//! Before that, each check follows the lock file: when it pins other bytes
//! than those running (`backworks plugins update` or `install` ran while
//! the server runs), the pinned file is swapped in from the cache the same
//! way.
//!
//! Any refusal leaves the running version serving and the lock as it was,
//! and is logged with the reason. A version that failed to start is not
//! tried again (it is logged once); a newer one is.
//!
//! A newer version that asks for more capabilities than the locked one
//! declared is not applied (nor downloaded): a warning names what it asks
//! for and `backworks plugins update <name> --accept-capabilities`, once
//! per version (later checks log it at debug level); the running version
//! keeps serving. Once the operator accepts it, the lock pins it and the
//! next check follows the lock.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use backworks_plugin_sdk::TARGET;
use tokio::time::MissedTickBehavior;

use crate::config::{Config, PluginKind};
use crate::lockfile::LockedPlugin;
use crate::marketplace::{Download, HeldUpdate, MarketplaceError, PluginMarketplace, ServeMode};
use crate::swap::{Pin, SwapError, Swapper};

/// What one check of one plugin did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The running version is the newest the policy allows.
    UpToDate,
    /// The plugin now runs `to` and the lock pins it.
    Updated {
        /// The version that served before.
        from: String,
        /// The version serving now.
        to: String,
    },
    /// Nothing changed: the reason is in the message (already logged).
    Refused(String),
    /// A newer version asks for more capabilities than the running one
    /// declared: not applied until the operator accepts it.
    Held(HeldUpdate),
}

/// Keeps the marketplace plugins of a running server up to date.
#[derive(Debug)]
pub struct Updater {
    marketplace: Arc<PluginMarketplace>,
    swapper: Arc<Swapper>,
    plugins: Vec<String>,
    interval: Duration,
    /// `(plugin, version)` pairs that failed to start: not tried again.
    failed: HashSet<(String, String)>,
    /// `(plugin, version)` pairs held back for their capabilities: warned
    /// about once.
    held: HashSet<(String, String)>,
    /// Plugins updated while their lock entry could not be rewritten: the
    /// lock is not followed for them (it would switch back) until a
    /// rewrite succeeds.
    unpinned: HashSet<String>,
}

impl Updater {
    /// The updater `serve` runs for `config`, if any: `None` when
    /// `updates.check_interval` is off, when no plugin is `type:
    /// marketplace`, or when `--locked` or `--offline` forbids changing
    /// what runs (logged). It has its own marketplace client, which never
    /// draws a progress bar (its downloads happen among the server's logs).
    pub fn for_serve(
        config: &Config,
        mode: ServeMode,
        swapper: &Arc<Swapper>,
    ) -> Result<Option<Self>, MarketplaceError> {
        let Some(interval) = config.updates.check_interval else {
            return Ok(None);
        };
        let plugins: Vec<String> = config
            .plugins
            .iter()
            .filter(|p| matches!(p.kind, PluginKind::Marketplace { .. }))
            .map(|p| p.name.clone())
            .collect();
        if plugins.is_empty() {
            return Ok(None);
        }
        if mode.locked || mode.offline {
            tracing::info!(
                "automatic updates are off: serve --{} keeps the plugins backworks.lock pins",
                if mode.locked { "locked" } else { "offline" }
            );
            return Ok(None);
        }
        let marketplace = PluginMarketplace::from_config(config)?.with_progress(false);
        tracing::info!(
            interval_ms = interval.as_millis() as u64,
            plugins = ?plugins,
            "automatic updates on"
        );
        Ok(Some(Self::new(
            Arc::new(marketplace),
            Arc::clone(swapper),
            plugins,
            interval,
        )))
    }

    /// An updater of `plugins` (names of `type: marketplace` entries),
    /// checking every `interval`.
    pub fn new(
        marketplace: Arc<PluginMarketplace>,
        swapper: Arc<Swapper>,
        plugins: Vec<String>,
        interval: Duration,
    ) -> Self {
        Self {
            marketplace,
            swapper,
            plugins,
            interval,
            failed: HashSet::new(),
            held: HashSet::new(),
            unpinned: HashSet::new(),
        }
    }

    /// Checks every `interval` (the first check one interval after the
    /// start) until the task is aborted.
    pub async fn run(mut self) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            for name in self.plugins.clone() {
                self.check(&name).await;
            }
        }
    }

    /// Checks `name` once: first follows the lock file (a version pinned
    /// there by `backworks plugins update` while the server runs is swapped
    /// in from the cache); then downloads, starts and routes to a newer
    /// allowed version if there is one, and pins it in the lock file.
    pub async fn check(&mut self, name: &str) -> Checked {
        if !self.unpinned.contains(name)
            && let Some(followed) = self.follow_lock(name).await
        {
            return followed;
        }
        let installed = match self.marketplace.download_update(name).await {
            Ok(Download::UpToDate) => {
                tracing::debug!(plugin = name, "up to date");
                return Checked::UpToDate;
            }
            Ok(Download::Held(held)) => {
                let message = format!(
                    "update not applied, the running version keeps serving: {held}; review it, then run `backworks plugins update {name} --accept-capabilities`"
                );
                if self.held.insert((name.to_owned(), held.to.to_string())) {
                    tracing::warn!(plugin = name, version = %held.to, "{message}");
                } else {
                    tracing::debug!(plugin = name, version = %held.to, "{message}");
                }
                return Checked::Held(held);
            }
            Ok(Download::Ready(installed)) => installed,
            Err(error) => {
                tracing::warn!(plugin = name, "update check failed: {error}");
                return Checked::Refused(error.to_string());
            }
        };
        let version = installed.plugin.version.to_string();
        let key = (name.to_owned(), version.clone());
        if self.failed.contains(&key) {
            tracing::debug!(
                plugin = name,
                %version,
                "not retrying a version that failed to start"
            );
            return Checked::Refused(format!("{name} {version} failed to start before"));
        }
        let replaced = match self
            .swapper
            .replace_pinned(name, &installed.path, pin_of(&installed.plugin))
            .await
        {
            Ok(replaced) => replaced,
            Err(SwapError::Unchanged { .. }) => {
                // The bytes already run (e.g. the lock was edited by hand):
                // pinning them is all that is left to do.
                match self.marketplace.record(&installed) {
                    Ok(()) => {
                        self.unpinned.remove(name);
                    }
                    Err(error) => tracing::warn!(plugin = name, "cannot pin {version}: {error}"),
                }
                return Checked::UpToDate;
            }
            Err(error) => {
                tracing::warn!(
                    plugin = name,
                    %version,
                    "update not applied, the running version keeps serving: {error}"
                );
                self.failed.insert(key);
                return Checked::Refused(error.to_string());
            }
        };
        if let Err(error) = self.marketplace.record(&installed) {
            // The new version serves, but a restart would go back to the
            // locked one: say so loudly, and stop following the lock.
            tracing::error!(
                plugin = name,
                %version,
                "updated, but the lock file could not be rewritten: {error}; a restart would load the previously locked version"
            );
            self.unpinned.insert(name.to_owned());
        } else {
            self.unpinned.remove(name);
        }
        tracing::info!(
            plugin = name,
            from = %replaced.old.version,
            to = %replaced.new.version,
            "plugin updated"
        );
        Checked::Updated {
            from: replaced.old.version,
            to: replaced.new.version,
        }
    }

    /// When the lock pins other bytes for `name` than those running (the
    /// lock was changed by `backworks plugins update` or `install`), swaps
    /// in the pinned, cached file: verified as at start-up, and refused
    /// before it is loaded unless its sha256 and key are the lock's. `None`
    /// when the running bytes are the pinned ones.
    async fn follow_lock(&mut self, name: &str) -> Option<Checked> {
        let pin = match self.marketplace.lock() {
            Ok(lock) => lock.get(name, TARGET).cloned()?,
            Err(error) => {
                tracing::warn!(plugin = name, "cannot read the lock file: {error}");
                return Some(Checked::Refused(error.to_string()));
            }
        };
        let running = self.swapper.current(name)?;
        if running.sha256.as_deref() == Some(pin.sha256.as_str()) {
            return None;
        }
        let version = pin.version.to_string();
        let key = (name.to_owned(), version.clone());
        if self.failed.contains(&key) {
            return Some(Checked::Refused(format!(
                "{name} {version} failed to start before"
            )));
        }
        let path = match self.marketplace.cached(&pin) {
            Ok(Some(path)) => path,
            Ok(None) => {
                // Pinned but not downloaded (a lock edited by hand or
                // copied): the next `download_update` cannot help either,
                // as it only looks above the locked version.
                tracing::warn!(
                    plugin = name,
                    %version,
                    "the lock pins a version that is not in the cache; run `backworks plugins install {name}@{version}`"
                );
                self.failed.insert(key);
                return Some(Checked::Refused(format!(
                    "{name} {version} is not in the cache"
                )));
            }
            Err(error) => return Some(Checked::Refused(error.to_string())),
        };
        match self.swapper.replace_pinned(name, &path, pin_of(&pin)).await {
            Ok(replaced) => {
                tracing::info!(
                    plugin = name,
                    from = %replaced.old.version,
                    to = %replaced.new.version,
                    "plugin switched to the version backworks.lock pins"
                );
                Some(Checked::Updated {
                    from: replaced.old.version,
                    to: replaced.new.version,
                })
            }
            Err(SwapError::Unchanged { .. }) => None,
            Err(error) => {
                tracing::warn!(
                    plugin = name,
                    %version,
                    "the version backworks.lock pins was not applied, the running version keeps serving: {error}"
                );
                self.failed.insert(key);
                Some(Checked::Refused(error.to_string()))
            }
        }
    }
}

/// What the swap must load: the bytes and key `plugin` pins.
fn pin_of(plugin: &LockedPlugin) -> Pin {
    Pin::from(plugin)
}
