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
//!
//! Writing is here too, so that one writer makes every list the reader is
//! tested against: [`compress`] (the section's contents: the JSON,
//! zlib-compressed) and [`object_file`] (a relocatable object holding them,
//! which `cargo backworks build` links into the plugin).
//!
//! [`Dependency`] is a list in the compact form the registry index and the
//! host's `GET /plugins` show ([`compact`]): name, version, source and
//! whether it is a build-time dependency, the plugin's own package left out.

use std::path::{Path, PathBuf};

pub use auditable_serde::{DependencyKind, Package, Source, VersionInfo};
use serde::{Deserialize, Serialize};

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

/// The zlib level of [`compress`]: cargo-auditable's.
pub const COMPRESSION_LEVEL: u8 = 7;

/// What the `.dep-v0` section holds for `info`: its JSON, zlib-compressed
/// (cargo-auditable's format, what [`from_bytes`] reads back).
pub fn compress(info: &VersionInfo) -> Vec<u8> {
    // Serialising these plain types to a vector cannot fail.
    let json = serde_json::to_vec(info).unwrap_or_default();
    miniz_oxide::deflate::compress_to_vec_zlib(&json, COMPRESSION_LEVEL)
}

/// Why [`object_file`] wrote no object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The target gets no list (see [`object_format`]).
    #[error(
        "target `{target}`: no `{SECTION}` object is written for it (only ELF on x86, x86_64 and AArch64, PE on x86_64 windows-gnu, Mach-O on x86_64 and AArch64)"
    )]
    Unsupported {
        /// The target triple.
        target: String,
    },
    /// `object` could not write the file.
    #[error("target `{target}`: cannot write the `{SECTION}` object file: {detail}")]
    Write {
        /// The target triple.
        target: String,
        /// What `object` said.
        detail: String,
    },
}

/// The object format of the relocatable object [`object_file`] writes for
/// `triple`, or `None` for a target whose plugins are built without a list:
/// ELF on x86, x86_64 and AArch64, PE (COFF objects) on x86_64
/// `*-windows-gnu` (MinGW's ld), Mach-O on x86_64 and AArch64. Other ELF
/// architectures' objects carry ABI flags the linker compares, and x86
/// Windows mangles the symbol.
pub fn object_format(triple: &str) -> Option<object::BinaryFormat> {
    use crate::target::Format;
    use object::{Architecture as A, BinaryFormat};
    let info = crate::target::parse(triple)?;
    match (info.format, info.architecture) {
        (Format::Elf, A::X86_64 | A::I386 | A::Aarch64) => Some(BinaryFormat::Elf),
        (Format::Pe, A::X86_64) if triple.ends_with("-windows-gnu") => Some(BinaryFormat::Coff),
        (Format::MachO, A::X86_64 | A::Aarch64) => Some(BinaryFormat::MachO),
        _ => None,
    }
}

/// A relocatable object file for `triple` whose [`SECTION`] section holds
/// `contents` (normally [`compress`]'s), started by the global symbol
/// [`SYMBOL`] (`_AUDITABLE_VERSION_INFO` in Mach-O), which is hidden (ELF,
/// Mach-O: never one of the plugin's exports; a PE exports its `.def`
/// file's only) and which the link must keep (`--undefined`, ld64's `-u`).
/// In ELF the section is not loaded at run time (no `SHF_ALLOC`). The same
/// `triple` and `contents` give the same bytes.
pub fn object_file(triple: &str, contents: &[u8]) -> Result<Vec<u8>, ObjectError> {
    use object::write::{Object, StandardSegment, Symbol, SymbolSection};
    use object::{
        BinaryFormat, Endianness, SectionFlags, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
    };
    let unsupported = || ObjectError::Unsupported {
        target: triple.to_owned(),
    };
    let format = object_format(triple).ok_or_else(unsupported)?;
    let info = crate::target::parse(triple).ok_or_else(unsupported)?;
    let endianness = match info.endianness {
        crate::target::Endianness::Little => Endianness::Little,
        crate::target::Endianness::Big => Endianness::Big,
    };
    let mut file = Object::new(format, info.architecture, endianness);
    let section = file.add_section(
        file.segment_name(StandardSegment::Data).to_vec(),
        SECTION.as_bytes().to_vec(),
        SectionKind::ReadOnlyData,
    );
    if format == BinaryFormat::Elf {
        // Not loaded at run time: no SHF_ALLOC.
        file.section_mut(section).flags = SectionFlags::Elf {
            sh_type: object::elf::SHT_PROGBITS,
            sh_flags: object::elf::SectionFlags(0),
        };
    }
    let offset = file.append_section_data(section, contents, 1);
    file.add_symbol(Symbol {
        // `object` adds Mach-O's underscore.
        name: SYMBOL.as_bytes().to_vec(),
        value: offset,
        size: contents.len() as u64,
        kind: SymbolKind::Data,
        // Global for the linker's keep flag, hidden (ELF, Mach-O).
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Section(section),
        flags: SymbolFlags::None,
    });
    file.write().map_err(|error| ObjectError::Write {
        target: triple.to_owned(),
        detail: error.to_string(),
    })
}

/// One package of a dependency list in compact form, as the registry's
/// release files and index and the host's `GET /plugins` show it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dependency {
    /// The crate's name.
    pub name: String,
    /// Its version (semver text).
    pub version: String,
    /// Where it came from: `crates.io` (absent in JSON), `git`, `local` (a
    /// path dependency), `registry` (another registry), or what else the
    /// list says.
    #[serde(default = "crates_io", skip_serializing_if = "is_crates_io")]
    pub source: String,
    /// Used at build time only (a build script's or a proc-macro's
    /// dependency, or a proc-macro): not linked into the plugin. Absent in
    /// JSON when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub build: bool,
}

fn crates_io() -> String {
    String::from(Source::CratesIo)
}

fn is_crates_io(source: &str) -> bool {
    source == "crates.io"
}

impl Dependency {
    /// The package as [`package_line`] writes it (`serde_json 1.0.145`,
    /// `helper 0.1.0 (local, build)`). Names come from a file or a
    /// registry: print the line through
    /// [`terminal::escape`](crate::terminal::escape).
    pub fn line(&self) -> String {
        let mut notes = Vec::new();
        if !is_crates_io(&self.source) {
            notes.push(self.source.as_str());
        }
        if self.build {
            notes.push("build");
        }
        let mut line = format!("{} {}", self.name, self.version);
        if !notes.is_empty() {
            line.push_str(&format!(" ({})", notes.join(", ")));
        }
        line
    }
}

/// `info`'s packages in compact form, in the list's order, without the
/// root package: that is the plugin itself, whose name and version its
/// record, its release and `GET /plugins` already give (and whose source
/// is always `local`). Its edges are left out too: which crate pulls in
/// which is in the library for `cargo backworks check --deps` and
/// `cargo audit bin`; a listing needs what is in it.
pub fn compact(info: &VersionInfo) -> Vec<Dependency> {
    info.packages
        .iter()
        .filter(|package| !package.root)
        .map(|package| Dependency {
            name: package.name.clone(),
            version: package.version.to_string(),
            source: String::from(package.source.clone()),
            build: package.kind == DependencyKind::Build,
        })
        .collect()
}

/// How many of `list` are linked into the plugin (not build-time only).
pub fn runtime_count(list: &[Dependency]) -> usize {
    list.iter().filter(|d| !d.build).count()
}

#[cfg(test)]
mod tests;
