//! The plugin registry: a static tree of files that any file server, object
//! store or CDN can serve, and that a plain local directory is too.
//!
//! ```text
//! <root>/index.json                                   signed index (envelope)
//! <root>/plugins/<name>/<version>/release.json        one release, immutable
//! <root>/plugins/<name>/<version>/<target>/<file>     the plugin library
//! <root>/plugins/<name>/<version>/<target>/<file>.minisig   its signature
//! ```
//!
//! Trust flows from one signature: `index.json` is an envelope holding the
//! index as a string and a minisign signature of that string's bytes by the
//! **registry key**. The index names, for every version of every plugin, the
//! sha256 and size of its `release.json`; a release names the sha256 and
//! size of every artifact; every artifact also carries its publisher's
//! signature (`docs/signing.md`), checked against the keys the host trusts.
//! The index carries a `serial` that grows with every change and an
//! `expires` time: a client refuses an index whose serial is below the last
//! one it accepted (rollback) or whose time is up (freeze). A published
//! version is never changed: publishing it again is refused, and so is a
//! version that differs from it only in letter case (`1.0.0-RC1`,
//! `1.0.0-rc1`), which a case-insensitive file system would store in the
//! same directory. Every name that becomes a path (plugin name, version,
//! target, file name) is one that Linux, macOS and Windows can all store.
//!
//! [`validate_upload`] checks every artifact of an upload (the [`check`]
//! module of `cargo backworks check`, then the publisher's signature) before
//! anything is written; [`Tree::publish`] takes only what it validated,
//! writes the release into a staging directory renamed into place, then
//! replaces `index.json` by a rename: the index is the commit point, so a process killed at any moment
//! leaves either the old index or the new one, never a half-published
//! version. The format is documented in `docs/registry.md`.

#![forbid(unsafe_code)]

use backworks_abi::capabilities::Capabilities;
pub use backworks_artifact::deps::Dependency;
pub use backworks_artifact::floor::{self, PlatformFloor};
use backworks_artifact::write::PathError;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use backworks_artifact::signature::{self, KeyId, PublicKey, SecretKey, VerifyError};
use backworks_artifact::{check, target};

/// The version of the registry format this module reads and writes: the
/// `format` of the envelope, the index and every release file.
///
/// The compatibility policy (`docs/registry.md`, "Compatibility"): a field
/// may be added to any document without a new format, as long as a reader
/// that ignores it still reads the document right (readers ignore fields
/// they do not know; an added field is optional for readers, absent in
/// older files); anything else (a field removed, renamed, retyped or given
/// another meaning, a field a reader must understand) needs a new format,
/// which readers of an older one refuse ([`RegistryError::NewerFormat`])
/// instead of misreading it. A document without `format` is format 1.
pub const FORMAT: u32 = 1;

/// The `format` of a document that has none: the first one.
fn format_1() -> u32 {
    1
}

/// The signed index, relative to the registry root.
pub const INDEX_PATH: &str = "index.json";

/// The first item of the index signature's trusted comment.
pub const INDEX_COMMENT_TAG: &str = "backworks-index";

/// How long a freshly signed index stays valid unless told otherwise: 30
/// days. A registry re-signs (`serial` + 1) before that; a client refuses
/// an expired index, so a frozen mirror cannot hide new releases forever.
pub const DEFAULT_INDEX_LIFETIME_SECS: u64 = 30 * 24 * 3600;

/// `index.json`: the index as a string, and the registry key's signature of
/// that string's UTF-8 bytes. One file, so replacing it is one rename.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The registry format ([`FORMAT`]; absent: 1).
    #[serde(default = "format_1")]
    pub format: u32,
    /// The minisign signature (`.minisig` text) of `index`.
    pub signature: String,
    /// The [`Index`] as JSON text.
    pub index: String,
}

/// The registry's list of plugins and versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// The registry format ([`FORMAT`]; absent: 1).
    #[serde(default = "format_1")]
    pub format: u32,
    /// Grows by at least one with every signed index.
    pub serial: u64,
    /// When this index was signed (unix seconds).
    pub issued: u64,
    /// After this time (unix seconds) clients refuse the index.
    pub expires: u64,
    /// Every plugin, by name.
    pub plugins: BTreeMap<String, IndexEntry>,
}

/// One plugin in the [`Index`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The newest release's description.
    pub description: String,
    /// The newest release's keywords.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Every published version (semver text), with its release file.
    pub versions: BTreeMap<String, ReleaseRef>,
}

/// Where a release file is and what it hashes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRef {
    /// Path of `release.json`, relative to the root.
    pub path: String,
    /// sha256 of the file, lower-case hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// The plugin ABI (major) the release was built for, as its
    /// [`Release::abi`] says: a client picks a version its host can load
    /// without fetching every release file. Absent in indexes written
    /// before it was added (read the release file then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abi: Option<u32>,
    /// What the release's plugin declares it needs, as its
    /// [`Release::capabilities`] says: a client sees whether an update asks
    /// for more without fetching the release file. Absent when the plugin
    /// declares nothing, and in indexes written before it was added (read
    /// the release file then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// Each target's platform floor (the newest glibc its artifact needs,
    /// its minimum macOS), as the release file's [`Artifact::floor`] says:
    /// a client sees whether this machine can load a version without
    /// fetching its release file. Only targets with a floor are listed;
    /// absent in indexes written before it was added.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub floors: BTreeMap<String, PlatformFloor>,
    /// How many crates each target's dependency list names, as the release
    /// file's [`Artifact::deps`] says: a client shows how much a version
    /// pulls in without fetching its release file, which holds the lists
    /// (the index, fetched whole by every client, stays small). Only
    /// targets with a list are listed; absent in indexes written before it
    /// was added.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deps: BTreeMap<String, DependencyCount>,
}

impl ReleaseRef {
    /// The dependency counts of `release`'s artifacts, as
    /// [`ReleaseRef::deps`] lists them (targets without a list left out).
    pub fn deps_of(release: &Release) -> BTreeMap<String, DependencyCount> {
        release
            .targets
            .iter()
            .filter_map(|(target, artifact)| {
                Some((target.clone(), DependencyCount::of(artifact.deps.as_ref()?)))
            })
            .collect()
    }

