//! `backworks.lock`: which version of each marketplace plugin runs, pinned
//! by target, sha256 and signing key. It lives next to `backworks.yaml`, is
//! written by `backworks plugins install|update|remove` (and by `serve`
//! when it installs a missing plugin), and is meant to be committed.
//!
//! ```toml
//! version = 1
//!
//! [[plugin]]
//! name = "weather"
//! version = "1.0.0"
//! target = "x86_64-unknown-linux-gnu"
//! sha256 = "…"
//! key_id = "CAB78193ADCAB890"
//! ```
//!
//! There is one entry per plugin and target, so one lock file can serve
//! hosts of several targets. The file is edited with `toml_edit`: comments,
//! formatting and keys a user added are kept. Every write replaces the file
//! atomically (temporary file, then rename). Errors name the file, the line
//! and the field.

use std::fmt;
use std::path::{Path, PathBuf};

use backworks_registry::{self as registry, RegistryError};
use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, value};

/// The lock file's name, next to `backworks.yaml`.
pub const FILE_NAME: &str = "backworks.lock";

/// The format version this module reads and writes.
pub const FORMAT: i64 = 1;

const HEADER: &str = "# The marketplace plugins `backworks serve` runs, pinned by version, target,\n# sha256 and signing key. Written by `backworks plugins install|update|remove`;\n# commit it. `backworks serve --locked` refuses anything else.\n";

/// One pinned plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedPlugin {
    /// The plugin's name (in the registry and in `backworks.yaml`).
    pub name: String,
    /// The exact version.
    pub version: semver::Version,
    /// The target triple of the artifact.
    pub target: String,
    /// sha256 of the artifact, lower-case hex.
    pub sha256: String,
    /// The id of the key that signed it (minisign's 16 upper-case hex
    /// digits).
    pub key_id: String,
}

impl fmt::Display for LockedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} for {} (sha256 {}, key {})",
            self.name, self.version, self.target, self.sha256, self.key_id
        )
    }
}

/// Why the lock file cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The file exists but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}: invalid toml: {message}; fix it, or delete the file and run `backworks plugins install` again", at(path, *line))]
    Syntax {
        /// The lock file.
        path: PathBuf,
        /// The line (from 1), when known.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// A field is missing or has a value that is not allowed.
    #[error("{}: {field}: {message}", at(path, *line))]
    Invalid {
        /// The lock file.
        path: PathBuf,
        /// The line (from 1), when known.
        line: Option<usize>,
        /// The field, e.g. `plugin[2].sha256`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The file could not be replaced.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: RegistryError,
    },
}

fn at(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{}:{line}", path.display()),
        None => path.display().to_string(),
    }
}

/// The lock file of the configuration file `config`: `backworks.lock` in
/// the same directory.
pub fn path_for(config: &Path) -> PathBuf {
    config
        .parent()
        .map_or_else(|| PathBuf::from(FILE_NAME), |dir| dir.join(FILE_NAME))
}

/// A lock file as read, with what a user wrote in it.
#[derive(Debug, Clone)]
pub struct LockFile {
    path: PathBuf,
    document: DocumentMut,
    entries: Vec<LockedPlugin>,
}

