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
//!    each chunk is hashed as it arrives ([`StreamVerifier`]: sha256 on the
//!    receiving task, BLAKE2b on a thread of its own) and written by
//!    another thread, so little is left to do once the last byte is in.
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

/// The client's record of the newest index accepted, per registry key.
pub const STATE_FILE: &str = "registry-state.json";
/// Prefix of the staging directories downloads are written into.
const STAGING_PREFIX: &str = ".download-";
/// Held shared by every install, exclusively by the one cleaning stale
/// staging directories.
const CACHE_LOCK: &str = ".lock";
/// Serialises the read-modify-write of the registry state and the lock file.
const STATE_LOCK: &str = ".state.lock";
/// The largest `.minisig` read (they are a few hundred bytes).
const SIGNATURE_LIMIT: u64 = 64 * 1024;
/// The largest search answer read from a registry's API.
const SEARCH_LIMIT: u64 = 8 * 1024 * 1024;
/// Search hits asked for (the registry's maximum page size).
const SEARCH_PAGE: usize = 100;

/// Why the marketplace client refused or failed. Refusals (exit code 1) say
/// what did not verify; the rest (exit code 2) are configuration, usage,
/// I/O or network errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MarketplaceError {
    /// The configuration has no usable `marketplace:` section.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The lock file cannot be read or written.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// `name@requirement` on the command line does not parse.
    #[error(
        "`{spec}` is not a plugin to install: {reason}; write `name`, `name@1.2.3` (exactly that version) or `name@^1.2` (a semver requirement)"
    )]
    InvalidSpec {
        /// What was given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// A file of the registry could not be fetched (network or file system).
    #[error(
        "cannot fetch {url}: {reason}; check the registry URL in `marketplace.registry` and that it is reachable"
    )]
    Fetch {
        /// The URL or path.
        url: String,
        /// Why.
        reason: String,
    },
    /// A transfer from the registry took longer than
    /// `marketplace.transfer_timeout`.
    #[error(
        "cannot fetch {url}: the transfer took longer than `marketplace.transfer_timeout` ({}); the registry stalls or the network is too slow; raise `marketplace.transfer_timeout` if the registry is sound but slow",
        humane(*limit)
    )]
    TransferTimeout {
        /// The URL or path.
        url: String,
        /// The limit.
        limit: Duration,
    },
    /// A transfer from the registry was slower than
    /// `marketplace.min_transfer_rate` over a whole measuring window.
    #[error(
        "cannot fetch {url}: {received} bytes came in {}, less than `marketplace.min_transfer_rate` ({rate} bytes per second); the registry stalls or the network is too slow; lower `marketplace.min_transfer_rate` if the registry is sound but slow",
        humane(*window)
    )]
    TransferTooSlow {
        /// The URL or path.
        url: String,
        /// The bytes received in the window.
        received: u64,
        /// The window.
        window: Duration,
        /// The minimum rate, bytes per second.
        rate: u64,
    },
    /// A file of a directory registry is not a regular file (a FIFO, a
    /// device such as `/dev/zero`, a socket, a directory): refused before a
    /// byte of it is read, since reading it could block forever or never
    /// end.
    #[error(
        "refusing {}: not a regular file (it is {kind}); every file of a directory registry must be a regular file: put the registry's own file back (or publish again)",
        path.display()
    )]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is: `a FIFO`, `a character device`, ...
        kind: &'static str,
    },
    /// The registry answered with an HTTP error.
    #[error("{url} answered HTTP {status}; check the registry URL in `marketplace.registry`")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// A local file (cache, registry state) could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `registry-state.json` is not readable: refusing to forget the serials
    /// it records (that would allow a rollback).
    #[error(
        "{}: {reason}; it records the newest registry index accepted (rollback protection): restore it, or delete it to start over"
    , path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The index is malformed or not signed by the registry key.
    #[error("refusing the registry index: {0}")]
    Index(#[source] RegistryError),
    /// The index is older than one accepted before.
    #[error(
        "refusing the registry index {url}: its serial {serial} is older than serial {last_seen} accepted before (rollback: a stale mirror or an attack); nothing was installed; try again later or use another mirror"
    )]
    Rollback {
        /// Where the index came from.
        url: String,
        /// Its serial.
        serial: u64,
        /// The highest serial accepted before.
        last_seen: u64,
    },
    /// The index has expired.
    #[error(
        "refusing the registry index {url}: it expired at {expires} (unix seconds; now {now}), so it may hide newer releases (freeze); nothing was installed; the registry must re-sign its index (`backworks marketplace resign`)"
    )]
    Expired {
        /// Where the index came from.
        url: String,
        /// Its expiry.
        expires: u64,
        /// The time now.
        now: u64,
    },
    /// The index has no plugin of that name.
    #[error(
        "there is no plugin `{name}` in the registry {registry}; look for it with `backworks plugins search`"
    )]
    UnknownPlugin {
        /// The plugin.
        name: String,
        /// The registry.
        registry: String,
    },
    /// No version of the plugin matches the requirement.
    #[error("no version of `{name}` in the registry matches `{requirement}`; it has {available}")]
    NoMatchingVersion {
        /// The plugin.
        name: String,
        /// The requirement.
        requirement: String,
        /// The versions it has.
        available: String,
    },
    /// Releases match the requirement, but none is built for the plugin
    /// ABI this host speaks.
    #[error(
        "no release of `{name}` matching `{requirement}` is built for plugin ABI v{host_abi}, which this host speaks: the newest, {name} {newest}, is built for ABI v{abi}{older}; install a version built for ABI v{host_abi} (`backworks plugins install {name}@<version>`) or upgrade backworks"
    )]
    NoCompatibleRelease {
        /// The plugin.
        name: String,
        /// The requirement.
        requirement: String,
        /// The newest version matching it.
        newest: Version,
        /// The ABI it is built for.
        abi: u32,
        /// `, and so are the n others` or empty.
        older: String,
        /// The ABI this host speaks.
        host_abi: u32,
    },
    /// A version (the one the lock pins, or the one chosen) is built for a
    /// plugin ABI this host does not speak.
    #[error(
        "{name} {version} is built for plugin ABI v{abi}, this host speaks v{host_abi}: it cannot be loaded here; install a version built for ABI v{host_abi}, or upgrade backworks"
    )]
    IncompatibleAbi {
        /// The plugin.
        name: String,
        /// The version.
        version: String,
        /// The ABI its release is built for.
        abi: u32,
        /// The ABI this host speaks.
        host_abi: u32,
    },
    /// The release has no artifact for this host's target.
    #[error(
        "{name} {version} has no artifact for this host's target {target} (it has {available}); ask its publisher to build it for {target}"
    )]
    NoTarget {
        /// The plugin.
        name: String,
        /// The version.
        version: String,
        /// This host's target.
        target: String,
        /// The targets it has.
        available: String,
    },
    /// A release file does not match the signed index, or names paths
    /// outside its own directory.
    #[error("refusing {name} {version}: {reason}")]
    Release {
        /// The plugin.
        name: String,
        /// The version.
        version: String,
        /// Why.
        reason: String,
    },
    /// The artifact is larger than `max_download`.
    #[error(
        "refusing {subject}: it is {size} bytes, more than `marketplace.max_download` ({limit} bytes); raise the limit if you trust this plugin's size"
    )]
    TooLarge {
        /// The plugin, version and URL.
        subject: Box<Subject>,
        /// Its size (announced, or received so far).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The registry served a different number of bytes than the release
    /// announces.
    #[error(
        "refusing {subject}: wrong size: the release announces {expected} bytes, the registry sent {}; the registry or a mirror serves altered data; the installed version is unchanged",
        if *more { format!("more (at least {received})") } else { received.to_string() }
    )]
    WrongSize {
        /// The plugin, version and URL.
        subject: Box<Subject>,
        /// The size the release announces.
        expected: u64,
        /// The bytes received (when `more`, when the download stopped).
        received: u64,
        /// Whether more bytes than announced arrived (the download was
        /// stopped then).
        more: bool,
    },
    /// The artifact's sha256 is not the release's.
    #[error(
        "refusing {subject}: tampered download: its sha256 is {actual}, the release says {expected}; the registry or a mirror serves altered data; the installed version is unchanged"
    )]
    Tampered {
        /// The plugin, version and URL.
        subject: Box<Subject>,
        /// The release's sha256.
        expected: String,
        /// The downloaded bytes' sha256.
        actual: String,
    },
    /// The artifact is signed by a key `trusted_keys` does not list.
    #[error(
        "refusing {subject}: signed by key {signed_by}, which is not in `trusted_keys` (trusted: {trusted}); add the publisher's public key to `trusted_keys` if you trust it; the installed version is unchanged"
    )]
    UntrustedKey {
        /// The plugin, version and URL.
        subject: Box<Subject>,
        /// The key that signed.
        signed_by: KeyId,
        /// The trusted keys, listed.
        trusted: String,
    },
    /// The signature's trusted comment names another plugin, version or
    /// target than the one requested.
    #[error(
        "refusing {subject}: the signature's trusted comment names {field} {signed:?}, not {expected:?}: the registry serves a signature made for something else; the installed version is unchanged"
    )]
    WrongComment {
        /// The plugin, version and URL.
        subject: Box<Subject>,
        /// `name`, `version` or `target`.
        field: &'static str,
        /// What the comment says.
        signed: String,
        /// What was requested.
        expected: String,
    },
    /// The signature does not verify for another reason.
    #[error("refusing {subject}: {source}")]
    Signature {
        /// The plugin, version and URL.
        subject: Box<Subject>,
        /// Why.
        #[source]
        source: VerifyError,
    },
    /// Installing would go below the locked version.
    #[error(
        "refusing to downgrade {name} from {locked} (in backworks.lock) to {offered}; to go back on purpose, run `backworks plugins remove {name}` first"
    )]
    Downgrade {
        /// The plugin.
        name: String,
        /// The locked version.
        locked: Version,
        /// The version offered.
        offered: Version,
    },
    /// The new version is signed by another key than the locked one.
    #[error(
        "refusing {name} {version}: it is signed by key {new_key}, the locked version by key {locked_key}; a publisher key change needs your decision: `backworks plugins remove {name}`, then install it again"
    )]
    KeyChanged {
        /// The plugin.
        name: String,
        /// The new version.
        version: String,
        /// The locked key id.
        locked_key: String,
        /// The new key id.
        new_key: String,
    },
    /// `--locked`: a plugin is not exactly what the lock pins, or the lock
    /// would change.
    #[error("--locked: {name}: {reason}")]
    LockMismatch {
        /// The plugin.
        name: String,
        /// What differs.
        reason: String,
    },
    /// The registry's artifact of a locked version is not the one the lock
    /// pins: a published version changed.
    #[error(
        "refusing {name} {version}: the registry's artifact for {TARGET} has sha256 {registry_sha256}, backworks.lock pins {locked_sha256}; published versions never change, so the registry or a mirror serves altered data"
    )]
    PinMismatch {
        /// The plugin.
        name: String,
        /// The locked version.
        version: String,
        /// The registry's sha256.
        registry_sha256: String,
        /// The lock's sha256.
        locked_sha256: String,
    },
    /// `--offline`, and the plugin is not in the cache.
    #[error(
        "--offline: `{name}` ({requirement}) is not in the cache {}: {reason}; run `backworks plugins install {name}` with the network, or start without --offline"
    , cache.display())]
    Offline {
        /// The plugin.
        name: String,
        /// The requirement.
        requirement: String,
        /// The cache directory.
        cache: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A name, version or file name from the registry (or the lock) is not
    /// what its grammar allows, so it cannot become a path in the cache.
    #[error(
        "refusing a path in the cache: {0}; backworks never writes such a registry index, release or lock file: the registry (or backworks.lock) was altered"
    )]
    UnsafePath(#[source] RegistryError),
    /// A version's cache directory holds more than one library: which one
    /// the lock pins is not known without guessing.
    #[error(
        "the cache directory {} holds several plugin libraries ({files}), where installs put one; remove the directory (or run `backworks plugins remove` and install again)"
    , dir.display())]
    AmbiguousCache {
        /// The version's cache directory.
        dir: PathBuf,
        /// The libraries in it.
        files: String,
    },
    /// The plugin is not in the lock file.
    #[error("`{name}` is not installed (not in {}); install it with `backworks plugins install {name}`", lock.display())]
    NotInstalled {
        /// The plugin.
        name: String,
        /// The lock file.
        lock: PathBuf,
    },
}