    /// The floors of `release`'s artifacts, as [`ReleaseRef::floors`] lists
    /// them (targets without a floor left out).
    pub fn floors_of(release: &Release) -> BTreeMap<String, PlatformFloor> {
        release
            .targets
            .iter()
            .filter(|(_, artifact)| !artifact.floor.is_empty())
            .map(|(target, artifact)| (target.clone(), artifact.floor))
            .collect()
    }
}

/// `release.json`: one version of one plugin, every target of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The registry format ([`FORMAT`]; absent: 1).
    #[serde(default = "format_1")]
    pub format: u32,
    /// The plugin's name (its metadata record's).
    pub name: String,
    /// The version (its metadata record's, semver).
    pub version: String,
    /// One line about the plugin.
    pub description: String,
    /// Search keywords.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// The ABI version every artifact was built against.
    pub abi: u32,
    /// The key id that signed every artifact (minisign's 16 hex digits).
    pub publisher: String,
    /// When the release was published (unix seconds).
    pub published: u64,
    /// What the plugin declares it needs (network, files, environment),
    /// from its metadata record: every target's record declares the same.
    /// Absent when it declares nothing (the process tier's defaults), and
    /// in release files written before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// The artifact of each target triple.
    pub targets: BTreeMap<String, Artifact>,
}

/// One plugin library in a [`Release`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Path of the library, relative to the root.
    pub path: String,
    /// Path of its `.minisig`, relative to the root.
    pub signature: String,
    /// sha256 of the library, lower-case hex.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its platform floor, read by the registry from the uploaded bytes:
    /// the newest glibc release it needs (ELF), its minimum macOS (Mach-O).
    /// Absent when it has none, and in release files written before it was
    /// added.
    #[serde(default, skip_serializing_if = "PlatformFloor::is_empty")]
    pub floor: PlatformFloor,
    /// The crates it was built from, read by the registry from the
    /// uploaded bytes (the `.dep-v0` section `cargo backworks build`
    /// embeds; [`artifact_deps`]), in compact form without the plugin's own
    /// package, at most [`MAX_DEPENDENCIES`] of them; the index counts them
    /// ([`ReleaseRef::deps`]). Absent when the library carries no list (a
    /// C plugin, an older build), and in release files written before it
    /// was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deps: Option<Vec<Dependency>>,
}

/// How many crates a dependency list names: those linked into the plugin,
/// and those used at build time only. Displayed as `12 dependencies (3
/// build-time only)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyCount {
    /// Linked into the plugin.
    #[serde(default)]
    pub runtime: u32,
    /// Used at build time only (build scripts, proc-macros).
    #[serde(default)]
    pub build: u32,
}

impl DependencyCount {
    /// The count of `list`.
    pub fn of(list: &[Dependency]) -> Self {
        let count = |build: bool| {
            u32::try_from(list.iter().filter(|d| d.build == build).count()).unwrap_or(u32::MAX)
        };
        Self {
            runtime: count(false),
            build: count(true),
        }
    }

    /// Both together.
    pub fn total(&self) -> u32 {
        self.runtime.saturating_add(self.build)
    }
}

impl fmt::Display for DependencyCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total();
        write!(
            f,
            "{total} {}",
            if total == 1 {
                "dependency"
            } else {
                "dependencies"
            }
        )?;
        if self.build > 0 {
            write!(f, " ({} build-time only)", self.build)?;
        }
        Ok(())
    }
}

/// The most dependencies an artifact's list may name: a plugin with a
/// large tree (an HTTP client, TLS, an async runtime) has a few hundred.
/// With [`MAX_DEPENDENCY_TEXT`], a release file cannot be made to grow
/// without bound.
pub const MAX_DEPENDENCIES: usize = 1000;

/// The longest name, version or source of a dependency, in bytes
/// (crates.io allows names of 64 characters).
pub const MAX_DEPENDENCY_TEXT: usize = 64;

/// The dependency list of the uploaded library `file` (its `bytes`), in
/// compact form ([`backworks_artifact::deps::compact`]); `None` when it
/// carries none. A list that cannot be read, or that is over
/// [`MAX_DEPENDENCIES`] or [`MAX_DEPENDENCY_TEXT`], refuses the upload
/// ([`RegistryError::DependencyList`]).
pub fn artifact_deps(file: &str, bytes: &[u8]) -> Result<Option<Vec<Dependency>>, RegistryError> {
    use backworks_artifact::deps::{self, DepsError};
    let refused = |reason: String| RegistryError::DependencyList {
        file: file.to_owned(),
        reason,
    };
    let info = match deps::from_bytes(Path::new(file), bytes) {
        Ok(info) => info,
        Err(DepsError::Missing { .. }) => return Ok(None),
        Err(error) => {
            // The message starts with the file name, which the variant's
            // message already gives.
            let message = error.to_string();
            let reason = message
                .strip_prefix(&format!("{file}: "))
                .unwrap_or(&message);
            return Err(refused(reason.to_owned()));
        }
    };
    let list = deps::compact(&info);
    if list.len() > MAX_DEPENDENCIES {
        return Err(refused(format!(
            "it names {} dependencies, at most {MAX_DEPENDENCIES} are allowed",
            list.len()
        )));
    }
    for dependency in &list {
        for (field, text) in [
            ("name", &dependency.name),
            ("version", &dependency.version),
            ("source", &dependency.source),
        ] {
            if text.len() > MAX_DEPENDENCY_TEXT {
                return Err(refused(format!(
                    "a dependency's {field} is {} bytes long, at most {MAX_DEPENDENCY_TEXT} are allowed",
                    text.len()
                )));
            }
        }
    }
    Ok(Some(list))
}

impl Index {
    /// An index with no plugins, serial 0 (never signed: [`Tree::publish`]
    /// and [`Tree::resign`] sign serial 1 and up).
    pub fn empty() -> Self {
        Self {
            format: FORMAT,
            serial: 0,
            issued: 0,
            expires: 0,
            plugins: BTreeMap::new(),
        }
    }

    /// The versions of `name`, newest first (by semver; texts that are not
    /// semver are left out).
    pub fn versions(&self, name: &str) -> Vec<semver::Version> {
        let mut versions: Vec<_> = self
            .plugins
            .get(name)
            .into_iter()
            .flat_map(|entry| entry.versions.keys())
            .filter_map(|v| semver::Version::parse(v).ok())
            .collect();
        versions.sort_by(|a, b| b.cmp(a));
        versions
    }

