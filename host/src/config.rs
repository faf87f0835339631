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

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use backworks_artifact::signature::{self, KeyId, PublicKey};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_yaml::{Mapping, Value};

use crate::http_serve::ConnectionLimits;

/// The built-in plugins this host has (compiled in), by name.
pub const BUILTINS: &[&str] = &["auth"];

/// `server.listen` when it is not given: `127.0.0.1:8080`.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8080));
/// `server.hook_timeout` when it is not given.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// `server.shutdown_timeout` when it is not given.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

const TOP_FIELDS: &[&str] = &[
    "server",
    "plugin_dirs",
    "trusted_keys",
    "require_signatures",
    "max_plugin_size",
    "plugins",
    "marketplace",
    "updates",
];
const SERVER_FIELDS: &[&str] = &[
    "listen",
    "hook_timeout",
    "shutdown_timeout",
    "header_timeout",
    "idle_timeout",
    "max_connections",
    "public",
];

/// The host's own endpoints: what `server.public` may list.
pub const HOST_ENDPOINTS: &[&str] = &["/healthz", "/plugins", "/metrics"];
const KEY_FIELDS: &[&str] = &["file", "key"];
const PLUGIN_FIELDS: &[&str] = &["type", "path", "version", "config"];
const PLUGIN_TYPES: &[&str] = &["builtin", "external", "marketplace"];
const MARKETPLACE_FIELDS: &[&str] = &[
    "registry",
    "key",
    "cache_dir",
    "max_download",
    "transfer_timeout",
    "min_transfer_rate",
];
const UPDATES_FIELDS: &[&str] = &["check_interval", "allow", "plugins"];
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
    let reader = Reader {
        path,
        text,
        base: path.parent().unwrap_or(Path::new("")),
        env,
    };
    reader.config(&document)
}

/// One step of a field's path: a mapping key or a list index.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// A field's path from the top of the document.
#[derive(Debug, Clone, Default)]
struct FieldPath(Vec<Seg>);

impl FieldPath {
    fn key(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.0.push(Seg::Key(key.to_owned()));
        path
    }

    fn index(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.0.push(Seg::Index(index));
        path
    }