/// What a download refusal is about: the plugin, its version and the URL
/// (or path) of the file refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The plugin.
    pub name: String,
    /// The version.
    pub version: String,
    /// The URL or path.
    pub url: String,
}

impl Subject {
    fn new(name: &str, version: &str, url: &str) -> Box<Self> {
        Box::new(Self {
            name: name.to_owned(),
            version: version.to_owned(),
            url: url.to_owned(),
        })
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} from {}", self.name, self.version, self.url)
    }
}

impl MarketplaceError {
    /// 1 for a refusal (verification, rollback, expiry, downgrade, key
    /// change, `--locked` mismatch), 2 for configuration, usage, I/O and
    /// network errors.
    pub fn exit_code(&self) -> u8 {
        if self.is_refusal() { 1 } else { 2 }
    }

    /// Whether this is a refusal: something did not verify or a policy
    /// forbids it.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Index(_)
                | Self::Rollback { .. }
                | Self::Expired { .. }
                | Self::Release { .. }
                | Self::TooLarge { .. }
                | Self::NotRegular { .. }
                | Self::WrongSize { .. }
                | Self::Tampered { .. }
                | Self::UntrustedKey { .. }
                | Self::WrongComment { .. }
                | Self::Signature { .. }
                | Self::Downgrade { .. }
                | Self::KeyChanged { .. }
                | Self::LockMismatch { .. }
                | Self::PinMismatch { .. }
                | Self::UnsafePath(_)
        )
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MarketplaceError {
    let path = path.to_owned();
    move |source| MarketplaceError::Io {
        action,
        path,
        source,
    }
}

/// What `plugins install` was given: `name`, `name@1.2.3` (exactly that
/// version, as `cargo install` reads it) or `name@<requirement>`.
pub fn parse_spec(spec: &str) -> Result<(String, VersionReq), MarketplaceError> {
    let invalid = |reason: String| MarketplaceError::InvalidSpec {
        spec: spec.to_owned(),
        reason,
    };
    let (name, requirement) = match spec.split_once('@') {
        Some((name, requirement)) => (name, Some(requirement)),
        None => (spec, None),
    };
    if !registry::is_valid_name(name) {
        return Err(invalid(format!(
            "`{name}` is not a plugin name (1 to 64 lower-case letters, digits, `-` and `_`, starting with a letter)"
        )));
    }
    let requirement = match requirement {
        None => VersionReq::STAR,
        Some(text) => match Version::parse(text) {
            Ok(version) => VersionReq {
                comparators: vec![semver::Comparator {
                    op: semver::Op::Exact,
                    major: version.major,
                    minor: Some(version.minor),
                    patch: Some(version.patch),
                    pre: version.pre,
                }],
            },
            Err(_) => VersionReq::parse(text)
                .map_err(|e| invalid(format!("`{text}` is not a version or requirement ({e})")))?,
        },
    };
    Ok((name.to_owned(), requirement))
}

/// A plugin installed (verified and in the cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// What the lock file pins for it.
    pub plugin: LockedPlugin,
    /// The library in the cache.
    pub path: PathBuf,
    /// Newer versions the requirement allowed but this host cannot load
    /// (another plugin ABI), newest first.
    pub skipped: Vec<Skipped>,
}

/// What [`PluginMarketplace::update`] did for one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// The plugin.
    pub name: String,
    /// The version locked before.
    pub from: Version,
    /// The version installed and locked now; `None` when already up to date.
    pub to: Option<Installed>,
    /// Newer versions the policy allowed but this host cannot load
    /// (another plugin ABI), newest first.
    pub skipped: Vec<Skipped>,
}

/// Whether this host can load a plugin built for plugin ABI `abi` (a
/// major version: a release records the major it was built for, and
/// revisions within a major are compatible, `docs/abi.md`). The one
/// place the marketplace decides it.
pub fn host_speaks(abi: u32) -> bool {
    abi == ABI_VERSION
}

/// A release passed over when choosing a version: built for a plugin ABI
/// this host does not speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The plugin.
    pub name: String,
    /// The version passed over.
    pub version: Version,
    /// The plugin ABI it is built for.
    pub abi: u32,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "skipped {} {}: built for plugin ABI v{}, this host speaks v{ABI_VERSION}",
            self.name, self.version, self.abi
        )
    }
}