impl LockFile {
    /// Reads the lock file at `path`; a missing file is an empty lock.
    pub fn read(path: &Path) -> Result<Self, LockError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                path: path.to_owned(),
                document: DocumentMut::new(),
                entries: Vec::new(),
            }),
            Err(source) => Err(LockError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Reads a lock file from `text`, the contents of `path` (used in
    /// messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, LockError> {
        let document = toml_edit::Document::parse(text).map_err(|error| LockError::Syntax {
            path: path.to_owned(),
            line: error.span().map(|span| line_at(text, span.start)),
            message: error.message().trim().to_owned(),
        })?;
        let invalid = |span: Option<std::ops::Range<usize>>, field: &str, message: String| {
            LockError::Invalid {
                path: path.to_owned(),
                line: span.map(|span| line_at(text, span.start)),
                field: field.to_owned(),
                message,
            }
        };
        let root = document.as_table();
        let mut entries = Vec::new();
        if !root.is_empty() {
            match root.get("version") {
                Some(item) if item.as_integer() == Some(FORMAT) => {}
                Some(item) => {
                    return Err(invalid(
                        item.span(),
                        "version",
                        format!(
                            "lock file format {} is not supported (this backworks writes format {FORMAT}); upgrade backworks, or delete the file and install again",
                            item.as_value()
                                .map_or_else(|| String::from("?"), ToString::to_string)
                                .trim()
                        ),
                    ));
                }
                None => {
                    return Err(invalid(
                        None,
                        "version",
                        format!(
                            "missing field `version`; the first line of a lock file is `version = {FORMAT}`"
                        ),
                    ));
                }
            }
            match root.get("plugin") {
                None => {}
                Some(Item::ArrayOfTables(tables)) => {
                    for (i, table) in tables.iter().enumerate() {
                        let entry = entry(table, i, &invalid)?;
                        if let Some(first) = entries.iter().position(|e: &LockedPlugin| {
                            e.name == entry.name && e.target == entry.target
                        }) {
                            return Err(invalid(
                                table.span(),
                                &format!("plugin[{i}]"),
                                format!(
                                    "`{}` for {} is locked twice (also plugin[{first}]); keep one entry",
                                    entry.name, entry.target
                                ),
                            ));
                        }
                        entries.push(entry);
                    }
                }
                Some(item) => {
                    return Err(invalid(
                        item.span(),
                        "plugin",
                        String::from(
                            "expected `[[plugin]]` tables (an array of tables), one per plugin",
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            path: path.to_owned(),
            document: document.into_mut(),
            entries,
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> &[LockedPlugin] {
        &self.entries
    }

    /// The entry of `name` for `target`.
    pub fn get(&self, name: &str, target: &str) -> Option<&LockedPlugin> {
        self.entries
            .iter()
            .find(|e| e.name == name && e.target == target)
    }

    /// Pins `entry`: replaces the entry of the same name and target (other
    /// keys a user added to it are kept), or appends one.
    pub fn upsert(&mut self, entry: LockedPlugin) {
        self.ensure_header();
        let tables = self.tables_mut();
        let position = tables.iter().position(|table| {
            table.get("name").and_then(Item::as_str) == Some(entry.name.as_str())
                && table.get("target").and_then(Item::as_str) == Some(entry.target.as_str())
        });
        let table = match position {
            Some(i) => tables.get_mut(i).expect("the position was just found"),
            None => {
                tables.push(Table::new());
                let last = tables.len() - 1;
                tables.get_mut(last).expect("a table was just pushed")
            }
        };
        set(table, "name", &entry.name);
        set(table, "version", &entry.version.to_string());
        set(table, "target", &entry.target);
        set(table, "sha256", &entry.sha256);
        set(table, "key_id", &entry.key_id);
        match self
            .entries
            .iter_mut()
            .find(|e| e.name == entry.name && e.target == entry.target)
        {
            Some(existing) => *existing = entry,
            None => self.entries.push(entry),
        }
    }

    /// Removes the entries of `name` for targets other than `targets`
    /// (what a newly pinned release does not have).
    pub fn keep_targets(&mut self, name: &str, targets: &[&str]) {
        let stale = |entry_name: Option<&str>, target: Option<&str>| {
            entry_name == Some(name) && !target.is_some_and(|t| targets.contains(&t))
        };
        if let Some(Item::ArrayOfTables(tables)) = self.document.get_mut("plugin") {
            tables.retain(|table| {
                !stale(
                    table.get("name").and_then(Item::as_str),
                    table.get("target").and_then(Item::as_str),
                )
            });
        }
        self.entries
            .retain(|e| !stale(Some(e.name.as_str()), Some(e.target.as_str())));
    }

    /// Removes every entry of `name` (all targets); returns them.
    pub fn remove(&mut self, name: &str) -> Vec<LockedPlugin> {
        if let Some(Item::ArrayOfTables(tables)) = self.document.get_mut("plugin") {
            tables.retain(|table| table.get("name").and_then(Item::as_str) != Some(name));
        }
        let (removed, kept) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| e.name == name);
        self.entries = kept;
        removed
    }

    /// The file's text as it would be written.
    pub fn to_text(&self) -> String {
        self.document.to_string()
    }

    /// Replaces the file atomically with [`to_text`](Self::to_text).
    pub fn write(&self) -> Result<(), LockError> {
        registry::write_atomically(&self.path, self.to_text().as_bytes()).map_err(|source| {
            LockError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }

    /// A new file gets the explanatory header and `version = 1`.
    fn ensure_header(&mut self) {
        if self.document.as_table().is_empty() && self.document.get("version").is_none() {
            self.document["version"] = value(FORMAT);
            if let Some(mut key) = self.document.as_table_mut().key_mut("version") {
                key.leaf_decor_mut().set_prefix(HEADER);
            }
        }
    }

    fn tables_mut(&mut self) -> &mut ArrayOfTables {
        if !matches!(self.document.get("plugin"), Some(Item::ArrayOfTables(_))) {
            self.document["plugin"] = Item::ArrayOfTables(ArrayOfTables::new());
        }
        match self.document.get_mut("plugin") {
            Some(Item::ArrayOfTables(tables)) => tables,
            _ => unreachable!("`plugin` was just made an array of tables"),
        }
    }
}

/// Sets `key` of `table` to the string `text`, keeping the comments and
/// spacing around an existing value.
fn set(table: &mut Table, key: &str, text: &str) {
    match table.get_mut(key).and_then(Item::as_value_mut) {
        Some(existing) if existing.as_str() == Some(text) => {}
        Some(existing) => {
            let decor = existing.decor().clone();
            *existing = toml_edit::Value::from(text);
            *existing.decor_mut() = decor;
        }
        None => table[key] = value(text),
    }
}

/// The line (from 1) of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Makes the error for a field at a span of the text.
type Invalid<'a> = dyn Fn(Option<std::ops::Range<usize>>, &str, String) -> LockError + 'a;

/// Reads and checks entry `i`.
fn entry(table: &Table, i: usize, invalid: &Invalid<'_>) -> Result<LockedPlugin, LockError> {
    let at = format!("plugin[{i}]");
    let text = |key: &str, expected: &str| -> Result<String, LockError> {
        match table.get(key) {
            Some(item) => item.as_str().map(str::to_owned).ok_or_else(|| {
                invalid(
                    item.span(),
                    &format!("{at}.{key}"),
                    format!("expected {expected} in quotes"),
                )
            }),
            None => Err(invalid(
                table.span(),
                &at,
                format!(
                    "missing field `{key}`; every `[[plugin]]` has name, version, target, sha256 and key_id (delete the entry and run `backworks plugins install` to write it again)"
                ),
            )),
        }
    };
    let span = |key: &str| table.get(key).and_then(Item::span);
    let name = text("name", "the plugin's name")?;
    if !registry::is_valid_name(&name) {
        return Err(invalid(
            span("name"),
            &format!("{at}.name"),
            format!("`{name}` is not a valid plugin name (lower-case letters, digits, `-`, `_`)"),
        ));
    }
    let version_text = text("version", "a semver version")?;
    let version = semver::Version::parse(&version_text).map_err(|error| {
        invalid(
            span("version"),
            &format!("{at}.version"),
            format!("`{version_text}` is not a semver version ({error})"),
        )
    })?;
    let target = text("target", "a target triple")?;
    if target.is_empty() || target.contains(char::is_whitespace) {
        return Err(invalid(
            span("target"),
            &format!("{at}.target"),
            format!("{target:?} is not a target triple"),
        ));
    }
    let sha256 = text("sha256", "a sha256")?;
    if sha256.len() != 64
        || !sha256
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Err(invalid(
            span("sha256"),
            &format!("{at}.sha256"),
            format!("{sha256:?} is not a sha256 (64 lower-case hex digits)"),
        ));
    }
    let key_id = text("key_id", "a key id")?;
    if key_id.len() != 16
        || !key_id
            .chars()
            .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
    {
        return Err(invalid(
            span("key_id"),
            &format!("{at}.key_id"),
            format!("{key_id:?} is not a minisign key id (16 upper-case hex digits)"),
        ));
    }
    Ok(LockedPlugin {
        name,
        version,
        target,
        sha256,
        key_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, version: &str, target: &str) -> LockedPlugin {
        LockedPlugin {
            name: name.to_owned(),
            version: semver::Version::parse(version).unwrap(),
            target: target.to_owned(),
            sha256: "ab".repeat(32),
            key_id: String::from("CAB78193ADCAB890"),
        }
    }

    fn error(text: &str) -> String {
        LockFile::parse(text, Path::new("/srv/app/backworks.lock"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_missing_file_is_empty_and_writing_creates_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("backworks.yaml"));
        assert_eq!(path, dir.path().join("backworks.lock"));
        let mut lock = LockFile::read(&path).unwrap();
        assert!(lock.entries().is_empty());
        lock.upsert(entry("weather", "1.0.0", "x86_64-unknown-linux-gnu"));
        lock.write().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(HEADER), "{text}");
        let again = LockFile::read(&path).unwrap();
        assert_eq!(again.entries(), lock.entries());
        insta::assert_snapshot!(text);
    }

    #[test]
    fn comments_and_unknown_keys_are_kept() {
        let text = "# my lock\nversion = 1\nnote = \"mine\"\n\n# the weather\n[[plugin]]\nname = \"weather\" # pinned on purpose\nversion = \"1.0.0\"\ntarget = \"x86_64-unknown-linux-gnu\"\nsha256 = \"".to_owned()
            + &"ab".repeat(32)
            + "\"\nkey_id = \"CAB78193ADCAB890\"\nreviewed_by = \"ops\"\n\n[[plugin]]\nname = \"stripe\"\nversion = \"2.0.0\"\ntarget = \"aarch64-apple-darwin\"\nsha256 = \""
            + &"cd".repeat(32)
            + "\"\nkey_id = \"0123456789ABCDEF\"\n";
        let mut lock = LockFile::parse(&text, Path::new("backworks.lock")).unwrap();
        assert_eq!(lock.entries().len(), 2);
        let mut newer = entry("weather", "1.0.1", "x86_64-unknown-linux-gnu");
        newer.sha256 = "ef".repeat(32);
        lock.upsert(newer.clone());
        let mut other_target = entry("weather", "1.0.1", "aarch64-apple-darwin");
        other_target.sha256 = "01".repeat(32);
        lock.upsert(other_target);
        let written = lock.to_text();
        for kept in [
            "# my lock\n",
            "note = \"mine\"",
            "# the weather\n",
            "reviewed_by = \"ops\"",
            "# pinned on purpose",
            "name = \"stripe\"",
        ] {
            assert!(written.contains(kept), "{kept:?} lost:\n{written}");
        }
        assert!(!written.contains(&"ab".repeat(32)), "{written}");
        let reread = LockFile::parse(&written, Path::new("backworks.lock")).unwrap();
        assert_eq!(reread.entries(), lock.entries());
        assert_eq!(
            reread.get("weather", "x86_64-unknown-linux-gnu"),
            Some(&newer)
        );
        assert_eq!(reread.entries().len(), 3);

        let removed = lock.remove("weather");
        assert_eq!(removed.len(), 2);
        let written = lock.to_text();
        assert!(!written.contains("weather\""), "{written}");
        assert!(written.contains("# my lock\n") && written.contains("name = \"stripe\""));
        assert_eq!(
            LockFile::parse(&written, Path::new("backworks.lock"))
                .unwrap()
                .entries()
                .len(),
            1
        );
    }

    #[test]
    fn bad_lock_files_name_file_line_and_field() {
        let good = |field: &str, value: &str| {
            let mut fields = vec![
                ("name", "\"weather\"".to_owned()),
                ("version", "\"1.0.0\"".to_owned()),
                ("target", "\"x86_64-unknown-linux-gnu\"".to_owned()),
                ("sha256", format!("\"{}\"", "ab".repeat(32))),
                ("key_id", "\"CAB78193ADCAB890\"".to_owned()),
            ];
            fields.retain(|(name, _)| *name != field);
            if !value.is_empty() {
                fields.push((field, value.to_owned()));
            }
            let body: String = fields
                .iter()
                .map(|(name, value)| format!("{name} = {value}\n"))
                .collect();
            format!("version = 1\n\n[[plugin]]\n{body}")
        };
        let cases = [
            error("version = 1\n[[plugin]\n"),
            error("version = 2\n"),
            error("[[plugin]]\nname = \"weather\"\n"),
            error("version = 1\nplugin = \"weather\"\n"),
            error(&good("name", "")),
            error(&good("name", "\"Weather!\"")),
            error(&good("version", "\"1.0\"")),
            error(&good("version", "1")),
            error(&good("target", "\"\"")),
            error(&good("sha256", "\"abc\"")),
            error(&good("key_id", "\"cab78193adcab890\"")),
            error(&format!(
                "{}\n[[plugin]]\nname = \"weather\"\nversion = \"1.0.1\"\ntarget = \"x86_64-unknown-linux-gnu\"\nsha256 = \"{}\"\nkey_id = \"CAB78193ADCAB890\"\n",
                good("", ""),
                "ab".repeat(32)
            )),
        ];
        insta::assert_snapshot!(cases.join("\n"));
    }

    #[test]
    fn line_numbers() {
        assert_eq!(line_at("a\nb\nc", 0), 1);
        assert_eq!(line_at("a\nb\nc", 2), 2);
        assert_eq!(line_at("a\nb\nc", 99), 3);
    }
}