    /// The last key, if the path ends with one.
    fn name(&self) -> &str {
        match self.0.last() {
            Some(Seg::Key(key)) => key,
            _ => "",
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let plain = !key.is_empty()
                        && key
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if plain {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Reads the checked configuration out of the parsed document.
struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
    base: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Reader<'_> {
    fn config(&self, document: &Value) -> Result<Config, ConfigError> {
        let root = FieldPath::default();
        let top = match document {
            Value::Null => {
                return Err(ConfigError::Empty {
                    path: self.path.to_owned(),
                });
            }
            Value::Mapping(map) => map,
            other => {
                return Err(self.invalid(
                    &root,
                    format!(
                        "the document must be a mapping of settings (`server:`, `plugins:`, ...), not {}",
                        kind(other)
                    ),
                ));
            }
        };
        self.check_fields(top, &root, TOP_FIELDS)?;

        let mut listen = DEFAULT_LISTEN;
        let mut hook_timeout = DEFAULT_HOOK_TIMEOUT;
        let mut shutdown_timeout = DEFAULT_SHUTDOWN_TIMEOUT;
        let mut limits = ConnectionLimits::default();
        let mut public = Vec::new();
        let server = root.key("server");
        if let Some(map) = self.section(top.get("server"), &server)? {
            self.check_fields(map, &server, SERVER_FIELDS)?;
            if let Some(value) = map.get("listen") {
                listen = self.address(value, &server.key("listen"))?;
            }
            if let Some(value) = map.get("hook_timeout") {
                hook_timeout = self.duration(value, &server.key("hook_timeout"))?;
            }
            if let Some(value) = map.get("shutdown_timeout") {
                shutdown_timeout = self.duration(value, &server.key("shutdown_timeout"))?;
            }
            if let Some(value) = map.get("header_timeout") {
                limits.header_timeout = self.duration(value, &server.key("header_timeout"))?;
            }
            if let Some(value) = map.get("idle_timeout") {
                limits.idle_timeout = self.duration(value, &server.key("idle_timeout"))?;
            }
            if let Some(value) = map.get("max_connections") {
                limits.max_connections =
                    self.max_connections(value, &server.key("max_connections"))?;
            }
            public = self.public_endpoints(map.get("public"), &server.key("public"))?;
        }

        let plugin_dirs = self.plugin_dirs(top.get("plugin_dirs"), &root.key("plugin_dirs"))?;
        let trusted_keys = self.trusted_keys(top.get("trusted_keys"), &root.key("trusted_keys"))?;
        let require_signatures = match top.get("require_signatures") {
            Some(value) => self.boolean(value, &root.key("require_signatures"))?,
            None => true,
        };
        let max_plugin_size = match top.get("max_plugin_size") {
            Some(value) => self.size(value, &root.key("max_plugin_size"))?,
            None => crate::loader::DEFAULT_MAX_PLUGIN_SIZE,
        };

        let plugins_at = root.key("plugins");
        let mut plugins = Vec::new();
        if let Some(map) = self.section_of(
            top.get("plugins"),
            &plugins_at,
            "a mapping from plugin name to its settings (`auth: {type: builtin}`)",
        )? {
            for (key, value) in map {
                plugins.push(self.plugin(key, value, &plugins_at)?);
            }
        }

        let marketplace =
            self.marketplace_section(top.get("marketplace"), &root.key("marketplace"))?;
        let updates = self.updates_section(top.get("updates"), &root.key("updates"), &plugins)?;

        Ok(Config {
            path: self.path.to_owned(),
            listen,
            hook_timeout,
            shutdown_timeout,
            limits,
            public,
            plugin_dirs,
            trusted_keys,
            require_signatures,
            max_plugin_size,
            plugins,
            marketplace,
            updates,
        })
    }

    fn marketplace_section(
        &self,
        value: Option<&Value>,
        at: &FieldPath,
    ) -> Result<Option<MarketplaceConfig>, ConfigError> {
        let Some(map) = self.section_of(
            value,
            at,
            "a mapping with `registry` and `key` (`marketplace: {registry: ./registry, key: ./keys/registry.pub}`)",
        )?
        else {
            return Ok(None);
        };
        self.check_fields(map, at, MARKETPLACE_FIELDS)?;
        let registry_at = at.key("registry");
        let Some(registry) = map.get("registry") else {
            return Err(self.invalid(
                at,
                "missing field `registry`; give the registry's directory, `file:///` URL or `http(s)://` URL, e.g. `registry: ./registry`",
            ));
        };
        let registry = self.string(registry, &registry_at)?;
        let registry = RegistryLocation::parse(&registry, |path| self.resolve(path))
            .map_err(|error| self.invalid(&registry_at, error.to_string()))?;
        let key_at = at.key("key");
        let Some(key) = map.get("key") else {
            return Err(self.invalid(
                at,
                "missing field `key`; give the registry's public key, as a .pub file (`key: ./keys/registry.pub`) or inline (`key: RW...`)",
            ));
        };
        let key_text = self.string(key, &key_at)?;
        // A key is base64 (which has `/` and `+` but never `.`) starting
        // with `RW`; anything else is a key file (`.pub`).
        let (key, key_origin) = if key_text.starts_with("RW") && !key_text.contains(['.', '\\']) {
            let key = signature::parse_public_key(&key_text)
                .map_err(|error| self.invalid(&key_at, error.to_string()))?;
            (key, String::from("inline key"))
        } else {
            if key_text.is_empty() {
                return Err(self.invalid(&key_at, "the key is empty; give a .pub file or `RW...`"));
            }
            let file = self.resolve(&key_text);
            let text = std::fs::read_to_string(&file).map_err(|error| {
                let message = if error.kind() == std::io::ErrorKind::NotFound {
                    format!(
                        "the key file {} does not exist; fix the path{}",
                        file.display(),
                        self.relative_note()
                    )
                } else {
                    format!("cannot read {}: {error}", file.display())
                };
                self.invalid(&key_at, message)
            })?;
            let key = signature::parse_public_key(&text)
                .map_err(|error| self.invalid(&key_at, format!("{}: {error}", file.display())))?;
            (key, file.display().to_string())
        };
        let cache_dir = match map.get("cache_dir") {
            Some(value) => self.resolve(&self.path_string(value, &at.key("cache_dir"))?),
            None => self.resolve(DEFAULT_CACHE_DIR),
        };
        let max_download = match map.get("max_download") {
            Some(value) => self.size(value, &at.key("max_download"))?,
            None => DEFAULT_MAX_DOWNLOAD,
        };
        let transfer_timeout = match map.get("transfer_timeout") {
            Some(value) => self.duration(value, &at.key("transfer_timeout"))?,
            None => DEFAULT_TRANSFER_TIMEOUT,
        };
        // A size per second: `min_transfer_rate: 1KiB`.
        let min_transfer_rate = match map.get("min_transfer_rate") {
            Some(value) => self.size(value, &at.key("min_transfer_rate"))?,
            None => DEFAULT_MIN_TRANSFER_RATE,
        };
        Ok(Some(MarketplaceConfig {
            registry,
            key,
            key_origin,
            cache_dir,
            max_download,
            transfer_timeout,
            min_transfer_rate,
        }))
    }

    fn updates_section(
        &self,
        value: Option<&Value>,
        at: &FieldPath,
        plugins: &[PluginConfig],
    ) -> Result<UpdatesConfig, ConfigError> {
        let mut updates = UpdatesConfig::default();
        let Some(map) = self.section(value, at)? else {
            return Ok(updates);
        };
        self.check_fields(map, at, UPDATES_FIELDS)?;
        if let Some(value) = map.get("check_interval") {
            let interval_at = at.key("check_interval");
            updates.check_interval = match value {
                Value::Number(number) => {
                    return Err(self.invalid(
                        &interval_at,
                        format!(
                            "expected `off` or a duration with a unit, found the number {number}; write e.g. `{number}s` (units: `ms`, `s`, `m`)"
                        ),
                    ));
                }
                other => {
                    let text = self.string(other, &interval_at)?;
                    if text == "off" {
                        None
                    } else {
                        Some(parse_duration(&text).map_err(|problem| {
                            self.invalid(&interval_at, format!("{problem}, or `off`"))
                        })?)
                    }
                }
            };
        }
        if let Some(value) = map.get("allow") {
            let allow_at = at.key("allow");
            let text = self.string(value, &allow_at)?;
            updates.allow = match text.as_str() {
                "patch" => Allow::Patch,
                "minor" => Allow::Minor,
                "major" => Allow::Major,
                other => {
                    return Err(self.invalid(
                        &allow_at,
                        format!(
                            "unknown policy `{other}`; write one of {} (or a requirement per plugin under `updates.plugins`)",
                            list(ALLOW_VALUES)
                        ),
                    ));
                }
            };
        }
        let plugins_at = at.key("plugins");
        if let Some(map) = self.section_of(
            map.get("plugins"),
            &plugins_at,
            "a mapping from plugin name to a semver requirement (`weather: \">=1.0, <2\"`)",
        )? {
            for (key, value) in map {
                let name = key_text(key);
                let plugin_at = plugins_at.key(&name);
                let is_marketplace = plugins.iter().any(|plugin| {
                    plugin.name == name && matches!(plugin.kind, PluginKind::Marketplace { .. })
                });
                if !is_marketplace {
                    return Err(self.invalid(
                        &plugin_at,
                        format!(
                            "`{name}` is not a `type: marketplace` plugin of this file; update requirements are for marketplace plugins: add `{name}` under `plugins:` with `type: marketplace`, or remove this line"
                        ),
                    ));
                }
                let (_, requirement) =
                    self.requirement(value, &plugin_at, &name, "`>=1.2, <2` or `~1.2`")?;
                updates.plugins.push((name, requirement));
            }
        }
        Ok(updates)
    }

    /// A size: a whole number and a unit (`B`, `KiB`, `MiB`, `GiB`, `KB`,
    /// `MB`, `GB`), more than zero.
    fn size(&self, value: &Value, at: &FieldPath) -> Result<u64, ConfigError> {
        if let Value::Number(number) = value {
            return Err(self.invalid(
                at,
                format!(
                    "expected a size with a unit, found the number {number}; write e.g. `{number}B` or `256MiB` (units: `B`, `KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`)"
                ),
            ));
        }
        let text = self.string(value, at)?;
        parse_size(&text).map_err(|problem| self.invalid(at, problem))
    }

    fn plugin_dirs(
        &self,
        value: Option<&Value>,
        at: &FieldPath,
    ) -> Result<Vec<PathBuf>, ConfigError> {
        let Some(items) = self.list(value, at, "plugin_dirs: [\"./plugins\"]")? else {
            return Ok(Vec::new());
        };
        let mut dirs = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_at = at.index(i);
            let dir = self.resolve(&self.path_string(item, &item_at)?);
            match std::fs::metadata(&dir) {
                Ok(metadata) if metadata.is_dir() => dirs.push(dir),
                Ok(_) => {
                    return Err(
                        self.invalid(&item_at, format!("{} is not a directory", dir.display()))
                    );
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    return Err(self.invalid(
                        &item_at,
                        format!(
                            "the directory {} does not exist; create it or fix the path{}",
                            dir.display(),
                            self.relative_note()
                        ),
                    ));
                }
                Err(error) => {
                    return Err(
                        self.invalid(&item_at, format!("cannot read {}: {error}", dir.display()))
                    );
                }
            }
        }
        Ok(dirs)
    }

    fn trusted_keys(
        &self,
        value: Option<&Value>,
        at: &FieldPath,
    ) -> Result<Vec<TrustedKey>, ConfigError> {
        let Some(items) = self.list(value, at, "trusted_keys: [{file: ./keys/release.pub}]")?
        else {
            return Ok(Vec::new());
        };
        let mut keys = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_at = at.index(i);
            let map = match item {
                Value::Mapping(map) => map,
                Value::String(text) => {
                    let field = if text.starts_with("RW") && !text.contains(['/', '\\', '.']) {
                        "key"
                    } else {
                        "file"
                    };
                    return Err(self.invalid(
                        &item_at,
                        format!(
                            "expected a mapping with `file` or `key`, found a string; write `- {field}: {text}`",
                        ),
                    ));
                }
                other => {
                    return Err(self.invalid(
                        &item_at,
                        format!(
                            "expected a mapping with `file` or `key`, found {}; write `- file: ./keys/release.pub` or `- key: RW...`",
                            kind(other)
                        ),
                    ));
                }
            };
            self.check_fields(map, &item_at, KEY_FIELDS)?;
            let key = match (map.get("file"), map.get("key")) {
                (Some(_), Some(_)) => {
                    return Err(self.invalid(
                        &item_at,
                        "give either `file` or `key`, not both; use one entry per key",
                    ));
                }
                (None, None) => {
                    return Err(self.invalid(
                        &item_at,
                        "give `file: path/to/key.pub` (a minisign public key file) or `key: RW...` (the key itself)",
                    ));
                }
                (Some(file), None) => {
                    let file_at = item_at.key("file");
                    let file = self.resolve(&self.path_string(file, &file_at)?);
                    let text = std::fs::read_to_string(&file).map_err(|error| {
                        let message = if error.kind() == std::io::ErrorKind::NotFound {
                            format!(
                                "the key file {} does not exist; fix the path{}",
                                file.display(),
                                self.relative_note()
                            )
                        } else {
                            format!("cannot read {}: {error}", file.display())
                        };
                        self.invalid(&file_at, message)
                    })?;
                    let key = signature::parse_public_key(&text).map_err(|error| {
                        self.invalid(&file_at, format!("{}: {error}", file.display()))
                    })?;
                    TrustedKey {
                        origin: file.display().to_string(),
                        key,
                    }
                }
                (None, Some(key)) => {
                    let key_at = item_at.key("key");
                    let text = self.string(key, &key_at)?;
                    let key = signature::parse_public_key(&text)
                        .map_err(|error| self.invalid(&key_at, error.to_string()))?;
                    TrustedKey {
                        origin: format!("inline key #{}", i + 1),
                        key,
                    }
                }
            };
            self.refuse_duplicate_key_id(&keys, &key, &item_at, at)?;
            keys.push(key);
        }
        Ok(keys)
    }

    /// Refuses `key` (entry `key_at` of `trusted_keys`) when an earlier entry
    /// of `keys` has its key id: a signature names its key by id, so only the
    /// first of the two would ever be tried, and every plugin signed with the
    /// second would be refused as altered.
    fn refuse_duplicate_key_id(
        &self,
        keys: &[TrustedKey],
        key: &TrustedKey,
        key_at: &FieldPath,
        list_at: &FieldPath,
    ) -> Result<(), ConfigError> {
        let id = KeyId::of_public_key(&key.key);
        let Some((index, first)) = keys
            .iter()
            .enumerate()
            .find(|(_, earlier)| KeyId::of_public_key(&earlier.key) == id)
        else {
            return Ok(());
        };
        let first_at = list_at.index(index);
        let first_line = self
            .line_of(&first_at)
            .map_or_else(String::new, |line| format!(", line {line}"));
        let problem = if first.key.to_base64() == key.key.to_base64() {
            String::from("the same key is listed twice; remove one of the two entries")
        } else {
            String::from(
                "they are two different keys with the same id, and a signature names its key by id only, so plugins signed with the second would be refused as altered; keep the one your publisher signs with (compare with its .pub file) and remove the other",
            )
        };
        Err(self.invalid(
            key_at,
            format!(
                "key id {id} ({}) is also the key id of {first_at} ({}{first_line}): {problem}",
                key.origin, first.origin
            ),
        ))
    }

    fn plugin(
        &self,
        key: &Value,
        value: &Value,
        plugins_at: &FieldPath,
    ) -> Result<PluginConfig, ConfigError> {
        let name = match key {
            Value::String(name) => name.clone(),
            Value::Number(number) => number.to_string(),
            other => {
                return Err(self.invalid(
                    plugins_at,
                    format!("a plugin's name must be a plain name, not {}", kind(other)),
                ));
            }
        };
        let at = plugins_at.key(&name);
        if name.is_empty() {
            return Err(self.invalid(
                &at,
                "a plugin's name must not be empty; use letters, digits, `_` and `-`",
            ));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(self.invalid(
                &at,
                format!(
                    "the plugin name `{name}` contains {bad:?}; a plugin's name may only contain letters, digits, `_` and `-`"
                ),
            ));
        }
        let map = match value {
            Value::Mapping(map) => map,
            other => {
                return Err(self.invalid(
                    &at,
                    format!(
                        "expected a mapping with the plugin's `type` (and `path`, `version`, `config`), found {}",
                        kind(other)
                    ),
                ));
            }
        };
        self.check_fields(map, &at, PLUGIN_FIELDS)?;
        let type_at = at.key("type");
        let Some(type_value) = map.get("type") else {
            return Err(self.invalid(
                &at,
                "missing field `type`; add `type: builtin`, `type: external` or `type: marketplace`",
            ));
        };
        let type_name = self.string(type_value, &type_at)?;
        let allowed: &[&str] = match type_name.as_str() {
            "builtin" => &["type", "config"],
            "external" => &["type", "path", "config"],
            "marketplace" => &["type", "version", "config"],
            other => {
                return Err(self.invalid(
                    &type_at,
                    format!(
                        "unknown plugin type `{other}`; the types are {}",
                        list(PLUGIN_TYPES)
                    ),
                ));
            }
        };
        for field in ["path", "version"] {
            if map.get(field).is_some() && !allowed.contains(&field) {
                let for_type = if field == "path" {
                    "external"
                } else {
                    "marketplace"
                };
                return Err(self.invalid(
                    &at.key(field),
                    format!(
                        "`{field}` is only for `type: {for_type}` plugins and this one is `type: {type_name}`; remove it"
                    ),
                ));
            }
        }
        let plugin_kind = match type_name.as_str() {
            "builtin" => {
                if !BUILTINS.contains(&name.as_str()) {
                    return Err(self.invalid(
                        &at,
                        format!(
                            "there is no built-in plugin called `{name}`; the built-in plugins are {} (for a plugin library use `type: external` with a `path`)",
                            list(BUILTINS)
                        ),
                    ));
                }
                PluginKind::Builtin
            }
            "external" => {
                let path_at = at.key("path");
                let Some(path) = map.get("path") else {
                    return Err(self.invalid(
                        &at,
                        "missing field `path`; an external plugin needs the path of its library, e.g. `path: ./plugins/libmy_plugin.so`",
                    ));
                };
                let path = self.resolve(&self.path_string(path, &path_at)?);
                match std::fs::metadata(&path) {
                    Ok(metadata) if metadata.is_file() => {}
                    Ok(_) => {
                        return Err(
                            self.invalid(&path_at, format!("{} is not a file", path.display()))
                        );
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                        return Err(self.invalid(
                            &path_at,
                            format!(
                                "the plugin library {} does not exist; build it (`cargo backworks build`) or fix the path{}",
                                path.display(),
                                self.relative_note()
                            ),
                        ));
                    }
                    Err(error) => {
                        return Err(self.invalid(
                            &path_at,
                            format!("cannot read {}: {error}", path.display()),
                        ));
                    }
                }
                PluginKind::External { path }
            }
            _ => {
                let version_at = at.key("version");
                let Some(version) = map.get("version") else {
                    return Err(self.invalid(
                        &at,
                        "missing field `version`; a marketplace plugin needs a version requirement, e.g. `version: \"1.2.0\"`",
                    ));
                };
                let (version, requirement) = self.requirement(
                    version,
                    &version_at,
                    "version",
                    "`1.2.0`, `=1.2.0` or `>=1.2, <2`",
                )?;
                PluginKind::Marketplace {
                    version,
                    requirement,
                }
            }
        };
        let config = match map.get("config") {
            None | Some(Value::Null) => serde_json::Value::Null,
            Some(value @ Value::Mapping(_)) => self.json(value, &at.key("config"))?,
            Some(other) => {
                return Err(self.invalid(
                    &at.key("config"),
                    format!(
                        "expected a mapping of the plugin's settings, found {}",
                        kind(other)
                    ),
                ));
            }
        };
        Ok(PluginConfig {
            line: self.line_of(&at),
            name,
            kind: plugin_kind,
            config,
        })
    }

    /// A YAML value as JSON, with `${VAR}` substituted in every string.
    fn json(&self, value: &Value, at: &FieldPath) -> Result<serde_json::Value, ConfigError> {
        Ok(match value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(number) => {
                if let Some(n) = number.as_u64() {
                    n.into()
                } else if let Some(n) = number.as_i64() {
                    n.into()
                } else {
                    number
                        .as_f64()
                        .and_then(serde_json::Number::from_f64)
                        .map(serde_json::Value::Number)
                        .ok_or_else(|| {
                            self.invalid(
                                at,
                                "infinity and NaN cannot be passed to a plugin (JSON has no such numbers); quote the value to pass it as a string",
                            )
                        })?
                }
            }
            Value::String(text) => serde_json::Value::String(self.substitute(text, at)?.0),
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.json(item, &at.index(i)))
                .collect::<Result<_, _>>()?,
            Value::Mapping(map) => {
                let mut object = serde_json::Map::new();
                for (key, item) in map {
                    let key = match key {
                        Value::String(key) => key.clone(),
                        Value::Number(number) => number.to_string(),
                        Value::Bool(b) => b.to_string(),
                        other => {
                            return Err(self.invalid(
                                at,
                                format!(
                                    "keys must be strings, numbers or booleans, not {}",
                                    kind(other)
                                ),
                            ));
                        }
                    };
                    let item = self.json(item, &at.key(&key))?;
                    object.insert(key, item);
                }
                serde_json::Value::Object(object)
            }
            Value::Tagged(_) => return Err(self.tagged(at)),
        })
    }

    /// A mapping section (`server`, `plugins`): `None` when absent or null.
    fn section<'v>(
        &self,
        value: Option<&'v Value>,
        at: &FieldPath,
    ) -> Result<Option<&'v Mapping>, ConfigError> {
        self.section_of(value, at, "a mapping")
    }

    fn section_of<'v>(
        &self,
        value: Option<&'v Value>,
        at: &FieldPath,
        expected: &str,
    ) -> Result<Option<&'v Mapping>, ConfigError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Mapping(map)) => Ok(Some(map)),
            Some(other) => {
                Err(self.invalid(at, format!("expected {expected}, found {}", kind(other))))
            }
        }
    }

    /// A list (`plugin_dirs`, `trusted_keys`): `None` when absent or null.
    fn list<'v>(
        &self,
        value: Option<&'v Value>,
        at: &FieldPath,
        example: &str,
    ) -> Result<Option<&'v [Value]>, ConfigError> {
        match value {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Sequence(items)) => Ok(Some(items)),
            Some(other) => Err(self.invalid(
                at,
                format!(
                    "expected a list, found {}; write e.g. `{example}`",
                    kind(other)
                ),
            )),
        }
    }

    /// Fails on the first key of `map` that is not in `allowed`.
    fn check_fields(
        &self,
        map: &Mapping,
        at: &FieldPath,
        allowed: &'static [&'static str],
    ) -> Result<(), ConfigError> {
        for key in map.keys() {
            let name = key_text(key);
            if !allowed.contains(&name.as_str()) {
                let field = at.key(&name);
                return Err(ConfigError::UnknownField {
                    path: self.path.to_owned(),
                    line: self.line_of(&field),
                    field: field.to_string(),
                    suggestion: allowed
                        .iter()
                        .copied()
                        .filter(|candidate| edit_distance(candidate, &name) <= 2)
                        .min_by_key(|candidate| edit_distance(candidate, &name)),
                    name,
                    allowed,
                });
            }
        }
        Ok(())
    }

    /// A string field, with `${VAR}` substituted.
    fn string(&self, value: &Value, at: &FieldPath) -> Result<String, ConfigError> {
        match value {
            Value::String(text) => Ok(self.substitute(text, at)?.0),
            other => Err(self.wrong_type(other, at, "a string")),
        }
    }

    /// A semver requirement field: a string (`${VAR}` substituted, so a
    /// bare number is refused with the quoting hint for `key`) that parses
    /// as a requirement; `examples` ends the message when it does not.
    /// Returns the text and the requirement.
    fn requirement(
        &self,
        value: &Value,
        at: &FieldPath,
        key: &str,
        examples: &str,
    ) -> Result<(String, semver::VersionReq), ConfigError> {
        let text = match value {
            Value::Number(number) => {
                return Err(self.invalid(
                    at,
                    format!(
                        "expected a version requirement in quotes, found the number {number}; quote it: `{key}: \"{number}\"`"
                    ),
                ));
            }
            other => self.string(other, at)?,
        };
        let requirement = semver::VersionReq::parse(&text).map_err(|error| {
            self.invalid(
                at,
                format!(
                    "`{text}` is not a semver version requirement ({error}); write e.g. {examples}"
                ),
            )
        })?;
        Ok((text, requirement))
    }

    /// A non-empty path field, with `${VAR}` substituted.
    fn path_string(&self, value: &Value, at: &FieldPath) -> Result<String, ConfigError> {
        let text = self.string(value, at)?;
        if text.is_empty() {
            return Err(self.invalid(at, "the path is empty"));
        }
        Ok(text)
    }

    fn boolean(&self, value: &Value, at: &FieldPath) -> Result<bool, ConfigError> {
        let expected = "`true` or `false`";
        match value {
            Value::Bool(b) => Ok(*b),
            Value::String(text) => {
                // `${VAR}` gives a string: accept what spells a boolean.
                let (value, substituted) = self.substitute(text, at)?;
                match value.as_str() {
                    "true" if substituted => Ok(true),
                    "false" if substituted => Ok(false),
                    _ => Err(self.invalid(
                        at,
                        format!(
                            "expected {expected}, found the string {value:?}; write `{}: true` or `{}: false`, without quotes",
                            at.name(),
                            at.name()
                        ),
                    )),
                }
            }
            other => Err(self.wrong_type(other, at, expected)),
        }
    }

    fn address(&self, value: &Value, at: &FieldPath) -> Result<SocketAddr, ConfigError> {
        if let Value::Number(number) = value {
            return Err(self.invalid(
                at,
                format!(
                    "expected an address like \"127.0.0.1:8080\", found the number {number}; for port {number} on this machine only write `listen: \"127.0.0.1:{number}\"`"
                ),
            ));
        }
        if let Value::Sequence(_) = value {
            return Err(self.invalid(
                at,
                "expected an address like \"127.0.0.1:8080\", found a list; write the address in quotes, e.g. `listen: \"[::1]:8080\"`",
            ));
        }
        let text = self.string(value, at)?;
        text.parse().map_err(|_| {
            self.invalid(
                at,
                format!(
                    "{text:?} is not a socket address; write an ip address and a port, like \"127.0.0.1:8080\", \"0.0.0.0:8080\" or \"[::1]:8080\" (host names are not resolved)"
                ),
            )
        })
    }

    /// `server.max_connections`: a whole number from 1 to 1000000.
    fn max_connections(&self, value: &Value, at: &FieldPath) -> Result<usize, ConfigError> {
        const MAX: u64 = 1_000_000;
        let number = match value {
            Value::Number(number) => number.as_u64(),
            Value::String(_) => self.string(value, at)?.trim().parse::<u64>().ok(),
            other => return Err(self.wrong_type(other, at, "a whole number")),
        };
        match number {
            Some(n @ 1..=MAX) => Ok(n as usize),
            _ => Err(self.invalid(
                at,
                format!(
                    "expected a whole number of connections from 1 to {MAX}, like `4096`; keep it below the open-file limit (`ulimit -n`)"
                ),
            )),
        }
    }

    /// `server.public`: a list of the host's endpoints, each at most once.
    fn public_endpoints(
        &self,
        value: Option<&Value>,
        at: &FieldPath,
    ) -> Result<Vec<String>, ConfigError> {
        let Some(items) = self.list(value, at, "public: [/healthz]")? else {
            return Ok(Vec::new());
        };
        let mut public = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let field = at.index(i);
            let endpoint = self.string(item, &field)?;
            if !HOST_ENDPOINTS.contains(&endpoint.as_str()) {
                return Err(self.invalid(
                    &field,
                    format!(
                        "{endpoint:?} is not an endpoint of the host; expected one of {} (the plugins' own paths are made public with the auth plugin's `exempt_paths`)",
                        list(HOST_ENDPOINTS)
                    ),
                ));
            }
            if public.contains(&endpoint) {
                return Err(self.invalid(&field, format!("{endpoint} is listed twice")));
            }
            public.push(endpoint);
        }
        Ok(public)
    }

    fn duration(&self, value: &Value, at: &FieldPath) -> Result<Duration, ConfigError> {
        if let Value::Number(number) = value {
            return Err(self.invalid(
                at,
                format!(
                    "expected a duration with a unit, found the number {number}; write e.g. `{number}s` for {number} seconds (units: `ms`, `s`, `m`)"
                ),
            ));
        }
        let text = self.string(value, at)?;
        parse_duration(&text).map_err(|problem| self.invalid(at, problem))
    }

    /// Substitutes `${VAR}`, `${VAR:-default}` and `$${`; says whether a
    /// variable was substituted.
    fn substitute(&self, text: &str, at: &FieldPath) -> Result<(String, bool), ConfigError> {
        substitute(text, self.env).map_err(|error| match error {
            SubstError::Missing(variable) => ConfigError::MissingVariable {
                path: self.path.to_owned(),
                line: self.line_of(at),
                field: at.to_string(),
                variable,
            },
            SubstError::Unterminated => self.invalid(
                at,
                "`${` has no closing `}`; write `${VAR}`, or `$${` for a literal `${`",
            ),
            SubstError::BadName(name) => self.invalid(
                at,
                format!(
                    "`${{{name}}}` is not a variable reference: names are letters, digits and `_`, not starting with a digit (`${{VAR}}` or `${{VAR:-default}}`); write `$${{` for a literal `${{`"
                ),
            ),
        })
    }

    fn wrong_type(&self, value: &Value, at: &FieldPath, expected: &str) -> ConfigError {
        match value {
            Value::Tagged(_) => self.tagged(at),
            Value::Null => self.invalid(at, format!("has no value; expected {expected}")),
            other => self.invalid(at, format!("expected {expected}, found {}", kind(other))),
        }
    }

    fn tagged(&self, at: &FieldPath) -> ConfigError {
        self.invalid(at, "yaml tags (`!name`) are not supported; remove the tag")
    }

    fn invalid(&self, at: &FieldPath, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line: self.line_of(at),
            field: at.to_string(),
            message: message.into(),
        }
    }

    fn relative_note(&self) -> String {
        let base = if self.base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            self.base
        };
        format!(
            " (relative paths are relative to the configuration file's directory, {})",
            base.display()
        )
    }

    /// `path` against the configuration file's directory, without `.`
    /// components.
    fn resolve(&self, path: &str) -> PathBuf {
        let joined = self.base.join(path);
        let cleaned: PathBuf = joined
            .components()
            .filter(|component| *component != Component::CurDir)
            .collect();
        if cleaned.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            cleaned
        }
    }

    /// The line (from 1) of the field `at` in the text: of its key, or of
    /// the list item. Found by walking the YAML again: the parser knows
    /// where each node starts.
    fn line_of(&self, at: &FieldPath) -> Option<usize> {
        if at.0.is_empty() {
            return None;
        }
        let deserializer = serde_yaml::Deserializer::from_str(self.text);
        match (Find { rest: &at.0 }).deserialize(deserializer) {
            Err(error) if error.to_string().contains(FOUND) => {
                error.location().map(|location| location.line())
            }
            _ => None,
        }
    }
}