/// A version chosen from an index, and the newer ones passed over.
struct Choice {
    version: Version,
    skipped: Vec<Skipped>,
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

/// The client's record of the newest index accepted from each registry.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    format: u32,
    /// By registry key id.
    registries: std::collections::BTreeMap<String, SeenIndex>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeenIndex {
    /// The highest serial accepted.
    serial: u64,
    /// Its expiry (unix seconds).
    expires: u64,
    /// Where it came from last.
    registry: String,
}

/// An advisory lock on a file in the cache, released when dropped (and by
/// the system when the process dies).
#[derive(Debug)]
struct Held {
    _file: File,
}

/// The recording of an accepted index's serial in the state file, running
/// on a blocking thread (see [`PluginMarketplace::accept_index`]).
#[must_use = "wait for the recording before pinning anything"]
struct Recording(
    Option<(
        PathBuf,
        tokio::task::JoinHandle<Result<(), MarketplaceError>>,
    )>,
);

impl Recording {
    /// Waits until the serial is recorded (at once when there was nothing
    /// new to record).
    async fn wait(self) -> Result<(), MarketplaceError> {
        match self.0 {
            None => Ok(()),
            Some((path, recording)) => recording.await.map_err(|e| MarketplaceError::State {
                path,
                reason: format!("the thread writing it failed: {e}"),
            })?,
        }
    }
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
        })
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

    /// Searches the registry: its `GET /api/v1/search` for an HTTP registry
    /// (the verified index, searched here, when the server has no such API:
    /// a plain static file server answers 404), the verified index for a
    /// directory.
    pub async fn search(&self, query: &str) -> Result<SearchPage, MarketplaceError> {
        if let (RegistryLocation::Http(base), Some(client)) = (&self.registry, &self.client) {
            let url = registry::location::search_url(base, query, SEARCH_PAGE).map_err(|e| {
                MarketplaceError::Fetch {
                    url: base.to_string(),
                    reason: e.to_string(),
                }
            })?;
            let mut pace = self.limits.start(url.as_str());
            let response = pace
                .wait(async {
                    client
                        .get(url.clone())
                        .send()
                        .await
                        .map_err(|e| fetch_error(url.as_str(), &e))
                })
                .await?;
            if response.status() != reqwest::StatusCode::NOT_FOUND {
                let bytes = read_response(response, url.as_str(), SEARCH_LIMIT, &mut pace).await?;
                return registry::parse_json(&bytes).map_err(|e| MarketplaceError::Fetch {
                    url: url.to_string(),
                    reason: format!("the answer is not a search result: {e}"),
                });
            }
        }
        let index = self.fetch_index().await?;
        Ok(registry::search(&index, query, 1, SEARCH_PAGE))
    }

    /// Installs the newest version of `name` that `requirement` allows:
    /// downloaded and verified into the cache (see the module docs), then
    /// pinned in the lock file (rewritten atomically). Refused when it is
    /// below the locked version, or signed by another key than the locked
    /// one.
    pub async fn install(
        &self,
        name: &str,
        requirement: &VersionReq,
    ) -> Result<Installed, MarketplaceError> {
        let locked = self.lock()?.get(name, TARGET).cloned();
        let (index, recording) = self.accept_index().await?;
        // The download runs while the index's serial is recorded; both end
        // before the lock pins anything.
        let (installed, recorded) = tokio::join!(
            self.install_from(&index, name, requirement, locked.as_ref()),
            recording.wait()
        );
        recorded?;
        let installed = installed?;
        self.record(&installed.plugin)?;
        Ok(installed)
    }

    /// [`Self::install`]'s choice and download, from an accepted `index`.
    async fn install_from(
        &self,
        index: &Index,
        name: &str,
        requirement: &VersionReq,
        locked: Option<&LockedPlugin>,
    ) -> Result<Installed, MarketplaceError> {
        let Choice { version, skipped } = self.choose(index, name, requirement).await?;
        if let Some(locked) = &locked
            && version < locked.version
        {
            return Err(MarketplaceError::Downgrade {
                name: name.to_owned(),
                locked: locked.version.clone(),
                offered: version,
            });
        }
        // The locked version again (e.g. after the cache was cleared) must be
        // the very bytes the lock pins.
        let same = locked.filter(|l| l.version == version);
        let mut installed = self
            .fetch(
                index,
                name,
                &version,
                locked.map(|l| l.key_id.as_str()),
                same.map(|l| l.sha256.as_str()),
            )
            .await?;
        installed.skipped = skipped;
        Ok(installed)
    }

    /// Updates `name`, or every plugin the lock pins for this target, to
    /// the newest version the `updates:` policy allows (and the plugin's
    /// `version` requirement in `backworks.yaml`, if it has one); each
    /// success rewrites the lock file. Stops at the first refusal.
    pub async fn update(&self, name: Option<&str>) -> Result<Vec<UpdateOutcome>, MarketplaceError> {
        let lock = self.lock()?;
        let entries: Vec<LockedPlugin> = lock
            .entries()
            .iter()
            .filter(|e| e.target == TARGET && name.is_none_or(|n| n == e.name))
            .cloned()
            .collect();
        if let Some(name) = name
            && entries.is_empty()
        {
            return Err(MarketplaceError::NotInstalled {
                name: name.to_owned(),
                lock: self.lock_path.clone(),
            });
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let index = self.fetch_index().await?;
        let mut outcomes = Vec::new();
        for entry in entries {
            let (newer, skipped) = self.newer(&index, &entry).await?;
            let to = match newer {
                Some(version) => {
                    let installed = self
                        .fetch(&index, &entry.name, &version, Some(&entry.key_id), None)
                        .await?;
                    self.record(&installed.plugin)?;
                    Some(installed)
                }
                None => None,
            };
            outcomes.push(UpdateOutcome {
                name: entry.name.clone(),
                from: entry.version.clone(),
                to,
                skipped,
            });
        }
        Ok(outcomes)
    }

    /// For the automatic updater: fetches the index and, when the policy
    /// allows a newer version of the locked plugin `name`, downloads and
    /// verifies it into the cache **without** touching the lock file (call
    /// [`record`](Self::record) once the new version is running). `None`
    /// when it is up to date.
    pub async fn download_update(&self, name: &str) -> Result<Option<Installed>, MarketplaceError> {
        let entry = self.lock()?.get(name, TARGET).cloned().ok_or_else(|| {
            MarketplaceError::NotInstalled {
                name: name.to_owned(),
                lock: self.lock_path.clone(),
            }
        })?;
        let (index, recording) = self.accept_index().await?;
        let download = async {
            let (newer, skipped) = self.newer(&index, &entry).await?;
            for skipped in &skipped {
                tracing::info!(plugin = %entry.name, "{skipped}");
            }
            match newer {
                Some(version) => Ok(Some(
                    self.fetch(&index, name, &version, Some(&entry.key_id), None)
                        .await?,
                )),
                None => Ok(None),
            }
        };
        let (downloaded, recorded) = tokio::join!(download, recording.wait());
        recorded?;
        downloaded
    }

    /// Pins `plugin` in the lock file (replacing its entry for the same
    /// target), rewriting the file atomically.
    pub fn record(&self, plugin: &LockedPlugin) -> Result<(), MarketplaceError> {
        let _held = self.hold(STATE_LOCK, true)?;
        let mut lock = self.lock()?;
        lock.upsert(plugin.clone());
        lock.write()?;
        Ok(())
    }

    /// Removes `name` from the lock file (every target; rewritten
    /// atomically), then its files from the cache. Returns the entries
    /// removed.
    pub async fn remove(&self, name: &str) -> Result<Vec<LockedPlugin>, MarketplaceError> {
        let removed = {
            let _held = self.hold(STATE_LOCK, true)?;
            let mut lock = self.lock()?;
            let removed = lock.remove(name);
            if removed.is_empty() {
                return Err(MarketplaceError::NotInstalled {
                    name: name.to_owned(),
                    lock: self.lock_path.clone(),
                });
            }
            lock.write()?;
            removed
        };
        if registry::is_valid_name(name) {
            let dir = self.cache_dir.join(name);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("remove", &dir)(e)),
            }
        }
        Ok(removed)
    }

    /// For `backworks serve`: the cached library of every `type: marketplace`
    /// entry of `plugins`, installing what is missing unless `mode` forbids
    /// it. With `locked`, each must be exactly what the lock pins (the
    /// pinned version may still be downloaded into an empty cache); with
    /// `offline`, the network is never used.
    pub async fn prepare(
        &self,
        plugins: &[PluginConfig],
        mode: ServeMode,
    ) -> Result<Vec<Resolved>, MarketplaceError> {
        let mut resolved = Vec::new();
        let mut index: Option<Index> = None;
        for plugin in plugins {
            let PluginKind::Marketplace { requirement, .. } = &plugin.kind else {
                continue;
            };
            let name = plugin.name.as_str();
            let pinned = self.lock()?.get(name, TARGET).cloned();
            let offline = |reason: String| MarketplaceError::Offline {
                name: name.to_owned(),
                requirement: requirement.to_string(),
                cache: self.cache_dir.clone(),
                reason,
            };
            let installed = match pinned {
                Some(pin) if requirement.matches(&pin.version) => match self.cached(&pin)? {
                    Some(path) => Installed {
                        plugin: pin,
                        path,
                        skipped: Vec::new(),
                    },
                    None if mode.offline => {
                        return Err(offline(format!(
                            "the lock pins {} but the cache has no file for it",
                            pin.version
                        )));
                    }
                    None => {
                        let index = self.index_once(&mut index).await?;
                        self.fetch(
                            index,
                            name,
                            &pin.version,
                            Some(&pin.key_id),
                            Some(&pin.sha256),
                        )
                        .await?
                    }
                },
                pinned => {
                    let reason = match &pinned {
                        Some(pin) => format!(
                            "the lock pins {}, which backworks.yaml's `version: \"{requirement}\"` does not allow",
                            pin.version
                        ),
                        None => format!("backworks.lock has no entry for target {TARGET}"),
                    };
                    if mode.locked {
                        return Err(MarketplaceError::LockMismatch {
                            name: name.to_owned(),
                            reason: format!(
                                "{reason}, and installing it would change the lock; run `backworks plugins install {name}` (or update) without --locked"
                            ),
                        });
                    }
                    if mode.offline {
                        return Err(offline(reason));
                    }
                    let index = self.index_once(&mut index).await?;
                    let Choice { version, skipped } = self.choose(index, name, requirement).await?;
                    for skipped in &skipped {
                        tracing::info!(plugin = %name, "{skipped}");
                    }
                    if let Some(pin) = &pinned
                        && version < pin.version
                    {
                        return Err(MarketplaceError::Downgrade {
                            name: name.to_owned(),
                            locked: pin.version.clone(),
                            offered: version,
                        });
                    }
                    let key = pinned.as_ref().map(|p| p.key_id.as_str());
                    let installed = self.fetch(index, name, &version, key, None).await?;
                    self.record(&installed.plugin)?;
                    installed
                }
            };
            resolved.push(Resolved {
                name: name.to_owned(),
                path: installed.path,
                pin: installed.plugin,
            });
        }
        Ok(resolved)
    }

    /// The library of `pin` in the cache, if its directory holds one: the
    /// one file there that is not a signature nor a dot-file. An install
    /// writes exactly one; a directory holding several (a user's edit) is
    /// an error naming them, never a choice in directory order.
    pub fn cached(&self, pin: &LockedPlugin) -> Result<Option<PathBuf>, MarketplaceError> {
        let dir = self.version_dir(&pin.name, &pin.version, &pin.target)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read the cache directory", &dir)(e)),
        };
        let mut libraries = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("read the cache directory", &dir))?;
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            if !file_name.starts_with('.') && !file_name.ends_with(api::SIGNATURE_SUFFIX) {
                libraries.push(entry.path());
            }
        }
        libraries.sort();
        match libraries.len() {
            0 | 1 => Ok(libraries.pop()),
            _ => Err(MarketplaceError::AmbiguousCache {
                files: libraries
                    .iter()
                    .filter_map(|path| path.file_name())
                    .map(|name| name.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
                dir,
            }),
        }
    }

    async fn index_once<'a>(
        &self,
        index: &'a mut Option<Index>,
    ) -> Result<&'a Index, MarketplaceError> {
        match index {
            Some(index) => Ok(index),
            None => Ok(index.insert(self.fetch_index().await?)),
        }
    }

    /// The newest version of `name` allowed by `requirement` that is
    /// built for a plugin ABI this host speaks ([`host_speaks`]), and the
    /// newer ones allowed but built for another.
    async fn choose(
        &self,
        index: &Index,
        name: &str,
        requirement: &VersionReq,
    ) -> Result<Choice, MarketplaceError> {
        if !index.plugins.contains_key(name) {
            return Err(MarketplaceError::UnknownPlugin {
                name: name.to_owned(),
                registry: self.registry.to_string(),
            });
        }
        let candidates = index
            .versions(name)
            .into_iter()
            .filter(|version| requirement.matches(version));
        let (chosen, skipped) = self.first_loadable(index, name, candidates).await?;
        match (chosen, skipped.first()) {
            (Some(version), _) => Ok(Choice { version, skipped }),
            (None, Some(newest)) => Err(MarketplaceError::NoCompatibleRelease {
                name: name.to_owned(),
                requirement: requirement.to_string(),
                newest: newest.version.clone(),
                abi: newest.abi,
                older: match skipped.len() - 1 {
                    0 => String::new(),
                    1 => String::from(", and so is the 1 other"),
                    n => format!(", and so are the {n} others"),
                },
                host_abi: ABI_VERSION,
            }),
            (None, None) => Err(MarketplaceError::NoMatchingVersion {
                name: name.to_owned(),
                requirement: requirement.to_string(),
                available: list_or(index.versions(name), "no versions"),
            }),
        }
    }

    /// The first of `candidates` (newest first) built for a plugin ABI this
    /// host speaks, and those before it, which are not.
    async fn first_loadable(
        &self,
        index: &Index,
        name: &str,
        candidates: impl IntoIterator<Item = Version>,
    ) -> Result<(Option<Version>, Vec<Skipped>), MarketplaceError> {
        let mut skipped = Vec::new();
        for version in candidates {
            let abi = self.abi_of(index, name, &version).await?;
            if host_speaks(abi) {
                return Ok((Some(version), skipped));
            }
            skipped.push(Skipped {
                name: name.to_owned(),
                version,
                abi,
            });
        }
        Ok((None, skipped))
    }

    /// The plugin ABI `name` `version` is built for: what the index says,
    /// or, in an index written before it said so, what its release file
    /// (verified against the index) says.
    async fn abi_of(
        &self,
        index: &Index,
        name: &str,
        version: &Version,
    ) -> Result<u32, MarketplaceError> {
        let version_text = version.to_string();
        let reference = index.release_ref(name, &version_text).ok_or_else(|| {
            MarketplaceError::NoMatchingVersion {
                name: name.to_owned(),
                requirement: format!("={version}"),
                available: list_or(index.versions(name), "no versions"),
            }
        })?;
        if let Some(abi) = reference.abi {
            return Ok(abi);
        }
        Ok(self.release(reference, name, version).await?.abi)
    }

    /// The release file of `name` `version` that `reference` (from the
    /// signed index) names, fetched and verified against it.
    async fn release(
        &self,
        reference: &registry::ReleaseRef,
        name: &str,
        version: &Version,
    ) -> Result<Release, MarketplaceError> {
        let version_text = version.to_string();
        let refuse = |reason: String| MarketplaceError::Release {
            name: name.to_owned(),
            version: version_text.clone(),
            reason,
        };
        let expected_path = registry::release_path(name, &version_text);
        if reference.path != expected_path {
            return Err(refuse(format!(
                "the index puts its release file at {:?}, not {expected_path:?}",
                reference.path
            )));
        }
        // One byte more than the index says: `verify_release` then names
        // the size difference as the refusal it is.
        let bytes = self
            .fetch_small(&reference.path, reference.size.saturating_add(1))
            .await?;
        registry::verify_release(&bytes, reference, name, &version_text)
            .map_err(|e| refuse(e.to_string()))
    }

    /// The version an update of `entry` goes to: the newest one above the
    /// locked version that the policy allows; `None` when there is none.
    /// A registry whose newest version is below the locked one is refused
    /// as a downgrade.
    ///
    /// Versions built for a plugin ABI this host does not speak are passed
    /// over (and returned, newest first) for the newest one it does.
    async fn newer(
        &self,
        index: &Index,
        entry: &LockedPlugin,
    ) -> Result<(Option<Version>, Vec<Skipped>), MarketplaceError> {
        let versions = index.versions(&entry.name);
        let Some(newest) = versions.first() else {
            return Err(MarketplaceError::UnknownPlugin {
                name: entry.name.clone(),
                registry: self.registry.to_string(),
            });
        };
        if *newest < entry.version {
            return Err(MarketplaceError::Downgrade {
                name: entry.name.clone(),
                locked: entry.version.clone(),
                offered: newest.clone(),
            });
        }
        let configured = self
            .requirements
            .iter()
            .find(|(name, _)| *name == entry.name)
            .map(|(_, requirement)| requirement);
        let candidates: Vec<Version> = versions
            .into_iter()
            .filter(|candidate| {
                *candidate > entry.version
                    && match self.updates.requirement(&entry.name) {
                        Some(requirement) => requirement.matches(candidate),
                        None => self.updates.allow.permits(&entry.version, candidate),
                    }
                    && configured.is_none_or(|requirement| requirement.matches(candidate))
            })
            .collect();
        self.first_loadable(index, &entry.name, candidates).await
    }

    /// `<cache_dir>/<name>/<version>/<target>`: the name must be a plugin
    /// name and each part one plain path component, so the directory is
    /// inside the cache whatever the registry or the lock says.
    fn version_dir(
        &self,
        name: &str,
        version: &Version,
        target: &str,
    ) -> Result<PathBuf, MarketplaceError> {
        let version = version.to_string();
        registry::check_name(name)
            .and_then(|()| registry::check_version(name, &version))
            .and_then(|_| registry::join_component(&self.cache_dir, "plugin name", name))
            .and_then(|dir| registry::join_component(&dir, "version", &version))
            .and_then(|dir| registry::join_component(&dir, "target", target))
            .map_err(MarketplaceError::UnsafePath)
    }

    /// Where a tree path is, for messages: a URL or a path.
    fn location(&self, tree_path: &str) -> String {
        self.registry.file(tree_path)
    }

    /// Fetches, verifies and accepts the index (see [`Self::accept_index`]),
    /// its serial recorded in the state file before it is used.
    async fn fetch_index(&self) -> Result<Index, MarketplaceError> {
        let (index, recording) = self.accept_index().await?;
        recording.wait().await?;
        Ok(index)
    }

    /// Fetches, verifies and accepts the index: signed by the registry key,
    /// not older than the newest accepted before, not expired. Its serial
    /// is recorded in the state file (flushed to disk) on a blocking
    /// thread while the caller goes on; the caller waits for the
    /// [`Recording`] before it pins anything.
    async fn accept_index(&self) -> Result<(Index, Recording), MarketplaceError> {
        let url = self.location(INDEX_PATH);
        let bytes = self.fetch_small(INDEX_PATH, self.max_download).await?;
        create_dir(&self.cache_dir)?;
        let held = self.hold(STATE_LOCK, true)?;
        let state_path = self.cache_dir.join(STATE_FILE);
        let mut state = read_state(&state_path)?;
        let key = KeyId::of_public_key(&self.registry_key).to_string();
        let last_serial = state.registries.get(&key).map(|seen| seen.serial);
        let freshness = Freshness {
            last_serial,
            now: registry::now(),
        };
        let index = registry::verify_index(&bytes, &self.registry_key, freshness, &url).map_err(
            |error| match error {
                RegistryError::Rollback {
                    serial, last_seen, ..
                } => MarketplaceError::Rollback {
                    url: url.clone(),
                    serial,
                    last_seen,
                },
                RegistryError::Expired { expires, now, .. } => MarketplaceError::Expired {
                    url: url.clone(),
                    expires,
                    now,
                },
                other => MarketplaceError::Index(other),
            },
        )?;
        if last_serial.is_some_and(|last| index.serial <= last) {
            return Ok((index, Recording(None)));
        }
        state.format = 1;
        state.registries.insert(
            key,
            SeenIndex {
                serial: index.serial,
                expires: index.expires,
                registry: self.registry.to_string(),
            },
        );
        let mut text = serde_json::to_vec_pretty(&state).map_err(|e| MarketplaceError::State {
            path: state_path.clone(),
            reason: e.to_string(),
        })?;
        text.push(b'\n');
        let path = state_path.clone();
        let recording = tokio::task::spawn_blocking(move || {
            // Held until the new state is in place.
            let _held = held;
            registry::write_atomically(&state_path, &text).map_err(|e| MarketplaceError::State {
                path: state_path.clone(),
                reason: e.to_string(),
            })
        });
        Ok((index, Recording(Some((path, recording)))))
    }

    /// Installs `name` `version` for this host's target into the cache (or
    /// finds it there, verified again), as described in the module docs.
    /// `key`: the key id it must be signed by (the locked one); `sha256`:
    /// the exact bytes it must be (the lock's).
    async fn fetch(
        &self,
        index: &Index,
        name: &str,
        version: &Version,
        key: Option<&str>,
        sha256: Option<&str>,
    ) -> Result<Installed, MarketplaceError> {
        let version_text = version.to_string();
        let refuse = |reason: String| MarketplaceError::Release {
            name: name.to_owned(),
            version: version_text.clone(),
            reason,
        };
        let reference = index.release_ref(name, &version_text).ok_or_else(|| {
            MarketplaceError::NoMatchingVersion {
                name: name.to_owned(),
                requirement: format!("={version}"),
                available: list_or(index.versions(name), "no versions"),
            }
        })?;
        let release = self.release(reference, name, version).await?;
        if !host_speaks(release.abi) {
            return Err(MarketplaceError::IncompatibleAbi {
                name: name.to_owned(),
                version: version_text,
                abi: release.abi,
                host_abi: ABI_VERSION,
            });
        }
        let artifact = release
            .targets
            .get(TARGET)
            .ok_or_else(|| MarketplaceError::NoTarget {
                name: name.to_owned(),
                version: version_text.clone(),
                target: TARGET.to_owned(),
                // The registry's text, quoted in an error message.
                available: list_or(
                    release
                        .targets
                        .keys()
                        .map(|target| crate::report::escape(target)),
                    "none",
                ),
            })?;
        let file_name = artifact_file_name(&release, artifact).map_err(refuse)?;
        if let Some(key) = key
            && release.publisher != key
        {
            return Err(MarketplaceError::KeyChanged {
                name: name.to_owned(),
                version: version_text,
                locked_key: key.to_owned(),
                new_key: release.publisher.clone(),
            });
        }
        if let Some(sha256) = sha256
            && artifact.sha256 != sha256
        {
            return Err(MarketplaceError::PinMismatch {
                name: name.to_owned(),
                version: version_text,
                registry_sha256: artifact.sha256.clone(),
                locked_sha256: sha256.to_owned(),
            });
        }
        let final_dir = self.version_dir(name, version, TARGET)?;
        let final_file = registry::join_component(&final_dir, "file name", &file_name)
            .map_err(MarketplaceError::UnsafePath)?;
        let plugin = |key_id: KeyId| LockedPlugin {
            name: name.to_owned(),
            version: version.clone(),
            target: TARGET.to_owned(),
            sha256: artifact.sha256.clone(),
            key_id: key_id.to_string(),
        };
        // Already in the cache: verified again, never trusted as it is (the
        // verified claims' sha256 is the file's own).
        // Read as the loader reads: regular files only, bounded sizes.
        if let Ok(bytes) = crate::loader::read_bounded(
            &final_file,
            crate::loader::SizeLimit::Plugin(self.max_download),
        ) && let Ok(text) = crate::loader::read_signature(&final_file)
            && let Ok(verified) = signature::verify(&bytes, &text, &self.trusted_keys)
            && verified.claims.sha256_hex() == artifact.sha256
            && let Ok(key_id) = self.accept(
                name,
                version,
                &final_file.display().to_string(),
                Ok(verified),
                key,
            )
        {
            return Ok(Installed {
                plugin: plugin(key_id),
                path: final_file,
                skipped: Vec::new(),
            });
        }
        create_dir(&self.cache_dir)?;
        let _held = self.hold_for_install()?;
        let staging = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(&self.cache_dir)
            .map_err(io_error("create a staging directory in", &self.cache_dir))?;
        let staged = registry::join_component(staging.path(), "file name", &file_name)
            .map_err(MarketplaceError::UnsafePath)?;
        let url = self.location(&artifact.path);
        // The signature first: one by a key that is not trusted is refused
        // before the download.
        let signature_url = self.location(&artifact.signature);
        let signature = self
            .fetch_small(&artifact.signature, SIGNATURE_LIMIT)
            .await?;
        let signature = String::from_utf8_lossy(&signature).into_owned();
        let verifier = StreamVerifier::new(&signature, &self.trusted_keys)
            .map_err(|source| self.refusal(name, version, &signature_url, source))?;
        let hashed = self
            .download(name, &version_text, artifact, &url, &staged, verifier)
            .await?;
        // The bytes are on disk only: the metadata record is read back from
        // the staged file (a few pages of it).
        let verified = match File::open(&staged) {
            Ok(file) => hashed.conclude(|| inspect::find_metadata_in_file(&file)),
            Err(e) => return Err(io_error("read back", &staged)(e)),
        };
        let key_id = self.accept(name, version, &signature_url, verified, key)?;
        let staged_signature = loader_signature_path(&staged);
        write_cached(&staged_signature, signature.as_bytes())?;
        // Commit: the staging directory becomes the version's directory.
        let parent = final_dir
            .parent()
            .map_or_else(|| self.cache_dir.clone(), Path::to_path_buf);
        create_dir(&parent)?;
        if final_dir.exists() {
            // Left by an older install whose file no longer verifies (or a
            // user's edit): moved aside, removed by the next cleanup.
            let aside = tempfile::Builder::new()
                .prefix(STAGING_PREFIX)
                .tempdir_in(&self.cache_dir)
                .map_err(io_error("create a staging directory in", &self.cache_dir))?
                .keep();
            std::fs::rename(&final_dir, aside.join("old"))
                .map_err(io_error("move aside", &final_dir))?;
        }
        let kept = staging.keep();
        std::fs::rename(&kept, &final_dir).map_err(|e| {
            let _ = std::fs::remove_dir_all(&kept);
            io_error("move the download into", &final_dir)(e)
        })?;
        Ok(Installed {
            plugin: plugin(key_id),
            path: final_file,
            skipped: Vec::new(),
        })
    }

    /// The refusal for a signature of `name` `version` (at `url`) that does
    /// not verify.
    fn refusal(
        &self,
        name: &str,
        version: &Version,
        url: &str,
        source: VerifyError,
    ) -> MarketplaceError {
        let version_text = version.to_string();
        match source {
            VerifyError::UntrustedKey { signed_by, trusted } => MarketplaceError::UntrustedKey {
                subject: Subject::new(name, &version_text, url),
                signed_by,
                trusted: list_or(trusted, "none"),
            },
            VerifyError::ClaimsMismatch {
                field: field @ ("name" | "version" | "target"),
                signed,
                actual,
            } => MarketplaceError::WrongComment {
                subject: Subject::new(name, &version_text, url),
                field,
                signed,
                expected: actual,
            },
            // Not a refusal: nothing could be checked.
            VerifyError::Thread(source) => MarketplaceError::Io {
                action: "start a thread to verify",
                path: PathBuf::from(url),
                source,
            },
            source => MarketplaceError::Signature {
                subject: Subject::new(name, &version_text, url),
                source,
            },
        }
    }

    /// Accepts the outcome of the signature check of `name` `version` (at
    /// `url`): it verified with a trusted key, its trusted comment names
    /// exactly `name`, `version` and this host's target, and (when given)
    /// `key` signed it. Returns the key id.
    fn accept(
        &self,
        name: &str,
        version: &Version,
        url: &str,
        verified: Result<Verified, VerifyError>,
        key: Option<&str>,
    ) -> Result<KeyId, MarketplaceError> {
        let version_text = version.to_string();
        let wrong_comment = |field: &'static str, signed: String, expected: String| {
            MarketplaceError::WrongComment {
                subject: Subject::new(name, &version_text, url),
                field,
                signed,
                expected,
            }
        };
        let verified = verified.map_err(|source| self.refusal(name, version, url, source))?;
        let claims = &verified.claims;
        for (field, signed, expected) in [
            ("name", &claims.name, name),
            ("version", &claims.version, version_text.as_str()),
            ("target", &claims.target, TARGET),
        ] {
            if signed != expected {
                return Err(wrong_comment(field, signed.clone(), expected.to_owned()));
            }
        }
        if let Some(key) = key
            && verified.key_id.to_string() != key
        {
            return Err(MarketplaceError::KeyChanged {
                name: name.to_owned(),
                version: version_text,
                locked_key: key.to_owned(),
                new_key: verified.key_id.to_string(),
            });
        }
        Ok(verified.key_id)
    }

    /// Streams the artifact into the file `to`, never more than its
    /// announced size nor `max_download`, through `verifier`; its sha256
    /// must be the release's. The file is written on a thread of its own,
    /// as the chunks come, and complete when this returns.
    async fn download(
        &self,
        name: &str,
        version: &str,
        artifact: &Artifact,
        url: &str,
        to: &Path,
        mut verifier: StreamVerifier,
    ) -> Result<Hashed, MarketplaceError> {
        let too_large = |size: u64| MarketplaceError::TooLarge {
            subject: Subject::new(name, version, url),
            size,
            limit: self.max_download,
        };
        let wrong_size = |received: u64, more: bool| MarketplaceError::WrongSize {
            subject: Subject::new(name, version, url),
            expected: artifact.size,
            received,
            more,
        };
        if artifact.size > self.max_download {
            return Err(too_large(artifact.size));
        }
        let bar = self.progress_bar(name, version, artifact.size);
        let mut pace = self.limits.start(url);
        let mut body = self.open(&artifact.path, url, &mut pace).await?;
        if let Some(length) = body.length()
            && length > artifact.size
        {
            return Err(wrong_size(length, true));
        }
        let file = StagedFile::create(to)?;
        let mut received = 0u64;
        while let Some(chunk) = body.next_chunk(url, &mut pace).await? {
            received += (*chunk).as_ref().len() as u64;
            if received > artifact.size {
                return Err(wrong_size(received, true));
            }
            if received > self.max_download {
                return Err(too_large(received));
            }
            verifier.update(&chunk);
            file.write(chunk);
            bar.set_position(received);
        }
        bar.finish_and_clear();
        if received != artifact.size {
            return Err(wrong_size(received, false));
        }
        // Waits for the hashing and writing threads, off the async workers.
        let (hashed, written) =
            tokio::task::spawn_blocking(move || (verifier.finish(), file.finish()))
                .await
                .map_err(|e| MarketplaceError::Fetch {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
        written?;
        let actual = hex::encode(hashed.sha256());
        if actual != artifact.sha256 {
            return Err(MarketplaceError::Tampered {
                subject: Subject::new(name, version, url),
                expected: artifact.sha256.clone(),
                actual,
            });
        }
        Ok(hashed)
    }

    fn progress_bar(&self, name: &str, version: &str, size: u64) -> indicatif::ProgressBar {
        if !self.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(size);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("{name} {version}"));
        bar
    }

    /// Opens a file of the registry for streaming, within the limits of
    /// `pace` (the answer's headers count as part of the transfer; so does
    /// opening a directory registry's file, which must be a regular file:
    /// [`open_regular`]).
    async fn open(
        &self,
        tree_path: &str,
        url: &str,
        pace: &mut Pace,
    ) -> Result<Body, MarketplaceError> {
        match (&self.registry, &self.client) {
            (RegistryLocation::Http(base), Some(client)) => {
                let full = base.join(tree_path).map_err(|e| MarketplaceError::Fetch {
                    url: url.to_owned(),
                    reason: e.to_string(),
                })?;
                let response = pace
                    .wait(async {
                        client
                            .get(full)
                            .send()
                            .await
                            .map_err(|e| fetch_error(url, &e))
                    })
                    .await?;
                if !response.status().is_success() {
                    return Err(MarketplaceError::Status {
                        url: url.to_owned(),
                        status: response.status().as_u16(),
                    });
                }
                Ok(Body::Http(response))
            }
            (RegistryLocation::Dir(root), _) => {
                let path = root.join(tree_path);
                let (named, opening) = (url.to_owned(), path);
                let opened = pace
                    .wait(async {
                        tokio::task::spawn_blocking(move || open_regular(&opening, &named))
                            .await
                            .map_err(|e| MarketplaceError::Fetch {
                                url: url.to_owned(),
                                reason: format!("the thread opening it failed: {e}"),
                            })?
                    })
                    .await?;
                Ok(Body::File(opened))
            }
            (RegistryLocation::Http(_), None) => Err(MarketplaceError::Client(String::from(
                "no HTTP client for an HTTP registry",
            ))),
        }
    }

    /// Reads a small file of the registry whole, refusing more than `limit`
    /// bytes.
    async fn fetch_small(&self, tree_path: &str, limit: u64) -> Result<Vec<u8>, MarketplaceError> {
        let url = self.location(tree_path);
        let mut pace = self.limits.start(&url);
        let mut body = self.open(tree_path, &url, &mut pace).await?;
        let too_large = || MarketplaceError::Fetch {
            url: url.clone(),
            reason: format!("it is larger than {limit} bytes, more than expected"),
        };
        if body.length().is_some_and(|length| length > limit) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next_chunk(&url, &mut pace).await? {
            let chunk = (*chunk).as_ref();
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(chunk);
        }
        Ok(bytes)
    }

    /// Takes the cache's install lock (shared), first removing staging
    /// directories left by killed installs when no other install runs.
    fn hold_for_install(&self) -> Result<Held, MarketplaceError> {
        let path = self.cache_dir.join(CACHE_LOCK);
        let file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => {
                self.clean_staging()?;
                file.unlock().map_err(io_error("unlock", &path))?;
            }
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error("lock", &path)(e)),
        }
        file.lock_shared().map_err(io_error("lock", &path))?;
        Ok(Held { _file: file })
    }

    /// Removes every staging directory (the caller holds the install lock
    /// exclusively: none is in use).
    fn clean_staging(&self) -> Result<(), MarketplaceError> {
        let entries = std::fs::read_dir(&self.cache_dir)
            .map_err(io_error("read the cache directory", &self.cache_dir))?;
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(STAGING_PREFIX)
            {
                let path = entry.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                if let Err(e) = removed {
                    tracing::warn!(path = %path.display(), "cannot remove a stale download: {e}");
                } else {
                    tracing::info!(path = %path.display(), "removed a stale download");
                }
            }
        }
        Ok(())
    }

    /// Takes the lock file `name` in the cache directory.
    fn hold(&self, name: &str, exclusive: bool) -> Result<Held, MarketplaceError> {
        create_dir(&self.cache_dir)?;
        let path = self.cache_dir.join(name);
        let file = open_lock_file(&path)?;
        if exclusive {
            file.lock().map_err(io_error("lock", &path))?;
        } else {
            file.lock_shared().map_err(io_error("lock", &path))?;
        }
        Ok(Held { _file: file })
    }
}

