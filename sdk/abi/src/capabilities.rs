//! What a plugin declares it needs from the machine: network endpoints,
//! files, environment variables. `cargo backworks build` reads the
//! declaration from `[package.metadata.backworks.capabilities]`, and
//! `export_plugin!` writes it into the metadata record's extension
//! ([`DeclaredRecord`]), so the plugin's signature covers it. Tools show it;
//! the host's process tier enforces it; an update that asks for more is not
//! applied without the operator's consent ([`Capabilities::added_since`]).
//!
//! A plugin that declares the table gets exactly what it lists: a field left
//! out is denied (`network = "none"`, no files, no variables). A plugin
//! that declares nothing ([`None`] where an `Option<Capabilities>` is held)
//! keeps the process tier's defaults. The JSON form in the record is what
//! [`Capabilities`] serialises to; its byte layout is in `docs/abi.md` §2.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::MetadataRecord;

/// The environment variable `cargo backworks build` sets to the declaration
/// (canonical JSON) for `export_plugin!` to record.
pub const CAPABILITIES_ENV: &str = "BACKWORKS_PLUGIN_CAPABILITIES";

/// The largest declaration a record carries, in bytes of JSON.
pub const MAX_CAPABILITIES_SIZE: usize = 16 * 1024;

/// Offset of the extension's two words (`capabilities_offset`,
/// `capabilities_size`) in a record: right after the 512 bytes of v1.
pub const EXTENSION_OFFSET: usize = 512;

/// Size of a record with the extension and no declaration.
pub const EXTENDED_RECORD_SIZE: usize = EXTENSION_OFFSET + 8;

/// A plugin's declared needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct Capabilities {
    /// Where it connects.
    pub network: Network,
    /// What it reads and writes.
    pub files: Files,
    /// The environment variables it is given, by name.
    pub env: Vec<String>,
}

/// The network a plugin may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Network {
    /// No sockets to other machines or local ports: `"none"`.
    #[default]
    None,
    /// These endpoints only: `["api.example.com:443", "10.0.0.5:*"]`.
    Endpoints(Vec<Endpoint>),
    /// Anywhere: `"any"`.
    Any,
}

/// One `host:port` a plugin connects to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// A DNS name, an IPv4 address, an IPv6 address in brackets, or `*`.
    pub host: String,
    /// The TCP port; `None` for `*` (any port).
    pub port: Option<u16>,
}

/// The files a plugin reads and writes: absolute paths; a directory covers
/// everything beneath it. A path it writes it may also read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Files {
    /// Paths it reads.
    pub read: Vec<String>,
    /// Paths it reads and writes.
    pub write: Vec<String>,
}

