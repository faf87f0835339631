//! Reads `backworks.yaml`, the host's configuration: where it listens, how
//! long hooks may take, where plugins are and which keys may sign them, and
//! which plugins to run with which settings. The format is documented in
//! `docs/config.md`; this is the only module that knows it.
//!
//! [`parse`] checks everything it can before the server starts: unknown
//! fields (outside a plugin's free-form `config`), types, durations,
//! addresses, plugin types and names, that files and directories exist, that
//! keys parse, and that every `${VAR}` is set. Each error names the file, the
//! line, the field and, where there is one, the fix. Nothing here panics on
//! any input.
//!
//! The `marketplace:` and `updates:` sections say where `type: marketplace`
//! plugins come from (registry, its key, the cache) and which newer versions
//! may replace the locked ones; [`Config::marketplace`] is how a caller that
//! needs a registry gets one (a clear error when the section is missing).

mod file;
mod path;
mod read;
mod text;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use backworks_artifact::signature::{KeyId, PublicKey};
use serde_yaml::Value;

use crate::http_serve::ConnectionLimits;
use path::Seg;
use read::Reader;
pub use text::{MAX_DURATION, parse_duration, parse_size};

/// The built-in plugins this host has (compiled in), by name.
pub const BUILTINS: &[&str] = &["auth"];

/// `server.listen` when it is not given: `127.0.0.1:8080`.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8080));
/// `server.hook_timeout` when it is not given.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// `server.shutdown_timeout` when it is not given.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// `server.watchdog.threshold` when it is not given.
pub const DEFAULT_WATCHDOG_THRESHOLD: Duration = Duration::from_millis(100);

/// Where a plugin's hooks run (`isolation:` of its entry, else
/// `server.isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// On the server's own async workers, with no hand-off: for plugins the
    /// operator trusts not to block (a hook that does holds a worker; the
    /// watchdog reports it and, by `server.watchdog.action`, moves the
    /// plugin to `thread`).
    Inline,
    /// On the hook pool's threads: a hook that blocks costs a pool thread,
    /// never a server worker.
    #[default]
    Thread,
    /// In a worker process of its own, supervised by the host
    /// (`crate::process`): a crash, an abort or `exit()` in the plugin
    /// costs the requests in flight in it (502) and a restart, never the
    /// server. Linux only.
    Process,
}

impl Isolation {
    /// The tiers by name, as `backworks.yaml` writes them.
    pub const NAMES: &[&str] = &["inline", "thread", "process"];

    /// The name as `backworks.yaml`, `/plugins` and the log write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inline => "inline",
            Self::Thread => "thread",
            Self::Process => "process",
        }
    }

    /// The tier called `name` (one of [`Self::NAMES`]).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "inline" => Some(Self::Inline),
            "thread" => Some(Self::Thread),
            "process" => Some(Self::Process),
            _ => None,
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the watchdog does when an `inline` hook keeps a server worker busy
/// past `server.watchdog.threshold` (`server.watchdog.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchdogAction {
    /// Report it (log, `/metrics`, `/healthz`) and run the plugin's later
    /// requests in the `thread` tier, until the server restarts.
    #[default]
    Move,
    /// Report it only.
    Report,
}

impl WatchdogAction {
    /// The actions by name, as `backworks.yaml` writes them.
    pub const NAMES: &[&str] = &["move", "report"];

    /// The name as `backworks.yaml` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Move => "move",
            Self::Report => "report",
        }
    }
}

/// `server.watchdog`: how the server watches its `inline` plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// How long one `inline` hook may keep a server worker busy before it
    /// is reported (default [`DEFAULT_WATCHDOG_THRESHOLD`]).
    pub threshold: Duration,
    /// What then happens to the plugin.
    pub action: WatchdogAction,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_WATCHDOG_THRESHOLD,
            action: WatchdogAction::default(),
        }
    }
}