/// How a key reads in a field path and in messages.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::from("null"),
        Value::Sequence(_) | Value::Mapping(_) => String::from("<complex key>"),
        Value::Tagged(tagged) => key_text(&tagged.value),
    }
}

/// What a value is, for messages: never the value itself.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// The longest duration `parse_duration` accepts: a year. Every deadline the
/// host computes (`Instant::now() + timeout`) then stays far from overflow,
/// which would panic.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// `<n>ms`, `<n>s`, `<n>m` or `<n>h`, more than zero and at most a year
/// (`MAX_DURATION`): the durations of `backworks.yaml` and of
/// `backworks marketplace serve`'s timeouts.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{text:?} is not a duration; write a whole number and a unit, `ms`, `s`, `m` or `h`, like \"500ms\", \"5s\", \"1m\" or \"1h\""
        )
    };
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(bad());
    }
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is too long a duration"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(
            number
                .checked_mul(60)
                .ok_or_else(|| format!("{text:?} is too long a duration"))?,
        ),
        "h" => Duration::from_secs(
            number
                .checked_mul(3600)
                .ok_or_else(|| format!("{text:?} is too long a duration"))?,
        ),
        _ => return Err(bad()),
    };
    if duration.is_zero() {
        return Err(format!(
            "{text:?} is zero; a timeout must be more than zero"
        ));
    }
    if duration > MAX_DURATION {
        return Err(format!(
            "{text:?} is longer than a year; write at most \"8760h\""
        ));
    }
    Ok(duration)
}

