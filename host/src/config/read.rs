//! The third step of [`super::parse`]: reads the checked [`Config`] out of
//! the [`File`] the second step deserialized. Each value is converted here,
//! with `${VAR}` substituted and relative paths resolved, and each check
//! that needs the file system (files exist, keys parse) or several fields
//! (a field allowed for one plugin type, a key id listed twice, an update
//! requirement naming a marketplace plugin) is made here. Every error names
//! the field's path and its line.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use backworks_artifact::signature::{self, KeyId, PublicKey};
use serde_yaml::Value;

use super::file::{
    Entries, File, KeyEntry, Leaf, List, Map, Marketplace, PluginEntry, Process, Server, Updates,
    Watchdog,
};
use super::path::{FieldPath, Seg, line_of};
use super::text::{SubstError, edit_distance, parse_duration, parse_size, substitute};
use super::{
    ALLOW_VALUES, Allow, BUILTINS, Config, ConfigError, DEFAULT_CACHE_DIR, DEFAULT_HOOK_TIMEOUT,
    DEFAULT_LISTEN, DEFAULT_MAX_DOWNLOAD, DEFAULT_MIN_TRANSFER_RATE, DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_TRANSFER_TIMEOUT, DEFAULT_WATCHDOG_THRESHOLD, HOST_ENDPOINTS, Isolation,
    MIN_WORKER_MEMORY, MarketplaceConfig, PLUGIN_TYPES, PluginConfig, PluginKind, ProcessConfig,
    RegistryLocation, TrustedKey, UpdatesConfig, WatchdogAction, WatchdogConfig, list,
};
use crate::http_serve::ConnectionLimits;

/// What a path in the configuration must name.
#[derive(Clone, Copy)]
enum Existing {
    /// A directory (`plugin_dirs`).
    Dir,
    /// A file (an external plugin's library).
    Library,
}