/// `server.process`: how the `process` tier supervises and confines its
/// workers (`docs/config.md`, "Isolation").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessConfig {
    /// `max_crashes` within `crash_window` mark a plugin failed (503 until
    /// it is replaced or the server restarts).
    pub max_crashes: u32,
    /// See `max_crashes`.
    pub crash_window: Duration,
    /// How much address space a worker may add to its size before the
    /// plugin is loaded (`RLIMIT_AS`), in bytes.
    pub memory: u64,
    /// The worker's open-file limit (`RLIMIT_NOFILE`).
    pub open_files: u64,
}

/// `server.process.max_crashes` when it is not given.
pub const DEFAULT_MAX_CRASHES: u32 = 5;
/// `server.process.crash_window` when it is not given.
pub const DEFAULT_CRASH_WINDOW: Duration = Duration::from_secs(60);
/// `server.process.memory` when it is not given: 4 GiB of address space
/// for the plugin (its runtime's threads and their allocators' arenas
/// reserve far more than they use).
pub const DEFAULT_WORKER_MEMORY: u64 = 4 << 30;
/// The smallest `server.process.memory` accepted.
pub const MIN_WORKER_MEMORY: u64 = 64 << 20;
/// `server.process.open_files` when it is not given.
pub const DEFAULT_WORKER_OPEN_FILES: u64 = 1024;

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            max_crashes: DEFAULT_MAX_CRASHES,
            crash_window: DEFAULT_CRASH_WINDOW,
            memory: DEFAULT_WORKER_MEMORY,
            open_files: DEFAULT_WORKER_OPEN_FILES,
        }
    }
}

/// The host's own endpoints: what `server.public` may list.
pub const HOST_ENDPOINTS: &[&str] = &["/healthz", "/plugins", "/metrics"];
const PLUGIN_TYPES: &[&str] = &["builtin", "external", "marketplace"];
const ALLOW_VALUES: &[&str] = &["patch", "minor", "major"];

/// `marketplace.cache_dir` when it is not given (relative to the
/// configuration file's directory).
pub const DEFAULT_CACHE_DIR: &str = ".backworks/plugins";
/// `marketplace.max_download` when it is not given: 256 MiB.
pub const DEFAULT_MAX_DOWNLOAD: u64 = 256 * 1024 * 1024;
/// `marketplace.transfer_timeout` when it is not given: 10 minutes, the
/// whole of one file's transfer (256 MiB at 3.5 Mbit/s).
pub const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);
/// `marketplace.min_transfer_rate` when it is not given: 1 KiB per second,
/// measured over every [`RATE_WINDOW`].
pub const DEFAULT_MIN_TRANSFER_RATE: u64 = 1024;
/// The time over which `marketplace.min_transfer_rate` is measured: a
/// transfer slower than the rate over any such stretch is given up.
pub const RATE_WINDOW: Duration = Duration::from_secs(30);

/// The host's configuration, read from `backworks.yaml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The configuration file.
    pub path: PathBuf,
    /// `server.listen`: the address the server binds (default
    /// `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// `server.hook_timeout`: how long one plugin hook may run (default 5s).
    pub hook_timeout: Duration,
    /// `server.shutdown_timeout`: how long shutdown waits for requests and
    /// plugins (default 10s).
    pub shutdown_timeout: Duration,
    /// `server.header_timeout`, `server.idle_timeout` and
    /// `server.max_connections`: how long a client may take to send a
    /// request head or stay idle, and how many connections may be open.
    pub limits: ConnectionLimits,
    /// `server.isolation`: the tier of plugins whose entry names none
    /// (default `thread`).
    pub isolation: Isolation,
    /// `server.watchdog`: how `inline` hooks that block are handled.
    pub watchdog: WatchdogConfig,
    /// `server.process`: the `process` tier's supervision and limits.
    pub process: ProcessConfig,
    /// `server.public`: the host's endpoints (of [`HOST_ENDPOINTS`]) served
    /// without the plugins' `before_request` (so without authentication);
    /// a public `/healthz` only says that the server is up.
    pub public: Vec<String>,
    /// `plugin_dirs`: directories searched for plugins, resolved against the
    /// configuration file's directory; each exists.
    pub plugin_dirs: Vec<PathBuf>,
    /// `trusted_keys`: the minisign public keys plugin signatures may be
    /// made with.
    pub trusted_keys: Vec<TrustedKey>,
    /// `require_signatures`: refuse plugins without a valid signature by a
    /// trusted key (default `true`).
    pub require_signatures: bool,
    /// `max_plugin_size`: the largest plugin library read, in bytes (default
    /// [`crate::loader::DEFAULT_MAX_PLUGIN_SIZE`], 256 MiB).
    pub max_plugin_size: u64,
    /// `plugins`: the plugins to run, in file order.
    pub plugins: Vec<PluginConfig>,
    /// `marketplace`: the registry `type: marketplace` plugins come from;
    /// `None` when the section is absent (see [`Config::marketplace`]).
    pub marketplace: Option<MarketplaceConfig>,
    /// `updates`: which newer versions may replace locked ones.
    pub updates: UpdatesConfig,
}