    /// The newest version of `name` that `requirement` allows (pre-releases
    /// only when the requirement names one, as cargo does).
    pub fn newest_matching(
        &self,
        name: &str,
        requirement: &semver::VersionReq,
    ) -> Option<semver::Version> {
        self.versions(name)
            .into_iter()
            .find(|version| requirement.matches(version))
    }

    /// The release reference of `name` at `version`.
    pub fn release_ref(&self, name: &str, version: &str) -> Option<&ReleaseRef> {
        self.plugins.get(name)?.versions.get(version)
    }

    /// The version of `name` the index lists that equals `version` ignoring
    /// ASCII case (`1.0.0-RC1` for `1.0.0-rc1`; `version` itself when it is
    /// listed): the one whose directory `version`'s would be on a
    /// case-insensitive file system.
    pub fn listed_ignoring_case(&self, name: &str, version: &str) -> Option<&str> {
        let versions = &self.plugins.get(name)?.versions;
        versions
            .get_key_value(version)
            .map(|(listed, _)| listed)
            .or_else(|| {
                versions
                    .keys()
                    .find(|listed| listed.eq_ignore_ascii_case(version))
            })
            .map(String::as_str)
    }
}

/// Why an index, a release or a registry tree was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// `index.json` is not a registry index envelope.
    #[error(
        "{what} is not a backworks registry index: {reason}; is the registry URL right, and is it a backworks registry?"
    )]
    MalformedIndex {
        /// Where the index came from.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A document of a registry format newer than [`FORMAT`]: this client
    /// cannot read it right, so it refuses it rather than guess.
    #[error(
        "{what}: registry {document} format {found} is newer than this backworks reads ({FORMAT}); upgrade backworks to use this registry"
    )]
    NewerFormat {
        /// Where the document came from (a URL or a path).
        what: String,
        /// `index` or `release file`.
        document: &'static str,
        /// The format it has.
        found: u32,
    },
    /// The index was not signed by the registry key.
    #[error(
        "the index of {what} is not signed by the registry key {expected}: {reason}; the registry or a mirror may have been tampered with, or the configured registry key is not this registry's"
    )]
    IndexSignature {
        /// Where the index came from.
        what: String,
        /// The configured registry key's id.
        expected: KeyId,
        /// Why the signature failed.
        reason: String,
    },
    /// The index is older than one already seen.
    #[error(
        "the index of {what} has serial {serial}, older than serial {last_seen} seen before: refusing a rollback (a mirror serving stale data, or an attack); try again later or use another mirror"
    )]
    Rollback {
        /// Where the index came from.
        what: String,
        /// The offered index's serial.
        serial: u64,
        /// The highest serial accepted before.
        last_seen: u64,
    },
    /// The index expired.
    #[error(
        "the index of {what} expired at {expires} (unix seconds; now {now}): refusing a frozen index; the registry must re-sign its index (`backworks marketplace resign`)"
    )]
    Expired {
        /// Where the index came from.
        what: String,
        /// Its expiry time.
        expires: u64,
        /// The time now.
        now: u64,
    },
    /// A release file does not match what the index says of it.
    #[error(
        "release file {path} does not match the signed index: {reason}; the registry or a mirror serves altered data"
    )]
    ReleaseMismatch {
        /// The release file's path in the tree.
        path: String,
        /// What differs.
        reason: String,
    },
    /// A name that cannot be a plugin name.
    #[error(
        "`{name}` is not a valid plugin name: use 1 to 64 lower-case ASCII letters, digits, `-` and `_`, starting with a letter"
    )]
    InvalidName {
        /// The name.
        name: String,
    },
    /// A plugin name that is a device name Windows reserves ([`is_reserved_on_windows`]):
    /// it is a directory of the tree and of every client's cache.
    #[error(
        "`{name}` is not a valid plugin name: it is a reserved device name on Windows (CON, PRN, AUX, NUL, COM1 to COM9, LPT1 to LPT9, in any case), where no directory can have it; choose another name"
    )]
    ReservedName {
        /// The name.
        name: String,
    },
    /// A version that is not semver.
    #[error("plugin `{name}` has version {version:?}, which is not a semver version: {reason}")]
    InvalidVersion {
        /// The plugin.
        name: String,
        /// The version text.
        version: String,
        /// The semver parser's message.
        reason: String,
    },
    /// A target that is not a known target triple.
    #[error(
        "plugin `{name}` names `target` {target:?}, which is not a target triple backworks knows (such as x86_64-unknown-linux-gnu or aarch64-apple-darwin); the metadata record must name the target the library was built for: build it with `cargo backworks build --target <triple>`"
    )]
    InvalidTarget {
        /// The plugin.
        name: String,
        /// The target text.
        target: String,
    },
    /// A path component that is not exactly one plain name (a check that
    /// stands behind the grammar checks: a writer never joins anything
    /// else to a directory).
    #[error(
        "refusing to use {component:?} as a {field} under {}: it is not one plain path component",
        dir.display()
    )]
    UnsafePath {
        /// What the component is (`plugin name`, `version`, `target`,
        /// `file name`).
        field: &'static str,
        /// The directory it was to be joined to.
        dir: PathBuf,
        /// The component.
        component: String,
    },
    /// An upload without artifacts.
    #[error("nothing to publish: the upload holds no plugin library")]
    NoArtifacts,
    /// An artifact failed `cargo backworks check`.
    #[error("{file} is not a valid plugin library: {findings}")]
    InvalidArtifact {
        /// The artifact's file name.
        file: String,
        /// The error findings, joined.
        findings: String,
    },
    /// The release's description or keywords break the limits of
    /// [`check_listing`].
    #[error("`{field}` {reason}")]
    InvalidListing {
        /// `description` or `keywords`.
        field: &'static str,
        /// What is wrong, and the rule.
        reason: String,
    },
    /// An artifact's file name cannot be stored (on every host: the
    /// release must be installable on Windows too).
    #[error(
        "artifact file name {file:?} is not allowed: {reason}; use the dist layout's `<name>-<version>-<target>.<so|dll|dylib>`"
    )]
    InvalidFileName {
        /// The file name.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An artifact came without its signature.
    #[error("{file} has no signature: upload `{file}.minisig` with it (`cargo backworks sign`)")]
    MissingSignature {
        /// The artifact's file name.
        file: String,
    },
    /// A signature came without its artifact.
    #[error("signature {file} has no artifact of that name in the upload")]
    OrphanSignature {
        /// The signature's file name.
        file: String,
    },
    /// An artifact's signature does not verify with a registered publisher
    /// key.
    #[error("{file}: {source}")]
    Signature {
        /// The artifact's file name.
        file: String,
        /// Why.
        #[source]
        source: VerifyError,
    },
    /// Artifacts of one upload disagree (name, version, ABI, key) or repeat
    /// a target.
    #[error("the upload mixes plugins: {reason}; publish one version of one plugin at a time")]
    Inconsistent {
        /// What differs.
        reason: String,
    },
    /// An artifact's dependency list cannot be read, or is over the limits
    /// ([`artifact_deps`]).
    #[error(
        "{file}: refusing its dependency list (the `.dep-v0` section): {reason}; rebuild it with `cargo backworks build`, or without a list"
    )]
    DependencyList {
        /// The artifact's file name.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The artifacts of one upload declare different capabilities.
    #[error(
        "the targets of {name} {version} declare different capabilities: {targets}; every target of a release must declare the same (build them all from one `[package.metadata.backworks.capabilities]`)"
    )]
    CapabilitiesDiffer {
        /// The plugin.
        name: String,
        /// The version.
        version: String,
        /// Each declaration and the targets that declare it.
        targets: String,
    },
    /// The version is already published.
    #[error(
        "{name} {version} is already published and published versions are immutable; bump the version in Cargo.toml, rebuild, sign and publish again"
    )]
    AlreadyPublished {
        /// The plugin.
        name: String,
        /// The version.
        version: String,
    },
    /// The version differs only in letter case from one already published
    /// (`1.0.0-RC1`, `1.0.0-rc1`): on a case-insensitive file system
    /// (macOS, Windows) both would be one directory.
    #[error(
        "{name} {version} cannot be published: {name} {published} is already published, and the two versions differ only in letter case, so they would share one directory on a case-insensitive file system (macOS, Windows); versions of a plugin must differ in more than letter case: publish it under another version"
    )]
    VersionCaseCollision {
        /// The plugin.
        name: String,
        /// The version of the upload.
        version: String,
        /// The version in the index it collides with.
        published: String,
    },
    /// The registry key could not sign.
    #[error("cannot sign the index with the registry key: {0}")]
    Sign(String),
    /// A file of the tree could not be read or written.
    #[error(transparent)]
    Io(#[from] PathError),
}