/// `<n><unit>` with unit `B`, `KiB`, `MiB`, `GiB` (powers of 1024), `KB`,
/// `MB` or `GB` (powers of 1000), more than zero: `marketplace.max_download`
/// and `backworks marketplace serve --max-upload`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{text:?} is not a size; write a whole number and a unit, `B`, `KiB`, `MiB`, `GiB`, `KB`, `MB` or `GB`, like \"256MiB\""
        )
    };
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(bad());
    }
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is too large a size"))?;
    let multiplier: u64 = match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    let size = number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large a size"))?;
    if size == 0 {
        return Err(format!(
            "{text:?} is zero; a size limit must be more than zero"
        ));
    }
    Ok(size)
}

/// Why `${...}` substitution failed.
#[derive(Debug, PartialEq, Eq)]
enum SubstError {
    /// The variable is not set and has no default.
    Missing(String),
    /// `${` without `}`.
    Unterminated,
    /// What is between `${` and `}` (or `:-`) is not a variable name.
    BadName(String),
}

/// Substitutes `${VAR}` and `${VAR:-default}` (the default when `VAR` is
/// unset or empty) in `text`, and turns `$${` into `${`. Values and defaults
/// are not substituted again. Says whether a variable was substituted.
fn substitute(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, bool), SubstError> {
    let mut out = String::with_capacity(text.len());
    let mut substituted = false;
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(inner) = after.strip_prefix("${") {
            let end = inner.find('}').ok_or(SubstError::Unterminated)?;
            let reference = &inner[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(SubstError::BadName(reference.to_owned()));
            }
            let value = match default {
                Some(default) => env(name)
                    .filter(|value| !value.is_empty())
                    .unwrap_or_else(|| default.to_owned()),
                None => env(name).ok_or_else(|| SubstError::Missing(name.to_owned()))?,
            };
            out.push_str(&value);
            substituted = true;
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok((out, substituted))
}

/// The Levenshtein distance between two short names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// The message of the error [`Find`] raises at the node it looks for; the
/// YAML deserializer attaches the node's position to it.
const FOUND: &str = "backworks-config: found the node";

/// Walks the YAML event stream along a field path and fails at the target
/// node (the key of the last mapping step, or the list item), so that the
/// error carries the node's position.
struct Find<'p> {
    rest: &'p [Seg],
}