impl Config {
    /// The `marketplace:` section, or the error to report when it is
    /// missing: at the first `type: marketplace` plugin (file, line, field),
    /// or at the top of the file when no plugin needs it but the caller
    /// does (`backworks plugins install`).
    pub fn marketplace(&self) -> Result<&MarketplaceConfig, ConfigError> {
        if let Some(marketplace) = &self.marketplace {
            return Ok(marketplace);
        }
        let example = "add a `marketplace:` section naming the registry and its key, e.g. `marketplace: {registry: ./registry, key: ./keys/registry.pub}` (see docs/config.md)";
        Err(
            match self
                .plugins
                .iter()
                .find(|p| matches!(p.kind, PluginKind::Marketplace { .. }))
            {
                Some(plugin) => ConfigError::Invalid {
                    path: self.path.clone(),
                    line: plugin.line,
                    field: format!("plugins.{}", plugin.name),
                    message: format!(
                        "a `type: marketplace` plugin needs a registry, and this file has no `marketplace:` section; {example}"
                    ),
                },
                None => ConfigError::Invalid {
                    path: self.path.clone(),
                    line: None,
                    field: String::from("marketplace"),
                    message: format!("the section is missing; {example}"),
                },
            },
        )
    }
}

/// `marketplace:`: where `type: marketplace` plugins are downloaded from and
/// kept.
#[derive(Clone)]
pub struct MarketplaceConfig {
    /// `registry`: a directory, a `file://` URL or an `http(s)://` base URL.
    pub registry: RegistryLocation,
    /// `key`: the registry's public key, which must sign its index.
    pub key: PublicKey,
    /// Where the key comes from: the key file's path, or `inline key`.
    pub key_origin: String,
    /// `cache_dir`: downloaded plugins and the registry state, resolved
    /// against the configuration file's directory (default
    /// [`DEFAULT_CACHE_DIR`]); created when first needed.
    pub cache_dir: PathBuf,
    /// `max_download`: the largest artifact the client downloads, in bytes
    /// (default [`DEFAULT_MAX_DOWNLOAD`]).
    pub max_download: u64,
    /// `transfer_timeout`: how long the transfer of one file from the
    /// registry may take in all, request to last byte (default
    /// [`DEFAULT_TRANSFER_TIMEOUT`]).
    pub transfer_timeout: Duration,
    /// `min_transfer_rate`: the fewest bytes per second a transfer must
    /// average over every [`RATE_WINDOW`] (default
    /// [`DEFAULT_MIN_TRANSFER_RATE`]).
    pub min_transfer_rate: u64,
}

impl fmt::Debug for MarketplaceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MarketplaceConfig")
            .field("registry", &self.registry)
            .field(
                "key_id",
                &format_args!("{}", KeyId::of_public_key(&self.key)),
            )
            .field("key_origin", &self.key_origin)
            .field("cache_dir", &self.cache_dir)
            .field("max_download", &self.max_download)
            .field("transfer_timeout", &self.transfer_timeout)
            .field("min_transfer_rate", &self.min_transfer_rate)
            .finish()
    }
}

/// Where a registry is: the three forms of `marketplace.registry`, read by
/// the one parser of `backworks-registry` (a plain path resolved against
/// the configuration file's directory).
pub use backworks_registry::Location as RegistryLocation;