/// A registry file being read: an HTTP response or a local file.
enum Body {
    Http(reqwest::Response),
    File(Opened),
}

/// A regular file of a directory registry, opened by [`open_regular`], and
/// its size when it was opened.
struct Opened {
    file: tokio::fs::File,
    length: u64,
}

/// Opens the registry file `path` (`url` in messages) as the loader opens a
/// plugin ([`crate::loader::open_bounded`]): without blocking
/// (`O_NONBLOCK`: a FIFO with no writer does not hang the open), and only
/// if `fstat` of the opened descriptor says it is a regular file, so what
/// is checked is what is read. Reading it stays bounded by the caller
/// (sizes) and by the transfer's [`Pace`] (time).
fn open_regular(path: &Path, url: &str) -> Result<Opened, MarketplaceError> {
    let failed = |e: std::io::Error| MarketplaceError::Fetch {
        url: url.to_owned(),
        reason: e.to_string(),
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).map_err(failed)?;
    let metadata = file.metadata().map_err(failed)?;
    if !metadata.is_file() {
        return Err(MarketplaceError::NotRegular {
            path: path.to_owned(),
            kind: backworks_artifact::file::kind_of(&metadata.file_type()),
        });
    }
    Ok(Opened {
        file: tokio::fs::File::from_std(file),
        length: metadata.len(),
    })
}