/// Why a declaration is not valid; `field` names it as in `Cargo.toml`,
/// e.g. `capabilities.files.read[2]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {problem}")]
pub struct CapabilityError {
    /// The field, from `capabilities`.
    pub field: String,
    /// What is wrong and what was expected.
    pub problem: String,
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> CapabilityError {
    CapabilityError {
        field: field.into(),
        problem: problem.into(),
    }
}

impl Capabilities {
    /// The declaration in `value` (the `capabilities` table, as TOML or
    /// JSON reads it), checked field by field: unknown fields, a network
    /// that is not `"none"`, `"any"` or a list of `host:port`, a path that
    /// is not absolute or goes through `..`, a variable name that is not
    /// `[A-Za-z_][A-Za-z0-9_]*` are each an error naming the field.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, CapabilityError> {
        let table = value.as_object().ok_or_else(|| {
            invalid(
                "capabilities",
                format!(
                    "must be a table with `network`, `files` and `env`, found {}",
                    kind(value)
                ),
            )
        })?;
        if let Some(unknown) = table
            .keys()
            .find(|k| !matches!(k.as_str(), "network" | "files" | "env"))
        {
            return Err(invalid(
                format!("capabilities.{unknown}"),
                "is not a capability: expected `network`, `files` or `env`",
            ));
        }
        let network = match table.get("network") {
            None => Network::None,
            Some(value) => Network::from_value(value)?,
        };
        let files = match table.get("files") {
            None => Files::default(),
            Some(value) => Files::from_value(value)?,
        };
        let env = match table.get("env") {
            None => Vec::new(),
            Some(value) => strings(value, "capabilities.env", "variable names")?
                .into_iter()
                .enumerate()
                .map(|(i, name)| {
                    if is_variable_name(&name) {
                        Ok(name)
                    } else {
                        Err(invalid(
                            format!("capabilities.env[{i}]"),
                            format!("is {name:?}: a variable name is [A-Za-z_][A-Za-z0-9_]*"),
                        ))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(Self {
            network,
            files,
            env: dedup(env),
        })
    }

    /// The declaration a record carries, from its JSON text: as
    /// [`from_value`](Self::from_value), and a key given twice is an error
    /// (two readers keeping the first and the last would disagree).
    pub fn from_json(text: &str) -> Result<Self, CapabilityError> {
        /// The shape, read first to refuse duplicate keys (serde's derive
        /// does); the values are checked by `from_value`.
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Shape {
            network: Option<serde::de::IgnoredAny>,
            files: Option<FilesShape>,
            env: Option<serde::de::IgnoredAny>,
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct FilesShape {
            read: Option<serde::de::IgnoredAny>,
            write: Option<serde::de::IgnoredAny>,
        }
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| invalid("capabilities", format!("is not JSON: {e}")))?;
        // Unknown fields and wrong kinds are `from_value`'s to name; only a
        // duplicate field is an error here.
        if let Err(e) = serde_json::from_str::<Shape>(text)
            && e.to_string().starts_with("duplicate field")
        {
            return Err(invalid("capabilities", format!("holds a {e}")));
        }
        Self::from_value(&value)
    }

    /// What a plugin that declares nothing gets in the process tier,
    /// as a declaration: any network, reads anywhere (but other processes'
    /// `/proc` entries), no writes, no variables. What an update from an
    /// undeclared version is compared with.
    pub fn process_defaults() -> Self {
        Self {
            network: Network::Any,
            files: Files {
                read: vec![String::from("/")],
                write: Vec::new(),
            },
            env: Vec::new(),
        }
    }

    /// The canonical JSON text of the declaration: what `cargo backworks
    /// build` hands to `export_plugin!` and the record holds.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a declaration serialises")
    }

    /// What `self` asks for that `before` did not grant, one line each
    /// (empty when `self` asks for nothing more). `before` is `None` for a
    /// plugin that declared nothing: that kept the process tier's defaults,
    /// which this crate does not rank, so nothing counts as more.
    pub fn added_since(&self, before: &Capabilities) -> Vec<String> {
        let mut added = Vec::new();
        match (&before.network, &self.network) {
            (_, Network::None) | (Network::Any, _) => {}
            (Network::None | Network::Endpoints(_), Network::Any) => {
                added.push(String::from("network: any"));
            }
            (Network::None, Network::Endpoints(new)) => {
                added.extend(new.iter().map(|e| format!("network: {e}")));
            }
            (Network::Endpoints(old), Network::Endpoints(new)) => added.extend(
                new.iter()
                    .filter(|e| !old.iter().any(|o| o.covers(e)))
                    .map(|e| format!("network: {e}")),
            ),
        }
        let readable: Vec<&String> = before
            .files
            .read
            .iter()
            .chain(&before.files.write)
            .collect();
        added.extend(
            self.files
                .read
                .iter()
                .filter(|p| !readable.iter().any(|old| path_covers(old, p)))
                .map(|p| format!("read: {p}")),
        );
        added.extend(
            self.files
                .write
                .iter()
                .filter(|p| !before.files.write.iter().any(|old| path_covers(old, p)))
                .map(|p| format!("write: {p}")),
        );
        added.extend(
            self.env
                .iter()
                .filter(|v| !before.env.contains(v))
                .map(|v| format!("env: {v}")),
        );
        added
    }
}

impl TryFrom<serde_json::Value> for Capabilities {
    type Error = CapabilityError;

    fn try_from(value: serde_json::Value) -> Result<Self, Self::Error> {
        Self::from_value(&value)
    }
}

impl fmt::Display for Capabilities {
    /// One line: `network none; read /etc/hostname; env LANG`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "network {}", self.network)?;
        if !self.files.read.is_empty() {
            write!(f, "; read {}", self.files.read.join(", "))?;
        }
        if !self.files.write.is_empty() {
            write!(f, "; write {}", self.files.write.join(", "))?;
        }
        if !self.env.is_empty() {
            write!(f, "; env {}", self.env.join(", "))?;
        }
        Ok(())
    }
}

impl Network {
    fn from_value(value: &serde_json::Value) -> Result<Self, CapabilityError> {
        const FIELD: &str = "capabilities.network";
        match value {
            serde_json::Value::String(word) if word == "none" => Ok(Self::None),
            serde_json::Value::String(word) if word == "any" => Ok(Self::Any),
            serde_json::Value::Array(_) => {
                let endpoints = strings(value, FIELD, "\"host:port\" strings")?
                    .iter()
                    .enumerate()
                    .map(|(i, text)| {
                        Endpoint::parse(text).map_err(|problem| {
                            invalid(format!("{FIELD}[{i}]"), format!("is {text:?}: {problem}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Self::Endpoints(dedup(endpoints)))
            }
            other => Err(invalid(
                FIELD,
                format!(
                    "must be \"none\", \"any\" or a list of \"host:port\" strings, found {}",
                    kind(other)
                ),
            )),
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Any => f.write_str("any"),
            Self::Endpoints(endpoints) => {
                for (i, endpoint) in endpoints.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{endpoint}")?;
                }
                Ok(())
            }
        }
    }
}

impl Serialize for Network {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::None => serializer.serialize_str("none"),
            Self::Any => serializer.serialize_str("any"),
            Self::Endpoints(endpoints) => serializer.collect_seq(endpoints),
        }
    }
}

impl Endpoint {
    /// `host:port` or `host:*`; an IPv6 host in brackets (`[::1]:8080`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or("expected \"host:port\" (a port or `*` after the last `:`)")?;
        let port = match port {
            "*" => None,
            digits => match digits.parse::<u16>() {
                Ok(port) if port > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => Some(port),
                _ => return Err(format!("the port {digits:?} is not 1 to 65535 or `*`")),
            },
        };
        let valid_host = host == "*"
            || host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok())
            || host.parse::<std::net::Ipv4Addr>().is_ok()
            || is_dns_name(host);
        if !valid_host {
            return Err(format!(
                "the host {host:?} is not a DNS name, an IPv4 address, an IPv6 address in brackets or `*`"
            ));
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether a grant of `self` includes `other`.
    pub fn covers(&self, other: &Endpoint) -> bool {
        (self.host == "*" || self.host == other.host)
            && (self.port.is_none() || self.port == other.port)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => write!(f, "{}:*", self.host),
        }
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Files {
    fn from_value(value: &serde_json::Value) -> Result<Self, CapabilityError> {
        let table = value.as_object().ok_or_else(|| {
            invalid(
                "capabilities.files",
                format!(
                    "must be a table with `read` and `write` lists of absolute paths, found {}",
                    kind(value)
                ),
            )
        })?;
        if let Some(unknown) = table
            .keys()
            .find(|k| !matches!(k.as_str(), "read" | "write"))
        {
            return Err(invalid(
                format!("capabilities.files.{unknown}"),
                "is not a file access: expected `read` or `write`",
            ));
        }
        let paths = |access: &str| -> Result<Vec<String>, CapabilityError> {
            let Some(value) = table.get(access) else {
                return Ok(Vec::new());
            };
            let field = format!("capabilities.files.{access}");
            let list = strings(value, &field, "absolute paths")?;
            for (i, path) in list.iter().enumerate() {
                check_path(path).map_err(|problem| {
                    invalid(format!("{field}[{i}]"), format!("is {path:?}: {problem}"))
                })?;
            }
            Ok(dedup(list))
        };
        Ok(Self {
            read: paths("read")?,
            write: paths("write")?,
        })
    }
}

fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("expected an absolute path");
    }
    if path.chars().any(is_hidden_control) {
        return Err(
            "a declared path cannot hold control or text-direction characters (they would change how it is shown)",
        );
    }
    if path.split('/').any(|part| part == "..") {
        return Err("a declared path cannot go through `..`");
    }
    // `/proc` holds links to anywhere (`/proc/self/root` is `/`); what a
    // worker needs of its own entries it may read without declaring them.
    if path_covers("/proc", path) {
        return Err("a declared path cannot be in `/proc` (its links lead anywhere)");
    }
    Ok(())
}

/// Control characters (NUL, CR, LF, ESC, ...) and the Unicode marks that
/// reorder text: what could make a path shown to the operator read as
/// something else.
fn is_hidden_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Whether a grant of path `granted` includes `path` (the same path or one
/// beneath it).
fn path_covers(granted: &str, path: &str) -> bool {
    let granted = granted.trim_end_matches('/');
    path == granted
        || granted.is_empty()
        || path
            .strip_prefix(granted)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn strings(
    value: &serde_json::Value,
    field: &str,
    what: &str,
) -> Result<Vec<String>, CapabilityError> {
    let list = value.as_array().ok_or_else(|| {
        invalid(
            field,
            format!("must be a list of {what}, found {}", kind(value)),
        )
    })?;
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str().map(str::to_owned).ok_or_else(|| {
                invalid(
                    format!("{field}[{i}]"),
                    format!("must be a string, found {}", kind(item)),
                )
            })
        })
        .collect()
}

fn dedup<T: PartialEq>(items: Vec<T>) -> Vec<T> {
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !kept.contains(&item) {
            kept.push(item);
        }
    }
    kept
}

fn kind(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::from("nothing"),
        serde_json::Value::Bool(b) => format!("the boolean {b}"),
        serde_json::Value::Number(n) => format!("the number {n}"),
        serde_json::Value::String(s) => format!("the string {s:?}"),
        serde_json::Value::Array(_) => String::from("a list"),
        serde_json::Value::Object(_) => String::from("a table"),
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A [`MetadataRecord`] followed by the extension that carries a plugin's
/// declared capabilities: what `export_plugin!` exports as
/// `backworks_plugin_metadata`. `N` is [`capabilities_slot`] of the JSON
/// text (0 when the plugin declares nothing); the record's `record_size` is
/// the size of the whole.
///
/// cbindgen:ignore
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DeclaredRecord<const N: usize> {
    /// The v1 record, `record_size` = `size_of::<Self>()`.
    pub record: MetadataRecord,
    /// Where the JSON text starts, from the record's first byte
    /// ([`EXTENDED_RECORD_SIZE`]); 0 when nothing is declared.
    pub capabilities_offset: u32,
    /// Bytes of JSON text; 0 when nothing is declared.
    pub capabilities_size: u32,
    /// The JSON text, zero-padded to a multiple of 8 bytes.
    pub capabilities: [u8; N],
}

/// Bytes the extension reserves for a declaration of `text`: its length
/// rounded up to 8. A compile-time panic when it is larger than
/// [`MAX_CAPABILITIES_SIZE`].
pub const fn capabilities_slot(text: &str) -> usize {
    if text.len() > MAX_CAPABILITIES_SIZE {
        panic!("backworks: the declared capabilities are larger than 16 KiB of JSON");
    }
    text.len().div_ceil(8) * 8
}

impl<const N: usize> DeclaredRecord<N> {
    /// `record` extended with `capabilities` (the canonical JSON text, or
    /// empty when the plugin declares nothing). Evaluated at compile time:
    /// `N` must be [`capabilities_slot`]`(capabilities)`, and the text cannot
    /// hold a NUL byte.
    pub const fn new(mut record: MetadataRecord, capabilities: &str) -> Self {
        let text = capabilities.as_bytes();
        if N != capabilities_slot(capabilities) {
            panic!("backworks: the capabilities slot does not fit the declaration");
        }
        let mut slot = [0u8; N];
        let mut i = 0;
        while i < text.len() {
            if text[i] == 0 {
                panic!("backworks: the declared capabilities hold a NUL byte");
            }
            slot[i] = text[i];
            i += 1;
        }
        record.record_size = std::mem::size_of::<Self>() as u32;
        Self {
            record,
            capabilities_offset: if text.is_empty() {
                0
            } else {
                EXTENDED_RECORD_SIZE as u32
            },
            capabilities_size: text.len() as u32,
            capabilities: slot,
        }
    }
}

impl<const N: usize> fmt::Debug for DeclaredRecord<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match crate::metadata::parse(self.as_bytes()) {
            Ok(parsed) => parsed.fmt(f),
            Err(error) => write!(f, "DeclaredRecord(invalid: {error})"),
        }
    }
}

const _: () = {
    assert!(EXTENSION_OFFSET == crate::METADATA_RECORD_SIZE);
    assert!(std::mem::offset_of!(DeclaredRecord<0>, capabilities_offset) == EXTENSION_OFFSET);
    assert!(std::mem::offset_of!(DeclaredRecord<8>, capabilities) == EXTENDED_RECORD_SIZE);
    assert!(std::mem::size_of::<DeclaredRecord<0>>() == EXTENDED_RECORD_SIZE);
    assert!(std::mem::size_of::<DeclaredRecord<16>>() == EXTENDED_RECORD_SIZE + 16);
};

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_declaration_reads_and_writes_canonical_json() {
        let caps = Capabilities::from_value(&json!({
            "network": ["API.example.com:443", "[::1]:*", "api.example.com:443"],
            "files": {"read": ["/etc/hostname"], "write": ["/var/lib/x/"]},
            "env": ["LANG", "LANG"],
        }))
        .unwrap();
        assert_eq!(
            caps.to_json(),
            r#"{"network":["api.example.com:443","[::1]:*"],"files":{"read":["/etc/hostname"],"write":["/var/lib/x/"]},"env":["LANG"]}"#
        );
        assert_eq!(Capabilities::from_json(&caps.to_json()).unwrap(), caps);
        let nothing = Capabilities::from_value(&json!({})).unwrap();
        assert_eq!(nothing.network, Network::None);
        assert_eq!(
            nothing.to_json(),
            r#"{"network":"none","files":{"read":[],"write":[]},"env":[]}"#
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = [
            (json!([]), "`capabilities` must be a table"),
            (
                json!({"net": "none"}),
                "`capabilities.net` is not a capability",
            ),
            (json!({"network": "some"}), "`capabilities.network` must be"),
            (json!({"network": 80}), "found the number 80"),
            (
                json!({"network": ["example.com"]}),
                "`capabilities.network[0]` is \"example.com\": expected \"host:port\"",
            ),
            (json!({"network": ["a:b:99999"]}), "the port \"99999\""),
            (json!({"network": ["ex ample:80"]}), "the host \"ex ample\""),
            (
                json!({"files": {"read": ["etc/x"]}}),
                "`capabilities.files.read[0]` is \"etc/x\": expected an absolute path",
            ),
            (json!({"files": {"write": ["/a/../b"]}}), "`..`"),
            (
                json!({"files": {"exec": []}}),
                "`capabilities.files.exec` is not a file access",
            ),
            (
                json!({"files": ["/x"]}),
                "`capabilities.files` must be a table",
            ),
            (json!({"env": ["A-B"]}), "`capabilities.env[0]` is \"A-B\""),
            (
                json!({"env": [1]}),
                "`capabilities.env[0]` must be a string",
            ),
        ];
        for (value, expected) in cases {
            let error = Capabilities::from_value(&value).unwrap_err().to_string();
            assert!(error.contains(expected), "{value}: {error}");
        }
    }

    #[test]
    fn more_is_what_the_old_declaration_did_not_cover() {
        let old = Capabilities::from_value(&json!({
            "network": ["api.example.com:443"],
            "files": {"read": ["/etc"], "write": ["/var/lib/p"]},
            "env": ["LANG"],
        }))
        .unwrap();
        let same_or_less = Capabilities::from_value(&json!({
            "network": ["api.example.com:443"],
            "files": {"read": ["/etc/hostname", "/var/lib/p/x"], "write": ["/var/lib/p/y"]},
        }))
        .unwrap();
        assert!(same_or_less.added_since(&old).is_empty());
        let more = Capabilities::from_value(&json!({
            "network": ["api.example.com:*"],
            "files": {"read": ["/etcetera"], "write": ["/etc/x"]},
            "env": ["LANG", "HOME"],
        }))
        .unwrap();
        assert_eq!(
            more.added_since(&old),
            [
                "network: api.example.com:*",
                "read: /etcetera",
                "write: /etc/x",
                "env: HOME"
            ]
        );
        let any = Capabilities {
            network: Network::Any,
            ..Capabilities::default()
        };
        assert_eq!(any.added_since(&old), ["network: any"]);
        assert!(old.added_since(&any).len() == 3, "files and env are new");
    }

    #[test]
    fn the_extension_sits_after_the_v1_record() {
        const TEXT: &str = r#"{"network":"none","files":{"read":[],"write":[]},"env":[]}"#;
        let base = MetadataRecord::new("1.0.0", "p", "1.0.0", "", 0);
        let declared = DeclaredRecord::<{ capabilities_slot(TEXT) }>::new(base, TEXT);
        let bytes = declared.as_bytes();
        assert_eq!(
            bytes.len(),
            EXTENDED_RECORD_SIZE + TEXT.len().div_ceil(8) * 8
        );
        let parsed = crate::metadata::parse(bytes).unwrap();
        assert_eq!(parsed.header.record_size as usize, bytes.len());
        assert_eq!(parsed.capabilities, Some(Capabilities::default()));
        let undeclared = DeclaredRecord::<0>::new(base, "");
        let parsed = crate::metadata::parse(undeclared.as_bytes()).unwrap();
        assert_eq!(parsed.header.record_size as usize, EXTENDED_RECORD_SIZE);
        assert_eq!(parsed.capabilities, None);
    }
}

/// Declarations a hostile plugin author would try (found by a review).
#[cfg(test)]
mod hostile_declarations {
    use serde_json::json;