/// The time now in unix seconds (0 if the clock is before 1970).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// sha256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `name` is a valid plugin name in a registry: 1 to 64 lower-case
/// ASCII letters, digits, `-` and `_`, starting with a letter, and not a
/// device name Windows reserves ([`is_reserved_on_windows`]: `con`, `nul`,
/// `com1`, ...), so it is a safe path component and URL segment
/// everywhere. Lower case only: two names never differ only in case.
pub fn is_valid_name(name: &str) -> bool {
    is_name_shaped(name) && !is_reserved_on_windows(name)
}

fn is_name_shaped(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Whether Windows takes a file or directory named `name` for a device:
/// its part before the first `.`, without trailing spaces, is `CON`,
/// `PRN`, `AUX`, `NUL`, `COM1` to `COM9`, `LPT1` to `LPT9` (or with a
/// superscript `¹`, `²`, `³`), `CONIN$`, `CONOUT$` or `CLOCK$`, in any
/// case, whatever the extension (`nul.so`, `CON.dll`, `aux.tar.gz`).
pub fn is_reserved_on_windows(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or_default();
    let stem = stem.trim_end_matches(' ').to_ascii_uppercase();
    if matches!(
        stem.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" | "CLOCK$"
    ) {
        return true;
    }
    ["COM", "LPT"].iter().any(|port| {
        stem.strip_prefix(port).is_some_and(|number| {
            let mut digits = number.chars();
            matches!(
                (digits.next(), digits.next()),
                (Some('1'..='9' | '\u{b9}' | '\u{b2}' | '\u{b3}'), None)
            )
        })
    })
}

/// The longest version text the registry stores, in bytes (the metadata
/// record's slot holds 63; a version is a path component and URL segment).
pub const MAX_VERSION_LEN: usize = 63;

/// The longest artifact file name the registry stores, in bytes.
pub const MAX_FILE_NAME_LEN: usize = 200;

/// The tree path of `name` `version`'s release file:
/// `plugins/<name>/<version>/release.json` (the one place the layout of
/// the tree is spelt; the grammar of each part is [`check_coordinates`]'s).
pub fn release_path(name: &str, version: &str) -> String {
    format!("{}{RELEASE_FILE}", version_dir(name, version))
}

/// The name of a version's release file in its directory.
pub const RELEASE_FILE: &str = "release.json";

/// The tree path of `name` `version`'s directory, with a trailing `/`.
pub fn version_dir(name: &str, version: &str) -> String {
    format!("plugins/{name}/{version}/")
}

/// Checks a plugin name ([`is_valid_name`]).
pub fn check_name(name: &str) -> Result<(), RegistryError> {
    if !is_name_shaped(name) {
        Err(RegistryError::InvalidName {
            name: name.to_owned(),
        })
    } else if is_reserved_on_windows(name) {
        Err(RegistryError::ReservedName {
            name: name.to_owned(),
        })
    } else {
        Ok(())
    }
}

/// Checks that `version` (of plugin `name`) is a semver version of at most
/// [`MAX_VERSION_LEN`] bytes, written as semver writes it (so one version
/// has one directory); returns it parsed.
pub fn check_version(name: &str, version: &str) -> Result<semver::Version, RegistryError> {
    let invalid = |reason: String| RegistryError::InvalidVersion {
        name: name.to_owned(),
        version: version.to_owned(),
        reason,
    };
    let parsed = semver::Version::parse(version).map_err(|e| invalid(e.to_string()))?;
    if version.len() > MAX_VERSION_LEN {
        return Err(invalid(format!(
            "it is {} bytes long, at most {MAX_VERSION_LEN} are allowed",
            version.len()
        )));
    }
    if parsed.to_string() != version {
        return Err(invalid(format!("semver writes it {parsed}")));
    }
    Ok(parsed)
}

/// Checks that `target` (of plugin `name`) is a target triple a plugin
/// can be published for ([`target::is_known_plugin_target`]).
pub fn check_target(name: &str, target: &str) -> Result<(), RegistryError> {
    if target::is_known_plugin_target(target) {
        Ok(())
    } else {
        Err(RegistryError::InvalidTarget {
            name: name.to_owned(),
            target: target.to_owned(),
        })
    }
}

/// The characters a file name may not hold on Windows (besides control
/// characters); `/` and `\` are path separators everywhere or there.
const WINDOWS_FORBIDDEN: [char; 9] = ['<', '>', ':', '"', '/', '\\', '|', '?', '*'];

/// Checks an artifact's file name: a name every host can store, Windows
/// included (a release is installed on every host): 1 to
/// [`MAX_FILE_NAME_LEN`] bytes, not starting with `.`, not ending with `.`
/// or a space, without control characters or any of `<>:"/\|?*`, and not a
/// device name Windows reserves with or without an extension
/// ([`is_reserved_on_windows`]: `con.dll`, `NUL.so`).
pub fn check_file_name(file: &str) -> Result<(), RegistryError> {
    let reason = if file.is_empty() {
        String::from("it is empty")
    } else if file.len() > MAX_FILE_NAME_LEN {
        format!(
            "it is {} bytes long, at most {MAX_FILE_NAME_LEN} are allowed",
            file.len()
        )
    } else if file.starts_with('.') {
        String::from("it starts with a dot (a hidden file, never served)")
    } else if let Some(c) = file
        .chars()
        .find(|c| c.is_control() || WINDOWS_FORBIDDEN.contains(c))
    {
        format!(
            "it holds the character {c:?}, which Windows does not allow in a file name (nor control characters or any of `<>:\"/\\|?*`)"
        )
    } else if file.ends_with(['.', ' ']) {
        String::from(
            "file names that end in a dot or a space cannot be stored on Windows (it drops the trailing dot or space)",
        )
    } else if is_reserved_on_windows(file) {
        String::from(
            "it is a reserved device name on Windows (CON, PRN, AUX, NUL, COM1 to COM9, LPT1 to LPT9, in any case, with any extension), where no file can have it",
        )
    } else {
        return Ok(());
    };
    Err(RegistryError::InvalidFileName {
        file: file.to_owned(),
        reason,
    })
}

/// Checks what names a release's place in a tree: the plugin `name`, its
/// `version` and a `target` ([`check_name`], [`check_version`],
/// [`check_target`]). Every writer of a tree (and a client building cache
/// paths from a registry's data) runs it before using them as paths.
pub fn check_coordinates(name: &str, version: &str, target: &str) -> Result<(), RegistryError> {
    check_name(name)?;
    check_version(name, version)?;
    check_target(name, target)
}

/// `dir` joined with `component`, which must be exactly one plain path
/// component (not empty, `.` or `..`, no separator, no root or prefix):
/// the path stays directly inside `dir`. `field` names the component in
/// the error. Callers check the grammar first ([`check_coordinates`],
/// [`check_file_name`]); this refuses whatever would still escape.
pub fn join_component(
    dir: &Path,
    field: &'static str,
    component: &str,
) -> Result<PathBuf, RegistryError> {
    let unsafe_path = || RegistryError::UnsafePath {
        field,
        dir: dir.to_owned(),
        component: component.to_owned(),
    };
    let mut components = Path::new(component).components();
    let plain = matches!(
        (components.next(), components.next()),
        (Some(std::path::Component::Normal(part)), None) if part == component
    );
    if !plain || component.contains(['/', '\\', '\0']) {
        return Err(unsafe_path());
    }
    let joined = dir.join(component);
    if joined.parent() != Some(dir) {
        return Err(unsafe_path());
    }
    Ok(joined)
}

/// The most keywords a release may have (crates.io's limit, so the
/// `keywords` of a `Cargo.toml` that crates.io accepts are accepted here).
pub const MAX_KEYWORDS: usize = 5;

/// The longest keyword, in characters (crates.io's limit).
pub const MAX_KEYWORD_CHARS: usize = 20;

/// The longest description, in characters. Every client downloads every
/// description with the index, so it stays a summary.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;

/// Checks what a release lists for search: at most [`MAX_KEYWORDS`]
/// keywords, each 1 to [`MAX_KEYWORD_CHARS`] ASCII letters, digits, `-`,
/// `_` or `+` starting with a letter or digit (crates.io's rule), no
/// keyword twice; a description of at most [`MAX_DESCRIPTION_CHARS`]
/// characters without control characters other than line breaks and tabs.
/// The registry checks an upload with it before anything is written;
/// `cargo backworks publish` checks `Cargo.toml` with it before uploading.
pub fn check_listing(description: Option<&str>, keywords: &[String]) -> Result<(), RegistryError> {
    let keywords_error = |reason: String| RegistryError::InvalidListing {
        field: "keywords",
        reason,
    };
    if keywords.len() > MAX_KEYWORDS {
        return Err(keywords_error(format!(
            "has {} entries, at most {MAX_KEYWORDS} are allowed; keep the {MAX_KEYWORDS} that describe the plugin best",
            keywords.len()
        )));
    }
    for (i, keyword) in keywords.iter().enumerate() {
        let valid = (1..=MAX_KEYWORD_CHARS).contains(&keyword.chars().count())
            && keyword.starts_with(|c: char| c.is_ascii_alphanumeric())
            && keyword
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+'));
        if !valid {
            return Err(keywords_error(format!(
                "entry {keyword:?} is not a keyword: use 1 to {MAX_KEYWORD_CHARS} ASCII letters, digits, `-`, `_` or `+`, starting with a letter or digit"
            )));
        }
        if keywords[..i].contains(keyword) {
            return Err(keywords_error(format!(
                "lists {keyword:?} twice; list each keyword once"
            )));
        }
    }
    if let Some(description) = description {
        let chars = description.chars().count();
        if chars > MAX_DESCRIPTION_CHARS {
            return Err(RegistryError::InvalidListing {
                field: "description",
                reason: format!(
                    "is {chars} characters long, at most {MAX_DESCRIPTION_CHARS} are allowed; keep it to a summary (the README is the place for more)"
                ),
            });
        }
        if let Some(c) = description
            .chars()
            .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(RegistryError::InvalidListing {
                field: "description",
                reason: format!("holds the control character {c:?}; use plain text"),
            });
        }
    }
    Ok(())
}