/// `updates:`: the policy of `backworks plugins update` and of automatic
/// updates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdatesConfig {
    /// `check_interval`: how often the server looks for updates; `None`
    /// (`off`, the default) never.
    pub check_interval: Option<Duration>,
    /// `allow`: how far from the locked version an update may go (default
    /// `minor`).
    pub allow: Allow,
    /// `plugins`: a semver requirement per plugin, used instead of `allow`;
    /// each names a `type: marketplace` plugin.
    pub plugins: Vec<(String, semver::VersionReq)>,
}

impl UpdatesConfig {
    /// The per-plugin requirement of `name`, if any.
    pub fn requirement(&self, name: &str) -> Option<&semver::VersionReq> {
        self.plugins
            .iter()
            .find(|(plugin, _)| plugin == name)
            .map(|(_, requirement)| requirement)
    }
}

/// `updates.allow`: the newest versions an update may move to, relative to
/// the locked one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Allow {
    /// Same major and minor version (`1.2.3` → `1.2.9`).
    Patch,
    /// Same major version (`1.2.3` → `1.9.0`); for `0.x`, as Cargo's caret,
    /// the same minor version.
    #[default]
    Minor,
    /// Any newer version.
    Major,
}

impl Allow {
    /// Whether an update from `locked` to `candidate` (newer) is allowed.
    /// Pre-releases are never picked by a policy (name them in a per-plugin
    /// requirement).
    pub fn permits(self, locked: &semver::Version, candidate: &semver::Version) -> bool {
        if !candidate.pre.is_empty() {
            return false;
        }
        match self {
            Self::Patch => (candidate.major, candidate.minor) == (locked.major, locked.minor),
            Self::Minor if locked.major == 0 => {
                (candidate.major, candidate.minor) == (locked.major, locked.minor)
            }
            Self::Minor => candidate.major == locked.major,
            Self::Major => true,
        }
    }
}

impl fmt::Display for Allow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Patch => "patch",
            Self::Minor => "minor",
            Self::Major => "major",
        })
    }
}

/// A public key plugin signatures may be made with.
#[derive(Clone)]
pub struct TrustedKey {
    /// Where the key comes from: the key file's path (resolved), or
    /// `inline key #n` for the n-th entry (from 1) of `trusted_keys`.
    pub origin: String,
    /// The key.
    pub key: PublicKey,
}

impl fmt::Debug for TrustedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedKey")
            .field("origin", &self.origin)
            .field(
                "key_id",
                &format_args!("{}", KeyId::of_public_key(&self.key)),
            )
            .finish()
    }
}

/// One entry of `plugins`.
#[derive(Clone)]
pub struct PluginConfig {
    /// The plugin's name: the key of its entry.
    pub name: String,
    /// The line (from 1) of its entry in the file, when found.
    pub line: Option<usize>,
    /// Where the plugin comes from.
    pub kind: PluginKind,
    /// Where its hooks run: the entry's `isolation`, else
    /// `server.isolation`.
    pub isolation: Isolation,
    /// The entry's `config` map as JSON (with `${VAR}` substituted), handed
    /// to the plugin's `initialize`; `Null` when absent.
    pub config: serde_json::Value,
}

/// Debug shows the keys of `config` only: its values may be secrets.
impl fmt::Debug for PluginConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginConfig")
            .field("name", &self.name)
            .field("line", &self.line)
            .field("kind", &self.kind)
            .field("isolation", &self.isolation)
            .field("config", &Redacted(&self.config))
            .finish()
    }
}

/// Shows the keys of a JSON object and hides every value.
struct Redacted<'a>(&'a serde_json::Value);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            serde_json::Value::Null => f.write_str("Null"),
            serde_json::Value::Object(map) => f
                .debug_map()
                .entries(map.keys().map(|key| (key, format_args!("<redacted>"))))
                .finish(),
            _ => f.write_str("<redacted>"),
        }
    }
}

/// Where a plugin comes from (its entry's `type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginKind {
    /// `type: builtin`: compiled into the host; the name is one of
    /// [`BUILTINS`].
    Builtin,
    /// `type: external`: a plugin library on disk.
    External {
        /// The library, resolved against the configuration file's
        /// directory; it exists and is a file.
        path: PathBuf,
    },
    /// `type: marketplace`: downloaded from the marketplace.
    Marketplace {
        /// `version` as written (after `${VAR}` substitution).
        version: String,
        /// `version` parsed as a semver requirement (`1.2.0` means
        /// `^1.2.0`, as in Cargo; `=1.2.0` is exact).
        requirement: semver::VersionReq,
    },
}