impl<'de> DeserializeSeed<'de> for Find<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Find<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping or a list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), tail)) = self.rest.split_first() else {
            return Ok(());
        };
        while let Some(matched) = map.next_key_seed(Key {
            want,
            target: tail.is_empty(),
        })? {
            if matched {
                return map.next_value_seed(Find { rest: tail });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), tail)) = self.rest.split_first() else {
            return Ok(());
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        if tail.is_empty() {
            seq.next_element_seed(Here)?;
        } else {
            seq.next_element_seed(Find { rest: tail })?;
        }
        Ok(())
    }
}

/// A mapping key: says whether it is `want`, and fails there when it is the
/// target.
struct Key<'w> {
    want: &'w str,
    target: bool,
}

impl Key<'_> {
    fn check<E: de::Error>(&self, key: &str) -> Result<bool, E> {
        if key != self.want {
            Ok(false)
        } else if self.target {
            Err(E::custom(FOUND))
        } else {
            Ok(true)
        }
    }
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.check(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.check(&v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.check(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.check(&serde_yaml::Number::from(v).to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        self.check("null")
    }

    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        self.check("null")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _data: A) -> Result<bool, A::Error> {
        // A tagged key: not one the configuration has.
        Err(de::Error::custom("a tagged key"))
    }
}

/// The target list item: fails wherever it is.
struct Here;

impl<'de> DeserializeSeed<'de> for Here {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Here {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// The design note's `plugins:` example, exactly as written there.
    fn design_note_example() -> &'static str {
        let note = include_str!("../../docs/design/dynamic-plugin-loading.md");
        let section = &note[note
            .find("### 4. Plugin Configuration Format")
            .expect("the note has section 4")..];
        let start = section.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
        let end = start + section[start..].find("```").expect("the block ends");
        &section[start..end]
    }

    /// The full example of `docs/config.md`.
    fn docs_example() -> &'static str {
        let doc = include_str!("../../docs/config.md");
        let start = doc.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
        let end = start + doc[start..].find("```").expect("the block ends");
        &doc[start..end]
    }

    /// A deterministic minisign public key.
    fn test_key(seed: u8) -> PublicKey {
        let mut bytes = b"Ed".to_vec();
        bytes.extend([seed; 8]);
        bytes.extend([seed.wrapping_mul(3); 32]);
        PublicKey::from_bytes(&bytes).expect("a key")
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "STRIPE_API_KEY" => Some(String::from("sk_test_123")),
            "EMPTY" => Some(String::new()),
            "HOST" => Some(String::from("0.0.0.0")),
            "OFF" => Some(String::from("false")),
            "DIR" => Some(String::from("plugins")),
            "NESTED" => Some(String::from("${STRIPE_API_KEY}")),
            _ => None,
        }
    }

    /// A configuration directory with what the examples name: `plugins/`,
    /// `plugins/my-custom-plugin.so` and `keys/release.pub`.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("a temporary directory");
            fs::create_dir(dir.path().join("plugins")).unwrap();
            fs::write(dir.path().join("plugins/my-custom-plugin.so"), b"\x7fELF").unwrap();
            fs::create_dir(dir.path().join("keys")).unwrap();
            let key = test_key(2);
            fs::write(
                dir.path().join("keys/release.pub"),
                format!(
                    "untrusted comment: minisign public key {}\n{}\n",
                    KeyId::of_public_key(&key),
                    key.to_base64()
                ),
            )
            .unwrap();
            fs::write(dir.path().join("keys/broken.pub"), "not a key\n").unwrap();
            // Another key with release.pub's key id (02 02 .. 02).
            fs::write(
                dir.path().join("keys/same-id.pub"),
                "untrusted comment: minisign public key 0202020202020202\nRWQCAgICAgICAgkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJ\n",
            )
            .unwrap();
            let registry = test_key(3);
            fs::write(
                dir.path().join("keys/registry.pub"),
                format!(
                    "untrusted comment: minisign public key {}\n{}\n",
                    KeyId::of_public_key(&registry),
                    registry.to_base64()
                ),
            )
            .unwrap();
            Self { dir }
        }

        fn path(&self) -> PathBuf {
            self.dir.path().join("backworks.yaml")
        }

        fn parse(&self, text: &str) -> Result<Config, ConfigError> {
            parse(text, &self.path(), &env)
        }

        fn config(&self, text: &str) -> Config {
            self.parse(text).unwrap_or_else(|error| panic!("{error}"))
        }

        /// The error for `text`, with the temporary directory as `[DIR]`.
        fn error(&self, text: &str) -> String {
            let error = self.parse(text).expect_err("the configuration is refused");
            assert_eq!(error.exit_code(), 2);
            assert_eq!(error.path(), self.path());
            self.redact(&error.to_string())
        }

        fn redact(&self, text: &str) -> String {
            text.replace(self.dir.path().to_str().unwrap(), "[DIR]")
        }
    }

    #[test]
    fn design_note_example_parses() {
        let fixture = Fixture::new();
        let config = fixture.config(design_note_example());
        let names: Vec<_> = config.plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["auth", "my-custom-plugin", "stripe-plugin"]);

        let auth = &config.plugins[0];
        assert_eq!(auth.kind, PluginKind::Builtin);
        assert_eq!(auth.config, serde_json::json!({"jwt_secret": "secret"}));

        let custom = &config.plugins[1];
        assert_eq!(
            custom.kind,
            PluginKind::External {
                path: fixture.dir.path().join("plugins/my-custom-plugin.so")
            }
        );
        assert_eq!(custom.config, serde_json::json!({"api_key": "12345"}));

        let stripe = &config.plugins[2];
        assert_eq!(
            stripe.kind,
            PluginKind::Marketplace {
                version: String::from("1.2.0"),
                requirement: semver::VersionReq::parse("^1.2.0").unwrap(),
            }
        );
        assert_eq!(stripe.config, serde_json::json!({"api_key": "sk_test_123"}));

        // The rest is defaults.
        assert_eq!(config.listen, DEFAULT_LISTEN);
        assert!(config.require_signatures);
        assert!(config.plugin_dirs.is_empty() && config.trusted_keys.is_empty());
    }

    #[test]
    fn docs_example_parses() {
        let fixture = Fixture::new();
        let config = fixture.config(docs_example());
        assert_eq!(config.path, fixture.path());
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.hook_timeout, Duration::from_secs(5));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(config.plugin_dirs, [fixture.dir.path().join("plugins")]);
        assert!(config.require_signatures);

        let keys: Vec<_> = config
            .trusted_keys
            .iter()
            .map(|k| (fixture.redact(&k.origin), KeyId::of_public_key(&k.key)))
            .collect();
        assert_eq!(
            keys,
            [
                (
                    String::from("[DIR]/keys/release.pub"),
                    KeyId::of_public_key(&test_key(2))
                ),
                (
                    String::from("inline key #2"),
                    KeyId::of_public_key(&test_key(1))
                ),
            ]
        );
        let names: Vec<_> = config.plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["auth", "my-custom-plugin", "stripe-plugin"]);
        assert_eq!(
            config.plugins[0].config,
            serde_json::json!({"jwt_secret": "change-me"})
        );
        assert_eq!(
            config.plugins[2].config,
            serde_json::json!({"api_key": "sk_test_123"})
        );
        let marketplace = config.marketplace().unwrap();
        assert_eq!(
            marketplace.registry,
            RegistryLocation::Dir(fixture.dir.path().join("registry"))
        );
        assert_eq!(
            KeyId::of_public_key(&marketplace.key),
            KeyId::of_public_key(&test_key(3))
        );
        assert_eq!(
            marketplace.cache_dir,
            fixture.dir.path().join(".backworks/plugins")
        );
        assert_eq!(marketplace.max_download, DEFAULT_MAX_DOWNLOAD);
        assert_eq!(marketplace.transfer_timeout, DEFAULT_TRANSFER_TIMEOUT);
        assert_eq!(marketplace.min_transfer_rate, DEFAULT_MIN_TRANSFER_RATE);
        assert_eq!(config.updates.check_interval, None);
        assert_eq!(config.updates.allow, Allow::Minor);
        assert_eq!(
            config.updates.requirement("stripe-plugin"),
            Some(&semver::VersionReq::parse(">=1.2, <2").unwrap())
        );
    }

    /// The error messages `docs/config.md` shows are what the docs example
    /// gives, with the configuration in `/srv/app`.
    #[test]
    fn docs_error_examples_are_real() {
        let doc = include_str!("../../docs/config.md");
        let fixture = Fixture::new();
        let shown = |error: ConfigError| {
            let dir = fixture.dir.path().to_str().unwrap();
            let message = error
                .to_string()
                .replace(&format!("{dir}/backworks.yaml"), "backworks.yaml")
                .replace(dir, "/srv/app");
            assert!(doc.contains(&message), "docs/config.md lacks {message}");
        };
        let no_stripe = |name: &str| env(name).filter(|_| name != "STRIPE_API_KEY");
        shown(parse(docs_example(), &fixture.path(), &no_stripe).unwrap_err());
        let misspelt = docs_example().replacen("hook_timeout", "hook_timout", 1);
        shown(fixture.parse(&misspelt).unwrap_err());
        fs::remove_file(fixture.dir.path().join("plugins/my-custom-plugin.so")).unwrap();
        shown(fixture.parse(docs_example()).unwrap_err());
        let without_marketplace = fixture
            .config("plugins:\n  auth:\n    type: builtin\n  weather:\n    type: marketplace\n    version: \"1.0\"\n");
        shown(without_marketplace.marketplace().unwrap_err());
    }

    #[test]
    fn load_reads_the_file() {
        let fixture = Fixture::new();
        fs::write(fixture.path(), "server:\n  listen: \"0.0.0.0:9000\"\n").unwrap();
        let config = load(&fixture.path()).unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
        assert!(config.plugins.is_empty());

        let missing = fixture.dir.path().join("missing.yaml");
        let error = load(&missing).unwrap_err();
        assert!(matches!(error, ConfigError::Read { .. }));
        assert_eq!(error.exit_code(), 2);
        insta::assert_snapshot!(fixture.redact(&error.to_string()));
    }

    #[test]
    fn defaults() {
        let fixture = Fixture::new();
        for text in [
            "plugins: {}",
            "plugins:",
            "{}",
            "server: {}\nplugin_dirs: []\n",
        ] {
            let config = fixture.config(text);
            assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
            assert_eq!(config.hook_timeout, Duration::from_secs(5));
            assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
            assert!(config.plugin_dirs.is_empty());
            assert!(config.trusted_keys.is_empty());
            assert!(config.require_signatures);
            assert_eq!(config.max_plugin_size, 256 * 1024 * 1024);
            assert!(config.plugins.is_empty());
            assert_eq!(config.limits, ConnectionLimits::default());
            assert!(config.public.is_empty());
        }
        let config = fixture.config("max_plugin_size: 64KiB\n");
        assert_eq!(config.max_plugin_size, 64 * 1024);
    }

    #[test]
    fn connection_limits_and_public_endpoints_are_read() {
        let fixture = Fixture::new();
        let config = fixture.config(
            "server:\n  header_timeout: 2s\n  idle_timeout: 1m\n  max_connections: 8\n  public: [/healthz, /metrics]\n",
        );
        assert_eq!(
            config.limits,
            ConnectionLimits {
                header_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(60),
                max_connections: 8,
            }
        );
        assert_eq!(config.public, ["/healthz", "/metrics"]);
        let config = fixture.config("server:\n  max_connections: \"${N:-16}\"\n  public: []\n");
        assert_eq!(config.limits.max_connections, 16);
        assert!(config.public.is_empty());
    }

    #[test]
    fn settings_are_read() {
        let fixture = Fixture::new();
        let config = fixture.config(
            "server:\n  listen: \"[::1]:9090\"\n  hook_timeout: 250ms\n  shutdown_timeout: 2m\nrequire_signatures: false\nplugin_dirs: [plugins, ./plugins/, \"${DIR}\"]\n",
        );
        assert_eq!(config.listen, "[::1]:9090".parse().unwrap());
        assert_eq!(config.hook_timeout, Duration::from_millis(250));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(120));
        assert!(!config.require_signatures);
        let plugins = fixture.dir.path().join("plugins");
        assert_eq!(
            config.plugin_dirs,
            [plugins.clone(), plugins.clone(), plugins]
        );
    }

    #[test]
    fn absolute_paths_are_kept() {
        let fixture = Fixture::new();
        let library = fixture.dir.path().join("plugins/my-custom-plugin.so");
        let config = fixture.config(&format!(
            "plugins:\n  x:\n    type: external\n    path: {:?}\n",
            library.to_str().unwrap()
        ));
        assert_eq!(
            config.plugins[0].kind,
            PluginKind::External { path: library }
        );
    }

    #[test]
    fn plugin_order_is_file_order() {
        let fixture = Fixture::new();
        let names = ["zeta", "alpha", "auth", "mid_1", "b-2", "0"];
        let mut text = String::from("plugins:\n");
        for name in names {
            if name == "auth" {
                text.push_str("  auth: {type: builtin}\n");
            } else {
                text.push_str(&format!(
                    "  {name}: {{type: marketplace, version: \"1\"}}\n"
                ));
            }
        }
        let config = fixture.config(&text);
        let read: Vec<_> = config.plugins.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(read, names);
    }

    #[test]
    fn config_keeps_its_types() {
        let fixture = Fixture::new();
        let config = fixture.config(
            "plugins:\n  auth:\n    type: builtin\n    config:\n      z: 1\n      a: -2\n      f: 1.5\n      t: true\n      n: ~\n      1: one\n      list: [a, {b: c}]\n",
        );
        let config = &config.plugins[0].config;
        assert_eq!(
            *config,
            serde_json::json!({
                "z": 1, "a": -2, "f": 1.5, "t": true, "n": null, "1": "one",
                "list": ["a", {"b": "c"}],
            })
        );
    }

    #[test]
    fn environment_substitution() {
        let fixture = Fixture::new();
        let config = fixture.config(concat!(
            "server:\n",
            "  listen: \"${HOST}:${PORT:-8081}\"\n",
            "  hook_timeout: ${TIMEOUT:-2s}\n",
            "require_signatures: ${OFF}\n",
            "plugins:\n",
            "  stripe-plugin:\n",
            "    type: marketplace\n",
            "    version: \"${STRIPE_VERSION:-=1.2.0}\"\n",
            "    config:\n",
            "      api_key: ${STRIPE_API_KEY}\n",
            "      nested:\n",
            "        deeper: [\"key=${STRIPE_API_KEY}\", {again: \"${STRIPE_API_KEY}${STRIPE_API_KEY}\"}]\n",
            "      empty_with_default: ${EMPTY:-fallback}\n",
            "      empty_without_default: \"<${EMPTY}>\"\n",
            "      unset_with_empty_default: \"<${UNSET:-}>\"\n",
            "      escaped: \"$${STRIPE_API_KEY} costs $5, $$ and $\"\n",
            "      not_again: ${NESTED}\n",
            "      default_with_colon: ${UNSET:-a:b-c}\n",
        ));
        assert_eq!(config.listen, "0.0.0.0:8081".parse().unwrap());
        assert_eq!(config.hook_timeout, Duration::from_secs(2));
        assert!(!config.require_signatures);
        let PluginKind::Marketplace {
            version,
            requirement,
        } = &config.plugins[0].kind
        else {
            panic!("a marketplace plugin")
        };
        assert_eq!(version, "=1.2.0");
        assert!(requirement.matches(&semver::Version::new(1, 2, 0)));
        assert!(!requirement.matches(&semver::Version::new(1, 2, 1)));
        assert_eq!(
            config.plugins[0].config,
            serde_json::json!({
                "api_key": "sk_test_123",
                "nested": {"deeper": ["key=sk_test_123", {"again": "sk_test_123sk_test_123"}]},
                "empty_with_default": "fallback",
                "empty_without_default": "<>",
                "unset_with_empty_default": "<>",
                "escaped": "${STRIPE_API_KEY} costs $5, $$ and $",
                "not_again": "${STRIPE_API_KEY}",
                "default_with_colon": "a:b-c",
            })
        );
    }

    #[test]
    fn substitute_cases() {
        let run = |text: &str| substitute(text, &env).map(|(value, _)| value);
        assert_eq!(run("plain"), Ok(String::from("plain")));
        assert_eq!(run(""), Ok(String::new()));
        assert_eq!(run("${HOST}"), Ok(String::from("0.0.0.0")));
        assert_eq!(
            run("a${HOST}b${HOST}c"),
            Ok(String::from("a0.0.0.0b0.0.0.0c"))
        );
        assert_eq!(run("${_X:-d}"), Ok(String::from("d")));
        assert_eq!(run("$${HOST}"), Ok(String::from("${HOST}")));
        assert_eq!(run("$$${HOST}"), Ok(String::from("$${HOST}")));
        assert_eq!(run("$$$${HOST}"), Ok(String::from("$$${HOST}")));
        assert_eq!(run("$"), Ok(String::from("$")));
        assert_eq!(run("${UNSET:-}"), Ok(String::new()));
        assert_eq!(run("é${HOST}é"), Ok(String::from("é0.0.0.0é")));
        assert_eq!(
            run("${UNSET}"),
            Err(SubstError::Missing(String::from("UNSET")))
        );
        assert_eq!(run("${HOST"), Err(SubstError::Unterminated));
        assert_eq!(run("${}"), Err(SubstError::BadName(String::new())));
        assert_eq!(run("${1X}"), Err(SubstError::BadName(String::from("1X"))));
        assert_eq!(run("${A-B}"), Err(SubstError::BadName(String::from("A-B"))));
        assert!(substitute("${HOST}", &env).unwrap().1);
        assert!(!substitute("$${HOST}", &env).unwrap().1);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(6 * 3600)));
        for bad in [
            "",
            "s",
            "5",
            "5d",
            "5 s",
            " 5s",
            "-5s",
            "1.5s",
            "5S",
            "0s",
            "0ms",
            "5sec",
            "99999999999999999999s",
            "999999999999999999m",
            "9999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_duration_is_at_most_a_year_so_a_deadline_never_overflows() {
        let year = parse_duration("8760h").expect("a year is a duration");
        assert_eq!(year, MAX_DURATION);
        assert!(std::time::Instant::now().checked_add(year).is_some());
        for too_long in [
            "8761h",
            "525601m",
            "31536001s",
            "31536000001ms",
            "18446744073709551615s",
            "18446744073709551615ms",
        ] {
            let problem = parse_duration(too_long).expect_err(too_long);
            assert!(
                problem.contains("longer than a year"),
                "{too_long}: {problem}"
            );
        }
    }

    #[test]
    fn debug_hides_config_values() {
        let fixture = Fixture::new();
        let config = fixture.config(docs_example());
        let debug = format!("{config:?}");
        for secret in ["change-me", "12345", "sk_test_123"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        for key in ["jwt_secret", "api_key", "my-custom-plugin"] {
            assert!(debug.contains(key), "{key} not in {debug}");
        }
        insta::assert_snapshot!(fixture.redact(&format!("{:#?}", config.plugins[0])));
        insta::assert_snapshot!(fixture.redact(&format!("{:?}", config.trusted_keys[0])));
    }

    #[test]
    fn lines_are_found() {
        let fixture = Fixture::new();
        let line = |text: &str| fixture.parse(text).unwrap_err().line();
        assert_eq!(line("server:\n  listen: 1\n"), Some(2));
        assert_eq!(line("plugins: {auth: {type: builtin}, x: {}}\n"), Some(1));
        assert_eq!(
            line(
                "plugins:\n\n  auth:\n    type: builtin\n    config:\n      a: [1, \"${UNSET}\"]\n"
            ),
            Some(6)
        );
        assert_eq!(line("plugin_dirs:\n  - plugins\n  - missing\n"), Some(3));
        assert_eq!(
            line(
                "plugins:\n  x: &m {type: marketplace, version: \"1\"}\n  y: *m\n  z: {type: wasm}\n"
            ),
            Some(4)
        );
        assert_eq!(line("server: &s\n  listen: 1\nplugins: *s\n"), Some(2));
    }

    /// Truncated and mutated configurations give errors, never panics.
    #[test]
    fn never_panics() {
        let fixture = Fixture::new();
        let example = docs_example();
        for (end, _) in example.char_indices() {
            let _ = fixture.parse(&example[..end]);
        }
        // xorshift: deterministic, no dependency.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet: Vec<char> = " \n\t:-{}[],\"'$&*!#|>?%@`~aZ09._/\\é\u{0}"
            .chars()
            .collect();
        for _ in 0..3000 {
            let mut text: Vec<char> = example.chars().collect();
            for _ in 0..(next() % 6 + 1) {
                let at = (next() as usize) % (text.len() + 1);
                let c = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 if at < text.len() => text[at] = c,
                    1 if at < text.len() => {
                        text.remove(at);
                    }
                    _ => text.insert(at, c),
                }
            }
            let text: String = text.into_iter().collect();
            let _ = fixture.parse(&text);
        }
        for _ in 0..1000 {
            let length = (next() % 60) as usize;
            let text: String = (0..length)
                .map(|_| alphabet[(next() as usize) % alphabet.len()])
                .collect();
            let _ = fixture.parse(&text);
        }
        let deep = "[".repeat(10_000);
        let _ = fixture.parse(&deep);
        let deep_config = format!(
            "plugins:\n  auth:\n    type: builtin\n    config: {}{}\n",
            "{a: ".repeat(200),
            "}".repeat(200)
        );
        let _ = fixture.parse(&deep_config);
        let laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
        let _ = fixture.parse(laughs);
    }

    /// A test whose refused configuration's message is a snapshot.
    macro_rules! refused {
        ($($name:ident: $text:expr;)*) => {$(
            #[test]
            fn $name() {
                let fixture = Fixture::new();
                insta::assert_snapshot!(fixture.error($text));
            }
        )*};
    }

    refused! {
        empty_document: "";
        only_a_comment: "# nothing here\n";
        invalid_yaml: "server:\n  listen: [\n";
        bad_indentation: "server:\n  listen: x\n hook_timeout: 5s\n";
        two_documents: "plugins: {}\n---\nplugins: {}\n";
        duplicate_plugin: "plugins:\n  auth:\n    type: builtin\n  auth:\n    type: builtin\n";
        document_is_a_list: "- plugins\n";
        document_is_a_string: "plugins\n";
        unknown_top_level_field: "server: {}\nplugin_dir: [plugins]\n";
        unknown_server_field: "server:\n  listen: \"127.0.0.1:1\"\n  hook_timout: 5s\n";
        max_connections_zero: "server:\n  max_connections: 0\n";
        max_connections_text: "server:\n  max_connections: many\n";
        header_timeout_without_unit: "server:\n  header_timeout: 10\n";
        public_unknown_endpoint: "server:\n  public: [/weather]\n";
        public_twice: "server:\n  public: [/healthz, /healthz]\n";
        public_not_a_list: "server:\n  public: /healthz\n";
        unknown_plugin_field: "plugins:\n  auth:\n    type: builtin\n    settings: {}\n";
        unknown_trusted_key_field: "trusted_keys:\n  - file: keys/release.pub\n    comment: release\n";
        server_not_a_mapping: "server: 127.0.0.1:8080\n";
        require_signatures_string: "require_signatures: \"yes\"\n";
        require_signatures_quoted_true: "require_signatures: \"true\"\n";
        require_signatures_number: "require_signatures: 1\n";
        require_signatures_null: "require_signatures:\n";
        listen_number: "server:\n  listen: 12\n";
        listen_host_name: "server:\n  listen: \"localhost:8080\"\n";
        listen_no_port: "server:\n  listen: \"127.0.0.1\"\n";
        listen_list: "server:\n  listen: [127.0.0.1]\n";
        listen_ipv6_unquoted: "server:\n  listen: [::1]:8080\n";
        duration_without_unit: "server:\n  hook_timeout: 5\n";
        duration_bad_unit: "server:\n  hook_timeout: 5d\n";
        duration_with_space: "server:\n  shutdown_timeout: 5 seconds\n";
        duration_zero: "server:\n  hook_timeout: 0ms\n";
        duration_overflow: "server:\n  hook_timeout: 99999999999999999999m\n";
        plugins_a_list: "plugins:\n  - auth\n";
        plugin_not_a_mapping: "plugins:\n  auth: builtin\n";
        plugin_empty_entry: "plugins:\n  auth:\n";
        plugin_type_missing: "plugins:\n  auth:\n    config: {}\n";
        plugin_type_misspelt_field: "plugins:\n  auth:\n    tpye: builtin\n";
        plugin_type_unknown: "plugins:\n  auth:\n    type: wasm\n";
        plugin_type_not_a_string: "plugins:\n  auth:\n    type: [builtin]\n";
        builtin_unknown_name: "plugins:\n  weather:\n    type: builtin\n";
        builtin_with_path: "plugins:\n  auth:\n    type: builtin\n    path: plugins/my-custom-plugin.so\n";
        external_without_path: "plugins:\n  my-custom-plugin:\n    type: external\n";
        external_path_missing: "plugins:\n  my-custom-plugin:\n    type: external\n    path: ./plugins/missing.so\n";
        external_path_is_a_directory: "plugins:\n  my-custom-plugin:\n    type: external\n    path: plugins\n";
        external_path_empty: "plugins:\n  my-custom-plugin:\n    type: external\n    path: \"\"\n";
        external_with_version: "plugins:\n  my-custom-plugin:\n    type: external\n    path: plugins/my-custom-plugin.so\n    version: \"1.0.0\"\n";
        marketplace_without_version: "plugins:\n  stripe-plugin:\n    type: marketplace\n";
        marketplace_bad_version: "plugins:\n  stripe-plugin:\n    type: marketplace\n    version: \"one point two\"\n";
        marketplace_version_number: "plugins:\n  stripe-plugin:\n    type: marketplace\n    version: 1.2\n";
        plugin_name_empty: "plugins:\n  \"\":\n    type: builtin\n";
        plugin_name_with_space: "plugins:\n  \"my plugin\":\n    type: marketplace\n    version: \"1\"\n";
        plugin_name_with_dot: "plugins:\n  my.plugin:\n    type: marketplace\n    version: \"1\"\n";
        plugin_name_null: "plugins:\n  ~:\n    type: builtin\n";
        config_not_a_mapping: "plugins:\n  auth:\n    type: builtin\n    config: [a, b]\n";
        config_infinity: "plugins:\n  auth:\n    type: builtin\n    config:\n      limit: .inf\n";
        config_tagged: "plugins:\n  auth:\n    type: builtin\n    config:\n      secret: !vault abc\n";
        trusted_key_both: "trusted_keys:\n  - file: keys/release.pub\n    key: RWQ\n";
        trusted_key_neither: "trusted_keys:\n  - {}\n";
        trusted_key_string: "trusted_keys:\n  - ./keys/release.pub\n";
        trusted_key_bare_key: "trusted_keys:\n  - RWQBAQEBAQEBAQMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMD\n";
        trusted_keys_not_a_list: "trusted_keys: ./keys/release.pub\n";
        trusted_key_file_missing: "trusted_keys:\n  - file: keys/missing.pub\n";
        trusted_key_file_invalid: "trusted_keys:\n  - file: keys/release.pub\n  - file: ./keys/broken.pub\n";
        trusted_key_inline_invalid: "trusted_keys:\n  - key: RWQnotakey\n";
        trusted_key_listed_twice: "trusted_keys:\n  - file: keys/release.pub\n  - key: RWQBAQEBAQEBAQMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMD\n  - key: RWQCAgICAgICAgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYG\n";
        max_plugin_size_number: "max_plugin_size: 1048576\n";
        max_plugin_size_zero: "max_plugin_size: 0KiB\n";
        trusted_key_id_shared: "trusted_keys:\n  - file: keys/release.pub\n  - file: keys/same-id.pub\n";
        plugin_dir_missing: "plugin_dirs: [\"./plugins\", \"./more-plugins\"]\n";
        plugin_dir_is_a_file: "plugin_dirs:\n  - plugins/my-custom-plugin.so\n";
        plugin_dirs_a_string: "plugin_dirs: ./plugins\n";
        plugin_dir_not_a_string: "plugin_dirs: [[plugins]]\n";
        missing_variable: "plugins:\n  stripe-plugin:\n    type: marketplace\n    version: \"1.2.0\"\n    config:\n      api_key: \"${STRIPE_SECRET_KEY}\"\n";
        missing_variable_nested: "plugins:\n  auth:\n    type: builtin\n    config:\n      upstreams:\n        - url: https://a.example\n        - url: \"https://${UPSTREAM_HOST}/\"\n";
        missing_variable_in_listen: "server:\n  listen: \"${LISTEN}\"\n";
        unterminated_variable: "plugins:\n  auth:\n    type: builtin\n    config:\n      jwt_secret: \"${JWT_SECRET\"\n";
        bad_variable_name: "plugins:\n  auth:\n    type: builtin\n    config:\n      jwt_secret: \"${JWT-SECRET}\"\n";
        marketplace_not_a_mapping: "marketplace: ./registry\n";
        marketplace_unknown_field: "marketplace:\n  registry: ./registry\n  key: keys/release.pub\n  mirrors: [a]\n";
        marketplace_without_registry: "marketplace:\n  key: keys/release.pub\n";
        marketplace_without_key: "marketplace:\n  registry: ./registry\n";
        marketplace_registry_empty: "marketplace:\n  registry: \"\"\n  key: keys/release.pub\n";
        marketplace_registry_bad_url: "marketplace:\n  registry: \"http://exa mple.com/\"\n  key: keys/release.pub\n";
        marketplace_registry_scheme: "marketplace:\n  registry: ftp://example.com/registry\n  key: keys/release.pub\n";
        marketplace_registry_query: "marketplace:\n  registry: \"https://example.com/registry?token=1\"\n  key: keys/release.pub\n";
        marketplace_registry_file_with_host: "marketplace:\n  registry: file://server/registry\n  key: keys/release.pub\n";
        marketplace_key_file_missing: "marketplace:\n  registry: ./registry\n  key: keys/missing.pub\n";
        marketplace_key_file_invalid: "marketplace:\n  registry: ./registry\n  key: keys/broken.pub\n";
        marketplace_key_inline_invalid: "marketplace:\n  registry: ./registry\n  key: RWQnotakey\n";
        marketplace_key_missing_variable: "marketplace:\n  registry: ./registry\n  key: \"${REGISTRY_KEY}\"\n";
        marketplace_max_download_number: "marketplace:\n  registry: ./registry\n  key: keys/release.pub\n  max_download: 1048576\n";
        marketplace_max_download_bad_unit: "marketplace:\n  registry: ./registry\n  key: keys/release.pub\n  max_download: 256mb\n";
        marketplace_max_download_zero: "marketplace:\n  registry: ./registry\n  key: keys/release.pub\n  max_download: 0MiB\n";
        marketplace_max_download_overflow: "marketplace:\n  registry: ./registry\n  key: keys/release.pub\n  max_download: 99999999999GiB\n";
        marketplace_transfer_timeout_number: "marketplace:\n  registry: ./registry\n  key: keys/release.pub\n  transfer_timeout: 600\n";
        marketplace_min_transfer_rate_zero: "marketplace:\n  registry: ./registry\n  key: keys/release.pub\n  min_transfer_rate: 0B\n";
        marketplace_cache_dir_empty: "marketplace:\n  registry: ./registry\n  key: keys/release.pub\n  cache_dir: \"\"\n";
        updates_not_a_mapping: "updates: minor\n";
        updates_unknown_field: "updates:\n  check_interval: 30s\n  allowed: minor\n";
        updates_bad_interval: "updates:\n  check_interval: 1d\n";
        updates_interval_number: "updates:\n  check_interval: 30\n";
        updates_unknown_allow: "updates:\n  allow: minr\n";
        updates_bad_requirement: "plugins:\n  weather:\n    type: marketplace\n    version: \"1.0\"\nupdates:\n  plugins:\n    weather: \"newest\"\n";
        updates_requirement_number: "plugins:\n  weather:\n    type: marketplace\n    version: \"1.0\"\nupdates:\n  plugins:\n    weather: 1.2\n";
        updates_requirement_for_builtin: "plugins:\n  auth:\n    type: builtin\nupdates:\n  plugins:\n    auth: \"^1\"\n";
        updates_requirement_for_unknown_plugin: "plugins:\n  weather:\n    type: marketplace\n    version: \"1.0\"\nupdates:\n  plugins:\n    wether: \"^1\"\n";
    }

    #[test]
    fn marketplace_and_updates_are_read() {
        let fixture = Fixture::new();
        let config = fixture.config(concat!(
            "plugins:\n",
            "  weather:\n",
            "    type: marketplace\n",
            "    version: \"1.0\"\n",
            "marketplace:\n",
            "  registry: ./registry\n",
            "  key: keys/release.pub\n",
            "  cache_dir: ${DIR}/cache\n",
            "  max_download: 10MB\n",
            "  transfer_timeout: 2m\n",
            "  min_transfer_rate: 10KiB\n",
            "updates:\n",
            "  check_interval: 30s\n",
            "  allow: patch\n",
            "  plugins:\n",
            "    weather: \">=1.0, <3\"\n",
        ));
        let marketplace = config.marketplace().unwrap();
        assert_eq!(
            marketplace.registry,
            RegistryLocation::Dir(fixture.dir.path().join("registry"))
        );
        assert_eq!(
            KeyId::of_public_key(&marketplace.key),
            KeyId::of_public_key(&test_key(2))
        );
        assert_eq!(
            marketplace.key_origin,
            fixture
                .dir
                .path()
                .join("keys/release.pub")
                .display()
                .to_string()
        );
        assert_eq!(
            marketplace.cache_dir,
            fixture.dir.path().join("plugins/cache")
        );
        assert_eq!(marketplace.max_download, 10_000_000);
        assert_eq!(marketplace.transfer_timeout, Duration::from_secs(120));
        assert_eq!(marketplace.min_transfer_rate, 10 * 1024);
        assert_eq!(config.updates.check_interval, Some(Duration::from_secs(30)));
        assert_eq!(config.updates.allow, Allow::Patch);
        assert_eq!(
            config.updates.requirement("weather"),
            Some(&semver::VersionReq::parse(">=1.0, <3").unwrap())
        );
        assert_eq!(config.updates.requirement("other"), None);

        // Defaults, and the other registry forms.
        let inline = test_key(1).to_base64();
        for (registry, expected) in [
            (
                "file:///srv/registry",
                RegistryLocation::Dir(PathBuf::from("/srv/registry")),
            ),
            (
                "http://127.0.0.1:8080",
                RegistryLocation::Http(reqwest::Url::parse("http://127.0.0.1:8080/").unwrap()),
            ),
            (
                "https://example.com/plugins",
                RegistryLocation::Http(
                    reqwest::Url::parse("https://example.com/plugins/").unwrap(),
                ),
            ),
            (
                "/abs/registry",
                RegistryLocation::Dir(PathBuf::from("/abs/registry")),
            ),
        ] {
            let config = fixture.config(&format!(
                "marketplace:\n  registry: {registry}\n  key: {inline}\nupdates:\n  check_interval: \"off\"\n"
            ));
            let marketplace = config.marketplace().unwrap();
            assert_eq!(marketplace.registry, expected, "{registry}");
            assert_eq!(marketplace.key_origin, "inline key");
            assert_eq!(
                marketplace.cache_dir,
                fixture.dir.path().join(".backworks/plugins")
            );
            assert_eq!(marketplace.max_download, DEFAULT_MAX_DOWNLOAD);
            assert_eq!(config.updates, UpdatesConfig::default());
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1B"), Ok(1));
        assert_eq!(parse_size("2KiB"), Ok(2048));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("3KB"), Ok(3000));
        assert_eq!(parse_size("3MB"), Ok(3_000_000));
        assert_eq!(parse_size("3GB"), Ok(3_000_000_000));
        for bad in [
            "",
            "B",
            "5",
            "5 MiB",
            "5mib",
            "-5B",
            "1.5MiB",
            "0B",
            "5TiB",
            "99999999999999999999B",
            "99999999999GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn allow_policies() {
        let v = |text: &str| semver::Version::parse(text).unwrap();
        let cases = [
            (Allow::Patch, "1.2.3", "1.2.9", true),
            (Allow::Patch, "1.2.3", "1.3.0", false),
            (Allow::Minor, "1.2.3", "1.9.0", true),
            (Allow::Minor, "1.2.3", "2.0.0", false),
            (Allow::Minor, "0.2.3", "0.2.9", true),
            (Allow::Minor, "0.2.3", "0.3.0", false),
            (Allow::Major, "1.2.3", "7.0.0", true),
            (Allow::Major, "1.2.3", "2.0.0-rc.1", false),
        ];
        for (allow, locked, candidate, expected) in cases {
            assert_eq!(
                allow.permits(&v(locked), &v(candidate)),
                expected,
                "{allow} {locked} -> {candidate}"
            );
        }
    }

    /// A marketplace plugin without a `marketplace:` section is accepted by
    /// the parser (the design note's map alone is a configuration) and
    /// refused, at its entry, by whatever needs the registry.
    #[test]
    fn marketplace_section_missing() {
        let fixture = Fixture::new();
        let config = fixture.config(
            "plugins:\n  auth:\n    type: builtin\n  weather:\n    type: marketplace\n    version: \"1.0\"\n",
        );
        let error = config.marketplace().unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert_eq!(error.line(), Some(4));
        insta::assert_snapshot!(fixture.redact(&error.to_string()));
        let config = fixture.config("plugins:\n  auth:\n    type: builtin\n");
        let error = config.marketplace().unwrap_err();
        insta::assert_snapshot!(
            "marketplace_section_missing_no_plugin",
            fixture.redact(&error.to_string())
        );
    }
}