/// Signs `index` with the registry key: the [`Envelope`] bytes to store as
/// `index.json`. The trusted comment states the serial, expiry and sha256
/// of the index text, so the minisign tool shows them too.
pub fn sign_index(index: &Index, key: &SecretKey) -> Result<Vec<u8>, RegistryError> {
    let text =
        serde_json::to_string_pretty(index).map_err(|e| RegistryError::Sign(e.to_string()))?;
    sign_index_text(&text, key)
}

/// Signs the index JSON `text` as it is (fields this crate does not know
/// kept: what a newer writer or a test of readers needs) with the registry
/// key: the [`Envelope`] bytes to store as `index.json`. Its `serial` and
/// `expires` go into the trusted comment; a text without them is refused.
pub fn sign_index_text(text: &str, key: &SecretKey) -> Result<Vec<u8>, RegistryError> {
    #[derive(Deserialize)]
    struct Freshness {
        serial: u64,
        expires: u64,
    }
    let index: Freshness =
        serde_json::from_str(text).map_err(|e| RegistryError::Sign(e.to_string()))?;
    let comment = format!(
        "{INDEX_COMMENT_TAG}:{FORMAT} serial:{} expires:{} sha256:{}",
        index.serial,
        index.expires,
        sha256_hex(text.as_bytes())
    );
    let public = PublicKey::from_secret_key(key).map_err(|e| RegistryError::Sign(e.to_string()))?;
    let untrusted = format!("backworks registry index, serial {}", index.serial);
    let signature = minisign::sign(
        Some(&public),
        key,
        Cursor::new(text.as_bytes()),
        Some(&comment),
        Some(&untrusted),
    )
    .map_err(|e| RegistryError::Sign(e.to_string()))?;
    let envelope = Envelope {
        format: FORMAT,
        signature: signature.into_string(),
        index: text.to_owned(),
    };
    let mut bytes =
        serde_json::to_vec_pretty(&envelope).map_err(|e| RegistryError::Sign(e.to_string()))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// What [`verify_index`] requires of an index beyond its signature.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    /// The highest serial accepted before from this registry, if any: a
    /// lower one is a rollback.
    pub last_serial: Option<u64>,
    /// The time now (unix seconds): an index that expired before it is
    /// frozen.
    pub now: u64,
}