/// Why the configuration cannot be used. Every variant's message names the
/// file, and the line and field when there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML (or holds more than one document).
    #[error("{}: invalid yaml: {message}", at(path, *line))]
    Syntax {
        /// The configuration file.
        path: PathBuf,
        /// The line (from 1), when the YAML parser knows it.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// The file holds no settings at all.
    #[error(
        "{}: the file is empty; list the plugins to run under `plugins:` (see docs/config.md)",
        path.display()
    )]
    Empty {
        /// The configuration file.
        path: PathBuf,
    },
    /// A field that is not part of the format.
    #[error(
        "{}: {field}: unknown field `{name}`{}; the fields allowed here are {}",
        at(path, *line),
        suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default(),
        list(allowed)
    )]
    UnknownField {
        /// The configuration file.
        path: PathBuf,
        /// The line (from 1) of the field, when found.
        line: Option<usize>,
        /// The field's path, e.g. `server.listn`.
        field: String,
        /// The field's name, e.g. `listn`.
        name: String,
        /// The fields allowed where it is.
        allowed: &'static [&'static str],
        /// An allowed field with a similar name.
        suggestion: Option<&'static str>,
    },
    /// `${VAR}` names an environment variable that is not set.
    #[error(
        "{}: {field}: environment variable `{variable}` is not set; set it, or give a default with `${{{variable}:-default}}`",
        at(path, *line)
    )]
    MissingVariable {
        /// The configuration file.
        path: PathBuf,
        /// The line (from 1) of the field, when found.
        line: Option<usize>,
        /// The field's path, e.g. `plugins.stripe-plugin.config.api_key`.
        field: String,
        /// The variable.
        variable: String,
    },
    /// A field has a value that is not allowed.
    #[error("{}: {}{message}", at(path, *line), prefix(field))]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// The line (from 1) of the field, when found.
        line: Option<usize>,
        /// The field's path, e.g. `server.listen`; empty for the whole
        /// document.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl ConfigError {
    /// The process exit code for a configuration error: 2 (usage or I/O
    /// error), as for every other error of the `backworks` command line.
    pub fn exit_code(&self) -> u8 {
        2
    }

    /// The configuration file.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. }
            | Self::Syntax { path, .. }
            | Self::Empty { path }
            | Self::UnknownField { path, .. }
            | Self::MissingVariable { path, .. }
            | Self::Invalid { path, .. } => path,
        }
    }

    /// The line (from 1) the error is about, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Read { .. } | Self::Empty { .. } => None,
            Self::Syntax { line, .. }
            | Self::UnknownField { line, .. }
            | Self::MissingVariable { line, .. }
            | Self::Invalid { line, .. } => *line,
        }
    }
}

/// `file:line` or `file`.
fn at(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    }
}

/// `field: `, or nothing for the whole document.
fn prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

/// `` `a`, `b`, `c` ``.
fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the configuration file `path`, with `${VAR}` taken from the
/// process environment.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path, &|name| std::env::var(name).ok())
}

/// Reads a configuration from `text`, the contents of the file `path`
/// (used in messages and to resolve relative paths), with `${VAR}` taken
/// from `env`. Checks that the files and directories it names exist.
///
/// Three steps: the YAML parser (syntax, duplicate keys); the declared
/// structure of the file (`file`, serde derives: unknown fields); then each
/// value and each check across fields (`read`), which sees the environment
/// and the file's directory.
pub fn parse(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let document: Value = serde_yaml::from_str(text).map_err(|error| ConfigError::Syntax {
        path: path.to_owned(),
        line: error.location().map(|location| location.line()),
        message: error.to_string(),
    })?;
    Reader {
        path,
        text,
        base: path.parent().unwrap_or(Path::new("")),
        env,
    }
    .config(&document)
}

#[cfg(test)]
mod tests;