impl Body {
    /// The size announced before the first byte: an HTTP answer's
    /// `Content-Length`, a file's size when it was opened. Only for
    /// refusing early; the bytes received are counted all the same.
    fn length(&self) -> Option<u64> {
        match self {
            Self::Http(response) => response.content_length(),
            Self::File(opened) => Some(opened.length),
        }
    }

    /// The next chunk, as received (never copied), within the limits of
    /// `pace`.
    async fn next_chunk(
        &mut self,
        url: &str,
        pace: &mut Pace,
    ) -> Result<Option<Chunk>, MarketplaceError> {
        let chunk = pace.wait(self.read_chunk(url)).await?;
        let size = chunk.as_ref().map_or(0, |chunk| (**chunk).as_ref().len());
        pace.observe(Instant::now(), size as u64)?;
        Ok(chunk)
    }

    async fn read_chunk(&mut self, url: &str) -> Result<Option<Chunk>, MarketplaceError> {
        match self {
            Self::Http(response) => response
                .chunk()
                .await
                .map(|chunk| chunk.map(|bytes| -> Chunk { Arc::new(bytes) }))
                .map_err(|e| fetch_error(url, &e)),
            Self::File(opened) => {
                let mut buffer = vec![0; 256 * 1024];
                let read =
                    opened
                        .file
                        .read(&mut buffer)
                        .await
                        .map_err(|e| MarketplaceError::Fetch {
                            url: url.to_owned(),
                            reason: e.to_string(),
                        })?;
                if read == 0 {
                    Ok(None)
                } else {
                    buffer.truncate(read);
                    Ok(Some(Arc::new(buffer)))
                }
            }
        }
    }
}