/// Reads `bytes` as an `index.json` envelope, verifies its signature with
/// `registry_key` and its freshness, and returns the index. `what` names the
/// source in messages (a URL or a path).
pub fn verify_index(
    bytes: &[u8],
    registry_key: &PublicKey,
    freshness: Freshness,
    what: &str,
) -> Result<Index, RegistryError> {
    let malformed = |reason: String| RegistryError::MalformedIndex {
        what: what.to_owned(),
        reason,
    };
    // The envelope keeps `signature` and `index` in every format: the
    // signature is checked first, so only a format the registry key signed
    // is believed (an unsigned "format 2" is no reason to stop).
    let envelope: Envelope = parse_json(bytes).map_err(|reason| match probe_format(bytes) {
        Some(found) if found > FORMAT => newer(what, "index", found),
        _ => malformed(format!("not an index envelope: {reason}")),
    })?;
    if envelope.format < FORMAT {
        return Err(malformed(format!(
            "format {} (this backworks reads format {FORMAT})",
            envelope.format
        )));
    }
    let bad_signature = |reason: String| RegistryError::IndexSignature {
        what: what.to_owned(),
        expected: KeyId::of_public_key(registry_key),
        reason,
    };
    let signature = signature::parse_signature(&envelope.signature)
        .map_err(|e| bad_signature(e.to_string()))?;
    if signature.keynum() != registry_key.keynum() {
        return Err(bad_signature(format!(
            "it is signed by key {}",
            KeyId::from_keynum(signature.keynum())
        )));
    }
    minisign::verify(
        registry_key,
        &signature,
        Cursor::new(envelope.index.as_bytes()),
        true,
        false,
        false,
    )
    .map_err(|e| bad_signature(e.to_string().to_lowercase()))?;
    let comment = signature
        .trusted_comment()
        .map_err(|e| bad_signature(e.to_string()))?;
    let signed_format = probe_format(envelope.index.as_bytes()).unwrap_or(FORMAT);
    let found = signed_format.max(envelope.format);
    if found > FORMAT {
        return Err(newer(what, "index", found));
    }
    let index: Index = parse_json(envelope.index.as_bytes())
        .map_err(|e| malformed(format!("the signed index is not valid: {e}")))?;
    let expected_comment = format!(
        "{INDEX_COMMENT_TAG}:{FORMAT} serial:{} expires:{} sha256:{}",
        index.serial,
        index.expires,
        sha256_hex(envelope.index.as_bytes())
    );
    if comment != expected_comment {
        return Err(bad_signature(format!(
            "its trusted comment {comment:?} does not describe the index it signs"
        )));
    }
    if index.format != FORMAT {
        return Err(malformed(format!("index format {}", index.format)));
    }
    if let Some(last_seen) = freshness.last_serial
        && index.serial < last_seen
    {
        return Err(RegistryError::Rollback {
            what: what.to_owned(),
            serial: index.serial,
            last_seen,
        });
    }
    if index.expires < freshness.now {
        return Err(RegistryError::Expired {
            what: what.to_owned(),
            expires: index.expires,
            now: freshness.now,
        });
    }
    Ok(index)
}