    use super::*;

    /// `/proc/self/root` is beneath `/proc/self` by its text, but a rule
    /// for it is a rule for `/` (the sandbox opens a declared path, and
    /// `/proc` is full of such links): no path in `/proc` is declared.
    #[test]
    fn a_path_in_proc_is_refused() {
        for path in [
            "/proc",
            "/proc/",
            "/proc/self",
            "/proc/self/root",
            "/proc/self/cwd",
            "/proc/thread-self/root",
        ] {
            let error = Capabilities::from_value(&json!({"files": {"read": [path]}}))
                .unwrap_err()
                .to_string();
            assert!(error.contains("cannot be in `/proc`"), "{path}: {error}");
        }
        assert!(Capabilities::from_value(&json!({"files": {"read": ["/processes"]}})).is_ok());
    }

    /// Control characters in a declared path reach the operator's terminal
    /// as they are (`check`'s `needs:`, the held update's list): an escape
    /// sequence or a carriage return can rewrite what the operator is asked
    /// to accept.
    #[test]
    fn a_declared_path_with_control_characters_is_refused() {
        for path in [
            "/tmp/x\r\x1b[2Knetwork none",
            "/tmp/x\nenv: none",
            "/tmp/\u{202e}dwssap/cte",
        ] {
            let caps = Capabilities::from_value(&json!({"files": {"read": [path]}}));
            assert!(
                caps.is_err(),
                "{path:?} accepted: shown as `{}`",
                caps.unwrap()
            );
        }
    }

    /// docs/abi.md §2: "one JSON object with exactly these fields ...
    /// readers refuse anything else". A record's JSON with a duplicate key
    /// is read as its last value (serde_json's map), so two readers that
    /// keep the first or the last disagree on what a plugin declares.
    #[test]
    fn a_duplicate_key_is_refused() {
        let text = r#"{"network":"any","network":"none","files":{"read":[],"write":[]},"env":[]}"#;
        assert!(
            Capabilities::from_json(text).is_err(),
            "read as {:?}",
            Capabilities::from_json(text)
        );
    }
}