/// The limits of every transfer from a registry: `marketplace.
/// transfer_timeout` and `min_transfer_rate` (measured over `window`).
#[derive(Debug, Clone, Copy)]
struct TransferLimits {
    timeout: Duration,
    min_rate: u64,
    window: Duration,
}

impl TransferLimits {
    /// The pace of a transfer of `url` starting now.
    fn start(&self, url: &str) -> Pace {
        Pace::new(url, *self, Instant::now())
    }
}

/// One transfer's progress against its [`TransferLimits`]: an overall
/// deadline, and at least `min_rate` bytes per second over each window.
/// Checked when bytes arrive and, while none do, when the deadline or the
/// window's end comes ([`Pace::wait`]): a registry that drips a byte now
/// and then, keeping every read under the per-read timeout, is given up.
#[derive(Debug)]
struct Pace {
    url: String,
    limits: TransferLimits,
    deadline: Instant,
    window_start: Instant,
    window_bytes: u64,
}

impl Pace {
    fn new(url: &str, limits: TransferLimits, now: Instant) -> Self {
        Self {
            url: url.to_owned(),
            limits,
            deadline: now + limits.timeout,
            window_start: now,
            window_bytes: 0,
        }
    }

    /// When the limits are next checked if nothing arrives.
    fn next_check(&self) -> Instant {
        self.deadline.min(self.window_start + self.limits.window)
    }