/// Checks that `bytes` are the release file `reference` names (size and
/// sha256, from the signed index), of a format this client reads, and
/// that it is the release of `name` `version` built for the ABI the index
/// says (when it says); returns it.
pub fn verify_release(
    bytes: &[u8],
    reference: &ReleaseRef,
    name: &str,
    version: &str,
) -> Result<Release, RegistryError> {
    let mismatch = |reason: String| RegistryError::ReleaseMismatch {
        path: reference.path.clone(),
        reason,
    };
    if bytes.len() as u64 != reference.size {
        return Err(mismatch(format!(
            "it is {} bytes, the index says {}",
            bytes.len(),
            reference.size
        )));
    }
    let actual = sha256_hex(bytes);
    if actual != reference.sha256 {
        return Err(mismatch(format!(
            "its sha256 is {actual}, the index says {}",
            reference.sha256
        )));
    }
    // Hashed as the signed index says, so its format is the registry's.
    if let Some(found) = probe_format(bytes).filter(|found| *found > FORMAT) {
        return Err(newer(&reference.path, "release file", found));
    }
    let release: Release =
        parse_json(bytes).map_err(|e| mismatch(format!("not a release: {e}")))?;
    if release.name != name || release.version != version {
        return Err(mismatch(format!(
            "it is the release of {:?} {:?}, not {name} {version}",
            release.name, release.version
        )));
    }
    if let Some(listed) = reference.abi
        && listed != release.abi
    {
        return Err(mismatch(format!(
            "the index says it is built for plugin ABI v{listed}, the release file says v{}",
            release.abi
        )));
    }
    // An index that says nothing may predate the field; one that says
    // something must say what the release file does.
    if reference.capabilities.is_some() && reference.capabilities != release.capabilities {
        return Err(mismatch(format!(
            "the index says it {}, the release file says it {}",
            describe_capabilities(reference.capabilities.as_ref()),
            describe_capabilities(release.capabilities.as_ref())
        )));
    }
    let floors = ReleaseRef::floors_of(&release);
    if !reference.floors.is_empty() && reference.floors != floors {
        let describe = |floors: &BTreeMap<String, PlatformFloor>| {
            list_floors(floors).unwrap_or_else(|| String::from("no floor"))
        };
        return Err(mismatch(format!(
            "the index says its artifacts need {}, the release file says {}",
            describe(&reference.floors),
            describe(&floors)
        )));
    }
    let deps = ReleaseRef::deps_of(&release);
    if !reference.deps.is_empty() && reference.deps != deps {
        let describe = |counts: &BTreeMap<String, DependencyCount>| {
            let listed: Vec<String> = counts
                .iter()
                .map(|(target, count)| format!("{count} ({target})"))
                .collect();
            if listed.is_empty() {
                String::from("no dependency list")
            } else {
                listed.join(", ")
            }
        };
        return Err(mismatch(format!(
            "the index says its artifacts list {}, the release file says {}",
            describe(&reference.deps),
            describe(&deps)
        )));
    }
    Ok(release)
}

/// `glibc 2.17 (x86_64-unknown-linux-gnu), macOS 11.0 (aarch64-apple-darwin)`;
/// `None` when there is no floor.
fn list_floors(floors: &BTreeMap<String, PlatformFloor>) -> Option<String> {
    let listed: Vec<String> = floors
        .iter()
        .map(|(target, floor)| format!("{floor} ({target})"))
        .collect();
    (!listed.is_empty()).then(|| listed.join(", "))
}

fn newer(what: &str, document: &'static str, found: u32) -> RegistryError {
    RegistryError::NewerFormat {
        what: what.to_owned(),
        document,
        found,
    }
}

/// The `format` of a registry document, read without reading anything
/// else of it (absent: 1); `None` when `bytes` are not a JSON object with
/// a numeric or absent `format`.
pub fn probe_format(bytes: &[u8]) -> Option<u32> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default = "format_1")]
        format: u32,
    }
    serde_json::from_slice::<Probe>(bytes)
        .ok()
        .map(|probe| probe.format)
}

/// Reads a registry document (any of this crate's wire types) from JSON,
/// ignoring fields it does not know. When it cannot be read, the message
/// is serde's, followed by the fields of the object that `T` does not
/// know (`unknown field `x``): a document of another kind or a newer
/// format shows what it is.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|error| {
        let known = field_names::<T>();
        let unknown: Vec<String> =
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes)
                .map(|object| {
                    object
                        .keys()
                        .filter(|key| !known.contains(&key.as_str()))
                        .map(|key| format!("unknown field `{key}`"))
                        .collect()
                })
                .unwrap_or_default();
        if unknown.is_empty() || known.is_empty() {
            error.to_string()
        } else {
            format!("{error}; it has {}", unknown.join(", "))
        }
    })
}

/// The field names a derived `Deserialize` struct declares (empty for
/// anything else): what serde hands the deserializer in
/// `deserialize_struct`, caught by a deserializer that does nothing else.
/// For messages that name the fields a document may have (the registry's
/// documents here, `backworks.yaml` in the host).
pub fn field_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    struct Catch<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Catch<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields caught"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Catch(&mut fields));
    fields
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    /// The plugin's name.
    pub name: String,
    /// Its newest version.
    pub version: String,
    /// Its description.
    pub description: String,
    /// Its keywords.
    pub keywords: Vec<String>,
    /// How well it matched (higher is better).
    pub score: u32,
    /// What its newest version declares it needs, as the index says;
    /// `null` when it declares nothing (or the index does not say).
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    /// The platform floor of each target of its newest version, as the
    /// index says (targets without one left out); absent when none has one
    /// (or the index does not say).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub floors: BTreeMap<String, PlatformFloor>,
    /// How many crates the dependency list of each target of its newest
    /// version names, as the index says (targets without one left out);
    /// absent when none has one (or the index does not say). The lists are
    /// in the release file (`backworks plugins info`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deps: BTreeMap<String, DependencyCount>,
}

/// One page of search results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchPage {
    /// The query.
    pub query: String,
    /// How many plugins matched in all.
    pub total: usize,
    /// The page number (1-based).
    pub page: usize,
    /// Hits per page.
    pub per_page: usize,
    /// This page's hits, best first (ties by name).
    pub hits: Vec<SearchHit>,
}

/// A plugin library and its signature, as uploaded.
#[derive(Clone)]
pub struct UploadArtifact {
    /// The file name (dist layout: `<name>-<version>-<target>.<ext>`).
    pub file_name: String,
    /// The library's bytes.
    pub bytes: Vec<u8>,
    /// Its `.minisig` text.
    pub signature: String,
}

impl fmt::Debug for UploadArtifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadArtifact")
            .field("file_name", &self.file_name)
            .field("size", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// What a publisher sends: every target of one version of one plugin.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    /// The release's description; empty: the metadata record's.
    pub description: Option<String>,
    /// Search keywords (e.g. from `Cargo.toml`).
    pub keywords: Vec<String>,
    /// The libraries with their signatures.
    pub artifacts: Vec<UploadArtifact>,
}

