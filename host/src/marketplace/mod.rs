//! The marketplace client: [`PluginMarketplace`] searches a registry,
//! installs, updates and removes `type: marketplace` plugins, and keeps
//! `backworks.lock` in step (`docs/registry.md` has the registry's format).
//!
//! A registry is a directory, a `file://` URL or an `http(s)://` base URL;
//! its files are read at `<base>/<tree path>`, each transfer bounded in
//! size (`max_download`, or less) and in time (`transfer_timeout`,
//! `min_transfer_rate`: `Pace`). A directory registry's files are held
//! to the same limits, and must be regular files, opened without blocking
//! (a FIFO or `/dev/zero` in the tree is refused, never read). Nothing
//! from it is trusted until it is verified:
//!
//! 1. `index.json` is verified with the configured registry key, and must be
//!    no older than the newest index this cache has accepted (rollback) and
//!    not expired (freeze); the accepted serial is recorded atomically in
//!    `<cache_dir>/registry-state.json`, keyed by the registry key's id.
//! 2. A release file must have the size and sha256 the index gives it.
//! 3. The artifact's `.minisig` is fetched first: one signed by a key that
//!    `trusted_keys` does not list is refused before any download.
//! 4. The artifact is streamed into a staging directory inside the cache,
//!    never more bytes than the release announces nor than `max_download`;
//!    each chunk is hashed as it arrives ([`StreamVerifier`]: the one
//!    sha256 pass, on the receiving task, while the chunk is in cache) and
//!    written by another thread, so little is left to do once the last byte
//!    is in.
//!    Its sha256 must be the release's, its signature must verify, and its
//!    trusted comment must name exactly the plugin, version and this host's
//!    target ([`TARGET`]).
//! 5. Only then is the staging directory (library and signature) renamed
//!    into `<cache_dir>/<name>/<version>/<target>/`: a download interrupted
//!    at any point leaves nothing at that path. Staging directories left by
//!    a killed process are removed by the next install.
//!
//! Updates never go below the locked version (downgrade), never to a
//! version signed by another key than the locked one, and only as far as
//! the `updates:` policy allows. `backworks serve` loads the cached file
//! through the loader like any other plugin (verified again there, and
//! pinned to the lock's sha256).
//!
//! The module by job: `client` (the operations), `policy` (which version:
//! requirements, the update policy, the plugin ABI), `trust` (index,
//! registry state, release and signature checks), `download` (one version
//! into the cache, the writer thread), `transport` (HTTP and directory
//! registries, bounded transfers), `cache` (layout, locks, staging, the
//! registry state file), `error` ([`MarketplaceError`]).

use std::fmt;
use std::fs::File;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use backworks_artifact::inspect;
use backworks_artifact::signature::{
    self, Chunk, Hashed, KeyId, PublicKey, StreamVerifier, Verified, VerifyError,
};
use backworks_plugin_sdk::TARGET;
use backworks_plugin_sdk::abi::ABI_VERSION;
use backworks_plugin_sdk::abi::capabilities::Capabilities;
use backworks_plugin_sdk::metadata::PluginMetadata;
use backworks_registry::{
    self as registry, Artifact, Freshness, INDEX_PATH, Index, RegistryError, Release, SearchPage,
    api,
};
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt as _;

use crate::config::{
    Config, ConfigError, PluginConfig, PluginKind, RATE_WINDOW, RegistryLocation, UpdatesConfig,
};
use crate::lockfile::{self, LockError, LockFile, LockedPlugin};

mod cache;
mod client;
mod download;
mod error;
mod policy;
#[cfg(test)]
mod tests;
mod transport;
mod trust;

pub use cache::STATE_FILE;
pub use error::{MarketplaceError, Subject};
pub use policy::{Skipped, added_capabilities, host_speaks, parse_spec};

use cache::*;
use error::*;
use policy::*;
use transport::*;

/// A plugin installed (verified and in the cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// What the lock file pins for it.
    pub plugin: LockedPlugin,
    /// The library in the cache.
    pub path: PathBuf,
    /// What the library's own record declares it needs (the release's
    /// declaration is refused unless it is the same); `None`: nothing.
    pub capabilities: Option<Capabilities>,
    /// The pins of the release's other targets (not downloaded: each one's
    /// signature checked against the signed index, see
    /// [`signature::verify_claims`]), by target.
    pub others: Vec<LockedPlugin>,
    /// Newer versions the requirement allowed but this host cannot load
    /// (another plugin ABI), newest first.
    pub skipped: Vec<Skipped>,
}

/// What the lock pins for one `type: marketplace` plugin of
/// `backworks.yaml` ([`PluginMarketplace::check_lock`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockStatus {
    /// The plugin.
    pub name: String,
    /// Its version requirement in `backworks.yaml`.
    pub requirement: String,
    /// Its pins, one per target, in the lock file's order.
    pub pins: Vec<LockedPlugin>,
    /// What keeps `serve --locked` from running it on this host, if
    /// anything.
    pub problem: Option<String>,
}