    /// Counts `bytes` received at `now` and checks the limits: an error
    /// once the deadline has passed, or when a whole window went by with
    /// fewer bytes than the minimum rate asks for; each window's count
    /// starts afresh.
    fn observe(&mut self, now: Instant, bytes: u64) -> Result<(), MarketplaceError> {
        self.window_bytes = self.window_bytes.saturating_add(bytes);
        if now >= self.deadline {
            return Err(MarketplaceError::TransferTimeout {
                url: self.url.clone(),
                limit: self.limits.timeout,
            });
        }
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= self.limits.window {
            let needed = u128::from(self.limits.min_rate) * elapsed.as_millis() / 1000;
            if u128::from(self.window_bytes) < needed {
                return Err(MarketplaceError::TransferTooSlow {
                    url: self.url.clone(),
                    received: self.window_bytes,
                    window: elapsed,
                    rate: self.limits.min_rate,
                });
            }
            self.window_start = now;
            self.window_bytes = 0;
        }
        Ok(())
    }

    /// Runs `future` (a request or one read) to its end, checking the
    /// limits whenever the deadline or a window's end comes first. The
    /// future is kept and polled on after each check, never cancelled
    /// half-way, unless a limit is hit.
    async fn wait<T>(
        &mut self,
        future: impl Future<Output = Result<T, MarketplaceError>>,
    ) -> Result<T, MarketplaceError> {
        let mut future = std::pin::pin!(future);
        loop {
            let check = tokio::time::Instant::from_std(self.next_check());
            match tokio::time::timeout_at(check, future.as_mut()).await {
                Ok(outcome) => return outcome,
                Err(_) => self.observe(Instant::now(), 0)?,
            }
        }
    }
}

/// A duration as a person writes it: `2s`, `1m 30s`, `750ms`.
fn humane(duration: Duration) -> String {
    let (secs, millis) = (duration.as_secs(), duration.subsec_millis());
    match (secs, millis) {
        (0, millis) => format!("{millis}ms"),
        (secs, 0) if secs >= 60 && secs % 60 == 0 => format!("{}m", secs / 60),
        (secs, 0) if secs >= 60 => format!("{}m {}s", secs / 60, secs % 60),
        (secs, 0) => format!("{secs}s"),
        (secs, millis) => format!("{secs}.{millis:03}s"),
    }
}

/// A download's file in its staging directory, written on a thread of its
/// own as the chunks arrive, so that writing overlaps receiving and hashing.
/// Not flushed to disk (see [`write_cached`]). Dropped before
/// [`StagedFile::finish`], the thread writes what it was given and ends.
struct StagedFile {
    path: PathBuf,
    chunks: Sender<Chunk>,
    thread: JoinHandle<std::io::Result<()>>,
}

impl StagedFile {
    fn create(path: &Path) -> Result<Self, MarketplaceError> {
        let mut file = File::create(path).map_err(io_error("create", path))?;
        let (chunks, received) = mpsc::channel::<Chunk>();
        let thread = std::thread::Builder::new()
            .name(String::from("backworks-download"))
            .spawn(move || {
                for chunk in received {
                    file.write_all((*chunk).as_ref())?;
                }
                Ok(())
            })
            .map_err(io_error("start a thread to write", path))?;
        Ok(Self {
            path: path.to_owned(),
            chunks,
            thread,
        })
    }

    /// Queues the next chunk; never blocks. A write that failed is reported
    /// by `finish`.
    fn write(&self, chunk: Chunk) {
        let _ = self.chunks.send(chunk);
    }

    /// Waits until every chunk is written.
    fn finish(self) -> Result<(), MarketplaceError> {
        drop(self.chunks);
        self.thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .map_err(io_error("write", &self.path))
    }
}

/// The artifact's file name, after checking that the release keeps its
/// files in its own directory (`plugins/<name>/<version>/<target>/<file>`,
/// signature at `<file>.minisig`).
fn artifact_file_name(release: &Release, artifact: &Artifact) -> Result<String, String> {
    let dir = format!("plugins/{}/{}/{TARGET}/", release.name, release.version);
    let file = artifact
        .path
        .strip_prefix(&dir)
        .filter(|file| registry::check_file_name(file).is_ok())
        .ok_or_else(|| {
            format!(
                "its artifact path {:?} is not a file in {dir}",
                artifact.path
            )
        })?;
    let expected = format!("{}{}", artifact.path, api::SIGNATURE_SUFFIX);
    if artifact.signature != expected {
        return Err(format!(
            "its signature path {:?} is not {expected:?}",
            artifact.signature,
        ));
    }
    Ok(file.to_owned())
}

fn loader_signature_path(path: &Path) -> PathBuf {
    crate::loader::signature_path(path)
}

/// `items` joined with commas, or `empty` when there are none.
fn list_or<T: fmt::Display>(items: impl IntoIterator<Item = T>, empty: &str) -> String {
    let list = items
        .into_iter()
        .map(|item| item.to_string())
        .collect::<Vec<_>>();
    if list.is_empty() {
        empty.to_owned()
    } else {
        list.join(", ")
    }
}

/// The HTTP client: rustls with the ring provider (installed once per
/// process), bounded connect and read times. The system's root certificates
/// are read only for an `https://` registry: reading them costs tens of
/// milliseconds (a third of a 10 MB install from a loopback registry,
/// measured with `cargo bench --bench install`), and a plain `http://`
/// registry never uses them (a redirect to `https://` then fails its
/// certificate check: name the `https://` URL in the config instead).
fn http_client(url: &reqwest::Url) -> Result<reqwest::Client, MarketplaceError> {
    // Another part of the process may have installed a provider already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let builder = if url.scheme() == "https" {
        reqwest::Client::builder()
    } else {
        reqwest::Client::builder().tls_certs_only([])
    };
    builder
        .user_agent(concat!("backworks/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| MarketplaceError::Client(error_chain(&e)))
}

async fn read_response(
    response: reqwest::Response,
    url: &str,
    limit: u64,
    pace: &mut Pace,
) -> Result<Vec<u8>, MarketplaceError> {
    if !response.status().is_success() {
        return Err(MarketplaceError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let mut body = Body::Http(response);
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next_chunk(url, pace).await? {
        let chunk = (*chunk).as_ref();
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err(MarketplaceError::Fetch {
                url: url.to_owned(),
                reason: format!("the answer is larger than {limit} bytes"),
            });
        }
        bytes.extend_from_slice(chunk);
    }
    Ok(bytes)
}

fn fetch_error(url: &str, error: &reqwest::Error) -> MarketplaceError {
    MarketplaceError::Fetch {
        url: url.to_owned(),
        reason: error_chain(error),
    }
}

/// An error and its sources, joined: reqwest's own message alone says
/// little ("error sending request").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn create_dir(dir: &Path) -> Result<(), MarketplaceError> {
    std::fs::create_dir_all(dir).map_err(io_error("create", dir))
}

fn open_lock_file(path: &Path) -> Result<File, MarketplaceError> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_error("open the lock file", path))
}