/// Reads the checked configuration out of the parsed document.
pub(super) struct Reader<'a> {
    /// The configuration file.
    pub path: &'a Path,
    /// Its text, to find lines in.
    pub text: &'a str,
    /// Its directory, which relative paths are resolved against.
    pub base: &'a Path,
    /// The environment `${VAR}` is taken from.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Reader<'_> {
    /// The configuration in `document`, the parsed file.
    pub(super) fn config(&self, document: &Value) -> Result<Config, ConfigError> {
        let root = FieldPath::default();
        match document {
            Value::Null => {
                return Err(ConfigError::Empty {
                    path: self.path.to_owned(),
                });
            }
            Value::Mapping(_) => {}
            other => {
                return Err(self.invalid(
                    &root,
                    format!(
                        "the document must be a mapping of settings (`server:`, `plugins:`, ...), not {}",
                        kind(other)
                    ),
                ));
            }
        }
        let file: File = serde_path_to_error::deserialize(document)
            .map_err(|error| self.unknown_field(&error, document))?;

        let server_at = root.key("server");
        let absent = Server::default();
        let server = self
            .mapping(&file.server, &server_at, "a mapping")?
            .unwrap_or(&absent);
        let at = |name: &str| server_at.key(name);
        let listen = self.read(&server.listen, &at("listen"), Self::address)?;
        let duration = |leaf: &Leaf, name: &str| self.read(leaf, &at(name), Self::duration);
        let hook_timeout = duration(&server.hook_timeout, "hook_timeout")?;
        let shutdown_timeout = duration(&server.shutdown_timeout, "shutdown_timeout")?;
        let defaults = ConnectionLimits::default();
        let limits = ConnectionLimits {
            header_timeout: duration(&server.header_timeout, "header_timeout")?
                .unwrap_or(defaults.header_timeout),
            idle_timeout: duration(&server.idle_timeout, "idle_timeout")?
                .unwrap_or(defaults.idle_timeout),
            max_connections: self
                .read(
                    &server.max_connections,
                    &at("max_connections"),
                    Self::max_connections,
                )?
                .unwrap_or(defaults.max_connections),
        };
        let public = self.public_endpoints(&server.public, &at("public"))?;
        let isolation = self
            .read(&server.isolation, &at("isolation"), Self::isolation)?
            .unwrap_or_default();
        let marketplace_isolation = self
            .read(
                &server.marketplace_isolation,
                &at("marketplace_isolation"),
                Self::isolation,
            )?
            .unwrap_or(isolation);
        let watchdog_at = at("watchdog");
        let watchdog = match self.mapping(
            &server.watchdog,
            &watchdog_at,
            "a mapping with `threshold` and `action` (`watchdog: {threshold: 100ms, action: move}`)",
        )? {
            Some(section) => self.watchdog(section, &watchdog_at)?,
            None => WatchdogConfig::default(),
        };
        let process_at = at("process");
        let process = match self.mapping(
            &server.process,
            &process_at,
            "a mapping with `max_crashes`, `crash_window`, `memory` and `open_files` (`process: {max_crashes: 5, crash_window: 60s}`)",
        )? {
            Some(section) => self.process(section, &process_at)?,
            None => ProcessConfig::default(),
        };

        let plugin_dirs = self.plugin_dirs(&file.plugin_dirs, &root.key("plugin_dirs"))?;
        let trusted_keys = self.trusted_keys(&file.trusted_keys, &root.key("trusted_keys"))?;
        let require_signatures = self
            .read(
                &file.require_signatures,
                &root.key("require_signatures"),
                Self::boolean,
            )?
            .unwrap_or(true);
        let max_plugin_size = self
            .read(
                &file.max_plugin_size,
                &root.key("max_plugin_size"),
                Self::size,
            )?
            .unwrap_or(crate::loader::DEFAULT_MAX_PLUGIN_SIZE);

        let plugins_at = root.key("plugins");
        let mut plugins = Vec::new();
        if let Some(Entries(entries)) = self.mapping(
            &file.plugins,
            &plugins_at,
            "a mapping from plugin name to its settings (`auth: {type: builtin}`)",
        )? {
            for (key, entry) in entries {
                plugins.push(self.plugin(
                    key,
                    entry,
                    &plugins_at,
                    [isolation, marketplace_isolation],
                )?);
            }
        }

        let marketplace_at = root.key("marketplace");
        let marketplace = match self.mapping(
            &file.marketplace,
            &marketplace_at,
            "a mapping with `registry` and `key` (`marketplace: {registry: ./registry, key: ./keys/registry.pub}`)",
        )? {
            Some(section) => Some(self.marketplace(section, &marketplace_at)?),
            None => None,
        };
        let updates_at = root.key("updates");
        let updates = match self.mapping(&file.updates, &updates_at, "a mapping")? {
            Some(section) => self.updates(section, &updates_at, &plugins)?,
            None => UpdatesConfig::default(),
        };

        Ok(Config {
            path: self.path.to_owned(),
            listen: listen.unwrap_or(DEFAULT_LISTEN),
            hook_timeout: hook_timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT),
            shutdown_timeout: shutdown_timeout.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT),
            limits,
            isolation,
            watchdog,
            process,
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

    /// The error for what the first step refused: a field that is not part
    /// of the format (`deny_unknown_fields`), with the fields allowed there
    /// and the nearest of them.
    fn unknown_field(
        &self,
        error: &serde_path_to_error::Error<serde_yaml::Error>,
        document: &Value,
    ) -> ConfigError {
        let mut parent: Vec<Seg> = Vec::new();
        let mut name = None;
        for segment in error.path() {
            if let Some(name) = name.take() {
                parent.push(Seg::Key(name));
            }
            match segment {
                serde_path_to_error::Segment::Seq { index } => parent.push(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => name = Some(key.clone()),
                // A key that is not a string (`0:`, `~:`): the first such
                // key of the mapping.
                _ => {
                    name = lookup(document, &parent).and_then(|mapping| match mapping {
                        Value::Mapping(map) => map
                            .keys()
                            .find(|key| !matches!(key, Value::String(_)))
                            .map(key_text),
                        _ => None,
                    });
                }
            }
        }
        let parent = FieldPath(parent);
        let Some(name) = name else {
            return self.invalid(&parent, error.inner().to_string());
        };
        let allowed = super::file::fields_at(&parent.0);
        let field = parent.key(&name);
        ConfigError::UnknownField {
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
        }
    }

    /// A value field: `None` when it is absent, else what `convert` makes
    /// of it.
    fn read<T>(
        &self,
        leaf: &Leaf,
        at: &FieldPath,
        convert: impl FnOnce(&Self, &Value, &FieldPath) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        leaf.0
            .as_ref()
            .map(|value| convert(self, value, at))
            .transpose()
    }

    /// A mapping section: `None` when absent or null; `expected` says what
    /// it should be when it is something else.
    fn mapping<'m, T>(
        &self,
        section: &'m Map<T>,
        at: &FieldPath,
        expected: &str,
    ) -> Result<Option<&'m T>, ConfigError> {
        match section {
            Map::Absent => Ok(None),
            Map::Is(section) => Ok(Some(section)),
            Map::Not(other) => {
                Err(self.invalid(at, format!("expected {expected}, found {}", kind(other))))
            }
        }
    }

    /// A list: `None` when absent or null; `example` shows one when it is
    /// something else.
    fn list<'l, T>(
        &self,
        list: &'l List<T>,
        at: &FieldPath,
        example: &str,
    ) -> Result<Option<&'l [T]>, ConfigError> {
        match list {
            List::Absent => Ok(None),
            List::Is(items) => Ok(Some(items)),
            List::Not(other) => Err(self.invalid(
                at,
                format!(
                    "expected a list, found {}; write e.g. `{example}`",
                    kind(other)
                ),
            )),
        }
    }

    fn marketplace(
        &self,
        section: &Marketplace,
        at: &FieldPath,
    ) -> Result<MarketplaceConfig, ConfigError> {
        let registry_at = at.key("registry");
        let Some(registry) = &section.registry.0 else {
            return Err(self.invalid(
                at,
                "missing field `registry`; give the registry's directory, `file:///` URL or `http(s)://` URL, e.g. `registry: ./registry`",
            ));
        };
        let registry = self.string(registry, &registry_at)?;
        let registry = RegistryLocation::parse(&registry, |path| self.resolve(path))
            .map_err(|error| self.invalid(&registry_at, error.to_string()))?;
        let key_at = at.key("key");
        let Some(key) = &section.key.0 else {
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
            (self.key_file(&file, &key_at)?, file.display().to_string())
        };
        let cache_dir =
            match self.read(&section.cache_dir, &at.key("cache_dir"), Self::path_string)? {
                Some(dir) => self.resolve(&dir),
                None => self.resolve(DEFAULT_CACHE_DIR),
            };
        Ok(MarketplaceConfig {
            registry,
            key,
            key_origin,
            cache_dir,
            max_download: self
                .read(&section.max_download, &at.key("max_download"), Self::size)?
                .unwrap_or(DEFAULT_MAX_DOWNLOAD),
            transfer_timeout: self
                .read(
                    &section.transfer_timeout,
                    &at.key("transfer_timeout"),
                    Self::duration,
                )?
                .unwrap_or(DEFAULT_TRANSFER_TIMEOUT),
            // A size per second: `min_transfer_rate: 1KiB`.
            min_transfer_rate: self
                .read(
                    &section.min_transfer_rate,
                    &at.key("min_transfer_rate"),
                    Self::size,
                )?
                .unwrap_or(DEFAULT_MIN_TRANSFER_RATE),
        })
    }

    /// Checks that `path`, named by the field `at`, is what it must be.
    fn existing(&self, path: &Path, at: &FieldPath, what: Existing) -> Result<(), ConfigError> {
        let (is_it, not, missing) = match what {
            Existing::Dir => (
                std::fs::Metadata::is_dir as fn(&std::fs::Metadata) -> bool,
                "is not a directory",
                ("the directory", "create it"),
            ),
            Existing::Library => (
                std::fs::Metadata::is_file as fn(&std::fs::Metadata) -> bool,
                "is not a file",
                ("the plugin library", "build it (`cargo backworks build`)"),
            ),
        };
        let message = match std::fs::metadata(path) {
            Ok(metadata) if is_it(&metadata) => return Ok(()),
            Ok(_) => format!("{} {not}", path.display()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => format!(
                "{} {} does not exist; {} or fix the path{}",
                missing.0,
                path.display(),
                missing.1,
                self.relative_note()
            ),
            Err(error) => format!("cannot read {}: {error}", path.display()),
        };
        Err(self.invalid(at, message))
    }

    /// The minisign public key in `file`, named by the field `at`.
    fn key_file(&self, file: &Path, at: &FieldPath) -> Result<PublicKey, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|error| {
            let message = if error.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "the key file {} does not exist; fix the path{}",
                    file.display(),
                    self.relative_note()
                )
            } else {
                format!("cannot read {}: {error}", file.display())
            };
            self.invalid(at, message)
        })?;
        signature::parse_public_key(&text)
            .map_err(|error| self.invalid(at, format!("{}: {error}", file.display())))
    }

    fn updates(
        &self,
        section: &Updates,
        at: &FieldPath,
        plugins: &[PluginConfig],
    ) -> Result<UpdatesConfig, ConfigError> {
        let mut updates = UpdatesConfig::default();
        if let Some(value) = &section.check_interval.0 {
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
        if let Some(value) = &section.allow.0 {
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
        if let Some(Entries(entries)) = self.mapping(
            &section.plugins,
            &plugins_at,
            "a mapping from plugin name to a semver requirement (`weather: \">=1.0, <2\"`)",
        )? {
            for (key, value) in entries {
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
                    self.requirement(value.value(), &plugin_at, &name, "`>=1.2, <2` or `~1.2`")?;
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

    fn plugin_dirs(&self, value: &List<Leaf>, at: &FieldPath) -> Result<Vec<PathBuf>, ConfigError> {
        let Some(items) = self.list(value, at, "plugin_dirs: [\"./plugins\"]")? else {
            return Ok(Vec::new());
        };
        let mut dirs = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_at = at.index(i);
            let dir = self.resolve(&self.path_string(item.value(), &item_at)?);
            self.existing(&dir, &item_at, Existing::Dir)?;
            dirs.push(dir);
        }
        Ok(dirs)
    }
    fn trusted_keys(
        &self,
        value: &List<Map<KeyEntry>>,
        at: &FieldPath,
    ) -> Result<Vec<TrustedKey>, ConfigError> {
        let Some(items) = self.list(value, at, "trusted_keys: [{file: ./keys/release.pub}]")?
        else {
            return Ok(Vec::new());
        };
        let mut keys = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_at = at.index(i);
            let entry = match item {
                Map::Is(entry) => entry,
                Map::Not(Value::String(text)) => {
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
                Map::Not(other) => return Err(self.not_a_key_entry(other, &item_at)),
                Map::Absent => return Err(self.not_a_key_entry(&Value::Null, &item_at)),
            };
            let key = match (&entry.file.0, &entry.key.0) {
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
                    let key = self.key_file(&file, &file_at)?;
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

    fn not_a_key_entry(&self, other: &Value, at: &FieldPath) -> ConfigError {
        self.invalid(
            at,
            format!(
                "expected a mapping with `file` or `key`, found {}; write `- file: ./keys/release.pub` or `- key: RW...`",
                kind(other)
            ),
        )
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

    /// `server.watchdog`.
    fn watchdog(&self, section: &Watchdog, at: &FieldPath) -> Result<WatchdogConfig, ConfigError> {
        let threshold_at = at.key("threshold");
        let threshold = self
            .read(&section.threshold, &threshold_at, Self::duration)?
            .unwrap_or(DEFAULT_WATCHDOG_THRESHOLD);
        if threshold.is_zero() {
            return Err(self.invalid(&threshold_at, "must be longer than 0; write e.g. `100ms`"));
        }
        let action = self
            .read(&section.action, &at.key("action"), |reader, value, at| {
                let name = reader.string(value, at)?;
                match name.as_str() {
                    "move" => Ok(WatchdogAction::Move),
                    "report" => Ok(WatchdogAction::Report),
                    other => Err(reader.invalid(
                        at,
                        format!(
                            "unknown watchdog action `{other}`; the actions are {} (`move`: the plugin's later requests run in the `thread` tier)",
                            list(WatchdogAction::NAMES)
                        ),
                    )),
                }
            })?
            .unwrap_or_default();
        Ok(WatchdogConfig { threshold, action })
    }

    /// `server.process`.
    fn process(&self, section: &Process, at: &FieldPath) -> Result<ProcessConfig, ConfigError> {
        let defaults = ProcessConfig::default();
        let max_crashes_at = at.key("max_crashes");
        let max_crashes = self
            .read(
                &section.max_crashes,
                &max_crashes_at,
                |reader, value, at| reader.whole_number(value, at, 1, 1000, "crashes, like `5`"),
            )?
            .map_or(defaults.max_crashes, |n| n as u32);
        let crash_window_at = at.key("crash_window");
        let crash_window = self
            .read(&section.crash_window, &crash_window_at, Self::duration)?
            .unwrap_or(defaults.crash_window);
        if crash_window.is_zero() {
            return Err(self.invalid(&crash_window_at, "must be longer than 0; write e.g. `60s`"));
        }
        let memory_at = at.key("memory");
        let memory = self
            .read(&section.memory, &memory_at, Self::size)?
            .unwrap_or(defaults.memory);
        if memory < MIN_WORKER_MEMORY {
            return Err(self.invalid(
                &memory_at,
                "must be at least 64MiB: a worker's runtime and the plugin's own threads reserve that much address space before any request",
            ));
        }
        let open_files = self
            .read(
                &section.open_files,
                &at.key("open_files"),
                |reader, value, at| {
                    reader.whole_number(value, at, 16, 1_000_000, "open files, like `1024`")
                },
            )?
            .unwrap_or(defaults.open_files);
        Ok(ProcessConfig {
            max_crashes,
            crash_window,
            memory,
            open_files,
        })
    }

    /// A whole number from `min` to `max` (`what` says what it counts, with
    /// an example).
    fn whole_number(
        &self,
        value: &Value,
        at: &FieldPath,
        min: u64,
        max: u64,
        what: &str,
    ) -> Result<u64, ConfigError> {
        let number = match value {
            Value::Number(number) => number.as_u64(),
            Value::String(_) => self.string(value, at)?.trim().parse::<u64>().ok(),
            other => return Err(self.wrong_type(other, at, "a whole number")),
        };
        match number {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.invalid(
                at,
                format!("expected a whole number from {min} to {max} of {what}"),
            )),
        }
    }

    /// An `isolation` value: one of [`Isolation::NAMES`].
    fn isolation(&self, value: &Value, at: &FieldPath) -> Result<Isolation, ConfigError> {
        let name = self.string(value, at)?;
        if name == "process" && !cfg!(target_os = "linux") {
            return Err(self.invalid(
                at,
                format!(
                    "the `process` tier runs on Linux only (this host is {}); use `thread`, which contains errors, panics and hangs but not crashes",
                    std::env::consts::OS
                ),
            ));
        }
        Isolation::from_name(&name).ok_or_else(|| {
            self.invalid(
                at,
                format!(
                    "unknown isolation `{name}`; the tiers are {} (`inline`: on the server's workers, for plugins trusted not to block; `thread`: on the hook pool; `process`: in a supervised worker process of its own)",
                    list(Isolation::NAMES)
                ),
            )
        })
    }

    fn plugin(
        &self,
        key: &Value,
        entry: &Map<PluginEntry>,
        plugins_at: &FieldPath,
        [default_isolation, marketplace_isolation]: [Isolation; 2],
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
        let entry = match entry {
            Map::Is(entry) => entry,
            Map::Not(other) => return Err(self.not_a_plugin_entry(other, &at)),
            Map::Absent => return Err(self.not_a_plugin_entry(&Value::Null, &at)),
        };
        let type_at = at.key("type");
        let Some(type_value) = &entry.kind.0 else {
            return Err(self.invalid(
                &at,
                "missing field `type`; add `type: builtin`, `type: external` or `type: marketplace`",
            ));
        };
        let type_name = self.string(type_value, &type_at)?;
        let allowed: &[&str] = match type_name.as_str() {
            "builtin" => &["type", "isolation", "config"],
            "external" => &["type", "path", "isolation", "config"],
            "marketplace" => &["type", "version", "isolation", "config"],
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
        for (field, leaf) in [("path", &entry.path), ("version", &entry.version)] {
            if leaf.0.is_some() && !allowed.contains(&field) {
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
                let Some(path) = &entry.path.0 else {
                    return Err(self.invalid(
                        &at,
                        "missing field `path`; an external plugin needs the path of its library, e.g. `path: ./plugins/libmy_plugin.so`",
                    ));
                };
                let path = self.resolve(&self.path_string(path, &path_at)?);
                self.existing(&path, &path_at, Existing::Library)?;
                PluginKind::External { path }
            }
            _ => {
                let version_at = at.key("version");
                let Some(version) = &entry.version.0 else {
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
        let config = match &entry.config.0 {
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
        let isolation_at = at.key("isolation");
        let own = self.read(&entry.isolation, &isolation_at, Self::isolation)?;
        let isolation = match (&plugin_kind, own) {
            (PluginKind::Builtin, Some(Isolation::Process)) => {
                return Err(self.invalid(
                    &isolation_at,
                    "a built-in plugin is part of the server and runs in its process; `process` is for plugin libraries (use `inline` or `thread`)",
                ));
            }
            (_, Some(own)) => own,
            // A default of `process` is for libraries: built-ins run on the
            // hook pool.
            (PluginKind::Builtin, None) if default_isolation == Isolation::Process => {
                Isolation::Thread
            }
            (PluginKind::Marketplace { .. }, None) => marketplace_isolation,
            (_, None) => default_isolation,
        };
        Ok(PluginConfig {
            line: self.line_of(&at),
            name,
            kind: plugin_kind,
            isolation,
            config,
        })
    }

    fn not_a_plugin_entry(&self, other: &Value, at: &FieldPath) -> ConfigError {
        self.invalid(
            at,
            format!(
                "expected a mapping with the plugin's `type` (and `path`, `version`, `config`), found {}",
                kind(other)
            ),
        )
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
        value: &List<Leaf>,
        at: &FieldPath,
    ) -> Result<Vec<String>, ConfigError> {
        let Some(items) = self.list(value, at, "public: [/healthz]")? else {
            return Ok(Vec::new());
        };
        let mut public = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let field = at.index(i);
            let endpoint = self.string(item.value(), &field)?;
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

    /// The line (from 1) of the field `at` in the text.
    fn line_of(&self, at: &FieldPath) -> Option<usize> {
        line_of(self.text, at)
    }
}

/// How a key reads in a field path and in messages.
pub(super) fn key_text(key: &Value) -> String {
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
pub(super) fn kind(value: &Value) -> &'static str {
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

/// The value at the field path `at` of `document`, if there is one.
fn lookup<'v>(document: &'v Value, at: &[Seg]) -> Option<&'v Value> {
    at.iter()
        .try_fold(document, |value, seg| match (seg, value) {
            (Seg::Key(key), Value::Mapping(map)) => map
                .iter()
                .find(|(candidate, _)| key_text(candidate) == *key)
                .map(|(_, value)| value),
            (Seg::Index(index), Value::Sequence(items)) => items.get(*index),
            _ => None,
        })
}