/// A validated upload: what `Tree::publish` (feature `server`) writes.
#[derive(Debug, Clone)]
pub struct ValidatedUpload {
    release: Release,
    /// Each artifact with its target.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    files: Vec<(String, UploadArtifact)>,
}

impl ValidatedUpload {
    /// The release it will publish (paths filled in, `published` now).
    pub fn release(&self) -> &Release {
        &self.release
    }
}

/// Validates an upload without touching any tree: every artifact must pass
/// `cargo backworks check` with no error, be signed by one of `publishers`
/// with claims matching its bytes (`docs/signing.md`), and all artifacts
/// must be one version (semver) of one validly named plugin, one per target,
/// signed by one key; its description and keywords must pass
/// [`check_listing`].
pub fn validate_upload(
    upload: Upload,
    publishers: &[PublicKey],
) -> Result<ValidatedUpload, RegistryError> {
    if upload.artifacts.is_empty() {
        return Err(RegistryError::NoArtifacts);
    }
    check_listing(upload.description.as_deref(), &upload.keywords)?;
    let mut release: Option<Release> = None;
    let mut files = Vec::new();
    // Each target's declaration, from its record: they must all agree.
    let mut declared: Vec<(String, Option<Capabilities>)> = Vec::new();
    for artifact in upload.artifacts {
        let file = artifact.file_name.clone();
        check_file_name(&file)?;
        let report = check::check_bytes(Path::new(&file), &artifact.bytes);
        if !report.is_valid() {
            let findings = report
                .findings()
                .iter()
                .filter(|f| f.severity == check::Severity::Error)
                .map(|f| f.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(RegistryError::InvalidArtifact { file, findings });
        }
        // Both signatures: every published `.minisig` also verifies with
        // the `minisign` tool (the host's one-pass check needs only one).
        let verified =
            signature::verify_both_signatures(&artifact.bytes, &artifact.signature, publishers)
                .map_err(|source| RegistryError::Signature {
                    file: file.clone(),
                    source,
                })?;
        let claims = verified.claims;
        // The record's name, version and target become directories of the
        // tree: nothing but what their grammar allows.
        check_coordinates(&claims.name, &claims.version, &claims.target)?;
        let dir = format!(
            "{}{}",
            version_dir(&claims.name, &claims.version),
            claims.target
        );
        let entry = Artifact {
            path: format!("{dir}/{file}"),
            signature: format!("{dir}/{file}{}", api::SIGNATURE_SUFFIX),
            sha256: claims.sha256_hex(),
            size: artifact.bytes.len() as u64,
            floor: report.floor().map(|f| f.floor()).unwrap_or_default(),
            deps: artifact_deps(&file, &artifact.bytes)?,
        };
        let publisher = verified.key_id.to_string();
        let release = release.get_or_insert_with(|| Release {
            format: FORMAT,
            name: claims.name.clone(),
            version: claims.version.clone(),
            description: String::new(),
            keywords: upload.keywords.clone(),
            abi: claims.abi_version,
            publisher: publisher.clone(),
            published: now(),
            capabilities: None,
            targets: BTreeMap::new(),
        });
        let inconsistent = |reason: String| Err(RegistryError::Inconsistent { reason });
        if (release.name.as_str(), release.version.as_str())
            != (claims.name.as_str(), claims.version.as_str())
        {
            return inconsistent(format!(
                "{file} is {} {}, the first artifact is {} {}",
                claims.name, claims.version, release.name, release.version
            ));
        }
        if release.abi != claims.abi_version {
            return inconsistent(format!(
                "{file} is built for ABI {}, the first artifact for ABI {}",
                claims.abi_version, release.abi
            ));
        }
        if release.publisher != publisher {
            return inconsistent(format!(
                "{file} is signed by key {publisher}, the first artifact by {}",
                release.publisher
            ));
        }
        if release.targets.contains_key(&claims.target) {
            return inconsistent(format!("two artifacts for target {}", claims.target));
        }
        if release.description.is_empty()
            && let Some(metadata) = report.metadata()
        {
            release.description.clone_from(&metadata.description);
        }
        declared.push((
            claims.target.clone(),
            report.metadata().and_then(|m| m.capabilities.clone()),
        ));
        release.targets.insert(claims.target.clone(), entry);
        files.push((claims.target, artifact));
    }
    let mut release = release.ok_or(RegistryError::NoArtifacts)?;
    release.capabilities = agreed_capabilities(&release, declared)?;
    if let Some(description) = upload.description.filter(|d| !d.trim().is_empty()) {
        release.description = description;
    }
    Ok(ValidatedUpload { release, files })
}

/// The one declaration every target of `release` makes (`declared`: each
/// target's, from its record), or an error naming which targets declare
/// what.
fn agreed_capabilities(
    release: &Release,
    declared: Vec<(String, Option<Capabilities>)>,
) -> Result<Option<Capabilities>, RegistryError> {
    let mut groups: Vec<(Option<Capabilities>, Vec<String>)> = Vec::new();
    for (target, capabilities) in declared {
        match groups.iter_mut().find(|(c, _)| *c == capabilities) {
            Some((_, targets)) => targets.push(target),
            None => groups.push((capabilities, vec![target])),
        }
    }
    if groups.len() > 1 {
        let targets = groups
            .iter()
            .map(|(capabilities, targets)| match capabilities {
                Some(capabilities) => format!("{} ({capabilities})", targets.join(", ")),
                None => format!("{} (nothing declared)", targets.join(", ")),
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(RegistryError::CapabilitiesDiffer {
            name: release.name.clone(),
            version: release.version.clone(),
            targets,
        });
    }
    Ok(groups.pop().and_then(|(capabilities, _)| capabilities))
}

/// A declaration in one phrase, as tools show it: `declares network none;
/// env HOME`, or `declares nothing (the process tier's defaults)`.
pub fn describe_capabilities(capabilities: Option<&Capabilities>) -> String {
    match capabilities {
        Some(capabilities) => format!("declares {capabilities}"),
        None => String::from("declares nothing (the process tier's defaults)"),
    }
}

pub mod api;
pub mod location;
#[cfg(feature = "server")]
mod search;
#[cfg(feature = "server")]
mod storage;
#[cfg(test)]
mod tests;

pub use location::{Location, LocationError};
#[cfg(feature = "server")]
pub use search::search;
#[cfg(feature = "server")]
pub use storage::{Tree, write_atomically};