/// Writes a file of the cache. Not flushed to disk: the cache is verified
/// again every time it is used (sha256, signature, the lock's pin), so what
/// a crash can leave half-written is refused and downloaded again, never
/// loaded; flushing 10 MB costed more than the download (measured with
/// `cargo bench --bench install`). The lock file and the registry state are
/// flushed before they replace the old ones.
fn write_cached(path: &Path, bytes: &[u8]) -> Result<(), MarketplaceError> {
    std::fs::write(path, bytes).map_err(io_error("write", path))
}

fn read_state(path: &Path) -> Result<State, MarketplaceError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| MarketplaceError::State {
            path: path.to_owned(),
            reason: format!("not a registry state file: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(io_error("read", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        let (name, requirement) = parse_spec("weather").unwrap();
        assert_eq!((name.as_str(), requirement), ("weather", VersionReq::STAR));
        let (_, exact) = parse_spec("weather@1.0.0").unwrap();
        assert!(exact.matches(&Version::new(1, 0, 0)));
        assert!(!exact.matches(&Version::new(1, 0, 1)));
        let (_, caret) = parse_spec("weather@1.0").unwrap();
        assert!(caret.matches(&Version::new(1, 4, 0)));
        let (_, range) = parse_spec("weather@>=1.0, <2").unwrap();
        assert!(range.matches(&Version::new(1, 9, 9)) && !range.matches(&Version::new(2, 0, 0)));
        for bad in [
            "",
            "@1.0",
            "Weather",
            "weather@",
            "weather@one",
            "we/ather@1",
        ] {
            let error = parse_spec(bad).unwrap_err();
            assert!(
                matches!(error, MarketplaceError::InvalidSpec { .. }),
                "{bad}"
            );
            assert_eq!(error.exit_code(), 2);
        }
    }

    /// A client configured in `dir` for a registry at a closed port, with
    /// a made-up registry key: nothing is fetched.
    fn client_in(dir: &Path) -> PluginMarketplace {
        let key = {
            let mut bytes = b"Ed".to_vec();
            bytes.extend([7; 40]);
            PublicKey::from_bytes(&bytes).unwrap().to_base64()
        };
        let config = crate::config::parse(
            &format!("marketplace:\n  registry: http://127.0.0.1:9/\n  key: {key}\n"),
            &dir.join("backworks.yaml"),
            &|_| None,
        )
        .unwrap();
        PluginMarketplace::from_config(&config).unwrap()
    }

    /// The automatic updater runs the client on tokio tasks: it and its
    /// futures move between threads.
    #[test]
    fn the_client_and_its_futures_are_send() {
        fn send<T: Send>(_: &T) {}
        fn send_sync<T: Send + Sync>() {}
        send_sync::<PluginMarketplace>();
        let dir = tempfile::tempdir().unwrap();
        let client = client_in(dir.path()).with_progress(false);
        assert_eq!(client.lock_path(), dir.path().join("backworks.lock"));
        assert_eq!(client.cache_dir(), dir.path().join(".backworks/plugins"));
        // Futures do nothing until polled: these are only type checks.
        send(&client.search("weather"));
        send(&client.install("weather", &VersionReq::STAR));
        send(&client.update(None));
        send(&client.download_update("weather"));
        send(&client.remove("weather"));
        send(&client.prepare(&[], ServeMode::default()));
    }

    #[test]
    fn the_cached_library_is_the_only_one_or_an_error_and_paths_stay_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let client = client_in(dir.path());
        let pin = |name: &str, target: &str| LockedPlugin {
            name: name.to_owned(),
            version: Version::new(1, 0, 0),
            target: target.to_owned(),
            sha256: String::new(),
            key_id: String::new(),
        };
        let weather = pin("weather", TARGET);
        assert_eq!(client.cached(&weather).unwrap(), None);
        let version_dir = client.cache_dir().join(format!("weather/1.0.0/{TARGET}"));
        std::fs::create_dir_all(&version_dir).unwrap();
        for file in ["b.so", "b.so.minisig", ".staged"] {
            std::fs::write(version_dir.join(file), b"x").unwrap();
        }
        assert_eq!(
            client.cached(&weather).unwrap(),
            Some(version_dir.join("b.so"))
        );
        // A second library: which one the lock pins is unknown, whatever
        // the directory order.
        std::fs::write(version_dir.join("a.so"), b"x").unwrap();
        let error = client.cached(&weather).unwrap_err();
        assert!(
            matches!(&error, MarketplaceError::AmbiguousCache { files, .. } if files == "a.so, b.so"),
            "{error}"
        );
        // A lock (or registry) naming paths: refused, never joined.
        for hostile in [pin("../../etc", TARGET), pin("weather", "../../..")] {
            let error = client.cached(&hostile).unwrap_err();
            assert!(matches!(error, MarketplaceError::UnsafePath(_)), "{error}");
        }
    }

    #[test]
    fn a_transfer_is_given_up_at_its_deadline_or_below_the_minimum_rate() {
        let limits = TransferLimits {
            timeout: Duration::from_secs(100),
            min_rate: 10,
            window: Duration::from_secs(30),
        };
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        // 10 bytes per second on average, in bursts: fine until the
        // deadline, then given up whatever the rate.
        let mut pace = Pace::new("http://registry/x", limits, start);
        assert_eq!(pace.next_check(), at(30));
        for secs in [10, 20, 30] {
            pace.observe(at(secs), 100).unwrap();
        }
        assert_eq!(pace.next_check(), at(60), "a new window");
        for secs in [40, 50, 60, 70, 80, 90] {
            pace.observe(at(secs), 100).unwrap();
        }
        let error = pace.observe(at(100), 100).unwrap_err().to_string();
        assert!(
            error.contains("http://registry/x")
                && error.contains("`marketplace.transfer_timeout` (1m 40s)"),
            "{error}"
        );
        // A drip: a byte every 5 s is 6 bytes in 30 s, below 300.
        let mut pace = Pace::new("http://registry/y", limits, start);
        for secs in [5, 10, 15, 20, 25] {
            pace.observe(at(secs), 1).unwrap();
        }
        let error = pace.observe(at(30), 1).unwrap_err().to_string();
        assert!(
            error.contains("http://registry/y")
                && error.contains("6 bytes came in 30s")
                && error.contains("`marketplace.min_transfer_rate` (10 bytes per second)"),
            "{error}"
        );
        // Nothing at all: the check at the window's end gives up.
        let mut pace = Pace::new("http://registry/z", limits, start);
        assert!(pace.observe(at(29), 0).is_ok());
        assert!(pace.observe(at(30), 0).is_err());
        assert_eq!(humane(Duration::from_millis(750)), "750ms");
        assert_eq!(humane(Duration::from_secs(2)), "2s");
        assert_eq!(humane(Duration::from_secs(600)), "10m");
    }

    #[test]
    fn artifact_paths_stay_in_their_directory() {
        let artifact = |path: &str, signature: &str| Artifact {
            path: path.to_owned(),
            signature: signature.to_owned(),
            sha256: String::new(),
            size: 0,
        };
        let release = Release {
            format: 1,
            name: String::from("weather"),
            version: String::from("1.0.0"),
            description: String::new(),
            keywords: Vec::new(),
            abi: 1,
            publisher: String::new(),
            published: 0,
            targets: std::collections::BTreeMap::new(),
        };
        let dir = format!("plugins/weather/1.0.0/{TARGET}");
        let good = format!("{dir}/libweather.so");
        assert_eq!(
            artifact_file_name(&release, &artifact(&good, &format!("{good}.minisig"))),
            Ok(String::from("libweather.so"))
        );
        for (path, signature) in [
            (format!("{dir}/../../../../etc/passwd"), String::new()),
            (format!("{dir}/"), String::new()),
            (format!("{dir}/.hidden"), String::new()),
            (String::from("plugins/other/1.0.0/x/lib.so"), String::new()),
            (good.clone(), String::from("elsewhere.minisig")),
        ] {
            let signature = if signature.is_empty() {
                format!("{path}.minisig")
            } else {
                signature
            };
            assert!(
                artifact_file_name(&release, &artifact(&path, &signature)).is_err(),
                "{path}"
            );
        }
    }
}