/// What [`PluginMarketplace::update`] did for one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// The plugin.
    pub name: String,
    /// The version locked before.
    pub from: Version,
    /// The version installed and locked now; `None` when already up to
    /// date, or when the update was held back (`held`).
    pub to: Option<Installed>,
    /// A newer version not applied because it asks for more capabilities
    /// than the locked version declared (and they were not accepted).
    pub held: Option<HeldUpdate>,
    /// Newer versions the policy allowed but this host cannot load
    /// (another plugin ABI), newest first.
    pub skipped: Vec<Skipped>,
}

/// An update held back: the new version asks for more capabilities than
/// the locked one declared ([`added_capabilities`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldUpdate {
    /// The plugin.
    pub name: String,
    /// The locked version.
    pub from: Version,
    /// The version not applied.
    pub to: Version,
    /// What it asks for that the locked version did not declare, one line
    /// each (`network: api.example.com:443`, `env: HOME`).
    pub added: Vec<String>,
}

impl fmt::Display for HeldUpdate {
    /// `weather 1.0.0 -> 1.1.0 asks for more than 1.0.0 declared:
    /// network: api.example.com:443, env: HOME`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} -> {} asks for more than {} declared: {}",
            self.name,
            self.from,
            self.to,
            self.from,
            self.added.join(", ")
        )
    }
}

/// What [`PluginMarketplace::download_update`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Download {
    /// The locked version is the newest the policy allows.
    UpToDate,
    /// A newer version, verified in the cache (the lock is unchanged).
    Ready(Installed),
    /// A newer version that asks for more capabilities: not downloaded.
    Held(HeldUpdate),
}

/// A `type: marketplace` plugin of `backworks.yaml`, ready for the loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Its name in `backworks.yaml`.
    pub name: String,
    /// The cached library.
    pub path: PathBuf,
    /// What the lock pins: the loader refuses other bytes.
    pub pin: LockedPlugin,
}

/// How `serve` may get its marketplace plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServeMode {
    /// `--locked`: everything must be exactly what the lock pins, and the
    /// lock must not change.
    pub locked: bool,
    /// `--offline`: use only the cache, never the network.
    pub offline: bool,
}

/// The marketplace client of one `backworks.yaml`: its registry, cache,
/// trusted keys, lock file and update policy.
pub struct PluginMarketplace {
    registry: RegistryLocation,
    registry_key: PublicKey,
    trusted_keys: Vec<PublicKey>,
    cache_dir: PathBuf,
    max_download: u64,
    limits: TransferLimits,
    lock_path: PathBuf,
    updates: UpdatesConfig,
    /// The `type: marketplace` entries of `backworks.yaml`: name and
    /// requirement.
    requirements: Vec<(String, VersionReq)>,
    client: Option<reqwest::Client>,
    progress: bool,
    /// The target whose artifacts are downloaded and loaded: this host's
    /// ([`TARGET`]); the lock pins every target of a release.
    target: String,
}

impl fmt::Debug for PluginMarketplace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginMarketplace")
            .field("registry", &self.registry)
            .field("registry_key", &KeyId::of_public_key(&self.registry_key))
            .field("cache_dir", &self.cache_dir)
            .field("max_download", &self.max_download)
            .field("lock_path", &self.lock_path)
            .finish_non_exhaustive()
    }
}

impl PluginMarketplace {
    /// The client for `config`: its `marketplace:` section (an error naming
    /// the file when it is missing), `trusted_keys`, `updates:` and the lock
    /// file next to it. A progress bar is drawn on standard error when it
    /// is a terminal.
    pub fn from_config(config: &Config) -> Result<Self, MarketplaceError> {
        let marketplace = config.marketplace()?;
        let client = match &marketplace.registry {
            RegistryLocation::Http(url) => Some(http_client(url)?),
            RegistryLocation::Dir(_) => None,
        };
        Ok(Self {
            registry: marketplace.registry.clone(),
            registry_key: marketplace.key.clone(),
            trusted_keys: config.trusted_keys.iter().map(|k| k.key.clone()).collect(),
            cache_dir: marketplace.cache_dir.clone(),
            max_download: marketplace.max_download,
            limits: TransferLimits {
                timeout: marketplace.transfer_timeout,
                min_rate: marketplace.min_transfer_rate,
                window: RATE_WINDOW,
            },
            lock_path: lockfile::path_for(&config.path),
            updates: config.updates.clone(),
            requirements: config
                .plugins
                .iter()
                .filter_map(|plugin| match &plugin.kind {
                    PluginKind::Marketplace { requirement, .. } => {
                        Some((plugin.name.clone(), requirement.clone()))
                    }
                    _ => None,
                })
                .collect(),
            client,
            progress: std::io::stderr().is_terminal(),
            target: TARGET.to_owned(),
        })
    }

    /// This client, downloading the artifacts of `target` instead of this
    /// host's: what a host of that target would do with the same lock.
    #[cfg(test)]
    pub(crate) fn playing_target(mut self, target: &str) -> Self {
        self.target = target.to_owned();
        self
    }

    /// Draws (or not) a progress bar for downloads on standard error.
    #[must_use]
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// The lock file this client keeps.
    pub fn lock_path(&self) -> &Path {
        &self.lock_path
    }

    /// The cache directory.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The lock file as it is now.
    pub fn lock(&self) -> Result<LockFile, MarketplaceError> {
        Ok(LockFile::read(&self.lock_path)?)
    }
}
