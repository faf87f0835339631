//! The dependency list a plugin library carries: its resolved dependency
//! tree, embedded by `cargo backworks build` in cargo-auditable's format (a
//! `.dep-v0` section holding zlib-compressed JSON, `auditable-serde`'s
//! [`VersionInfo`]), so that `rust-audit-info` and `cargo audit bin` read it
//! as they read a binary built with `cargo auditable`.
//!
//! Reading is `auditable-info`'s, from the bytes of a possibly hostile
//! file: the section is found in ELF, PE or Mach-O, its compressed and its
//! decompressed sizes are bounded by [`MAX_DEPS_JSON_SIZE`], and the JSON is
//! validated (one root, no cycles). Every failure is a [`DepsError`] naming
//! the file and the section, never a panic.

use std::path::{Path, PathBuf};

pub use auditable_serde::{DependencyKind, Package, Source, VersionInfo};

/// The section that holds the compressed list (`cargo auditable`'s name).
pub const SECTION: &str = ".dep-v0";

/// The symbol at the start of the list, which the link keeps
/// (`cargo auditable`'s name).
pub const SYMBOL: &str = "AUDITABLE_VERSION_INFO";

/// The largest list read, compressed or decompressed: 8 MiB, the limit
/// `auditable-info` and `rust-audit-info` use by default (a plugin with a
/// thousand dependencies has about 100 KiB of JSON).
pub const MAX_DEPS_JSON_SIZE: usize = 8 << 20;

/// Why a library's dependency list could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DepsError {
    /// The file could not be read.
    #[error(transparent)]
    File(#[from] crate::file::FileError),
    /// The file has no `.dep-v0` section.
    #[error(
        "{}: no `{SECTION}` section: the library carries no dependency list (it was built by another tool than `cargo backworks build`, or before builds embedded one)",
        path.display()
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file is not an object file the section can be looked up in.
    #[error("{}: cannot look up the `{SECTION}` section: {detail}", path.display())]
    Unparsable {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// The section, or what it decompresses to, is over the limit.
    #[error(
        "{}: the `{SECTION}` section holds more than {MAX_DEPS_JSON_SIZE} bytes of dependency list",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The section is not zlib data.
    #[error("{}: the `{SECTION}` section is not zlib-compressed data: {detail}", path.display())]
    Compression {
        /// The file.
        path: PathBuf,
        /// What the decompressor said.
        detail: String,
    },
    /// The section decompresses to something that is not UTF-8.
    #[error("{}: the `{SECTION}` section does not decompress to UTF-8 text", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// The section's JSON is not a dependency list.
    #[error("{}: the `{SECTION}` section is not a valid dependency list: {detail}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What serde_json or the validation (one root, no cycles) said.
        detail: String,
    },
}

/// Reads the dependency list of the library at `path`, whose bytes are
/// `bytes` (`path` names the file in errors).
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<VersionInfo, DepsError> {
    use auditable_info::Error;
    let path = path.to_path_buf();
    auditable_info::audit_info_from_slice(bytes, MAX_DEPS_JSON_SIZE).map_err(|error| match error {
        Error::NoAuditData => DepsError::Missing { path },
        Error::InputLimitExceeded | Error::OutputLimitExceeded => DepsError::TooLarge { path },
        Error::Decompression(e) => DepsError::Compression {
            path,
            detail: e.to_string(),
        },
        Error::Utf8(_) => DepsError::NotText { path },
        Error::Json(e) => DepsError::Json {
            path,
            detail: e.to_string(),
        },
        // `BinaryParsing`, and `Io`, which a slice never gives.
        other => DepsError::Unparsable {
            path,
            detail: other.to_string(),
        },
    })
}

/// Reads the dependency list of the library at `path`, the file read
/// bounded ([`crate::file::read`], at most
/// [`MAX_FILE_SIZE`](crate::check::MAX_FILE_SIZE) bytes).
pub fn read(path: &Path) -> Result<VersionInfo, DepsError> {
    let bytes = crate::file::read(path, crate::check::MAX_FILE_SIZE)?;
    from_bytes(path, &bytes)
}

/// A package of the list as one line: `name version`, then its source
/// unless it is crates.io, `build` for a build-time dependency and `root`
/// for the plugin's own package, e.g. `serde_json 1.0.145`, `demo 0.1.0
/// (local, root)`, `proc-macro2 1.0.101 (build)`. Names and sources come from the file: print the line through
/// [`terminal::escape`](crate::terminal::escape).
pub fn package_line(package: &Package) -> String {
    let mut notes = Vec::new();
    match &package.source {
        Source::CratesIo => {}
        other => notes.push(String::from(other.clone())),
    }
    if package.kind == DependencyKind::Build {
        notes.push("build".to_owned());
    }
    if package.root {
        notes.push("root".to_owned());
    }
    let mut line = format!("{} {}", package.name, package.version);
    if !notes.is_empty() {
        line.push_str(&format!(" ({})", notes.join(", ")));
    }
    line
}

#[cfg(test)]
mod tests;
